"""Modules of a checkpoint, derived from tensor names: which are Linears, which are NVFP4-quantized.

Kept as one map per tensor suffix (module -> tensor), so that questions about 70,000 modules are set
algebra and ``map`` at C speed rather than a Python loop (or a string built) per module.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from operator import itemgetter, methodcaller

from hubkit.checkpoint.model import Checkpoint
from hubkit.checkpoint.safetensors_header import TensorInfo

#: Tensors an NVFP4 export adds to a quantized Linear besides its packed ``weight``.
NVFP4_SCALES = ("weight_scale", "weight_scale_2", "input_scale")
#: Names left behind by other formats or by modelopt internals; never valid in an export.
LEFTOVER_SUFFIXES = ("weight_packed", "weight_shape", "weight_zero_point", "_amax", "_scale", "_double_scale")

_split_last = methodcaller("rpartition", ".")


def is_int4_side_tensor(name: str, tensors: Mapping[str, object]) -> bool:
    """A compressed-tensors INT4 side tensor (shape, zero point, group scale) with no counterpart in an NVFP4
    export, whose weight comes from ``weight_packed``."""
    if name.endswith((".weight_shape", ".weight_zero_point", ".weight_g_idx")):
        return True
    return name.endswith(".weight_scale") and name[: -len("_scale")] + "_packed" in tensors


@dataclass
class ModuleTable:
    """Every module (tensor name minus its last component) and, per suffix, the modules that have it."""

    names: list[str]
    by_suffix: dict[str, dict[str, TensorInfo]]
    tensors: dict[str, TensorInfo]

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> ModuleTable:
        parts = list(map(_split_last, checkpoint.tensors))
        by_suffix: dict[str, dict[str, TensorInfo]] = defaultdict(dict)
        for (module, _, suffix), tensor in zip(parts, checkpoint.tensors.values(), strict=True):
            by_suffix[suffix][module] = tensor
        return cls(sorted(set(map(itemgetter(0), parts))), dict(by_suffix), checkpoint.tensors)

    def get(self, module: str, suffix: str) -> TensorInfo | None:
        return self.by_suffix.get(suffix, {}).get(module)

    def of_kind(self, suffix: str) -> dict[str, TensorInfo]:
        """Module -> its ``suffix`` tensor, for every module that has one."""
        return self.by_suffix.get(suffix, {})

    def tensors_of(self, module: str) -> dict[str, TensorInfo]:
        """The module's tensors by suffix (for reports; probes every suffix the checkpoint uses)."""
        found = {suffix: self.get(module, suffix) for suffix in self.by_suffix}
        return {suffix: tensor for suffix, tensor in found.items() if tensor is not None}

    @cached_property
    def _weights(self) -> tuple[set[str], set[str]]:
        weights = self.of_kind("weight").items()
        packed = {module for module, weight in weights if weight.dtype == "U8"}
        two_d = {module for module, weight in weights if weight.shape is not None and len(weight.shape) == 2}
        return packed, two_d

    @cached_property
    def quantized(self) -> set[str]:
        """Modules stored as NVFP4: a packed U8 weight or any NVFP4 scale."""
        return self._weights[0].union(*(self.of_kind(s).keys() for s in NVFP4_SCALES))

    @cached_property
    def linear(self) -> set[str]:
        """Linears: a 2-D weight, or an NVFP4-quantized weight."""
        return self._weights[1] | (self.quantized & self.of_kind("weight").keys())
