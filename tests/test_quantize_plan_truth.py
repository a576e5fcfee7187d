"""Issue 18, "the plan tells the truth about memory": a layerwise run SIGKILLed at any named moment (the
``HUBKIT_TEST_KILL_AT`` test hook) and rerun ends with the uninterrupted run's export; the plan counts what the
layer loop holds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import export_files

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt")
pytest.importorskip("accelerate")

from hubkit.quantize.interrupts import KILL_AT  # noqa: E402
from hubkit.quantize.pipeline import QuantizeOptions, quantize  # noqa: E402
from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAX_RECIPE = "general/ptq/nvfp4_experts_only-kv_fp8_cast"
#: Every named moment of a run (``interrupts.kill_point``), each with the time it is reached to die at.
KILL_POINTS = [
    "layer-files:1",  # a layer's shards and scratch written, its state not yet
    "layer-recorded:2",  # the state names the layer, obsolete pending files not yet removed
    "layer-done:1",  # the layer fully committed
    "shard-renamed:1",  # some final shard names given, not all
    "shards-written:1",  # every shard and the index written, not yet recorded
    "shards-recorded:1",
    "configs-saving:1",  # config files in a temporary folder of the scratch
    "configs-written:1",
    "scratch-item-removed:1",  # the scratch half cleaned up
    "provenance-written:1",
    "state-written:1",  # the staging folder says complete, not yet renamed
    "scratch-removed:1",
    "made-by-removed:1",
    "renamed:1",
]
#: The moments every full run of the suite kills at (where bugs were found, and the last one); set
#: HUBKIT_KILL_POINTS=all for every moment (about a minute each).
EVERY_RUN = ("layer-recorded:2", "shard-renamed:1", "shards-written:1", "configs-saving:1", "renamed:1")
if os.environ.get("HUBKIT_KILL_POINTS") != "all":
    KILL_POINTS = [point for point in KILL_POINTS if point in EVERY_RUN]
CHILD = """
import json, sys
from pathlib import Path
from hubkit.quantize.pipeline import QuantizeOptions, quantize
values = json.loads(sys.argv[1])
quantize(QuantizeOptions(**{**values, "out": Path(values["out"]), "calib": tuple(values["calib"])}))
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("base") / "base", num_hidden_layers=3)


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_jsonl(tmp_path_factory.mktemp("calib") / "calib.jsonl", samples=8)


def options(base: Path, out: Path, calib: Path) -> QuantizeOptions:
    return QuantizeOptions(
        base=str(base), out=out, calib=(str(calib),), calib_size=8, calib_seq=32, batch_size=4, progress=False,
        shard_size="40KB", mode="layerwise", recipe=MAX_RECIPE,
    )  # fmt: skip


@pytest.fixture(scope="module")
def reference(base: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    assert quantize(options(base, out, calib)).report.passed
    return out


def killed_at(run: QuantizeOptions, point: str) -> None:
    """``quantize(run)`` in a child process that SIGKILLs itself at ``point``."""
    values = {k: str(v) if isinstance(v, Path) else v for k, v in run.__dict__.items()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", KILL_AT: point}
    child = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(values)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, timeout=600,
    )  # fmt: skip
    assert child.returncode == -signal.SIGKILL, child.stderr.decode()[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_a_rerun_after_a_kill_at_any_moment_gives_the_identical_export(
    base: Path, calib: Path, reference: Path, tmp_path: Path, point: str
) -> None:
    run = options(base, tmp_path / "out", calib)
    killed_at(run, point)
    if not point.startswith("renamed"):
        assert not run.out.exists()  # a killed run leaves nothing that looks like an export
    assert quantize(run).report.passed  # after the rename: the export of these inputs is there, validated again
    assert export_files(run.out) == export_files(reference)
    assert not (tmp_path / ".out.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_the_kill_hook_is_inert_when_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.quantize import interrupts

    monkeypatch.setattr(interrupts, "_reached", {})
    monkeypatch.delenv(KILL_AT, raising=False)
    interrupts.kill_point("layer-done")
    monkeypatch.setenv(KILL_AT, "layer-done:2")
    interrupts.kill_point("layer-files")  # another point
    interrupts.kill_point("layer-done")  # its first time: not yet


@pytest.mark.slow
def test_the_plan_counts_the_inputs_the_loop_holds_at_once(base: Path, calib: Path, reference: Path) -> None:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import activation_bytes, shape_of

    provenance = json.loads((reference / ".hubkit" / "provenance.json").read_text())
    held = provenance["run"]["held_input_bytes"]
    shape = shape_of(load_checkpoint(str(base)))
    cached = activation_bytes(shape, provenance["coverage"]["tokens"], batch=0, seq=0)  # the cached inputs alone
    assert held > 1.5 * provenance["coverage"]["tokens"] * shape.hidden * 2  # more than one layer's hidden states
    assert held <= cached < 2 * held


def test_the_plan_counts_fused_experts_stacking_while_a_layer_loads() -> None:
    from hubkit.quantize.modes import get
    from hubkit.quantize.plan import LAYER_FACTOR_CUDA, Shape

    layer = 1000 * 1024**2
    shape = Shape([layer] * 4, 0, 0, False, 0, 8, [layer * 95 // 100] * 4)  # experts: 95 % of a layer
    assert shape.largest_loading == layer + layer * 95 // 100
    assert get("layerwise").estimate(shape, "cuda", 0, 0, 0, 1).device_bytes >= shape.largest_loading
    assert shape.largest_loading > layer * LAYER_FACTOR_CUDA  # what the plan counted before


def test_shape_counts_each_layers_routed_experts(base: Path) -> None:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import shape_of

    checkpoint = load_checkpoint(str(base))
    shape = shape_of(checkpoint)
    routed = [0] * len(shape.layer_bytes)
    for name, tensor in checkpoint.tensors.items():
        if ".mlp.experts." in name:
            routed[int(name.split(".layers.")[1].split(".")[0])] += tensor.nbytes
    assert shape.expert_bytes == routed and routed[0] == 0 < routed[-1]  # layer 0 is dense, shared experts apart


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads Linux's /proc")
def test_base_tensors_do_not_keep_their_shard_mapped(base: Path) -> None:
    """A tensor read from the base owns its memory: a view into the shard's mapping would keep every page of the
    shard read so far resident for as long as it lives (the embeddings live the whole run)."""
    from hubkit.quantize.layerwise import BaseWeights

    weights = BaseWeights(base, int4=False)
    tensors = weights.read(weights.names())
    shards = {str((base / shard).resolve()) for shard in weights.shard_of.values()}
    mapped = {line.split(maxsplit=5)[-1].strip() for line in Path("/proc/self/maps").read_text().splitlines()}
    assert tensors and not shards & mapped
