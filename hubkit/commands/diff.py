"""``hubkit diff A B``: compare two checkpoints (folders or hf:// repos) file by file."""

from __future__ import annotations

import click

from hubkit.commands._options import examples, format_option
from hubkit.errors import ExitCode


@click.command(
    "diff",
    epilog=examples(
        "hubkit diff hf://nvidia/Kimi-K2.6-NVFP4 ./Kimi-K2.6-NVFP4",
        "hubkit diff ./export-v1 ./export-v2 --deep --format json",
    ),
)
@click.argument("a")
@click.argument("b")
@click.option(
    "--deep",
    is_flag=True,
    help="Compare tensor data tensor by tensor and name the tensors that differ (reads every byte of the "
    "weight files whose hashes differ; from the Hub by range requests).",
)
@format_option("text", "json")
@click.pass_obj
def diff_command(obj: dict[str, object], /, a: str, b: str, deep: bool, output_format: str) -> int:
    """Compare B against A, every file by content: JSON configs key by key, text by lines, weights by tensor
    names, dtypes, shapes and bytes (sha256; the Hub's own hashes for hf:// files), other files by size and
    sha256. Exit 0 only when both hold the same files with the same bytes (IDENTICAL), 1 when anything differs
    or could not be compared."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.output import Output
    from hubkit.validate.diff import diff_checkpoints, render_diff

    progress = not obj.get("quiet")
    result = diff_checkpoints(load_checkpoint(a), load_checkpoint(b), deep=deep, progress=progress)
    output = Output(output_format, title="hubkit diff")
    if output_format == "json":
        output.json(result)
    else:
        output.echo(render_diff(result))
    return ExitCode.OK if result["identical"] else ExitCode.ARTIFACT_FAILED
