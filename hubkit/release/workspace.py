"""What a release may touch: hubkit's record of the folders it made, and the lock on the output folder.

hubkit deletes or overwrites a folder only when hubkit's own record inside it, ``.hubkit/state.json`` (kept by
``hubkit.records``), says hubkit made it; any other folder is refused with exit 2 before any work. An export made
elsewhere (``[release] export``) is released where it is: hubkit writes its records into it, and those records
say it was made elsewhere, so it never becomes replaceable. The lock keeps two releases off the same output
folder: a second run exits 2 naming the pid that holds it.
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
from hubkit.records import STATE, read_state


def has_files(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError as exc:
        raise HubkitError(f"cannot read {folder}: {exc.strerror or exc}; check its permissions") from exc


#: The value of ``state.json``'s "export" in an export made elsewhere: hubkit released it, and never replaces it.
MADE_ELSEWHERE = "made elsewhere"


def check_replaceable(folder: Path, role: str) -> None:
    """Refuse (exit 2) when ``folder`` exists and is not empty and not provably hubkit's."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise HubkitError(f"{role} {folder} is a file, not a folder; name a folder that hubkit may create")
    if not has_files(folder):
        return
    state = read_state(folder)
    if state is None:
        raise HubkitError(
            f"{role} {folder} holds files that hubkit did not make (it has no hubkit record {STATE}); "
            "hubkit never deletes or overwrites them: name a new or empty folder, or move those files away"
        )
    if state.get("export") == MADE_ELSEWHERE:
        raise HubkitError(
            f"{role} {folder} is an export made elsewhere that hubkit released ([release] export); hubkit never "
            "deletes or overwrites it: name a new or empty folder"
        )


def check_export(folder: Path, role: str) -> None:
    """Refuse (exit 2) an export made elsewhere that is not there to release: a missing path, or a file."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise HubkitError(f"{role} {folder} {what}; name the folder that holds the export to release")
    if not has_files(folder):
        raise HubkitError(f"{role} {folder} is empty; name the folder that holds the export to release")


def check_outside(
    folder: Path, inputs: dict[str, Path], role: str, why: str = "hubkit replaces that folder on each run"
) -> None:
    """Refuse (exit 2) an output folder that holds one of the release's inputs, or lies inside one."""
    for name, path in inputs.items():
        if path == folder or folder in path.parents:
            raise HubkitError(
                f"{role} {folder} holds the {name} {path}, and {why}; name a folder of its own for the export"
            )
        if path in folder.parents:
            raise HubkitError(f"{role} {folder} lies inside the {name} {path}; name a folder outside it")


def lock_path(folder: Path) -> Path:
    """The lock of ``folder``: a file beside it, so it lives on while the folder itself is replaced."""
    return folder.parent / f".{folder.name}.hubkit.lock"


@contextlib.contextmanager
def exclusive(folder: Path, role: str) -> Iterator[None]:
    """Hold the lock of ``folder`` while the block runs; exit 2 naming the holder's pid when another has it.

    Written on ``fcntl.flock`` (POSIX) rather than the filelock package: the holder's pid must live in the
    lock file, and filelock truncates the file each time a second process tries it, so a waiter could never
    read who holds the lock. The kernel drops the lock when the holder dies, even by kill -9.
    """
    import fcntl

    path = lock_path(folder)
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
                f"another hubkit release (pid {holder or 'unknown'}) is working on {role} {folder}; "
                "wait for it to end, then run again"
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
    try:
        yield
    finally:
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
