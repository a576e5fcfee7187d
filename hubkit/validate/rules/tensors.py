"""HK6xx: the tensors of every module have the structure its precision requires."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import compress, product, repeat
from operator import attrgetter, is_not, itemgetter

from hubkit.checkpoint.modules import LEFTOVER_SUFFIXES, NVFP4_SCALES
from hubkit.checkpoint.safetensors_header import TensorInfo
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check
from hubkit.validate.exclusions import format_ranges, group_names
from hubkit.validate.rules.exclusions import expert_groups, expert_rows

NVFP4_TENSORS = ("weight", *NVFP4_SCALES)
NVFP4_DTYPES = {"weight": "U8", "weight_scale": "F8_E4M3", "weight_scale_2": "F32", "input_scale": "F32"}
PLAIN_DTYPES = {"BF16", "F16", "F32"}
_dtype_of = attrgetter("dtype")
_shape_of = attrgetter("shape")  # never None once a header is read


def _group_size(ctx: Context) -> int:
    quant = (ctx.checkpoint.quant_config or {}).get("quantization")
    size = quant.get("group_size") if isinstance(quant, dict) else None
    return size if type(size) is int and size > 0 else int(ctx.profile.quantization.get("group_size", 16))


def _quantized_of_kind(ctx: Context, kind: str) -> dict[str, TensorInfo]:
    """Module -> its ``kind`` tensor, for the NVFP4 modules that have one."""
    found = ctx.modules.of_kind(kind)
    if kind != "weight":
        return found  # only NVFP4 modules carry NVFP4 scales
    return {module: found[module] for module in ctx.modules.quantized & found.keys()}


def _about(ctx: Context, tensor: str, message: str) -> Issue:
    """A finding about one tensor, placed in the shard that stores it."""
    return Issue(message, ctx.checkpoint.shard_of.get(tensor), tensor)


def _sorted_items(found: dict[str, TensorInfo]) -> list[tuple[str, TensorInfo]]:
    return sorted(found.items(), key=itemgetter(0))


@check(
    "HK601", "nvfp4-incomplete", Severity.ERROR, requires=["tensors"],
    what="Every NVFP4 module has weight, weight_scale, weight_scale_2 and input_scale.",
    why="vLLM allocates all four for an NVFP4 Linear; a missing one fails the load or leaves scales uninitialised.",
)  # fmt: skip
def nvfp4_incomplete(ctx: Context) -> Iterator[Issue]:
    modules = ctx.modules
    if modules.nvfp4_complete:
        return
    for kind in NVFP4_TENSORS:
        for line in group_names(modules.quantized - modules.of_kind(kind).keys()):
            yield Issue(f"NVFP4 modules without {kind}: {line}")


@check(
    "HK602", "nvfp4-dtype", Severity.ERROR,
    what="NVFP4 tensors have their dtypes: weight U8, weight_scale F8_E4M3, weight_scale_2 and input_scale F32.",
    why="Kernels reinterpret the bytes by these dtypes; any other dtype is a different format.",
)  # fmt: skip
def nvfp4_dtype(ctx: Context) -> Iterator[Issue]:
    modules = ctx.modules
    for kind, wanted in NVFP4_DTYPES.items():
        if kind == "weight" and modules.nvfp4_complete:
            continue  # every NVFP4 module is one with a packed (U8) weight
        if kind == "weight":
            dtypes = set(map(_dtype_of, _quantized_of_kind(ctx, kind).values()))
        else:
            dtypes = modules.dtypes(kind)
        if dtypes <= {wanted}:
            continue
        for module, tensor in _sorted_items(_quantized_of_kind(ctx, kind)):
            if tensor.dtype != wanted:
                yield _about(ctx, f"{module}.{kind}", f"{kind} is {tensor.dtype}; NVFP4 needs {wanted}")


@check(
    "HK603", "nvfp4-shape", Severity.ERROR,
    what="weight is [out, in/2], weight_scale is [out, in/group] and the two global scales are 0-d.",
    why="A wrong shape means wrong packing or blocking: the engine fails to load or computes garbage.",
)  # fmt: skip
def nvfp4_shape(ctx: Context) -> Iterator[Issue]:
    group = _group_size(ctx)
    all_weights = ctx.modules.of_kind("weight")
    scales = ctx.modules.of_kind("weight_scale")
    quantized = ctx.modules.quantized
    if ctx.modules.nvfp4_complete:
        weights = all_weights.values()
        dims = set(map(len, map(_shape_of, compress(weights, map("U8".__eq__, map(_dtype_of, weights))))))
    else:
        dims = set(map(len, map(_shape_of, compress(all_weights.values(), map(quantized.__contains__, all_weights)))))
    if dims - {2}:
        for module in sorted(quantized & all_weights.keys()):
            weight = all_weights[module]
            if len(weight.dims) != 2:
                yield _about(ctx, f"{module}.weight", f"weight has shape {list(weight.dims)}; NVFP4 weights are 2-D")
    paired_weights = list(map(all_weights.get, scales))
    paired_scales = list(scales.values())
    if None in paired_weights:  # a scale without a weight: HK601 reports it
        has_weight = list(map(is_not, paired_weights, repeat(None)))
        paired_weights = list(compress(paired_weights, has_weight))
        paired_scales = list(compress(paired_scales, has_weight))
    weight_shapes = list(map(_shape_of, paired_weights))
    scale_shapes = list(map(_shape_of, paired_scales))
    wanted = _ScaleShapes(group)
    if any(wanted[w] != s for w, s in set(zip(weight_shapes, scale_shapes, strict=True))):
        for module, scale in _sorted_items(scales):
            paired = all_weights.get(module)
            needed = None if paired is None else wanted[paired.dims]
            if paired is not None and scale.dims != needed:
                shown = list(needed) if needed else f"whole groups of {group} (weight {list(paired.dims)})"
                yield _about(ctx, f"{module}.weight_scale",
                             f"weight_scale is {list(scale.dims)} but weight {list(paired.dims)} with group {group} needs {shown}")  # fmt: skip
    for kind in ("weight_scale_2", "input_scale"):
        found = ctx.modules.of_kind(kind)
        if ctx.modules.shapes(kind) <= {()}:
            continue
        for module, tensor in _sorted_items(found):
            if tensor.dims != ():
                yield _about(ctx, f"{module}.{kind}", f"{kind} has shape {list(tensor.dims)}; it must be a 0-d scalar")


class _ScaleShapes(dict[tuple[int, ...], tuple[int, ...] | None]):
    """Packed weight shape -> the block-scale shape it needs (None when the row is not whole groups)."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def __missing__(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        value = None
        if len(shape) == 2 and (shape[1] * 2) % self.group == 0:
            value = (shape[0], shape[1] * 2 // self.group)
        self[shape] = value
        return value


@check(
    "HK604", "excluded-but-quantized", Severity.ERROR,
    what="Modules the exclusion list (or the engine) keeps unquantized carry plain BF16/F16/F32 weights and no scales.",
    why="The engine builds them as plain Linears and cannot load packed NVFP4 data into them.",
)  # fmt: skip
def excluded_but_quantized(ctx: Context) -> Iterator[Issue]:
    names = ctx.modules.names
    excluded = set(ctx.exclusions.excluded) if ctx.exclusions is not None else set()
    kept_plain = excluded | ctx.never_quantized_modules
    bad = [names[i] for i in sorted(ctx.quantized_modules & kept_plain)]
    for line in group_names(bad):
        yield Issue(f"excluded from quantization but stored as NVFP4: {line}")
    for i in sorted(excluded - set(ctx.quantized_modules)):
        weight = ctx.modules.get(names[i], "weight")
        if weight is not None and weight.dtype not in PLAIN_DTYPES:
            yield _about(ctx, f"{names[i]}.weight", f"excluded module's weight is {weight.dtype}; expected BF16")


@check(
    "HK605", "unexcluded-bf16-linear", Severity.ERROR, requires=["tensors"],
    what="Every Linear that the exclusion list does not cover is quantized.",
    why="vLLM builds an uncovered Linear as NVFP4 and fails to load BF16 data into it.",
)  # fmt: skip
def unexcluded_bf16_linear(ctx: Context) -> Iterator[Issue]:
    if ctx.exclusions is None:
        return
    excluded, quantized = ctx.exclusions.excluded, ctx.quantized_modules
    names = ctx.modules.names
    bad = [names[i] for i in ctx.linear_modules if i not in excluded and i not in quantized]
    for line in group_names(bad):
        yield Issue(f"BF16 but not excluded, so engines expect NVFP4: {line}")


@check(
    "HK606", "leftover-tensors", Severity.ERROR,
    what="No compressed-tensors leftovers (weight_packed, weight_shape) or modelopt internals (_amax, _scale) remain.",
    why="They mean a half-converted export; engines either fail on them or ignore modules that were never converted.",
)  # fmt: skip
def leftover_tensors(ctx: Context) -> Iterator[Issue]:
    found: dict[str, list[str]] = {}
    for suffix, modules in ctx.modules.by_suffix.items():
        if suffix in LEFTOVER_SUFFIXES or suffix.endswith("_amax"):
            found[suffix] = sorted(modules)
    for suffix, names in sorted(found.items()):
        for line in group_names(names):
            yield Issue(f"leftover '{suffix}' tensors: {line}")


@check(
    "HK607", "quantized-count", Severity.ERROR, requires=["config", "tensors"],
    what="The number of NVFP4 modules equals the profile's expectation derived from the config.",
    why="A shortfall means experts were dropped (tied-weight dedup) or skipped by the recipe.",
)  # fmt: skip
def quantized_count(ctx: Context) -> Iterator[Issue]:
    try:
        expected = ctx.profile.expected_quantized_count(ctx.checkpoint.text_config)
    except KeyError as missing:
        yield Issue(f"config has no integer {missing} to derive the expected module count from", "config.json")
        return
    actual = len(ctx.quantized_modules)
    if expected is not None and actual != expected:
        formula = ctx.profile.modules.get("expected_quantized_count")
        yield Issue(f"{actual:,} NVFP4 modules, but {formula} = {expected:,}")


@check(
    "HK608", "expert-incomplete", Severity.ERROR, requires=["tensors"],
    what="Every MoE block has all its routed experts, and every expert all its projections.",
    why="A missing expert is a hole the router still sends tokens to.",
)  # fmt: skip
def expert_incomplete(ctx: Context) -> Iterator[Issue]:
    configured = ctx.checkpoint.text_config.get("n_routed_experts")
    projections = set(ctx.profile.modules.get("expert_projections", []))
    rows = expert_rows(ctx)
    if type(configured) is int and 0 <= configured <= len(rows) and projections:  # the whole grid, at once
        found = set(map(itemgetter(1, 2, 3), rows))
        expected = set(product(set(map(itemgetter(1), rows)), map(str, range(configured)), projections))
        if found == expected:
            return
    for moe, experts in sorted(expert_groups(ctx).items()):
        count = configured if type(configured) is int else max(experts) + 1
        missing, ranges = _absent(sorted(experts), count)
        if missing:
            yield Issue(f"{moe}.experts: {missing:,} of {count:,} experts missing ({ranges})")
        partial = sorted(e for e, found in experts.items() if projections and set(found) != projections)
        if partial:
            yield Issue(
                f"{moe}.experts: {len(partial)} experts lack projections of {sorted(projections)} "
                f"(experts {format_ranges(partial)})"
            )


def _absent(present: list[int], count: int, shown: int = 20) -> tuple[int, str]:
    """How many of ``range(count)`` are not in the sorted ``present``, and the first ``shown`` gaps as
    ranges; from the gaps alone, so a config claiming 10**12 experts costs nothing."""
    inside = [e for e in present if 0 <= e < count]
    gaps: list[str] = []
    expected = 0
    for number in [*inside, count]:
        if number > expected:
            gaps.append(str(expected) if number == expected + 1 else f"{expected}-{number - 1}")
        expected = number + 1
    text = ",".join(gaps[:shown]) + (f",… ({len(gaps):,} gaps)" if len(gaps) > shown else "")
    return max(count, 0) - len(inside), text


@check(
    "HK609", "kv-scale-shape", Severity.ERROR,
    what="KV-cache scales (k_scale, v_scale), when present, are 0-d F32.",
    why="vLLM loads them as per-tensor FP8 scales; another shape or dtype fails the load.",
)  # fmt: skip
def kv_scale_shape(ctx: Context) -> Iterator[Issue]:
    for kind in ("k_scale", "v_scale"):
        for module, tensor in _sorted_items(ctx.modules.of_kind(kind)):
            if tensor.dtype != "F32" or tensor.dims != ():
                yield _about(ctx, f"{module}.{kind}", f"{tensor.dtype} {list(tensor.dims)}; KV scales are 0-d F32")
