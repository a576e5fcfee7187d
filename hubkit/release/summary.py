"""The release summary: what was released where, what the preflight found, where a failure stopped it, and
how long each stage took (Markdown, also for Actions)."""

from __future__ import annotations

from collections import Counter

from hubkit.release.pipeline import LOCAL_ENDPOINT, ReleaseResult
from hubkit.release.preflight import OK
from hubkit.release.stages import StageResult


def _status(result: ReleaseResult) -> str:
    if result.dry_run:
        return "DRY RUN" if result.passed else "DRY RUN, preflight FAILED"
    return "PASSED" if result.passed else "FAILED"


def _repo(result: ReleaseResult) -> str:
    """The repo's address; for a local Hub server, which lives only during the release, its id alone."""
    if result.endpoint == LOCAL_ENDPOINT:
        return f"{result.repo} (on the local Hub server, which ran for this release only)"
    return f"{result.endpoint}/{result.repo}"


def _push(stage: StageResult) -> str | None:
    """What the push stage did in this run: what it uploaded, at what rate, and the commit; a stage that was
    unchanged names the earlier run's commit as such, never its upload as if it happened now."""
    from hubkit.hub.push import plural, upload_text

    outputs, commit = stage.outputs, stage.outputs.get("commit")
    if not commit or stage.status not in ("ran", "unchanged"):
        return None
    files = outputs.get("uploaded", 0) + outputs.get("unchanged", 0) if "uploaded" in outputs else outputs.get("files")
    if stage.status == "unchanged":
        return f"- push: nothing to upload, {files} files unchanged; commit {commit} (from an earlier run)"
    if not outputs.get("uploaded"):
        return f"- push: nothing to upload, {files} files already there; commit {commit}"
    sent = upload_text(outputs.get("bytes", 0), outputs.get("commits", 0), outputs.get("seconds"))
    return f"- push: {plural(outputs['uploaded'], 'file')} uploaded, {sent}; commit {commit}"


def render_summary(result: ReleaseResult) -> str:
    lines = [
        f"## hubkit release: {_status(result)}",
        "",
        f"- repo: {_repo(result)}",
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
    push = next((_push(s) for s in result.stages if s.name == "push"), None)
    if push:
        lines.append(push)
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
