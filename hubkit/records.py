"""The one write path: every file hubkit writes goes through :func:`replacing` (or its wrappers).

A write creates a temporary file beside the target, exclusively and without following links, writes and flushes
it, then renames it over the target. The target must be a regular file or absent: a symlink, a FIFO, a device or
a folder in its place is refused (exit 2), never replaced or written through. hubkit's record folder
(``.hubkit/``) is never a link. On any failure (a full disk, a read-only folder) the temporary file is removed and
the target is left as it was.

hubkit's ownership records live here too: a folder is hubkit's to replace or delete only when its record says
hubkit made it. ``.hubkit/state.json`` is that record (and the run's state) for a finished folder;
``.hubkit/made-by.json`` marks a folder quantize is still making. Both carry ``made_by`` in one shape; the shapes
earlier versions wrote still count (:func:`says_hubkit_made`).

The standard library has no such write (``tempfile`` follows a planted ``.hubkit`` link, ``Path.write_text``
writes through a planted file link), and no maintained package refuses non-regular targets, so it is here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from hubkit import __version__
from hubkit.errors import HubkitError

RECORD_DIR = ".hubkit"
#: The state record's file name, inside a record folder (a layerwise run keeps its own in its scratch folder).
STATE_FILE = "state.json"
#: hubkit's record of a folder it made, and that folder's run state (quantize's status, the release's stages).
STATE = f"{RECORD_DIR}/{STATE_FILE}"
#: The record of a folder quantize is still making (a staging folder, a BF16 intermediate).
MADE_BY = f"{RECORD_DIR}/made-by.json"
RECORD_LIMIT = 64 * 1024 * 1024  # hubkit's own records are small; a bigger one is not hubkit's
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class WriteRefused(HubkitError):
    """A write hubkit will not make: the target is not a regular file, or a record folder is a link."""


class WriteFailed(HubkitError):
    """A write the environment stopped (a full disk, a read-only folder): exit 2, the target left as it was."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _failed(target: Path, exc: OSError) -> WriteFailed:
    reason = exc.strerror or str(exc)
    return WriteFailed(f"cannot write {target}: {reason}; free space or fix its permissions, then run again")


def check_replaceable_file(target: Path) -> None:
    """Refuse (exit 2) when ``target`` exists and is anything but a regular file (a link is refused too)."""
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _failed(target, exc) from exc
    if not stat.S_ISREG(mode):
        raise WriteRefused(
            f"{target} is {_kind(mode)}; hubkit replaces only regular files: remove it or name another path"
        )


def ensure_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) unless it exists; refuse when it, or a record folder above it, is a link."""
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _failed(folder, exc) from exc
        mode = os.lstat(folder).st_mode
    except OSError as exc:
        raise _failed(folder, exc) from exc
    if stat.S_ISLNK(mode) and RECORD_DIR in folder.parts:
        raise WriteRefused(f"{folder} is a symbolic link; hubkit never follows a link inside {RECORD_DIR}/: remove it")
    if not folder.is_dir():
        raise WriteRefused(f"{folder} is {_kind(mode)}, not a folder; remove it or name another path")
    _refuse_linked_records(folder)


def _refuse_linked_records(folder: Path) -> None:
    """A ``.hubkit`` component of ``folder`` that is a link would send hubkit's records elsewhere."""
    parts = folder.parts
    for index, part in enumerate(parts):
        if part == RECORD_DIR and os.path.islink(Path(*parts[: index + 1])):
            raise WriteRefused(
                f"{Path(*parts[: index + 1])} is a symbolic link; hubkit never follows a link inside its records: "
                "remove it"
            )


def record_folder(folder: Path) -> Path:
    """``folder/.hubkit``, created if missing, refused when it is a link or not a folder."""
    records = folder / RECORD_DIR
    ensure_folder(records)
    return records


@contextlib.contextmanager
def replacing(target: Path, *, text: bool = False, mode: int = 0o644) -> Iterator[IO[Any]]:
    """Yield a file that becomes ``target`` when the block ends without an error, and vanishes otherwise."""
    target = Path(target)
    parent = target.parent
    check_replaceable_file(target)
    ensure_folder(parent)
    try:
        directory = os.open(parent, _DIRECTORY_FLAGS)
    except OSError as exc:
        raise _failed(target, exc) from exc
    temporary = f".{target.name[:64]}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    renamed = False
    try:
        try:
            handle = os.open(temporary, _CREATE_FLAGS, mode, dir_fd=directory)
        except OSError as exc:
            raise _failed(target, exc) from exc
        stream: IO[Any] = os.fdopen(handle, "w", encoding="utf-8") if text else os.fdopen(handle, "wb")
        try:
            with stream:
                yield stream
                stream.flush()
                os.fsync(stream.fileno())
            check_replaceable_file(target)  # a link planted while the file was written is refused too
            os.replace(temporary, target.name, src_dir_fd=directory, dst_dir_fd=directory)
            renamed = True
        except OSError as exc:
            raise _failed(target, exc) from exc
    finally:
        if not renamed:
            with contextlib.suppress(OSError):
                os.unlink(temporary, dir_fd=directory)
        os.close(directory)


