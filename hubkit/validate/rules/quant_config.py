"""HK4xx: hf_quant_config.json and config.json's quantization_config say what engines need, and agree."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hubkit.checkpoint.model import CONFIG, QUANT_CONFIG
from hubkit.validate.context import Context, _config_group_size
from hubkit.validate.engine import Issue, Severity, check

#: Keys vLLM requires in hf_quant_config.json["quantization"] for an NVFP4 checkpoint, with their types.
REQUIRED_KEYS: dict[str, type] = {
    "quant_algo": str,
    "kv_cache_quant_algo": str,
    "group_size": int,
    "exclude_modules": list,
}

#: modelopt's quant_algo for an export whose layers differ in format (listed in ``quantized_layers``).
MIXED = "MIXED_PRECISION"


def _quant_issue(ctx: Context, message: str, *path: str | int) -> Issue:
    """A finding about hf_quant_config.json, at the line of ``path`` (or of the nearest parent written)."""
    return Issue(message, QUANT_CONFIG, line=_line(ctx, QUANT_CONFIG, path))


def _config_issue(ctx: Context, message: str, *path: str | int) -> Issue:
    return Issue(message, CONFIG, line=_line(ctx, CONFIG, path))


def _line(ctx: Context, name: str, path: tuple[str | int, ...]) -> int | None:
    while path:
        line = ctx.checkpoint.line_of(name, *path)
        if line is not None:
            return line
        path = path[:-1]
    return None


def _quantization(ctx: Context) -> dict[str, Any] | None:
    quant = (ctx.checkpoint.quant_config or {}).get("quantization")
    return quant if isinstance(quant, dict) else None


def _config_block(ctx: Context) -> dict[str, Any] | None:
    block = ctx.checkpoint.config.get("quantization_config")
    return block if isinstance(block, dict) else None


@check(
    "HK401", "missing-quant-config", Severity.ERROR,
    what="hf_quant_config.json exists and has a 'quantization' object.",
    why="vLLM detects a modelopt checkpoint and reads its exclusions from this file.",
)  # fmt: skip
def missing_quant_config(ctx: Context) -> Iterator[Issue]:
    if QUANT_CONFIG not in ctx.checkpoint.files:
        yield Issue("hf_quant_config.json is missing; copy it from the modelopt export", QUANT_CONFIG)
    elif ctx.checkpoint.quant_config is not None and _quantization(ctx) is None:
        yield _quant_issue(ctx, "hf_quant_config.json has no 'quantization' object", "quantization")


@check(
    "HK402", "quant-config-keys", Severity.ERROR,
    what="quantization has quant_algo, kv_cache_quant_algo, group_size and exclude_modules with the right types.",
    why="vLLM refuses an NVFP4 checkpoint whose file lacks group_size, kv_cache_quant_algo or exclude_modules.",
)  # fmt: skip
def quant_config_keys(ctx: Context) -> Iterator[Issue]:
    quant = _quantization(ctx)
    if quant is None:
        return
    for key, kind in REQUIRED_KEYS.items():
        if key not in quant:
            yield _quant_issue(ctx, f"quantization.{key} is missing", "quantization")
        elif key == "kv_cache_quant_algo" and quant[key] is None and quant.get("quant_algo") == MIXED:
            continue  # modelopt writes null for a mixed-precision export whose KV cache stays unquantized
        elif type(quant[key]) is not kind:
            message = f"quantization.{key} must be a {kind.__name__}, not {type(quant[key]).__name__}"
            yield _quant_issue(ctx, message, "quantization", key)
    patterns = quant.get("exclude_modules")
    if isinstance(patterns, list) and not all(isinstance(p, str) for p in patterns):
        first = next(i for i, p in enumerate(patterns) if not isinstance(p, str))
        yield _quant_issue(
            ctx, "quantization.exclude_modules must hold only strings", "quantization", "exclude_modules", first
        )


@check(
    "HK403", "quant-settings", Severity.ERROR,
    what="quant_algo, group_size and kv_cache_quant_algo are the values the profile expects.",
    why="A release named NVFP4 must be NVFP4 with 16-element blocks; engines pick kernels by these values.",
)  # fmt: skip
def quant_settings(ctx: Context) -> Iterator[Issue]:
    quant = _quantization(ctx)
    if quant is None:
        return
    for key in ("quant_algo", "group_size", "kv_cache_quant_algo"):
        wanted = ctx.profile.quantization.get(key)
        if wanted is not None and key in quant and quant[key] != wanted:
            message = f"quantization.{key} is {quant[key]!r}; profile {ctx.profile.name} expects {wanted!r}"
            yield _quant_issue(ctx, message, "quantization", key)


@check(
    "HK404", "config-quantization-block", Severity.ERROR, requires=["config"],
    what="config.json has a top-level quantization_config with the profile's quant_method ('modelopt' by default).",
    why="transformers and vLLM read the quantization method from config.json first.",
)  # fmt: skip
def config_quantization_block(ctx: Context) -> Iterator[Issue]:
    if CONFIG not in ctx.checkpoint.documents:
        return
    block = _config_block(ctx)
    if block is None:
        yield Issue("config.json has no quantization_config; copy the block the export wrote", CONFIG)
    elif block.get("quant_method") != (wanted := ctx.profile.quantization.get("quant_method", "modelopt")):
        message = f"quantization_config.quant_method is {block.get('quant_method')!r}, expected {wanted!r}"
        yield _config_issue(ctx, message, "quantization_config", "quant_method")


@check(
    "HK405", "configs-disagree", Severity.ERROR, requires=["config"],
    what="config.json's quantization_config agrees with hf_quant_config.json (ignore list, algorithm, group size, KV cache).",
    why="Engines read one file or the other; when they disagree, which modules are quantized depends on the engine.",
)  # fmt: skip
def configs_disagree(ctx: Context) -> Iterator[Issue]:
    quant, block = _quantization(ctx), _config_block(ctx)
    if quant is None or block is None:
        return
    exclude, ignore = quant.get("exclude_modules"), block.get("ignore")
    if isinstance(exclude, list) and isinstance(ignore, list) and sorted(map(str, exclude)) != sorted(map(str, ignore)):
        only_ignore = sorted(set(map(str, ignore)) - set(map(str, exclude)))
        only_exclude = sorted(set(map(str, exclude)) - set(map(str, ignore)))
        yield _config_issue(
            ctx,
            f"quantization_config.ignore and exclude_modules differ: only in ignore {only_ignore[:5]}, "
            f"only in exclude_modules {only_exclude[:5]}",
            "quantization_config",
            "ignore",
        )
    if "quant_algo" in block and block.get("quant_algo") != quant.get("quant_algo"):
        yield _config_issue(
            ctx,
            f"quant_algo is {block.get('quant_algo')!r} here but {quant.get('quant_algo')!r} in {QUANT_CONFIG}",
            "quantization_config",
            "quant_algo",
        )
    group = _config_group_size(block)
    if group is not None and group != quant.get("group_size"):
        yield _config_issue(
            ctx,
            f"config_groups group_size is {group!r} but {QUANT_CONFIG} says {quant.get('group_size')!r}",
            "quantization_config",
            "config_groups",
        )
    kv_algo, kv_scheme = quant.get("kv_cache_quant_algo"), block.get("kv_cache_scheme")
    if kv_algo == "FP8" and not (isinstance(kv_scheme, dict) and kv_scheme.get("num_bits") == 8):
        message = "kv_cache_quant_algo is FP8 but kv_cache_scheme is not an 8-bit scheme"
        yield _config_issue(ctx, message, "quantization_config", "kv_cache_scheme")
    if kv_algo is None and isinstance(kv_scheme, dict):
        message = f"kv_cache_scheme is set but {QUANT_CONFIG} has no kv_cache_quant_algo"
        yield _config_issue(ctx, message, "quantization_config", "kv_cache_scheme")


def _compressed_tensors_blocks(document: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The key path of every compressed-tensors block (configs are at most MAX_JSON_DEPTH deep)."""
    if isinstance(document, dict):
        if document.get("quant_method") == "compressed-tensors" or document.get("format") == "pack-quantized":
            yield path
        for key, value in document.items():
            yield from _compressed_tensors_blocks(value, (*path, key))


