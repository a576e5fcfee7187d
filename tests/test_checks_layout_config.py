"""HK1xx (files and layout, base comparison) and HK4xx (quantization configs): break a tiny export one way each."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from hubkit.testing.kimi import TINY, int4_base_layout, write_checkpoint
from tests.conftest import codes, read_json, write_json


def validate_codes(hubkit, path: Path, *extra: str) -> set[str]:
    result = hubkit("validate", path, "--format", "json", *extra)
    assert result.code in (0, 1), result.err
    return codes(result)


def test_tiny_export_passes_cleanly(hubkit, tiny: Path) -> None:
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 0
    assert result.json()["findings"] == []


@pytest.mark.parametrize(
    ("remove", "code"),
    [
        ("config.json", "HK101"),
        ("model.safetensors.index.json", "HK103"),
        ("tiktoken.model", "HK104"),
        ("generation_config.json", "HK105"),
        ("modeling_deepseek.py", "HK106"),
        ("tokenization_kimi.py", "HK106"),
        ("hf_quant_config.json", "HK401"),
    ],
)
def test_missing_required_file(hubkit, tiny: Path, remove: str, code: str) -> None:
    if remove == "model.safetensors.index.json":  # only a sharded checkpoint needs an index
        shard = next(tiny.glob("*.safetensors"))
        shutil.copy(shard, tiny / "model-00002-of-00002.safetensors")
    (tiny / remove).unlink()
    assert code in validate_codes(hubkit, tiny)


def test_missing_readme_is_a_warning_and_fails_under_strict(hubkit, tiny: Path) -> None:
    (tiny / "README.md").unlink()
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 0 and codes(result) == {"HK107"}
    assert hubkit("validate", tiny, "--strict").code == 1


def test_unparseable_config(hubkit, tiny: Path) -> None:
    (tiny / "generation_config.json").write_text("{not json")
    assert "HK102" in validate_codes(hubkit, tiny)


def test_stray_files_and_escaping_symlink(hubkit, tiny: Path, tmp_path: Path) -> None:
    (tiny / ".git").mkdir()
    (tiny / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (tiny / "optimizer.pt").write_bytes(b"\x80\x04K\x01.")
    outside = tmp_path / "secret.txt"
    outside.write_text("private")
    os.symlink(outside, tiny / "notes.txt")
    (tiny / ".hubkit").mkdir()
    (tiny / ".hubkit" / "provenance.json").write_text("{}")
    result = hubkit("validate", tiny, "--format", "json")
    found = [(f["code"], f["file"]) for f in result.json()["findings"]]
    assert ("HK108", ".git") in found
    assert ("HK108", "optimizer.pt") in found
    assert ("HK109", "notes.txt") in found
    assert not any(file and file.startswith(".hubkit") for _, file in found)


def test_quant_config_missing_keys_and_wrong_types(hubkit, tiny: Path) -> None:
    quant = read_json(tiny / "hf_quant_config.json")
    del quant["quantization"]["kv_cache_quant_algo"]
    quant["quantization"]["group_size"] = "16"
    del quant["producer"]
    write_json(tiny / "hf_quant_config.json", quant)
    result = hubkit("validate", tiny, "--format", "json")
    messages = [f["message"] for f in result.json()["findings"] if f["code"] == "HK402"]
    assert any("kv_cache_quant_algo is missing" in m for m in messages)
    assert any("group_size must be a int" in m for m in messages)
    assert "HK407" in codes(result)


def test_quant_settings_against_profile(hubkit, tiny: Path) -> None:
    quant = read_json(tiny / "hf_quant_config.json")
    quant["quantization"]["group_size"] = 32
    write_json(tiny / "hf_quant_config.json", quant)
    found = validate_codes(hubkit, tiny)
    assert {"HK403", "HK405"} <= found  # profile expects 16; config.json's config_groups still say 16


def test_configs_disagree_on_ignore_list(hubkit, tiny: Path) -> None:
    config = read_json(tiny / "config.json")
    config["quantization_config"]["ignore"] = config["quantization_config"]["ignore"][:-1]
    write_json(tiny / "config.json", config)
    assert "HK405" in validate_codes(hubkit, tiny)


def test_config_without_modelopt_block(hubkit, tiny: Path) -> None:
    config = read_json(tiny / "config.json")
    config["quantization_config"]["quant_method"] = "fp8"
    write_json(tiny / "config.json", config)
    assert "HK404" in validate_codes(hubkit, tiny, "--profile", "kimi-k2-nvfp4")


def test_int4_block_left_in_text_config(hubkit, tiny: Path, references: Path) -> None:
    base = read_json(references / "moonshotai--Kimi-K2.5.config.json")
    config = read_json(tiny / "config.json")
    config["text_config"]["quantization_config"] = base["text_config"]["quantization_config"]
    config["text_config"]["model_type"] = "kimi_k2"
    write_json(tiny / "config.json", config)
    found = validate_codes(hubkit, tiny)
    assert {"HK406", "HK408"} <= found


def test_reference_settings_differ(hubkit, tiny: Path, tmp_path: Path) -> None:
    reference = read_json(tiny / "hf_quant_config.json")
    reference["quantization"]["kv_cache_quant_algo"] = "NONE"
    write_json(tmp_path / "ref.json", reference)
    assert "HK409" in validate_codes(hubkit, tiny, "--reference", tmp_path / "ref.json")


@pytest.fixture
def base(tmp_path: Path, tiny: Path) -> Path:
    """The INT4 base the tiny export was made from: same side files, compressed-tensors experts."""
    side = {p.name: p.read_bytes() for p in tiny.iterdir() if p.suffix in (".py", ".model", ".jinja")}
    side["generation_config.json"] = (tiny / "generation_config.json").read_bytes()
    side["tokenizer_config.json"] = (tiny / "tokenizer_config.json").read_bytes()
    return write_checkpoint(tmp_path / "base", int4_base_layout(TINY), files=side)


def test_base_comparison_passes_for_a_faithful_export(hubkit, tiny: Path, base: Path) -> None:
    result = hubkit("validate", tiny, "--base", base, "--format", "json")
    assert result.code == 0, result.out


def test_base_comparison_finds_changed_and_missing_files_and_weights(hubkit, tiny: Path, base: Path) -> None:
    (tiny / "chat_template.jinja").write_text("{{ messages }}\n")
    (tiny / "tokenization_kimi.py").unlink()
    shutil.copy(base / "tiktoken.model", base / "extra.tiktoken")
    index = read_json(tiny / "model.safetensors.index.json")
    (base / "tokenization_kimi.py").write_text("class TikTokenTokenizer: ...\n")
    write_json(tiny / "model.safetensors.index.json", index)
    found = validate_codes(hubkit, tiny, "--base", base)
    assert {"HK120", "HK121"} <= found


def test_base_weight_dropped_by_export(hubkit, tiny: Path, base: Path) -> None:
    from hubkit.testing.kimi import nvfp4_layout
    from hubkit.testing.kimi import write_checkpoint as write

    layout = [s for s in nvfp4_layout(TINY) if ".layers.2.mlp.experts.3." not in s[0]]
    side = {p.name: p.read_bytes() for p in tiny.iterdir() if not p.name.endswith((".safetensors", "index.json"))}
    shutil.rmtree(tiny)
    write(tiny, layout, files=side)
    result = hubkit("validate", tiny, "--base", base, "--format", "json")
    found = {f["code"]: f["message"] for f in result.json()["findings"]}
    assert "HK122" in found and "experts.3" in found["HK122"]
    assert "HK607" in found and "HK608" in found
