"""``hubkit release``: the whole release from one manifest, resumable."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from hubkit.commands._options import build, click_options, format_option
from hubkit.release.options import ReleaseOptions


@click.command("release")
@click.argument("manifest", type=click.Path(path_type=Path), default="hubkit.toml")
@click_options(ReleaseOptions)
@format_option("text", "json", "github")
@click.pass_obj
def release_command(obj: dict[str, object], /, manifest: Path, output_format: str, **values: Any) -> int:
    """Run quantize -> card -> validate -> push -> tag -> smoke as MANIFEST says (default hubkit.toml)."""
    from hubkit.manifest import load_manifest
    from hubkit.release.pipeline import Release, exit_code
    from hubkit.release.summary import render_summary

    options = build(ReleaseOptions, values, progress=output_format == "text" and not obj.get("quiet"))
    result = Release(load_manifest(manifest, options.overrides), options).run()
    summary = render_summary(result)
    if output_format == "json":
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        click.echo(summary)
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if output_format == "github" and target:
        try:
            with open(target, "a", encoding="utf-8") as handle:
                handle.write(summary + "\n")
        except OSError as exc:  # the release itself is done: say so, keep its exit code
            click.echo(f"hubkit: warning: cannot append to $GITHUB_STEP_SUMMARY ({exc.strerror or exc})", err=True)
    return exit_code(result)
