"""Two cores for one validation: a forked child reads the checkpoint too and runs half of the checks.

The checks that read the module table (and ``--deep``, with its threads and progress bar, and the card
facts) run in this process; the files, headers, index and secrets checks run in a child forked before
anything is loaded, which reads the checkpoint itself. Sharing an already loaded checkpoint would cost
more: every reference count either process touches copies a page of the other's memory, hundreds of MB
for a 277,000-tensor checkpoint, while reading 120 headers takes a third of a second. The child sends its
findings through a pipe; when it fails in any way, its checks run here instead, so a bug surfaces exactly
as it would in one process.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

from hubkit.checkpoint.source import HUB_SCHEME
from hubkit.validate.engine import Check, Finding

#: Checks that stay in this process: together they weigh about as much as the rest on a full-scale Kimi
#: checkpoint (the module table is built once, here).
STAY_HERE = ("HK5", "HK6", "HK7", "HK903")


def share(checks: list[Check]) -> tuple[list[Check], list[Check]]:
    """(the checks for this process, the checks for the child)."""
    return [c for c in checks if c.code.startswith(STAY_HERE)], [c for c in checks if not c.code.startswith(STAY_HERE)]


def can_fork(*refs: str | None) -> bool:
    """Linux (fork is the platform's way there), two usable cores, no other thread that a fork could
    catch holding a lock, and local checkpoints only (a child must not share HTTP connections)."""
    if sys.platform != "linux" or threading.active_count() > 1 or len(os.sched_getaffinity(0)) < 2:
        return False
    return not any(ref is not None and ref.startswith(HUB_SCHEME) for ref in refs)


@dataclass(frozen=True)
class Child:
    pid: int
    pipe: int


def start(work: Callable[[], list[Finding]]) -> Child:
    """Run ``work`` in a forked child; ``finish`` returns what it returned."""
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: do the work, hand the findings over, leave without any cleanup
        status = 1
        try:
            os.close(read_end)
            payload = pickle.dumps(work())
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    return Child(pid, read_end)


def finish(child: Child) -> list[Finding] | None:
    """The child's findings, or None when it failed (its checks must then run here)."""
    try:
        with os.fdopen(child.pipe, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(child.pid, 0)
    except BaseException:
        cancel(child)
        raise
    if status != 0 or not payload:
        return None
    found: list[Finding] = pickle.loads(payload)
    return found


def cancel(child: Child | None) -> None:
    """Stop a started child (on an error or an interrupt here)."""
    if child is not None:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
            os.waitpid(child.pid, 0)
