"""``hubkit quantize``: base -> calibration -> modelopt PTQ -> export -> finished folder -> provenance -> validate.

The export is written to a hidden staging folder beside ``--out`` and renamed into place only when it is
complete, so an interrupted or failed run never leaves a folder that looks like a finished export.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hubkit import __version__
from hubkit.checkpoint.model import CONFIG, INDEX, QUANT_CONFIG, RECORD_DIR
from hubkit.errors import HubkitError
from hubkit.progress import progress_bar
from hubkit.validate.engine import Report, Severity
from hubkit.validate.options import ValidateOptions
from hubkit.validate.profiles import DEFAULT_PROFILE, load_profiles
from hubkit.validate.runner import validate

DEFAULT_RECIPE = "nvfp4-experts-mse"
PROVENANCE = f"{RECORD_DIR}/provenance.json"
STATE = f"{RECORD_DIR}/state.json"
#: Files of the base that an export must carry unchanged.
COPIED_FROM_BASE = ("*.py", "tokenizer*", "tiktoken.model", "*.tiktoken", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "chat_template.*", "generation_config.json")  # fmt: skip


@dataclass(frozen=True)
class QuantizeOptions:
    base: str
    out: Path
    profile: str | None = None
    recipe: str | None = None
    calib: tuple[str, ...] = ()
    calib_size: int = 512
    calib_seq: int = 512
    batch_size: int = 1
    device: str = "auto"
    max_gpu_memory: str | None = None
    seed: int = 1234
    keep_intermediate: bool = False
    progress: bool = True


@dataclass
class QuantizeResult:
    out: Path
    report: Report
    provenance: dict[str, Any] = field(default_factory=dict)


def base_folder(ref: str) -> Path:
    """A local base folder, or a Hub repo downloaded (resumably) to the standard cache."""
    if ref.startswith("hf://"):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        repo, _, revision = ref.removeprefix("hf://").partition("@")
        try:
            return Path(snapshot_download(repo, revision=revision or None))
        except (HfHubHTTPError, OSError, ValueError) as exc:
            raise HubkitError(f"cannot download {ref}: {exc}; check the name, your token and the network") from exc
    path = Path(ref)
    if not (path / CONFIG).is_file():
        raise HubkitError(f"{ref} is not a checkpoint folder (no config.json); pass the base model's folder")
    return path


def _int4_block(config: dict[str, Any]) -> dict[str, Any] | None:
    for block in (config.get("quantization_config"), (config.get("text_config") or {}).get("quantization_config")):
        if isinstance(block, dict) and block.get("format") == "pack-quantized":
            return block
    return None


def dequantize_int4(base: Path, target: Path) -> Path:
    """INT4 ``pack-quantized`` -> BF16, shard by shard, with compressed-tensors' own converter (resumable:
    a finished intermediate is reused by a rerun)."""
    done = target / RECORD_DIR / "dequantized"
    if done.is_file():
        return target
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer

    shutil.rmtree(target, ignore_errors=True)
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        convert_checkpoint(base, target, CompressedTensorsDequantizer(base), max_workers=1, device="cpu")
    _drop_int4_config(target / CONFIG)
    done.parent.mkdir(exist_ok=True)
    done.write_text("complete\n")
    return target


def _drop_int4_config(path: Path) -> None:
    config = _read_json(path)
    for holder in (config, config.get("text_config")):
        block = holder.get("quantization_config") if isinstance(holder, dict) else None
        if (
            isinstance(holder, dict)
            and isinstance(block, dict)
            and (not block or block.get("format") == "pack-quantized")
        ):
            del holder["quantization_config"]
    path.write_text(json.dumps(config, indent=2) + "\n")


def resolve_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise HubkitError("--device cuda but no CUDA device is visible; use --device cpu (tiny models only)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def prepare_out(out: Path) -> Path:
    """Refuse a folder that holds anything but an unfinished hubkit run; return the staging folder."""
    if out.exists() and any(out.iterdir()):
        state = _read_json(out / STATE)
        if state.get("status") == "complete":
            raise HubkitError(f"{out} already holds a complete export; pass a new --out folder")
        if not state:
            raise HubkitError(f"{out} is not empty; pass a new --out folder")
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted earlier run: start the stage again
    staging.mkdir(parents=True)
    return staging


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextmanager
def _stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)


def quantize(options: QuantizeOptions) -> QuantizeResult:
    """Run the whole quantization; user errors raise HubkitError before anything is written to ``out``."""
    import torch

    from hubkit.quantize.calibration import CalibrationSource, tokenize
    from hubkit.quantize.recipes import resolve_recipe

    timings: dict[str, float] = {}
    profiles = load_profiles()
    if options.profile and options.profile not in profiles:
        raise HubkitError(f"unknown profile '{options.profile}'; available: {', '.join(sorted(profiles))}")
    profile = profiles[options.profile or DEFAULT_PROFILE]
    with _stage(timings, "download"):
        base = base_folder(options.base)
    int4 = _int4_block(_read_json(base / CONFIG)) is not None
    device = resolve_device(options.device)
    recipe = resolve_recipe(options.recipe or str(profile.quantize.get("recipe", DEFAULT_RECIPE)))
    sources = [CalibrationSource.parse(spec) for spec in options.calib]
    if not sources:
        raise HubkitError("no calibration data; pass --calib FILE_OR_DATASET (repeatable)")
    tokenizer = _tokenizer(base)
    samples = [sample for source in sources for sample in source.records(options.calib_size)]
    batches = tokenize(tokenizer, samples, options.calib_seq)
    if not batches:
        raise HubkitError("the calibration sources gave no text to calibrate on")
    staging = prepare_out(options.out)
    intermediate = options.out.parent / f".{options.out.name}.bf16"
    try:
        with _stage(timings, "dequantize"):
            weights = dequantize_int4(base, intermediate) if int4 else base
        with _stage(timings, "load"):
            model = _load_model(weights, device, options.max_gpu_memory)
        from hubkit.quantize import cpu_fallback

        with cpu_fallback.active(force=device == "cpu") as fallback:
            with _stage(timings, "calibrate"):
                coverage = _calibrate(model, recipe.quantize, batches, options, torch)
            with _stage(timings, "export"):
                _export(model, staging)
        _finish(staging, base, profile.quantization.get("text_model_type"))
        _restore_base_dtypes(staging, base)
        provenance = _provenance(options, recipe, sources, batches, coverage, timings, device, fallback)
        provenance["base_format"] = "int4" if int4 else "bf16"
        (staging / RECORD_DIR).mkdir(exist_ok=True)
        (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        with _stage(timings, "validate"):
            report = validate(str(staging), ValidateOptions(profile=options.profile, base=str(base)))
        report.path = str(options.out)
        provenance["timings_s"] = timings
        (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
        status = "complete" if report.passed else "failed-validation"
        (staging / STATE).write_text(json.dumps({"status": status, "errors": report.count(Severity.ERROR)}) + "\n")
        if options.out.exists():
            shutil.rmtree(options.out)
        staging.rename(options.out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if int4 and not options.keep_intermediate:
        shutil.rmtree(intermediate, ignore_errors=True)
    return QuantizeResult(options.out, report, provenance)


def _tokenizer(base: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        remote = "auto_map" in _read_json(base / "tokenizer_config.json")
        return AutoTokenizer.from_pretrained(base, trust_remote_code=remote)
    except (OSError, ValueError, TypeError) as exc:
        raise HubkitError(f"cannot load the base's tokenizer ({exc}); the base needs its tokenizer files") from exc


def _load_model(base: Path, device: str, max_gpu_memory: str | None) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # Kimi and other wrapped models ship their modelling code beside the weights (auto_map): loading them
    # runs that code, as vLLM's --trust-remote-code does; hubkit only does so when the config asks for it.
    remote = "auto_map" in _read_json(base / CONFIG)
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "trust_remote_code": remote}
    if device == "cuda":  # shard over every visible GPU, as the ecosystem does (accelerate's device map)
        kwargs["device_map"] = "auto"
        if max_gpu_memory:
            kwargs["max_memory"] = {i: max_gpu_memory for i in range(torch.cuda.device_count())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: Any = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.eval()
    return model


def _calibrate(
    model: Any, quant_config: dict[str, Any], batches: list[list[int]], options: QuantizeOptions, torch: Any
) -> dict[str, Any]:
    import modelopt.torch.quantization as mtq

    from hubkit.quantize.coverage import ExpertCoverage

    torch.manual_seed(options.seed)
    text = getattr(model.config, "text_config", None) or model.config
    coverage = ExpertCoverage()
    experts = getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None)
    if experts:
        coverage.attach(model, int(experts), int(getattr(text, "num_experts_per_tok", 1)))
    device = next(model.parameters()).device
    tokens = sum(len(b) for b in batches)
    passes = {"count": 0}

    def forward_loop(m: Any) -> None:
        passes["count"] += 1
        with progress_bar(total=tokens, desc="calibrate", unit="tok", unit_scale=True, enabled=options.progress) as bar:
            for start in range(0, len(batches), options.batch_size):
                group = batches[start : start + options.batch_size]
                width = max(len(b) for b in group)
                ids = torch.tensor([b + [0] * (width - len(b)) for b in group], device=device)
                mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in group], device=device)
                with torch.no_grad():
                    m(input_ids=ids, attention_mask=mask)
                bar.update(sum(len(b) for b in group))
        coverage.detach()  # count routing of the first pass only

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # modelopt prints to stdout
        warnings.simplefilter("ignore")
        mtq.quantize(model, quant_config, forward_loop)
    summary = coverage.summary()
    summary["tokens"] = tokens
    return summary


def _export(model: Any, staging: Path) -> None:
    from modelopt.torch.export import export_hf_checkpoint

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, export_dir=staging)


def _finish(staging: Path, base: Path, text_model_type: str | None) -> None:
    """Make the folder look like the reference release: base side files, normalised config."""
    for pattern in COPIED_FROM_BASE:
        for item in base.glob(pattern):
            if item.is_file() and item.name not in (CONFIG, QUANT_CONFIG, INDEX):
                shutil.copy2(item, staging / item.name)
    config = _read_json(staging / CONFIG)
    text = config.get("text_config")
    if isinstance(text, dict):
        text.pop("quantization_config", None)
        if text_model_type:
            text["model_type"] = text_model_type
        (staging / CONFIG).write_text(json.dumps(config, indent=2) + "\n")


def _restore_base_dtypes(staging: Path, base: Path) -> None:
    """Give unquantized tensors back the base's dtype where loading upcast them (routers come back F32).

    The BF16 part of a release is the base's, bit for bit; a BF16 -> F32 -> BF16 round trip is exact.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from hubkit.checkpoint import load_checkpoint

    wanted = {"BF16": torch.bfloat16, "F16": torch.float16}
    base_tensors = load_checkpoint(str(base)).tensors
    export = load_checkpoint(str(staging))
    changed = False
    for shard, header in export.shards.items():
        recast = {
            name: wanted[base_tensors[name].dtype]
            for name, tensor in header.tensors.items()
            if tensor.dtype == "F32" and name in base_tensors and base_tensors[name].dtype in wanted
        }
        if recast:
            tensors = load_file(staging / shard)
            for name, dtype in recast.items():
                tensors[name] = tensors[name].to(dtype)
            save_file(tensors, staging / shard, metadata={"format": "pt"})
            changed = True
    index_path = staging / INDEX
    if changed and index_path.is_file():
        index = json.loads(index_path.read_text())
        index.setdefault("metadata", {})["total_size"] = load_checkpoint(str(staging)).total_tensor_bytes
        index_path.write_text(json.dumps(index, indent=2) + "\n")


