"""MXFP4 bases -> NVFP4 by the closed-form cast (``nvfp4-format.md`` §10): no model, no data, no GPU.

A base whose routed experts are compressed-tensors ``mxfp4-pack-quantized`` (E2M1 nibbles, one E8M0 exponent k_j
per 32 weights) becomes NVFP4 shard by shard: ``weight_scale_2 = 2^(k_max - 8)``, each 16-block's E4M3 scale
``2^(k_j - k_max + 8)``, nibbles copied. A block whose exponent lies more than 17 below k_max cannot be pinned
exactly and falls back to a data-derived scale (modelopt's numerics), counted apart. Projections engines fuse
(``w1``/``w3``, ``gate_proj``/``up_proj``) take k_max over both, wherever the index puts them. Every other
tensor is copied byte for byte. The numbers match modelopt's Kimi-K3 converter byte for byte.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from modelopt.torch.quantization.utils.numeric_utils import E2M1_MAX, E4M3_KMAX, E4M3_KMIN, E4M3_MAX, E8M0_BIAS
from safetensors import safe_open

from hubkit.checkpoint import load_checkpoint
from hubkit.checkpoint.model import CONFIG, INDEX, QUANT_CONFIG, Checkpoint
from hubkit.errors import HubkitError
from hubkit.quantize import interrupts
from hubkit.quantize.cast_plan import MXFP4_FORMAT
from hubkit.quantize.shards import DTYPE_NAMES, Entry, write_safetensors
from hubkit.records import ensure_folder, write_json

#: The default: experts cast to NVFP4, their inputs at a constant amax of 6 x 448 (input_scale 1.0).
DEFAULT_RECIPE = "mxfp4-nvfp4-cast"
#: E4M3 holds 2^k exactly for k in [E4M3_KMIN, E4M3_KMAX] = [-9, 8]: a block is bit-exact when k_max - k_j <= 17.
NVFP4_AMAX: float = E2M1_MAX * E4M3_MAX
PACKED, SCALE = ".weight_packed", ".weight_scale"
#: Projections an engine fuses into one GEMM: both get one weight_scale_2.
FUSED_PAIRS = (("w1", "w3"), ("gate_proj", "up_proj"))
EXPERT_BANK = re.compile(r"^(?P<bank>.+\.experts)\.\d+\.\w+$")
#: What modelopt's Kimi-K3 converter leaves unquantized, as it lists it (attention too: hubkit keeps it BF16).
EXCLUDED = (
    "*block_sparse_moe.gate*", "*block_sparse_moe.routed_expert_up_proj*", "*block_sparse_moe.routed_expert_down_proj*",
    "*block_sparse_moe.routed_expert_norm*", "*block_sparse_moe.shared_experts*", "*shared_experts*", "*self_attn*",
    "*_res_proj*", "*_res_norm*", "*layernorm*", "*mlp.gate", "language_model.model.layers.0.mlp.*",
    "language_model.lm_head", "lm_head", "vision_tower*", "mm_projector*",
)  # fmt: skip
# -0 (code 8) becomes +0, as modelopt's quantizer writes it: same value, same bytes as NVIDIA's converter.
_POSITIVE_ZERO = bytes((0 if b & 0xF == 8 else b & 0xF) | ((0 if b >> 4 == 8 else b >> 4) << 4) for b in range(256))


@dataclass(frozen=True)
class CastRecipe:
    """What the cast does beyond the weights: the experts' constant input amax; the recipe's name for provenance."""

    name: str
    input_amax: float = NVFP4_AMAX

    @property
    def input_scale(self) -> float:
        return self.input_amax / NVFP4_AMAX


def cast_recipe(name: str | None, quantize: dict[str, Any] | None) -> CastRecipe:
    """The cast a recipe asks for; a part it cannot honour (calibrated amax, attention or KV quantization,
    a non-NVFP4 expert format) raises HubkitError rather than being dropped."""
    if quantize is None:
        return CastRecipe(name or DEFAULT_RECIPE)
    input_amax: float | None = None
    weights = False
    for entry in quantize.get("quant_cfg") or []:
        if not isinstance(entry, dict) or not entry.get("enable", True) or not entry.get("cfg"):
            continue
        cfg, pattern = entry["cfg"], str(entry.get("quantizer_name", ""))
        if cfg.get("enable") is False:
            continue
        expert = "experts" in pattern or "block_sparse_moe" in pattern
        blocks = cfg.get("block_sizes") or {}
        nvfp4 = list(cfg.get("num_bits") or []) == [2, 1] and int(blocks.get(-1, blocks.get("-1", 0)) or 0) == 16
        if expert and pattern.endswith("weight_quantizer") and nvfp4:
            weights = True
        elif expert and pattern.endswith("input_quantizer") and nvfp4 and cfg.get("constant_amax") is not None:
            input_amax = float(cfg["constant_amax"])
        elif expert and pattern.endswith("input_quantizer") and nvfp4:
            raise HubkitError(
                f"recipe {name}: {pattern} needs calibration (no constant_amax); the MXFP4 cast runs without data: "
                "set constant_amax (2688 gives input_scale 1.0) or omit --recipe"
            )
        else:
            raise HubkitError(
                f"recipe {name}: the MXFP4 -> NVFP4 cast cannot honour {pattern} ({cfg.get('num_bits')}); "
                "it converts routed experts to NVFP4 only: remove that part or omit --recipe"
            )
    if not weights or input_amax is None or not input_amax > 0:
        raise HubkitError(
            f"recipe {name} does not set NVFP4 (block 16) routed-expert weights with a constant input amax; "
            "the MXFP4 cast needs both (or omit --recipe)"
        )
    return CastRecipe(name or DEFAULT_RECIPE, input_amax)


@dataclass
class TensorCount:
    blocks: int = 0
    lossless: int = 0
    fallback: int = 0
    zero: int = 0

    def add(self, other: TensorCount) -> None:
        self.blocks += other.blocks
        self.lossless += other.lossless
        self.fallback += other.fallback
        self.zero += other.zero


@dataclass
class CastReport:
    """Block counts (MXFP4 32-blocks) per NVFP4 tensor and in total, and the routed-expert banks written."""

    tensors: dict[str, TensorCount] = field(default_factory=dict)
    banks: set[str] = field(default_factory=set)
    total_size: int = 0

    def total(self) -> TensorCount:
        whole = TensorCount()
        for count in self.tensors.values():
            whole.add(count)
        return whole

    def summary(self) -> dict[str, Any]:
        whole = self.total()
        return {
            "tensors": len(self.tensors),
            "blocks": whole.blocks,
            "lossless_blocks": whole.lossless,
            "fallback_blocks": whole.fallback,
            "zero_blocks": whole.zero,
            "lossless_fraction": whole.lossless / whole.blocks if whole.blocks else 1.0,
            "tensors_with_fallback": sorted(name for name, c in self.tensors.items() if c.fallback),
        }


#: 2^k -> its E4M3 byte for k in [-9, 8] (subnormal below 2^-6).
_E4M3_POWER = {k: (k + 7) << 3 if k >= -6 else 1 << (k + 9) for k in range(E4M3_KMIN, E4M3_KMAX + 1)}


def mxfp4_modules(checkpoint: Checkpoint) -> list[str]:
    """Modules stored as MXFP4 (``weight_packed`` U8 with a U8 ``weight_scale``)."""
    tensors = checkpoint.tensors
    found = []
    for name, info in tensors.items():
        if name.endswith(PACKED) and info.dtype == "U8":
            module = name[: -len(PACKED)]
            scale = tensors.get(module + SCALE)
            if scale is not None and scale.dtype == "U8":
                found.append(module)
    return sorted(found)


def fused_partner(module: str) -> str | None:
    parent, _, proj = module.rpartition(".")
    for a, b in FUSED_PAIRS:
        if proj in (a, b):
            return f"{parent}.{b if proj == a else a}"
    return None


def k_max(e8m0: torch.Tensor) -> int | None:
    """The largest exponent of the non-zero blocks (None for an all-zero tensor)."""
    nonzero = e8m0[e8m0 > 0]
    return int(nonzero.max()) - E8M0_BIAS if nonzero.numel() else None


def block_scale_table(m: int) -> tuple[np.ndarray, np.ndarray]:
    """E8M0 byte -> the E4M3 byte of its NVFP4 block scale under ``weight_scale_2 = 2^m``, and which bytes are
    exact: 2^(k_j - m) inside E4M3's window; below it (and for all-zero blocks) modelopt's clamp to 2^-9, which
    every data-derived amax of such a block reaches (max nibble x 2^k_j / 6 / 2^m < 2^-9)."""
    table = np.full(256, _E4M3_POWER[E4M3_KMIN], dtype=np.uint8)
    exact = np.zeros(256, dtype=bool)
    for byte in range(1, 255):
        power = byte - E8M0_BIAS - m
        if power > E4M3_KMAX:
            table[byte] = 0x7E  # 448, the clamp (only when k_max was not this tensor's largest exponent)
        elif power >= E4M3_KMIN:
            table[byte], exact[byte] = _E4M3_POWER[power], True
    return table, exact


def cast_tensor(
    packed: torch.Tensor, e8m0: torch.Tensor, kmax: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TensorCount]:
    """One MXFP4 tensor -> NVFP4 (``weight``, ``weight_scale``, ``weight_scale_2``) with its block counts."""
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, NVFP4QTensor

    if packed.shape[:-1] != e8m0.shape[:-1] or packed.shape[-1] != e8m0.shape[-1] * 16:
        raise HubkitError(
            f"MXFP4 tensor of shape {list(packed.shape)} does not match its scale {list(e8m0.shape)} "
            "(one E8M0 exponent per 32 weights); the base is damaged"
        )
    exponents = e8m0.numpy()
    histogram = np.bincount(exponents.reshape(-1), minlength=256)
    if histogram[255]:
        raise HubkitError("an MXFP4 block scale is NaN (E8M0 0xFF); the base is damaged")
    m = kmax - E4M3_KMAX
    table, exact = block_scale_table(m)
    scale = torch.from_numpy(np.repeat(table[exponents], 2, axis=-1)).view(torch.float8_e4m3fn)
    scale_2 = torch.tensor(2.0**m, dtype=torch.float32)
    nibbles = bytearray(packed.numpy().tobytes().translate(_POSITIVE_ZERO))
    weight = torch.frombuffer(nibbles, dtype=torch.uint8).reshape(packed.shape)
    lossless = int(histogram[exact].sum()) + int(histogram[0])
    count = TensorCount(exponents.size, lossless, exponents.size - lossless, int(histogram[0]))
    if count.fallback:  # requantize the rows holding fallback blocks as modelopt does (their nibbles change)
        rows = torch.from_numpy(~exact[exponents] & (exponents > 0)).reshape(-1, e8m0.shape[-1]).any(dim=-1)
        flat_packed = packed.reshape(-1, packed.shape[-1])[rows]
        flat_scale = e8m0.reshape(-1, e8m0.shape[-1])[rows]
        shape = torch.Size((flat_packed.shape[0], flat_packed.shape[1] * 2))
        values = MXFP4QTensor(shape, torch.bfloat16, flat_packed).dequantize(
            dtype=torch.bfloat16, scale=flat_scale, block_sizes=[32]
        )
        requantized, _, _ = NVFP4QTensor.quantize(
            values, 16, scale.reshape(-1, scale.shape[-1])[rows], scale_2, try_tensorrt=False
        )
        weight.reshape(-1, weight.shape[-1])[rows] = requantized._quantized_data
    return weight, scale, scale_2, count


@dataclass(frozen=True)
class ShardJob:
    source: Path
    target: Path
    #: module -> the k_max its weight_scale_2 is pinned to (shared over fused pairs)
    kmax: dict[str, int]
    input_scale: float


def _data_start(path: Path) -> int:
    with open(path, "rb") as handle:
        return 8 + int.from_bytes(handle.read(8), "little")


def convert_shard(job: ShardJob, checkpoint: Checkpoint, shard: str) -> CastReport:
    """Write one output shard: its MXFP4 modules cast (a scale stored in another shard is read from there; the
    NVFP4 tensors go where the nibbles were), every other tensor copied from its byte range."""
    header = checkpoint.shards[shard]
    start = _data_start(job.source)
    report = CastReport()
    entries: list[Entry] = []
    with safe_open(str(job.source), framework="pt", device="cpu") as handle:
        for name, info in header.tensors.items():
            module = name.removesuffix(PACKED).removesuffix(SCALE)
            if module in job.kmax and name == module + SCALE:
                continue  # replaced by the NVFP4 scales, written beside the nibbles
            if module in job.kmax and name == module + PACKED:
                interrupts.check()
                weight, scale, scale_2, count = cast_tensor(
                    handle.get_tensor(name), _scale_of(module, checkpoint, job, shard, handle), job.kmax[module]
                )
                report.tensors[module + ".weight"] = count
                bank = EXPERT_BANK.match(module)
                report.banks.add(bank.group("bank") if bank else module)
                for suffix, tensor in (
                    (".weight", weight),
                    (".weight_scale", scale),
                    (".weight_scale_2", scale_2),
                    (".input_scale", torch.tensor(job.input_scale, dtype=torch.float32)),
                ):
                    entries.append(
                        Entry(module + suffix, DTYPE_NAMES[tensor.dtype], tuple(tensor.shape), tensor=tensor)
                    )
                continue
            begin, end = info.data_offsets
            entries.append(Entry(name, info.dtype, tuple(info.shape), source=(job.source, start + begin, start + end)))
    ensure_folder(job.target.parent)  # a shard the index keeps in a subfolder keeps its place
    write_safetensors(job.target, entries)
    report.total_size = sum(entry.nbytes for entry in entries)
    return report


def checkpoint_folder(source: Path, shard: str) -> Path:
    """The base folder, from one shard's path and its name in the index (which may hold a subfolder)."""
    return source.parents[len(Path(shard).parts) - 1]


