"""``hubkit quantize --plan`` and ``--mode auto``: what a run needs, read from the base's headers alone.

For each planned mode (``modes/``: ``resident``, the whole model on the devices; ``layerwise``, one decoder layer at
a time) the plan predicts peak device memory, peak host memory, disk, and calibration time per layer; each mode's
``estimate`` holds its formula. The model is simple and its coefficients, here, are fitted to measured runs
(``benchmarks/bench_quantize.py`` prints predicted against measured):

- resident, device: the BF16 weights times ``RESIDENT_FACTOR`` (calibration and export temporaries: the MSE
  scale sweep and the whole quantized state dict being built), plus the calibration activations;
- layerwise, device: everything outside the decoder layers (embeddings, LM head, vision tower), plus the largest
  layer times ``LAYER_FACTOR`` or, if more, the layer while it loads (its per-expert tensors and their fused
  stack at once), plus two layers' worth of cached activations (this layer's inputs, the next's);
- host: on a CPU run the host is the device, plus the process itself (Python, torch, transformers, modelopt),
  plus (layerwise) a fixed cost per tensor of the base (the whole model's skeleton, quantizers and name tables);
  on a GPU run, the process plus what passes through the host (one layer read from the base, one exported layer);
- disk: the export, plus one shard being written beside it, plus (resident, INT4 base) a BF16 copy of the
  whole base, or (layerwise) one layer's activations of scratch.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.checkpoint.modules import is_int4_side_tensor
from hubkit.errors import HubkitError
from hubkit.sizes import GiB as GIB
from hubkit.sizes import KiB as KIB
from hubkit.sizes import MiB as MIB
from hubkit.sizes import binary_size as _gib
from hubkit.sizes import parse_size

#: Usable memory per GPU in GiB (what the driver reports, not the marketing figure).
GPU_MEMORY_GIB = {"B300": 268, "B200": 178, "H200": 139, "H100": 79}
#: ``--mode auto`` picks resident only when its predicted peak is at most this share of the budget.
MARGIN = 0.85
#: The export's shard limit (modelopt's ``export_hf_checkpoint`` default).
SHARD_BYTES = 10 * 1000**3

# -- coefficients, fitted to measured runs -------------------------------------------------------------------
#: Resident peak / BF16 weights on CUDA: 7.6 GiB above idle for a 4.0 GiB DeepSeek-V3 (6 layers, 64 experts) on
#: an H200, MSE experts-only recipe, 64 x 256 tokens.
RESIDENT_FACTOR_CUDA = 1.9
#: The same on a CPU run (hubkit's CPU NVFP4 stand-ins compute in float32): fitted by bench_quantize.py.
RESIDENT_FACTOR_CPU = 2.1
#: Peak of one layer in flight / its BF16 bytes (weights, MSE sweep, export copy): fitted by bench_quantize.py
#: on CPU; on CUDA taken as the resident factor until a GPU run measures it (benchmarks/gpu_check.sh).
LAYER_FACTOR_CPU = 3.5
LAYER_FACTOR_CUDA = 1.9
#: Resident memory of the process itself (Python, torch, transformers, modelopt imported, tokenizer loaded).
PROCESS_BYTES = 610 * MIB
#: Host bytes a layerwise run holds per tensor of the base (as its headers list them, INT4 side tensors not
#: counted), for the whole run: the base's index and the loader's name tables, the meta skeleton, the quantizers
#: mtq.quantize inserts for the whole model, and what every finished layer leaves behind (its quantizers' state on
#: meta, oneDNN kernels compiled per expert shape). Measured at Kimi-K2's topology (61 layers, 384 experts,
#: 69,995 tensors, hidden 64; bench_kimi_topology.py): index +141 MiB, skeleton and loader check +259 MiB,
#: 47,944 quantizers +93 MiB, then ~12.5 MiB per layer, to a peak of 2,283 MiB where the plan without this term
#: said 629 MiB: (2,283 - 629) MiB / 69,995 tensors = 24 KiB.
HOST_BYTES_PER_TENSOR = 24 * KIB
#: Cached activations of one layer: hidden states in BF16, plus the per-batch extras (position embeddings, masks);
#: measured 1.14 on the tiny model (``held_input_bytes`` in a layerwise run's provenance).
ACTIVATION_OVERHEAD = 1.5
#: Layers' inputs the layerwise loop holds at once: this layer's, replayed to calibrate it, and the next layer's,
#: captured from this one before it is calibrated.
INPUTS_HELD = 2
#: Calibration seconds per layer per GiB of layer weights per 1,000 tokens: CPU fitted by bench_quantize.py;
#: CUDA from the H200 run above (5.3 s for 4.0 GiB and 16,384 tokens), not measured one layer at a time.
SECONDS_PER_GIB_KTOK = {"cpu": 66.0, "cuda": 5.3 / 4.0 / 16.384}
#: Per layer, per layer of the model: the whole-model bookkeeping each layer pays for (loader, export scans).
SECONDS_PER_LAYER_PER_LAYER = 0.01


def parse_gpus(spec: str) -> tuple[int, str]:
    """``8xB300`` -> (8, "B300"); ``cpu`` -> (0, "cpu")."""
    if spec.strip().lower() == "cpu":
        return 0, "cpu"
    found = re.fullmatch(r"(\d+)\s*[xX]\s*([A-Za-z]\d+)", spec.strip())
    if not found or found[2].upper() not in GPU_MEMORY_GIB or int(found[1]) < 1:
        raise HubkitError(f"--gpus {spec!r} is not COUNTxMODEL with MODEL one of {', '.join(GPU_MEMORY_GIB)} (or cpu)")
    return int(found[1]), found[2].upper()


@dataclass(frozen=True)
class Shape:
    """What the plan needs from the base: BF16 bytes per decoder layer and outside them, export bytes, sizes."""

    layer_bytes: list[int]
    rest_bytes: int
    export_bytes: int
    int4: bool
    hidden: int
    experts: int
    #: BF16 bytes of the routed experts, per decoder layer (those a loader stacks into fused parameters)
    expert_bytes: list[int] = field(default_factory=list)
    #: tensors of the base as a BF16 checkpoint would list them (an INT4 module's parts count once)
    tensors: int = 0

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.rest_bytes

    @property
    def largest_layer(self) -> int:
        return max(self.layer_bytes, default=0)

    @property
    def largest_loading(self) -> int:
        """The most bytes a layer holds while it loads: its tensors as read, plus its routed experts stacked into
        fused parameters (transformers' loader stacks the per-expert tensors; both live until the stack is done)."""
        experts = self.expert_bytes or [0] * len(self.layer_bytes)
        return max((size + fused for size, fused in zip(self.layer_bytes, experts, strict=True)), default=0)


_LAYER = re.compile(r"^(.*?\.layers)\.(\d+)\.")


def shape_of(base: Checkpoint) -> Shape:
    """Header arithmetic: INT4 ``weight_packed`` expands to BF16; experts shrink to NVFP4 in the export."""
    text = base.text_config
    layers: dict[int, int] = {}
    experts_of: dict[int, int] = {}
    rest = export = tensors = 0
    int4 = False
    for name, tensor in base.tensors.items():
        if is_int4_side_tensor(name, base.tensors):
            continue
        tensors += 1
        if name.endswith(".weight_packed"):
            int4 = True
            logical = tensor.numel * 8  # eight 4-bit values per int32
            bf16 = logical * 2
            export += logical // 2 + logical // 16 + 8  # packed E2M1 + FP8 block scales + two F32 scalars
        else:
            bf16 = tensor.nbytes
            export += tensor.nbytes
        found = _LAYER.match(name)
        if found:
            layers[int(found[2])] = layers.get(int(found[2]), 0) + bf16
            if ".experts." in name:
                experts_of[int(found[2])] = experts_of.get(int(found[2]), 0) + bf16
        else:
            rest += bf16
    count = int(text.get("num_hidden_layers", 0) or 0) or len(layers)
    per_layer = [layers.get(i, 0) for i in range(max(count, len(layers)))]
    experts = int(text.get("n_routed_experts", 0) or text.get("num_local_experts", 0) or 0)
    per_layer_experts = [experts_of.get(i, 0) for i in range(len(per_layer))]
    hidden = int(text.get("hidden_size", 0) or 0)
    return Shape(per_layer, rest, export, int4, hidden, experts, per_layer_experts, tensors)


@dataclass(frozen=True)
class Estimate:
    """One mode's predicted needs on one target."""

    mode: str
    device_bytes: int  # peak per device (per GPU; the host itself on a CPU run)
    host_bytes: int
    disk_bytes: int
    seconds_per_layer: float | None
    devices_needed: int | None  # GPUs of the target's model a run needs (None: does not fit any number)

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_gib": round(self.device_bytes / GIB, 2),
            "host_gib": round(self.host_bytes / GIB, 2),
            "disk_gib": round(self.disk_bytes / GIB, 2),
            "device_bytes": self.device_bytes,
            "host_bytes": self.host_bytes,
            "disk_bytes": self.disk_bytes,
            "seconds_per_layer": self.seconds_per_layer,
            "devices_needed": self.devices_needed,
        }


