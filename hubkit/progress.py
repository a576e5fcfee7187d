"""Progress bars on stderr (rate and ETA), switched off for machine output and quiet runs."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any, Protocol


class Bar(Protocol):
    def update(self, n: float = 1) -> bool | None: ...

    def __enter__(self) -> Bar: ...

    def __exit__(self, *exc: Any) -> Any: ...


class _SilentBar:
    """What a disabled bar does: nothing (and tqdm is not even imported)."""

    def update(self, n: float = 1) -> None:
        return None

    def __enter__(self) -> _SilentBar:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        return None


def progress_bar(*, total: int, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any) -> Bar:
    """A tqdm bar on stderr; a silent bar when ``enabled`` is false or stderr is not a terminal."""
    if not enabled or not sys.stderr.isatty():
        return _SilentBar()
    from tqdm import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: validate forks only while the process has one thread
    bar: Bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False, **kwargs)
    return bar