def _scale_of(module: str, checkpoint: Checkpoint, job: ShardJob, shard: str, handle: Any) -> torch.Tensor:
    owner = checkpoint.shard_of[module + SCALE]
    if owner == shard:
        scale: torch.Tensor = handle.get_tensor(module + SCALE)
        return scale
    with safe_open(str(checkpoint_folder(job.source, shard) / owner), framework="pt", device="cpu") as other:
        scale = other.get_tensor(module + SCALE)
    return scale


def shared_kmax(checkpoint: Checkpoint, base: Path, modules: list[str], jobs: int) -> dict[str, int]:
    """k_max per module, the larger of a fused pair's two wherever their shards are (scales only are read)."""
    by_shard: dict[str, list[str]] = {}
    for module in modules:
        by_shard.setdefault(checkpoint.shard_of[module + SCALE], []).append(module)

    def read(item: tuple[str, list[str]]) -> dict[str, int | None]:
        shard, names = item
        with safe_open(str(base / shard), framework="pt", device="cpu") as handle:
            return {name: k_max(handle.get_tensor(name + SCALE)) for name in names}

    own: dict[str, int | None] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for found in pool.map(read, by_shard.items()):
            own.update(found)
    shared: dict[str, int] = {}
    for module in modules:
        partner = fused_partner(module)
        candidates = [own[module]] + ([own[partner]] if partner in own else [])
        present = [k for k in candidates if k is not None]
        shared[module] = max(present) if present else 0
    return shared


