"""The validate stage: the export checked under ``[validate]``; a pass records the content it read
(``OUT/.hubkit/validated.json``), the only content the push stage uploads."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hubkit.errors import HubkitError
from hubkit.records import load_record, record_folder, write_json, write_text
from hubkit.release.stages.base import Stage, StageResult, fingerprint, folder_fingerprint

if TYPE_CHECKING:
    from hubkit.hub.push import Snapshot
    from hubkit.manifest import Manifest
    from hubkit.release.pipeline import Release
    from hubkit.validate.options import ValidateOptions

VALIDATED = ".hubkit/validated.json"


class Validate(Stage):
    name = "validate"

    def fingerprint(self) -> str:
        return fingerprint(folder_fingerprint(self.out), content(self.release), self.manifest.validate_.model_dump())

    def plan(self) -> StageResult:
        return StageResult(self.name, "would run", detail=f"validate {self.out}")

    def run(self) -> StageResult:
        from hubkit.validate.engine import Severity
        from hubkit.validate.render import render_json
        from hubkit.validate.runner import validate

        release, table = self.release, self.manifest.validate_
        try:
            snapshot = export_snapshot(release, progress=release.options.progress)
        except HubkitError:
            snapshot = None  # OUT cannot be published as it is: validated, but nothing is recorded as pushable
        options = validate_options(
            self.manifest, reference=release.reference(), base=release.base_ref(), progress=release.options.progress
        )
        report = validate(str(self.out), options)
        changed = snapshot.first_change() if snapshot is not None else None
        write_text(record_folder(self.out) / "validation.json", render_json(report) + "\n")
        checked = snapshot.content if report.passed and snapshot is not None and changed is None else {}
        write_json(
            self.out / VALIDATED, {"passed": bool(checked), "rules": validation_rules(release), "files": checked}
        )
        summary = f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} warnings"
        if table.ignore:
            summary += f"; waived: {', '.join(table.ignore)}"
        if not report.passed:
            first = next(f for f in report.findings if f.severity.value in ("error", "warning"))
            return StageResult(
                self.name, "failed", detail=f"{summary}; first {first.code} {first.file or ''}: {first.message}"
            )
        if changed is not None:
            return StageResult(
                self.name, "failed", detail=f"{changed} changed while it was validated; rerun once it is written"
            )
        return StageResult(self.name, "ran", detail=summary, outputs={"passed": True, "content": fingerprint(checked)})


def validate_options(manifest: Manifest, *, reference: str | None, base: str, progress: bool) -> ValidateOptions:
    """The manifest's ``[validate]`` table as the options of ``validate``."""
    from hubkit.options import from_manifest
    from hubkit.validate.options import ValidateOptions

    return from_manifest(ValidateOptions, manifest, reference=reference, base=base, progress=progress)


def export_snapshot(release: Release, progress: bool) -> Snapshot:
    """The files push would upload from OUT, hashed (see ``hubkit.hub.push.Snapshot``)."""
    from hubkit.hub.push import Snapshot

    table = release.manifest.push
    write = not release.options.dry_run
    return Snapshot(release.out, tuple(table.include), tuple(table.exclude), write=write, progress=progress)


def content(release: Release) -> dict[str, str] | None:
    """The content fingerprint of what push would upload from OUT now; None where OUT cannot be published as it
    is (the push stage then says why)."""
    if not release.out.is_dir():
        return {}
    try:
        return export_snapshot(release, progress=False).content
    except HubkitError:
        return None


def validation_rules(release: Release) -> str:
    return fingerprint(release.manifest.validate_.model_dump())


def validated_content(release: Release) -> dict[str, str] | None:
    """The content the last passed validation read, under the manifest's current [validate] rules, else None."""
    record = load_record(release.out / VALIDATED)  # a link in its place is refused, never followed
    if not isinstance(record, dict) or record.get("passed") is not True:
        return None
    files = record.get("files")
    if record.get("rules") != validation_rules(release) or not isinstance(files, dict):
        return None
    return {str(path): str(sha256) for path, sha256 in files.items()}
