"""The per-layer quantization error: measured by a real quantize run (layerwise and resident alike), recorded in
provenance, drawn as a plot shown in the card; the lock that keeps two quantize runs off one ``--out``; the
wheel's Project-URLs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from hubkit.card.pictures import (
    COVERAGE_PICTURE,
    DPI,
    ERROR_BOX,
    ERROR_INCHES,
    ERROR_PICTURE,
    MAX_COLOUR,
    MEAN_COLOUR,
    NONE_COLOUR,
    layer_errors,
    not_installed,
)
from hubkit.locks import exclusive, lock_path
from hubkit.testing.kimi import build_nvfp4_checkpoint
from tests.conftest import REPO_ROOT, SUBPROCESS_ENV, copy_of, decode_nvfp4
from tests.test_card_pictures import provenance, render

#: Four decoder layers, listed out of order: layer 0 quantizes no weight (a dense first layer), and every
#: measured layer's mean and largest error differ.
ERRORS = [
    {"layer": 2, "mean": 0.004, "max": 0.005, "max_module": "mlp.experts.down_proj_weight_quantizers.1", "weights": 9},
    {"layer": 0, "mean": None, "max": None, "max_module": None, "weights": 0},
    {"layer": 3, "mean": 0.001, "max": 0.009, "max_module": "mlp.experts.gate_up_proj_weight_quantizers.6", "weights": 9},
    {"layer": 1, "mean": 0.002, "max": 0.006, "max_module": "mlp.experts.down_proj_weight_quantizers.4", "weights": 9},
]  # fmt: skip
MAX_RECIPE = "general/ptq/nvfp4_experts_only-kv_fp8_cast"


def measured(errors: list | None = ERRORS) -> dict:
    record = provenance()
    if errors is not None:
        record["run"] = {**record.get("run", {}), "layer_error": errors}
    return record


def export_with(tmp_path: Path, record: dict) -> Path:
    return build_nvfp4_checkpoint(tmp_path / "export", files={".hubkit/provenance.json": record})


def _near(pixel: tuple[int, ...], colour: str, tolerance: int = 12) -> bool:
    wanted = tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= tolerance for a, b in zip(pixel[:3], wanted, strict=True))


def column(image: Image.Image, layer: float, layers: int) -> list[tuple[int, ...]]:
    """The pixels of the plot's axes box at ``layer`` on its x axis, from the bottom of the box up."""
    width, height = image.size
    left, bottom, box_width, box_height = ERROR_BOX
    x = int((left + box_width * (layer + 0.5) / layers) * width)
    rows = range(int((1 - bottom) * height) - 1, int((1 - bottom - box_height) * height), -1)
    return [image.getpixel((x, y)) for y in rows]  # type: ignore[misc]


def test_the_error_plot_is_drawn_from_the_provenance_and_shown_in_the_card(tmp_path: Path) -> None:
    export = export_with(tmp_path, measured())
    done = render(export)
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert f"![Quantization error: relative weight error per decoder layer]({ERROR_PICTURE})" in card
    assert f"]({COVERAGE_PICTURE})" in card and "not drawn" not in card  # both pictures
    image = Image.open(export / ERROR_PICTURE)
    assert image.format == "PNG" and image.size == (int(ERROR_INCHES[0] * DPI), int(ERROR_INCHES[1] * DPI))
    image = image.convert("RGB")
    # in layer order, whatever order the provenance lists them in
    errors = layer_errors(measured())
    assert errors is not None and errors.layers == [0, 1, 2, 3]
    # each bar's height is its layer's mean error and each dot's its largest, on one linear scale
    bars = {i: sum(_near(p, MEAN_COLOUR) for p in column(image, i - 0.25, 4)) for i in (1, 2, 3)}
    dots = {}
    for i in (1, 2, 3):
        rows = [row for row, p in enumerate(column(image, i, 4)) if _near(p, MAX_COLOUR, 40)]
        assert rows, f"no dot for layer {i}"
        dots[i] = (min(rows) + max(rows)) / 2
    pixels_per_error = dots[3] / 0.009
    for i in (1, 2, 3):
        assert abs(bars[i] - errors.means[i] * pixels_per_error) <= 2, (i, bars, dots)  # type: ignore[operator]
        assert abs(dots[i] - errors.maxima[i] * pixels_per_error) <= 2, (i, bars, dots)  # type: ignore[operator]
    # layer 0 quantizes no weight: no bar (not a zero error), a grey cross on the axis
    assert not any(_near(p, MEAN_COLOUR) for p in column(image, -0.25, 4))
    assert any(_near(p, NONE_COLOUR, 40) for p in column(image, 0, 4)[:8])


