"""Progress on stderr: tqdm bars on a terminal; elsewhere (a CI log, machine output) heartbeat lines.

A bar draws on stderr when it is a terminal and the command's output is for people (``--format text``).
Otherwise each bar prints a heartbeat line every ``HUBKIT_HEARTBEAT`` seconds (default 30; fractions allowed;
0 turns them off) while it runs, and one when it ends if it ran that long:
``hubkit: push: upload 340.2 GB/1.2 TB (12/40 files), 410.0 MB/s, ETA 35m``. A bar made with ``each=True``
(layers, commits) also prints one after every step. Quiet runs (``enabled=False``) print nothing. With
``--format github`` each release stage's lines are folded into a GitHub group on stderr (``hubkit.output`` writes
the workflow commands).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Protocol

from hubkit.errors import HubkitError
from hubkit.output import GROUP_END, group_start
from hubkit.sizes import human_size

HEARTBEAT_ENV = "HUBKIT_HEARTBEAT"
DEFAULT_HEARTBEAT_S = 30.0


class Bar(Protocol):
    def update(self, n: float = 1) -> bool | None: ...

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, *exc: Any) -> Any: ...


@dataclass(frozen=True)
class _Display:
    """How the running command shows progress."""

    label: str = ""  # the command or release stage, first on each heartbeat line
    bars: bool = True  # tqdm bars when stderr is a terminal (else heartbeat lines)
    groups: bool = False  # GitHub workflow groups around each release stage


_display = _Display()
_write_lock = threading.Lock()


def heartbeat_interval() -> float:
    """Seconds between heartbeat lines (``HUBKIT_HEARTBEAT``; 0: none); a value that is not one is exit 2."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return DEFAULT_HEARTBEAT_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0:
        raise HubkitError(
            f"{HEARTBEAT_ENV}={text!r} is not a number of seconds: set it to e.g. 30 or 0.5 (0 turns heartbeat "
            "lines off), or unset it"
        )
    return seconds


@contextlib.contextmanager
def display(*, label: str, bars: bool, groups: bool = False) -> Iterator[None]:
    """How progress shows while one command runs (its name, its ``--format``); put back at the end."""
    global _display
    heartbeat_interval()  # a bad HUBKIT_HEARTBEAT is refused before any work
    saved = _display
    _display = _Display(label, bars, groups)
    try:
        yield
    finally:
        _display = saved


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """One release stage: its heartbeat lines carry its name, and with ``--format github`` sit in a group."""
    global _display
    saved = _display
    _display = replace(saved, label=name)
    if saved.groups:
        _emit(group_start(f"stage {name}"))
    try:
        yield
    finally:
        if saved.groups:
            _emit(GROUP_END)
        _display = saved


def terminal_bars() -> bool:
    """Whether progress is drawn as bars (stderr is a terminal and the output is for people)."""
    with contextlib.suppress(AttributeError, ValueError):  # no stderr (``2>&-``), or a closed one
        return _display.bars and sys.stderr.isatty()
    return False


def _emit(line: str) -> None:
    """One line on stderr (as it is now: the null device under ``-q``); a heartbeat never fails a run."""
    with _write_lock, contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


class _SilentBar:
    """What a disabled bar does: nothing (and tqdm is not even imported)."""

    def update(self, n: float = 1) -> None:
        return None

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        return None

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None


