"""HK5xx exclusions, HK6xx tensor structure, HK7xx deep numerics, HK8xx security on tiny real exports."""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from pathlib import Path

from hubkit.testing.kimi import (
    TINY,
    TensorSpec,
    nvfp4_layout,
    nvfp4_linear,
    reference_exclusions,
    write_checkpoint,
)
from tests.conftest import codes, read_json, set_exclusions, write_json


def rebuild(
    path: Path, layout: list[TensorSpec], data: Callable[[str, str, tuple[int, ...]], bytes] | None = None
) -> Path:
    """Rewrite the weights of the checkpoint at ``path`` with ``layout``, keeping its other files."""
    for item in path.glob("*.safetensors"):
        item.unlink()
    (path / "model.safetensors.index.json").unlink()
    return write_checkpoint(path, layout, data=data, shard_bytes=200_000)


def findings(hubkit, path: Path, *extra: str) -> list[dict]:
    result = hubkit("validate", path, "--format", "json", *extra)
    assert result.code in (0, 1), result.err
    return result.json()["findings"]


SHARED = "language_model.model.layers.2.mlp.shared_experts"
EXPERT = "language_model.model.layers.2.mlp.experts.5"


def test_multi_shard_tiny_export_passes(hubkit, tiny: Path) -> None:
    rebuild(tiny, nvfp4_layout(TINY))
    assert len(list(tiny.glob("*.safetensors"))) > 3
    assert findings(hubkit, tiny) == []


def test_quantized_shared_expert_is_refused(hubkit, tiny: Path) -> None:
    layout = [s for s in nvfp4_layout(TINY) if not s[0].startswith(SHARED + ".gate_proj.")]
    layout += nvfp4_linear(SHARED + ".gate_proj", TINY.moe_inter, TINY.hidden)
    rebuild(tiny, sorted(layout))
    found = findings(hubkit, tiny)
    by_code = {f["code"] for f in found}
    assert {"HK505", "HK604", "HK506"} <= by_code  # vs profile, vs exclusion list, gate/up mixed
    assert any("shared_experts.gate_proj" in f["message"] for f in found if f["code"] == "HK505")


def test_unquantized_expert_not_excluded(hubkit, tiny: Path) -> None:
    layout = [s for s in nvfp4_layout(TINY) if not s[0].startswith(EXPERT + ".")]
    layout += [(f"{EXPERT}.{p}.weight", "BF16", (TINY.moe_inter, TINY.hidden)) for p in ("gate_proj", "up_proj")]
    layout += [(f"{EXPERT}.down_proj.weight", "BF16", (TINY.hidden, TINY.moe_inter))]
    rebuild(tiny, sorted(layout))
    by_code = {f["code"] for f in findings(hubkit, tiny)}
    assert {"HK605", "HK505", "HK506", "HK607"} <= by_code


def test_exclusion_that_drops_a_layer_pattern(hubkit, tiny: Path, tmp_path: Path) -> None:
    reference = read_json(tiny / "hf_quant_config.json")
    write_json(tmp_path / "reference.json", reference)
    set_exclusions(tiny, [p for p in reference_exclusions(TINY) if "layers.3.self_attn" not in p])
    found = findings(hubkit, tiny, "--reference", tmp_path / "reference.json")
    by_code = {f["code"] for f in found}
    assert {"HK502", "HK605"} <= by_code
    assert any("layers.3.self_attn" in f["message"] for f in found if f["code"] == "HK502")


def test_exclusion_of_routed_experts_against_reference(hubkit, tiny: Path, tmp_path: Path) -> None:
    reference = read_json(tiny / "hf_quant_config.json")
    write_json(tmp_path / "reference.json", reference)
    set_exclusions(tiny, [*reference_exclusions(TINY), "language_model.model.layers.3.mlp.experts*"])
    found = findings(hubkit, tiny, "--reference", tmp_path / "reference.json")
    assert {"HK503", "HK604"} <= {f["code"] for f in found}


def test_nvfp4_wrong_dtype_shape_and_missing_scale(hubkit, tiny: Path) -> None:
    layout = []
    for name, dtype, shape in nvfp4_layout(TINY):
        if name == f"{EXPERT}.up_proj.weight_scale":
            layout.append((name, "BF16", shape))
        elif name == f"{EXPERT}.down_proj.weight_scale":
            layout.append((name, dtype, (shape[0], shape[1] * 2)))
        elif name == f"{EXPERT}.gate_proj.input_scale":
            continue
        elif name == f"{EXPERT}.gate_proj.weight_scale_2":
            layout.append((name, dtype, (1,)))
        else:
            layout.append((name, dtype, shape))
    rebuild(tiny, layout)
    found = {(f["code"], f["tensor"]) for f in findings(hubkit, tiny)}
    assert ("HK602", f"{EXPERT}.up_proj.weight_scale") in found
    assert ("HK603", f"{EXPERT}.down_proj.weight_scale") in found
    assert ("HK603", f"{EXPERT}.gate_proj.weight_scale_2") in found
    assert any(code == "HK601" for code, _ in found)


