"""``hubkit quantize``: base -> calibration -> modelopt PTQ -> export -> finished folder -> provenance -> validate.

Two modes: ``resident`` loads the whole model onto the device(s), calibrates and exports it with modelopt;
``layerwise`` (``layerwise.py``) takes one decoder layer at a time from the base's own shards, and resumes after
a kill. ``auto`` picks resident when the plan says it fits with margin. The export is written to a hidden staging
folder beside ``--out`` and renamed into place only when it is complete, so an interrupted or failed run never
leaves a folder that looks like a finished export.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
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
from hubkit.checkpoint.hub_client import install
from hubkit.checkpoint.loader import MAX_JSON_BYTES
from hubkit.checkpoint.model import CONFIG, INDEX, QUANT_CONFIG, RECORD_DIR
from hubkit.errors import HubkitError, is_network_error
from hubkit.progress import download_progress, progress_bar
from hubkit.quantize import interrupts
from hubkit.quantize.base_revision import SHA, base_revision
from hubkit.quantize.cast_plan import mxfp4_block
from hubkit.quantize.folders import discard, make_owned, remove_owned
from hubkit.quantize.options import MODES, QuantizeOptions
from hubkit.quantize.remote import REMOTE_CODE_CONFIGS, require_trust
from hubkit.reads import read_bounded
from hubkit.records import (
    MADE_BY,
    STATE,
    STATE_FILE,
    ensure_folder,
    load_record,
    made_by_hubkit,
    mark_made,
    replacing,
    write_bytes,
    write_json,
    write_state,
    write_text,
)
from hubkit.validate.engine import Report, Severity
from hubkit.validate.options import ValidateOptions
from hubkit.validate.profiles import DEFAULT_PROFILE, load_profiles
from hubkit.validate.runner import validate

log = logging.getLogger(__name__)
DEFAULT_RECIPE = "nvfp4-experts-mse"
PROVENANCE = f"{RECORD_DIR}/provenance.json"
#: An MXFP4 cast's block counts per tensor (provenance holds the totals).
CAST_BLOCKS = f"{RECORD_DIR}/cast-blocks.json"
#: A layerwise run's resume record and scratch, inside its staging folder.
SCRATCH = f"{RECORD_DIR}/layerwise"
#: Files of the base that an export must carry unchanged.
COPIED_FROM_BASE = ("*.py", "tokenizer*", "tiktoken.model", "*.tiktoken", "vocab.json", "merges.txt",
                    "special_tokens_map.json", "added_tokens.json", "chat_template.*", "generation_config.json")  # fmt: skip
#: Environment flags that change how CUDA, NCCL and torch run: recorded in provenance. hubkit sets none of them:
#: the CUDA fault the seed card notes came from compressed-tensors decompressing on the GPU, and hubkit
#: dequantizes on the CPU, so no flag is needed to avoid it.
RECORDED_ENVIRONMENT = (
    "CUDA_LAUNCH_BLOCKING", "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_MAX_CONNECTIONS", "CUBLAS_WORKSPACE_CONFIG",
    "PYTORCH_CUDA_ALLOC_CONF", "TORCH_USE_CUDA_DSA", "NCCL_DEBUG", "NCCL_P2P_DISABLE", "NCCL_IB_DISABLE",
    "OMP_NUM_THREADS", "WORLD_SIZE", "HF_HUB_OFFLINE",
)  # fmt: skip


@dataclass
class QuantizeResult:
    out: Path
    report: Report
    provenance: dict[str, Any] = field(default_factory=dict)
    #: False on the other processes of a torchrun job: rank 0 writes, validates and reports
    primary: bool = True


def base_folder(ref: str, trust_remote_code: bool = False, progress: bool = True) -> Path:
    """A local base folder, or a Hub repo downloaded (resumably) to the standard cache. A base that ships
    modelling code is refused unless ``trust_remote_code`` (a Hub base: before its weights are downloaded)."""
    if ref.startswith("hf://"):
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError

        install()  # each wait bounded
        repo, _, revision = ref.removeprefix("hf://").partition("@")
        with download_progress(f"download {repo}", enabled=progress) as bar_class:
            download = functools.partial(
                snapshot_download, repo, endpoint=os.environ.get("HF_ENDPOINT") or None, tqdm_class=bar_class
            )
            try:
                configs = Path(download(revision=revision or None, allow_patterns=list(REMOTE_CODE_CONFIGS)))
                _require_trust(configs, trust_remote_code)
                return Path(download(revision=configs.name if SHA.match(configs.name) else revision or None))
            except Exception as exc:
                if not isinstance(exc, HfHubHTTPError | ValueError) and not is_network_error(exc):  # OSError too
                    raise
                raise HubkitError(f"cannot download {ref}: {exc}; check the name, your token and the network") from exc
    path = Path(ref)
    if not (path / CONFIG).is_file():
        raise HubkitError(f"{ref} is not a checkpoint folder (no config.json); pass the base model's folder")
    _require_trust(path, trust_remote_code)
    return path


def _require_trust(folder: Path, trusted: bool) -> None:
    require_trust({name: _read_json(folder / name) for name in REMOTE_CODE_CONFIGS}, trusted)


def _int4_block(config: dict[str, Any]) -> dict[str, Any] | None:
    for block in (config.get("quantization_config"), (config.get("text_config") or {}).get("quantization_config")):
        if isinstance(block, dict) and block.get("format") == "pack-quantized":
            return block
    return None


def dequantize_int4(base: Path, target: Path) -> Path:
    """INT4 ``pack-quantized`` -> BF16, shard by shard, with compressed-tensors' own converter (resumable:
    a finished intermediate is reused by a rerun). Only a resident run on an INT4 base writes this copy."""
    done = target / RECORD_DIR / "dequantized"
    if done.is_file() and made_by_hubkit(target):
        return target
    from compressed_tensors.entrypoints.convert import convert_checkpoint
    from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer

    remove_owned(target, "the BF16 intermediate")
    make_owned(target, "bf16-intermediate")
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        convert_checkpoint(base, target, CompressedTensorsDequantizer(base), max_workers=1, device="cpu")
    _drop_int4_config(target / CONFIG)
    write_text(done, "complete\n")
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
    write_json(path, config)


def resolve_device(device: str) -> str:
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        raise HubkitError("--device cuda but no CUDA device is visible; use --device cpu (tiny models only)")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def check_out(out: Path) -> None:
    """``--out`` must be a folder (or not exist yet)."""
    if out.exists() and not out.is_dir():
        raise HubkitError(f"--out {out} is a file; pass a folder for the export")


def prepare_out(out: Path, fingerprint: str | None = None) -> tuple[Path, bool]:
    """Refuse an ``--out`` that holds anything but hubkit's own unfinished or failed export; return the staging
    folder, and whether it holds a layerwise run of the same inputs to resume (``fingerprint`` given)."""
    check_out(out)
    if out.exists() and any(out.iterdir()):
        state = _read_record(out / STATE)
        if state.get("status") == "complete":
            raise HubkitError(f"{out} already holds a complete export; pass a new --out folder")
        if not made_by_hubkit(out):
            raise HubkitError(f"{out} is not empty; pass a new --out folder")
    staging = staging_folder(out)
    record = _read_record(staging / MADE_BY)
    if fingerprint is not None and record.get("fingerprint") == fingerprint and made_by_hubkit(staging):
        return staging, True
    remove_owned(staging, "an earlier run's staging folder")  # an interrupted earlier run: start again
    make_owned(staging, "staging")
    if fingerprint is not None:
        mark_made(staging, "staging", fingerprint=fingerprint)
    return staging, False


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object of the base's or the export's, or {} when absent or damaged."""
    try:
        data = json.loads(read_bounded(path, limit=MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_record(path: Path) -> dict[str, Any]:
    """hubkit's record ``path`` as an object, or {} when absent or damaged; a link in its place is refused."""
    data = load_record(path)
    return data if isinstance(data, dict) else {}


@contextmanager
def _stage(timings: dict[str, float], name: str, peaks: dict[str, int] | None = None) -> Iterator[None]:
    """Time a stage; with ``peaks``, also record the most GPU memory torch held on any one GPU during it."""
    torch: Any = sys.modules.get("torch")
    gpus = range(torch.cuda.device_count()) if peaks is not None and torch is not None else range(0)
    for gpu in gpus:
        torch.cuda.reset_peak_memory_stats(gpu)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    if peaks is not None and gpus:
        peaks[name] = max(int(torch.cuda.max_memory_allocated(gpu)) for gpu in gpus)
    interrupts.check()


@dataclass
class _Run:
    """What one run decided and measured, for provenance."""

    mode: str
    reason: str
    plan: dict[str, Any]
    device: str
    world: int = 1
    resumed_layers: list[int] = field(default_factory=list)
    layer_seconds: list[float] = field(default_factory=list)
    peak_device_bytes: dict[str, int] = field(default_factory=dict)
    #: which base was read (``base_revision.py``)
    base_revision: dict[str, Any] = field(default_factory=dict)


def quantize(options: QuantizeOptions) -> QuantizeResult:
    """Run the whole quantization; user errors raise HubkitError before anything is written to ``out``.

    SIGINT and SIGTERM act at the next safe point (``interrupts.py``); the staging folder is removed then, except
    a layerwise run's committed layers, which a rerun of the same command resumes.
    """
    from hubkit.quantize import require_extra

    require_extra()
    check_out(options.out)
    with interrupts.deferred(), interrupts.between_modules():
        return _quantize(options)


def _quantize(options: QuantizeOptions) -> QuantizeResult:
    if options.mode not in MODES:
        raise HubkitError(f"--mode {options.mode!r} is not one of {', '.join(MODES)}")
    import torch

    from hubkit.quantize.calibration import CalibrationSource, tokenize
    from hubkit.quantize.devices import launched
    from hubkit.quantize.recipes import resolve_recipe

    dist = launched()
    timings: dict[str, float] = {}
    profiles = load_profiles()
    if options.profile and options.profile not in profiles:
        raise HubkitError(f"unknown profile '{options.profile}'; available: {', '.join(sorted(profiles))}")
    profile = profiles[options.profile or DEFAULT_PROFILE]
    with _stage(timings, "download"):
        base = base_folder(options.base, options.trust_remote_code, options.progress)
    revision = base_revision(options.base, base)
    if options.mode == "cast" or mxfp4_block(_read_json(base / CONFIG)) is not None:
        return _cast(options, base, profile, revision, timings)
    int4 = _int4_block(_read_json(base / CONFIG)) is not None
    device = resolve_device(options.device)
    recipe = resolve_recipe(options.recipe or str(profile.quantize.get("recipe", DEFAULT_RECIPE)))
    sources = [CalibrationSource.parse(spec) for spec in options.calib]
    if not sources:
        raise HubkitError("no calibration data; pass --calib FILE_OR_DATASET (repeatable)")
    tokenizer = _tokenizer(base, options.trust_remote_code)
    samples = [sample for source in sources for sample in source.records(options.calib_size)]
    batches = tokenize(tokenizer, samples, options.calib_seq)
    if not batches:
        raise HubkitError("the calibration sources gave no text to calibrate on")
    fingerprint = _fingerprint(options, base, recipe, batches, device, dist.world)
    run = _decide(options, base, device, batches, dist.world, fingerprint)
    run.base_revision = revision
    initialized = _init_distributed(dist, device)
    try:
        if run.mode == "layerwise":
            staging = _shared_staging(options.out, fingerprint, dist.rank)
        else:
            staging, _ = prepare_out(options.out)
        try:
            if run.mode == "layerwise":
                with _stage(timings, "layers"):
                    coverage, fallback = _layerwise(
                        options, base, int4, device, recipe, batches, staging, run, dist, torch
                    )
                if dist.rank != 0:
                    empty = Report(str(options.out), profile.name, None, [], 0)
                    return QuantizeResult(options.out, empty, {}, primary=False)
            else:
                peaks = run.peak_device_bytes if device == "cuda" else None
                coverage, fallback = _resident(
                    options, base, int4, device, recipe, batches, staging, timings, peaks, torch
                )
            result = _complete(
                options, base, int4, profile, recipe, sources, batches, coverage, timings, run, fallback, staging
            )
        except BaseException:
            if dist.rank == 0:
                _after_failure(staging, run)
            raise
    finally:
        if initialized:
            torch.distributed.destroy_process_group()
    if int4 and run.mode == "resident" and not options.keep_intermediate:
        discard(intermediate_folder(options.out))
    return result


def intermediate_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.bf16"


def _decide(
    options: QuantizeOptions, base: Path, device: str, batches: list[list[int]], world: int, fingerprint: str
) -> _Run:
    """The mode this run takes, and why: ``--mode``, or for ``auto`` a layerwise run of the same inputs to resume,
    else the plan on this machine's devices."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import estimate_here

    plan = estimate_here(
        load_checkpoint(str(base)), device, batch=options.batch_size, seq=options.calib_seq,
        tokens=sum(len(b) for b in batches), out=options.out, max_gpu_memory=options.max_gpu_memory,
        max_cpu_memory=options.max_cpu_memory, world=world,
    )  # fmt: skip
    if world > 1:
        if options.mode == "resident":
            raise HubkitError(
                "--mode resident runs in one process over every visible GPU; run it without torchrun, "
                "or use --mode layerwise (data-parallel under torchrun)"
            )
        mode, reason = "layerwise", f"layerwise: launched by torchrun with {world} processes (data-parallel)"
    elif options.mode == "auto" and _resumable(options.out, fingerprint):
        mode, reason = "layerwise", f"layerwise: resuming the run kept in {staging_folder(options.out)}"
    elif options.mode == "auto":
        mode, reason = plan.choose()
    else:
        mode, reason = options.mode, f"{options.mode}: chosen with --mode"
    log.info("mode %s", reason)
    return _Run(mode, reason, plan.as_dict(), device, world)


def _resumable(out: Path, fingerprint: str) -> bool:
    """Whether the staging folder beside ``out`` holds committed layers of a layerwise run of these inputs."""
    staging = staging_folder(out)
    return (
        _read_record(staging / MADE_BY).get("fingerprint") == fingerprint and (staging / SCRATCH / STATE_FILE).is_file()
    )


def _init_distributed(dist: Any, device: str) -> bool:
    """Join the ``torchrun`` job (NCCL on GPUs, gloo on CPUs); False when alone or already joined."""
    import torch

    if not dist.active or torch.distributed.is_initialized():
        return False
    if device == "cuda":
        torch.cuda.set_device(dist.local_rank)
    torch.distributed.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True


def _shared_staging(out: Path, fingerprint: str, rank: int) -> Path:
    """Rank 0 prepares the staging folder; the other processes of a torchrun job wait for it."""
    import torch

    if rank == 0:
        prepare_out(out, fingerprint)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    return staging_folder(out)


def _fingerprint(
    options: QuantizeOptions, base: Path, recipe: Any, batches: list[list[int]], device: str, world: int
) -> str:
    """What a resumed layerwise run must share with the run it continues: the base (its files' names, sizes and
    modification times), the recipe, the calibration tokens, the seed, the device, the shard size, the versions."""
    digest = hashlib.sha256()
    listing = sorted(
        (str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in base.rglob("*") if p.is_file()
    )
    for part in (
        listing,
        recipe.quantize,
        batches,
        [options.seed, options.batch_size, options.shard_size, device, world],
        _versions(),
    ):
        digest.update(json.dumps(part, default=str).encode())
    return digest.hexdigest()


def _resident(
    options: QuantizeOptions,
    base: Path,
    int4: bool,
    device: str,
    recipe: Any,
    batches: list[list[int]],
    staging: Path,
    timings: dict[str, float],
    peaks: dict[str, int] | None,
    torch: Any,
) -> tuple[dict[str, Any], bool]:
    """The whole model on the device(s): load, calibrate, export (today's path, unchanged in its output)."""
    with _stage(timings, "dequantize"):
        weights = dequantize_int4(base, intermediate_folder(options.out)) if int4 else base
    with _stage(timings, "load", peaks):
        model = _load_model(weights, device, options.max_gpu_memory, options.trust_remote_code)
    from hubkit.quantize import cpu_fallback

    with cpu_fallback.active(force=device == "cpu") as fallback:
        with _stage(timings, "calibrate", peaks):
            coverage = _calibrate(model, recipe.quantize, batches, options, torch)
        with _stage(timings, "export", peaks):
            _export(model, staging, options.shard_size)
    return coverage, fallback


def _layerwise(
    options: QuantizeOptions,
    base: Path,
    int4: bool,
    device: str,
    recipe: Any,
    batches: list[list[int]],
    staging: Path,
    run: _Run,
    dist: Any,
    torch: Any,
) -> tuple[dict[str, Any], bool]:
    """One decoder layer at a time, from the base's own shards, resumable (``layerwise.py``)."""
    from hubkit.quantize import cpu_fallback
    from hubkit.quantize.coverage import ExpertCoverage
    from hubkit.quantize.layerwise import BaseWeights, LayerwiseRun, Skeleton, bound_host_heap, check_modelopt
    from hubkit.sizes import parse_size

    check_modelopt()
    bound_host_heap()
    place = torch.device(f"cuda:{dist.local_rank}" if device == "cuda" else "cpu")
    groups = [batches[i : i + options.batch_size] for i in range(0, len(batches), options.batch_size)]
    mine = groups[dist.rank :: dist.world]
    if not mine:
        raise HubkitError(f"{len(groups)} calibration batches cannot feed {dist.world} processes; pass more --calib")
    with cpu_fallback.active(force=device == "cpu") as fallback:
        skeleton = Skeleton(base, BaseWeights(base, int4), place, options.trust_remote_code)
        text = getattr(skeleton.model.config, "text_config", None) or skeleton.model.config
        experts = getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None) or 0
        coverage = ExpertCoverage(int(experts), int(getattr(text, "num_experts_per_tok", 1)), limit=len(mine))
        scratch = staging / SCRATCH
        ensure_folder(scratch)
        job = LayerwiseRun(
            skeleton, recipe.quantize, mine, staging, scratch, _read_record(staging / MADE_BY).get("fingerprint", ""),
            parse_size(options.shard_size), coverage, progress=options.progress, rank=dist.rank, world=dist.world,
        )  # fmt: skip
        torch.manual_seed(options.seed)
        job.run()
    run.resumed_layers, run.layer_seconds, run.peak_device_bytes = (
        job.resumed_layers,
        job.layer_seconds,
        job.peak_device_bytes,
    )
    summary = coverage.reduced().summary()
    summary["tokens"] = sum(len(b) for b in batches)
    if dist.rank == 0:  # keep only the record that every layer is done, for a rerun after a crash from here on
        for item in scratch.iterdir():
            if item.name != STATE_FILE:
                item.unlink()
    return summary, fallback


def _complete(
    options: QuantizeOptions,
    base: Path,
    int4: bool,
    profile: Any,
    recipe: Any,
    sources: list[Any],
    batches: list[list[int]],
    coverage: dict[str, Any],
    timings: dict[str, float],
    run: _Run,
    fallback: bool,
    staging: Path,
) -> QuantizeResult:
    """The finished folder: base side files, dtypes, provenance, validation, then the rename into ``--out``."""
    _finish(staging, base, profile.quantization.get("text_model_type"))
    _restore_base_dtypes(staging, base)
    provenance = _provenance(options, recipe, sources, batches, coverage, timings, run.device, fallback)
    provenance["base_format"] = "int4" if int4 else "bf16"
    provenance["base_revision"] = run.base_revision
    provenance["run"] = _run_record(run)
    return _publish(options, base, staging, provenance, timings)


def _publish(
    options: QuantizeOptions, base: Path, staging: Path, provenance: dict[str, Any], timings: dict[str, float]
) -> QuantizeResult:
    """Validate the staged export against its base, record the outcome, rename the folder into ``--out``."""
    write_json(staging / PROVENANCE, provenance)
    with _stage(timings, "validate"):
        report = validate(str(staging), ValidateOptions(profile=options.profile, base=str(base)))
    report.path = str(options.out)
    provenance["timings_s"] = timings
    write_json(staging / PROVENANCE, provenance)
    status = "complete" if report.passed else "failed-validation"
    write_state(staging, {"status": status, "errors": report.count(Severity.ERROR)})
    if (staging / SCRATCH).exists():  # inside hubkit's own staging folder
        shutil.rmtree(staging / SCRATCH)
    (staging / MADE_BY).unlink()  # from here on hubkit's state.json is the record that hubkit made the folder
    remove_owned(options.out, "--out")
    staging.rename(options.out)
    return QuantizeResult(options.out, report, provenance)


def _cast(
    options: QuantizeOptions, base: Path, profile: Any, revision: dict[str, Any], timings: dict[str, float]
) -> QuantizeResult:
    """An MXFP4 base: its experts cast to NVFP4 in closed form (``cast.py``); no model, no data, no GPU."""
    from hubkit.quantize.cast import DEFAULT_RECIPE, cast_recipe, run_cast
    from hubkit.quantize.recipes import resolve_recipe

    if mxfp4_block(_read_json(base / CONFIG)) is None:
        raise HubkitError(
            "--mode cast needs an MXFP4 base (compressed-tensors mxfp4-pack-quantized); use --mode auto for this one"
        )
    if options.mode not in ("auto", "cast"):
        raise HubkitError(f"the base is MXFP4: it is cast to NVFP4 without calibration; drop --mode {options.mode}")
    if options.calib:
        log.warning("--calib is not used: an MXFP4 base is cast without calibration data")
    recipe = cast_recipe(options.recipe, resolve_recipe(options.recipe).quantize if options.recipe else None)
    run = _Run("cast", f"cast: the base is MXFP4 ({options.jobs} shards at once)", {}, "cpu")
    run.base_revision = revision
    staging, _ = prepare_out(options.out)
    try:
        shards = len({*(_read_json(base / INDEX).get("weight_map") or {"": "model.safetensors"}).values()})
        with (
            _stage(timings, "cast"),
            progress_bar(total=shards, desc="cast", unit="shard", enabled=options.progress) as bar,
        ):
            report = run_cast(base, staging, recipe, options.jobs, bar)
        _finish(staging, base, profile.quantization.get("text_model_type"))
        blocks = {name: asdict(count) for name, count in sorted(report.tensors.items())}
        write_json(staging / CAST_BLOCKS, blocks, indent=None)
        provenance: dict[str, Any] = {
            "schema": 1,
            "base": options.base,
            "base_format": "mxfp4",
            "base_revision": revision,
            "versions": _versions(),
            "device": "cpu",
            "recipe": {"name": recipe.name, "builtin": recipe.name == DEFAULT_RECIPE, "input_amax": recipe.input_amax},
            "cast": {**report.summary(), "per_tensor": CAST_BLOCKS},
            "timings_s": timings,
            "run": {**_run_record(run), "jobs": options.jobs},
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        }
        return _publish(options, base, staging, provenance, timings)
    except BaseException:
        discard(staging)
        raise


def _run_record(run: _Run) -> dict[str, Any]:
    import resource

    record: dict[str, Any] = {"mode": run.mode, "reason": run.reason, "world_size": run.world, "plan": run.plan}
    if run.mode == "layerwise":
        record["resumed_layers"] = run.resumed_layers
        record["layer_seconds"] = run.layer_seconds
    record["measured"] = {
        "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_device_bytes": run.peak_device_bytes or None,
    }
    return record


def _after_failure(staging: Path, run: _Run) -> None:
    """An interrupted or failed run: keep a layerwise run's committed layers for a rerun to resume, else remove
    the staging folder (only ever hubkit's own)."""
    if run.mode == "layerwise" and (staging / SCRATCH / STATE_FILE).is_file():
        log.warning("progress kept in %s: rerun the same command to resume (or delete that folder)", staging)
        return
    discard(staging)


def _tokenizer(base: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise HubkitError(f"cannot load the base's tokenizer ({exc}); the base needs its tokenizer files") from exc


def _load_model(base: Path, device: str, max_gpu_memory: str | None, trust_remote_code: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # Kimi and other wrapped models ship their modelling code beside the weights (auto_map): loading them
    # runs that code, as vLLM's --trust-remote-code does, and only when the user passed that flag.
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "trust_remote_code": trust_remote_code}
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
    experts = getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None) or 0
    coverage = ExpertCoverage(int(experts), int(getattr(text, "num_experts_per_tok", 1)))
    coverage.attach(model)
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
                interrupts.check()
        coverage.detach()  # count routing of the first pass only

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # modelopt prints to stdout
        warnings.simplefilter("ignore")
        mtq.quantize(model, quant_config, forward_loop)
    summary = coverage.summary()
    summary["tokens"] = tokens
    return summary


def _export(model: Any, staging: Path, shard_size: str) -> None:
    from modelopt.torch.export import export_hf_checkpoint

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, export_dir=staging, max_shard_size=shard_size)


def _finish(staging: Path, base: Path, text_model_type: str | None) -> None:
    """Make the folder look like the reference release: base side files, normalised config."""
    for pattern in COPIED_FROM_BASE:
        for item in base.glob(pattern):
            if item.is_file() and item.name not in (CONFIG, QUANT_CONFIG, INDEX):
                with open(item, "rb") as source, replacing(staging / item.name) as copy:
                    shutil.copyfileobj(source, copy)
    config = _read_json(staging / CONFIG)
    text = config.get("text_config")
    if isinstance(text, dict):
        text.pop("quantization_config", None)
        if text_model_type:
            text["model_type"] = text_model_type
        write_json(staging / CONFIG, config)


def _restore_base_dtypes(staging: Path, base: Path) -> None:
    """Give unquantized tensors back the base's dtype where loading upcast them (routers come back F32).

    The BF16 part of a release is the base's, bit for bit; a BF16 -> F32 -> BF16 round trip is exact.
    """
    import torch
    from safetensors.torch import load_file, save

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
            write_bytes(staging / shard, save(tensors, metadata={"format": "pt"}))
            changed = True
    index_path = staging / INDEX
    if changed and index_path.is_file():
        index = _read_json(index_path)
        index.setdefault("metadata", {})["total_size"] = load_checkpoint(str(staging)).total_tensor_bytes
        write_json(index_path, index)


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
            "sources": [s.provenance() for s in sources],
            "calib_size": options.calib_size,
            "calib_seq": options.calib_seq,
            "batch_size": options.batch_size,
            "samples": len(batches),
            "seed": options.seed,
        },
        "coverage": coverage,
        "timings_s": timings,
        "environment": {k: os.environ[k] for k in RECORDED_ENVIRONMENT if k in os.environ},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