@dataclass(frozen=True)
class Plan:
    shape: Shape
    target: str  # "8xB300", "cpu"
    devices: int
    device_budget: int  # per device
    host_budget: int | None
    free_disk: int | None
    tokens: int
    #: per planned mode (``modes.planned()``), in order
    estimates: dict[str, Estimate]
    smallest: dict[str, dict[str, int | None]] = field(default_factory=dict)

    world: int = 1

    @property
    def on_cpu(self) -> bool:
        return self.devices == 0

    def estimate(self, mode: str) -> Estimate:
        """The estimate of a planned mode; any other name is refused."""
        if mode not in self.estimates:
            raise HubkitError(f"the plan has no estimate for mode {mode!r}; it plans {', '.join(self.estimates)}")
        return self.estimates[mode]

    def budget(self, mode: str) -> int:
        """The GPU memory ``mode`` may use: every device for a mode that spans them, else one."""
        from hubkit.quantize.modes import get

        return self.device_budget * (self.devices if get(mode).spans_devices else 1)

    def fits(self, mode: str, margin: float = 1.0) -> tuple[bool, str]:
        """Whether ``mode`` fits this target (within ``margin`` of each budget), and the first reason it does not."""
        from hubkit.quantize.modes import get

        est = self.estimate(mode)
        if self.on_cpu:
            if self.host_budget is not None and est.host_bytes > self.host_budget * margin:
                return False, f"needs {_gib(est.host_bytes)} of memory, {_gib(self.host_budget)} available"
        else:
            budget = self.budget(mode)
            if est.device_bytes > budget * margin:
                where = f"{self.devices} GPU(s)" if get(mode).spans_devices else "one GPU"
                return False, f"needs {_gib(est.device_bytes)} of GPU memory, {_gib(budget)} on {where}"
            if self.host_budget is not None and est.host_bytes > self.host_budget * margin:
                return False, f"needs {_gib(est.host_bytes)} of host memory, {_gib(self.host_budget)} available"
        if self.free_disk is not None and est.disk_bytes > self.free_disk:
            return False, f"needs {_gib(est.disk_bytes)} of disk, {_gib(self.free_disk)} free"
        return True, f"needs {_gib(est.host_bytes if self.on_cpu else est.device_bytes)}"

    def choose(self) -> tuple[str, str]:
        """``--mode auto``: resident when it fits with margin, else layerwise; the mode and why."""
        fits, why = self.fits("resident", MARGIN)
        if fits:
            return "resident", f"resident: the whole model fits with margin ({why}, {self._budget_text()})"
        return "layerwise", f"layerwise: resident does not fit with a {round((1 - MARGIN) * 100)} % margin ({why})"

    def _budget_text(self) -> str:
        if self.on_cpu:
            return "memory " + ("unknown" if self.host_budget is None else _gib(self.host_budget) + " available")
        return f"{self.devices} x {_gib(self.device_budget)} of GPU memory"

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "target": self.target,
            "gpu_memory_gib": round(self.devices * self.device_budget / GIB, 1),
            "bf16_weights_gib": round(self.shape.weight_bytes / GIB, 1),
            "largest_layer_gib": round(self.shape.largest_layer / GIB, 2),
            "layers": len(self.shape.layer_bytes),
            "export_gib": round(self.shape.export_bytes / GIB, 1),
            "free_disk_gib": None if self.free_disk is None else round(self.free_disk / GIB, 1),
            "tokens": self.tokens,
            "modes": {mode: {**est.as_dict(), "fits": self.fits(mode)[0]} for mode, est in self.estimates.items()},
            "smallest_gpu_set": self.smallest,
            "layerwise_processes": self.world,
        }
        result["mode"], result["reason"] = self.choose()
        return result

    def render(self) -> str:
        lines = [
            f"Base: {len(self.shape.layer_bytes)} decoder layers, BF16 weights {_gib(self.shape.weight_bytes)} "
            f"(largest layer {_gib(self.shape.largest_layer)}), export {_gib(self.shape.export_bytes)}; "
            f"{self.tokens:,} calibration tokens",
            f"Target: {self.target}" + ("" if self.on_cpu else f" ({_gib(self.device_budget)} per GPU)"),
        ]
        from hubkit.quantize.modes import get

        for mode, est in self.estimates.items():
            fits, why = self.fits(mode)
            spans = get(mode).spans_devices
            where = "" if spans else " per GPU"
            device = "" if self.on_cpu else f"GPU {_gib(est.device_bytes)}{where}, "
            seconds = est.seconds_per_layer
            timing = "" if seconds is None else f", ~{seconds:,.{1 if seconds < 10 else 0}f} s per layer"
            ranks = "" if spans or self.world == 1 else f" (torchrun, {self.world} processes)"
            lines.append(
                f"  {mode}{ranks}: {device}host {_gib(est.host_bytes)}, disk {_gib(est.disk_bytes)}{timing}: "
                + ("fits" if fits else f"does NOT fit ({why})")
            )
        for mode in self.estimates:
            sets = self.smallest.get(mode, {})
            text = ", ".join(f"{n}x{gpu}" if n else f"no {gpu} set" for gpu, n in sets.items())
            lines.append(f"  smallest GPU set, {mode}: {text}")
        lines.append(f"--mode auto: {self.choose()[1]}")
        return "\n".join(lines)


