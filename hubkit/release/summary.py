"""The release summary: what was released where, and how long each stage took (Markdown, also for Actions)."""

from __future__ import annotations

from hubkit.release.pipeline import ReleaseResult


def render_summary(result: ReleaseResult) -> str:
    endpoint = result.endpoint
    status = "PASSED" if result.passed else "FAILED"
    lines = [f"## hubkit release: {status}", "", f"- repo: {endpoint}/{result.repo}", f"- export: {result.out}"]
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
