"""``hubkit manifest``: lint release manifests without a token or the network, and print their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hubkit.commands._options import examples
from hubkit.errors import ExitCode, HubkitError
from hubkit.logs import stderr


@click.group(
    "manifest",
    epilog=examples(
        "hubkit manifest check",
        "hubkit manifest schema > hubkit.schema.json",
    ),
)
def manifest_group() -> None:
    """Check a release manifest (hubkit.toml) or print its JSON Schema."""


@manifest_group.command(
    "check",
    epilog=examples(
        "hubkit manifest check                             # ./hubkit.toml",
        "hubkit manifest check release/*.toml --format github",
        "hubkit manifest check --set 'quantize.mode=\"layerwise\"'",
    ),
)
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE", help="Override a key (repeatable).")
@click.option("--format", "output_format", type=click.Choice(["text", "github"]), default="text", show_default=True)
def check_command(files: tuple[Path, ...], overrides: tuple[str, ...], output_format: str) -> int:
    """Validate FILES (default hubkit.toml) against the manifest schema; every problem is reported.

    Reads nothing but the files: no token, no network. Exit 0 when every file is valid, 2 otherwise.
    """
    from hubkit.manifest import manifest_problems
    from hubkit.validate.options import check_codes

    codes = check_codes()  # [validate] select/ignore must name checks
    failed = 0
    for path in files or (Path("hubkit.toml"),):
        try:
            problems = manifest_problems(path, overrides, check_codes=codes)
        except HubkitError as exc:
            problems = [str(exc)]
        for problem in problems:
            if output_format == "github":  # "FILE:LINE: message" -> an annotation on that line
                where, _, message = problem.partition(": ")
                line = where.rpartition(":")[2]
                click.echo(f"::error file={path},line={line if line.isdigit() else 1},title=hubkit manifest::{message}")
            else:
                click.echo(problem, file=stderr())  # an error: shown under -q too
        click.echo(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
        failed += bool(problems)
    return ExitCode.USER_ERROR if failed else ExitCode.OK


@manifest_group.command(
    "schema",
    epilog=examples(
        "hubkit manifest schema > hubkit.schema.json",
    ),
)
def schema_command() -> int:
    """Print the manifest's JSON Schema (for editors: `#:schema ./hubkit.schema.json` atop hubkit.toml)."""
    from hubkit.manifest import manifest_json_schema

    click.echo(json.dumps(manifest_json_schema(), indent=2))
    return ExitCode.OK
