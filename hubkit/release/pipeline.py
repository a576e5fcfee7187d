"""``hubkit release``: quantize -> card -> validate -> push -> tag -> smoke, from one manifest, resumable.

The stages are classes listed once, in order, in ``hubkit.release.stages`` (one module each: its name, its
fingerprint, its plan and its run). This module runs them: it keeps the state file, the lock and the endpoint.

Each stage records its inputs' fingerprint, outputs and timing in ``OUT/.hubkit/state.json``. A rerun skips a
stage whose fingerprint is unchanged; a changed input reruns that stage and everything after it. The validate
and push stages' fingerprints include the content (each file's sha256) of what push would upload.

Validation cannot be bypassed: a passed validation records the content it read (``OUT/.hubkit/validated.json``),
and the push stage uploads only that content. When the export differs from it (an edit after the validation,
``--skip validate``, ``--from push``, other ``[validate]`` rules), the push stage validates the export first and
pushes nothing if that fails.

Before the first stage the preflight checks what the stages that will run need (``hubkit.release.preflight``),
all at once. A stage that fails, also by an error or a signal, is recorded in the result and in ``state.json``
before the error goes on, so the outcome is always reported.

A run holds the lock of OUT from start to end, and replaces OUT (or the local Hub store) only when hubkit's
record says hubkit made it (see ``hubkit.release.workspace``); anything else is refused before any work.

OUT is ``[quantize] out``, or ``[release] export``: an export made elsewhere (modelopt's ``hf_ptq.py``, ...),
released where it is. Its quantize stage is skipped ("export made elsewhere"), and the run writes only its card
(README.md, where the export has none of its own) and its records (``.hubkit/``) there: ownership gates
deletion, never a release.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.errors import ExitCode, HubkitError, Terminated, outside_fault, redact
from hubkit.locks import exclusive
from hubkit.manifest import calibration_location
from hubkit.progress import stage as progress_stage
from hubkit.records import STATE, load_record, read_state, write_state
from hubkit.release.options import ReleaseOptions
from hubkit.release.preflight import FAILED, PreflightCheck, PreflightFailed, Subject, blocking, preflight
from hubkit.release.stages import NAMES, STAGES, Stage, StageResult
from hubkit.release.stages.push import push_options
from hubkit.release.workspace import (
    MADE_ELSEWHERE,
    check_export,
    check_outside,
    check_replaceable,
    has_files,
)

if TYPE_CHECKING:
    from hubkit.hub.remote import Retry
    from hubkit.manifest import Manifest

__all__ = ["Release", "ReleaseOptions", "ReleaseResult", "StageResult", "exit_code", "failure_reason"]

LOCAL_ENDPOINT = "local"
LOCAL_STORE = ".hubkit/local-hub"
#: What a local Hub store that hubkit made holds (stores made before hubkit recorded them hold only these).
STORE_ENTRIES = frozenset({"objects", "repos", ".hubkit"})


@dataclass
class ReleaseResult:
    manifest: str
    repo: str
    out: str
    stages: list[StageResult] = field(default_factory=list)
    card_diff: str = ""
    endpoint: str = "https://huggingface.co"
    dry_run: bool = False
    preflight: list[PreflightCheck] = field(default_factory=list)
    waived: list[str] = field(default_factory=list)  # [validate] ignore
    selected_checks: list[str] = field(default_factory=list)  # [validate] select

    @property
    def passed(self) -> bool:
        return not any(s.status == "failed" for s in self.stages) and not any(
            c.status == FAILED for c in self.preflight
        )

    @property
    def started(self) -> bool:
        """Whether the run got as far as its preflight (else it stopped on an input error, reported alone)."""
        return bool(self.preflight or self.stages)

    @property
    def failure(self) -> StageResult | None:
        return next((s for s in self.stages if s.status == "failed"), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": 1, "manifest": self.manifest, "repo": self.repo, "out": self.out, "passed": self.passed,
            "dry_run": self.dry_run, "preflight": [c.as_dict() for c in self.preflight],
            "stages": [s.__dict__ for s in self.stages], "card_diff": self.card_diff,
            "validate": {"waived": self.waived, "selected": self.selected_checks},
        }  # fmt: skip


class Release:
    """One run of the pipeline over a manifest."""

    def __init__(self, manifest: Manifest, options: ReleaseOptions) -> None:
        if manifest.path is None:
            raise HubkitError("the manifest has no file location")
        self.manifest, self.options = manifest, options
        self.root = manifest.path.parent
        #: the export: ``[quantize] out`` (hubkit's, replaced on each quantize) or ``[release] export`` (made
        #: elsewhere: hubkit writes only its card and its records there, and deletes nothing)
        self.out: Path = (self.root / manifest.export).resolve()
        self.role = manifest.export_key
        #: where the previous export waits while quantize makes the new one, restored if quantize fails
        self.previous = self.out.parent / f".{self.out.name}.previous"
        self.store = self.root / LOCAL_STORE
        self.state = self.load_state()
        self.result = ReleaseResult(
            str(manifest.path), manifest.release.repo, str(self.out), dry_run=options.dry_run,
            waived=list(manifest.validate_.ignore), selected_checks=list(manifest.validate_.select),
        )  # fmt: skip
        #: the stages, in the order they run
        self.stages: dict[str, Stage] = {stage.name: stage(self) for stage in STAGES}
        self.selected = self._selected_stages()

    # ------------------------------------------------------------------------------------- bookkeeping

    def load_state(self) -> dict[str, Any]:
        """``state.json`` as the last run left it; what is damaged or tampered with counts as never recorded
        (those stages run again: a record is trusted to skip work only in the shape hubkit writes)."""
        state = load_record(self.out / STATE)
        if not isinstance(state, dict):
            return {}
        stages = state.get("stages")
        state["stages"] = {
            name: entry
            for name, entry in (stages.items() if isinstance(stages, dict) else [])
            if name in NAMES
            and isinstance(entry, dict)
            and isinstance(entry.get("fingerprint"), str)
            and isinstance(entry.get("outputs", {}), dict)
        }
        if not isinstance(state.get("failed", {}), dict):
            del state["failed"]
        return state

    def save_state(self) -> None:
        if self.options.dry_run or not self.out.is_dir():
            return
        if self.manifest.made_elsewhere:  # hubkit's records in it never make the user's export replaceable
            self.state["export"] = MADE_ELSEWHERE
        write_state(self.out, self.state)

    def _selected_stages(self) -> list[str]:
        for name in (self.options.first, self.options.last, *self.options.skip):
            if name is not None and name not in NAMES:
                raise HubkitError(f"unknown stage '{name}'; stages: {', '.join(NAMES)}")
        first = NAMES.index(self.options.first) if self.options.first else 0
        last = NAMES.index(self.options.last) if self.options.last else len(NAMES) - 1
        if first > last:
            raise HubkitError(
                f"--from {self.options.first} comes after --until {self.options.last}; "
                f"the stages run in this order: {', '.join(NAMES)}"
            )
        selected = [s for s in NAMES[first : last + 1] if s not in self.options.skip]
        if self.manifest.made_elsewhere and selected == ["quantize"]:
            raise HubkitError(
                "[release] export names an export made elsewhere: the quantize stage does not run; select a later stage"
            )
        if self.manifest.made_elsewhere and "quantize" in selected:
            selected.remove("quantize")
        if not selected:
            raise HubkitError("--skip leaves no stage to run between --from and --until; select at least one")
        return selected

    def stage(self, name: str) -> Stage:
        """This run's stage ``name`` (a stage that runs another, as smoke runs card, validate and push)."""
        return self.stages[name]

    def recorded(self, stage: str) -> dict[str, Any]:
        """What ``stage`` recorded at its last run (its fingerprint and outputs); {} when it never ran."""
        stages = self.state.get("stages")
        return stages.get(stage, {}) if isinstance(stages, dict) else {}

    def record(self, stage: str, fingerprint: str, outputs: dict[str, Any], seconds: float) -> None:
        """``stage`` ran: its fingerprint and outputs go into ``state.json`` at once."""
        self.state.setdefault("stages", {})[stage] = {
            "fingerprint": fingerprint,
            "outputs": outputs,
            "seconds": round(seconds, 3),
        }
        self.save_state()

    def _record_outcome(self, failed: StageResult | None) -> None:
        """``state.json`` says whether the last run failed, at which stage and why (absent after a pass)."""
        if self.options.dry_run:
            return
        if failed is None:
            if self.state.pop("failed", None) is not None:
                self.save_state()
            return
        self.state["failed"] = {
            "stage": failed.name, "message": failed.detail, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }  # fmt: skip
        with contextlib.suppress(OSError, HubkitError):  # the failure is reported even where this is not written
            if self.manifest.made_elsewhere:
                self.save_state()  # its records only, and only into an export that exists
                return
            if self.out.is_dir() and has_files(self.out) and read_state(self.out) is None:
                return  # not hubkit's folder (it was refused): hubkit writes nothing into it
            self.out.mkdir(parents=True, exist_ok=True)
            write_state(self.out, self.state)

    def _forget_after(self, stage: str) -> None:
        """A stage ran again: everything after it must run again too."""
        stages = self.state.get("stages", {})
        for later in NAMES[NAMES.index(stage) + 1 :]:
            stages.pop(later, None)

    # ------------------------------------------------------------------------------------- running

    def run(self) -> ReleaseResult:
        self._check_inputs_outside_out()
        if self.options.dry_run:  # writes nothing, so needs no lock
            self._check_workspace()
            return self._run_stages()
        with exclusive(self.out, self.role):
            self.state = self.load_state()  # as the run before us left it
            self._check_workspace()
            return self._run_stages()

    def _check_inputs_outside_out(self) -> None:
        """The export folder is replaced on each quantize run (or published as it is): none of the release's
        inputs may live in it."""
        assert self.manifest.path is not None
        inputs = {"manifest": self.manifest.path.resolve()}
        if self.manifest.release.endpoint == LOCAL_ENDPOINT:
            inputs["local Hub store"] = self.store.resolve()
        if self.manifest.base.path:
            inputs["base"] = (self.root / self.manifest.base.path).resolve()
        calib = self.manifest.quantize.calib if self.manifest.quantize else []
        for source in map(calibration_location, calib):
            if (self.root / source).exists():
                inputs["calibration source"] = (self.root / source).resolve()
        for section in self.manifest.card.sections if self.manifest.card else []:
            inputs["card section"] = (self.root / section).resolve()
        if self.manifest.made_elsewhere:
            check_outside(self.out, inputs, self.role, "the release publishes that folder as it is")
        else:
            check_outside(self.out, inputs, self.role)

    def _check_workspace(self) -> None:
        """Before any work: every folder this run may replace is hubkit's (or absent, or empty); an export made
        elsewhere is never replaced, only written into (its card and hubkit's records), so it must exist."""
        if self.manifest.made_elsewhere:
            check_export(self.out, self.role)
        else:
            check_replaceable(self.out, self.role)
        if "quantize" in self.selected:
            check_replaceable(self.previous, "the previous export's place")
        if self.manifest.release.endpoint == LOCAL_ENDPOINT and self.store.exists():
            entries = {p.name for p in self.store.iterdir()} if self.store.is_dir() else {"?"}
            if read_state(self.store) is None and not entries <= STORE_ENTRIES:
                raise HubkitError(
                    f"the local Hub store {self.store} holds files that hubkit did not make; move them away"
                )

    def _run_stages(self) -> ReleaseResult:
        with self._endpoint():
            local = self.manifest.release.endpoint == LOCAL_ENDPOINT  # a server that stops with the run: no link
            self.result.endpoint = (
                LOCAL_ENDPOINT if local else redact(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
            )
            self._preflight()
            self._each_stage()
            if any(c.status == FAILED for c in self.result.preflight):  # a dry run plans first, then says so
                raise PreflightFailed(self.result.preflight)
        return self.result

    def _each_stage(self) -> None:
        for name, stage in self.stages.items():
            if name not in self.selected:
                why = "export made elsewhere" if name == "quantize" and self.manifest.made_elsewhere else "not selected"
                self.result.stages.append(StageResult(name, "skipped", detail=why))
                continue
            fingerprint = stage.fingerprint()
            if fingerprint is not None and self.recorded(name).get("fingerprint") == fingerprint:
                self.result.stages.append(
                    StageResult(name, "unchanged", outputs=self.recorded(name).get("outputs", {}))
                )
                continue
            if self.options.dry_run:
                self.result.stages.append(stage.plan())
                continue
            start = time.perf_counter()
            try:
                with progress_stage(name):
                    outcome = stage.run()
            except BaseException as exc:  # recorded, then on to the CLI for its exit code and one line
                failed = StageResult(name, "failed", round(time.perf_counter() - start, 3), failure_reason(exc))
                self.result.stages.append(failed)
                self._record_outcome(failed)
                raise
            outcome.seconds = round(time.perf_counter() - start, 3)
            self.result.stages.append(outcome)
            if outcome.status == "failed":
                self._record_outcome(outcome)
                return
            if outcome.status == "ran":
                self._forget_after(name)
                self.record(name, stage.fingerprint() or "", outcome.outputs, outcome.seconds)
        self._record_outcome(None)

    def _stages_to_run(self) -> tuple[str, ...]:
        """The selected stages this run will run: those from the first whose inputs changed."""
        changed = False
        running = []
        for name in self.selected:
            if not changed:
                fingerprint = self.stage(name).fingerprint()
                changed = fingerprint is None or self.recorded(name).get("fingerprint") != fingerprint
            if changed:
                running.append(name)
        return tuple(running)

    def _preflight(self) -> None:
        """Check what the stages that will run need, all at once; a failure stops the run before its first stage
        (a dry run reports the failures after its plan)."""
        subject = Subject(
            self.manifest, self.root, self.out, self.base_ref(), self.reference(), self._stages_to_run(),
            check_token=self._check_token,
        )  # fmt: skip
        self.result.preflight = preflight(subject)
        if not self.options.dry_run and blocking(self.result.preflight):
            raise PreflightFailed(self.result.preflight)

    def _check_token(self) -> str:
        from hubkit.hub.push import check_token, hub_api

        return check_token(hub_api(), push_options(self.manifest, out=self.out, progress=False, dry_run=True))

    @contextlib.contextmanager
    def _endpoint(self) -> Iterator[None]:
        """``endpoint = "local"``: a local Hub-compatible server under the manifest's folder, for this run."""
        endpoint = self.manifest.release.endpoint
        if endpoint != LOCAL_ENDPOINT:
            saved = os.environ.get("HF_ENDPOINT")
            if endpoint:
                os.environ["HF_ENDPOINT"] = endpoint
            try:
                yield
            finally:
                if endpoint:
                    _restore("HF_ENDPOINT", saved)
            return
        from hubkit.hub.server import HubServer

        with contextlib.ExitStack() as stack:
            store = self.store
            if self.options.dry_run and not store.is_dir():  # a dry run writes nothing: an empty Hub of its own
                store = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hubkit-dry-run-")))
            server = HubServer(store, user="release")  # its token is random, for this run only
            if store == self.store and not self.options.dry_run and read_state(store) is None:
                write_state(store, {"what": "local Hub store"})
            saved_endpoint, saved_token = os.environ.get("HF_ENDPOINT"), os.environ.get("HF_TOKEN")
            server.start()
            os.environ["HF_ENDPOINT"], os.environ["HF_TOKEN"] = server.endpoint, server.token
            try:
                yield
            finally:
                server.stop()
                _restore("HF_ENDPOINT", saved_endpoint)
                _restore("HF_TOKEN", saved_token)

    def base_ref(self) -> str:
        """``[base]``: a local folder (absolute) or ``hf://REPO[@REVISION]``."""
        base = self.manifest.base
        if base.path:
            return str((self.root / base.path).resolve())
        return f"hf://{base.repo}" + (f"@{base.revision}" if base.revision else "")

    def reference(self) -> str | None:
        """``[validate] reference``: a path relative to the manifest's folder, or a Hub repo (``hf://``)."""
        reference: str | None = self.manifest.validate_.reference
        if reference and not reference.startswith("hf://") and (self.root / reference).exists():
            return str(self.root / reference)
        return reference

    def hub(self) -> tuple[Any, Retry]:
        """The Hub client of this run's endpoint, and the retries push makes its calls with."""
        from hubkit.hub.push import hub_api
        from hubkit.hub.remote import Retry

        api = hub_api()
        options = push_options(self.manifest, out=self.out, progress=False, dry_run=True)
        return api, Retry(options.retries, options.backoff_s, str(api.endpoint))


def failure_reason(exc: BaseException) -> str:
    """What stopped a stage, in words, for the summary and ``state.json``."""
    if isinstance(exc, Terminated):
        return "terminated (SIGTERM)"
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C)"
    if isinstance(exc, HubkitError):
        return redact(str(exc))
    if outside_fault(exc) is not None:
        return redact(str(outside_fault(exc)))
    if isinstance(exc, SystemExit):
        return f"exited with code {exc.code}"
    return redact(f"internal error: {type(exc).__name__}: {exc}")


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def exit_code(result: ReleaseResult) -> int:
    return ExitCode.OK if result.passed else ExitCode.ARTIFACT_FAILED
