"""Preflight: what a release needs, checked before its first stage and reported all at once (as ``twine check``
runs before an upload), so a missing input fails in seconds rather than after hours of quantization.

Each check says what it found and, when it fails, what to do. A check that could not be performed says so
("not checked", and why) rather than passing: offline, a Hub dataset name cannot be resolved. Only the stages
that will run are checked: a resumed release whose quantize stage is unchanged needs no GPU and no torch.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from hubkit.checkpoint.hub_client import install, is_offline
from hubkit.errors import HubkitError, is_network_error
from hubkit.gpus import gpu_set, visible_gpus
from hubkit.reads import open_regular
from hubkit.release.smoke import smoke_availability
from hubkit.sizes import GiB as GIB

if TYPE_CHECKING:
    from hubkit.checkpoint.model import Checkpoint
    from hubkit.manifest import Manifest, QuantizeTable
    from hubkit.quantize.calibration import CalibrationSource

OK, WARNING, NOT_CHECKED, FAILED = "ok", "warning", "not checked", "failed"

#: Seconds to wait for the Hub in a preflight request.
HUB_TIMEOUT_S = 30


def _unasked(exc: BaseException) -> str | None:
    """Why the Hub could not be asked, when a failed Hub request's ``exc`` (or what it wraps) says so: offline
    mode, a connection refused or timed out, a transient answer (5xx, 429). None when the Hub answered no (a 404,
    a rejected token) or the failure is not the network's: the check then fails."""
    from hubkit.hub.remote import classify

    if is_offline():
        return "HF_HUB_OFFLINE is set (offline)"
    fault = classify(exc)
    return f"cannot reach the Hub ({fault.detail})" if fault is not None and fault.transient else None


@dataclass(frozen=True)
class PreflightCheck:
    """One preflight result: its subject, ok / warning / not checked / failed, and what was found."""

    name: str
    status: str
    detail: str
    #: a real run (not a dry run) cannot go on while this check is "not checked" (the Hub: push and tag need it)
    required: bool = False

    def line(self) -> str:
        return f"{self.status}: {self.name}: {self.detail}"

    def as_dict(self) -> dict[str, str]:
        """The JSON form (release.schema.json): what was checked and found."""
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Subject:
    """What a release is about to do: its manifest, where it writes, and which stages will run."""

    manifest: Manifest
    root: Path  # the manifest's folder: relative paths in the manifest are relative to it
    out: Path
    base: str  # a folder, or hf://ORG/NAME[@REV]
    reference: str | None
    stages: tuple[str, ...]
    check_token: Callable[[], str] | None = None  # the push stage's token check (the user it belongs to)
    _base: Checkpoint | HubkitError | None = field(default=None, repr=False)

    @property
    def quantize(self) -> QuantizeTable:
        """The ``[quantize]`` table, for the checks of a quantize stage that will run (an export made elsewhere
        has none, and its quantize stage never runs)."""
        assert self.manifest.quantize is not None, "quantize checks run only where the quantize stage will"
        return self.manifest.quantize

    def base_checkpoint(self) -> Checkpoint:
        """The base's headers (read once; a HubkitError says why they cannot be read)."""
        if self._base is None:
            from hubkit.checkpoint import load_checkpoint

            try:
                self._base = load_checkpoint(self.base)
            except HubkitError as exc:
                self._base = exc
        if isinstance(self._base, HubkitError):
            raise self._base
        return self._base


class PreflightFailed(HubkitError):
    """Some preflight checks failed: every failure, one per line, each saying what to do."""

    def __init__(self, checks: list[PreflightCheck]) -> None:
        stopping = blocking(checks)
        lines = "\n  ".join(
            f"{c.name}: {c.detail}" if c.status == FAILED else f"{c.name}: {c.detail}; {HUB_NEEDED}" for c in stopping
        )
        super().__init__(
            f"preflight: {len(stopping)} of {len(checks)} checks stop the run; nothing was run:\n  {lines}"
        )
        self.checks = checks


