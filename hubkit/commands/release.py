"""``hubkit release``: the whole release from one manifest, resumable."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from hubkit.commands._options import build, click_options, examples, format_option
from hubkit.errors import redact
from hubkit.release.options import ReleaseOptions

if TYPE_CHECKING:
    from hubkit.release.pipeline import ReleaseResult


@click.command(
    "release",
    epilog=examples(
        "hubkit release --dry-run                 # what would run, after the preflight checks",
        "hubkit release                           # ./hubkit.toml; rerun after a failure: resumes",
        "hubkit release hubkit.toml --from validate --until push --set validate.deep=false",
    ),
)
@click.argument("manifest", type=click.Path(path_type=Path), default="hubkit.toml")
@click_options(ReleaseOptions)
@format_option("text", "json", "github")
@click.pass_obj
def release_command(obj: dict[str, object], /, manifest: Path, output_format: str, **values: Any) -> int:
    """Run quantize -> card -> validate -> push -> tag -> smoke as MANIFEST says (default hubkit.toml)."""
    from hubkit.manifest import load_manifest
    from hubkit.release.pipeline import Release, exit_code
    from hubkit.validate.options import check_codes

    options = build(ReleaseOptions, values, progress=not obj.get("quiet"))
    release = Release(load_manifest(manifest, options.overrides, check_codes=check_codes()), options)
    try:
        result = release.run()
    except BaseException:
        if release.result.started:  # a failed stage, an error or a signal: the outcome is reported all the same
            with contextlib.suppress(Exception):  # the error itself goes on to its one line and exit code
                report(release.result, output_format)
        raise
    report(result, output_format)
    return exit_code(result)


def report(result: ReleaseResult, output_format: str) -> None:
    """The summary on stdout (JSON with ``--format json``), and in ``$GITHUB_STEP_SUMMARY`` with ``github``."""
    from hubkit.output import Output
    from hubkit.release.summary import render_summary

    output = Output(output_format, title="hubkit release")
    summary = redact(render_summary(result))  # no credential of an endpoint URL, here or in the step summary
    if output_format == "json":
        output.echo(redact(json.dumps(result.as_dict(), indent=2, default=str)))
    else:
        output.echo(summary)
    output.summary(summary)
