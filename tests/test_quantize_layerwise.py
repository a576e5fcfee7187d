"""``hubkit quantize --mode layerwise`` on tiny DeepSeek-V3 and Kimi-shaped INT4 bases (CPU, real modelopt):
the export is byte for byte the resident one; a SIGKILL mid-run and a rerun give the same export; a changed
input after a kill starts over; no BF16 copy of the base is ever written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import export_files

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt")
pytest.importorskip("accelerate")

from hubkit.quantize.pipeline import QuantizeOptions, quantize  # noqa: E402
from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base, tiny_kimi_base  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
SIX_LAYERS = {"num_hidden_layers": 6}


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_jsonl(tmp_path_factory.mktemp("calib") / "calib.jsonl", samples=16)


@pytest.fixture(scope="module")
def deepseek(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("deepseek") / "base", **SIX_LAYERS)


@pytest.fixture(scope="module")
def kimi_int4(deepseek: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("kimi")
    return int4_base_from(tiny_kimi_base(work / "bf16", deepseek), work / "int4")


def options(base: Path, out: Path, calib: Path, **changes: object) -> QuantizeOptions:
    profile = "kimi-k2-nvfp4" if "kimi" in str(base) else None
    values: dict[str, object] = {
        "base": str(base), "out": out, "calib": (str(calib),), "calib_size": 16, "calib_seq": 32, "batch_size": 4,
        "progress": False, "profile": profile, "shard_size": "40KB", "trust_remote_code": profile is not None,
        **changes,
    }  # fmt: skip
    return QuantizeOptions(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def exports(
    deepseek: Path, kimi_int4: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], Path]:
    """Each base quantized in each mode, several shards each (a small shard limit)."""
    made = {}
    for name, base in (("deepseek", deepseek), ("kimi-int4", kimi_int4)):
        for mode in ("resident", "layerwise"):
            out = tmp_path_factory.mktemp(f"{name}-{mode}") / "out"
            result = quantize(options(base, out, calib, mode=mode))
            assert result.report.passed, result.report.findings
            assert result.provenance["run"]["mode"] == mode
            made[name, mode] = out
    return made


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepseek", "kimi-int4"])
def test_layerwise_export_is_byte_identical_to_resident(exports: dict[tuple[str, str], Path], name: str) -> None:
    resident, layerwise = export_files(exports[name, "resident"]), export_files(exports[name, "layerwise"])
    assert len([f for f in resident if f.endswith(".safetensors")]) > 2  # the sharded layout is compared too
    assert "model.safetensors.index.json" in resident
    assert resident.keys() == layerwise.keys()
    assert [f for f in resident if resident[f] != layerwise[f]] == []


@pytest.mark.slow
def test_layerwise_provenance_and_coverage(exports: dict[tuple[str, str], Path]) -> None:
    resident = json.loads((exports["kimi-int4", "resident"] / ".hubkit/provenance.json").read_text())
    layerwise = json.loads((exports["kimi-int4", "layerwise"] / ".hubkit/provenance.json").read_text())
    assert layerwise["run"]["mode"] == "layerwise" and layerwise["run"]["resumed_layers"] == []
    assert len(layerwise["run"]["layer_seconds"]) == 6
    assert layerwise["coverage"] == resident["coverage"]  # the same tokens reached the same experts
    assert layerwise["coverage"]["routers"] == 5
    assert layerwise["run"]["plan"]["modes"]["layerwise"]["host_gib"] > 0


@pytest.mark.slow
def test_the_plans_export_bytes_are_the_exports_size_headers_included(
    exports: dict[tuple[str, str], Path], kimi_int4: Path
) -> None:
    """Many small experts (hidden 64): the safetensors headers are a third of the export, and the plan counts them."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import shape_of

    written = sum(f.stat().st_size for f in exports["kimi-int4", "layerwise"].glob("*.safetensors"))
    predicted = shape_of(load_checkpoint(str(kimi_int4))).export_bytes
    assert abs(predicted - written) <= 0.03 * written, (predicted, written)


@pytest.mark.slow
def test_the_plan_counts_the_resume_state_of_a_whole_export_in_one_open_shard(
    exports: dict[tuple[str, str], Path], kimi_int4: Path, tmp_path: Path
) -> None:
    """The resume state names every tensor of the open shard; when the whole export is one shard it is the size
    of the export's names, written beside its previous copy (the plan counts both copies)."""
    from safetensors.torch import load_file

    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import resume_state_bytes, shape_of
    from hubkit.quantize.shards import ShardWriter
    from hubkit.records import write_json

    writer = ShardWriter(tmp_path, tmp_path, max_bytes=10**12)
    for shard in sorted(exports["kimi-int4", "layerwise"].glob("*.safetensors")):
        for key, tensor in load_file(shard).items():
            writer.add(key, tensor)
    writer.commit("00005")
    write_json(tmp_path / "state.json", {"writer": writer.state()}, indent=None)  # as the layerwise loop does
    state = (tmp_path / "state.json").stat().st_size
    planned = resume_state_bytes(shape_of(load_checkpoint(str(kimi_int4))))
    assert state <= planned / 2 <= 1.25 * state, (state, planned)


