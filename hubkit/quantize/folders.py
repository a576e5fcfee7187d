"""Folders ``hubkit quantize`` makes, and the rule for removing one: only what hubkit's own record says it made.

Every folder quantize creates (the staging folder beside ``--out``, the BF16 intermediate of a resident run on an
INT4 base) gets ``.hubkit/made-by.json`` the moment it is created; a finished export carries hubkit's
``.hubkit/state.json`` (both records are ``hubkit.records``'). A folder without either is someone else's: quantize
refuses to touch it and says which.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from hubkit.errors import HubkitError
from hubkit.records import RECORD_DIR, made_by_hubkit, mark_made


def make_owned(folder: Path, purpose: str) -> Path:
    """Create ``folder`` (it must not exist) with hubkit's record of having made it."""
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise HubkitError(f"cannot create {folder}: {exc.strerror or exc}; free space or fix its permissions") from exc
    try:
        mark_made(folder, purpose)
    except BaseException:  # a folder without its record is nobody's: a rerun would refuse it, so it goes
        for empty in (folder / RECORD_DIR, folder):
            with contextlib.suppress(OSError):
                empty.rmdir()
        raise
    return folder


def remove_owned(folder: Path, role: str) -> None:
    """Remove ``folder`` if hubkit made it; refuse (exit 2, naming it) when it did not. Absent is fine."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir() or not made_by_hubkit(folder):
        raise HubkitError(
            f"{folder} ({role}) was not made by hubkit, so hubkit will not remove it; move it away or pass another --out"
        )
    shutil.rmtree(folder)


def discard(folder: Path) -> None:
    """Best-effort removal of a folder this run made (cleanup after a failure; never raises)."""
    with contextlib.suppress(HubkitError):  # a record refused as a link: the folder is not provably hubkit's
        if folder.is_dir() and not folder.is_symlink() and made_by_hubkit(folder):
            shutil.rmtree(folder, ignore_errors=True)
