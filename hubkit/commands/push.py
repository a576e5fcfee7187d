"""``hubkit push``: resumable, verified upload of a validated folder to the Hub."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hubkit.commands._options import build, click_options, format_option
from hubkit.errors import ExitCode
from hubkit.hub.options import PushOptions


@click.command("push")
@click.argument("folder", type=click.Path(path_type=Path))
@click_options(PushOptions)
@format_option("text", "json", "github")
@click.pass_obj
def push_command(obj: dict[str, object], /, folder: Path, output_format: str, **values: Any) -> int:
    """Upload FOLDER to the Hub repo --repo, only what differs, in bounded commits, then verify it."""
    from hubkit.hub.push import describe, push

    if values["create_pr"] and values["atomic"]:
        raise click.UsageError("--create-pr and --atomic exclude each other")
    options = build(PushOptions, values, folder=folder, progress=output_format == "text" and not obj.get("quiet"))
    result = push(options)
    failed = not result.passed or (options.strict and bool(result.remote_only))
    if output_format == "json":
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        for line in describe(result):
            if output_format == "github" and line.strip().startswith(("error:", "warning:")):
                kind, _, message = line.strip().partition(": ")
                click.echo(f"::{kind} title=hubkit push::{message}")
            else:
                click.echo(line)
    return ExitCode.ARTIFACT_FAILED if failed else ExitCode.OK
