"""The card's pictures: an expert-coverage heatmap drawn from the provenance's per-router counts, shown in the
card, pushed with the release; without matplotlib the card says it was not drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hubkit.card.pictures import (
    COVERAGE_PICTURE,
    DPI,
    FIGURE_INCHES,
    HEATMAP_BOX,
    coverage_counts,
    not_installed,
)
from hubkit.testing.kimi import build_nvfp4_checkpoint
from tests.conftest import REPO_ROOT, SUBPROCESS_ENV, copy_of

EXAMPLE = REPO_ROOT / "examples" / "kimi-k2.7-code-nvfp4"
MANIFEST = EXAMPLE / "hubkit.toml"
#: Tokens per expert of the tiny model's three MoE routers (8 experts each), every count different; the
#: provenance lists them out of layer order, as a dict may hold them.
COUNTS = {
    "language_model.model.layers.3.mlp.gate": [50, 0, 7, 13, 21, 34, 2, 5],
    "language_model.model.layers.1.mlp.gate": [9, 17, 25, 33, 41, 49, 57, 65],
    "language_model.model.layers.2.mlp.gate": [96, 1, 3, 4, 6, 8, 10, 11],
}


def provenance(counts: dict[str, list[int]] | None = COUNTS) -> dict:
    record = json.loads((EXAMPLE / "provenance.json").read_text())
    if counts is not None:
        record["coverage"] = {
            "routers": len(counts),
            "experts": sum(len(c) for c in counts.values()),
            "experts_without_tokens": sum(c.count(0) for c in counts.values()),
            "backstop_experts": {name: [i for i, v in enumerate(c) if not v] for name, c in counts.items() if 0 in c},
            "min_tokens_per_expert": min(min(c) for c in counts.values()),
            "tokens_per_expert": counts,
        }
    return record


@pytest.fixture
def export(tmp_path: Path) -> Path:
    return build_nvfp4_checkpoint(tmp_path / "export", files={".hubkit/provenance.json": provenance()})


def render(folder: Path, *prefix: str) -> subprocess.CompletedProcess[str]:
    """``hubkit card render`` of ``folder`` into its README.md, in a child (``prefix``: code run before hubkit)."""
    code = ";".join([*prefix, "from hubkit.cli import main", "main(sys.argv[1:])"])
    args = ["card", "render", str(folder), "--manifest", str(MANIFEST), "-o", str(folder / "README.md")]
    return subprocess.run(
        [sys.executable, "-c", f"import sys;{code}", *args], env=SUBPROCESS_ENV, capture_output=True, text=True
    )


def luminance(image: Image.Image, row: int, column: int, rows: int, columns: int) -> float:
    """The brightness at the centre of heatmap cell (row, column), from where the module places the heatmap."""
    width, height = image.size
    left, bottom, box_width, box_height = HEATMAP_BOX
    x = (left + box_width * (column + 0.5) / columns) * width
    y = (1 - bottom - box_height + box_height * (row + 0.5) / rows) * height
    red, green, blue = image.getpixel((int(x), int(y)))[:3]
    return 0.299 * red + 0.587 * green + 0.114 * blue


def test_the_heatmap_is_drawn_from_the_provenance_and_shown_in_the_card(export: Path) -> None:
    done = render(export)
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert f"![Expert coverage: calibration tokens per expert, per MoE layer]({COVERAGE_PICTURE})" in card
    assert "not drawn" not in card
    image = Image.open(export / COVERAGE_PICTURE)
    assert image.format == "PNG"
    assert image.size == (int(FIGURE_INCHES[0] * DPI), int(FIGURE_INCHES[1] * DPI))
    image = image.convert("RGB")
    # rows in layer order (1, 2, 3), whatever order the provenance lists them in
    routers, rows = coverage_counts(provenance())  # type: ignore[misc]
    assert [name.split(".")[3] for name in routers] == ["1", "2", "3"]
    cells = {(r, c): luminance(image, r, c, 3, 8) for r in range(3) for c in range(8)}
    by_count = sorted(cells, key=lambda cell: rows[cell[0]][cell[1]])
    brightness = [cells[cell] for cell in by_count]
    assert brightness == sorted(brightness) and len(set(brightness)) > 20  # brighter with every token more
    assert by_count[-1] == (1, 0)  # the busiest expert: layer 2's expert 0, the brightest cell
    assert by_count[0] == (2, 1)  # layer 3's expert 1 saw no token: the darkest


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_the_same_provenance_draws_the_same_bytes_and_a_rerun_rewrites_nothing(export: Path) -> None:
    assert render(export).returncode == 0
    picture = export / COVERAGE_PICTURE
    first, written = picture.read_bytes(), picture.stat().st_mtime_ns
    assert render(export).returncode == 0
    assert picture.read_bytes() == first and picture.stat().st_mtime_ns == written
    other = build_nvfp4_checkpoint(export.parent / "other", files={".hubkit/provenance.json": provenance()})
    assert render(other).returncode == 0
    assert (other / COVERAGE_PICTURE).read_bytes() == first


def test_without_matplotlib_the_card_says_the_pictures_were_not_drawn(export: Path) -> None:
    done = render(export, "sys.modules['matplotlib'] = None")
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert not_installed(["expert-coverage"]) in card and COVERAGE_PICTURE not in card
    assert "pictures were not drawn: matplotlib is not installed" in done.stderr
    assert not (export / COVERAGE_PICTURE).exists()


def test_a_printed_card_writes_no_picture(hubkit, export: Path) -> None:
    result = hubkit("card", "render", export, "--manifest", MANIFEST)
    assert result.code == 0, result.err
    assert "expert-coverage" not in result.out and "not drawn" not in result.out
    assert not (export / "assets").exists()


def test_a_provenance_without_per_router_counts_shows_no_picture(tmp_path: Path) -> None:
    export = build_nvfp4_checkpoint(tmp_path / "export", files={".hubkit/provenance.json": provenance(None)})
    done = render(export)
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert "expert-coverage" not in card and "not drawn" not in card
    assert not (export / "assets").exists()


@pytest.mark.parametrize(
    "counts",
    [{}, {"a": [1, 2], "b": [1]}, {"a": [1, -2]}, {"a": [True, 2]}, {"a": "12"}, {"a": []}],
    ids=["empty", "ragged", "negative", "bool", "text", "no-experts"],
)
def test_counts_in_a_shape_hubkit_does_not_write_are_not_drawn(counts: dict) -> None:
    assert coverage_counts({"coverage": {"tokens_per_expert": counts}}) is None


def test_the_quantize_coverage_records_tokens_per_expert_in_layer_order() -> None:
    torch = pytest.importorskip("torch")
    from hubkit.quantize.coverage import ExpertCoverage

    coverage = ExpertCoverage(num_experts=2)
    for layer, counts in ((10, [3, 0]), (9, [1, 2])):
        coverage.counts[f"model.layers.{layer}.mlp.gate"] = torch.tensor(counts)
    summary = coverage.summary()
    assert summary["tokens_per_expert"] == {"model.layers.9.mlp.gate": [1, 2], "model.layers.10.mlp.gate": [3, 0]}
    assert list(summary["tokens_per_expert"]) == ["model.layers.9.mlp.gate", "model.layers.10.mlp.gate"]


@pytest.mark.slow
def test_the_release_pushes_the_picture_its_card_shows(released_example: Path, tmp_path: Path) -> None:
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    folder = copy_of(released_example, tmp_path)
    export = folder / "Kimi-Tiny-NVFP4"
    routers = json.loads((export / ".hubkit" / "provenance.json").read_text())["coverage"]["tokens_per_expert"]
    assert routers and all(len(counts) == 8 for counts in routers.values())
    assert f"]({COVERAGE_PICTURE})" in (export / "README.md").read_text()
    server = HubServer(folder / ".hubkit" / "local-hub", user="release")
    server.start()
    try:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        pushed = api.hf_hub_download("example-org/Kimi-Tiny-NVFP4", COVERAGE_PICTURE, cache_dir=tmp_path / "cache")
        assert Path(pushed).read_bytes() == (export / COVERAGE_PICTURE).read_bytes()
        card = Path(api.hf_hub_download("example-org/Kimi-Tiny-NVFP4", "README.md", cache_dir=tmp_path / "cache"))
        assert f"]({COVERAGE_PICTURE})" in card.read_text()
    finally:
        server.stop()
