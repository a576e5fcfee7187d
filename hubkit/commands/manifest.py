"""``hubkit manifest``: lint release manifests without a token or the network, and print their JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hubkit.commands._options import examples, format_option
from hubkit.errors import ExitCode, HubkitError


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
@format_option("text", "github")
def check_command(files: tuple[Path, ...], overrides: tuple[str, ...], output_format: str) -> int:
    """Validate FILES (default hubkit.toml) against the manifest schema; every problem is reported.

    Reads nothing but the files: no token, no network. Exit 0 when every file is valid, 2 otherwise.
    """
    from hubkit.manifest import manifest_problems
    from hubkit.output import Output, Problem
    from hubkit.validate.options import check_codes

    codes = check_codes()  # [validate] select/ignore must name checks
    output = Output(output_format, title="hubkit manifest")
    failed = 0
    for path in files or (Path("hubkit.toml"),):
        try:
            problems = manifest_problems(path, overrides, check_codes=codes)
        except HubkitError as exc:  # unreadable, or not TOML: the message names the file
            problems = [Problem(str(exc))]
        for problem in problems:  # an annotation on its line, or an error on stderr (shown under -q too)
            output.problem(problem, file=str(path), to_stderr=True)
        output.echo(f"{path}: {'valid' if not problems else f'{len(problems)} problem(s)'}")
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
