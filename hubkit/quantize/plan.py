"""``hubkit quantize --plan`` and ``--mode auto``: what a run needs, read from the base's headers alone.

For each planned mode (``modes/``: ``resident``, the whole model on the devices; ``layerwise``, one decoder layer at
a time) the plan predicts peak device memory, peak host memory, disk, and time per layer (resident: calibration;
layerwise: each part of a layer, ``layer_part_seconds``); each mode's ``estimate`` holds its formula. The model is
simple and its coefficients, here, are fitted to measured runs (``benchmarks/bench_quantize.py`` prints predicted
against measured):

- resident, device: the BF16 weights times ``RESIDENT_FACTOR`` (calibration and export temporaries: the MSE
  scale sweep and the whole quantized state dict being built), plus the calibration activations;
- layerwise, device: everything outside the decoder layers (embeddings, LM head, vision tower), plus the largest
  layer times ``LAYER_FACTOR`` or, if more, the layer while it loads (its per-expert tensors and their fused
  stack at once), plus two layers' worth of cached activations (this layer's inputs, the next's);
- host: on a CPU run the host is the device, plus the process itself (Python, torch, transformers, modelopt),
  plus (layerwise) a fixed cost per tensor of the base (the whole model's skeleton, quantizers and name tables);
  on a GPU run, the process plus what passes through the host (one layer read from the base, one exported layer);
  layerwise, plus the next layer as stored, read while this one calibrates;
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
#: Header bytes of one tensor in an exported safetensors file besides its name: the JSON of its dtype, shape and
#: offsets (130 bytes per tensor with names of 66 on average in a Kimi-topology export at hidden 64). Negligible
#: at Kimi's widths, but a third of the export of a very narrow model.
HEADER_BYTES_PER_TENSOR = 64
#: Bytes of the layerwise resume state per exported tensor besides twice its name: JSON punctuation and the name of
#: the pending file that holds it (37), and a share of the state's other fields.
STATE_BYTES_PER_TENSOR = 40
#: The tensors an NVFP4 module exports.
NVFP4_SUFFIXES = (".weight", ".weight_scale", ".weight_scale_2", ".input_scale")

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
#: meta). Measured at Kimi-K2's topology (61 layers, 384 experts, 69,995 tensors, hidden 64;
#: bench_kimi_topology.py): a peak of 1,771 MiB where the plan without this term says 630 MiB, so
#: (1,771 - 630) MiB / 69,995 tensors = 16.7 KiB; the 6-layer model of the same width (5,865 tensors) measured
#: 719 MiB against 727 with 17 KiB. (Before torch's matmul descriptor cache was bounded, see
#: ``layerwise.bound_onednn_cache``, the same run peaked at 2,283 MiB.)
HOST_BYTES_PER_TENSOR = 17 * KIB
#: Cached activations of one layer: hidden states in BF16, plus the per-batch extras (position embeddings, masks);
#: measured 1.14 on the tiny model (``held_input_bytes`` in a layerwise run's provenance).
ACTIVATION_OVERHEAD = 1.5
#: Layers' inputs the layerwise loop holds at once: this layer's, replayed to calibrate it, and the next layer's,
#: captured from this one before it is calibrated.
INPUTS_HELD = 2
#: Calibration seconds per layer per GiB of layer weights per 1,000 tokens: CPU fitted, with the module term
#: below, to the calibrate part of layerwise layers (provenance's ``layer_parts``);
#: CUDA from the H200 run above (5.3 s for 4.0 GiB and 16,384 tokens), not measured one layer at a time.
SECONDS_PER_GIB_KTOK = {"cpu": 15.8, "cuda": 5.3 / 4.0 / 16.384}
#: Per layer, per layer of the model: the whole-model bookkeeping each layer pays for (loader, export scans).
SECONDS_PER_LAYER_PER_LAYER = 0.01
# The parts of a layerwise layer (``layer_part_seconds``), each a per-size term and a per-module term. CPU values:
# solved from two topologies measured in turn on the quiet 2-core machine (load below 1.5):
# ``bench_quantize.py --layers 8`` (8 experts, hidden 512: 33 linear modules and 20.7 MiB of BF16 per layer,
# 16 x 64 tokens in 2 batches) and ``bench_kimi_topology.py --layers 6`` (384 experts, hidden 64: 1,161 modules and
# 4.6 MiB per layer, 64 x 64 tokens in 8 batches). On a loaded machine every part takes up to 2-3x as long. No
# GPU run has measured the parts yet: the CUDA device terms are estimates, marked unmeasured; the per-module
# terms (Python per module) and the host terms are taken as on the CPU.
#: Reading from the base's shards into host memory (page cache), per GiB as stored and per module.
READ_SECONDS_PER_GIB = 2.35
READ_SECONDS_PER_MODULE = 0.00014
#: compressed-tensors' dequantizer with transformers' loader putting the tensors into the layer: INT4 parameters
#: per second (CPU: fitted, 127 M/s; CUDA: unmeasured, an estimate for elementwise arithmetic on the device), and
#: per module.
DEQUANTIZE_PARAMS_PER_SECOND = {"cpu": 127e6, "cuda": 20e9}
DEQUANTIZE_SECONDS_PER_MODULE = 0.0003
#: Calibration's cost per linear module and calibration batch beyond the compute term (its quantizers' Python,
#: in the forward that captures the next layer's inputs and in the calibrating one).
CALIBRATE_SECONDS_PER_MODULE_BATCH = 0.00071
#: The weight quantization error measured after calibration (``layer_error.py``: one fake-quant pass over the
#: layer's weights): per BF16 GiB (CUDA unmeasured, taken as export's) and per module.
ERROR_SECONDS_PER_GIB = {"cpu": 26.8, "cuda": 1.0}
ERROR_SECONDS_PER_MODULE = 0.00026
#: modelopt's export steps for a layer: per BF16 GiB (the NVFP4 packing; CUDA unmeasured) and per module.
EXPORT_SECONDS_PER_GIB = {"cpu": 47.5, "cuda": 1.0}
EXPORT_SECONDS_PER_MODULE = 0.0024
#: The shard writer and the resume commit: per exported GiB and per module.
WRITE_SECONDS_PER_GIB = 2.6
WRITE_SECONDS_PER_MODULE = 0.0001


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
    #: per decoder layer: bytes in the base's shards (INT4 packed), INT4 parameters, linear modules, export bytes
    read_bytes: list[int] = field(default_factory=list)
    int4_params: list[int] = field(default_factory=list)
    modules: list[int] = field(default_factory=list)
    layer_export_bytes: list[int] = field(default_factory=list)
    #: tensors of the base as a BF16 checkpoint would list them (an INT4 module's parts count once)
    tensors: int = 0
    #: bytes of the exported tensors' names, summed, and the number of exported tensors
    export_names: int = 0
    export_tensors: int = 0

    @property
    def weight_bytes(self) -> int:
        return sum(self.layer_bytes) + self.rest_bytes

    @property
    def largest_layer(self) -> int:
        return max(self.layer_bytes, default=0)

    @property
    def largest_index(self) -> int:
        """The decoder layer with the most BF16 bytes (the one the plan times)."""
        return max(range(len(self.layer_bytes)), key=self.layer_bytes.__getitem__, default=0)

    def of_largest(self, values: list[int]) -> int:
        return values[self.largest_index] if values else 0

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
    read: dict[int, int] = {}
    int4_of: dict[int, int] = {}
    modules: dict[int, int] = {}
    export_of: dict[int, int] = {}
    rest = export = tensors = export_names = export_tensors = 0
    int4 = False
    for name, tensor in base.tensors.items():
        found = _LAYER.match(name)
        index = int(found[2]) if found else -1
        read[index] = read.get(index, 0) + tensor.nbytes
        if is_int4_side_tensor(name, base.tensors):
            continue
        tensors += 1
        if name.endswith(".weight_packed"):
            int4 = True
            logical = tensor.numel * 8  # eight 4-bit values per int32
            bf16 = logical * 2
            exported = logical // 2 + logical // 16 + 8  # packed E2M1 + FP8 block scales + two F32 scalars
            module = name.removesuffix(".weight_packed")
            names = [module + suffix for suffix in NVFP4_SUFFIXES]
            int4_of[index] = int4_of.get(index, 0) + logical
        else:
            bf16 = exported = tensor.nbytes
            names = [name]
        name_bytes = sum(len(exported_name.encode()) for exported_name in names)
        exported += name_bytes + HEADER_BYTES_PER_TENSOR * len(names)  # their entries in the safetensors header
        export_names += name_bytes
        export_tensors += len(names)
        export += exported
        export_of[index] = export_of.get(index, 0) + exported
        if name.endswith(".weight_packed") or (name.endswith(".weight") and len(tensor.shape) == 2):
            modules[index] = modules.get(index, 0) + 1
        if found:
            layers[index] = layers.get(index, 0) + bf16
            if ".experts." in name:
                experts_of[index] = experts_of.get(index, 0) + bf16
        else:
            rest += bf16
    count = int(text.get("num_hidden_layers", 0) or 0) or len(layers)
    per_layer = [layers.get(i, 0) for i in range(max(count, len(layers)))]
    experts = int(text.get("n_routed_experts", 0) or text.get("num_local_experts", 0) or 0)
    indices = range(len(per_layer))
    return Shape(
        per_layer, rest, export, int4, int(text.get("hidden_size", 0) or 0), experts,
        [experts_of.get(i, 0) for i in indices], [read.get(i, 0) for i in indices],
        [int4_of.get(i, 0) for i in indices], [modules.get(i, 0) for i in indices],
        [export_of.get(i, 0) for i in indices], tensors, export_names, export_tensors,
    )  # fmt: skip


@dataclass(frozen=True)
class Estimate:
    """One mode's predicted needs on one target."""

    mode: str
    device_bytes: int  # peak per device (per GPU; the host itself on a CPU run)
    host_bytes: int
    disk_bytes: int
    seconds_per_layer: float | None
    devices_needed: int | None  # GPUs of the target's model a run needs (None: does not fit any number)
    #: layerwise: predicted seconds of each part of the largest layer (``layer_part_seconds``)
    part_seconds: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "device_gib": round(self.device_bytes / GIB, 2),
            "host_gib": round(self.host_bytes / GIB, 2),
            "disk_gib": round(self.disk_bytes / GIB, 2),
            "device_bytes": self.device_bytes,
            "host_bytes": self.host_bytes,
            "disk_bytes": self.disk_bytes,
            "seconds_per_layer": self.seconds_per_layer,
            "part_seconds": self.part_seconds,
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
            "host_budget_bytes": self.host_budget,
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
            timing = "" if seconds is None else f", ~{_seconds(seconds)} per layer"
            if est.part_seconds:
                timing += (
                    " (" + ", ".join(f"{part} {_seconds(value)}" for part, value in est.part_seconds.items()) + ")"
                )
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


