"""The CPU stand-ins for modelopt's NVFP4 fake quantization, checked against modelopt's own exporter."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from hubkit.quantize import cpu_fallback  # noqa: E402
from hubkit.quantize.tiny_models import tiny_deepseek  # noqa: E402
from tests.conftest import decode_nvfp4  # noqa: E402

RECIPE = "general/ptq/nvfp4_experts_only_mse-kv_fp8_cast"


def quantize(model: torch.nn.Module) -> None:
    import modelopt.torch.quantization as mtq
    from modelopt.recipe import load_recipe

    generator = torch.Generator().manual_seed(0)

    def forward_loop(m: torch.nn.Module) -> None:
        for _ in range(4):
            m(torch.randint(0, 256, (2, 32), generator=generator))

    mtq.quantize(model, load_recipe(RECIPE).quantize.model_dump(), forward_loop)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict[str, torch.Tensor], dict]:
    from modelopt.torch.export import export_hf_checkpoint

    base = tiny_deepseek(tmp_path_factory.mktemp("base") / "bf16")
    original = load_file(base / "model.safetensors")
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    assert cpu_fallback.install() is True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize(model)
            out = tmp_path_factory.mktemp("export") / "nvfp4"
            export_hf_checkpoint(model, export_dir=out)
    finally:
        cpu_fallback.uninstall()
    return model, load_file(out / "model.safetensors"), original


def test_modelopt_refuses_nvfp4_calibration_on_cpu_without_the_fallback(tmp_path: Path) -> None:
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_deepseek(tmp_path / "m"), dtype=torch.bfloat16)
    with pytest.raises((RuntimeError, AssertionError), match=r"triton|CUDA"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize(model)


@pytest.mark.slow
def test_exported_experts_dequantize_close_to_the_bf16_weights(exported) -> None:
    _, tensors, original = exported
    expert = "model.layers.1.mlp.experts.3.gate_proj"
    weight = decode_nvfp4(
        tensors[f"{expert}.weight"], tensors[f"{expert}.weight_scale"], tensors[f"{expert}.weight_scale_2"]
    )
    reference = original[f"{expert}.weight"].float()
    relative = (weight - reference).norm() / reference.norm()
    assert relative < 0.12, relative  # 4-bit blocks of 16: ~8-10 % on Gaussian weights
    # the wrong nibble order is far worse, so the check above can fail
    swapped = decode_nvfp4(((tensors[f"{expert}.weight"] & 0x0F) << 4) | (tensors[f"{expert}.weight"] >> 4),
                           tensors[f"{expert}.weight_scale"], tensors[f"{expert}.weight_scale_2"])  # fmt: skip
    assert (swapped - reference).norm() / reference.norm() > 0.5


@pytest.mark.slow
def test_only_routed_experts_are_nvfp4_and_gate_up_share_scales(exported) -> None:
    _, tensors, _ = exported
    packed = {name.rsplit(".", 1)[0] for name, t in tensors.items() if t.dtype == torch.uint8}
    assert packed and all(".mlp.experts." in name for name in packed)
    assert len(packed) == 2 * 8 * 3  # (layers - first_k_dense_replace) x experts x projections
    for expert in range(8):
        prefix = f"model.layers.2.mlp.experts.{expert}"
        for kind in ("weight_scale_2", "input_scale"):
            assert torch.equal(tensors[f"{prefix}.gate_proj.{kind}"], tensors[f"{prefix}.up_proj.{kind}"])


def test_static_fallback_matches_modelopts_exporter_except_at_ties() -> None:
    """MSE-calibrated static blocks: the fallback's fake quantization equals what modelopt would export."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    class Block(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.experts = torch.nn.ModuleDict({"0": torch.nn.Linear(256, 64, bias=False)})

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.experts["0"](x)

    torch.manual_seed(2)
    net = torch.nn.Sequential()
    net.add_module("mlp", Block())
    assert cpu_fallback.install() is True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import modelopt.torch.quantization as mtq
            from modelopt.recipe import load_recipe

            mtq.quantize(net, load_recipe(RECIPE).quantize.model_dump(), lambda m: m(torch.randn(8, 256)))
        linear = net.mlp.experts["0"]
        quantizer = linear.weight_quantizer
        with torch.no_grad():
            ours = quantizer(linear.weight).float()
    finally:
        cpu_fallback.uninstall()
    scale, scale_2 = NVFP4QTensor.get_weights_scaling_factor_from_quantizer(quantizer, linear.weight)
    packed, _, _ = NVFP4QTensor.quantize(linear.weight.detach(), 16, scale, scale_2)
    theirs = packed.dequantize(dtype=torch.float32, scale=scale, double_scale=scale_2, block_sizes={-1: 16})
    assert (ours != theirs).float().mean().item() < 1e-3
    assert (ours - linear.weight).abs().max() > 0  # it did quantize


def test_dynamic_fallback_matches_modelopts_exporter_except_at_ties() -> None:
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    torch.manual_seed(1)
    x = torch.randn(64, 256) * torch.logspace(-3, 1, 256)
    global_amax = x.abs().max()
    ours = cpu_fallback.dynamic_nvfp4_fake_quant(x, 16, global_amax)
    scale_2 = global_amax / (6.0 * 448.0)
    packed, scale, _ = NVFP4QTensor.quantize(x, 16, weights_scaling_factor_2=scale_2)
    theirs = packed.dequantize(dtype=torch.float32, scale=scale, double_scale=scale_2, block_sizes={-1: 16})
    differing = (ours != theirs).float().mean().item()
    assert differing < 1e-3, differing


def test_fallback_refuses_unchecked_modelopt(monkeypatch) -> None:
    import modelopt

    from hubkit.errors import HubkitError

    monkeypatch.setattr(modelopt, "__version__", "0.99.0")
    with pytest.raises(HubkitError, match="not been checked"):
        cpu_fallback.install()
