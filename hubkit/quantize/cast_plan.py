"""``--plan`` for an MXFP4 base (the cast of ``cast.py``), from the base's headers alone; light to import.

The cast reads every shard once and writes it once, so it is I/O-bound:

- disk: the export (MXFP4 nibbles keep their bytes; each 32-block's E8M0 byte becomes two E4M3 bytes; two F32
  scalars per module; everything else copied);
- host: the process, plus per shard in flight the cast tensors of that shard (held until the shard is written)
  and the temporaries of its largest tensor;
- time: bytes read and written over ``BYTES_PER_SECOND_PER_JOB`` per job, at most ``DISK_BYTES_PER_SECOND``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.sizes import GiB as GIB
from hubkit.sizes import binary_size

MXFP4_FORMAT = "mxfp4-pack-quantized"
#: The process with torch, safetensors and modelopt imported.
PROCESS_BYTES = 610 * 1024**2
#: Temporaries of one tensor's cast (int32 exponents, float scales, the output) / its packed bytes.
TENSOR_FACTOR = 6.0
#: Cast throughput of one job (bytes read plus written per second): benchmarks/bench_cast.py measured ~200 MiB/s
#: per job on a busy 2-core CPU; a dedicated core does more.
BYTES_PER_SECOND_PER_JOB = 200 * 1024**2
#: What the disk gives all jobs together, at most.
DISK_BYTES_PER_SECOND = 2 * GIB


def mxfp4_block(config: dict[str, Any]) -> dict[str, Any] | None:
    """The base's compressed-tensors MXFP4 block (top level or ``text_config``), or None."""
    for holder in (config, config.get("text_config")):
        block = holder.get("quantization_config") if isinstance(holder, dict) else None
        if isinstance(block, dict) and block.get("format") == MXFP4_FORMAT:
            return block
    return None


@dataclass(frozen=True)
class CastPlan:
    shards: int
    modules: int
    base_bytes: int
    export_bytes: int
    host_bytes: int
    seconds: float
    jobs: int
    host_budget: int | None
    free_disk: int | None

    def fits(self) -> tuple[bool, str]:
        if self.host_budget is not None and self.host_bytes > self.host_budget:
            return False, f"needs {binary_size(self.host_bytes)} of memory, {binary_size(self.host_budget)} available"
        if self.free_disk is not None and self.export_bytes > self.free_disk:
            return False, f"needs {binary_size(self.export_bytes)} of disk, {binary_size(self.free_disk)} free"
        return True, f"needs {binary_size(self.host_bytes)} of memory and {binary_size(self.export_bytes)} of disk"

    def as_dict(self) -> dict[str, Any]:
        fits, why = self.fits()
        return {
            "mode": "cast",
            "reason": "cast: the base is MXFP4 (no calibration, no GPU)",
            "shards": self.shards,
            "mxfp4_modules": self.modules,
            "jobs": self.jobs,
            "base_gib": round(self.base_bytes / GIB, 2),
            "export_gib": round(self.export_bytes / GIB, 2),
            "disk_bytes": self.export_bytes,
            "host_bytes": self.host_bytes,
            "host_gib": round(self.host_bytes / GIB, 2),
            "seconds": round(self.seconds, 6),
            "free_disk_gib": None if self.free_disk is None else round(self.free_disk / GIB, 1),
            "fits": fits,
            "why": why,
        }

    def render(self) -> str:
        fits, why = self.fits()
        return "\n".join(
            [
                f"Base: MXFP4, {self.shards} shards, {self.modules:,} MXFP4 modules, {binary_size(self.base_bytes)}",
                f"  cast ({self.jobs} jobs): host {binary_size(self.host_bytes)}, disk {binary_size(self.export_bytes)}, "
                f"~{self.seconds:,.1f} s (I/O-bound): " + ("fits" if fits else f"does NOT fit ({why})"),
                "--mode auto: cast: the base is MXFP4 (no calibration, no GPU)",
            ]
        )


def cast_plan(base: Checkpoint, jobs: int, host_budget: int | None, free_disk: int | None) -> CastPlan:
    tensors = base.tensors
    shard_bytes: dict[str, int] = {}
    shard_cast: dict[str, int] = {}
    largest = 0
    modules = 0
    for name, info in tensors.items():
        shard = base.shard_of[name]
        shard_bytes[shard] = shard_bytes.get(shard, 0) + info.nbytes
        module = name.removesuffix(".weight_packed")
        scale = tensors.get(module + ".weight_scale")
        if name.endswith(".weight_packed") and info.dtype == "U8" and scale is not None and scale.dtype == "U8":
            modules += 1
            cast = info.nbytes + 2 * scale.nbytes + 8
            shard_cast[shard] = shard_cast.get(shard, 0) + cast
            largest = max(largest, info.nbytes)
    base_bytes = sum(shard_bytes.values())
    scale_growth = sum(
        t.nbytes
        for n, t in tensors.items()
        if n.endswith(".weight_scale") and n.removesuffix(".weight_scale") + ".weight_packed" in tensors
    )
    export_bytes = base_bytes + scale_growth + 8 * modules
    in_flight = sorted(shard_cast.values(), reverse=True)[: max(jobs, 1)]
    host = PROCESS_BYTES + sum(in_flight) + min(jobs, len(shard_cast)) * int(TENSOR_FACTOR * largest)
    rate = min(jobs * BYTES_PER_SECOND_PER_JOB, DISK_BYTES_PER_SECOND)
    seconds = (base_bytes + export_bytes) / rate
    return CastPlan(len(shard_bytes), modules, base_bytes, export_bytes, host, seconds, jobs, host_budget, free_disk)