@check(
    "HK406", "int4-leftover", Severity.ERROR, requires=["config"],
    what="No compressed-tensors (INT4 pack-quantized) block survives in config.json, in text_config or elsewhere.",
    why="An engine that sees it loads the NVFP4 weights as INT4 and fails or produces garbage.",
)  # fmt: skip
def int4_leftover(ctx: Context) -> Iterator[Issue]:
    config = ctx.checkpoint.config
    for where in _compressed_tensors_blocks(config):
        shown = ".".join(where) or "(top level)"
        yield _config_issue(ctx, f"a compressed-tensors quantization block remains at {shown}; delete it", *where)
    text = config.get("text_config")
    if isinstance(text, dict) and "quantization_config" in text and not any(_compressed_tensors_blocks(text)):
        message = "text_config.quantization_config must not exist (the block sits at the top level only)"
        yield _config_issue(ctx, message, "text_config", "quantization_config")


@check(
    "HK407", "producer-missing", Severity.WARNING,
    what="hf_quant_config.json records the producer (name and version).",
    why="Exclusion-list conventions and known export defects depend on the modelopt version.",
)  # fmt: skip
def producer_missing(ctx: Context) -> Iterator[Issue]:
    quant_config = ctx.checkpoint.quant_config
    if quant_config is None:
        return
    producer = quant_config.get("producer")
    if not (isinstance(producer, dict) and producer.get("name") and producer.get("version")):
        yield _quant_issue(ctx, "producer name and version are not recorded", "producer")


@check(
    "HK408", "text-model-type", Severity.ERROR, requires=["config"],
    what="text_config.model_type is what the profile expects (deepseek_v3 for Kimi NVFP4).",
    why="Engines choose the model class from it; the base's 'kimi_k2' must not survive the export.",
)  # fmt: skip
def text_model_type(ctx: Context) -> Iterator[Issue]:
    wanted = ctx.profile.quantization.get("text_model_type")
    text = ctx.checkpoint.config.get("text_config")
    if wanted and isinstance(text, dict) and text.get("model_type") != wanted:
        message = f"text_config.model_type is {text.get('model_type')!r}; expected {wanted!r}"
        yield _config_issue(ctx, message, "text_config", "model_type")


@check(
    "HK409", "reference-settings", Severity.ERROR, needs=["reference"],
    what="quant_algo, group_size and kv_cache_quant_algo equal the reference's.",
    why="A release that claims the reference's precision split must use its formats too.",
)  # fmt: skip
def reference_settings(ctx: Context) -> Iterator[Issue]:
    quant, reference = _quantization(ctx), ctx.reference
    assert reference is not None
    if quant is None:
        return
    for key, wanted in reference.settings.items():
        if wanted is not None and quant.get(key) != wanted:
            message = f"quantization.{key} is {quant.get(key)!r}; the reference has {wanted!r}"
            yield _quant_issue(ctx, message, "quantization", key)
