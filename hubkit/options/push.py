"""The options of ``hubkit push`` and the ``[push]`` table of the manifest, declared once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubkit.options import DECLARATION, Option, Options, option

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _batch_text(value: Any, _context: Mapping[str, Any]) -> str:
    """A batch as text: a file count (``8``, also a TOML integer) or a size (``40GB``)."""
    return str(value)


def _one_line(value: str, _context: Mapping[str, Any]) -> str:
    """A commit title: one line, not empty."""
    if not value.strip() or "\n" in value or "\r" in value:
        raise ValueError("a commit message is one line of text; put more in --commit-description")
    return value


def _env_name(value: str, _context: Mapping[str, Any]) -> str:
    """A variable's name; the error never repeats the value (a token passed by mistake stays unprinted)."""
    if not _ENV_NAME.fullmatch(value):
        raise ValueError("takes the name of an environment variable (e.g. HF_TOKEN_ORG), not its value")
    return value


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
    commit_message: str | None = option(
        "Commit title (default: 'hubkit: upload N files'); with several commits, ' (commit N of M)' follows it.", None,
        metavar="TEXT", check=_one_line, table="push",
    )  # fmt: skip
    commit_description: str | None = option("Commit description (body).", None, metavar="TEXT", table="push")
    token: str | None = field(
        default=None, repr=False,  # a secret: never in a repr
        metadata={DECLARATION: Option("Hub token (else --token-env, else HF_TOKEN or the saved login); never printed.",
                                      metavar="TOKEN")},
    )  # fmt: skip
    token_env: str | None = option(
        "Read the token from this environment variable (e.g. HF_TOKEN_ORG).", None, metavar="NAME", check=_env_name
    )
    endpoint: str | None = option("The Hub's URL (default: HF_ENDPOINT, else huggingface.co).", None, cli=False)
    progress: bool = True
    workers: int = 4
    retries: int = 8
    backoff_s: float = 1.0