#: Why a Hub that could not be asked stops a real run (not a dry run): push and tag need it, and finding that
#: out after hours of quantization wastes them.
HUB_NEEDED = "push and tag need the Hub: rerun when it answers, or stop before them with --until validate"


def blocking(checks: list[PreflightCheck]) -> list[PreflightCheck]:
    """The checks that stop a real run: every failure, and a Hub that could not be asked (it stays "not
    checked": nothing was found wrong, but the stages that need it cannot run)."""
    return [c for c in checks if c.status == FAILED or (c.required and c.status == NOT_CHECKED)]


def preflight(subject: Subject) -> list[PreflightCheck]:
    """Run every check that applies to the stages that will run; none stops the others."""
    checks: list[PreflightCheck] = []
    for family in (_inputs, _extras, _recipe, _calibration, _gpus, _disk, _card, _hub, _smoke):
        checks.extend(family(subject))
    return checks


# ------------------------------------------------------------------------------------------- input paths


def _inputs(subject: Subject) -> Iterator[PreflightCheck]:
    manifest, stages = subject.manifest, subject.stages
    if {"quantize", "validate"} & set(stages):
        yield _base_input(subject)
    if "quantize" in stages:
        remote = _remote_code(subject)
        if remote is not None:
            yield remote
    if "card" in stages and manifest.card is not None:
        from hubkit.card.render import MAX_SECTION_BYTES

        for section in manifest.card.sections:
            yield _readable("card section", subject.root / section, "fix [card] sections", MAX_SECTION_BYTES)
    if "validate" in stages and subject.reference:
        from hubkit.validate.context import load_reference

        try:
            found = load_reference(subject.reference)
        except HubkitError as exc:
            unasked = _unasked(exc) if subject.reference.startswith("hf://") else None
            if unasked:
                yield PreflightCheck("validate reference", NOT_CHECKED, f"{subject.reference}: {unasked}")
            else:
                yield PreflightCheck("validate reference", FAILED, f"{exc}; fix [validate] reference")
        else:
            yield PreflightCheck(
                "validate reference", OK, f"{subject.reference}: {len(found.exclude_modules)} exclusion patterns"
            )


def _base_input(subject: Subject) -> PreflightCheck:
    table = subject.manifest.base
    if table.path:
        folder = subject.root / table.path
        if not folder.is_dir():
            return PreflightCheck(
                "base", FAILED,
                f"[base] path {folder} does not exist; put the base model there, or remove 'path' to read "
                f"[base] repo {table.repo} from the Hub",
            )  # fmt: skip
        if not (folder / "config.json").is_file():
            return PreflightCheck(
                "base", FAILED, f"[base] path {folder} holds no config.json; name the base model's folder"
            )
    try:
        base = subject.base_checkpoint()
    except HubkitError as exc:
        unasked = _unasked(exc) if subject.base.startswith("hf://") else None
        if unasked:
            return PreflightCheck("base", NOT_CHECKED, f"cannot read the base {subject.base}: {unasked}")
        return PreflightCheck("base", FAILED, f"cannot read the base {subject.base}: {exc}")
    size = sum(entry.size for entry in base.files.values())
    return PreflightCheck("base", OK, f"{subject.base}: {len(base.shards)} shards, {size / GIB:,.1f} GiB")


def _remote_code(subject: Subject) -> PreflightCheck | None:
    """A base that ships modelling code (auto_map) is quantized only with ``[base] trust_remote_code = true``."""
    from hubkit.quantize.remote import REMOTE_CODE_CONFIGS, listed, refusal, remote_code

    try:
        base = subject.base_checkpoint()
    except HubkitError:
        return None  # the base check says why it cannot be read
    named = remote_code({name: base.document(name) for name in REMOTE_CODE_CONFIGS})
    if not named:
        return None
    if subject.manifest.base.trust_remote_code:
        files = listed(list(dict.fromkeys(f for found in named.values() for f in found)))
        return PreflightCheck("base remote code", OK, f"trusted ([base] trust_remote_code = true): {files}")
    return PreflightCheck("base remote code", FAILED, refusal(named) or "")


