"""``hubkit validate``: strict pre-upload validation of a checkpoint."""

from __future__ import annotations

from typing import Any

import click

from hubkit.commands._options import build, click_options, examples, format_option
from hubkit.errors import ExitCode
from hubkit.validate.options import ValidateOptions


@click.command(
    "validate",
    epilog=examples(
        "hubkit validate ./Kimi-K2.6-NVFP4 --reference hf://nvidia/Kimi-K2.6-NVFP4",
        "hubkit validate ./Kimi-K2.6-NVFP4 --base hf://moonshotai/Kimi-K2.6 --deep --format github",
        "hubkit validate hf://my-org/Kimi-K2.6-NVFP4 --ignore HK702 --format json",
        "hubkit validate ./Kimi-K2.6-NVFP4 --format sarif > hubkit.sarif      # for GitHub code scanning",
        "hubkit validate ./Kimi-K2.6-NVFP4 --format markdown > report.md      # for a pull-request comment",
        "hubkit validate --explain HK201",
    ),
)
@click.argument("path", required=False, metavar="PATH")  # required, except with --list-checks or --explain
@click_options(ValidateOptions)
@format_option("text", "json", "github", "sarif", "markdown")
@click.option("--list-checks", is_flag=True, help="List every check and exit.")
@click.option("--explain", metavar="CODE", help="Explain one check and exit.")
@click.pass_obj
def validate_command(
    obj: dict[str, object],
    /,
    path: str | None,
    output_format: str,
    list_checks: bool,
    explain: str | None,
    **values: Any,
) -> int:
    """Validate the checkpoint at PATH before upload (exit 0 passed, 1 failed, 2 bad input).

    PATH (a folder or hf://ORG/NAME[@REV]) is required, except with --list-checks or --explain.
    """
    from hubkit.output import Output
    from hubkit.validate.engine import find_check, select_checks
    from hubkit.validate.render import (
        render_check_json,
        render_check_table,
        render_github,
        render_json,
        render_markdown,
        render_sarif,
        render_text,
    )
    from hubkit.validate.runner import validate

    if explain:
        click.echo(find_check(explain).explain())
        return ExitCode.OK
    options = build(ValidateOptions, values, progress=not obj.get("quiet"))
    if list_checks:
        checks = select_checks(list(options.select), list(options.ignore))
        click.echo(render_check_json(checks) if output_format == "json" else render_check_table(checks))
        return ExitCode.OK
    if not path:
        raise click.UsageError("PATH is required (the checkpoint folder to validate)")
    report = validate(path, options)
    renderers = {
        "text": render_text,
        "json": render_json,
        "github": render_github,
        "markdown": render_markdown,
        "sarif": render_sarif,
    }
    output = Output(output_format, title="hubkit validate")
    output.echo(renderers[output_format](report))
    output.summary(lambda: render_markdown(report))
    return ExitCode.OK if report.passed else ExitCode.ARTIFACT_FAILED
