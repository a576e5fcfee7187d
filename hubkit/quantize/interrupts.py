"""SIGINT and SIGTERM during a quantization act at the next safe point, not inside a library call.

A signal handled the Python way raises wherever the interpreter happens to be, which may be inside torch building
a tensor (it then reports a ValueError about shapes) or inside a file write. So while ``deferred()`` is active the
first SIGINT or SIGTERM is only remembered; ``check()`` (called between calibration batches, between stages and
between layers) then hands it to the handler that was installed before (Python's: KeyboardInterrupt; the CLI's
for SIGTERM), so cleanup runs as for any interrupt. A second signal acts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_pending: list[int] = []
_previous: dict[int, Any] = {}
SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def deferred() -> Iterator[None]:
    """Defer SIGINT/SIGTERM to ``check()`` for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread() or _previous:
        yield
        return
    for number in SIGNALS:
        _previous[number] = signal.signal(number, _remember)
    try:
        yield
    finally:
        _restore()
        _pending.clear()


def _remember(number: int, frame: FrameType | None) -> None:
    if _pending:  # a second signal: act now
        _act(number, frame)
    _pending.append(number)


def check() -> None:
    """Act on a deferred signal, if one arrived: the handler installed before ``deferred()`` runs now."""
    if _pending:
        _act(_pending[0], None)


def _act(number: int, frame: FrameType | None) -> None:
    previous = _previous.get(number)
    _restore()
    _pending.clear()
    if previous == signal.SIG_IGN:
        return
    if callable(previous):
        previous(number, frame)
    if number == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + number)


def _restore() -> None:
    for number, handler in _previous.items():
        signal.signal(number, handler if handler is not None else signal.SIG_DFL)
    _previous.clear()