def _readable(name: str, path: Path, fix: str, limit: int | None = None) -> PreflightCheck:
    """Whether ``path`` is a regular file this process can read (and, with ``limit``, no larger than that)."""
    try:
        with open_regular(path, what=name) as stream:
            stream.read(1)
            size = os.fstat(stream.fileno()).st_size
    except HubkitError as exc:
        cause = exc.__cause__
        message = f"cannot read {path} ({cause.strerror or cause})" if isinstance(cause, OSError) else str(exc)
        return PreflightCheck(name, FAILED, f"{message}; {fix}")
    except OSError as exc:
        return PreflightCheck(name, FAILED, f"cannot read {path} ({exc.strerror or exc}); {fix}")
    if limit is not None and size > limit:
        return PreflightCheck(name, FAILED, f"{name} {path} is {size:,} bytes, over hubkit's limit of {limit:,}; {fix}")
    return PreflightCheck(name, OK, str(path))


# ------------------------------------------------------------------------------------------- quantize


def _extras(subject: Subject) -> Iterator[PreflightCheck]:
    if "quantize" not in subject.stages:
        return
    from hubkit.quantize import EXTRA_MODULES, INSTALL, missing_extra

    missing = missing_extra()
    if missing:
        yield PreflightCheck(
            "quantize extra",
            FAILED,
            f"the quantize stage needs {', '.join(missing)}, from the quantize extra: {INSTALL}",
        )
    else:
        yield PreflightCheck("quantize extra", OK, f"{', '.join(EXTRA_MODULES)} importable")


def _recipe(subject: Subject) -> Iterator[PreflightCheck]:
    if "quantize" not in subject.stages:
        return
    from hubkit.quantize.pipeline import DEFAULT_RECIPE
    from hubkit.validate.profiles import DEFAULT_PROFILE, load_profiles

    table = subject.quantize
    profile = load_profiles()[table.profile or DEFAULT_PROFILE]
    name = table.recipe or str(profile.quantize.get("recipe", DEFAULT_RECIPE))
    if table.recipe and Path(table.recipe).suffix in (".yaml", ".yml"):
        name = str(subject.root / table.recipe) if (subject.root / table.recipe).exists() else table.recipe
    from hubkit.quantize import missing_extra

    if missing_extra():
        yield PreflightCheck(
            "recipe", NOT_CHECKED, f"{name}: modelopt loads recipes, and the quantize extra is missing"
        )
        return
    from hubkit.quantize.recipes import resolve_recipe

    try:
        recipe = resolve_recipe(name)
    except HubkitError as exc:
        yield PreflightCheck("recipe", FAILED, f"{exc}; fix [quantize] recipe")
    else:
        yield PreflightCheck("recipe", OK, f"{recipe.name} loads with modelopt")


def _calibration(subject: Subject) -> Iterator[PreflightCheck]:
    if "quantize" not in subject.stages:
        return
    from hubkit.manifest import calibration_location
    from hubkit.quantize.calibration import CalibrationSource

    if not subject.quantize.calib:
        yield PreflightCheck(
            "calibration", FAILED, 'no calibration data; add [quantize] calib = ["FILE_OR_HUB_DATASET"]'
        )
    for spec in subject.quantize.calib:
        local = subject.root / calibration_location(spec)
        name = f"calibration {spec}"
        try:
            source = CalibrationSource.parse(str(subject.root / spec) if local.exists() else spec)
        except HubkitError as exc:
            yield PreflightCheck(name, FAILED, f"{exc}; fix [quantize] calib")
            continue
        if source.kind in ("jsonl", "txt", "parquet"):
            found = _readable(name, local, "fix [quantize] calib or the file's permissions")
        elif source.kind == "disk":
            found = PreflightCheck(name, OK, f"{local}: a dataset saved with datasets.save_to_disk")
        else:
            found = _hub_dataset(name, source.location)
        named = source.config or source.split or source.column
        yield _first_record(name, source, found) if found.status == OK and (named or source.kind == "hub") else found


