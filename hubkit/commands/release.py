"""``hubkit release``: the whole release from one manifest, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click


@click.command("release")
@click.argument("manifest", type=click.Path(path_type=Path), default="hubkit.toml")
@click.option("--dry-run", is_flag=True, help="Print the plan (stages and what would be uploaded); change nothing.")
@click.option(
    "--from", "first", metavar="STAGE", help="Start at this stage (quantize, card, validate, push, tag, smoke)."
)
@click.option("--until", "last", metavar="STAGE", help="Stop after this stage.")
@click.option("--skip", multiple=True, metavar="STAGE", help="Skip this stage (repeatable).")
@click.option(
    "--set", "overrides", multiple=True, metavar="TABLE.KEY=VALUE", help="Override a manifest key (repeatable)."
)
@click.option(
    "--format", "output_format", type=click.Choice(["text", "json", "github"]), default="text", show_default=True
)
@click.pass_obj
def release_command(
    obj: dict[str, object],
    manifest: Path,
    dry_run: bool,
    first: str | None,
    last: str | None,
    skip: tuple[str, ...],
    overrides: tuple[str, ...],
    output_format: str,
) -> int:
    """Run quantize -> card -> validate -> push -> tag -> smoke as MANIFEST says (default hubkit.toml)."""
    from hubkit.release.manifest import load_manifest
    from hubkit.release.pipeline import Release, ReleaseOptions, exit_code
    from hubkit.release.summary import render_summary

    options = ReleaseOptions(
        dry_run=dry_run, first=first, last=last, skip=skip, progress=output_format == "text" and not obj.get("quiet")
    )
    result = Release(load_manifest(manifest, overrides), options).run()
    summary = render_summary(result)
    if output_format == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(summary)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if output_format == "github" and target:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(summary + "\n")
    return exit_code(result)
