"""``hubkit quantize``: base -> calibration -> modelopt PTQ -> export -> finished folder -> provenance -> validate.

The modes live in ``modes/``, one module each, and ``modes.choose`` picks one: ``resident`` loads the whole model
onto the device(s), calibrates and exports it with modelopt; ``layerwise`` takes one decoder layer at a time from
the base's own shards, and resumes after a kill; ``cast`` takes an MXFP4 base without calibration. ``auto`` picks
resident when the plan says it fits with margin. A run travels as one ``Job``. The export is written to a hidden staging
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
from typing import TYPE_CHECKING, Any

from hubkit import __version__
from hubkit.checkpoint.hub_client import install
from hubkit.checkpoint.loader import MAX_JSON_BYTES
from hubkit.checkpoint.model import CONFIG, INDEX, QUANT_CONFIG, RECORD_DIR
from hubkit.errors import HubkitError, is_network_error
from hubkit.locks import exclusive
from hubkit.progress import download_progress
from hubkit.quantize import interrupts
from hubkit.quantize.base_revision import SHA, base_revision
from hubkit.quantize.devices import Distributed
from hubkit.quantize.folders import discard, make_owned, remove_owned
from hubkit.quantize.modes import CalibratedMode, Mode, choose
from hubkit.quantize.options import MODES, QuantizeOptions
from hubkit.quantize.remote import REMOTE_CODE_CONFIGS, require_trust
from hubkit.reads import read_bounded
from hubkit.records import (
    MADE_BY,
    STATE,
    STATE_FILE,
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

if TYPE_CHECKING:
    from hubkit.quantize.plan import Plan

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
    require_trust({name: read_json(folder / name) for name in REMOTE_CODE_CONFIGS}, trusted)


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
    config = read_json(path)
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
        state = read_record(out / STATE)
        if state.get("status") == "complete":
            raise HubkitError(f"{out} already holds a complete export; pass a new --out folder")
        if not made_by_hubkit(out):
            raise HubkitError(f"{out} is not empty; pass a new --out folder")
    staging = staging_folder(out)
    record = read_record(staging / MADE_BY)
    if fingerprint is not None and record.get("fingerprint") == fingerprint and made_by_hubkit(staging):
        return staging, True
    remove_owned(staging, "an earlier run's staging folder")  # an interrupted earlier run: start again
    make_owned(staging, "staging")
    if fingerprint is not None:
        mark_made(staging, "staging", fingerprint=fingerprint)
    return staging, False


def staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object of the base's or the export's, or {} when absent or damaged."""
    try:
        data = json.loads(read_bounded(path, limit=MAX_JSON_BYTES))
    except (OSError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def read_record(path: Path) -> dict[str, Any]:
    """hubkit's record ``path`` as an object, or {} when absent or damaged; a link in its place is refused."""
    data = load_record(path)
    return data if isinstance(data, dict) else {}


@contextmanager
def stage(timings: dict[str, float], name: str, peaks: dict[str, int] | None = None) -> Iterator[None]:
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
class Job:
    """One quantize run: its inputs, what it decided, and what it measured (for provenance). Made by ``quantize``,
    filled in as the run goes, and handed whole to the mode that runs it (``modes/``)."""

    options: QuantizeOptions
    base: Path  # the base's local folder
    profile: Any
    revision: dict[str, Any]  # which base was read (``base_revision.py``)
    dist: Distributed
    timings: dict[str, float] = field(default_factory=dict)
    # the calibration inputs, for a mode that calibrates
    device: str = "cpu"
    int4: bool = False
    recipe: Any = None
    sources: list[Any] = field(default_factory=list)
    batches: list[list[int]] = field(default_factory=list)
    fingerprint: str = ""
    #: the hidden folder beside ``--out`` the export is written into
    staging: Path | None = None
    # what was decided
    mode: str = ""
    reason: str = ""
    plan: dict[str, Any] = field(default_factory=dict)
    world: int = 1
    # what was measured
    resumed_layers: list[int] = field(default_factory=list)
    layer_seconds: list[float] = field(default_factory=list)
    layer_parts: list[dict[str, float]] = field(default_factory=list)  # layerwise: seconds per part
    prefetch: bool = False  # layerwise: the next layer read while this one calibrated
    peak_device_bytes: dict[str, int] = field(default_factory=dict)
    held_input_bytes: int = 0  # layerwise: the most captured layer inputs held at once
    #: each decoder layer's quantization error (``layer_error.py``); empty where none was measured
    layer_error: list[dict[str, Any]] = field(default_factory=list)


def quantize(options: QuantizeOptions) -> QuantizeResult:
    """Run the whole quantization; user errors raise HubkitError before anything is written to ``out``.

    SIGINT and SIGTERM act at the next safe point (``interrupts.py``); the staging folder is removed then, except
    a layerwise run's committed layers, which a rerun of the same command resumes. The run holds the lock of
    ``out`` (``hubkit.locks``, the one a release holds on its OUT): a second run on the same ``out`` exits 2 naming
    this one's pid. Under ``torchrun`` rank 0 holds it for the job.
    """
    from hubkit.quantize import require_extra
    from hubkit.quantize.devices import launched

    require_extra()
    check_out(options.out)
    lock = (
        exclusive(options.out, "--out", run="run", advice="wait for it to end or stop it, or pass another --out")
        if launched().rank == 0
        else contextlib.nullcontext()
    )
    with lock, interrupts.deferred(), interrupts.between_modules():
        return _quantize(options)


def _quantize(options: QuantizeOptions) -> QuantizeResult:
    if options.mode not in MODES:
        raise HubkitError(f"--mode {options.mode!r} is not one of {', '.join(MODES)}")
    from hubkit.quantize.devices import launched

    dist = launched()
    timings: dict[str, float] = {}
    profiles = load_profiles()
    if options.profile and options.profile not in profiles:
        raise HubkitError(f"unknown profile '{options.profile}'; available: {', '.join(sorted(profiles))}")
    profile = profiles[options.profile or DEFAULT_PROFILE]
    with stage(timings, "download"):
        base = base_folder(options.base, options.trust_remote_code, options.progress)
    job = Job(options, base, profile, base_revision(options.base, base), dist, timings)
    choice = choose(
        options.mode, config=read_json(base / CONFIG), plan=lambda: _calibration_plan(job), world=dist.world,
        resuming=lambda: staging_folder(options.out) if _resumable(options.out, job.fingerprint) else None,
    )  # fmt: skip
    job.mode, job.reason = choice.mode.name, choice.reason
    if choice.plan is not None:
        job.plan = choice.plan.as_dict()
        log.info("mode %s", choice.reason)
    return choice.mode.run(job)


def _calibration_plan(job: Job) -> Plan:
    """For a mode that calibrates: read the recipe and the calibration data into ``job``, then plan the run on
    this machine's devices (the mode is chosen on it)."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.calibration import CalibrationSource, tokenize
    from hubkit.quantize.plan import estimate_here
    from hubkit.quantize.recipes import resolve_recipe

    options = job.options
    job.int4 = _int4_block(read_json(job.base / CONFIG)) is not None
    job.device = resolve_device(options.device)
    job.recipe = resolve_recipe(options.recipe or str(job.profile.quantize.get("recipe", DEFAULT_RECIPE)))
    job.sources = [CalibrationSource.parse(spec) for spec in options.calib]
    if not job.sources:
        raise HubkitError("no calibration data; pass --calib FILE_OR_DATASET (repeatable)")
    tokenizer = _tokenizer(job.base, options.trust_remote_code)
    samples = [sample for source in job.sources for sample in source.records(options.calib_size)]
    job.batches = tokenize(tokenizer, samples, options.calib_seq)
    if not job.batches:
        raise HubkitError("the calibration sources gave no text to calibrate on")
    job.world = job.dist.world
    job.fingerprint = _fingerprint(job)
    return estimate_here(
        load_checkpoint(str(job.base)), job.device, batch=options.batch_size, seq=options.calib_seq,
        tokens=sum(len(b) for b in job.batches), out=options.out, max_gpu_memory=options.max_gpu_memory,
        max_cpu_memory=options.max_cpu_memory, world=job.world,
    )  # fmt: skip


def run_calibrated(job: Job, mode: CalibratedMode) -> QuantizeResult:
    """A mode that calibrates: its staging folder, its calibration and export, then the finished folder; on a
    failure the staging folder goes, unless the mode keeps progress in it for a rerun."""
    import torch

    finished = _finished_before(job)
    if finished is not None:
        return finished
    initialized = _init_distributed(job.dist, job.device)
    try:
        job.staging = staging = mode.staging(job)
        try:
            coverage, fallback = mode.calibrate(job)
            if job.dist.rank != 0:  # rank 0 writes, validates and reports
                empty = Report(str(job.options.out), job.profile.name, None, [], 0)
                return QuantizeResult(job.options.out, empty, {}, primary=False)
            result = _complete(job, mode, coverage, fallback)
        except BaseException:
            if job.dist.rank == 0 and not mode.keeps_progress(staging):
                discard(staging)
            raise
    finally:
        if initialized:
            torch.distributed.destroy_process_group()
    mode.finished(job)
    return result


def _finished_before(job: Job) -> QuantizeResult | None:
    """The result of an earlier run of these very inputs that completed ``--out`` (killed after its rename, or
    simply run again): validated again and returned, nothing rewritten; None when ``--out`` holds no such export."""
    out = job.options.out
    if not job.fingerprint or not (out / STATE).is_file() or not made_by_hubkit(out):
        return None
    provenance = read_record(out / PROVENANCE)
    if read_record(out / STATE).get("status") != "complete" or provenance.get("fingerprint") != job.fingerprint:
        return None
    log.info("%s already holds the complete export of these inputs: validating it again, rewriting nothing", out)
    report = validate(str(out), ValidateOptions(profile=job.options.profile, base=str(job.base)))
    return QuantizeResult(out, report, provenance, primary=job.dist.rank == 0)


def intermediate_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.bf16"


def _resumable(out: Path, fingerprint: str) -> bool:
    """Whether the staging folder beside ``out`` holds committed layers of a layerwise run of these inputs."""
    staging = staging_folder(out)
    return (
        read_record(staging / MADE_BY).get("fingerprint") == fingerprint and (staging / SCRATCH / STATE_FILE).is_file()
    )


def _init_distributed(dist: Distributed, device: str) -> bool:
    """Join the ``torchrun`` job (NCCL on GPUs, gloo on CPUs); False when alone or already joined."""
    import torch

    if not dist.active or torch.distributed.is_initialized():
        return False
    if device == "cuda":
        torch.cuda.set_device(dist.local_rank)
    torch.distributed.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return True


def _fingerprint(job: Job) -> str:
    """What a resumed layerwise run must share with the run it continues: the base (its files' names, sizes and
    modification times), the recipe, the calibration tokens, the seed, the device, the shard size, the versions."""
    options, base = job.options, job.base
    digest = hashlib.sha256()
    listing = sorted(
        (str(p.relative_to(base)), p.stat().st_size, p.stat().st_mtime_ns) for p in base.rglob("*") if p.is_file()
    )
    for part in (
        listing,
        job.recipe.quantize,
        job.batches,
        [options.seed, options.batch_size, options.shard_size, job.device, job.world],
        versions(),
    ):
        digest.update(json.dumps(part, default=str).encode())
    return digest.hexdigest()


def _complete(job: Job, mode: CalibratedMode, coverage: dict[str, Any], fallback: bool) -> QuantizeResult:
    """The finished folder: base side files, dtypes, provenance, validation, then the rename into ``--out``."""
    staging = job.staging
    assert staging is not None
    finish(staging, job.base, job.profile.quantization.get("text_model_type"))
    _restore_base_dtypes(staging, job.base)
    provenance = _provenance(job, coverage, fallback)
    provenance["base_format"] = "int4" if job.int4 else "bf16"
    provenance["base_revision"] = job.revision
    provenance["run"] = run_record(job, mode)
    return publish(job, provenance)


def publish(job: Job, provenance: dict[str, Any]) -> QuantizeResult:
    """Validate the staged export against its base, record the outcome, rename the folder into ``--out``."""
    options, timings, staging = job.options, job.timings, job.staging
    assert staging is not None
    provenance["fingerprint"] = job.fingerprint  # of the inputs: a rerun of the same ones finds its export done
    write_json(staging / PROVENANCE, provenance)
    interrupts.kill_point("provenance-written")
    with stage(timings, "validate"):
        report = validate(str(staging), ValidateOptions(profile=options.profile, base=str(job.base)))
    report.path = str(options.out)
    provenance["timings_s"] = timings
    write_json(staging / PROVENANCE, provenance)
    status = "complete" if report.passed else "failed-validation"
    write_state(staging, {"status": status, "errors": report.count(Severity.ERROR)})
    interrupts.kill_point("state-written")
    if (staging / SCRATCH).exists():  # inside hubkit's own staging folder
        shutil.rmtree(staging / SCRATCH)
    interrupts.kill_point("scratch-removed")
    (staging / MADE_BY).unlink()  # from here on hubkit's state.json is the record that hubkit made the folder
    interrupts.kill_point("made-by-removed")
    remove_owned(options.out, "--out")
    staging.rename(options.out)
    interrupts.kill_point("renamed")
    return QuantizeResult(options.out, report, provenance)


def run_record(job: Job, mode: Mode) -> dict[str, Any]:
    """Provenance's ``run``: the mode, why, the plan it was chosen on, and what the run measured."""
    import resource

    record: dict[str, Any] = {"mode": job.mode, "reason": job.reason, "world_size": job.world, "plan": job.plan}
    if isinstance(mode, CalibratedMode):
        record.update(mode.record(job))
    record["measured"] = {
        "peak_host_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "peak_device_bytes": job.peak_device_bytes or None,
    }
    return record


def _tokenizer(base: Path, trust_remote_code: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(base, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        raise HubkitError(f"cannot load the base's tokenizer ({exc}); the base needs its tokenizer files") from exc


def finish(staging: Path, base: Path, text_model_type: str | None) -> None:
    """Make the folder look like the reference release: base side files, normalised config."""
    for pattern in COPIED_FROM_BASE:
        for item in base.glob(pattern):
            if item.is_file() and item.name not in (CONFIG, QUANT_CONFIG, INDEX):
                with open(item, "rb") as source, replacing(staging / item.name) as copy:
                    shutil.copyfileobj(source, copy)
    config = read_json(staging / CONFIG)
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
        index = read_json(index_path)
        index.setdefault("metadata", {})["total_size"] = load_checkpoint(str(staging)).total_tensor_bytes
        write_json(index_path, index)


def versions() -> dict[str, Any]:
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


def _provenance(job: Job, coverage: dict[str, Any], fallback: bool) -> dict[str, Any]:
    import torch

    options, recipe, device = job.options, job.recipe, job.device
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if device == "cuda" else []
    return {
        "schema": 1,
        "base": options.base,
        "versions": {**versions(), "cuda": torch.version.cuda},
        "device": device,
        "gpus": gpus,
        "cpu_nvfp4_fallback": fallback,
        "recipe": {"name": recipe.name, "quantize": recipe.quantize},
        "calibration": {
            "sources": [s.provenance() for s in job.sources],
            "calib_size": options.calib_size,
            "calib_seq": options.calib_seq,
            "batch_size": options.batch_size,
            "samples": len(job.batches),
            "seed": options.seed,
        },
        "coverage": coverage,
        "timings_s": job.timings,
        "environment": {k: os.environ[k] for k in RECORDED_ENVIRONMENT if k in os.environ},
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
    }