def _first_record(name: str, source: CalibrationSource, found: PreflightCheck) -> PreflightCheck:
    """``found``, once the source's first record is read as quantize reads it: the config, split and text
    column it names exist. Not checked without ``datasets`` (the quantize extra says so) or without the Hub."""
    from hubkit.quantize import missing_extra

    if source.kind in ("parquet", "disk", "hub") and "datasets" in missing_extra():
        return PreflightCheck(name, NOT_CHECKED, f"{found.detail}; its config, split and column need datasets to check")
    try:
        source.records(1)
    except HubkitError as exc:
        if (exc.__cause__ is not None and is_network_error(exc.__cause__)) or (source.kind == "hub" and _unasked(exc)):
            return PreflightCheck(name, NOT_CHECKED, f"{found.detail}; cannot reach it to read a record ({exc})")
        return PreflightCheck(name, FAILED, f"{exc}; fix [quantize] calib")
    return found


def _hub_dataset(name: str, dataset: str) -> PreflightCheck:
    """A Hub dataset, looked up where ``datasets`` will fetch it."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    if is_offline():
        return PreflightCheck(
            name, NOT_CHECKED, "a Hub dataset, and HF_HUB_OFFLINE is set (offline: cannot resolve it)"
        )
    install()
    api = HfApi()
    try:
        info = api.dataset_info(dataset, timeout=HUB_TIMEOUT_S)
    except RepositoryNotFoundError:
        return PreflightCheck(
            name,
            FAILED,
            f"no dataset {dataset} on {api.endpoint} (or it is private: set HF_TOKEN); fix [quantize] calib",
        )
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else None
        return PreflightCheck(name, NOT_CHECKED, f"{api.endpoint} answered HTTP {status} for the dataset {dataset}")
    except Exception as exc:
        if not is_network_error(exc):
            raise
        return PreflightCheck(
            name, NOT_CHECKED, f"cannot reach {api.endpoint} to look up the dataset ({type(exc).__name__})"
        )
    return PreflightCheck(name, OK, f"Hub dataset {info.id} at {str(info.sha)[:12]}")


@dataclass(frozen=True)
class QuantizeNeeds:
    """What the quantize plan says the manifest's run needs on a GPU set (``auto`` resolved to its mode)."""

    mode: str
    reason: str  # why this mode (``--mode auto``), or that the manifest sets it
    device_bytes: int  # resident: over all the GPUs; layerwise: on one
    device_budget: int
    host_bytes: int
    host_budget: int | None  # None: unknown here
    disk: int  # the export plus scratch (resident on an INT4 base: plus a BF16 copy of the base)
    smallest: str  # the smallest GPU sets that fit this mode, e.g. "14xB300, 47xH100"
    uses_gpu: bool = True  # False: the mode runs on the CPU wherever it is (the cast)


def quantize_needs(base: Checkpoint, gpus: str, table: QuantizeTable, out: Path | None = None) -> QuantizeNeeds:
    """What the release's quantize stage needs on ``gpus`` (``8xB300`` or ``cpu``) with this machine as the host
    and ``out``'s volume as its disk, in the mode quantize will take: ``modes.choose`` decides, as it does for
    ``hubkit quantize``; the plan is the one of ``hubkit quantize --plan``. The release runs quantize in one
    process."""
    from hubkit.quantize.cast_plan import cast_plan
    from hubkit.quantize.modes import AUTO, choose
    from hubkit.quantize.plan import available_memory, estimate, existing_folder
    from hubkit.sizes import parse_size

    host = parse_size(table.max_cpu_memory) if table.max_cpu_memory else available_memory()
    choice = choose(table.mode, config=base.config, plan=lambda: dataclasses.replace(estimate(
        base, gpus, batch=table.batch_size, seq=table.calib_seq,
        tokens=table.calib_size * max(len(table.calib), 1) * table.calib_seq, out=out,
        max_gpu_memory=table.max_gpu_memory, max_cpu_memory=table.max_cpu_memory, world=1,
    ), host_budget=host))  # fmt: skip
    mode, plan = choice.mode.name, choice.plan
    reason = f"mode auto chose {choice.reason}" if table.mode == AUTO else f'[quantize] mode = "{table.mode}"'
    if plan is None:  # a mode with a plan of its own: the cast
        free = shutil.disk_usage(existing_folder(out)).free
        cast = cast_plan(base, table.jobs, host, free)
        return QuantizeNeeds(mode, reason, 0, 0, cast.host_bytes, host, cast.export_bytes, "no GPU set", False)
    needs = plan.estimate(mode)
    sets = ", ".join(f"{n}x{gpu}" for gpu, n in plan.smallest.get(mode, {}).items() if n) or "no GPU set"
    return QuantizeNeeds(
        mode, reason, needs.device_bytes, plan.budget(mode), needs.host_bytes, host, needs.disk_bytes, sets
    )


