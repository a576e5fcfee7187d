"""Quantize modes as registered objects: the registry, the plan's refusal of a mode it does not plan, and one
choice of mode for ``hubkit quantize --plan`` and the release preflight alike.

The GPUs a runner has are named by a test double of ``nvidia-smi`` written into tmp_path and put first on PATH
(no GPU exists where these tests run); the plans are read from real (sparse) safetensors headers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hubkit.errors import HubkitError
from hubkit.testing.kimi import KimiDims, int4_base_layout, write_sparse_checkpoint
from tests.conftest import example_project, fake_gpus

MXFP4_BLOCK = {"format": "mxfp4-pack-quantized", "quant_method": "compressed-tensors"}


def preflight_checks(result) -> dict[str, dict]:
    assert "preflight" in result.json(), result.err
    return {check["name"]: check for check in result.json()["preflight"]}


def mxfp4_base(folder: Path) -> Path:
    """A Kimi-K3-shaped MXFP4 base's headers: one expert's packed nibbles and E8M0 scales, an embedding."""
    prefix = "language_model.model.layers.1.block_sparse_moe.experts.0.w1"
    layout = [
        ("language_model.model.embed_tokens.weight", "BF16", (16, 64)),
        (f"{prefix}.weight_packed", "U8", (64, 32)),
        (f"{prefix}.weight_scale", "U8", (64, 2)),
    ]
    config = {
        "architectures": ["KimiK3ForConditionalGeneration"],
        "text_config": {"hidden_size": 64, "num_hidden_layers": 2, "quantization_config": MXFP4_BLOCK},
    }
    return write_sparse_checkpoint(folder, layout, files={"config.json": config})


def test_mode_choices_are_auto_and_every_registered_mode() -> None:
    from hubkit.quantize import modes
    from hubkit.quantize.options import MODES

    assert MODES == modes.names() == ("auto", "resident", "layerwise", "cast")
    assert [mode.name for mode in modes.planned()] == ["resident", "layerwise"]
    with pytest.raises(HubkitError, match="--mode 'bogus' is not one of auto, resident, layerwise, cast"):
        modes.get("bogus")


def test_a_new_mode_is_one_registered_class() -> None:
    from hubkit.quantize import modes

    @modes.register("rehearsal")
    class Rehearsal(modes.CalibratedMode):
        order = 25

    try:
        assert modes.names() == ("auto", "resident", "layerwise", "rehearsal", "cast")
        assert modes.get("rehearsal").name == "rehearsal"
        with pytest.raises(ValueError, match="registered twice"):
            modes.register("rehearsal")(Rehearsal)
    finally:
        modes._REGISTRY.pop("rehearsal")


def test_the_plan_refuses_a_mode_it_does_not_plan(tiny: Path) -> None:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import estimate

    plan = estimate(load_checkpoint(str(tiny)), "cpu", batch=1, seq=64)
    assert plan.estimate("layerwise").mode == "layerwise"
    for mode in ("cast", "bogus"):
        with pytest.raises(HubkitError, match=f"no estimate for mode '{mode}'; it plans resident, layerwise"):
            plan.estimate(mode)


def test_preflight_and_plan_take_the_cast_for_an_mxfp4_base(
    hubkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the preflight planned a resident run on an MXFP4 base and asked for GPUs that the cast never uses."""
    folder = example_project(tmp_path, lambda t: t.replace('device = "cpu"', 'device = "cuda"'))
    mxfp4_base(folder / "base")
    (folder / "calib.jsonl").write_text('{"text": "hello"}\n')
    fake_gpus(tmp_path, monkeypatch)  # no GPU

    plan = hubkit("quantize", "--base", folder / "base", "--plan", "--format", "json")
    assert plan.code == 0, plan.err
    dry = ("release", folder / "hubkit.toml", "--dry-run", "--until", "quantize", "--format", "json")
    found = preflight_checks(hubkit(*dry))
    assert plan.json()["mode"] == "cast"
    assert found["GPUs"]["status"] == "ok", found
    assert found["GPUs"]["detail"] == "none needed: mode auto chose cast: the base is MXFP4"
    assert found["host memory"]["detail"].endswith("the quantize plan's cast run needs 0.6 GiB")
    assert "quantize (cast: export and scratch)" in found["disk"]["detail"]

    refused = preflight_checks(hubkit(*dry, "--set", 'quantize.mode="resident"'))
    assert refused["quantize mode"]["status"] == "failed"
    assert refused["quantize mode"]["detail"] == (
        "the base is MXFP4: it is cast to NVFP4 without calibration; drop --mode resident; fix [quantize]"
    )


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_preflight_and_plan_choose_alike_when_the_disk_decides(
    hubkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the preflight planned without the export's volume, so it chose resident where quantize, which
    counts the free disk, takes layerwise (resident writes a BF16 copy of an INT4 base beside the export)."""
    dims = KimiDims()
    config = {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "text_config": {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers},
    }
    folder = example_project(tmp_path, lambda t: t.replace('device = "cpu"', 'device = "cuda"'))
    write_sparse_checkpoint(folder / "base", int4_base_layout(dims), files={"config.json": config})
    (folder / "calib.jsonl").write_text('{"text": "hello"}\n')
    fake_gpus(tmp_path, monkeypatch, *["NVIDIA H100 80GB HBM3"] * 8)
    roomy = ("100TiB", "100TiB")  # GPU and host memory: only the disk can decide

    out = folder / "Kimi-Tiny-NVFP4"
    plan = hubkit(
        "quantize", "--base", folder / "base", "--plan", "--gpus", "8xH100", "--out", out, "--format", "json",
        "--max-gpu-memory", roomy[0], "--max-cpu-memory", roomy[1], "--calib", "calib.jsonl",
        "--calib-size", "32", "--calib-seq", "64", "--batch-size", "4",
    )  # fmt: skip
    assert plan.code == 0, plan.err
    resident = plan.json()["modes"]["resident"]
    if resident["disk_bytes"] <= shutil.disk_usage(folder).free:
        pytest.skip("this volume holds a resident run's BF16 copy of the base: the disk cannot decide here")
    assert plan.json()["mode"] == "layerwise" and "of disk" in plan.json()["reason"]

    result = hubkit(
        "release", folder / "hubkit.toml", "--dry-run", "--until", "quantize", "--format", "json",
        "--set", f'quantize.max_gpu_memory="{roomy[0]}"', "--set", f'quantize.max_cpu_memory="{roomy[1]}"',
    )  # fmt: skip
    gpus = preflight_checks(result)["GPUs"]
    assert gpus["status"] == "ok", gpus
    assert f"mode auto chose {plan.json()['reason']}" in gpus["detail"]
    assert "the quantize plan's layerwise run needs" in gpus["detail"]


def test_the_plan_json_has_no_keys_of_before_the_modes(hubkit, tiny: Path) -> None:
    plan = hubkit("quantize", "--base", tiny, "--plan", "--gpus", "8xB300", "--format", "json").json()
    assert plan["schema"] == 2
    assert not {"gpus", "gpu_needed_gib", "fits_gpus", "min_gpus"} & set(plan)
    assert plan["modes"]["resident"]["devices_needed"] == 1 and plan["target"] == "8xB300"


def test_the_preflights_check_has_its_own_name() -> None:
    from hubkit.release import preflight
    from hubkit.validate.engine import Check

    assert preflight.PreflightCheck is not Check and not hasattr(preflight, "Check")
