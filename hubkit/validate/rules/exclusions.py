"""HK5xx: the exclusion list, read the way vLLM reads it, against the reference and the profile."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from itertools import compress
from operator import itemgetter, not_

from hubkit.checkpoint.model import CONFIG, QUANT_CONFIG
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check
from hubkit.validate.exclusions import group_names


def _names(ctx: Context, indices: frozenset[int] | set[int]) -> list[str]:
    names = ctx.modules.names
    return [names[i] for i in sorted(indices)]


@check(
    "HK501", "exclusion-matches-nothing", Severity.ERROR, requires=["tensors"],
    what="Every exclusion pattern matches at least one module of the checkpoint (by vLLM's matching rules).",
    why="A pattern that matches nothing excludes nothing: modules meant to stay BF16 get quantized by the engine "
    "(the early Kimi-K2.5 export with 'language_model.layers.*' names broke engines this way).",
)  # fmt: skip
def exclusion_matches_nothing(ctx: Context) -> Iterator[Issue]:
    reading = ctx.exclusions
    if reading is None:
        return
    file, key_path = _exclusion_list_source(ctx)
    position = {pattern: i for i, pattern in reversed(list(enumerate(reading.patterns)))}
    for pattern in reading.unmatched():
        hint = ""
        if pattern.startswith("language_model.layers."):
            hint = " (legacy name: the modules are language_model.model.layers.*)"
        line = ctx.checkpoint.line_of(file, *key_path, position[pattern])
        yield Issue(f"exclusion '{pattern}' matches no module{hint}", file, line=line)


def _exclusion_list_source(ctx: Context) -> tuple[str, tuple[str, ...]]:
    """Which file (and key path) the checkpoint's exclusion list was read from."""
    quant = (ctx.checkpoint.quant_config or {}).get("quantization")
    if isinstance(quant, dict) and isinstance(quant.get("exclude_modules"), list):
        return QUANT_CONFIG, ("quantization", "exclude_modules")
    return CONFIG, ("quantization_config", "ignore")


def _linear_exclusions(ctx: Context) -> tuple[set[int], set[int]] | None:
    here, there = ctx.exclusions, ctx.reference_exclusions
    if here is None or there is None:
        return None
    linear = set(ctx.linear_modules)
    return linear & here.excluded, linear & there.excluded


@check(
    "HK502", "quantized-but-reference-excludes", Severity.ERROR, needs=["reference"],
    what="No Linear is quantized under this exclusion list that the reference keeps BF16.",
    why="It would change the precision split the release claims (e.g. the K2.5 list quantizes shared experts and "
    "layer 0 of a K2.6-style export).",
)  # fmt: skip
def quantized_but_reference_excludes(ctx: Context) -> Iterator[Issue]:
    sets = _linear_exclusions(ctx)
    if sets is None:
        return
    here, there = sets
    for line in group_names(_names(ctx, there - here)):
        yield Issue(f"quantized here, BF16 in the reference: {line}", QUANT_CONFIG)


@check(
    "HK503", "excluded-but-reference-quantizes", Severity.ERROR, needs=["reference"],
    what="No Linear is excluded (BF16) under this list that the reference quantizes.",
    why="The release would be larger and slower than the reference it claims to match.",
)  # fmt: skip
def excluded_but_reference_quantizes(ctx: Context) -> Iterator[Issue]:
    sets = _linear_exclusions(ctx)
    if sets is None:
        return
    here, there = sets
    for line in group_names(_names(ctx, here - there)):
        yield Issue(f"BF16 here, quantized in the reference: {line}", QUANT_CONFIG)


@check(
    "HK504", "exclusion-wording-differs", Severity.INFO, needs=["reference"],
    what="Reports exclusion entries that differ from the reference's but change no module's precision.",
    why="Lists differ by modelopt version (a newer one adds embed_tokens); only the meaning matters.",
)  # fmt: skip
def exclusion_wording_differs(ctx: Context) -> Iterator[Issue]:
    sets = _linear_exclusions(ctx)
    if sets is None or sets[0] != sets[1] or ctx.reference is None or ctx.exclusions is None:
        return
    ours, theirs = set(ctx.exclusions.patterns), set(ctx.reference.exclude_modules)
    if ours != theirs:
        yield Issue(
            f"entries only here {sorted(ours - theirs)[:5]}, only in the reference {sorted(theirs - ours)[:5]}; "
            "the set of quantized modules is the same",
            QUANT_CONFIG,
        )


