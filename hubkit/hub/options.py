"""The options of ``hubkit push`` (also the command line's, see ``hubkit.options``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubkit.options import option


@dataclass(frozen=True)
class PushOptions:
    folder: Path
    repo: str = option("Target repo id, ORG/NAME.")
    revision: str = option("Branch to push to (created if missing).", "main", show_default=True)
    create_pr: bool = option("Upload to a pull request (reused on rerun) and leave it open.", False)
    atomic: bool = option("Upload to a pull request, verify it, then merge: the branch moves in one step.", False)
    private: bool = option("Create the repo private.", False)
    tag: str | None = option("Tag the pushed revision.", None)
    batch: str = option("Files per commit (8) or bytes per commit (40GB).", "16", show_default=True)
    include: tuple[str, ...] = option("Only files matching this glob (repeatable).", ())
    exclude: tuple[str, ...] = option("Skip files matching this glob (repeatable).", ())
    delete_extra: bool = option("Delete remote files that are not in the folder.", False)
    dry_run: bool = option("Print the plan; write nothing, not even the repo.", False)
    validate: bool = option("Skip the structural checks before upload.", True, flag="--no-validate")
    verify: bool = option("Skip the verification after upload.", True, flag="--no-verify")
    strict: bool = option("Warnings (and remote-only files) fail the push.", False)
    progress: bool = True
    workers: int = 4
    retries: int = 8
    backoff_s: float = 1.0