def _gpu_target(names: list[str]) -> str | None:
    """``8xB300`` for the GPUs named, when the plan knows their model."""
    from hubkit.quantize.plan import GPU_MEMORY_GIB

    return gpu_set(names, GPU_MEMORY_GIB)


def _gpus(subject: Subject) -> Iterator[PreflightCheck]:
    if "quantize" not in subject.stages:
        return
    device = subject.quantize.device
    try:
        base = subject.base_checkpoint()
    except HubkitError:
        base = None  # the base check says why; the checks below say what they could not check
    here = None
    if base is not None:
        try:  # the mode quantize will take, and whether it needs a GPU at all
            here = quantize_needs(base, "cpu", subject.quantize, subject.out)
        except HubkitError as exc:
            yield PreflightCheck("quantize mode", FAILED, f"{exc}; fix [quantize]")
            return
    if here is not None and not here.uses_gpu:
        yield PreflightCheck("GPUs", OK, f"none needed: {here.reason}")
        yield from _memory(subject, "cpu", here)
        return
    if device == "cpu":
        yield PreflightCheck("GPUs", OK, 'none needed: [quantize] device = "cpu" (meant for tiny models)')
        yield from _memory(subject, "cpu", here)
        return
    names = visible_gpus()
    if not names:
        if device == "cuda":
            yield PreflightCheck("GPUs", FAILED, "no NVIDIA GPU is visible (nvidia-smi lists none) and [quantize] device = "
                        "\"cuda\"; run on a GPU runner, or set device = \"cpu\" for a tiny model")  # fmt: skip
        else:
            yield PreflightCheck("GPUs", WARNING, "no NVIDIA GPU is visible: quantize will run on the CPU (device = \"auto\"), "
                        "which suits tiny models only; set device = \"cuda\" to require GPUs")  # fmt: skip
            yield from _memory(subject, "cpu")
        return
    target = _gpu_target(names)
    if target is None:
        yield PreflightCheck(
            "GPUs", NOT_CHECKED, f"{len(names)}x {names[0]}: the quantize plan knows no such GPU model"
        )
        return
    try:
        needs = quantize_needs(subject.base_checkpoint(), target, subject.quantize, subject.out)
    except HubkitError as exc:
        yield PreflightCheck("GPUs", NOT_CHECKED, f"{target} visible; the base cannot be read for the plan ({exc})")
        return
    need, have = needs.device_bytes / GIB, needs.device_budget / GIB
    where = "over all of them" if needs.mode == "resident" else "on one"
    if needs.device_bytes > needs.device_budget:
        other = ', or set [quantize] mode = "layerwise"' if needs.mode == "resident" else ""
        yield PreflightCheck("GPUs", FAILED, f"the quantize plan's {needs.mode} run needs {need:,.1f} GiB of GPU memory "
                    f"{where} and {target} has {have:,.1f} GiB: run on {needs.smallest}{other}; "
                    "see 'hubkit quantize --base ... --plan'")  # fmt: skip
    else:
        yield PreflightCheck("GPUs", OK, f"{target}: {have:,.1f} GiB, the quantize plan's {needs.mode} run needs "
                    f"{need:,.1f} GiB {where}; {needs.reason}")  # fmt: skip
    yield from _memory(subject, target, needs)


