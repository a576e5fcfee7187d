"""Modules of a checkpoint, derived from tensor names: which are Linears, which are NVFP4-quantized."""

from __future__ import annotations

from dataclasses import dataclass, field

from hubkit.checkpoint.model import Checkpoint
from hubkit.checkpoint.safetensors_header import TensorInfo

#: Tensors an NVFP4 export adds to a quantized Linear besides its packed ``weight``.
NVFP4_SCALES = ("weight_scale", "weight_scale_2", "input_scale")
#: Names left behind by other formats or by modelopt internals; never valid in an export.
LEFTOVER_SUFFIXES = ("weight_packed", "weight_shape", "weight_zero_point", "_amax", "_scale", "_double_scale")


@dataclass
class ModuleTable:
    """Every module (tensor name minus its last component) with its tensors by suffix."""

    modules: dict[str, dict[str, TensorInfo]]
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> ModuleTable:
        modules: dict[str, dict[str, TensorInfo]] = {}
        for name, tensor in checkpoint.tensors.items():
            module, _, suffix = name.rpartition(".")
            entry = modules.get(module)
            if entry is None:
                modules[module] = {suffix: tensor}
            else:
                entry[suffix] = tensor
        return cls(modules, sorted(modules))
