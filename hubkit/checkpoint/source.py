"""Where a checkpoint's bytes come from: the one seam between the checkpoint model and storage.

A local folder is served by :class:`LocalSource`; a Hub repository is served by a remote source that
answers the same calls with HTTP range requests.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from hubkit.errors import HubkitError

HUB_SCHEME = "hf://"


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One entry of a checkpoint folder, with a POSIX path relative to the folder.

    ``problem`` says why the entry cannot be read as a file (a FIFO, a symlink loop, a folder that cannot
    be listed, no read permission); such an entry is reported once and never opened. ``sha256`` is the
    content's sha256 where the source knows it without reading the file (the Hub's listing of LFS files).
    """

    path: str
    size: int
    is_symlink: bool = False
    symlink_escapes: bool = False
    is_dir: bool = False
    problem: str | None = None
    sha256: str | None = None
    #: where a symlink leads, relative to the folder (POSIX); None when it escapes the folder or is no symlink
    symlink_target: str | None = None

    def links_into(self, folder: str) -> bool:
        """Whether this is a symlink to ``folder`` or to something inside it."""
        target = self.symlink_target
        return target is not None and (target == folder or target.startswith(folder + "/"))


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


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


class LocalSource:
    """A checkpoint folder on this machine."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def location(self) -> str:
        return str(self.root)

    def list_files(self) -> list[FileEntry]:
        """Every file below the root; what cannot be read is listed with its ``problem``, never raised.

        Raises HubkitError (exit 2) only when the root folder itself cannot be listed.
        """
        return list_folder(self.root)

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """Opened without blocking and checked to be a regular file: one swapped for a FIFO after the listing
        is an OSError, never a wait."""
        handle = os.open(self.root / path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(handle, "rb") as stream:
            kind = stat.S_IFMT(os.fstat(handle).st_mode)
            if kind != stat.S_IFREG:
                raise OSError(errno.EINVAL, f"{_KINDS.get(kind, 'not a regular file')}, not a regular file")
            stream.seek(start)
            return stream.read(length)

    def local_path(self, path: str) -> Path | None:
        return self.root / path


def list_folder(root: Path) -> list[FileEntry]:
    """The entries of ``root`` as :meth:`LocalSource.list_files` describes them (also for ``push``)."""
    real_root = Path(os.path.realpath(root))
    entries: list[FileEntry] = []
    unlistable: list[OSError] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=unlistable.append, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            full = base / name
            if full.is_symlink():
                dirnames.remove(name)
                entries.append(_symlink_entry(full, root, real_root))
        for name in filenames:
            full = base / name
            relative = full.relative_to(root).as_posix()
            entries.append(_symlink_entry(full, root, real_root) if full.is_symlink() else _file_entry(full, relative))
    for error in unlistable:
        folder = Path(error.filename or root)
        reason = error.strerror or str(error)
        if folder == root:
            raise HubkitError(f"cannot list the folder {root}: {reason}; check its permissions")
        relative = folder.relative_to(root).as_posix()
        entries.append(FileEntry(relative, 0, is_dir=True, problem=f"is a folder that cannot be listed: {reason}"))
    entries.sort(key=lambda e: e.path)
    return entries


def _readable(full: Path) -> bool:
    """Whether this process may open ``full`` for reading (by its effective ids where the OS can tell)."""
    if os.access in os.supports_effective_ids:
        return os.access(full, os.R_OK, effective_ids=True)
    return os.access(full, os.R_OK)


def _file_entry(full: Path, relative: str) -> FileEntry:
    try:
        info = full.stat(follow_symlinks=False)
    except OSError as exc:
        return FileEntry(relative, 0, problem=f"cannot be read: {exc.strerror or exc}")
    kind = stat.S_IFMT(info.st_mode)
    if kind != stat.S_IFREG:
        return FileEntry(relative, 0, problem=f"is {_KINDS.get(kind, 'not a regular file')}, not a regular file")
    if not _readable(full):
        return FileEntry(relative, info.st_size, problem="cannot be read: permission denied")
    return FileEntry(relative, info.st_size)


def _symlink_entry(full: Path, root: Path, real_root: Path) -> FileEntry:
    """A symlink, never followed: where it leads, and why it cannot be read when it cannot."""
    relative = full.relative_to(root).as_posix()
    real = Path(os.path.realpath(full))
    escapes = not real.is_relative_to(real_root)
    target = None if escapes else real.relative_to(real_root).as_posix()
    try:
        info = full.stat()  # follows the link: fails on a loop or a dangling target
    except OSError as exc:
        reason = "a symlink loop" if exc.errno == errno.ELOOP else "a symlink to nothing"
        if exc.errno not in (errno.ELOOP, errno.ENOENT):
            reason = f"a symlink that cannot be followed ({exc.strerror or exc})"
        return FileEntry(
            relative, 0, is_symlink=True, symlink_escapes=escapes, problem=f"is {reason}", symlink_target=target
        )
    kind = stat.S_IFMT(info.st_mode)
    if kind not in (stat.S_IFREG, stat.S_IFDIR):
        problem = f"is a symlink to {_KINDS.get(kind, 'something')}, not a regular file"
        return FileEntry(relative, 0, is_symlink=True, symlink_escapes=escapes, problem=problem, symlink_target=target)
    size = info.st_size if kind == stat.S_IFREG else 0
    return FileEntry(relative, size, is_symlink=True, symlink_escapes=escapes, symlink_target=target)


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