def human_duration(seconds: float) -> str:
    """``45s``, ``35m``, ``2h05m``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s" if seconds < 600 else f"{seconds // 60}m"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _HeartbeatBar:
    """A bar that prints a line every ``interval`` seconds from a thread of its own (thread-safe updates)."""

    def __init__(self, total: float, desc: str, unit: str, interval: float, each: bool, initial: float = 0) -> None:
        self.total, self.desc, self.unit, self.in_bytes = total, desc, unit, unit == "B"
        self.interval, self.each = interval, each
        self.label = _display.label
        self.initial = self.done = initial  # done before this run (a resumed run): not part of the rate
        self.postfix = ""
        self.lines = 0
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="hubkit-heartbeat", daemon=True)

    def update(self, n: float = 1) -> None:
        with self._lock:
            self.done += n
        if self.each and n:
            self._line()

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        with self._lock:
            self.postfix = s

    def __enter__(self) -> _HeartbeatBar:
        self.started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()
        if kind is None and (self.lines or time.monotonic() - self.started >= self.interval):
            self._line(final=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            self._line()

    def _amount(self, count: float) -> str:
        return human_size(count) if self.in_bytes else f"{count:g}"

    def _state(self) -> tuple[float, float, str]:
        """(done, total, postfix) now."""
        with self._lock:
            return self.done, self.total, self.postfix

    def _line(self, final: bool = False) -> None:
        done, total, postfix = self._state()
        with self._lock:
            self.lines += 1
        elapsed = max(time.monotonic() - self.started, 1e-9)
        ran = done - self.initial
        rate = ran / elapsed
        units = f"{self.unit}s" if len(self.unit) > 3 else self.unit
        unit = "" if self.in_bytes or units == self.desc else f" {units}"
        amount = f"{self._amount(done)}/{self._amount(total)}" if total else self._amount(done)
        parts = [f"{self.desc} {amount}{unit}" + (f" ({postfix})" if postfix else "")]
        if self.in_bytes:
            parts.append(f"{human_size(rate)}/s")
        elif rate >= 1 or not ran:
            parts.append(f"{rate:.1f} {self.unit}/s")
        else:
            parts.append(f"{human_duration(elapsed / ran)}/{self.unit}")
        if final:
            parts.append(f"done in {human_duration(elapsed)}")
        elif total and ran:
            parts.append(f"ETA {human_duration((total - done) / rate)}")
        elif total:
            parts.append("ETA ?")
        prefix = f"hubkit: {self.label}: " if self.label else "hubkit: "
        _emit(prefix + ", ".join(parts))


class _DownloadHeartbeat(_HeartbeatBar):
    """Heartbeat lines for huggingface_hub's download bars (made from the class it was given): the bytes of the
    latest byte bar (the client's bytes written, over the files' sizes) and the files of the latest count bar."""

    def __init__(self, desc: str, interval: float) -> None:
        super().__init__(0, desc, "B", interval, each=False)
        self.bars: list[Any] = []

    def _state(self) -> tuple[float, float, str]:
        sized = [bar for bar in self.bars if bar.unit == "B"]
        counted = [bar for bar in self.bars if bar.unit != "B"]
        done, total = (sized[-1].n, sized[-1].total or 0) if sized else (0, 0)
        files = f"{counted[-1].n}/{counted[-1].total} files" if counted and counted[-1].total else ""
        return done, total, files


class _NullWriter:
    """Where the download bars draw: nowhere (the heartbeat reads their counts)."""

    def write(self, text: str) -> None:
        return None

    def flush(self) -> None:
        return None


@contextlib.contextmanager
def download_progress(desc: str, *, enabled: bool = True) -> Iterator[Any]:
    """A ``tqdm_class`` for huggingface_hub's ``snapshot_download``: None (the client's own bars) on a terminal
    or when not ``enabled``; elsewhere a tqdm that draws nothing and feeds heartbeat lines of the download."""
    interval = heartbeat_interval()
    if not enabled or terminal_bars() or interval == 0:
        yield None
        return
    from tqdm import tqdm

    heartbeat = _DownloadHeartbeat(desc, interval)

    class CountingBar(tqdm):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            super().__init__(*args, **{**kwargs, "file": _NullWriter(), "disable": False, "mininterval": 3600})
            heartbeat.bars.append(self)

    with heartbeat:
        yield CountingBar


def progress_bar(
    *, total: int, desc: str, unit: str = "it", enabled: bool = True, each: bool = False, **kwargs: Any
) -> Bar:
    """A tqdm bar on a terminal; heartbeat lines elsewhere (see the module docstring); silent when not
    ``enabled`` (a quiet run). ``each``: a heartbeat line also after every update (a layer, a commit)."""
    if not enabled:
        return _SilentBar()
    if terminal_bars():
        from tqdm import tqdm

        tqdm.monitor_interval = 0  # no monitor thread of tqdm's
        bar: Bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)
        return bar
    interval = heartbeat_interval()
    if interval == 0:
        return _SilentBar()
    return _HeartbeatBar(total, desc, unit, interval, each, kwargs.get("initial", 0))
