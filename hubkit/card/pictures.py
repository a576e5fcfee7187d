"""The card's pictures, drawn as PNGs into the card's folder from the quantize provenance: an expert-coverage
heatmap (layers × experts, calibration tokens per expert) from its per-router counts, and a quantization-error
plot (per decoder layer, the relative weight error ``||Q(W) - W||² / ||W||²``) from ``run.layer_error`` where the
run measured it (the calibrated modes do; the MXFP4 cast and older provenance do not, and then none is drawn).

matplotlib (the ``plots`` extra) is imported only when a picture is drawn; without it the card renders and says
the pictures were not drawn. The same provenance gives the same PNG bytes, so a rerun uploads nothing new.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import math
import re
from collections.abc import Callable, Sequence
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
ERROR_PICTURE = "assets/quantization-error.png"
ERROR_ALT = "Quantization error: relative weight error per decoder layer"
ERROR_CAPTION = (
    "Relative error ||Q(W) - W||² / ||W||² of each decoder layer's quantized weights as calibrated "
    "(bars: the mean weighted by size; dots: the largest of one weight)."
)
#: The error plot: inches (the PNG is 1200 × 400 pixels) and where its axes sit, as for the heatmap.
ERROR_INCHES = (12.0, 4.0)
ERROR_BOX = (0.07, 0.14, 0.90, 0.74)
MEAN_COLOUR = "#1f77b4"  # the bars: each layer's size-weighted mean error
MAX_COLOUR = "#d62728"  # the dots: each layer's largest error of one weight
NONE_COLOUR = "#7f7f7f"  # the crosses: a layer the recipe quantizes no weight of
_NOT_INSTALLED = "not drawn: matplotlib is not installed (pip install 'hubkit-nvfp4[plots]')."


def not_installed(names: Sequence[str]) -> str:
    """The card's note when matplotlib is missing, naming the pictures that were not drawn."""
    if len(names) == 1:
        return f"The {names[0]} picture was {_NOT_INSTALLED}"
    return f"The {' and '.join(names)} pictures were {_NOT_INSTALLED}"


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


@dataclass(frozen=True)
class MeasuredErrors:
    """The measured decoder layers' errors, as ``run.layer_error`` records them (None: no quantized weight)."""

    layers: list[int]
    means: list[float | None]
    maxima: list[float | None]


def layer_errors(provenance: dict[str, Any] | None) -> MeasuredErrors | None:
    """The per-layer quantization errors of ``run.layer_error``, in layer order; None when the provenance holds
    none, none with a measured weight, or holds them in a shape hubkit does not write."""
    run = (provenance or {}).get("run")
    entries = run.get("layer_error") if isinstance(run, dict) else None
    if not isinstance(entries, list) or not entries:
        return None
    rows: dict[int, tuple[float | None, float | None]] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not _count(entry.get("layer")) or entry["layer"] in rows:
            return None
        mean, largest = entry.get("mean"), entry.get("max")
        if (mean is None) != (largest is None) or not all(v is None or _error(v) for v in (mean, largest)):
            return None
        rows[entry["layer"]] = (mean, largest)
    if all(mean is None for mean, _ in rows.values()):
        return None
    layers = sorted(rows)
    return MeasuredErrors(layers, [rows[i][0] for i in layers], [rows[i][1] for i in layers])


def _error(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def draw_pictures(provenance: dict[str, Any] | None, folder: Path) -> Pictures:
    """Draw the card's pictures into ``folder`` (the card's own): each only where the provenance holds what it is
    drawn from; a note instead when matplotlib is not installed. A picture is rewritten only when its bytes
    change."""
    wanted: list[tuple[str, dict[str, str], Callable[[], bytes]]] = []  # (name, what the card shows, drawing)
    counts = coverage_counts(provenance)
    if counts is not None:
        shown = {"path": COVERAGE_PICTURE, "alt": COVERAGE_ALT, "caption": ""}
        wanted.append(("expert-coverage", shown, lambda: coverage_png(*counts)))
    errors = layer_errors(provenance)
    if errors is not None:
        shown = {"path": ERROR_PICTURE, "alt": ERROR_ALT, "caption": ERROR_CAPTION}
        wanted.append(("quantization-error", shown, lambda: error_png(errors)))
    if not wanted:
        return Pictures()
    try:
        drawn = [(shown, draw()) for _, shown, draw in wanted]
    except ImportError:
        log.warning(
            "the card's pictures were not drawn: matplotlib is not installed; pip install 'hubkit-nvfp4[plots]'"
        )
        return Pictures(note=not_installed([name for name, _, _ in wanted]))
    for shown, png in drawn:
        if _current(folder / shown["path"]) != png:
            write_bytes(folder / shown["path"], png)
    return Pictures(images=[shown for shown, _ in drawn])


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


def error_png(errors: MeasuredErrors) -> bytes:
    """The error plot as PNG bytes: one bar per decoder layer (its size-weighted mean error), a dot for its
    largest error of one weight; no bar where the layer has no quantized weight. Raises ImportError without
    matplotlib."""
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()  # a user's matplotlibrc never changes the picture
        figure = Figure(figsize=ERROR_INCHES, dpi=DPI)
        axes = figure.add_axes(ERROR_BOX)
        rows = list(zip(errors.layers, errors.means, errors.maxima, strict=True))
        shown = [(layer, mean, top) for layer, mean, top in rows if mean is not None and top is not None]
        axes.bar([m[0] for m in shown], [m[1] for m in shown], width=0.8, color=MEAN_COLOUR, label="mean (by size)")
        axes.plot(
            [m[0] for m in shown], [m[2] for m in shown], "o", color=MAX_COLOUR, markersize=4, label="largest weight"
        )
        unquantized = [layer for layer, mean, _ in rows if mean is None]
        if unquantized:
            axes.plot(
                unquantized, [0] * len(unquantized), "x", color=NONE_COLOUR, clip_on=False, label="no quantized weight"
            )
        count = errors.layers[-1] + 1
        axes.set_xlim(-0.5, count - 0.5)
        axes.set_ylim(0, 1.15 * max(m[2] for m in shown))
        axes.set_xticks(range(0, count, max(1, count // 32)))
        axes.set_title("Weight quantization error per decoder layer", loc="left")
        axes.set_xlabel("decoder layer")
        axes.set_ylabel("||Q(W) - W||² / ||W||²")
        figure.legend(loc="upper right", ncols=3, fontsize="small", frameon=False)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def _layer_label(router: str) -> str:
    """``model.layers.7.mlp.gate`` -> ``7``; a name without a layer number as it is."""
    parts = router.split(".")
    return next((parts[i + 1] for i, part in enumerate(parts[:-1]) if part == "layers"), router)