def test_the_same_provenance_draws_the_same_error_plot_bytes(tmp_path: Path) -> None:
    from hubkit.card.pictures import error_png

    errors = layer_errors(measured())
    assert errors is not None
    assert error_png(errors) == error_png(layer_errors(measured(list(reversed(ERRORS)))))  # type: ignore[arg-type]


def test_without_matplotlib_the_card_says_both_pictures_were_not_drawn(tmp_path: Path) -> None:
    export = export_with(tmp_path, measured())
    done = render(export, "sys.modules['matplotlib'] = None")
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert not_installed(["expert-coverage", "quantization-error"]) in card
    assert "The expert-coverage and quantization-error pictures were not drawn: matplotlib is not installed" in card
    assert ERROR_PICTURE not in card and not (export / ERROR_PICTURE).exists()


@pytest.mark.parametrize(
    "errors",
    [None, [], [{"layer": 0, "mean": None, "max": None, "max_module": None, "weights": 0}]],
    ids=["older-provenance", "none-measured", "no-quantized-weight"],
)
def test_without_a_measured_error_no_plot_is_drawn_and_the_card_says_nothing_of_it(
    tmp_path: Path, errors: list | None
) -> None:
    export = export_with(tmp_path, measured(errors))
    done = render(export)
    assert done.returncode == 0, done.stderr
    card = (export / "README.md").read_text()
    assert "quantization-error" not in card and "Relative error" not in card and "not drawn" not in card
    assert f"]({COVERAGE_PICTURE})" in card and not (export / ERROR_PICTURE).exists()


@pytest.mark.parametrize(
    "errors",
    [
        "0.1",
        [{"layer": -1, "mean": 0.1, "max": 0.2}],
        [{"layer": True, "mean": 0.1, "max": 0.2}],
        [{"layer": 0, "mean": 0.1, "max": None}],
        [{"layer": 0, "mean": -0.1, "max": 0.2}],
        [{"layer": 0, "mean": float("nan"), "max": 0.2}],
        [{"layer": 0, "mean": "0.1", "max": 0.2}],
        [{"layer": 0, "mean": 0.1, "max": 0.2}, {"layer": 0, "mean": 0.1, "max": 0.2}],
    ],
    ids=["text", "negative-layer", "bool-layer", "half-measured", "negative", "nan", "text-error", "twice"],
)
def test_errors_in_a_shape_hubkit_does_not_write_are_not_drawn(errors: object) -> None:
    assert layer_errors({"run": {"layer_error": errors}}) is None