def estimate(
    base: Checkpoint,
    gpus: str,
    *,
    batch: int,
    seq: int,
    tokens: int | None = None,
    out: Path | None = None,
    max_gpu_memory: str | None = None,
    max_cpu_memory: str | None = None,
    world: int | None = None,
) -> Plan:
    """The plan for ``base`` on ``gpus`` (``8xB300`` or ``cpu``) with ``tokens`` calibration tokens; a layerwise
    run on N GPUs is planned as ``torchrun`` with N processes (``world``) unless told otherwise."""
    count, model = parse_gpus(gpus)
    world = world if world is not None else max(count, 1)
    budget = parse_size(max_gpu_memory) if max_gpu_memory else (GPU_MEMORY_GIB[model] * GIB if count else 0)
    # a named GPU target is another machine: its host memory is unknown unless --max-cpu-memory says
    host = parse_size(max_cpu_memory) if max_cpu_memory else (None if count else available_memory())
    disk = shutil.disk_usage(existing_folder(out)).free if out is not None or not count else None
    return _plan(base, "cpu" if not count else gpus, count, budget, batch, seq, tokens, disk, host, world)


def estimate_here(
    base: Checkpoint,
    device: str,
    *,
    batch: int,
    seq: int,
    tokens: int,
    out: Path | None = None,
    max_gpu_memory: str | None = None,
    max_cpu_memory: str | None = None,
    world: int = 1,
) -> Plan:
    """The plan on this machine: its GPUs (their own memory, capped by ``max_gpu_memory``) or its CPU."""
    host = parse_size(max_cpu_memory) if max_cpu_memory else available_memory()
    if device != "cuda":
        return _plan(base, "cpu", 0, 0, batch, seq, tokens, shutil.disk_usage(existing_folder(out)).free, host, world)
    import torch

    count = torch.cuda.device_count()
    budget = min(torch.cuda.get_device_properties(i).total_memory for i in range(count))
    if max_gpu_memory:
        budget = min(budget, parse_size(max_gpu_memory))
    name = torch.cuda.get_device_name(0)
    free = shutil.disk_usage(existing_folder(out)).free
    return _plan(base, f"{count}x{name}", count, budget, batch, seq, tokens, free, host, world)


