"""Render a validation report as text (people), JSON (machines) or GitHub workflow commands (CI)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from hubkit.records import append_text
from hubkit.validate.engine import Check, Finding, Report, Severity

SCHEMA_VERSION = 1
#: GitHub shows at most this many annotations of each kind per step.
GITHUB_ANNOTATION_CAP = 10
_GITHUB_COMMAND = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _counts(report: Report) -> str:
    return (
        f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} warnings, "
        f"{report.count(Severity.INFO)} infos ({report.checks_run} checks)"
    )


def render_text(report: Report) -> str:
    """Findings grouped by file, then by family; a PASSED / FAILED line last."""
    lines = [f"hubkit validate {report.path} (profile {report.profile}, reference {report.reference or 'none'})"]
    by_file: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_file[finding.file or "(checkpoint)"].append(finding)
    for file in sorted(by_file, key=lambda f: (f == "(checkpoint)", f)):
        lines.append("")
        lines.append(file)
        for finding in sorted(by_file[file], key=lambda f: (f.code, f.line or 0, f.tensor or "")):
            where = f" [{finding.tensor}]" if finding.tensor else ""
            at = f"line {finding.line}: " if finding.line else ""
            lines.append(f"  {finding.code} {finding.severity.value:<7} {finding.check}: {at}{finding.message}{where}")
    lines.append("")
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: {_counts(report)}")
    return "\n".join(lines)


def report_dict(report: Report) -> dict[str, object]:
    return {
        "schema": SCHEMA_VERSION,
        "path": report.path,
        "profile": report.profile,
        "reference": report.reference,
        "summary": {
            "errors": report.count(Severity.ERROR),
            "warnings": report.count(Severity.WARNING),
            "infos": report.count(Severity.INFO),
            "checks": report.checks_run,
            "passed": report.passed,
        },
        "findings": [
            {
                "code": f.code,
                "severity": f.severity.value,
                "check": f.check,
                "message": f.message,
                "file": f.file,
                "tensor": f.tensor,
                "line": f.line,
            }
            for f in report.findings
        ],
    }


def render_json(report: Report) -> str:
    return json.dumps(report_dict(report), indent=2)


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def render_github(report: Report) -> str:
    """Workflow annotations, most severe first and within GitHub's per-step caps, then the summary line."""
    lines = []
    shown: dict[Severity, int] = defaultdict(int)
    for finding in report.findings:  # already sorted most severe first
        if shown[finding.severity] >= GITHUB_ANNOTATION_CAP:
            continue
        shown[finding.severity] += 1
        properties = [f"title={_escape_property(f'{finding.code} {finding.check}')}"]
        if finding.file:
            where_file = [f"file={_escape_property(os.path.join(report.path, finding.file))}"]
            if finding.line:
                where_file.append(f"line={finding.line}")
            properties[:0] = where_file
        where = f" [{finding.tensor}]" if finding.tensor else ""
        lines.append(
            f"::{_GITHUB_COMMAND[finding.severity]} {','.join(properties)}::{_escape_data(finding.message + where)}"
        )
    hidden = len(report.findings) - sum(shown.values())
    if hidden:
        lines.append(f"{hidden} more findings are not annotated; see the step summary or run with --format json")
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: {_counts(report)}")
    return "\n".join(lines)


def github_step_summary(report: Report) -> str:
    """A Markdown summary for ``$GITHUB_STEP_SUMMARY``."""
    status = "✅ PASSED" if report.passed else "❌ FAILED"
    lines = [
        f"### hubkit validate: {status}",
        "",
        f"`{report.path}` · profile `{report.profile}` · reference `{report.reference or 'none'}` · {_counts(report)}",
        "",
    ]
    if report.findings:
        lines += ["| code | severity | file | message |", "| --- | --- | --- | --- |"]
        for f in report.findings[:200]:
            message = (f.message + (f" [{f.tensor}]" if f.tensor else "")).replace("|", "\\|")
            where = f"{f.file}:{f.line}" if f.file and f.line else f.file or ""
            lines.append(f"| {f.code} | {f.severity.value} | {where} | {message} |")
        if len(report.findings) > 200:
            lines.append(f"\n{len(report.findings) - 200} more findings; run with --format json for all.")
    return "\n".join(lines) + "\n"


def write_github_step_summary(report: Report) -> None:
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if target:
        append_text(Path(target), github_step_summary(report))


def render_check_table(checks: list[Check]) -> str:
    lines = [f"{'code':<6} {'severity':<8} {'family':<13} name"]
    for c in checks:
        extra = f" (needs --{next(iter(c.needs))})" if c.needs else ""
        lines.append(f"{c.code:<6} {c.severity.value:<8} {c.family:<13} {c.name}{extra}")
    return "\n".join(lines)


def render_check_json(checks: list[Check]) -> str:
    return json.dumps(
        [
            {
                "code": c.code,
                "name": c.name,
                "severity": c.severity.value,
                "family": c.family,
                "needs": sorted(c.needs),
                "what": c.what,
                "why": c.why,
            }
            for c in checks
        ],
        indent=2,
    )
