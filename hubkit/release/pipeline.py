"""``hubkit release``: quantize -> card -> validate -> push -> tag -> smoke, from one manifest, resumable.

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
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.errors import ExitCode, HubkitError, Terminated, outside_fault, redact
from hubkit.manifest import calibration_location
from hubkit.progress import stage as progress_stage
from hubkit.reads import read_bounded
from hubkit.records import (
    STATE,
    check_replaceable_file,
    load_record,
    read_state,
    record_folder,
    write_json,
    write_state,
    write_text,
)
from hubkit.release.options import STAGES, ReleaseOptions
from hubkit.release.preflight import FAILED, Check, PreflightFailed, Subject, preflight
from hubkit.release.smoke import smoke_availability
from hubkit.release.workspace import (
    check_outside,
    check_replaceable,
    exclusive,
    has_files,
)

if TYPE_CHECKING:
    from hubkit.hub.push import Snapshot
    from hubkit.manifest import Manifest

VALIDATED = ".hubkit/validated.json"
LOCAL_ENDPOINT = "local"
LOCAL_STORE = ".hubkit/local-hub"
#: What a local Hub store that hubkit made holds (stores made before hubkit recorded them hold only these).
STORE_ENTRIES = frozenset({"objects", "repos", ".hubkit"})
#: The most of the previous release's card read for the card diff.
CARD_LIMIT = 16 * 1024**2


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped" | "unchanged" | "would run" | "failed"
    seconds: float = 0.0
    detail: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReleaseResult:
    manifest: str
    repo: str
    out: str
    stages: list[StageResult] = field(default_factory=list)
    card_diff: str = ""
    endpoint: str = "https://huggingface.co"
    dry_run: bool = False
    preflight: list[Check] = field(default_factory=list)
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
            "dry_run": self.dry_run, "preflight": [c.__dict__ for c in self.preflight],
            "stages": [s.__dict__ for s in self.stages], "card_diff": self.card_diff,
            "validate": {"waived": self.waived, "selected": self.selected_checks},
        }  # fmt: skip


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _source_fingerprint(path: Path) -> Any:
    """A calibration source: a local file or folder by size and mtime; a Hub dataset by its name."""
    if path.is_dir():
        return folder_fingerprint(path)
    if path.is_file():
        stat = path.stat()
        return [path.name, stat.st_size, stat.st_mtime_ns]
    return path.name


def folder_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file hubkit would publish: cheap, and changes with any edit."""
    if not folder.is_dir():
        return []
    listed = []
    for item in sorted(folder.rglob("*")):
        relative = item.relative_to(folder).as_posix()
        if item.is_file() and not relative.startswith(".hubkit/"):
            stat = item.stat()
            listed.append((relative, stat.st_size, stat.st_mtime_ns))
    return listed