def _memory(subject: Subject, target: str, needs: QuantizeNeeds | None = None) -> Iterator[PreflightCheck]:
    """This machine's memory against the quantize plan's host needs (on ``cpu`` the host is the device)."""
    if needs is None:
        try:
            needs = quantize_needs(subject.base_checkpoint(), target, subject.quantize, subject.out)
        except HubkitError as exc:
            yield PreflightCheck("host memory", NOT_CHECKED, f"the base cannot be read for the plan ({exc})")
            return
    if needs.host_budget is None:
        yield PreflightCheck("host memory", NOT_CHECKED, "this machine's available memory cannot be read")
    elif needs.host_bytes > needs.host_budget:
        yield PreflightCheck("host memory", FAILED, f"the quantize plan's {needs.mode} run needs {needs.host_bytes / GIB:,.1f}"
                    f" GiB of host memory and {needs.host_budget / GIB:,.1f} GiB is available: free memory or run on "
                    "a larger host")  # fmt: skip
    else:
        yield PreflightCheck("host memory", OK, f"{needs.host_budget / GIB:,.1f} GiB available, the quantize plan's "
                    f"{needs.mode} run needs {needs.host_bytes / GIB:,.1f} GiB")  # fmt: skip


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _disk(subject: Subject) -> Iterator[PreflightCheck]:
    if "quantize" not in subject.stages:
        return
    try:
        base = subject.base_checkpoint()
        names = visible_gpus()
        target = _gpu_target(names) or "1xB300"  # disk: any target
        needs = quantize_needs(base, target, subject.quantize, subject.out)
    except HubkitError as exc:
        yield PreflightCheck("disk", NOT_CHECKED, f"the base cannot be read for the plan ({exc})")
        return
    out_volume = _existing(subject.out.parent)
    wanted: dict[Path, list[tuple[str, int]]] = {
        out_volume: [(f"quantize ({needs.mode}: export and scratch)", needs.disk)]
    }
    if base.source.local_path("") is None:  # a Hub base is downloaded into the Hub cache first
        from huggingface_hub import constants

        cache = _existing(Path(constants.HF_HUB_CACHE))
        download = sum(entry.size for entry in base.files.values())
        same = os.stat(cache).st_dev == os.stat(out_volume).st_dev
        wanted.setdefault(out_volume if same else cache, []).append(
            (f"base download into {constants.HF_HUB_CACHE}", download)
        )
    for volume, parts in wanted.items():
        need = sum(size for _, size in parts)
        free = shutil.disk_usage(volume).free
        what = " + ".join(f"{label} {size / GIB:,.1f} GiB" for label, size in parts)
        if need > free:
            yield PreflightCheck("disk", FAILED, f"{volume} has {free / GIB:,.1f} GiB free and the release needs {what}; "
                        "free space there, or point [quantize] out (or HF_HOME) at a larger volume")  # fmt: skip
        else:
            yield PreflightCheck("disk", OK, f"{volume}: {free / GIB:,.1f} GiB free for {what}")


# ------------------------------------------------------------------------------------------- card, Hub, smoke


def card_front_matter(manifest: Manifest, hub_datasets: list[str]) -> str:
    """The card's front matter as the card stage will write it (the facts from the checkpoint left out)."""
    from hubkit.card.render import front_matter

    return f"---\n{front_matter(manifest, {'model_type': None}, hub_datasets).to_yaml()}\n---\n"


def hub_validate_yaml(endpoint: str, content: str) -> list[str]:
    """The Hub's own check of a card's metadata (``POST /api/validate-yaml``): the errors it reports.

    ``ModelCard.validate()`` sends this request to the endpoint fixed when huggingface_hub was imported; the
    release's endpoint is set later (a local server, ``[release] endpoint``), so the same request is sent here
    with that endpoint named.
    """
    from huggingface_hub import get_session
    from huggingface_hub.utils import build_hf_headers  # type: ignore[attr-defined]

    install()
    response = get_session().post(
        f"{endpoint}/api/validate-yaml",
        json={"content": content, "repoType": "model"},
        headers=build_hf_headers(),
        timeout=HUB_TIMEOUT_S,
    )
    if response.status_code == 400:
        try:
            errors = response.json().get("errors") or []
        except ValueError:
            return [response.text.strip() or "the Hub rejected the metadata"]
        return [str(error.get("message", error)) for error in errors] or ["the Hub rejected the metadata"]
    response.raise_for_status()
    return []