def _seconds(value: float) -> str:
    return f"{value:,.{2 if value < 1 else 1 if value < 10 else 0}f} s"


def _devices(spans: bool, est: Estimate, per_gpu: float) -> int | None:
    """GPUs of ``per_gpu`` bytes a mode needs: enough to hold it for a mode that spans them, else one that does."""
    if spans:
        return max(1, math.ceil(est.device_bytes / per_gpu)) if per_gpu else None
    return 1 if est.device_bytes <= per_gpu else None


def activation_bytes(shape: Shape, tokens: int, batch: int, seq: int) -> int:
    """Cached inputs of ``tokens`` tokens for two layers at once, plus one batch's attention temporaries."""
    cached = INPUTS_HELD * tokens * shape.hidden * 2 * ACTIVATION_OVERHEAD
    return int(cached) + batch * seq * shape.hidden * 4 * 8


def resume_state_bytes(shape: Shape) -> int:
    """A layerwise run's resume state (``state.json``), at most: it names every exported tensor, a closed shard's
    once and the open shard's twice (with the pending file that holds it), and is rewritten beside its previous
    copy after every layer. Negligible at Kimi's widths; at hidden 64 the open shard is the whole export, and one
    copy of the state is about 40 % of the export's size (3.7 MiB beside a 9.8 MiB export at 6 layers)."""
    return 2 * (2 * shape.export_names + STATE_BYTES_PER_TENSOR * shape.export_tensors)


