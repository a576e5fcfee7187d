"""Bounded reads of the files a user names (manifests, card sections, templates, tokens): regular files only.

A FIFO would block forever, ``/dev/zero`` never ends and a 20 GB file exhausts memory; each is refused with one
line (exit 2) before a byte is read, and a file that grows while it is read is cut off at the limit and refused.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from hubkit.errors import HubkitError

_KINDS = {stat.S_IFDIR: "a folder", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a device", stat.S_IFBLK: "a device"}


def read_regular(path: Path, *, limit: int, what: str = "file", follow_links: bool = True) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them; anything else is a HubkitError."""
    with open_regular(path, what=what, follow_links=follow_links) as stream:
        size = os.fstat(stream.fileno()).st_size
        if size > limit:
            raise HubkitError(f"{what} {path} is {size:,} bytes, over hubkit's limit of {limit:,}")
        try:
            data = stream.read(limit + 1)
        except OSError as exc:
            raise HubkitError(f"{what} {path} cannot be read ({exc.strerror or exc})") from exc
    if len(data) > limit:
        raise HubkitError(f"{what} {path} grew past hubkit's limit of {limit:,} bytes while it was read")
    return data


def open_regular(path: Path, *, what: str = "file", follow_links: bool = True) -> BinaryIO:
    """``path`` opened for a streamed read, once it is known to be a regular file (a FIFO is never waited on).

    For inputs too big to read whole (calibration text): the caller bounds what it keeps."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | (0 if follow_links else os.O_NOFOLLOW)
    try:
        handle = os.open(path, flags)
    except OSError as exc:
        reason = "is a symbolic link" if exc.errno == errno.ELOOP else f"cannot be read ({exc.strerror or exc})"
        raise HubkitError(f"{what} {path} {reason}; name a regular file") from exc
    try:
        info = os.fstat(handle)
        if not stat.S_ISREG(info.st_mode):
            kind = _KINDS.get(stat.S_IFMT(info.st_mode), "not a regular file")
            raise HubkitError(f"{what} {path} is {kind}; name a regular file")
        os.set_blocking(handle, True)
    except BaseException:
        os.close(handle)
        raise
    return os.fdopen(handle, "rb")


def read_regular_text(path: Path, *, limit: int, what: str = "file") -> str:
    """Like :func:`read_regular`, decoded as UTF-8; other encodings are a HubkitError naming the file."""
    data = read_regular(path, limit=limit, what=what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HubkitError(f"{what} {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from exc


def read_bounded(path: Path, *, limit: int, follow_links: bool = True) -> bytes:
    """Like :func:`read_regular`, with every refusal an OSError: for reads whose callers take a file that
    cannot be read (a FIFO, a device, an oversize file) as absent, as they already take a missing one."""
    try:
        return read_regular(path, limit=limit, follow_links=follow_links)
    except HubkitError as exc:
        raise OSError(str(exc)) from exc


#: The largest Hugging Face token file read (a token is under 100 bytes).
MAX_TOKEN_FILE_BYTES = 64 * 1024


def check_token_file() -> None:
    """Refuse a Hugging Face token file that is not a small regular file, before the client reads it.

    huggingface_hub reads ``HF_TOKEN_PATH`` whole on every request that needs a token: a FIFO there blocks it
    and ``/dev/zero`` never ends. Where ``HF_TOKEN`` or OIDC supplies the token the file is never read."""
    if any(os.environ.get(name) for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")):
        return
    from huggingface_hub import constants

    path = Path(constants.HF_TOKEN_PATH)
    if os.path.lexists(path):
        read_regular(path, limit=MAX_TOKEN_FILE_BYTES, what="Hugging Face token file")
