"""``hubkit validate``: strict pre-upload validation of a checkpoint."""

from __future__ import annotations

import click

from hubkit.errors import ExitCode


@click.command("validate")
@click.argument("path", required=False)
@click.option("--profile", help="Profile from checks/ (default: chosen from the config).")
@click.option(
    "--reference", help="Reference release: folder, hf_quant_config.json/config.json, or hf://ORG/NAME[@REV]."
)
@click.option("--base", help="Base model the export was made from: folder or hf://ORG/NAME[@REV].")
@click.option("--deep", is_flag=True, help="Also read the scale tensors and check their values (~1/9 of the data).")
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json", "github"]), default="text", show_default=True
)
@click.option("--select", help="Only these codes or prefixes, comma-separated (HK2,HK501).")
@click.option("--ignore", help="Skip these codes or prefixes, comma-separated.")
@click.option("--strict", is_flag=True, help="Warnings fail the validation too.")
@click.option("--list-checks", is_flag=True, help="List every check and exit.")
@click.option("--explain", metavar="CODE", help="Explain one check and exit.")
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Parallel reads for --deep.")
@click.pass_obj
def validate_command(
    obj: dict[str, object],
    path: str | None,
    profile: str | None,
    reference: str | None,
    base: str | None,
    deep: bool,
    output_format: str,
    select: str | None,
    ignore: str | None,
    strict: bool,
    list_checks: bool,
    explain: str | None,
    workers: int,
) -> int:
    """Validate the checkpoint at PATH before upload (exit 0 passed, 1 failed, 2 bad input)."""
    from hubkit.validate import ValidateOptions, validate
    from hubkit.validate.engine import find_check, parse_code_list, select_checks
    from hubkit.validate.render import (
        render_check_json,
        render_check_table,
        render_github,
        render_json,
        render_text,
        write_github_step_summary,
    )

    if explain:
        click.echo(find_check(explain).explain())
        return ExitCode.OK
    selected, ignored = parse_code_list(select), parse_code_list(ignore)
    if list_checks:
        checks = select_checks(selected, ignored)
        click.echo(render_check_json(checks) if output_format == "json" else render_check_table(checks))
        return ExitCode.OK
    if not path:
        raise click.UsageError("PATH is required (the checkpoint folder to validate)")
    options = ValidateOptions(
        profile=profile,
        reference=reference,
        base=base,
        deep=deep,
        select=tuple(selected),
        ignore=tuple(ignored),
        strict=strict,
        workers=workers,
        progress=output_format == "text" and not obj.get("quiet"),
    )
    retained: list[object] = []
    obj["retained"] = retained  # the process may end without freeing the checkpoint (see cli.main)
    report = validate(path, options, retain=retained)
    renderers = {"text": render_text, "json": render_json, "github": render_github}
    click.echo(renderers[output_format](report))
    if output_format == "github":
        write_github_step_summary(report)
    return ExitCode.OK if report.passed else ExitCode.ARTIFACT_FAILED