def run_cast(base: Path, staging: Path, recipe: CastRecipe, jobs: int, progress: Any = None) -> CastReport:
    """Cast the base's MXFP4 modules into ``staging``: shards, index, configs. Memory: the shards in flight."""
    checkpoint = load_checkpoint(str(base))
    broken = [h.file for h in checkpoint.shards.values() if h.fatal]
    if broken:
        raise HubkitError(f"the base's shard {broken[0]} cannot be read ({checkpoint.shards[broken[0]].fatal})")
    weight_map = (checkpoint.document(INDEX) or {}).get("weight_map")
    listed = {v for v in weight_map.values() if isinstance(v, str)} if isinstance(weight_map, dict) else set()
    if absent := sorted(listed - set(checkpoint.shards)):
        raise HubkitError(f"the base's index names {absent[0]}, which is not in the folder; download the base again")
    modules = mxfp4_modules(checkpoint)
    taken = [
        m + s for m in modules for s in (".weight", ".weight_scale_2", ".input_scale") if m + s in checkpoint.tensors
    ]
    if taken:
        raise HubkitError(f"the base has both {taken[0]} and MXFP4 weights for that module; it is not a clean base")
    if not modules:
        raise HubkitError("the base's config says mxfp4-pack-quantized but no tensor is MXFP4 (weight_packed U8)")
    kmax = shared_kmax(checkpoint, base, modules, jobs)
    shard_jobs = [
        (ShardJob(base / shard, staging / shard, kmax, recipe.input_scale), shard) for shard in checkpoint.shards
    ]

    def convert(item: tuple[ShardJob, str]) -> CastReport:
        result = convert_shard(item[0], checkpoint, item[1])
        if progress is not None:
            progress.update(1)
        return result

    report = CastReport()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for part in pool.map(convert, shard_jobs):
            report.tensors.update(part.tensors)
            report.banks |= part.banks
            report.total_size += part.total_size
    write_metadata(base, staging, checkpoint, report)
    return report


