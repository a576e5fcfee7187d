"""Must accept / must refuse: full-scale Kimi skeletons carrying the real reference configs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hubkit.testing.kimi import KimiDims, build_nvfp4_checkpoint
from tests.conftest import codes, read_json, set_exclusions


@pytest.fixture(scope="module")
def full_scale(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real nvidia/Kimi-K2.6-NVFP4 configs over a full-scale skeleton whose tensors follow them."""
    from tests.conftest import REFERENCES

    files = {
        "config.json": read_json(REFERENCES / "nvidia--Kimi-K2.6-NVFP4.config.json"),
        "hf_quant_config.json": read_json(REFERENCES / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json"),
    }
    return build_nvfp4_checkpoint(tmp_path_factory.mktemp("k26") / "ckpt", KimiDims(), sparse=True, files=files)


def variant(source: Path, target: Path, exclusions: list[str]) -> Path:
    """A copy sharing the (sparse) shards by hard link, with its exclusion list replaced."""
    target.mkdir()
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            os.link(item, target / item.name)
        else:
            shutil.copy(item, target / item.name)
    set_exclusions(target, exclusions)
    return target


def test_real_k26_configs_are_accepted(hubkit, full_scale: Path) -> None:
    result = hubkit("validate", full_scale, "--format", "json")
    report = result.json()
    assert result.code == 0, report["findings"]
    assert report["profile"] == "kimi-k2-nvfp4"
    assert report["summary"]["passed"] is True
    assert report["summary"]["errors"] == 0


def test_k27_code_list_is_accepted_and_its_extra_entry_is_informational(
    hubkit, full_scale: Path, references: Path, tmp_path: Path
) -> None:
    k27 = read_json(references / "nvidia--Kimi-K2.7-Code-NVFP4.hf_quant_config.json")
    checkpoint = variant(full_scale, tmp_path / "k27", exclusions=k27["quantization"]["exclude_modules"])
    reference = references / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json"
    result = hubkit("validate", checkpoint, "--reference", reference, "--format", "json")
    assert result.code == 0, result.out
    findings = result.json()["findings"]
    assert [f["code"] for f in findings] == ["HK504"]
    assert "embed_tokens" in findings[0]["message"]


def test_k25_list_as_drop_in_for_k26_is_refused(hubkit, full_scale: Path, references: Path, tmp_path: Path) -> None:
    k25 = read_json(references / "nvidia--Kimi-K2.5-NVFP4.config.json")["quantization_config"]["ignore"]
    checkpoint = variant(full_scale, tmp_path / "k25", exclusions=k25)
    reference = references / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json"
    result = hubkit("validate", checkpoint, "--reference", reference, "--format", "json")
    assert result.code == 1
    found = result.json()["findings"]
    by_code = {f["code"] for f in found}
    assert {"HK502", "HK605"} <= by_code
    reference_diff = " ".join(f["message"] for f in found if f["code"] == "HK502")
    assert "shared_experts" in reference_diff and "layers.0.mlp" in reference_diff
    # grouped per layer range, not one line per module
    assert "{1-60}" in reference_diff and len([f for f in found if f["code"] == "HK502"]) < 20


def test_legacy_language_model_layers_names_are_refused(
    hubkit, full_scale: Path, references: Path, tmp_path: Path
) -> None:
    k26 = read_json(references / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json")["quantization"]["exclude_modules"]
    legacy = [p.replace("language_model.model.layers.", "language_model.layers.") for p in k26]
    checkpoint = variant(full_scale, tmp_path / "legacy", exclusions=legacy)
    result = hubkit("validate", checkpoint, "--format", "json")
    assert result.code == 1
    messages = [f["message"] for f in result.json()["findings"] if f["code"] == "HK501"]
    assert len(messages) == 121  # every layer pattern; lm_head, vision and projector still match
    assert "legacy name" in messages[0]
    assert "HK605" in codes(result)  # attention and shared experts are left to be quantized
