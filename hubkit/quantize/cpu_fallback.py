"""Pure-torch stand-ins for the two NVFP4 fake-quant entry points of modelopt that need CUDA.

On a machine without CUDA, modelopt's calibration stops at NVFP4 blocks: dynamic blocks assert "amax must
be a CUDA tensor for dynamic block quantization", static (MSE) blocks raise "static_blockwise_fp4_fake_quant
requires triton". Both are replaced here, only without CUDA and only for the modelopt versions this was
checked against, by the same arithmetic modelopt's *export* uses (``NVFP4QTensor``), so what calibration
sees is what the exported checkpoint holds. Tiny models only: this is about correctness, not speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from hubkit.errors import HubkitError

#: modelopt releases whose fake-quant entry points these stand-ins were checked against.
CHECKED_MODELOPT_VERSIONS = ("0.45", "0.46", "0.47")
E2M1_MAX = 6.0
E4M3_MAX = 448.0

_installed: dict[str, Any] = {}


def _nvfp4_tensor() -> Any:
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    return NVFP4QTensor


def round_to_e2m1(scaled: torch.Tensor) -> torch.Tensor:
    """Round to the nearest E2M1 value (ties to even), exactly as modelopt's exporter does."""
    codes = _nvfp4_tensor()._cast_fp4(scaled.float().clone())
    values: torch.Tensor = _nvfp4_tensor().get_e2m1_values(scaled.device)
    return values[codes.long()]


def block_scales(per_block_amax: torch.Tensor, global_amax: torch.Tensor, fp8_max: float = E4M3_MAX) -> torch.Tensor:
    """Dequantization scale of each block: FP8 block scale times the global scale, as exported."""
    global_scale = global_amax.float() / (E2M1_MAX * fp8_max)
    per_block = per_block_amax.float() / E2M1_MAX
    per_block = torch.where(per_block == 0, torch.ones_like(per_block), per_block)
    fp8: torch.Tensor = _nvfp4_tensor()._cast_per_block_scale_to_fp8(per_block, global_amax.float() / E2M1_MAX, fp8_max)
    return fp8.float() * global_scale


def _fake_quant(x: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype | None) -> torch.Tensor:
    block = x.numel() // scales.numel()
    blocks = x.float().reshape(-1, block)
    per_block = scales.reshape(-1, 1)
    quantized = round_to_e2m1(blocks / per_block) * per_block
    result = quantized.reshape(x.shape).to(out_dtype or x.dtype)
    return x + (result - x).detach() if x.requires_grad else result  # straight-through gradient


def static_blockwise_fp4_fake_quant(
    x: torch.Tensor,
    amax: torch.Tensor,
    global_amax: torch.Tensor | None = None,
    quantize_block_scales: bool = True,
    fp8_max_for_normalization: float = E4M3_MAX,
    out_dtype: torch.dtype | None = None,
    pass_through_bwd: bool = False,
) -> torch.Tensor:
    """Static NVFP4 blocks: per-block amax from calibration (e.g. the MSE FP8 scale sweep)."""
    if global_amax is None:
        global_amax = amax.float().max()
    if quantize_block_scales:
        scales = block_scales(amax, global_amax, fp8_max_for_normalization)
    else:
        scales = (amax.float() / E2M1_MAX).clamp(min=1e-8)
    return _fake_quant(x, scales, out_dtype)


def dynamic_nvfp4_fake_quant(x: torch.Tensor, block_size: int, amax: torch.Tensor | None) -> torch.Tensor:
    """Dynamic NVFP4 blocks (inputs): block amax from the data, global scale from the calibrated amax."""
    blocks = x.float().reshape(-1, block_size)
    global_amax = blocks.abs().max() if amax is None else amax.float().max()
    scales = block_scales(blocks.abs().amax(dim=-1), global_amax)
    return _fake_quant(x, scales, x.dtype)


def _is_nvfp4(num_bits: int, exponent_bits: int, scale_num_bits: int, scale_exponent_bits: int) -> bool:
    return (num_bits, exponent_bits, scale_num_bits, scale_exponent_bits) == (4, 2, 8, 4)


def install(force: bool = False) -> bool:
    """Route modelopt's NVFP4 fake quantization to the stand-ins when CUDA is absent (or ``force``, for a
    model kept on the CPU of a CUDA host); True when installed.

    Raises HubkitError for a modelopt version the stand-ins were not checked against.
    """
    if torch.cuda.is_available() and not force:
        return False
    if _installed:
        return True
    import modelopt
    import modelopt.torch.quantization.nn.modules.tensor_quantizer as quantizer_module
    import modelopt.torch.quantization.tensor_quant as tensor_quant

    version = str(modelopt.__version__)
    if not version.startswith(CHECKED_MODELOPT_VERSIONS):
        raise HubkitError(
            f"nvidia-modelopt {version} has not been checked with hubkit's CPU NVFP4 fallback "
            f"(checked: {', '.join(CHECKED_MODELOPT_VERSIONS)}); quantize on a CUDA host or install one of those"
        )
    original_dynamic: Callable[..., torch.Tensor] = tensor_quant.dynamic_block_quantize_op

    def dynamic_block_quantize_op(
        inputs: torch.Tensor,
        block_size: int,
        amax: torch.Tensor | None,
        num_bits: int,
        exponent_bits: int,
        scale_num_bits: int,
        scale_exponent_bits: int,
    ) -> torch.Tensor:
        if _is_nvfp4(num_bits, exponent_bits, scale_num_bits, scale_exponent_bits):
            return dynamic_nvfp4_fake_quant(inputs, block_size, amax)
        return original_dynamic(inputs, block_size, amax, num_bits, exponent_bits, scale_num_bits, scale_exponent_bits)

    _installed["dynamic"] = (tensor_quant, "dynamic_block_quantize_op", original_dynamic)
    _installed["static"] = (
        quantizer_module,
        "static_blockwise_fp4_fake_quant",
        quantizer_module.static_blockwise_fp4_fake_quant,
    )
    tensor_quant.dynamic_block_quantize_op = dynamic_block_quantize_op
    quantizer_module.static_blockwise_fp4_fake_quant = static_blockwise_fp4_fake_quant
    return True


@contextmanager
def active(force: bool = False) -> Iterator[bool]:
    """The stand-ins for the duration of a block (when CUDA is absent); yields whether they are in use."""
    installed_here = not _installed and install(force)
    try:
        yield bool(_installed)
    finally:
        if installed_here:
            uninstall()


def uninstall() -> None:
    """Put modelopt's own entry points back."""
    for module, name, original in _installed.values():
        setattr(module, name, original)
    _installed.clear()