class Release:
    """One run of the pipeline over a manifest."""

    def __init__(self, manifest: Manifest, options: ReleaseOptions) -> None:
        if manifest.path is None:
            raise HubkitError("the manifest has no file location")
        self.manifest, self.options = manifest, options
        self.root = manifest.path.parent
        self.out = (self.root / manifest.quantize.out).resolve()
        #: where the previous export waits while quantize makes the new one, restored if quantize fails
        self.previous = self.out.parent / f".{self.out.name}.previous"
        self.store = self.root / LOCAL_STORE
        self.state = self._load_state()
        self.result = ReleaseResult(
            str(manifest.path), manifest.release.repo, str(self.out), dry_run=options.dry_run,
            waived=list(manifest.validate_.ignore), selected_checks=list(manifest.validate_.select),
        )  # fmt: skip
        self.selected = self._selected_stages()

    # ------------------------------------------------------------------------------------- bookkeeping

    def _load_state(self) -> dict[str, Any]:
        """``state.json`` as the last run left it; what is damaged or tampered with counts as never recorded
        (those stages run again: a record is trusted to skip work only in the shape hubkit writes)."""
        state = load_record(self.out / STATE)
        if not isinstance(state, dict):
            return {}
        stages = state.get("stages")
        state["stages"] = {
            name: entry
            for name, entry in (stages.items() if isinstance(stages, dict) else [])
            if name in STAGES
            and isinstance(entry, dict)
            and isinstance(entry.get("fingerprint"), str)
            and isinstance(entry.get("outputs", {}), dict)
        }
        if not isinstance(state.get("failed", {}), dict):
            del state["failed"]
        return state

    def _save_state(self) -> None:
        if self.options.dry_run or not self.out.is_dir():
            return
        write_state(self.out, self.state)

    def _selected_stages(self) -> list[str]:
        for name in (self.options.first, self.options.last, *self.options.skip):
            if name is not None and name not in STAGES:
                raise HubkitError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
        first = STAGES.index(self.options.first) if self.options.first else 0
        last = STAGES.index(self.options.last) if self.options.last else len(STAGES) - 1
        if first > last:
            raise HubkitError(
                f"--from {self.options.first} comes after --until {self.options.last}; "
                f"the stages run in this order: {', '.join(STAGES)}"
            )
        selected = [s for s in STAGES[first : last + 1] if s not in self.options.skip]
        if not selected:
            raise HubkitError("--skip leaves no stage to run between --from and --until; select at least one")
        return selected

    def _recorded(self, stage: str) -> dict[str, Any]:
        stages = self.state.get("stages")
        return stages.get(stage, {}) if isinstance(stages, dict) else {}

    def _record(self, stage: str, fingerprint: str, outputs: dict[str, Any], seconds: float) -> None:
        self.state.setdefault("stages", {})[stage] = {
            "fingerprint": fingerprint,
            "outputs": outputs,
            "seconds": round(seconds, 3),
        }
        self._save_state()

    def _record_outcome(self, failed: StageResult | None) -> None:
        """``state.json`` says whether the last run failed, at which stage and why (absent after a pass)."""
        if self.options.dry_run:
            return
        if failed is None:
            if self.state.pop("failed", None) is not None:
                self._save_state()
            return
        self.state["failed"] = {
            "stage": failed.name, "message": failed.detail, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        }  # fmt: skip
        with contextlib.suppress(OSError, HubkitError):  # the failure is reported even where this is not written
            if self.out.is_dir() and has_files(self.out) and read_state(self.out) is None:
                return  # not hubkit's folder (it was refused): hubkit writes nothing into it
            self.out.mkdir(parents=True, exist_ok=True)
            write_state(self.out, self.state)

    def _forget_after(self, stage: str) -> None:
        """A stage ran again: everything after it must run again too."""
        stages = self.state.get("stages", {})
        for later in STAGES[STAGES.index(stage) + 1 :]:
            stages.pop(later, None)

    # ------------------------------------------------------------------------------------- running

    def run(self) -> ReleaseResult:
        self._check_inputs_outside_out()
        if self.options.dry_run:  # writes nothing, so needs no lock
            self._check_workspace()
            return self._run_stages()
        with exclusive(self.out, "[quantize] out"):
            self.state = self._load_state()  # as the run before us left it
            self._check_workspace()
            return self._run_stages()

    def _check_inputs_outside_out(self) -> None:
        """The export folder is replaced on each quantize run: none of the release's inputs may live in it."""
        assert self.manifest.path is not None
        inputs = {"manifest": self.manifest.path.resolve()}
        if self.manifest.release.endpoint == LOCAL_ENDPOINT:
            inputs["local Hub store"] = self.store.resolve()
        if self.manifest.base.path:
            inputs["base"] = (self.root / self.manifest.base.path).resolve()
        for source in map(calibration_location, self.manifest.quantize.calib):
            if (self.root / source).exists():
                inputs["calibration source"] = (self.root / source).resolve()
        for section in self.manifest.card.sections if self.manifest.card else []:
            inputs["card section"] = (self.root / section).resolve()
        check_outside(self.out, inputs, "[quantize] out")

    def _check_workspace(self) -> None:
        """Before any work: every folder this run may replace is hubkit's (or absent, or empty)."""
        check_replaceable(self.out, "[quantize] out")
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
            self.result.endpoint = redact(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
            self._preflight()
            self._each_stage()
            if any(c.status == FAILED for c in self.result.preflight):  # a dry run plans first, then says so
                raise PreflightFailed(self.result.preflight)
        return self.result

    def _each_stage(self) -> None:
        for stage in STAGES:
            if stage not in self.selected:
                self.result.stages.append(StageResult(stage, "skipped", detail="not selected"))
                continue
            fingerprint = getattr(self, f"_fingerprint_{stage}")()
            if fingerprint is not None and self._recorded(stage).get("fingerprint") == fingerprint:
                self.result.stages.append(
                    StageResult(stage, "unchanged", outputs=self._recorded(stage).get("outputs", {}))
                )
                continue
            if self.options.dry_run:
                self.result.stages.append(getattr(self, f"_plan_{stage}")())
                continue
            start = time.perf_counter()
            try:
                with progress_stage(stage):
                    outcome: StageResult = getattr(self, f"_run_{stage}")()
            except BaseException as exc:  # recorded, then on to the CLI for its exit code and one line
                failed = StageResult(stage, "failed", round(time.perf_counter() - start, 3), failure_reason(exc))
                self.result.stages.append(failed)
                self._record_outcome(failed)
                raise
            outcome.seconds = round(time.perf_counter() - start, 3)
            self.result.stages.append(outcome)
            if outcome.status == "failed":
                self._record_outcome(outcome)
                return
            if outcome.status == "ran":
                self._forget_after(stage)
                self._record(stage, getattr(self, f"_fingerprint_{stage}")() or "", outcome.outputs, outcome.seconds)
        self._record_outcome(None)

    def _stages_to_run(self) -> tuple[str, ...]:
        """The selected stages this run will run: those from the first whose inputs changed."""
        changed = False
        running = []
        for stage in self.selected:
            if not changed:
                fingerprint = getattr(self, f"_fingerprint_{stage}")()
                changed = fingerprint is None or self._recorded(stage).get("fingerprint") != fingerprint
            if changed:
                running.append(stage)
        return tuple(running)

    def _preflight(self) -> None:
        """Check what the stages that will run need, all at once; a failure stops the run before its first stage
        (a dry run reports the failures after its plan)."""
        subject = Subject(
            self.manifest, self.root, self.out, self._base_ref(), self._reference(), self._stages_to_run(),
            check_token=self._check_token,
        )  # fmt: skip
        self.result.preflight = preflight(subject)
        if not self.options.dry_run and any(c.status == FAILED for c in self.result.preflight):
            raise PreflightFailed(self.result.preflight)

    def _check_token(self) -> str:
        from hubkit.hub.push import check_token, hub_api

        return check_token(hub_api(), self._push_options(dry_run=True))

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
        from hubkit.hub.testserver import HubServer

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

    # ------------------------------------------------------------------------------------- quantize

    def _base_ref(self) -> str:
        base = self.manifest.base
        if base.path:
            return str((self.root / base.path).resolve())
        return f"hf://{base.repo}" + (f"@{base.revision}" if base.revision else "")

    def _fingerprint_quantize(self) -> str:
        ref = self._base_ref()
        listing = folder_fingerprint(Path(ref)) if not ref.startswith("hf://") else ref
        calib = [
            (c, folder_fingerprint(self.root / c) or (self.root / c).stat().st_size if (self.root / c).exists() else c)
            for c in map(calibration_location, self.manifest.quantize.calib)
        ]
        return _fingerprint(listing, self.manifest.quantize.model_dump(), calib)

    def _plan_quantize(self) -> StageResult:
        replaces = f"; replaces hubkit's earlier export in {self.out}" if self._holds_export() else ""
        return StageResult("quantize", "would run", detail=f"{self._base_ref()} -> {self.out}{replaces}")

    def _holds_export(self) -> bool:
        return self.out.is_dir() and has_files(self.out)

    def _run_quantize(self) -> StageResult:
        """Quantize into OUT; hubkit's earlier export waits beside it until the new one is there."""
        check_replaceable(self.out, "[quantize] out")
        check_replaceable(self.previous, "the previous export's place")
        shutil.rmtree(self.previous, ignore_errors=True)  # hubkit's, from a run that was killed mid-stage
        if self._holds_export():
            self.out.rename(self.previous)
        try:
            outcome = self._quantize()
        except BaseException:
            if self.previous.exists() and not (self.out.exists() and has_files(self.out)):
                with contextlib.suppress(OSError):
                    self.out.rmdir()
                self.previous.rename(self.out)  # nothing new was made: the earlier export stays
            raise
        shutil.rmtree(self.previous, ignore_errors=True)
        return outcome

    def _quantize(self) -> StageResult:
        from hubkit.quantize.options import QuantizeOptions
        from hubkit.quantize.pipeline import quantize

        table = self.manifest.quantize
        calib = tuple(str(self.root / c) if (self.root / calibration_location(c)).exists() else c for c in table.calib)
        options = QuantizeOptions(
            base=self._base_ref(), out=self.out, profile=table.profile, recipe=table.recipe, calib=calib,
            calib_size=table.calib_size, calib_seq=table.calib_seq, batch_size=table.batch_size, device=table.device,
            mode=table.mode, max_gpu_memory=table.max_gpu_memory, max_cpu_memory=table.max_cpu_memory,
            seed=table.seed, keep_intermediate=table.keep_intermediate, jobs=table.jobs, progress=self.options.progress,
            trust_remote_code=self.manifest.base.trust_remote_code,
        )  # fmt: skip
        result = quantize(options)
        self.state = self._load_state()
        self._save_state()  # the new export carries hubkit's record from now on, whatever its verdict
        errors = [f for f in result.report.findings if f.severity.value == "error"]
        if errors:
            return StageResult(
                "quantize", "failed", detail=f"the export failed validation: {errors[0].code} {errors[0].message}"
            )
        coverage = result.provenance.get("coverage", {})
        return StageResult(
            "quantize", "ran", outputs={"experts_without_tokens": coverage.get("experts_without_tokens")}
        )

    # ------------------------------------------------------------------------------------- card

    def _fingerprint_card(self) -> str | None:
        card = self.manifest.card.model_dump() if self.manifest.card else None
        return _fingerprint(card, self._recorded("quantize").get("fingerprint"), (self.out / "README.md").is_file())

    def _plan_card(self) -> StageResult:
        readme = self.out / "README.md"
        return StageResult(
            "card", "would run", detail=f"render {readme}" + (" (replaces it)" if readme.exists() else "")
        )

    def _run_card(self) -> StageResult:
        from hubkit.card.render import render_card
        from hubkit.checkpoint import load_checkpoint

        readme = self.out / "README.md"
        check_replaceable_file(readme)  # a link, a FIFO or a folder in its place is refused, never written through
        text = render_card(load_checkpoint(str(self.out)), self.manifest)
        if _card_text(readme) != text:
            write_text(readme, text)  # whole or not at all
        return StageResult("card", "ran", outputs={"bytes": len(text)})

    # ------------------------------------------------------------------------------------- validate

    def _fingerprint_validate(self) -> str:
        return _fingerprint(folder_fingerprint(self.out), self._content(), self.manifest.validate_.model_dump())

    def _snapshot(self, progress: bool) -> Snapshot:
        """The files push would upload from OUT, hashed (see ``hubkit.hub.push.Snapshot``)."""
        from hubkit.hub.push import Snapshot

        table = self.manifest.push
        write = not self.options.dry_run
        return Snapshot(self.out, tuple(table.include), tuple(table.exclude), write=write, progress=progress)

    def _content(self) -> dict[str, str] | None:
        """The content fingerprint of what push would upload from OUT now; None where OUT cannot be published as
        it is (the push stage then says why)."""
        if not self.out.is_dir():
            return {}
        try:
            return self._snapshot(progress=False).content
        except HubkitError:
            return None

    def _validation_rules(self) -> str:
        return _fingerprint(self.manifest.validate_.model_dump())

    def _validated_content(self) -> dict[str, str] | None:
        """The content the last passed validation read, under the manifest's current [validate] rules, else None."""
        record = load_record(self.out / VALIDATED)  # a link in its place is refused, never followed
        if not isinstance(record, dict) or record.get("passed") is not True:
            return None
        files = record.get("files")
        if record.get("rules") != self._validation_rules() or not isinstance(files, dict):
            return None
        return {str(path): str(sha256) for path, sha256 in files.items()}

    def _reference(self) -> str | None:
        """``[validate] reference``: a path relative to the manifest's folder, or a Hub repo (``hf://``)."""
        reference = self.manifest.validate_.reference
        if reference and not reference.startswith("hf://") and (self.root / reference).exists():
            return str(self.root / reference)
        return reference

    def _plan_validate(self) -> StageResult:
        return StageResult("validate", "would run", detail=f"validate {self.out}")

    def _run_validate(self) -> StageResult:
        from hubkit.records import write_json, write_text
        from hubkit.validate.engine import Severity
        from hubkit.validate.options import ValidateOptions
        from hubkit.validate.render import render_json
        from hubkit.validate.runner import validate

        table = self.manifest.validate_
        try:
            snapshot = self._snapshot(progress=self.options.progress)
        except HubkitError:
            snapshot = None  # OUT cannot be published as it is: validated, but nothing is recorded as pushable
        report = validate(
            str(self.out),
            ValidateOptions(
                profile=table.profile,
                reference=self._reference(),
                base=self._base_ref(),
                deep=table.deep,
                select=tuple(table.select),
                ignore=tuple(table.ignore),
                strict=table.strict,
                progress=self.options.progress,
            ),
        )
        changed = snapshot.first_change() if snapshot is not None else None
        write_text(record_folder(self.out) / "validation.json", render_json(report) + "\n")
        content = snapshot.content if report.passed and snapshot is not None and changed is None else {}
        passed = bool(content)
        write_json(self.out / VALIDATED, {"passed": passed, "rules": self._validation_rules(), "files": content})
        summary = f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} warnings"
        if table.ignore:
            summary += f"; waived: {', '.join(table.ignore)}"
        if not report.passed:
            first = next(f for f in report.findings if f.severity.value in ("error", "warning"))
            return StageResult(
                "validate", "failed", detail=f"{summary}; first {first.code} {first.file or ''}: {first.message}"
            )
        if changed is not None:
            return StageResult(
                "validate", "failed", detail=f"{changed} changed while it was validated; rerun once it is written"
            )
        return StageResult(
            "validate", "ran", detail=summary, outputs={"passed": True, "content": _fingerprint(content)}
        )

    # ------------------------------------------------------------------------------------- push

    def _push_options(self, dry_run: bool) -> Any:
        from hubkit.hub.options import PushOptions

        release, table = self.manifest.release, self.manifest.push
        return PushOptions(
            folder=self.out, repo=release.repo, revision=release.revision, atomic=release.atomic and not dry_run,
            private=release.private, batch=str(table.batch), include=tuple(table.include), exclude=tuple(table.exclude),
            delete_extra=table.delete_extra, dry_run=dry_run, validate=False, progress=self.options.progress,
        )  # fmt: skip

    def _fingerprint_push(self) -> str:
        return _fingerprint(folder_fingerprint(self.out), self._content(), self.manifest.release.model_dump(),
                            self.manifest.push.model_dump(),
                            self.manifest.release.endpoint or os.environ.get("HF_ENDPOINT"))  # fmt: skip

    def _plan_push(self) -> StageResult:
        from hubkit.hub.push import push

        if not self.out.is_dir():
            return StageResult("push", "would run", detail="after quantize")
        plan = push(self._push_options(dry_run=True))
        why = self._unvalidated()
        first = f"validates first ({why}); " if why else ""
        return StageResult("push", "would run", detail=f"{first}{len(plan.new)} new, {len(plan.changed)} changed, {plan.bytes_to_upload:,} bytes",
                           outputs={"new": plan.new, "changed": plan.changed})  # fmt: skip

    def _run_push(self) -> StageResult:
        from hubkit.hub.push import push, remote_files

        why = self._unvalidated()
        if why is not None:  # validate the export as it is now; push only what that validation read
            checked = self._run_validate()
            if checked.status == "failed":
                return StageResult("push", "failed", detail=f"{why}; validated it first: {checked.detail}; "
                                   "nothing was pushed")  # fmt: skip
            self._record("validate", self._fingerprint_validate(), checked.outputs, checked.seconds)
        validated = self._validated_content()
        if validated is None:  # validation passed, but the export cannot be hashed as push would upload it
            self._snapshot(progress=False)  # says why, as push would
            return StageResult("push", "failed", detail="nothing is pushed without a passed validation")
        previous = self._remote_card()
        result = push(self._push_options(dry_run=False), validated=validated)
        if not result.passed:
            return StageResult("push", "failed", detail="; ".join(result.mismatches[:3]))
        current = _card_text(self.out / "README.md") or ""
        self.result.card_diff = "".join(
            difflib.unified_diff(previous.splitlines(True), current.splitlines(True), "previous/README.md", "README.md")
        )
        from hubkit.hub.push import hub_api

        commit = hub_api().model_info(self.manifest.release.repo, revision=self.manifest.release.revision).sha
        files = remote_files(hub_api(), self.manifest.release.repo, self.manifest.release.revision) or {}
        before = f"{why}: validated it first, passed; " if why is not None else ""
        return StageResult("push", "ran", detail=f"{before}{len(result.new) + len(result.changed)} files uploaded",
                           outputs={"commit": commit, "files": len(files), "bytes": result.bytes_to_upload,
                                    "pull_request": result.pull_request, "merged": result.merged})  # fmt: skip

    def _unvalidated(self) -> str | None:
        """Why the export, as it is now, is not the content of a passed validation; None when it is."""
        from hubkit.hub.push import first_difference

        validated, current = self._validated_content(), self._content()
        if validated is None:
            return "no passed validation of this export under the current [validate] rules"
        if current is None:
            return "the export cannot be published as it is"
        changed = first_difference(validated, current)
        return None if changed is None else f"the export changed since its last passed validation ({changed})"

    def _remote_card(self) -> str:
        """The card of the previous release on this run's endpoint, read into memory (never from or into the
        shared Hugging Face cache, which knows a repo by its name, not by its endpoint); "" when there is none."""
        from hubkit.checkpoint.hub_client import read_file
        from hubkit.hub.push import hub_api

        release = self.manifest.release
        with contextlib.suppress(Exception):  # no previous release (or no card, or an unreadable one) is fine
            card = read_file(hub_api(), release.repo, "README.md", release.revision, limit=CARD_LIMIT)
            return card.decode("utf-8", errors="replace") if card is not None else ""
        return ""

    # ------------------------------------------------------------------------------------- tag

    def _fingerprint_tag(self) -> str | None:
        tag = self.manifest.release.tag
        return None if tag is None else _fingerprint(tag, self._recorded("push").get("outputs", {}).get("commit"))

    def _plan_tag(self) -> StageResult:
        return StageResult(
            "tag",
            "would run" if self.manifest.release.tag else "skipped",
            detail=self.manifest.release.tag or "no [release] tag",
        )

    def _run_tag(self) -> StageResult:
        from hubkit.hub.push import hub_api

        tag = self.manifest.release.tag
        if not tag:
            return StageResult("tag", "skipped", detail="no [release] tag")
        repo = self.manifest.release.repo
        commit = self._recorded("push").get("outputs", {}).get("commit")
        hub_api().create_tag(repo, tag=tag, revision=commit or self.manifest.release.revision, exist_ok=True)
        tagged = next((t.target_commit for t in hub_api().list_repo_refs(repo).tags if t.name == tag), None)
        if commit and tagged != commit:  # exist_ok keeps an existing tag where it is: say so, claim nothing
            return StageResult("tag", "skipped", detail=f"{tag} already names {tagged} and is never moved; "
                               f"set a new [release] tag to tag {commit}", outputs={"tag": tag, "commit": tagged})  # fmt: skip
        return StageResult("tag", "ran", detail=tag, outputs={"tag": tag, "commit": tagged})

    # ------------------------------------------------------------------------------------- smoke

    def _fingerprint_smoke(self) -> str | None:
        return _fingerprint(self._recorded("push").get("outputs", {}).get("commit"), self.manifest.smoke.model_dump())

    def _plan_smoke(self) -> StageResult:
        smoke = self.manifest.smoke
        if not smoke.enabled:
            return StageResult("smoke", "skipped", detail="disabled in [smoke]")
        available, why = smoke_availability(self.manifest)
        if available:
            return StageResult("smoke", "would run", detail=why)
        return StageResult("smoke", "would fail" if smoke.required else "skipped", detail=why)

    def _run_smoke(self) -> StageResult:
        smoke = self.manifest.smoke
        if not smoke.enabled:
            return StageResult("smoke", "skipped", detail="disabled in [smoke]")
        available, why = smoke_availability(self.manifest)
        if not available and smoke.required:
            return StageResult("smoke", "failed", detail=f"did not run, and [smoke] required = true: {why}")
        if not available:
            return StageResult("smoke", "skipped", detail=f"skipped: {why}")
        from hubkit.release.smoke import run_smoke

        if not self.out.is_dir():  # smoke alone (--from smoke) on a new folder: it is hubkit's from the start
            self.out.mkdir(parents=True)
            write_state(self.out, self.state)
        record = run_smoke(self.manifest, self.out)
        write_json(record_folder(self.out) / "smoke.json", record)
        if not record["ok"]:
            return StageResult("smoke", "failed", detail=record["summary"], outputs=record)
        # the card may now say where the release was validated: render it again and publish just that change
        for stage in ("card", "validate", "push"):
            outcome: StageResult = getattr(self, f"_run_{stage}")()
            if outcome.status == "failed":
                return StageResult("smoke", "failed", detail=f"after smoke, {stage}: {outcome.detail}", outputs=record)
            self._record(stage, getattr(self, f"_fingerprint_{stage}")() or "", outcome.outputs, 0.0)
        return StageResult("smoke", "ran", detail=record["summary"], outputs=record)


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


def _card_text(readme: Path) -> str | None:
    """The export's README.md as text; None when there is none, or none that can be read within bounds."""
    from hubkit.card.check import MAX_CARD_BYTES

    try:
        return read_bounded(readme, limit=MAX_CARD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