@check(
    "HK505", "profile-precision", Severity.ERROR, requires=["tensors"],
    what="Exactly the modules the profile names are NVFP4 (for kimi-k2-nvfp4: the routed experts).",
    why="The precision split is what the release promises; anything else changes accuracy or loadability.",
)  # fmt: skip
def profile_precision(ctx: Context) -> Iterator[Issue]:
    pattern = ctx.profile.quantized_pattern
    if pattern is None:
        return
    expected = ctx.modules.matching(pattern).intersection(ctx.linear_modules)
    actual = ctx.quantized_modules
    for line in group_names(_names(ctx, actual - expected)):
        yield Issue(f"NVFP4 here, BF16 in profile {ctx.profile.name}: {line}")
    for line in group_names(_names(ctx, expected - actual)):
        yield Issue(f"BF16 here, NVFP4 in profile {ctx.profile.name}: {line}")


def expert_rows(ctx: Context) -> list[tuple[int, str, str, str]]:
    """``(module index, MoE block, expert number as written, projection)`` for every routed expert module,
    from the profile's expert pattern."""
    pattern = ctx.profile.expert_pattern
    if pattern is None:
        return []
    return ctx.memo("expert_rows", lambda: ctx.modules.match_groups(pattern, "moe", "expert", "proj"))


def expert_groups(ctx: Context) -> dict[str, dict[int, dict[str, int]]]:
    """MoE block -> expert index -> projection -> module index."""

    def compute() -> dict[str, dict[int, dict[str, int]]]:
        groups: dict[str, dict[int, dict[str, int]]] = {}
        for i, moe, expert, projection in expert_rows(ctx):
            groups.setdefault(moe, {}).setdefault(int(expert), {})[projection] = i
        return groups

    return ctx.memo("expert_groups", compute)


@check(
    "HK506", "fused-mixed-precision", Severity.ERROR, requires=["tensors"],
    what="Modules an engine fuses share one precision: gate/up, q_a/kv_a, q/k/v, and all experts of one MoE block.",
    why="vLLM raises 'Detected some but not all shards ... are quantized' and refuses to load.",
)  # fmt: skip
def fused_mixed_precision(ctx: Context) -> Iterator[Issue]:
    excluded = ctx.exclusions.excluded if ctx.exclusions is not None else frozenset()
    by_last = ctx.modules.by_last
    for label, state in (("quantized", ctx.quantized_modules), ("excluded", excluded)):
        for group in ctx.profile.fused_groups:
            inside: set[str] = set()  # parents with some member in this state
            outside: set[str] = set()  # parents with some member present but not in it
            for member in group:
                parents = by_last.get(member, {})
                flags = list(map(state.__contains__, parents.values()))
                inside.update(compress(parents, flags))
                outside.update(compress(parents, map(not_, flags)))
            for stem in sorted(inside & outside):
                which = [m for m in group if by_last.get(m, {}).get(stem, -1) in state]
                yield Issue(f"{stem}.{{{','.join(group)}}}: only {', '.join(which)} {label}")
    rows = expert_rows(ctx)
    members = list(map(itemgetter(0), rows))
    blocks = list(map(itemgetter(1), rows))
    for label, state in (("quantized", ctx.quantized_modules), ("excluded", excluded)):
        if state.issuperset(members) or state.isdisjoint(members):
            continue  # all experts or none in this state: no block is split
        in_state = Counter(compress(blocks, map(state.__contains__, members)))
        sizes = Counter(blocks)
        for moe, count in in_state.items():
            if count < sizes[moe]:
                yield Issue(f"{moe}.experts: {count:,} of {sizes[moe]:,} expert projections {label}")