def _card(subject: Subject) -> Iterator[PreflightCheck]:
    if "card" not in subject.stages:
        return
    manifest = subject.manifest
    if manifest.card is None:
        yield PreflightCheck("card", FAILED, "the manifest has no [card] table; add one with at least 'license'")
        return
    template = manifest.card.template
    if template and not (subject.root / template).is_dir() and not Path(template).is_dir():
        from hubkit.resources import data_dir

        known = sorted(p.name for p in data_dir("templates").iterdir() if (p / "card.md.j2").is_file())
        if template not in known:
            yield PreflightCheck("card template", FAILED, f"'{template}' is neither a folder nor one of {', '.join(known)}; "
                        "fix [card] template")  # fmt: skip
    from hubkit.card.check import check_front_matter

    content = card_front_matter(manifest, _hub_datasets(subject))
    problems = [p.message for p in check_front_matter(content)]
    if problems:
        yield PreflightCheck("card front matter", FAILED, "; ".join(problems) + "; fix [card]")
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    if is_offline():
        yield PreflightCheck(
            "card metadata (Hub)", NOT_CHECKED, "HF_HUB_OFFLINE is set (offline: the Hub cannot check it)"
        )
        return
    try:
        errors = hub_validate_yaml(endpoint, content)
    except Exception as exc:
        if not is_network_error(exc) and type(exc).__module__.split(".")[0] != "huggingface_hub":
            raise
        yield PreflightCheck("card metadata (Hub)", NOT_CHECKED, f"{endpoint}/api/validate-yaml did not answer ({exc})")
        return
    if errors:
        yield PreflightCheck(
            "card metadata (Hub)", FAILED, f"{endpoint} rejects the card's metadata: {'; '.join(errors)}; fix [card]"
        )
    elif not problems:
        yield PreflightCheck(
            "card metadata (Hub)", OK, f"{endpoint}/api/validate-yaml accepts it (license {manifest.card.license})"
        )


def _hub_datasets(subject: Subject) -> list[str]:
    """The calibration sources that are Hub datasets (the card's front matter lists them)."""
    from hubkit.quantize.calibration import CalibrationSource

    named = []
    for spec in subject.manifest.quantize.calib if subject.manifest.quantize else []:
        local = subject.root / spec
        try:
            if CalibrationSource.parse(str(local) if local.exists() else spec).kind == "hub":
                named.append(spec)
        except HubkitError:
            pass
    return named


def _hub(subject: Subject) -> Iterator[PreflightCheck]:
    if not {"push", "tag"} & set(subject.stages) or subject.check_token is None:
        return
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        user = subject.check_token()
    except HubkitError as exc:
        unasked = _unasked(exc)
        if unasked:
            yield PreflightCheck("Hub", NOT_CHECKED, f"cannot check the token at {endpoint}: {unasked}", required=True)
        else:
            yield PreflightCheck("Hub", FAILED, str(exc))
    else:
        yield PreflightCheck("Hub", OK, f"{endpoint} accepts the token (user {user})")


def _smoke(subject: Subject) -> Iterator[PreflightCheck]:
    smoke = subject.manifest.smoke
    if "smoke" not in subject.stages or not smoke.enabled:
        return
    available, why = smoke_availability(subject.manifest)
    if available:
        yield PreflightCheck("smoke", OK, why)
    elif smoke.required:
        yield PreflightCheck("smoke", FAILED, f"[smoke] required = true, and it cannot run here: {why}")
    else:
        yield PreflightCheck(
            "smoke", WARNING, f"the smoke stage will be skipped: {why} (set [smoke] required = true to fail instead)"
        )