def test_a_resumed_run_reads_the_errors_kept_beside_its_state_and_ignores_a_damaged_file(tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    from hubkit.quantize.layer_error import LayerErrors

    kept = tmp_path / "layer-error.json"
    kept.write_text(json.dumps(ERRORS))
    assert LayerErrors(kept).record() == sorted(ERRORS, key=lambda entry: entry["layer"])
    kept.write_text(json.dumps([*ERRORS, {"layer": 5, "mean": 0.1}]))
    assert LayerErrors(kept).record() == []


@pytest.mark.slow  # two real quantize runs of a tiny four-layer base: about a minute on two cores
def test_a_real_quantize_records_every_layers_error_as_the_export_holds_it(tmp_path: Path) -> None:
    """Layerwise and resident record the same errors; each MoE layer's is what its exported NVFP4 weights give."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("modelopt")
    from safetensors.torch import load_file

    from hubkit.quantize.pipeline import QuantizeOptions, quantize
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    base = tiny_base(tmp_path / "base", num_hidden_layers=4)
    calib = calibration_jsonl(tmp_path / "calib.jsonl", samples=8)
    records = {}
    for mode in ("layerwise", "resident"):
        options = QuantizeOptions(
            base=str(base), out=tmp_path / mode, calib=(str(calib),), calib_size=8, calib_seq=32, batch_size=4,
            progress=False, mode=mode, recipe=MAX_RECIPE,
        )  # fmt: skip
        result = quantize(options)
        assert result.report.passed
        records[mode] = json.loads((tmp_path / mode / ".hubkit" / "provenance.json").read_text())["run"]["layer_error"]
    assert records["layerwise"] == records["resident"]
    errors = records["layerwise"]
    assert [entry["layer"] for entry in errors] == [0, 1, 2, 3]
    assert errors[0] == {"layer": 0, "mean": None, "max": None, "max_module": None, "weights": 0}  # dense layer
    exported: dict[str, torch.Tensor] = {}
    for shard in (tmp_path / "layerwise").glob("*.safetensors"):
        exported |= load_file(shard)
    original: dict[str, torch.Tensor] = {}
    for shard in base.glob("*.safetensors"):
        original |= load_file(shard)
    for entry in errors[1:]:
        assert entry["weights"] == 16  # 8 experts' fused gate_up and down, each expert with its own quantizer
        assert 0 < entry["mean"] <= entry["max"] < 1 and entry["max_module"].startswith("mlp.experts.")
        per_weight = []  # from the export: each expert's gate_up (gate and up together) and down
        for expert in range(8):
            for projections in (("gate_proj", "up_proj"), ("down_proj",)):
                squared = energy = 0.0
                size = 0
                for projection in projections:
                    name = f"model.layers.{entry['layer']}.mlp.experts.{expert}.{projection}.weight"
                    weight = original[name].float()
                    scales = exported[name + "_scale"], exported[name + "_scale_2"]
                    squared += float((decode_nvfp4(exported[name], *scales) - weight).square().sum())
                    energy += float(weight.square().sum())
                    size += weight.numel()
                per_weight.append((squared / energy, size))
        # the fake quant measured and the exported NVFP4 values differ in a few blocks of some fused gate_up
        # weights (their error within 0.3 % of each other here), never more
        assert entry["max"] == pytest.approx(max(error for error, _ in per_weight), rel=5e-3)
        mean = sum(error * size for error, size in per_weight) / sum(size for _, size in per_weight)
        assert entry["mean"] == pytest.approx(mean, rel=5e-3)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["layer-done:1", "scratch-item-removed:1"])
def test_a_run_resumed_after_a_kill_records_every_layers_error(tmp_path: Path, point: str) -> None:
    """Killed after its first layer, or after its scratch was half cleaned: the rerun reports the errors of the
    layers the killed run measured, kept beside its state, as an uninterrupted run does."""
    pytest.importorskip("modelopt")
    from hubkit.quantize.pipeline import quantize
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base
    from tests.test_quantize_plan_truth import killed_at, options

    base = tiny_base(tmp_path / "base", num_hidden_layers=3)
    calib = calibration_jsonl(tmp_path / "calib.jsonl", samples=8)
    whole = quantize(options(base, tmp_path / "whole", calib)).provenance["run"]["layer_error"]
    assert [entry["layer"] for entry in whole] == [0, 1, 2] and whole[1]["weights"]
    run = options(base, tmp_path / "out", calib)
    killed_at(run, point)
    resumed = quantize(run).provenance["run"]
    assert resumed["resumed_layers"] and resumed["layer_error"] == whole


@pytest.mark.slow
def test_the_release_pushes_the_error_plot_its_card_shows(released_example: Path, tmp_path: Path) -> None:
    """The release holds the lock of its OUT and quantizes into it (its quantize takes the same lock again)."""
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    folder = copy_of(released_example, tmp_path)
    export = folder / "Kimi-Tiny-NVFP4"
    errors = json.loads((export / ".hubkit" / "provenance.json").read_text())["run"]["layer_error"]
    assert errors and all(e["mean"] is None or 0 < e["mean"] <= e["max"] < 1 for e in errors)
    assert any(e["weights"] for e in errors)
    assert f"]({ERROR_PICTURE})" in (export / "README.md").read_text()
    server = HubServer(folder / ".hubkit" / "local-hub", user="release")
    server.start()
    try:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        pushed = api.hf_hub_download("example-org/Kimi-Tiny-NVFP4", ERROR_PICTURE, cache_dir=tmp_path / "cache")
        assert Path(pushed).read_bytes() == (export / ERROR_PICTURE).read_bytes()
    finally:
        server.stop()


# ------------------------------------------------------------------------------------------- quantize --out lock


def quantize_command(tmp_path: Path, out: Path) -> list[str]:
    """A quantize whose base is missing: it fails (exit 2, naming the base) right after it takes the lock."""
    return [sys.executable, "-m", "hubkit", "quantize", "--base", str(tmp_path / "no-base"), "--out", str(out),
            "--calib", str(tmp_path / "calib.jsonl")]  # fmt: skip


def one_line(err: str) -> bool:
    return len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)


def test_a_second_quantize_on_a_held_out_exits_2_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with exclusive(out, "--out"):
        second = run(quantize_command(tmp_path, out))
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert second.returncode == 2 and one_line(second.stderr), second.stderr
    assert f"another hubkit run (pid {os.getpid()}) is working on --out {out}" in second.stderr
    assert "wait for it to end or stop it, or pass another --out" in second.stderr
    assert not out.exists() and not (tmp_path / ".out.partial").exists()  # it wrote nothing


def test_the_lock_of_a_killed_run_never_blocks(tmp_path: Path) -> None:
    """A real second process holds the lock, dies by SIGKILL (its pid stays in the lock file), and the next
    run goes on (to its own error: the missing base)."""
    out = tmp_path / "out"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, pathlib; from hubkit.locks import exclusive\n"
         f"with exclusive(pathlib.Path({str(out)!r}), '--out'):\n    print('held', flush=True); sys.stdin.read()"],
        env=SUBPROCESS_ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        blocked = run(quantize_command(tmp_path, out))
        assert blocked.returncode == 2 and f"another hubkit run (pid {holder.pid})" in blocked.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(out).read_text().strip() == str(holder.pid)  # the dead holder's lock file is still there
    after = run(quantize_command(tmp_path, out))
    assert after.returncode == 2 and "another hubkit" not in after.stderr, after.stderr
    assert "no-base" in after.stderr and not lock_path(out).exists()


def test_a_process_that_holds_the_lock_may_take_it_again(tmp_path: Path) -> None:
    """A release holds the lock of its OUT and runs its quantize stage on that same folder."""
    out = tmp_path / "out"
    with exclusive(out, "OUT"), exclusive(out, "--out", run="run"):
        assert lock_path(out).read_text().strip() == str(os.getpid())
    assert not lock_path(out).exists()


# ------------------------------------------------------------------------------------------------- Project-URLs


def test_the_wheel_metadata_lists_project_urls_and_invents_no_repository() -> None:
    pytest.importorskip("hatchling")
    from hatchling.metadata.core import ProjectMetadata
    from hatchling.metadata.spec import DEFAULT_METADATA_VERSION, get_core_metadata_constructors
    from hatchling.plugin.manager import PluginManager

    metadata = get_core_metadata_constructors()[DEFAULT_METADATA_VERSION](
        ProjectMetadata(str(REPO_ROOT), PluginManager())
    )
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in metadata.splitlines()
        if line.startswith("Project-URL: ")
    )
    assert urls["Reference release"] == "https://huggingface.co/nvidia/Kimi-K2.6-NVFP4"
    assert urls["NVIDIA Model Optimizer"] == "https://github.com/NVIDIA/Model-Optimizer"
    assert all(url.startswith("https://") for url in urls.values())
    assert not {"Homepage", "Source", "Issues", "Repository"} & set(urls)  # added when the repository is public
