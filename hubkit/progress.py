"""Progress bars on stderr (rate and ETA), switched off for machine output and quiet runs."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


def progress_bar(*, total: int, desc: str, unit: str = "it", enabled: bool = True, **kwargs: Any) -> tqdm[Any]:
    """A tqdm bar on stderr; a silent no-op bar when ``enabled`` is false or stderr is not a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not enabled or not sys.stderr.isatty(),
        dynamic_ncols=True,
        leave=False,
        **kwargs,
    )
