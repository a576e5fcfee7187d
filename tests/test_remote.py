"""Remote reads: validate and diff Hub repos by range requests, through the real client and the local server."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubkit.testing.kimi import KimiDims, build_nvfp4_checkpoint, reference_exclusions
from tests.conftest import read_json, set_exclusions


def published(hub, folder: Path, repo: str) -> str:
    from hubkit.hub.push import PushOptions, push

    push(PushOptions(folder=folder, repo=repo, progress=False))
    return f"hf://{repo}"


def test_validate_a_hub_repo_reads_only_headers(hubkit, hub, tiny: Path) -> None:
    ref = published(hub, tiny, "org/remote")
    hub.bytes_sent = 0
    hub.faults.requests.clear()
    result = hubkit("validate", ref, "--format", "json")
    assert result.code == 0, result.out
    report = result.json()
    assert report["path"] == ref and report["summary"]["passed"]
    shard_bytes = sum(p.stat().st_size for p in tiny.glob("*.safetensors"))
    header_bytes = sum(8 + int.from_bytes(p.read_bytes()[:8], "little") for p in tiny.glob("*.safetensors"))
    side_bytes = sum(p.stat().st_size for p in tiny.iterdir() if p.is_file() and p.suffix != ".safetensors")
    assert hub.bytes_sent < header_bytes + side_bytes + 200_000  # JSON answers included
    assert hub.bytes_sent < shard_bytes / 2
    assert any("/resolve/" in path for _, path in hub.faults.requests)


def test_validate_remote_deep_reads_scale_ranges(hubkit, read_only_hub) -> None:
    assert hubkit("validate", "hf://org/tiny", "--deep").code == 0


def test_remote_reference_and_revision(hubkit, read_only_hub, tiny_template: Path) -> None:
    ref = "hf://org/tiny"
    assert hubkit("validate", tiny_template, "--reference", ref).code == 0
    assert hubkit("validate", f"{ref}@no-such-branch").code == 2
    assert hubkit("validate", "hf://org/missing").code == 2


def test_remote_finds_a_broken_export(hubkit, hub, tiny: Path) -> None:
    set_exclusions(tiny, [p for p in reference_exclusions(build_dims()) if "layers.2.self_attn" not in p])
    ref = published_without_validation(hub, tiny, "org/broken")
    result = hubkit("validate", ref, "--format", "json")
    assert result.code == 1 and "HK605" in {f["code"] for f in result.json()["findings"]}


def build_dims() -> KimiDims:
    from hubkit.testing.kimi import TINY

    return TINY


def published_without_validation(hub, folder: Path, repo: str) -> str:
    from hubkit.hub.push import PushOptions, push

    push(PushOptions(folder=folder, repo=repo, validate=False, progress=False))
    return f"hf://{repo}"


def test_diff_local_against_hub(hubkit, read_only_hub, tiny_template: Path, tmp_path: Path) -> None:
    ref = "hf://org/tiny"
    same = hubkit("diff", tiny_template, ref, "--format", "json")
    assert same.code == 0 and same.json()["identical"] is True
    other = build_nvfp4_checkpoint(tmp_path / "other", build_dims(), exclusions=reference_exclusions(build_dims())[:-3])
    quant = read_json(other / "hf_quant_config.json")
    quant["quantization"]["group_size"] = 32
    from tests.conftest import write_json

    write_json(other / "hf_quant_config.json", quant)
    different = hubkit("diff", ref, other)
    assert different.code == 1
    assert "config group_size: 16 -> 32" in different.out
    assert "quantized in A, BF16 in B" in different.out or "BF16 in A, quantized in B" in different.out
    assert different.out.rstrip().endswith("DIFFERENT")


@pytest.mark.parametrize("dims", [KimiDims(layers=3, experts=4, moe_inter=32, hidden=64, vocab=256, heads=2, q_lora=32, kv_lora=32,
                                            qk_nope=16, qk_rope=16, v_head=16, vision_blocks=1, vt_hidden=32, vt_inter=48, dense_inter=96)])  # fmt: skip
def test_imported_folder_is_served_without_upload(hub, tmp_path: Path, dims: KimiDims, hubkit) -> None:
    folder = build_nvfp4_checkpoint(tmp_path / "skeleton", dims, sparse=True)
    hub.store.import_folder("models", "org/imported", folder)
    assert hubkit("validate", "hf://org/imported").code == 0
