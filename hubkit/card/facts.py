"""Facts a card states, derived from the checkpoint (and provenance, manifest) rather than typed by hand."""

from __future__ import annotations

import json
import re
from bisect import bisect_left
from itertools import compress, repeat
from math import prod
from operator import add, attrgetter, methodcaller, mul
from typing import Any

from hubkit.checkpoint.model import RECORD_DIR, Checkpoint
from hubkit.checkpoint.modules import ModuleTable
from hubkit.records import RECORD_LIMIT

_shape_of = attrgetter("shape")
_dtype_of = attrgetter("dtype")
SCALE_NAMES = frozenset({"weight_scale", "weight_scale_2", "input_scale", "k_scale", "v_scale"})
FAMILY_NAMES = {"deepseek_v3": "DeepSeek-V3", "kimi_k2": "Kimi-K2", "qwen3_moe": "Qwen3-MoE", "llama": "Llama"}
PROVENANCE = f"{RECORD_DIR}/provenance.json"
SMOKE = f"{RECORD_DIR}/smoke.json"


def parameter_counts(modules: ModuleTable, experts_per_token: int, experts: int) -> tuple[int, int]:
    """(total, activated) parameters from tensor shapes; packed NVFP4 weights count as their logical size.

    Activated counts what one text token runs through: everything but the routed experts, plus
    experts_per_token / experts of them; the vision tower and projector are not on that path.
    """
    total = expert = vision = 0
    for suffix, found in modules.by_suffix.items():
        if suffix in SCALE_NAMES:
            continue
        names, infos = list(found), list(found.values())
        per_byte = map(add, map("U8".__eq__, map(_dtype_of, infos)), repeat(1))  # a U8 byte holds two FP4 weights
        logical = list(map(mul, map(prod, map(_shape_of, infos)), per_byte))
        total += sum(logical)
        expert += sum(compress(logical, map(methodcaller("__contains__", ".mlp.experts."), names)))
        vision += sum(compress(logical, map(methodcaller("startswith", ("vision_tower.", "mm_projector.")), names)))
    activated = total - expert - vision + (expert * experts_per_token // experts if experts else 0)
    return total, activated


def approx(count: int) -> str:
    """Rounded down, as model sizes are quoted: ``1_027e9`` -> ``~1T``; ``32.86e9`` -> ``~32B``; ``1_234_567`` ->
    ``~1.2M``; ``238_864`` -> ``~238K`` (one decimal below ten of a unit, so a tiny model is never ``~0M``)."""
    for unit, size in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if count >= size:
            tenths = count * 10 // size
            if tenths >= 100 or tenths % 10 == 0:
                return f"~{tenths // 10}{unit}"
            return f"~{tenths // 10}.{tenths % 10}{unit}"
    return f"~{count}"


EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _expert_projections(modules: ModuleTable) -> list[str]:
    """The routed-expert projections that are quantized (packed), in the order a reader expects."""
    packed = modules.packed
    return [
        p
        for p in EXPERT_PROJECTIONS
        if any(".mlp.experts." in parent and f"{parent}.{p}" in packed for parent in modules.by_last.get(p, {}))
    ]


def _has_prefix(names: list[str], prefix: str) -> bool:
    """Whether a name of the sorted ``names`` starts with ``prefix`` (a binary search, not a scan)."""
    at = bisect_left(names, prefix)
    return at < len(names) and names[at].startswith(prefix)


def _bf16_families(patterns: list[str], first_dense: int) -> str:
    """The exclusion list in words, grouped by family, in the order a reader expects."""
    families = []
    checks = [
        ("self_attn", "attention (MLA)"),
        ("shared_experts", "shared experts"),
        (f"layers.{max(first_dense - 1, 0)}*", "the layer-0 dense MLP" if first_dense == 1 else "the dense MLP layers"),
        ("lm_head", "lm_head"),
    ]
    for needle, words in checks:
        if any(needle in p for p in patterns):
            families.append(words)
    if any(p.startswith(("vision_tower", "mm_projector")) for p in patterns):
        families.append("the vision tower / mm_projector")
    if len(families) > 1:
        return ", ".join(families[:-1]) + ", and " + families[-1]
    return families[0] if families else "nothing"


def _count(config: dict[str, Any], key: str) -> int:
    """A count the config states, or 0 when it states none (or something that is not a count)."""
    value = config.get(key)
    return value if type(value) is int and value >= 0 else 0


def _list(document: dict[str, Any], key: str) -> list[Any]:
    value = document.get(key)
    return value if isinstance(value, list) else []


def _table(document: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (document or {}).get(key)
    return value if isinstance(value, dict) else {}


def checkpoint_facts(checkpoint: Checkpoint, modules: ModuleTable | None = None) -> dict[str, Any]:
    """Everything a card states that the checkpoint itself can tell (``modules``: its module table, when
    the caller has built it already)."""
    config, text = checkpoint.config, checkpoint.text_config
    quant = _table(checkpoint.quant_config, "quantization")
    producer = _table(checkpoint.quant_config, "producer")
    layers = _count(text, "num_hidden_layers")
    experts = _count(text, "n_routed_experts")
    shared = _count(text, "n_shared_experts")
    per_token = _count(text, "num_experts_per_tok")
    first_dense = _count(text, "first_k_dense_replace")
    classes = config.get("architectures")
    architecture_class = str(classes[0]) if isinstance(classes, list) and classes else "unknown"
    family = FAMILY_NAMES.get(str(text.get("model_type")), str(text.get("model_type")))
    attention = "MLA attention" if "kv_lora_rank" in text else "attention"
    modules = modules or ModuleTable.from_checkpoint(checkpoint)
    names = modules.names
    vision = _has_prefix(names, "vision_tower.") and _has_prefix(names, "mm_projector.")
    expert_text = f"{experts} routed experts + {shared} shared expert{'s' if shared != 1 else ''}, " if experts else ""
    architecture = f"{family} ({attention}, {expert_text}{layers} layers)"
    if vision:
        architecture += ", wrapped with a vision tower + mm_projector"
    quantized = modules.packed
    projections = _expert_projections(modules)
    moe_layers = layers - first_dense
    factorisation = None
    if experts and projections and len(quantized) == moe_layers * experts * len(projections):
        factorisation = (
            f"{len(quantized):,} = {moe_layers} layers × {experts} experts × {len(projections)} projections "
            f"({', '.join(projections)})"
        )
    total, activated = parameter_counts(modules, per_token, experts)
    return {
        "architecture": architecture,
        "architecture_class": architecture_class,
        "model_type": text.get("model_type"),
        "layers": layers,
        "routed_experts": experts,
        "shared_experts": shared,
        "experts_per_token": per_token,
        "has_vision": vision,
        "total_params": total,
        "activated_params": activated,
        "params": f"{approx(total)} total / {approx(activated)} activated",
        "quantized_modules": len(quantized),
        "quantized_factorisation": factorisation or f"{len(quantized):,}",
        "quant_algo": quant.get("quant_algo"),
        "group_size": quant.get("group_size"),
        "kv_cache_dtype": quant.get("kv_cache_quant_algo") or "BF16",
        "bf16_families": _bf16_families([str(p) for p in _list(quant, "exclude_modules")], first_dense),
        "producer": f"{producer.get('name', 'modelopt')} {producer.get('version', '')}".strip(),
        "shards": len(checkpoint.shards),
        # the shards' data sections: the tensor bytes whenever the layout is sound (HK207, HK208)
        "total_size_gb": round(sum(h.data_length for h in checkpoint.shards.values() if h.fatal is None) / 10**9, 1),
        "trust_remote_code": "auto_map" in config,
    }


def _record(checkpoint: Checkpoint, path: str) -> dict[str, Any] | None:
    entry = checkpoint.files.get(path)
    # hubkit writes no record as a link, nor one that large
    if entry is None or entry.problem is not None or entry.is_symlink or entry.size > RECORD_LIMIT:
        return None
    try:
        data = json.loads(checkpoint.source.read_range(path, 0, entry.size))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def read_provenance(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The quantization record hubkit wrote beside the export, if any."""
    return _record(checkpoint, PROVENANCE)


def read_smoke(checkpoint: Checkpoint) -> dict[str, Any] | None:
    """The smoke-test record (load + generation on a GPU with vLLM), only when it passed."""
    record = _record(checkpoint, SMOKE)
    return record if record and record.get("ok") and record.get("gpu") and record.get("vllm") else None


def base_revision_words(provenance: dict[str, Any]) -> str | None:
    """Which base the export was made from, as the card states it after the base's name: its commit, else the
    local copy's fingerprint (None when the provenance does not say, or says it in a form hubkit does not write)."""
    revision = provenance.get("base_revision")
    if not isinstance(revision, dict):
        return None
    commit, fingerprint = revision.get("commit"), revision.get("fingerprint")
    if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit):
        return f" at commit {commit}"
    if isinstance(fingerprint, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", fingerprint):
        return f", from a local copy (fingerprint {fingerprint})"
    return None


def recipe_words(recipe: dict[str, Any]) -> str:
    """The recipe in words: weight scales, input scales, KV cache."""
    quantize = recipe.get("quantize") or {}
    algorithm = quantize.get("algorithm") or {}
    parts = []
    if isinstance(algorithm, dict) and algorithm.get("method") == "mse":
        parts.append("MSE-static weight scales" + (" via FP8 scale sweep" if algorithm.get("fp8_scale_sweep") else ""))
    elif algorithm:
        parts.append(f"{algorithm.get('method', algorithm) if isinstance(algorithm, dict) else algorithm} calibration")
    config = json.dumps(quantize.get("quant_cfg", ""))
    if '"type": "dynamic"' in config:
        parts.append("dynamic NVFP4 input scales")
    if "bmm_quantizer" in config:
        parts.append("FP8 KV cache")
    return "; ".join(parts)


def dataset_words(provenance: dict[str, Any]) -> tuple[str, list[str]]:
    """('cnn_dailymail + Nemotron-Post-Training-Dataset-v2', [hub dataset ids]) from the calibration record."""
    sources = (provenance.get("calibration") or {}).get("sources") or []
    specs = [str(s.get("spec")) for s in sources if isinstance(s, dict)]
    names = [re.sub(r"^.*/", "", spec) for spec in specs]
    hub = [spec for spec, s in zip(specs, sources, strict=True) if s.get("kind") == "hub"]
    return " + ".join(names), hub
