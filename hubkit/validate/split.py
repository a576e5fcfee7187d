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
import select
import signal
import struct
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


_PID = struct.Struct("<q")


def start(work: Callable[[], list[Finding]]) -> Child:
    """Run ``work`` in a forked worker; ``finish`` returns what it returned.

    The worker is forked twice, so it is not this process's child: nothing here waits for it to exit
    (ending a process that holds a loaded checkpoint takes a tenth of a second) or leaves a zombie. Its
    first message is its pid, for ``cancel``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the intermediate child: fork the worker and leave at once
        status = 1
        try:
            os.close(read_end)
            if os.fork() == 0:
                _work(work, write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    os.waitpid(pid, 0)
    head = os.read(read_end, _PID.size)
    worker = _PID.unpack(head)[0] if len(head) == _PID.size else 0
    return Child(worker, read_end)


def _work(work: Callable[[], list[Finding]], pipe_end: int) -> None:
    """The worker: say who it is, do the work, hand the findings over, leave without any cleanup."""
    status = 1
    try:
        with os.fdopen(pipe_end, "wb") as pipe:
            pipe.write(_PID.pack(os.getpid()))
            pipe.flush()
            pipe.write(pickle.dumps(work()))
        status = 0
    finally:
        os._exit(status)


def finish(child: Child) -> list[Finding] | None:
    """The worker's findings, or None when it failed (its checks must then run here): a worker that
    stops early leaves no payload or a cut one, which does not unpickle."""
    with os.fdopen(child.pipe, "rb") as pipe:
        payload = pipe.read()
    try:
        found: list[Finding] = pickle.loads(payload)
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, IndexError):
        return None
    return found


def cancel(child: Child | None) -> None:
    """Stop a started worker (on an error or an interrupt here). A worker that has closed its end of
    the pipe has finished, and its pid may already name another process: it is left alone."""
    if child is None:
        return
    with contextlib.suppress(OSError):
        poll = select.poll()
        poll.register(child.pipe, select.POLLHUP)
        if child.pid and not poll.poll(0):
            os.kill(child.pid, signal.SIGKILL)
        os.close(child.pipe)
