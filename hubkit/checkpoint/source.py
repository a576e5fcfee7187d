"""Where a checkpoint's bytes come from: the one seam between the checkpoint model and storage.

A local folder is served by :class:`LocalSource`; a Hub repository will be served by a remote source
that answers the same calls with HTTP range requests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubkit.errors import HubkitError

HUB_SCHEME = "hf://"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a checkpoint folder, with a POSIX path relative to the folder."""

    path: str
    size: int
    is_symlink: bool = False
    symlink_escapes: bool = False
    is_dir: bool = False


class CheckpointSource(Protocol):
    """Read access to the files of one checkpoint."""

    @property
    def location(self) -> str:
        """A human-readable name of the checkpoint (a folder path or ``hf://`` address)."""
        ...

    def list_files(self) -> list[FileEntry]:
        """All files below the root (and symlinks, which are never followed)."""
        ...

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of ``path`` from ``start``."""
        ...

    def local_path(self, path: str) -> Path | None:
        """The file on this machine, for tools that need a real path; None for remote sources."""
        ...


class LocalSource:
    """A checkpoint folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def list_files(self) -> list[FileEntry]:
        root = self.root
        real_root = root.resolve()
        entries: list[FileEntry] = []
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            base = Path(dirpath)
            for name in list(dirnames):
                full = base / name
                if full.is_symlink():
                    dirnames.remove(name)
                    entries.append(_symlink_entry(full, root, real_root))
            for name in filenames:
                full = base / name
                if full.is_symlink():
                    entries.append(_symlink_entry(full, root, real_root))
                    continue
                try:
                    size = full.stat().st_size
                except OSError:
                    size = 0
                entries.append(FileEntry(full.relative_to(root).as_posix(), size))
        entries.sort(key=lambda e: e.path)
        return entries

    def read_range(self, path: str, start: int, length: int) -> bytes:
        with open(self.root / path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)

    def local_path(self, path: str) -> Path | None:
        return self.root / path


def _symlink_entry(full: Path, root: Path, real_root: Path) -> FileEntry:
    target = full.resolve()
    escapes = not target.is_relative_to(real_root)
    size = target.stat().st_size if target.is_file() else 0
    return FileEntry(full.relative_to(root).as_posix(), size, is_symlink=True, symlink_escapes=escapes)


def open_source(ref: str) -> CheckpointSource:
    """Open a checkpoint reference: a local folder, or ``hf://ORG/NAME[@REV]``."""
    if ref.startswith(HUB_SCHEME):
        from hubkit.checkpoint.hub_source import HubSource

        return HubSource(ref)
    root = Path(ref)
    if not root.exists():
        raise HubkitError(f"{ref} does not exist; pass a checkpoint folder")
    if not root.is_dir():
        raise HubkitError(f"{ref} is not a folder; pass the checkpoint folder that holds config.json")
    return LocalSource(root)