@pytest.mark.slow
def test_the_layer_loop_freezes_the_long_lived_objects_and_unfreezes_them(
    deepseek: Path, calib: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each layer's garbage collection skips the skeleton (frozen during the loop); nothing stays frozen after."""
    import gc

    from hubkit.quantize.layerwise import LayerwiseRun

    frozen: list[int] = []
    free_export = LayerwiseRun._free_export

    def counting(run: LayerwiseRun) -> None:
        frozen.append(gc.get_freeze_count())
        free_export(run)

    monkeypatch.setattr(LayerwiseRun, "_free_export", counting)
    assert quantize(options(deepseek, tmp_path / "out", calib, mode="layerwise")).report.passed
    assert len(frozen) == 6 and min(frozen) > 10_000  # the skeleton's modules, parameters and quantizers
    assert gc.get_freeze_count() == 0


CHILD = """
import json, sys
from pathlib import Path
from hubkit.quantize.pipeline import QuantizeOptions, quantize
values = json.loads(sys.argv[1])
quantize(QuantizeOptions(**{**values, "out": Path(values["out"]), "calib": tuple(values["calib"])}))
"""


def kill_after(run: QuantizeOptions, layers: int) -> int:
    """``quantize(run)`` in a child process, SIGKILLed as soon as ``layers`` layers are committed; returns how
    many were committed when it died."""
    values = {k: str(v) if isinstance(v, Path) else v for k, v in run.__dict__.items()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(values)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    state = run.out.parent / f".{run.out.name}.partial" / ".hubkit" / "layerwise" / "state.json"
    deadline = time.monotonic() + 300
    done = 0
    while time.monotonic() < deadline and child.poll() is None:
        try:
            done = json.loads(state.read_text())["next_layer"]
        except (OSError, ValueError, KeyError):
            done = 0
        if done >= layers:
            child.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    return done


@pytest.mark.slow
@pytest.mark.parametrize("name", ["deepseek", "kimi-int4"])
def test_sigkill_mid_layerwise_then_rerun_gives_the_identical_export(
    exports: dict[tuple[str, str], Path], deepseek: Path, kimi_int4: Path, calib: Path, tmp_path: Path, name: str
) -> None:
    base = deepseek if name == "deepseek" else kimi_int4
    run = options(base, tmp_path / "out", calib, mode="layerwise")
    done = kill_after(run, 2)
    assert 2 <= done < 6
    assert not run.out.exists()  # a killed run leaves nothing that looks like an export
    result = quantize(run)
    assert result.provenance["run"]["resumed_layers"] == list(range(done))
    assert export_files(run.out) == export_files(exports[name, "layerwise"])
    assert not (tmp_path / ".out.partial").exists()


@pytest.mark.slow
def test_a_changed_seed_after_a_kill_starts_over(
    exports: dict[tuple[str, str], Path], deepseek: Path, calib: Path, tmp_path: Path
) -> None:
    run = options(deepseek, tmp_path / "out", calib, mode="layerwise", seed=7)
    assert kill_after(run, 1) >= 1
    result = quantize(options(deepseek, tmp_path / "out", calib, mode="layerwise"))  # the default seed
    assert result.provenance["run"]["resumed_layers"] == []
    assert result.provenance["calibration"]["seed"] == 1234
    assert export_files(result.out) == export_files(exports["deepseek", "layerwise"])


@pytest.mark.slow
def test_kimi_vision_tower_and_projector_are_the_bases_bytes(
    exports: dict[tuple[str, str], Path], kimi_int4: Path
) -> None:
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, bytes]:
        found = {}
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), framework="pt") as handle:
                for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                    if name.startswith(("vision_tower.", "mm_projector.")):
                        found[name] = handle.get_tensor(name).view(torch.uint8).numpy().tobytes()
        return found

    exported, base = tensors(exports["kimi-int4", "layerwise"]), tensors(kimi_int4)
    assert exported and exported == base


@pytest.mark.slow
def test_torchrun_two_cpu_processes_give_the_one_process_export(
    exports: dict[tuple[str, str], Path], deepseek: Path, calib: Path, tmp_path: Path
) -> None:
    """Data-parallel calibration under torchrun (gloo on CPU): each process calibrates on half the batches,
    modelopt synchronises the amax values, and the export is the one a single process writes."""
    run = options(deepseek, tmp_path / "out", calib, mode="layerwise", device="cpu")  # gloo: one GPU is not two
    reference = exports["deepseek", "layerwise"]
    if torch.cuda.is_available():  # the shared exports were made on CUDA here
        reference = quantize(options(deepseek, tmp_path / "single", calib, mode="layerwise", device="cpu")).out
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    values = {k: str(v) if isinstance(v, Path) else v for k, v in run.__dict__.items()}
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script)]
    done = subprocess.run([*command, json.dumps(values)], env=env, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    provenance = json.loads((run.out / ".hubkit" / "provenance.json").read_text())
    assert provenance["run"]["world_size"] == 2 and "torchrun" in provenance["run"]["reason"]
    single = json.loads((reference / ".hubkit" / "provenance.json").read_text())
    assert provenance["coverage"] == single["coverage"]
    assert export_files(run.out) == export_files(reference)


@pytest.mark.slow
def test_a_crash_after_the_last_layer_resumes_without_calibrating_again(
    exports: dict[tuple[str, str], Path], deepseek: Path, calib: Path, tmp_path: Path, monkeypatch
) -> None:
    import hubkit.quantize.pipeline as pipeline

    def fail(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the machine went away during validation")

    run = options(deepseek, tmp_path / "out", calib, mode="layerwise")
    with monkeypatch.context() as patch:
        patch.setattr(pipeline, "validate", fail)
        with pytest.raises(RuntimeError, match="went away"):
            quantize(run)
    result = quantize(run)
    assert result.provenance["run"]["resumed_layers"] == list(range(6))
    assert result.provenance["run"]["layer_seconds"] == []
    assert export_files(run.out) == export_files(exports["deepseek", "layerwise"])
