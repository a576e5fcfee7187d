"""The card's pictures: an expert-coverage heatmap (layers × experts, calibration tokens per expert), drawn as a
PNG into the card's folder from the per-router counts of the quantize provenance.

matplotlib (the ``plots`` extra) is imported only when a picture is drawn; without it the card renders and says
the pictures were not drawn. The same counts give the same PNG bytes, so a rerun uploads nothing new.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError
from hubkit.reads import read_regular
from hubkit.records import write_bytes
from hubkit.sizes import MiB

log = logging.getLogger(__name__)

COVERAGE_PICTURE = "assets/expert-coverage.png"
COVERAGE_ALT = "Expert coverage: calibration tokens per expert, per MoE layer"
#: The figure: inches and dots per inch (the PNG is 1200 × 500 pixels).
FIGURE_INCHES = (12.0, 5.0)
DPI = 100
#: Where the heatmap and its colour bar sit: (left, bottom, width, height), fractions of the figure.
HEATMAP_BOX = (0.06, 0.12, 0.82, 0.78)
COLORBAR_BOX = (0.90, 0.12, 0.015, 0.78)
COLORMAP = "viridis"  # dark (no tokens) to bright (the busiest expert)
NOT_INSTALLED = (
    "The expert-coverage picture was not drawn: matplotlib is not installed (pip install 'hubkit-nvfp4[plots]')."
)
_PICTURE_LIMIT = 16 * MiB  # the largest picture read back to compare with a new drawing


@dataclass(frozen=True)
class Pictures:
    """What the card shows: the pictures drawn (paths relative to the card) and a note when some were not."""

    images: list[dict[str, str]] = field(default_factory=list)
    note: str | None = None

    def context(self) -> dict[str, Any]:
        return {"images": self.images, "note": self.note}


def coverage_counts(provenance: dict[str, Any] | None) -> tuple[list[str], list[list[int]]] | None:
    """(router names, tokens per expert of each) in layer order, from ``coverage.tokens_per_expert``; None when
    the provenance holds none, or holds them in a shape hubkit does not write."""
    coverage = (provenance or {}).get("coverage")
    counts = coverage.get("tokens_per_expert") if isinstance(coverage, dict) else None
    if not isinstance(counts, dict) or not counts:
        return None
    rows = list(counts.values())
    width = len(rows[0]) if isinstance(rows[0], list) else 0
    for row in rows:
        if not isinstance(row, list) or len(row) != width or not all(_count(v) for v in row):
            return None
    if not width:
        return None
    routers = sorted(map(str, counts), key=router_order)
    return routers, [counts[name] for name in routers]


def router_order(name: str) -> tuple[int, str]:
    """A router's place in the model: its layer number first (``layers.10`` after ``layers.9``), then its name."""
    found = re.search(r"(?:^|\.)layers\.(\d+)\.", name)
    return (int(found.group(1)) if found else -1, name)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def plots_installed() -> bool:
    """Whether matplotlib can be imported (found, not imported)."""
    try:
        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):  # ValueError: a module without a spec stands in for it
        return False


def draw_pictures(provenance: dict[str, Any] | None, folder: Path) -> Pictures:
    """Draw the card's pictures into ``folder`` (the card's own): none when the provenance holds no per-router
    counts; a note instead when matplotlib is not installed. A picture is rewritten only when its bytes change."""
    counts = coverage_counts(provenance)
    if counts is None:
        return Pictures()
    try:
        png = coverage_png(*counts)
    except ImportError:
        log.warning(
            "the card's pictures were not drawn: matplotlib is not installed; pip install 'hubkit-nvfp4[plots]'"
        )
        return Pictures(note=NOT_INSTALLED)
    target = folder / COVERAGE_PICTURE
    if _current(target) != png:
        write_bytes(target, png)
    return Pictures(images=[{"path": COVERAGE_PICTURE, "alt": COVERAGE_ALT}])


def _current(target: Path) -> bytes | None:
    """The picture there now; None when there is none, or none that can be read as a regular file."""
    if not target.is_file():
        return None
    try:
        return read_regular(target, limit=_PICTURE_LIMIT, what="picture", follow_links=False)
    except HubkitError:
        return None  # the write that follows refuses what is not a regular file, naming it


def coverage_png(routers: Sequence[str], rows: Sequence[Sequence[int]]) -> bytes:
    """The heatmap as PNG bytes: one row per router (top: the first), one column per expert. Raises ImportError
    without matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # a user's matplotlibrc never changes the picture
        figure = Figure(figsize=FIGURE_INCHES, dpi=DPI)
        axes = figure.add_axes(HEATMAP_BOX)
        busiest = max(max(row) for row in rows)
        image = axes.imshow(
            rows, aspect="auto", interpolation="nearest", cmap=COLORMAP, vmin=0, vmax=max(busiest, 1), origin="upper"
        )
        axes.set_title("Calibration tokens per expert")
        axes.set_xlabel("expert")
        axes.set_ylabel("MoE layer")
        step = max(1, len(routers) // 16)
        axes.set_yticks(range(0, len(routers), step), [_layer_label(name) for name in routers[::step]])
        colorbar = figure.colorbar(image, cax=figure.add_axes(COLORBAR_BOX))
        colorbar.set_label("tokens")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _layer_label(router: str) -> str:
    """``model.layers.7.mlp.gate`` -> ``7``; a name without a layer number as it is."""
    parts = router.split(".")
    return next((parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "layers"), router)