def exclusions(modules: Iterable[str]) -> list[str]:
    """modelopt's Kimi-K3 exclusion patterns (with their engine spellings) that name a module of this model:
    a pattern that matches nothing is a defect validate reports."""
    names = sorted(set(modules))
    return [
        alias
        for pattern in EXCLUDED
        for alias in module_aliases(pattern)
        if any(fnmatch.fnmatchcase(name, alias) or alias.strip("*") in name for name in names)
    ]


def quant_config(banks: Iterable[str], modules: Iterable[str], version: str) -> dict[str, Any]:
    """``hf_quant_config.json`` as modelopt writes it for nvidia/Kimi-K3-NVFP4 (routed experts NVFP4)."""
    layers: dict[str, dict[str, Any]] = {}
    for bank in sorted(banks):
        for alias in module_aliases(bank):
            layers[alias] = {"quant_algo": "NVFP4", "group_size": 16}
    excluded = exclusions(modules)
    return {
        "producer": {"name": "modelopt", "version": version},
        "quantization": {
            "quant_algo": "MIXED_PRECISION",
            "kv_cache_quant_algo": None,
            "group_size": 16,
            "quantized_layers": layers,
            "exclude_modules": list(dict.fromkeys(excluded)),
        },
    }


def module_aliases(name: str) -> list[str]:
    """Every prefix an engine may look a module up by: ``block_sparse_moe`` as ``mlp`` (SGLang), without
    ``language_model.`` (SGLang) or ``language_model.model.`` (vLLM)."""
    names = {name}
    if "block_sparse_moe" in name:
        names.add(name.replace("block_sparse_moe", "mlp"))
    for spelled in list(names):
        if spelled.startswith("language_model.model."):
            rest = spelled[len("language_model.model.") :]
            names |= {"model." + rest, rest}
    return sorted(names)