def _plan(
    base: Checkpoint,
    target: str,
    count: int,
    device_budget: int,
    batch: int,
    seq: int,
    tokens: int | None,
    free: int | None,
    host_budget: int | None,
    world: int,
) -> Plan:
    from hubkit.quantize.modes import planned

    shape = shape_of(base)
    tokens = tokens if tokens is not None else batch * seq
    kind = "cuda" if count else "cpu"
    estimates, smallest = {}, {}
    for mode in planned():
        est = mode.estimate(shape, kind, tokens, batch, seq, world)
        smallest[mode.name] = {gpu: _devices(mode.spans_devices, est, gib * GIB) for gpu, gib in GPU_MEMORY_GIB.items()}
        if count:
            est = dataclasses.replace(est, devices_needed=_devices(mode.spans_devices, est, device_budget))
        estimates[mode.name] = est
    return Plan(shape, target, count, device_budget, host_budget, free, tokens, estimates, smallest, world)


def _devices(spans: bool, est: Estimate, per_gpu: float) -> int | None:
    """GPUs of ``per_gpu`` bytes a mode needs: enough to hold it for a mode that spans them, else one that does."""
    if spans:
        return max(1, math.ceil(est.device_bytes / per_gpu)) if per_gpu else None
    return 1 if est.device_bytes <= per_gpu else None


