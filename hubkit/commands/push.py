"""``hubkit push``: resumable, verified upload of a validated folder to the Hub."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hubkit.errors import ExitCode


@click.command("push")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--repo", required=True, help="Target repo id, ORG/NAME.")
@click.option("--revision", default="main", show_default=True, help="Branch to push to (created if missing).")
@click.option("--create-pr", is_flag=True, help="Upload to a pull request (reused on rerun) and leave it open.")
@click.option(
    "--atomic", is_flag=True, help="Upload to a pull request, verify it, then merge: the branch moves in one step."
)
@click.option("--private", is_flag=True, help="Create the repo private.")
@click.option("--tag", help="Tag the pushed revision.")
@click.option("--batch", default="16", show_default=True, help="Files per commit (8) or bytes per commit (40GB).")
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable).")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--delete-extra", is_flag=True, help="Delete remote files that are not in the folder.")
@click.option("--dry-run", is_flag=True, help="Print the plan; write nothing, not even the repo.")
@click.option("--no-validate", is_flag=True, help="Skip the structural checks before upload.")
@click.option("--no-verify", is_flag=True, help="Skip the verification after upload.")
@click.option("--strict", is_flag=True, help="Warnings (and remote-only files) fail the push.")
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json", "github"]), default="text", show_default=True
)
@click.pass_obj
def push_command(
    obj: dict[str, object],
    folder: Path,
    repo: str,
    revision: str,
    create_pr: bool,
    atomic: bool,
    private: bool,
    tag: str | None,
    batch: str,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    delete_extra: bool,
    dry_run: bool,
    no_validate: bool,
    no_verify: bool,
    strict: bool,
    output_format: str,
) -> int:
    """Upload FOLDER to the Hub repo --repo, only what differs, in bounded commits, then verify it."""
    from hubkit.hub.push import PushOptions, describe, push

    if create_pr and atomic:
        raise click.UsageError("--create-pr and --atomic exclude each other")
    options = PushOptions(
        folder=folder, repo=repo, revision=revision, create_pr=create_pr, atomic=atomic, private=private, tag=tag,
        batch=batch, include=include, exclude=exclude, delete_extra=delete_extra, dry_run=dry_run,
        validate=not no_validate, verify=not no_verify, strict=strict,
        progress=output_format == "text" and not obj.get("quiet"),
    )  # fmt: skip
    result = push(options)
    failed = not result.passed or (strict and bool(result.remote_only))
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
