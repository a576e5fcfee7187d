"""Render a validation report as text (people), JSON (machines), SARIF (code scanning), Markdown (pull-request
comments, step summaries) or GitHub workflow commands (CI)."""

from __future__ import annotations

import html
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from urllib.parse import quote

from hubkit import __version__
from hubkit.output import Level, annotation, counted
from hubkit.validate.engine import Check, Finding, Report, Severity, all_checks

SCHEMA_VERSION = 1
#: GitHub shows at most this many annotations of each kind per step.
GITHUB_ANNOTATION_CAP = 10
_GITHUB_LEVEL: dict[Severity, Level] = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def _counts(report: Report) -> str:
    return (
        f"{report.count(Severity.ERROR)} errors, {report.count(Severity.WARNING)} warnings, "
        f"{report.count(Severity.INFO)} infos ({report.checks_run} checks)"
    )


def finding_groups(findings: list[Finding]) -> list[list[Finding]]:
    """Findings that differ only in their tensor (and so in the shard that stores it), together, in the order
    first seen: one wrong group size is one row with a count, not 48 near-identical lines."""
    groups: dict[tuple[object, ...], list[Finding]] = {}
    for f in findings:
        file = f.file if f.tensor is None else None
        groups.setdefault((f.code, f.severity, f.check, f.message, file, f.line), []).append(f)
    return list(groups.values())


def _group_message(group: list[Finding]) -> str:
    """The message of a group: one finding's with its tensor; several with how many and the first few names."""
    first = group[0]
    if len(group) == 1:
        return first.message + (f" [{first.tensor}]" if first.tensor else "")
    tensors = [f.tensor for f in group if f.tensor]
    files = {f.file for f in group}
    noun = "tensors" if len(files) < 2 else f"tensors in {len(files)} files"
    return f"{first.message} ({counted(tensors, noun) if len(tensors) == len(group) else f'{len(group)} times'})"


def render_text(report: Report) -> str:
    """Findings grouped by file, then by family (repeated findings of a check in one row); PASSED / FAILED last."""
    lines = [f"hubkit validate {report.path} (profile {report.profile}, reference {report.reference or 'none'})"]
    by_file: dict[str, list[list[Finding]]] = defaultdict(list)
    for group in finding_groups(report.findings):
        by_file[group[0].file or "(checkpoint)"].append(group)
    for file in sorted(by_file, key=lambda f: (f == "(checkpoint)", f)):
        lines.append("")
        lines.append(file)
        for group in sorted(by_file[file], key=lambda g: (g[0].code, g[0].line or 0, g[0].tensor or "")):
            first = group[0]
            at = f"line {first.line}: " if first.line else ""
            lines.append(f"  {first.code} {first.severity.value:<7} {first.check}: {at}{_group_message(group)}")
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


SARIF_SCHEMA = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
_SARIF_LEVEL = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
#: The base of relative artifact URIs: the folder hubkit ran in (GitHub reads them from the repository's root).
SARIF_SOURCE_ROOT = "%SRCROOT%"


def _working_folder() -> Path | None:
    try:
        return Path.cwd()
    except OSError:  # removed while hubkit ran: every location is then an absolute URI
        return None


def _sarif_location(report: Report, file: str | None, line: int | None) -> dict[str, object]:
    """A file of the checkpoint (the checkpoint itself when ``file`` is None) as a SARIF location: relative to the
    working folder when it lies inside it, else an absolute ``file:`` URI (an ``hf://`` address for a Hub repo)."""
    parts = [report.path.rstrip("/"), *([file] if file else [])]
    if report.path.startswith("hf://"):
        artifact: dict[str, object] = {"uri": "/".join(quote(part, safe="/:@") for part in parts)}
    else:
        target = Path(os.path.abspath(os.path.join(*parts)))
        working = _working_folder()
        if working is not None and target.is_relative_to(working):
            artifact = {"uri": quote(target.relative_to(working).as_posix()), "uriBaseId": SARIF_SOURCE_ROOT}
        else:
            artifact = {"uri": target.as_uri()}
    physical: dict[str, object] = {"artifactLocation": artifact}
    if file and line:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def report_sarif(report: Report, checks: list[Check] | None = None) -> dict[str, object]:
    """The report as a SARIF 2.1.0 log (GitHub code scanning): one run, ``checks`` (every check) as its rules."""
    checks = all_checks() if checks is None else checks
    rule_index = {check.code: index for index, check in enumerate(checks)}
    rules = [
        {
            "id": check.code,
            "name": check.name,
            "shortDescription": {"text": check.what},
            "fullDescription": {"text": check.why},
            "help": {"text": f"{check.what}\n\n{check.why}"},
            "defaultConfiguration": {"level": _SARIF_LEVEL[check.severity]},
            "properties": {"family": check.family, "tags": [check.family]},
        }
        for check in checks
    ]
    results = []
    for finding in report.findings:
        result: dict[str, object] = {
            "ruleId": finding.code,
            "level": _SARIF_LEVEL[finding.severity],
            "message": {"text": finding.message + (f" [{finding.tensor}]" if finding.tensor else "")},
            "locations": [_sarif_location(report, finding.file, finding.line)],
        }
        if finding.code in rule_index:
            result["ruleIndex"] = rule_index[finding.code]
        if finding.tensor:
            result["properties"] = {"tensor": finding.tensor}
        results.append(result)
    run: dict[str, object] = {
        "tool": {"driver": {"name": "hubkit", "version": __version__, "semanticVersion": __version__, "rules": rules}},
        "results": results,
        "properties": {"profile": report.profile, "reference": report.reference, "passed": report.passed},
    }
    working = _working_folder()
    if working is not None:
        run["originalUriBaseIds"] = {SARIF_SOURCE_ROOT: {"uri": working.as_uri().rstrip("/") + "/"}}
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def render_sarif(report: Report, checks: list[Check] | None = None) -> str:
    return json.dumps(report_sarif(report, checks), indent=2)


