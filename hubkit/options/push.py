"""The options of ``hubkit push`` and the ``[push]`` table of the manifest, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubkit.options import Options, option


def _batch_text(value: Any, _context: Mapping[str, Any]) -> str:
    """A batch as text: a file count (``8``, also a TOML integer) or a size (``40GB``)."""
    return str(value)


@dataclass(frozen=True)
class PushOptions(Options):
    folder: Path
    repo: str = option("Target repo id, ORG/NAME.", table="release")
    revision: str = option("Branch to push to (created if missing).", "main", show_default=True, table="release")
    create_pr: bool = option("Upload to a pull request (reused on rerun) and leave it open.", False)
    atomic: bool = option("Upload to a pull request, verify it, then merge: the branch moves in one step.", False)
    private: bool = option("Create the repo private.", False, table="release")
    tag: str | None = option("Tag the pushed revision.", None)
    batch: str = option(
        "How much one commit holds: a number of files (such as 8) or a size (such as 40GiB); default 16 files.",
        "16", metavar="FILES|SIZE", check=_batch_text,
        table="push", toml_type=str | int,
    )  # fmt: skip
    include: tuple[str, ...] = option("Only files matching this glob (repeatable).", (), table="push")
    exclude: tuple[str, ...] = option("Skip files matching this glob (repeatable).", (), table="push")
    delete_extra: bool = option("Delete remote files that are not in the folder.", False, table="push")
    dry_run: bool = option("Print the plan; write nothing, not even the repo.", False)
    validate: bool = option("Skip the structural checks before upload.", True, flag="--no-validate")
    verify: bool = option("Skip the verification after upload.", True, flag="--no-verify")
    strict: bool = option("Warnings (and remote-only files) fail the push.", False)
    progress: bool = True
    workers: int = 4
    retries: int = 8
    backoff_s: float = 1.0