def rewrite_bytes(shape: Shape) -> int:
    """A shard being written beside the finished ones (safetensors writes a temporary file, then renames it)."""
    return min(shape.export_bytes, SHARD_BYTES)


def calibration_seconds(shape: Shape, kind: str, tokens: int) -> float | None:
    """Calibration seconds per layer with ``tokens`` tokens through the largest layer."""
    if not shape.layer_bytes:
        return None
    compute = SECONDS_PER_GIB_KTOK[kind] * shape.largest_layer / GIB * max(tokens, 1) / 1000
    return round(compute + SECONDS_PER_LAYER_PER_LAYER * len(shape.layer_bytes), 2)


def layer_part_seconds(shape: Shape, kind: str, tokens: int, batches: int = 1) -> dict[str, float]:
    """Seconds of each part of the largest layer in a layerwise run (``layerwise.PartTimes``), from its headers:
    bytes read / the read rate; INT4 parameters / the dequantize rate; the calibration formula (its module term
    per calibration batch: ``batches``); the error measurement and export per BF16 byte; write per exported
    byte. Each part also has a term per linear module (a model of many small experts is dominated by those).
    ``read_wait`` is what the loop waits for the read done ahead while the layer before calibrated, exported and
    wrote."""
    modules, bf16 = shape.of_largest(shape.modules), shape.largest_layer / GIB
    read = shape.of_largest(shape.read_bytes) / GIB * READ_SECONDS_PER_GIB + modules * READ_SECONDS_PER_MODULE
    dequantize = (
        shape.of_largest(shape.int4_params) / DEQUANTIZE_PARAMS_PER_SECOND[kind]
        + modules * DEQUANTIZE_SECONDS_PER_MODULE
    )
    calibrate = (
        calibration_seconds(shape, kind, tokens) or 0.0
    ) + modules * batches * CALIBRATE_SECONDS_PER_MODULE_BATCH
    error = bf16 * ERROR_SECONDS_PER_GIB[kind] + modules * ERROR_SECONDS_PER_MODULE
    export = bf16 * EXPORT_SECONDS_PER_GIB[kind] + modules * EXPORT_SECONDS_PER_MODULE
    exported = shape.of_largest(shape.layer_export_bytes) / GIB
    write = exported * WRITE_SECONDS_PER_GIB + modules * WRITE_SECONDS_PER_MODULE
    parts = {
        "read": read, "dequantize": dequantize, "calibrate": calibrate, "error": error, "export": export, "write": write
    }  # fmt: skip
    parts["read_wait"] = max(0.0, read - calibrate - error - export - write)
    return {part: round(value, 3) for part, value in parts.items()}


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