def _versions() -> dict[str, Any]:
    import importlib.metadata as metadata

    found: dict[str, Any] = {"hubkit": __version__, "python": platform.python_version()}
    for package in ("nvidia-modelopt", "torch", "transformers", "compressed-tensors", "accelerate"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    version = str(found.get("nvidia-modelopt") or "")
    found["modelopt_commit"] = version.split("+g", 1)[1].split(".", 1)[0] if "+g" in version else None
    return found


def _provenance(
    options: QuantizeOptions,
    recipe: Any,
    sources: list[Any],
    batches: list[list[int]],
    coverage: dict[str, Any],
    timings: dict[str, float],
    device: str,
    fallback: bool,
) -> dict[str, Any]:
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []
    return {
        "schema": 1,
        "base": options.base,
        "versions": {**_versions(), "cuda": torch.version.cuda},
        "device": device,
        "gpus": gpus,
        "cpu_nvfp4_fallback": fallback,
        "recipe": {"name": recipe.name, "quantize": recipe.quantize},
        "calibration": {
            "sources": [{"spec": s.spec, "kind": s.kind} for s in sources],
            "calib_size": options.calib_size,
            "calib_seq": options.calib_seq,
            "batch_size": options.batch_size,
            "samples": len(batches),
            "seed": options.seed,
        },
        "coverage": coverage,
        "timings_s": timings,
        "environment": {k: os.environ[k] for k in ("CUDA_LAUNCH_BLOCKING", "CUDA_VISIBLE_DEVICES") if k in os.environ},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
