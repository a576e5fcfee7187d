"""The release summary: what was released where, what the preflight found, where a failure stopped it, and
how long each stage took (Markdown, also for Actions)."""

from __future__ import annotations

from collections import Counter

from hubkit.release.pipeline import ReleaseResult
from hubkit.release.preflight import OK


def _status(result: ReleaseResult) -> str:
    if result.dry_run:
        return "DRY RUN" if result.passed else "DRY RUN, preflight FAILED"
    return "PASSED" if result.passed else "FAILED"


def render_summary(result: ReleaseResult) -> str:
    endpoint = result.endpoint
    lines = [
        f"## hubkit release: {_status(result)}",
        "",
        f"- repo: {endpoint}/{result.repo}",
        f"- export: {result.out}",
    ]
    if result.failure:
        lines.append(f"- failed at {result.failure.name}: {result.failure.detail}")
    if result.preflight:
        counts = Counter(check.status for check in result.preflight)
        lines.append("- preflight: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
        lines += [f"  - {check.line()}" for check in result.preflight if check.status != OK]
    if result.waived:
        lines.append(f"- validate: waived: {', '.join(result.waived)}")
    if result.selected_checks:
        lines.append(f"- validate: only the checks {', '.join(result.selected_checks)}")
    push = next((s for s in result.stages if s.name == "push"), None)
    if push and push.outputs.get("commit"):
        lines.append(
            f"- commit: {push.outputs['commit']} ({push.outputs.get('files')} files, {push.outputs.get('bytes', 0):,} bytes uploaded)"
        )
    tag = next(
        (s for s in result.stages if s.name == "tag" and s.status in ("ran", "unchanged") and s.outputs.get("tag")),
        None,
    )
    if tag:
        lines.append(f"- tag: {tag.outputs['tag']}")
    lines += ["", "| stage | status | seconds | detail |", "|---|---|---|---|"]
    for stage in result.stages:
        lines.append(f"| {stage.name} | {stage.status} | {stage.seconds:g} | {stage.detail.replace('|', '/')} |")
    if result.card_diff:
        lines += [
            "",
            "<details><summary>card changes against the previous release</summary>",
            "",
            "```diff",
            result.card_diff.rstrip(),
            "```",
            "</details>",
        ]
    return "\n".join(lines)
