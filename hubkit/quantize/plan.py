"""``hubkit quantize --plan``: what a run needs (GPU memory, disk), read from the base's headers alone."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.checkpoint.modules import is_int4_side_tensor
from hubkit.errors import HubkitError

#: Usable memory per GPU in GiB (what the driver reports, not the marketing figure).
GPU_MEMORY_GIB = {"B300": 268, "B200": 178, "H200": 139, "H100": 79}
GIB = 1024**3


@dataclass(frozen=True)
class Plan:
    bf16_weight_bytes: int
    activation_bytes: int
    intermediate_bytes: int
    export_bytes: int
    gpus: str
    gpu_memory_bytes: int
    free_disk_bytes: int | None
    per_gpu_bytes: int = 0

    @property
    def gpu_bytes_needed(self) -> int:
        return int(self.bf16_weight_bytes * 1.05) + self.activation_bytes

    @property
    def disk_bytes_needed(self) -> int:
        return self.intermediate_bytes + self.export_bytes

    @property
    def fits_gpus(self) -> bool:
        return self.gpu_bytes_needed <= self.gpu_memory_bytes

    @property
    def fits_disk(self) -> bool | None:
        return None if self.free_disk_bytes is None else self.disk_bytes_needed <= self.free_disk_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "gpus": self.gpus,
            "gpu_memory_gib": round(self.gpu_memory_bytes / GIB, 1),
            "gpu_needed_gib": round(self.gpu_bytes_needed / GIB, 1),
            "bf16_weights_gib": round(self.bf16_weight_bytes / GIB, 1),
            "activations_gib": round(self.activation_bytes / GIB, 2),
            "intermediate_gib": round(self.intermediate_bytes / GIB, 1),
            "export_gib": round(self.export_bytes / GIB, 1),
            "disk_needed_gib": round(self.disk_bytes_needed / GIB, 1),
            "free_disk_gib": None if self.free_disk_bytes is None else round(self.free_disk_bytes / GIB, 1),
            "fits_gpus": self.fits_gpus,
            "min_gpus": -(-self.gpu_bytes_needed // self.per_gpu_bytes) if self.per_gpu_bytes else None,
            "fits_disk": self.fits_disk,
        }

    def render(self) -> str:
        d = self.as_dict()
        disk = "unknown" if d["fits_disk"] is None else ("fits" if d["fits_disk"] else "does NOT fit")
        return "\n".join(
            [
                f"GPUs: {d['gpus']} ({d['gpu_memory_gib']:,} GiB) - needs {d['gpu_needed_gib']:,} GiB: "
                + ("fits" if d["fits_gpus"] else f"does NOT fit (at least {d['min_gpus']} such GPUs)"),
                f"  BF16 weights after dequantization {d['bf16_weights_gib']:,} GiB, "
                f"calibration activations {d['activations_gib']:,} GiB",
                f"Disk: needs {d['disk_needed_gib']:,} GiB (BF16 intermediate {d['intermediate_gib']:,} GiB + "
                f"export {d['export_gib']:,} GiB), free {d['free_disk_gib']} GiB: {disk}",
            ]
        )


def parse_gpus(spec: str) -> tuple[int, str]:
    """``8xB300`` -> (8, "B300")."""
    found = re.fullmatch(r"(\d+)\s*[xX]\s*([A-Za-z]\d+)", spec.strip())
    if not found or found[2].upper() not in GPU_MEMORY_GIB:
        raise HubkitError(f"--gpus {spec!r} is not COUNTxMODEL with MODEL one of {', '.join(GPU_MEMORY_GIB)}")
    return int(found[1]), found[2].upper()


def estimate(base: Checkpoint, gpus: str, *, batch: int, seq: int, out: Path | None = None) -> Plan:
    """Estimate from tensor headers: INT4 ``weight_packed`` expands to BF16; experts shrink to NVFP4."""
    count, model = parse_gpus(gpus)
    text = base.text_config
    bf16 = export = 0
    int4 = False
    for name, tensor in base.tensors.items():
        if is_int4_side_tensor(name, base.tensors):
            continue
        if name.endswith(".weight_packed"):
            int4 = True
            logical = tensor.numel * 8  # eight 4-bit values per int32
            bf16 += logical * 2
            export += logical // 2 + logical // 16 + 8  # packed E2M1 + FP8 block scales + two F32 scalars
        else:
            bf16 += tensor.nbytes
            export += tensor.nbytes
    hidden = int(text.get("hidden_size", 0) or 0)
    layers = int(text.get("num_hidden_layers", 0) or 0)
    activation = batch * seq * hidden * 2 * max(layers, 1) * 4  # hidden states kept per layer, with margin
    free = shutil.disk_usage(out if out and out.exists() else Path.cwd()).free
    per_gpu = GPU_MEMORY_GIB[model] * GIB
    return Plan(bf16, activation, bf16 if int4 else 0, export, gpus, count * per_gpu, free, per_gpu)