def write_bytes(target: Path, data: bytes) -> None:
    """Write ``data`` as ``target``, whole or not at all."""
    with replacing(target) as stream:
        stream.write(data)


def write_text(target: Path, text: str) -> None:
    """Write ``text`` (UTF-8) as ``target``, whole or not at all."""
    write_bytes(target, text.encode("utf-8"))


def write_json(target: Path, value: Any, *, indent: int | None = 2) -> None:
    """Write ``value`` as JSON (with a final newline) as ``target``, whole or not at all."""
    write_text(target, json.dumps(value, indent=indent, default=str) + "\n")


def load_record(path: Path, *, limit: int = RECORD_LIMIT) -> Any:
    """The JSON value of the record ``path``, or None when it is absent, unreadable or damaged (then the work it
    recorded is done again). A record, or a ``.hubkit`` folder above it, that is a link or not a regular file is
    refused (exit 2): hubkit never reads its records through a planted link."""
    path = Path(path)
    _refuse_linked_records(path.parent)
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None
    if not stat.S_ISREG(mode):
        raise WriteRefused(f"hubkit's record {path} is {_kind(mode)}; hubkit reads only regular files: remove it")
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        with os.fdopen(handle, "rb") as stream:
            if not stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
                return None
            data = stream.read(limit + 1)
        return None if len(data) > limit else json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python parses
        return None


def append_text(target: Path, text: str) -> None:
    """Append ``text`` to ``target`` (a log another program keeps, such as ``$GITHUB_STEP_SUMMARY``), created if
    absent; a link, a FIFO or a device in its place is refused (exit 2), never written to."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    check_replaceable_file(target)
    try:
        handle = os.open(target, flags, 0o644)
    except OSError as exc:
        raise _failed(target, exc) from exc
    with os.fdopen(handle, "wb") as stream:
        mode = os.fstat(handle).st_mode
        if not stat.S_ISREG(mode):
            raise WriteRefused(f"{target} is {_kind(mode)}; hubkit appends only to regular files: name another path")
        try:
            stream.write(text.encode("utf-8"))
            stream.flush()
        except OSError as exc:
            raise _failed(target, exc) from exc


def made_by() -> dict[str, Any]:
    """The ``made_by`` entry of every ownership record hubkit writes."""
    return {"tool": "hubkit", "version": __version__}


def says_hubkit_made(record: Any) -> bool:
    """Whether ``record`` says hubkit made its folder: ``made_by`` as :func:`made_by` writes it, or a shape an
    earlier version wrote (``made_by = "hubkit quantize"``; a state record with ``status`` or ``stages`` only)."""
    if not isinstance(record, dict):
        return False
    mark = record.get("made_by")
    return (
        (isinstance(mark, dict) and mark.get("tool") == "hubkit")
        or mark == "hubkit quantize"
        or "status" in record
        or "stages" in record
    )


def read_state(folder: Path) -> dict[str, Any] | None:
    """hubkit's state record of ``folder``, or None when there is none, it is damaged or not hubkit's; a link in
    place of the record or of ``.hubkit`` is refused (exit 2)."""
    record = load_record(folder / STATE)
    return record if says_hubkit_made(record) else None


def write_state(folder: Path, record: dict[str, Any]) -> None:
    """Write ``record`` (``made_by`` added when missing) as ``folder``'s state record, whole or not at all."""
    record_folder(folder)
    record.setdefault("made_by", made_by())
    write_json(folder / STATE, record)


def mark_made(folder: Path, purpose: str, **details: Any) -> None:
    """Record that hubkit is making ``folder`` (for ``purpose``: ``staging``, ...), with ``details`` kept in it."""
    record_folder(folder)
    write_json(folder / MADE_BY, {"made_by": made_by(), "purpose": purpose, **details})


def made_by_hubkit(folder: Path) -> bool:
    """Whether hubkit's own record in ``folder`` (its made-by or its state record) says hubkit made it."""
    return any(says_hubkit_made(load_record(folder / name)) for name in (MADE_BY, STATE))
