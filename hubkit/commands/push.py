"""``hubkit push``: resumable, verified upload of a validated folder to the Hub."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from hubkit.commands._options import build, click_options, examples, format_option
from hubkit.errors import ExitCode, HubkitError, redact
from hubkit.hub.options import PushOptions


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
    from hubkit.output import Output

    if values["create_pr"] and values["atomic"]:
        raise click.UsageError("--create-pr and --atomic exclude each other")
    options = build(PushOptions, values, folder=folder, progress=not obj.get("quiet"))
    output = Output(output_format, title="hubkit push")
    try:
        result = push(options)
    except HubkitError as exc:
        output.summary(step_summary(None, failure=redact(str(exc))))
        raise
    failed = not result.passed or (options.strict and bool(result.remote_only))
    if output_format == "json":
        output.json(result.as_dict())
    else:
        for item in describe(result):
            if isinstance(item, str):
                output.echo(item)
            else:
                output.problem(item, text=f"  {item.severity}: {item.message}")
    output.summary(lambda: step_summary(result))
    return ExitCode.ARTIFACT_FAILED if failed else ExitCode.OK
