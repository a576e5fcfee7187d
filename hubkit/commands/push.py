"""``hubkit push``: resumable, verified upload of a validated folder to the Hub."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hubkit.commands._options import build, click_options, examples, format_option
from hubkit.errors import ExitCode, HubkitError, redact
from hubkit.hub.options import PushOptions
from hubkit.records import append_text


@click.command(
    "push",
    epilog=examples(
        "hubkit push ./Kimi-K2.6-NVFP4 --repo my-org/Kimi-K2.6-NVFP4 --dry-run",
        "hubkit push ./Kimi-K2.6-NVFP4 --repo my-org/Kimi-K2.6-NVFP4 --create-pr",
        "hubkit push ./Kimi-K2.6-NVFP4 --repo my-org/Kimi-K2.6-NVFP4   # rerun after a failure: resumes",
    ),
)
@click.argument("folder", type=click.Path(path_type=Path))
@click_options(PushOptions)
@format_option("text", "json", "github")
@click.pass_obj
def push_command(obj: dict[str, object], /, folder: Path, output_format: str, **values: Any) -> int:
    """Upload FOLDER to the Hub repo --repo, only what differs, in bounded commits, then verify it."""
    from hubkit.hub.push import describe, push, step_summary

    if values["create_pr"] and values["atomic"]:
        raise click.UsageError("--create-pr and --atomic exclude each other")
    options = build(PushOptions, values, folder=folder, progress=not obj.get("quiet"))
    try:
        result = push(options)
    except HubkitError as exc:
        if output_format == "github":
            _append_step_summary(step_summary(None, failure=redact(str(exc))))
        raise
    failed = not result.passed or (options.strict and bool(result.remote_only))
    if output_format == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in describe(result):
            if output_format == "github" and line.strip().startswith(("error:", "warning:")):
                kind, _, message = line.strip().partition(": ")
                click.echo(f"::{kind} title=hubkit push::{message}")
            elif output_format == "github" and line.startswith("NOT VALIDATED"):
                click.echo(f"::warning title=hubkit push::{line}")
            else:
                click.echo(line)
    if output_format == "github":
        _append_step_summary(step_summary(result))
    return ExitCode.ARTIFACT_FAILED if failed else ExitCode.OK


def _append_step_summary(markdown: str) -> None:
    """GitHub Actions shows what a step appends to the file named by $GITHUB_STEP_SUMMARY on the run's page."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return
    try:
        append_text(Path(path), markdown + "\n")
    except HubkitError as exc:
        click.echo(f"::warning title=hubkit push::cannot write the step summary: {exc}")
