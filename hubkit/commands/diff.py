"""``hubkit diff A B``: compare two checkpoints (folders or hf:// repos) without downloading weights."""

from __future__ import annotations

import json

import click

from hubkit.commands._options import examples
from hubkit.errors import ExitCode


@click.command(
    "diff",
    epilog=examples(
        "hubkit diff hf://nvidia/Kimi-K2.6-NVFP4 ./Kimi-K2.6-NVFP4",
        "hubkit diff ./export-v1 ./export-v2 --format json",
    ),
)
@click.argument("a")
@click.argument("b")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
def diff_command(a: str, b: str, output_format: str) -> int:
    """Compare B against A: configs, exclusions by meaning, tensor names/dtypes/shapes (exit 1 if they differ)."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.validate.diff import diff_checkpoints, render_diff

    result = diff_checkpoints(load_checkpoint(a), load_checkpoint(b))
    click.echo(json.dumps(result, indent=2) if output_format == "json" else render_diff(result))
    return ExitCode.OK if result["identical"] else ExitCode.ARTIFACT_FAILED
