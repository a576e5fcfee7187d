"""Issue 18, "throughput of a layerwise run": the time of each part of a layer in provenance and in the plan,
INT4 dequantized on the calibration device a piece at a time, and the next layer read while this one calibrates
(CPU, real modelopt and compressed-tensors)."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import export_files

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt")
pytest.importorskip("accelerate")

from hubkit.quantize.layerwise import (  # noqa: E402
    PARTS,
    PREFETCH_ENV,
    BaseWeights,
    LayerReader,
    PartTimes,
    Skeleton,
    dequantize_in_pieces,
)
from hubkit.quantize.pipeline import QuantizeOptions, quantize  # noqa: E402
from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base  # noqa: E402
from tests.test_outputs import assert_valid  # noqa: E402

MAX_RECIPE = "general/ptq/nvfp4_experts_only-kv_fp8_cast"
#: Timer resolution and the rounding of the recorded figures.
SLACK = 0.01


@pytest.fixture(scope="module")
def bf16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("bf16") / "base", num_hidden_layers=3)


@pytest.fixture(scope="module")
def int4(bf16: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return int4_base_from(bf16, tmp_path_factory.mktemp("int4") / "base")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_jsonl(tmp_path_factory.mktemp("calib") / "calib.jsonl", samples=8)


def layerwise(base: Path, out: Path, calib: Path) -> dict[str, Any]:
    options = QuantizeOptions(
        base=str(base), out=out, calib=(str(calib),), calib_size=8, calib_seq=32, batch_size=4, progress=False,
        shard_size="40KB", mode="layerwise", recipe=MAX_RECIPE,
    )  # fmt: skip
    result = quantize(options)
    assert result.report.passed, result.report.findings
    run: dict[str, Any] = result.provenance["run"]
    return run


@pytest.fixture(scope="module")
def runs(int4: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[bool, tuple[Path, dict[str, Any]]]:
    """The INT4 base quantized layerwise with and without prefetch."""
    made = {}
    with pytest.MonkeyPatch.context() as patch:
        for prefetch in (True, False):
            patch.setenv(PREFETCH_ENV, "1" if prefetch else "0")
            out = tmp_path_factory.mktemp(f"prefetch-{prefetch}") / "out"
            made[prefetch] = out, layerwise(int4, out, calib)
    return made


@pytest.mark.slow
@pytest.mark.parametrize("prefetch", [True, False])
def test_provenance_times_every_part_of_every_layer(
    runs: dict[bool, tuple[Path, dict[str, Any]]], prefetch: bool
) -> None:
    run = runs[prefetch][1]
    assert run["prefetch"] is prefetch
    assert len(run["layer_parts"]) == len(run["layer_seconds"]) == 3
    for parts, seconds in zip(run["layer_parts"], run["layer_seconds"], strict=True):
        assert set(parts) == {*PARTS, "read_wait"}
        assert all(value >= 0 for value in parts.values())
        assert parts["read"] > 0 and parts["dequantize"] > 0 and parts["calibrate"] > 0
        assert parts["export"] > 0 and parts["write"] > 0
        # with prefetch the read ran beside the layer before; the loop's own time holds the wait for it
        waited = sum(parts[p] for p in PARTS if p != "read") + parts["read_wait"]
        assert waited <= seconds + SLACK
        if not prefetch:
            assert sum(parts[p] for p in PARTS) <= seconds + SLACK
            assert parts["read_wait"] >= parts["read"]


@pytest.mark.slow
def test_prefetch_exports_the_same_bytes(runs: dict[bool, tuple[Path, dict[str, Any]]]) -> None:
    with_prefetch, without = export_files(runs[True][0]), export_files(runs[False][0])
    assert with_prefetch.keys() == without.keys()
    assert [name for name in with_prefetch if with_prefetch[name] != without[name]] == []


def test_plan_predicts_the_parts(hubkit, int4: Path) -> None:
    for target in ("cpu", "1xH100"):
        plan = hubkit("quantize", "--base", int4, "--plan", "--gpus", target, "--format", "json")
        assert plan.code == 0, plan.err
        assert_valid("quantize-plan", plan.json())
        layerwise = plan.json()["modes"]["layerwise"]
        parts = layerwise["part_seconds"]
        assert set(parts) == {*PARTS, "read_wait"} and all(parts[p] > 0 for p in PARTS)
        assert layerwise["seconds_per_layer"] == pytest.approx(
            sum(v for p, v in parts.items() if p != "read"), abs=0.01
        )
    text = hubkit("quantize", "--base", int4, "--plan", "--gpus", "cpu")
    assert "dequantize" in text.out and "read_wait" in text.out


def test_dequantize_in_pieces_equals_the_dequantizer_on_the_whole(int4: Path) -> None:
    weights = BaseWeights(int4, int4=True)
    names = [n for n in weights.names() if ".layers.1." in n]
    raw = weights.read(names)
    modules = [n for n in raw if n.endswith(".weight_packed")]
    assert len(modules) > 4
    expected = weights.dequantizer.process(dict(raw))

    calls: list[int] = []

    class Counting:  # compressed-tensors' own dequantizer, its calls counted
        def process(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            calls.append(len(tensors))
            result: dict[str, torch.Tensor] = weights.dequantizer.process(tensors)
            return result

    one_module = raw[modules[0]].numel() * 16
    pieces = dequantize_in_pieces(Counting(), raw, torch.device("cpu"), piece_bytes=2 * one_module)
    assert len(calls) >= 3  # several pieces, then the tensors that pass through
    assert list(pieces) == list(expected)
    assert all(torch.equal(pieces[n], expected[n]) and pieces[n].dtype == expected[n].dtype for n in expected)


def test_reader_error_surfaces_and_its_thread_ends(bf16: Path, tmp_path: Path) -> None:
    import shutil

    from safetensors import SafetensorError

    base = Path(shutil.copytree(bf16, tmp_path / "base"))
    skeleton = Skeleton(base, BaseWeights(base, int4=False), torch.device("cpu"), remote=False)
    shard = base / skeleton.weights.shard_of[skeleton.layer_tensor_names(2)[0]]
    shard.write_bytes(b"not a safetensors file")
    with LayerReader(skeleton, prefetch=True) as reader:
        reader.ahead(2)
        with pytest.raises(SafetensorError):  # raised in the reader thread, surfacing in the loop
            reader.take(2, PartTimes())
    assert not [t for t in threading.enumerate() if t.name.startswith("hubkit-prefetch")]


def test_reader_thread_stops_with_the_run(bf16: Path) -> None:
    """An error in the loop (a signal's KeyboardInterrupt) while a layer is read ahead: the thread ends with it."""
    skeleton = Skeleton(bf16, BaseWeights(bf16, int4=False), torch.device("cpu"), remote=False)
    with pytest.raises(KeyboardInterrupt), LayerReader(skeleton, prefetch=True) as reader:
        reader.ahead(1)
        raise KeyboardInterrupt
    assert not [t for t in threading.enumerate() if t.name.startswith("hubkit-prefetch")]


@pytest.mark.slow
def test_provenance_file_records_the_parts(runs: dict[bool, tuple[Path, dict[str, Any]]]) -> None:
    provenance = json.loads((runs[True][0] / ".hubkit/provenance.json").read_text())
    assert provenance["run"]["layer_parts"] == runs[True][1]["layer_parts"]