def write_metadata(base: Path, staging: Path, checkpoint: Checkpoint, report: CastReport) -> None:
    """Index, ``hf_quant_config.json`` and ``config.json`` (the MXFP4 block replaced by modelopt's mixed one)."""
    from modelopt import __version__ as modelopt_version
    from modelopt.torch.export.convert_hf_config import convert_hf_quant_config_format

    weight_map: dict[str, str] = {}
    for name, shard in checkpoint.shard_of.items():
        module = name.removesuffix(PACKED)
        if name == module + PACKED and module + ".weight" in report.tensors:
            for suffix in (".weight", ".weight_scale", ".weight_scale_2", ".input_scale"):
                weight_map[module + suffix] = shard
        elif name.removesuffix(SCALE) + ".weight" not in report.tensors or not name.endswith(SCALE):
            weight_map[name] = shard
    index = {"metadata": {"total_size": report.total_size}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(staging / INDEX, index)
    modules = {m for m in (n.rpartition(".")[0] for n in weight_map) if m + ".weight" not in report.tensors}
    hf_quant = quant_config(report.banks, modules, modelopt_version)
    write_json(staging / QUANT_CONFIG, hf_quant)
    config = json.loads(checkpoint.read_file(CONFIG))
    for holder in (config, config.get("text_config")):
        block = holder.get("quantization_config") if isinstance(holder, dict) else None
        if isinstance(block, dict) and block.get("format") == MXFP4_FORMAT:
            del holder["quantization_config"]
    block = convert_hf_quant_config_format(hf_quant)
    block["quant_method"] = "modelopt_mixed"  # engines take the mixed-precision path only under this name
    config["quantization_config"] = block
    write_json(staging / CONFIG, config)
