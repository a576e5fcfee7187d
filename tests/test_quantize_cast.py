"""``hubkit quantize`` on an MXFP4 base: the closed-form cast to NVFP4 (``hubkit/quantize/cast.py``).

The bases are built with compressed-tensors' own MXFP4 compressor; the export is checked by dequantizing both
sides independently (compressed-tensors for MXFP4, a decoder written here for NVFP4).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("compressed_tensors")
pytest.importorskip("modelopt")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

E2M1 = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
OUT, IN = 32, 64
PREFIX = "language_model.model.layers.1.block_sparse_moe.experts"


def _scheme():
    from compressed_tensors.quantization import QuantizationScheme
    from compressed_tensors.quantization.quant_scheme import preset_name_to_scheme

    scheme: QuantizationScheme = preset_name_to_scheme("MXFP4", ["Linear"])
    return scheme


def mxfp4(exponents: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """A weight whose 32-blocks have the given power-of-two scales (2^-127 marks an all-zero block),
    compressed by compressed-tensors' MXFP4 compressor."""
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor

    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 8, (OUT, IN), generator=generator)
    signs = torch.where(torch.rand(OUT, IN, generator=generator) < 0.5, -1.0, 1.0)
    scale = torch.exp2(exponents.float())
    values = torch.tensor(E2M1)[codes] * signs
    values.view(OUT, IN // 32, 32)[:, :, 0] = 6.0  # every block reaches the top of E2M1: its exponent is k_j
    zero = exponents == -127
    weight = values.view(OUT, IN // 32, 32) * scale.unsqueeze(-1)
    weight[zero] = 0.0
    weight = weight.reshape(OUT, IN)
    state = MXFP4PackedCompressor.compress({"weight": weight, "weight_scale": scale}, _scheme())
    return {"weight_packed": state["weight_packed"], "weight_scale": state["weight_scale"]}


def mxfp4_dequantized(packed: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    from compressed_tensors.compressors.mxfp4.base import MXFP4PackedCompressor

    state = MXFP4PackedCompressor.decompress({"weight_packed": packed, "weight_scale": scale}, _scheme())
    return state["weight"].float()


def nvfp4_dequantized(weight: torch.Tensor, scale: torch.Tensor, scale_2: torch.Tensor) -> torch.Tensor:
    low, high = weight & 0x0F, weight >> 4
    codes = torch.stack([low, high], dim=-1).reshape(weight.shape[0], -1).long()
    values = torch.tensor(E2M1)[codes & 7] * torch.where(codes >= 8, -1.0, 1.0)
    blocks = values.view(weight.shape[0], -1, 16) * scale.float().unsqueeze(-1) * scale_2.float()
    return blocks.reshape(weight.shape[0], -1)


def exponents(top: int, low: int | None = None, zero: bool = False) -> torch.Tensor:
    e = torch.full((OUT, IN // 32), top, dtype=torch.int32)
    e[1::2, 1] = top - 3
    if low is not None:
        e[3, 0] = low
    if zero:
        e[5, 1] = -127
    return e


def build_base(folder: Path, experts: dict[str, torch.Tensor], split: bool = True) -> Path:
    """A Kimi-K3-shaped MXFP4 base: w1 in the first shard, w3 and w2 in the second (``split``)."""
    folder.mkdir(parents=True)
    first: dict[str, torch.Tensor] = {
        "language_model.model.embed_tokens.weight": torch.randn(16, IN).to(torch.bfloat16),
        "language_model.model.layers.1.self_attn.q_proj.weight": torch.randn(IN, IN).to(torch.bfloat16),
        "language_model.model.layers.1.block_sparse_moe.gate.weight": torch.randn(2, IN).to(torch.bfloat16),
    }
    second: dict[str, torch.Tensor] = {"language_model.lm_head.weight": torch.randn(16, IN).to(torch.bfloat16)}
    for name, exps in experts.items():
        target = first if name.endswith("w1") or not split else second
        seed = sum(map(ord, name))
        for key, tensor in mxfp4(exps, seed).items():
            target[f"{PREFIX}.{name}.{key}"] = tensor
    weight_map = {}
    for i, tensors in enumerate((first, second)):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file(tensors, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    block = {
        "format": "mxfp4-pack-quantized",
        "quant_method": "compressed-tensors",
        "config_groups": {"group_0": _scheme().model_dump(mode="json")},
        "ignore": ["lm_head", "re:.*self_attn.*"],
    }
    config = {
        "architectures": ["KimiK3ForConditionalGeneration"],
        "model_type": "kimi_k3",
        "text_config": {"model_type": "kimi_k3", "hidden_size": IN, "quantization_config": block},
    }
    (folder / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer_config.json", "generation_config.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


def tensors_of(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    found = {}
    for shard in sorted(set(index["weight_map"].values())):
        with safe_open(str(folder / shard), framework="pt") as handle:
            found.update({key: handle.get_tensor(key) for key in handle.keys()})  # noqa: SIM118
    return found


@pytest.fixture
def base(tmp_path: Path) -> Path:
    experts = {
        "0.w1": exponents(-4),
        "0.w3": exponents(-2, zero=True),  # the larger k_max of the pair: w1 must take it too
        "0.w2": exponents(-5, low=-30),  # one block 25 below k_max: outside E4M3's window
        "1.w1": exponents(-6),
        "1.w3": exponents(-7),
        "1.w2": exponents(-6),
    }
    return build_base(tmp_path / "base", experts)


def test_cast_is_bit_exact_and_shares_the_fused_scale_across_shards(hubkit, base: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", base, "--out", out, "--jobs", "2")
    assert result.code in (0, 1), result.err
    source, export = tensors_of(base), tensors_of(out)
    for expert in ("0", "1"):
        w1, w3 = (export[f"{PREFIX}.{expert}.{p}.weight_scale_2"] for p in ("w1", "w3"))
        assert w1.shape == () and w1.dtype == torch.float32 and float(w1) == float(w3)
    assert float(export[f"{PREFIX}.0.w1.weight_scale_2"]) == 2.0 ** (-2 - 8)
    for name in ("0.w1", "0.w2", "0.w3", "1.w1", "1.w2", "1.w3"):
        module = f"{PREFIX}.{name}"
        assert module + ".weight_packed" not in export
        assert export[module + ".weight"].dtype == torch.uint8
        assert export[module + ".weight_scale"].dtype == torch.float8_e4m3fn
        assert tuple(export[module + ".weight_scale"].shape) == (OUT, IN // 16)
        assert float(export[module + ".input_scale"]) == 1.0
        mx = mxfp4_dequantized(source[module + ".weight_packed"], source[module + ".weight_scale"])
        nv = nvfp4_dequantized(
            export[module + ".weight"], export[module + ".weight_scale"], export[module + ".weight_scale_2"]
        )
        e8m0 = source[module + ".weight_scale"].int()
        kmax = int(e8m0[e8m0 > 0].max())
        lossless = ((e8m0 >= kmax - 17) | (e8m0 == 0)).repeat_interleave(32, dim=-1)
        assert torch.equal(nv[lossless], mx[lossless]), name
        if name == "0.w2":
            assert not bool(lossless.all())
            assert torch.allclose(nv[~lossless], mx[~lossless], atol=2.0**-20)
    for name in ("language_model.model.embed_tokens.weight", "language_model.lm_head.weight"):
        assert torch.equal(export[name], source[name])
    provenance = json.loads((out / ".hubkit" / "provenance.json").read_text())
    cast = provenance["cast"]
    assert cast["fallback_blocks"] == 1 and cast["zero_blocks"] == 1
    assert cast["blocks"] == 6 * OUT * IN // 32 and cast["lossless_blocks"] == cast["blocks"] - 1
    assert cast["tensors_with_fallback"] == [f"{PREFIX}.0.w2.weight"]
    per_tensor = json.loads((out / ".hubkit" / "cast-blocks.json").read_text())
    assert per_tensor[f"{PREFIX}.0.w2.weight"]["fallback"] == 1


def test_export_metadata_is_modelopts_mixed_precision(hubkit, base: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", base, "--out", out)
    assert result.code in (0, 1), result.err
    hf_quant = json.loads((out / "hf_quant_config.json").read_text())
    quant = hf_quant["quantization"]
    assert hf_quant["producer"]["name"] == "modelopt"
    assert quant["quant_algo"] == "MIXED_PRECISION" and quant["group_size"] == 16
    layers = quant["quantized_layers"]
    for alias in (PREFIX, "layers.1.block_sparse_moe.experts", "model.layers.1.mlp.experts"):
        assert layers[alias] == {"quant_algo": "NVFP4", "group_size": 16}
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config["text_config"]
    block = config["quantization_config"]
    assert block["quant_method"] == "modelopt_mixed" and block["quant_algo"] == "MIXED_PRECISION"
    assert block["quantized_layers"] == layers
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["weight_map"][f"{PREFIX}.0.w3.weight_scale_2"] == "model-00002-of-00002.safetensors"
    assert (out / "tokenizer_config.json").is_file()


def test_a_recipe_part_the_cast_cannot_honour_is_exit_2(hubkit, base: Path, tmp_path: Path) -> None:
    result = hubkit(
        "quantize", "--base", base, "--out", tmp_path / "out", "--recipe", "general/ptq/nvfp4_experts_only-kv_fp8_cast"
    )
    assert result.code == 2, result.err
    assert "kv_bmm_quantizer" in result.err or "constant_amax" in result.err, result.err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_other_modes_on_an_mxfp4_base_are_exit_2(hubkit, base: Path, tmp_path: Path) -> None:
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--mode", "layerwise")
    assert result.code == 2 and "MXFP4" in result.err


@pytest.fixture
def export(hubkit, base: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", base, "--out", out, "--jobs", "2")
    assert result.code == 0, result.out + result.err
    return out


def _tamper(folder: Path, name: str, change) -> None:
    """Rewrite the shard holding ``name`` with ``change`` applied to that tensor."""
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = folder / index["weight_map"][name]
    with safe_open(str(shard), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    change(tensors[name])
    save_file(tensors, shard, metadata={"format": "pt"})


def _flip_low_nibble(row: int, byte: int):
    def change(tensor: torch.Tensor) -> None:
        tensor[row, byte] ^= 0x01

    return change


def test_validate_base_passes_the_cast_and_names_the_profile(hubkit, export: Path, base: Path) -> None:
    result = hubkit("validate", export, "--base", base, "--deep", "--format", "json")
    assert result.code == 0, result.out
    assert result.json()["profile"] == "modelopt-mixed-nvfp4"


@pytest.mark.parametrize("deep", [False, True])
def test_validate_base_finds_a_changed_lossless_block(hubkit, export: Path, base: Path, deep: bool) -> None:
    _tamper(export, f"{PREFIX}.1.w3.weight", _flip_low_nibble(2, 5))
    result = hubkit("validate", export, "--base", base, "--select", "HK705", *(["--deep"] if deep else []))
    assert result.code == 1 and "HK705" in result.out and f"{PREFIX}.1.w3.weight" in result.out, result.out


def test_validate_base_finds_a_changed_block_scale(hubkit, export: Path, base: Path) -> None:
    def double(tensor: torch.Tensor) -> None:
        tensor[0, 1] = (tensor[0, 1].float() * 2).to(torch.float8_e4m3fn)

    _tamper(export, f"{PREFIX}.0.w1.weight_scale", double)
    result = hubkit("validate", export, "--base", base, "--select", "HK705")
    assert result.code == 1 and f"{PREFIX}.0.w1.weight" in result.out, result.out


def test_a_fallback_block_is_not_claimed_exact(hubkit, export: Path, base: Path) -> None:
    _tamper(export, f"{PREFIX}.0.w2.weight", _flip_low_nibble(3, 0))  # row 3, block 0: outside the window
    result = hubkit("validate", export, "--base", base, "--select", "HK705", "--deep")
    assert result.code == 0, result.out


def test_only_deep_reads_every_tensor(hubkit, export: Path, base: Path, monkeypatch) -> None:
    from hubkit.validate.rules import cast

    monkeypatch.setattr(cast, "SAMPLED_TENSORS", 1)  # the first tensor only
    _tamper(export, f"{PREFIX}.1.w3.weight", _flip_low_nibble(0, 0))
    assert hubkit("validate", export, "--base", base, "--select", "HK705").code == 0
    assert hubkit("validate", export, "--base", base, "--select", "HK705", "--deep").code == 1


def test_w1_and_w3_with_different_global_scales_are_found(hubkit, export: Path, base: Path) -> None:
    def halve(tensor: torch.Tensor) -> None:
        tensor.mul_(0.5)

    _tamper(export, f"{PREFIX}.0.w3.weight_scale_2", halve)
    result = hubkit("validate", export, "--deep", "--select", "HK704")
    assert result.code == 1 and f"{PREFIX}.0.w3.weight_scale_2" in result.out, result.out


def test_plan_for_an_mxfp4_base_predicts_the_cast(hubkit, base: Path, tmp_path: Path) -> None:
    from hubkit.checkpoint import load_checkpoint

    result = hubkit("quantize", "--base", base, "--plan", "--jobs", "3", "--format", "json")
    assert result.code == 0, result.err
    plan = result.json()
    assert plan["mode"] == "cast" and plan["shards"] == 2 and plan["mxfp4_modules"] == 6 and plan["jobs"] == 3
    assert plan["seconds"] > 0 and plan["host_bytes"] > 0
    out = tmp_path / "out"
    assert hubkit("quantize", "--base", base, "--out", out).code == 0
    assert plan["disk_bytes"] == load_checkpoint(str(out)).total_tensor_bytes  # the export's size, exactly
    text = hubkit("quantize", "--base", base, "--plan")
    assert text.code == 0 and "cast" in text.out and "MXFP4" in text.out


def modelopt_cast(packed: torch.Tensor, e8m0: torch.Tensor, kmax: int) -> tuple[torch.Tensor, torch.Tensor]:
    """NVIDIA's Kimi-K3 converter's documented recipe for one tensor, with modelopt's own functions: dequantize to
    BF16, per-block amax from ``numeric_utils``, scales pinned to 2^(k_max - 8), requantize with NVFP4QTensor."""
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, NVFP4QTensor
    from modelopt.torch.quantization.utils.numeric_utils import mxfp4_to_nvfp4_per_block_amax

    shape = torch.Size((packed.shape[0], packed.shape[1] * 2))
    bf16 = MXFP4QTensor(shape, torch.bfloat16, packed).dequantize(dtype=torch.bfloat16, scale=e8m0, block_sizes=[32])
    amax = mxfp4_to_nvfp4_per_block_amax(packed.view(*e8m0.shape, 16), e8m0)
    scale_2 = torch.tensor(2.0 ** (kmax - 8), dtype=torch.float32)
    scale = (amax / (6.0 * scale_2)).clamp(min=2.0**-9, max=448.0).to(torch.float8_e4m3fn)
    q, weight_scale, _ = NVFP4QTensor.quantize(bf16, 16, scale, scale_2, try_tensorrt=False)
    return q._quantized_data, weight_scale


def test_expert_bytes_equal_modelopts_cast_when_the_pair_shares_a_shard(hubkit, tmp_path: Path) -> None:
    experts = {"0.w1": exponents(-4), "0.w3": exponents(-2, zero=True), "0.w2": exponents(-5, low=-30)}
    base = build_base(tmp_path / "base", experts, split=False)
    out = tmp_path / "out"
    assert hubkit("quantize", "--base", base, "--out", out).code == 0
    source, export = tensors_of(base), tensors_of(out)
    for name in experts:
        module = f"{PREFIX}.{name}"
        pair = [f"{PREFIX}.0.{p}" for p in ("w1", "w3")] if name != "0.w2" else [module]
        kmax = max(int(source[m + ".weight_scale"].max()) - 127 for m in pair)
        weight, scale = modelopt_cast(source[module + ".weight_packed"], source[module + ".weight_scale"], kmax)
        assert torch.equal(export[module + ".weight"], weight), name
        assert torch.equal(export[module + ".weight_scale"].view(torch.uint8), scale.view(torch.uint8)), name


def test_the_card_states_the_lossless_fraction_and_no_calibration(hubkit, export: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(
        '[release]\nrepo = "org/name"\n[base]\nrepo = "org/base"\n[quantize]\nout = "out"\n[card]\nlicense = "other"\n'
    )
    result = hubkit("card", "render", export, "--manifest", manifest)
    assert result.code == 0, result.err
    blocks = 6 * OUT * IN // 32
    assert f"Bit-exact cast: {blocks - 1} of {blocks} MXFP4 blocks" in result.out
    assert "from its native MXFP4" in result.out and "None: the cast is closed-form" in result.out


def test_a_scale_stored_in_another_shard_than_its_nibbles(hubkit, tmp_path: Path) -> None:
    base = build_base(
        tmp_path / "base", {"0.w1": exponents(-4), "0.w3": exponents(-3), "0.w2": exponents(-4)}, split=False
    )
    index_path = base / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    moved = f"{PREFIX}.0.w1.weight_scale"
    shards = [base / f"model-0000{i}-of-00002.safetensors" for i in (1, 2)]
    with safe_open(str(shards[0]), framework="pt") as one, safe_open(str(shards[1]), framework="pt") as two:
        first = {k: one.get_tensor(k) for k in one.keys()}  # noqa: SIM118
        second = {k: two.get_tensor(k) for k in two.keys()}  # noqa: SIM118
    second[moved] = first.pop(moved)
    save_file(first, shards[0], metadata={"format": "pt"})
    save_file(second, shards[1], metadata={"format": "pt"})
    index["weight_map"][moved] = shards[1].name
    index_path.write_text(json.dumps(index))
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", base, "--out", out)
    assert result.code == 0, result.out + result.err
    export = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    assert export[f"{PREFIX}.0.w1.weight_scale"] == shards[0].name == export[f"{PREFIX}.0.w1.weight"]
    assert hubkit("validate", out, "--base", base, "--deep").code == 0


@pytest.mark.parametrize("damage", ["nan-scale", "shape", "missing-shard"])
def test_a_damaged_base_is_exit_2_and_leaves_nothing(hubkit, tmp_path: Path, damage: str) -> None:
    base = build_base(
        tmp_path / "base", {"0.w1": exponents(-4), "0.w3": exponents(-3), "0.w2": exponents(-4)}, split=False
    )
    shard = base / "model-00001-of-00002.safetensors"
    with safe_open(str(shard), framework="pt") as handle:
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    if damage == "nan-scale":
        tensors[f"{PREFIX}.0.w3.weight_scale"][4, 1] = 255
        save_file(tensors, shard, metadata={"format": "pt"})
    elif damage == "shape":
        tensors[f"{PREFIX}.0.w3.weight_scale"] = tensors[f"{PREFIX}.0.w3.weight_scale"][:, :1].contiguous()
        save_file(tensors, shard, metadata={"format": "pt"})
    else:
        (base / "model-00002-of-00002.safetensors").unlink()
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out")
    assert result.code == 2, result.out + result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    wanted = {"nan-scale": "NaN (E8M0 0xFF)", "shape": "does not match its scale", "missing-shard": "not in the folder"}
    assert wanted[damage] in result.err, result.err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


EXPERTS_ONLY_RECIPE = """
imports:
  base_disable_all: configs/ptq/units/base_disable_all
  default_disabled_quantizers: configs/ptq/units/default_disabled_quantizers
  nvfp4: configs/numerics/nvfp4
metadata:
  recipe_type: ptq
  description: routed experts NVFP4 from MXFP4, constant input amax
quantize:
  algorithm:
    method: max
  quant_cfg:
    - $import: base_disable_all
    - quantizer_name: "*block_sparse_moe.experts.*weight_quantizer"
      cfg:
        $import: nvfp4
    - quantizer_name: "*block_sparse_moe.experts.*input_quantizer"
      cfg:
        $import: nvfp4
        constant_amax: 1344.0
    - $import: default_disabled_quantizers
"""


def test_a_recipe_file_sets_the_constant_input_amax(hubkit, base: Path, tmp_path: Path) -> None:
    recipe = tmp_path / "experts.yaml"
    recipe.write_text(EXPERTS_ONLY_RECIPE)
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", base, "--out", out, "--recipe", recipe)
    assert result.code == 0, result.out + result.err
    assert float(tensors_of(out)[f"{PREFIX}.0.w1.input_scale"]) == 0.5
    assert json.loads((out / ".hubkit" / "provenance.json").read_text())["recipe"]["input_amax"] == 1344.0


def test_the_published_kimi_k3_recipe_is_refused_for_its_fp8_attention(hubkit, base: Path, tmp_path: Path) -> None:
    recipe = "models/moonshotai/Kimi-K3/ptq/nvfp4_experts-fp8_pb_attention"
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--recipe", recipe)
    assert result.code == 2 and "self_attn" in result.err and "cannot honour" in result.err, result.err
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.partial").exists()


def test_a_global_scale_that_is_no_power_of_two_is_decoded_block_by_block(hubkit, export: Path, base: Path) -> None:
    def scale(tensor: torch.Tensor) -> None:
        tensor.mul_(1.5)

    _tamper(export, f"{PREFIX}.1.w2.weight_scale_2", scale)
    result = hubkit("validate", export, "--base", base, "--select", "HK705")
    assert result.code == 1 and f"{OUT * IN // 32:,} lossless MXFP4 blocks" in result.out, result.out


def test_mode_cast_needs_an_mxfp4_base(hubkit, base: Path, tmp_path: Path) -> None:
    config = json.loads((base / "config.json").read_text())
    del config["text_config"]["quantization_config"]
    (base / "config.json").write_text(json.dumps(config))
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--mode", "cast")
    assert result.code == 2 and "needs an MXFP4 base" in result.err, result.err
    assert hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--jobs", "0").code == 2
