"""Must accept / must refuse: full-scale Kimi skeletons carrying the real reference configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import codes, linked_copy, read_json, set_exclusions


def variant(source: Path, target: Path, exclusions: list[str]) -> Path:
    """A copy sharing the (sparse) shards by hard link, with its exclusion list replaced."""
    set_exclusions(linked_copy(source, target), exclusions)
    return target


def test_real_k26_configs_are_accepted(hubkit, kimi_k26_skeleton: Path) -> None:
    result = hubkit("validate", kimi_k26_skeleton, "--format", "json")
    report = result.json()
    assert result.code == 0, report["findings"]
    assert report["profile"] == "kimi-k2-nvfp4"
    assert report["summary"]["passed"] is True
    assert report["summary"]["errors"] == 0


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_k27_code_list_is_accepted_and_its_extra_entry_is_informational(
    hubkit, kimi_k26_skeleton: Path, references: Path, tmp_path: Path
) -> None:
    k27 = read_json(references / "nvidia--Kimi-K2.7-Code-NVFP4.hf_quant_config.json")
    checkpoint = variant(kimi_k26_skeleton, tmp_path / "k27", exclusions=k27["quantization"]["exclude_modules"])
    reference = references / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json"
    result = hubkit("validate", checkpoint, "--reference", reference, "--format", "json")
    assert result.code == 0, result.out
    findings = result.json()["findings"]
    assert [f["code"] for f in findings] == ["HK504"]
    assert "embed_tokens" in findings[0]["message"]


def test_k25_list_as_drop_in_for_k26_is_refused(
    hubkit, kimi_k26_skeleton: Path, references: Path, tmp_path: Path
) -> None:
    k25 = read_json(references / "nvidia--Kimi-K2.5-NVFP4.config.json")["quantization_config"]["ignore"]
    checkpoint = variant(kimi_k26_skeleton, tmp_path / "k25", exclusions=k25)
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
    hubkit, kimi_k26_skeleton: Path, references: Path, tmp_path: Path
) -> None:
    k26 = read_json(references / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json")["quantization"]["exclude_modules"]
    legacy = [p.replace("language_model.model.layers.", "language_model.layers.") for p in k26]
    checkpoint = variant(kimi_k26_skeleton, tmp_path / "legacy", exclusions=legacy)
    result = hubkit("validate", checkpoint, "--format", "json")
    assert result.code == 1
    messages = [f["message"] for f in result.json()["findings"] if f["code"] == "HK501"]
    assert len(messages) == 121  # every layer pattern; lm_head, vision and projector still match
    assert "legacy name" in messages[0]
    assert "HK605" in codes(result)  # attention and shared experts are left to be quantized
