"""Tensor dtypes by their safetensors names (``BF16``, ``F8_E4M3``): bits per element, and the library's name of each.

No torch here: quantize turns :data:`LIBRARY_NAMES` into torch dtypes (``hubkit.quantize.shards``), the test
fixtures pass them to safetensors' own writer, and the checks read sizes from :data:`DTYPE_BITS`.
"""

from __future__ import annotations

#: Bits per element of every dtype the safetensors format defines.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip

#: The name torch (``torch.bfloat16``) and safetensors' serializer give each dtype that both know.
LIBRARY_NAMES: dict[str, str] = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16", "F32": "float32",
    "F64": "float64", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}  # fmt: skip


def tensor_bytes(dtype: str, count: int) -> int:
    """Bytes of ``count`` elements of ``dtype`` (sub-byte dtypes packed; safetensors allows no partial byte)."""
    return count * DTYPE_BITS[dtype] // 8