def test_leftovers_and_kv_scales(hubkit, tiny: Path) -> None:
    layout = [
        *nvfp4_layout(TINY),
        (f"{EXPERT}.gate_proj.weight_packed", "I32", (TINY.moe_inter, TINY.hidden // 8)),
        ("language_model.model.layers.1.self_attn.k_proj.k_scale", "F32", (2,)),
    ]
    rebuild(tiny, sorted(layout))
    by_code = {f["code"] for f in findings(hubkit, tiny)}
    assert {"HK606", "HK609"} <= by_code


def _scale_data(broken: dict[str, bytes]) -> Callable[[str, str, tuple[int, ...]], bytes]:
    import random

    from hubkit.testing.kimi import plausible_bytes

    rng = random.Random(1)

    def data(name: str, dtype: str, shape: tuple[int, ...]) -> bytes:
        if name in broken:
            return broken[name]
        if name.endswith((".weight_scale_2", ".input_scale")):
            return struct.pack("<f", 0.005)  # shared by gate and up, as modelopt writes them
        return plausible_bytes(name, dtype, shape, rng)

    return data


def test_deep_numerics_are_clean_on_a_good_export(hubkit, tiny: Path) -> None:
    rebuild(tiny, nvfp4_layout(TINY), data=_scale_data({}))
    result = hubkit("validate", tiny, "--deep", "--format", "json")
    assert result.code == 0, result.out
    assert result.json()["summary"]["checks"] > 51


def test_deep_numerics_find_nan_zero_bad_and_mismatched_scales(hubkit, tiny: Path) -> None:
    rows, cols = TINY.moe_inter, TINY.hidden // 16
    nan_scale = bytes([0x38] * (rows * cols - 2) + [0x7F, 0xFF])
    zero_scale = bytes([0x38] * (rows * cols - 1) + [0x00])
    broken = {
        f"{EXPERT}.gate_proj.weight_scale": nan_scale,
        f"{EXPERT}.up_proj.weight_scale": zero_scale,
        f"{EXPERT}.down_proj.weight_scale_2": struct.pack("<f", float("nan")),
        f"{EXPERT}.up_proj.input_scale": struct.pack("<f", 0.25),
    }
    rebuild(tiny, nvfp4_layout(TINY), data=_scale_data(broken))
    found = {(f["code"], f["tensor"]): f["message"] for f in findings(hubkit, tiny, "--deep")}
    assert found[("HK701", f"{EXPERT}.gate_proj.weight_scale")].startswith("2 of")
    assert ("HK702", f"{EXPERT}.up_proj.weight_scale") in found
    assert ("HK703", f"{EXPERT}.down_proj.weight_scale_2") in found
    assert ("HK704", f"{EXPERT}.up_proj.input_scale") in found
    # without --deep nothing reads the scale values
    assert not {c for c, _ in found if c.startswith("HK7")} & codes(hubkit("validate", tiny, "--format", "json"))


class Exploit:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned",))


def test_pickles_are_flagged_and_dangerous_ones_refused(hubkit, tiny: Path) -> None:
    (tiny / "training_state.bin").write_bytes(pickle.dumps({"step": 1}))
    (tiny / "extra_weights.dat").write_bytes(pickle.dumps(Exploit()))
    found = {(f["code"], f["file"]): f["message"] for f in findings(hubkit, tiny)}
    assert ("HK801", "training_state.bin") in found
    assert ("HK801", "extra_weights.dat") in found  # found by magic bytes, not by extension
    assert (
        "posix.system" in found[("HK802", "extra_weights.dat")] or "os.system" in found[("HK802", "extra_weights.dat")]
    )
    assert ("HK802", "training_state.bin") not in found


def test_secrets_are_found_and_never_echoed(hubkit, tiny: Path) -> None:
    token = "hf_" + "aB3dE5gH7jK9mN1pQ3sT5vW7yZ9bC1dE3fG"
    (tiny / "upload.sh").write_text(f"#!/bin/sh\nexport HF_TOKEN={token}\nhf upload org/model .\n")
    config = read_json(tiny / "generation_config.json")
    config["note"] = "AKIAIOSFODNN7EXAMPLE"
    write_json(tiny / "generation_config.json", config)
    for output in ("json", "text", "github"):
        result = hubkit("validate", tiny, "--format", output)
        assert result.code == 1
        assert token not in result.out + result.err
        assert token[:-4] not in result.out + result.err
    found = {(f["code"], f["file"]) for f in hubkit("validate", tiny, "--format", "json").json()["findings"]}
    assert ("HK803", "upload.sh") in found
    assert ("HK803", "generation_config.json") in found
