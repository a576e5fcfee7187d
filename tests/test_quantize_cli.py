"""``hubkit quantize`` at its edges: the extra missing, folders hubkit did not make, ``--out`` naming a file,
an interrupt (staging removed, or a layerwise run's progress kept), ``--plan`` and ``--mode auto``."""

from __future__ import annotations

import ast
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubkit import quantize as extra
from hubkit.errors import HubkitError
from hubkit.quantize.folders import make_owned, remove_owned
from hubkit.records import made_by_hubkit

REPO = Path(__file__).resolve().parent.parent


def test_missing_extra_is_exit_2_with_the_install_command(hubkit, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(extra.EXTRA_MODULES, "hubkit_no_such_module", "no-such-dist")
    (tmp_path / "base").mkdir()
    result = hubkit("quantize", "--base", tmp_path / "base", "--out", tmp_path / "out", "--calib", "x.jsonl")
    assert result.code == 2, result.err
    assert "no-such-dist" in result.err and "pip install 'hubkit-nvfp4[quantize]'" in result.err
    assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()
    with pytest.raises(HubkitError, match="no-such-dist"):
        extra.require_extra()


def test_the_extra_is_complete_here() -> None:
    """The modules the quantize path imports are all declared (this environment has the extra installed)."""
    pytest.importorskip("torch")
    assert extra.missing_extra() == []


def test_no_module_outside_quantize_imports_the_heavy_libraries() -> None:
    heavy = {"torch", "transformers", "modelopt", "compressed_tensors", "accelerate", "datasets"}
    command = REPO / "hubkit" / "commands" / "quantize.py"
    imported = set()
    for node in ast.walk(ast.parse(command.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & heavy


def test_out_naming_a_file_is_exit_2(hubkit, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    target = tmp_path / "export"
    target.write_text("mine")
    result = hubkit("quantize", "--base", tmp_path, "--out", target, "--calib", "x.jsonl")
    assert result.code == 2 and "is a file" in result.err and len(result.err.strip().splitlines()) == 1
    assert target.read_text() == "mine"


def test_hubkit_removes_only_folders_it_made(tmp_path: Path) -> None:
    mine = make_owned(tmp_path / ".out.partial", "staging")
    assert made_by_hubkit(mine)
    remove_owned(mine, "staging")
    assert not mine.exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.bin").write_text("keep")
    with pytest.raises(HubkitError, match=r"theirs .*not made by hubkit"):
        remove_owned(theirs, "staging")
    (theirs / ".hubkit").mkdir()
    (theirs / ".hubkit" / "made-by.json").write_text('{"made_by": "someone else"}')
    with pytest.raises(HubkitError):
        remove_owned(theirs, "staging")
    assert (theirs / "data.bin").read_text() == "keep"
    remove_owned(tmp_path / "absent", "staging")  # nothing there: nothing to do


# -- runs that reach the folders (tiny model, CPU) -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    work = tmp_path_factory.mktemp("tiny")
    return tiny_base(work / "base", num_hidden_layers=6), calibration_jsonl(work / "calib.jsonl", samples=16)


def test_a_staging_folder_hubkit_did_not_make_is_refused(hubkit, tiny: tuple[Path, Path], tmp_path: Path) -> None:
    base, calib = tiny
    staging = tmp_path / ".out.partial"
    staging.mkdir()
    (staging / "notes.txt").write_text("someone's")
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--calib", calib, "--calib-size", "4")
    assert result.code == 2, result.err
    assert str(staging) in result.err and "not made by hubkit" in result.err
    assert (staging / "notes.txt").read_text() == "someone's"


def start(base: Path, calib: Path, out: Path, *extra: str) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "hubkit", "quantize", "--base", str(base), "--out", str(out), "--calib",
               str(calib), "--calib-size", "16", "--calib-seq", "32", "--batch-size", "4", *extra]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_for(path: Path, child: subprocess.Popen[bytes], key: str | None = None) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and child.poll() is None:
        if path.exists() and (key is None or json.loads(path.read_text() or "{}").get(key)):
            return
        time.sleep(0.01)
    raise AssertionError(f"{path} never appeared (exit {child.poll()})")


@pytest.mark.slow
@pytest.mark.parametrize(("signal_number", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_during_a_resident_run_removes_its_staging(
    tiny: tuple[Path, Path], tmp_path: Path, signal_number: int, code: int
) -> None:
    base, calib = tiny
    out = tmp_path / "out"
    child = start(base, calib, out, "--mode", "resident")
    wait_for(tmp_path / ".out.partial" / ".hubkit" / "made-by.json", child)
    child.send_signal(signal_number)
    _, err = child.communicate(timeout=120)
    assert child.returncode == code, err.decode()[-2000:]
    assert b"Traceback" not in err
    assert not (tmp_path / ".out.partial").exists() and not out.exists()


@pytest.mark.slow
def test_an_interrupted_layerwise_run_keeps_its_progress_for_a_rerun(
    hubkit, tiny: tuple[Path, Path], tmp_path: Path
) -> None:
    base, calib = tiny
    child = start(base, calib, tmp_path / "out", "--mode", "layerwise")
    state = tmp_path / ".out.partial" / ".hubkit" / "layerwise" / "state.json"
    try:
        wait_for(state, child, "next_layer")
    except (ValueError, OSError):  # caught mid-write: the next poll reads it whole
        wait_for(state, child, "next_layer")
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130, err.decode()[-2000:]
    assert b"rerun the same command to resume" in err
    done = json.loads(state.read_text())["next_layer"]
    assert done >= 1
    # --mode auto would pick resident for this tiny model, but takes the layerwise run it can resume
    args = ["--calib-size", "16", "--calib-seq", "32", "--batch-size", "4", "--format", "json"]
    rerun = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--calib", calib, *args)
    assert rerun.code == 0, rerun.err
    record = rerun.json()["provenance"]["run"]
    assert record["mode"] == "layerwise" and "resuming" in record["reason"]
    assert record["resumed_layers"] == list(range(done))


# -- --plan and --mode auto --------------------------------------------------------------------------------------


def test_plan_for_kimi_states_the_smallest_gpu_set_per_mode(hubkit, kimi_int4_skeleton: Path) -> None:
    b300 = hubkit("quantize", "--base", kimi_int4_skeleton, "--plan", "--gpus", "8xB300", "--format", "json").json()
    assert 1800 < b300["bf16_weights_gib"] < 2000 and 500 < b300["export_gib"] < 580
    resident, layerwise = b300["modes"]["resident"], b300["modes"]["layerwise"]
    assert resident["device_gib"] > 1.8 * b300["bf16_weights_gib"]  # weights plus calibration/export temporaries
    assert resident["fits"] is False and b300["mode"] == "layerwise"  # 8xB300 is not enough for the whole model
    assert 30 < b300["largest_layer_gib"] < 33 and b300["layers"] == 61
    assert layerwise["fits"] is True and layerwise["device_gib"] < 79  # one decoder layer at a time
    assert b300["smallest_gpu_set"]["layerwise"] == {"B300": 1, "B200": 1, "H200": 1, "H100": 1}
    assert b300["smallest_gpu_set"]["resident"]["B300"] == 14 and b300["smallest_gpu_set"]["resident"]["H100"] == 47
    assert 500 < layerwise["disk_gib"] < 600 < resident["disk_gib"]  # no BF16 copy of the base in layerwise
    text = hubkit("quantize", "--base", kimi_int4_skeleton, "--plan", "--gpus", "1xH100").out
    # two layers of inputs (262,144 tokens) and a layer loading with its experts stacked: 79.1 GiB, over one H100
    assert "smallest GPU set, layerwise: 1xB300, 1xB200, 1xH200, no H100 set" in text
    assert "--mode auto: layerwise" in text
    assert hubkit("quantize", "--base", kimi_int4_skeleton, "--plan", "--gpus", "8xA100").code == 2


def test_auto_picks_resident_when_it_fits_with_margin(hubkit, tiny: tuple[Path, Path]) -> None:
    base, _ = tiny
    roomy = hubkit(
        "quantize", "--base", base, "--plan", "--gpus", "cpu", "--max-cpu-memory", "64GiB", "--format", "json"
    )
    assert roomy.json()["mode"] == "resident" and "fits with margin" in roomy.json()["reason"]
    tight = hubkit(
        "quantize", "--base", base, "--plan", "--gpus", "cpu", "--max-cpu-memory", "650MiB", "--format", "json"
    )
    assert tight.json()["mode"] == "layerwise" and "does not fit" in tight.json()["reason"]
    assert hubkit("quantize", "--base", base, "--plan", "--gpus", "cpu", "--max-cpu-memory", "lots").code == 2
