"""Errors a user can cause, and the exit codes every hubkit command shares."""

from __future__ import annotations

import errno
import re
from enum import IntEnum

#: What the environment, never hubkit, causes: a full disk or quota, a read-only or forbidden path, a failing disk.
OUTSIDE_FAULTS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EMFILE}
)
#: The user-info part of a URL (``https://user:token@host``): a credential, whatever its shape.
_URL_CREDENTIALS = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^/\s?#]*@")


class ExitCode(IntEnum):
    """Process exit codes, identical for every hubkit command."""

    OK = 0
    ARTIFACT_FAILED = 1
    USER_ERROR = 2
    INTERNAL_ERROR = 3
    INTERRUPTED = 130


class HubkitError(Exception):
    """A problem with the user's input or environment: printed as one line, exit code 2.

    The message must say what to do about it and must never contain a secret.
    """

    exit_code = ExitCode.USER_ERROR


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C, so every cleanup that runs on Ctrl-C runs on it too."""


def is_network_error(exc: BaseException) -> bool:
    """A dropped or refused connection, whichever HTTP stack this huggingface_hub version uses."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in (
        "httpx",
        "httpx2",
        "httpcore",
        "httpcore2",
        "requests",
        "urllib3",
    )


def outside_fault(exc: BaseException) -> HubkitError | None:
    """The one-line error (exit 2) for an OSError the environment caused (a full disk...), else None."""
    if not isinstance(exc, OSError) or exc.errno not in OUTSIDE_FAULTS:
        return None
    where = f"{exc.filename}: " if exc.filename else ""
    return HubkitError(f"{where}{exc.strerror or exc}; free space or fix the permissions, then run again")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it masked (``http://user:token@host`` -> ``http://***@host``):
    what hubkit shows of an endpoint, in errors, logs and summaries, goes through here."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)
