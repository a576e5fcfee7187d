"""``hubkit diff``: two checkpoints (local or on the Hub) compared by configs, exclusion meaning and tensors."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.validate.context import Context
from hubkit.validate.exclusions import group_names, read_exclusions
from hubkit.validate.profiles import choose_profile

SETTINGS = ("quant_algo", "group_size", "kv_cache_quant_algo")


def _settings(checkpoint: Checkpoint) -> dict[str, Any]:
    quant = _table(checkpoint.quant_config, "quantization")
    producer = _table(checkpoint.quant_config, "producer")
    text = checkpoint.text_config
    return {
        **{key: quant.get(key) for key in SETTINGS},
        "producer": producer.get("version"),
        "architectures": checkpoint.config.get("architectures"),
        "text_model_type": text.get("model_type"),
        "num_hidden_layers": text.get("num_hidden_layers"),
        "n_routed_experts": text.get("n_routed_experts"),
    }


def _table(document: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (document or {}).get(key)
    return value if isinstance(value, dict) else {}


def unreadable(checkpoint: Checkpoint) -> list[str]:
    """What of a checkpoint could not be read, so cannot be compared: files, configs, shard headers."""
    found = [f"{path} {problem}" for path, problem in checkpoint.problems.items()]
    found += [
        f"{name} {doc.error or 'is not a JSON object'}"
        for name, doc in sorted(checkpoint.documents.items())
        if not doc.usable and not doc.unreadable
    ]
    found += [
        f"{shard.file}: {shard.fatal}"
        for shard in checkpoint.shards.values()
        if shard.fatal is not None and shard.fatal_kind != "unreadable"
    ]
    return found


def diff_checkpoints(a: Checkpoint, b: Checkpoint) -> dict[str, Any]:
    """Differences of B against A, grouped by layer range rather than listed tensor by tensor; what either
    side could not read is listed, and such a pair is never called identical."""
    left, right = _settings(a), _settings(b)
    configs = [{"key": k, "a": left[k], "b": right[k]} for k in left if left[k] != right[k]]
    context = Context(a, choose_profile(a, None))
    linear = set(context.linear_modules)
    names = context.modules.names
    ours = read_exclusions(context.matcher, a.exclude_modules or []).excluded & linear
    theirs = read_exclusions(context.matcher, b.exclude_modules or []).excluded & linear
    exclusions = {
        "quantized_in_a_excluded_in_b": group_names(names[i] for i in sorted(theirs - ours)),
        "excluded_in_a_quantized_in_b": group_names(names[i] for i in sorted(ours - theirs)),
    }
    only_a = sorted(set(a.tensors) - set(b.tensors))
    only_b = sorted(set(b.tensors) - set(a.tensors))
    changed: dict[str, list[str]] = defaultdict(list)
    for name in sorted(set(a.tensors) & set(b.tensors)):
        ta, tb = a.tensors[name], b.tensors[name]
        if (ta.dtype, ta.dims) != (tb.dtype, tb.dims):
            changed[f"{ta.dtype} {list(ta.dims)} -> {tb.dtype} {list(tb.dims)}"].append(name)
    tensors = {
        "only_in_a": group_names(only_a),
        "only_in_b": group_names(only_b),
        "changed": [{"change": k, "tensors": group_names(v, limit=6)} for k, v in sorted(changed.items())],
    }
    broken = {"a": unreadable(a), "b": unreadable(b)}
    same = (
        not configs
        and not any(exclusions.values())
        and not only_a
        and not only_b
        and not changed
        and not any(broken.values())
    )
    return {
        "schema": 1,
        "a": a.location,
        "b": b.location,
        "identical": same,
        "configs": configs,
        "exclusions": exclusions,
        "tensors": tensors,
        "unreadable": broken,
    }


def render_diff(diff: dict[str, Any]) -> str:
    lines = [f"hubkit diff {diff['a']} {diff['b']}"]
    for side in ("a", "b"):
        lines += [f"  cannot read in {side.upper()}: {item}" for item in diff["unreadable"][side]]
    for item in diff["configs"]:
        lines.append(f"  config {item['key']}: {item['a']!r} -> {item['b']!r}")
    for key, title in (
        ("quantized_in_a_excluded_in_b", "quantized in A, BF16 in B"),
        ("excluded_in_a_quantized_in_b", "BF16 in A, quantized in B"),
    ):
        if diff["exclusions"][key]:
            lines.append(f"  {title}:")
            lines += [f"    {line}" for line in diff["exclusions"][key]]
    for key, title in (("only_in_a", "tensors only in A"), ("only_in_b", "tensors only in B")):
        if diff["tensors"][key]:
            lines.append(f"  {title}:")
            lines += [f"    {line}" for line in diff["tensors"][key]]
    for item in diff["tensors"]["changed"]:
        lines.append(f"  {item['change']}:")
        lines += [f"    {line}" for line in item["tensors"]]
    lines.append("IDENTICAL" if diff["identical"] else "DIFFERENT")
    return "\n".join(lines)
