"""SIGINT and SIGTERM during a quantization act at the next safe point, not inside a library call.

A signal handled the Python way raises wherever the interpreter happens to be, which may be inside torch building
a tensor (it then reports a ValueError about shapes) or inside a file write. So while ``deferred()`` is active the
first SIGINT or SIGTERM is only remembered; ``check()`` then hands it to the handler that was installed before
(Python's: KeyboardInterrupt; the CLI's for SIGTERM), so cleanup runs as for any interrupt. A second signal acts
at once (at the interpreter's next instruction).

``check()`` runs between calibration batches, stages, layers and tensor reads, and, under ``between_modules()``,
before every torch module call: inside a library's own loops too (modelopt's MSE sweep calls the weight quantizer
once per candidate scale), so a signal acts within one module call rather than one layer's calibration. Every such
point is outside any file write, and a layerwise run's committed layers stay valid whatever raises (its resume
record is built for a SIGKILL anywhere).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_pending: list[int] = []
#: Test hook: ``HUBKIT_TEST_KILL_AT=EVENT:N`` SIGKILLs the process the N-th time it reaches ``kill_point(EVENT)``.
KILL_AT = "HUBKIT_TEST_KILL_AT"
_reached: dict[str, int] = {}
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


@contextmanager
def between_modules() -> Iterator[None]:
    """Also ``check()`` before every torch module's forward (torch's global forward pre-hook) for the duration."""
    from torch.nn.modules.module import register_module_forward_pre_hook

    handle = register_module_forward_pre_hook(_check_hook)
    try:
        yield
    finally:
        handle.remove()


def _check_hook(module: Any, args: Any) -> None:
    if threading.current_thread() is threading.main_thread():
        check()


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


def kill_point(event: str) -> None:
    """Test hook for the resume tests: a named moment of a run (``KILL_AT`` lists them in the tests); when the
    environment names it, die here as a SIGKILL would. Nothing happens when ``KILL_AT`` is unset."""
    wanted = os.environ.get(KILL_AT)
    if not wanted:
        return
    name, _, count = wanted.partition(":")
    if name == event:
        _reached[event] = _reached.get(event, 0) + 1
        if _reached[event] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)
