"""The lock on an output folder: one hubkit run at a time writes a release's OUT or a quantize ``--out``.

A second run exits 2 naming the pid that holds the lock. The lock is ``fcntl.flock`` on a file beside the
folder, so the kernel drops it when its holder dies, even by kill -9: a stale lock file (a dead holder's pid in
it) never blocks. A process that holds a folder's lock may take it again (a release runs its quantize stage on
its own OUT).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from hubkit.errors import HubkitError

#: The lock files this process holds (a nested ``exclusive`` on one of them does not lock again).
_held: set[str] = set()


def lock_path(folder: Path) -> Path:
    """The lock of ``folder``: a file beside it, so it lives on while the folder itself is replaced."""
    return folder.parent / f".{folder.name}.hubkit.lock"


@contextlib.contextmanager
def exclusive(folder: Path, role: str, run: str = "release", advice: str = "wait for it to end") -> Iterator[None]:
    """Hold the lock of ``folder`` while the block runs; exit 2 naming the holder's pid when another has it
    (``run``: what this run is called in that message, ``advice``: what to do).

    Written on ``fcntl.flock`` (POSIX) rather than the filelock package: the holder's pid must live in the
    lock file, and filelock truncates the file each time a second process tries it, so a waiter could never
    read who holds the lock. The kernel drops the lock when the holder dies, even by kill -9.
    """
    import fcntl

    path = lock_path(folder)
    key = os.path.abspath(path)
    if key in _held:  # this process holds it already
        yield
        return
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HubkitError(f"cannot create {folder.parent}: {exc.strerror or exc}") from exc
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            raise HubkitError(f"cannot create the lock {path}: {exc.strerror or exc}; move away what is there") from exc
        if not stat.S_ISREG(os.fstat(handle).st_mode):  # a FIFO or a device planted in its place
            os.close(handle)
            raise HubkitError(f"{path} exists and is not hubkit's lock file (not a regular file); move it away")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder(handle) if exc.errno in (errno.EAGAIN, errno.EACCES) else None
            os.close(handle)
            if holder is None and exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise HubkitError(f"cannot lock {path}: {exc.strerror or exc}") from exc
            raise HubkitError(
                f"another hubkit {run} (pid {holder or 'unknown'}) is working on {role} {folder}; "
                f"{advice}, then run again"
            ) from exc
        # a holder that ended between our open and our lock removed the file: lock the file that is there now
        with contextlib.suppress(OSError):
            if os.path.samestat(os.fstat(handle), os.stat(path, follow_symlinks=False)):
                break
        os.close(handle)
    try:
        content = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
        if content and not content.isdigit():  # not a lock hubkit wrote (those hold a pid or nothing)
            raise HubkitError(f"{path} exists and is not hubkit's lock file; move it away")
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock: nothing is left behind
        os.close(handle)
        raise HubkitError(f"cannot write the lock {path}: {exc.strerror or exc}; free space, then run again") from exc
    except BaseException:
        os.close(handle)
        raise
    _held.add(key)
    try:
        yield
    finally:
        _held.discard(key)
        with contextlib.suppress(OSError):
            os.unlink(path)  # still holding the lock: a waiter that opened this file sees it gone and retries
        os.close(handle)


def _holder(handle: int) -> int | None:
    """The pid written in a held lock file (its holder writes it just after locking: wait a moment for it)."""
    for _ in range(20):
        content = os.pread(handle, 64, 0).decode("ascii", "replace").strip()
        if content.isdigit():
            return int(content)
        time.sleep(0.05)
    return None