def render_github(report: Report) -> str:
    """Workflow annotations (one per group of repeated findings), most severe first and within GitHub's per-step
    caps, then the summary line."""
    lines = []
    shown: dict[Severity, int] = defaultdict(int)
    annotated = 0
    for group in finding_groups(report.findings):  # already sorted most severe first
        first = group[0]
        if shown[first.severity] >= GITHUB_ANNOTATION_CAP:
            continue
        shown[first.severity] += 1
        annotated += len(group)
        file = os.path.join(report.path, first.file) if first.file else None
        title = f"{first.code} {first.check}"
        line = first.line if file else None
        lines.append(
            annotation(_GITHUB_LEVEL[first.severity], _group_message(group), file=file, line=line, title=title)
        )
    hidden = len(report.findings) - annotated
    if hidden:
        lines.append(f"{hidden} more findings are not annotated; see the step summary or run with --format json")
    lines.append(f"{'PASSED' if report.passed else 'FAILED'}: {_counts(report)}")
    return "\n".join(lines)


#: Examples shown per check in the Markdown report, and the characters kept of each message.
MARKDOWN_EXAMPLES = 3
MARKDOWN_MESSAGE_CHARS = 300
_SEVERITY_ORDER = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
#: ASCII punctuation that starts Markdown inline syntax (and the table cell separator), escaped with a backslash.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]|~!#<>&])")


def markdown_escape(text: str) -> str:
    """``text`` as literal Markdown on one line: no markup, no HTML, no table cell break, no @mention."""
    text = " ".join(text.split())
    escaped = _MARKDOWN_SPECIAL.sub(lambda m: html.escape(m[1]) if m[1] in "<>&" else "\\" + m[1], text)
    return escaped.replace("@", "@&#8203;")  # a zero-width space: GitHub links no mention in a comment


def _example(group: list[Finding]) -> str:
    finding = group[0]
    where = f"{finding.file}:{finding.line}" if finding.file and finding.line else finding.file or "(checkpoint)"
    message = _group_message(group)
    if len(message) > MARKDOWN_MESSAGE_CHARS:
        message = message[: MARKDOWN_MESSAGE_CHARS - 1] + "…"
    return f"{markdown_escape(where)}: {markdown_escape(message)}"


def render_markdown(report: Report) -> str:
    """A Markdown report for a pull-request comment or ``$GITHUB_STEP_SUMMARY``: the outcome and counts, then the
    findings grouped by check (most severe first), each with its count and first examples."""
    status = "✅ PASSED" if report.passed else "❌ FAILED"
    lines = [
        f"### hubkit validate: {status}",
        "",
        f"{markdown_escape(report.path)} · profile {markdown_escape(report.profile)} · "
        f"reference {markdown_escape(report.reference or 'none')} · {_counts(report)}",
    ]
    by_check: dict[str, list[Finding]] = defaultdict(list)
    for finding in report.findings:
        by_check[finding.code].append(finding)
    if by_check:
        lines += ["", "| code | check | severity | count | first examples |", "| --- | --- | --- | ---: | --- |"]
    for code in sorted(by_check, key=lambda c: (_SEVERITY_ORDER[by_check[c][0].severity], c)):
        group = by_check[code]
        rows = finding_groups(group)
        examples = [_example(row) for row in rows[:MARKDOWN_EXAMPLES]]
        unshown = len(group) - sum(map(len, rows[:MARKDOWN_EXAMPLES]))
        if unshown:
            examples.append(f"and {unshown} more")
        lines.append(
            f"| {markdown_escape(code)} | {markdown_escape(group[0].check)} | {group[0].severity.value} | "
            f"{len(group)} | {'<br>'.join(examples)} |"
        )
    return "\n".join(lines)


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