def activation_bytes(shape: Shape, tokens: int, batch: int, seq: int) -> int:
    """Cached inputs of ``tokens`` tokens for two layers at once, plus one batch's attention temporaries."""
    cached = INPUTS_HELD * tokens * shape.hidden * 2 * ACTIVATION_OVERHEAD
    return int(cached) + batch * seq * shape.hidden * 4 * 8


def rewrite_bytes(shape: Shape) -> int:
    """A shard being written beside the finished ones (safetensors writes a temporary file, then renames it)."""
    return min(shape.export_bytes, SHARD_BYTES)


def calibration_seconds(shape: Shape, kind: str, tokens: int) -> float | None:
    """Calibration seconds per layer with ``tokens`` tokens through the largest layer."""
    if not shape.layer_bytes:
        return None
    compute = SECONDS_PER_GIB_KTOK[kind] * shape.largest_layer / GIB * max(tokens, 1) / 1000
    return round(compute + SECONDS_PER_LAYER_PER_LAYER * len(shape.layer_bytes), 2)


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux); None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def existing_folder(path: Path | None) -> Path:
    """The nearest existing folder at or above ``path`` (for free disk space)."""
    current = (path or Path.cwd()).absolute()
    while not current.exists() and current != current.parent:
        current = current.parent
    return current
