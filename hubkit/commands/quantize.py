"""``hubkit quantize``: reproducible NVFP4 quantization with NVIDIA Model Optimizer."""

from __future__ import annotations

import json
from pathlib import Path

import click

from hubkit.errors import ExitCode


@click.command("quantize")
@click.option("--base", required=True, help="Base model: a local folder or hf://ORG/NAME[@REV].")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the export (required unless --plan).")
@click.option("--profile", help="Profile from checks/ (sets the default recipe and validates the output).")
@click.option("--recipe", help="modelopt recipe name, recipe .yaml file, or hubkit preset (nvfp4-experts-mse).")
@click.option(
    "--calib", multiple=True, help="Calibration source: .jsonl/.txt/.parquet file, saved dataset, Hub dataset."
)
@click.option("--calib-size", type=click.IntRange(1), default=512, show_default=True, help="Samples per source.")
@click.option("--calib-seq", type=click.IntRange(8), default=512, show_default=True, help="Tokens per sample.")
@click.option("--batch-size", type=click.IntRange(1), default=1, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option(
    "--mode",
    type=click.Choice(["auto", "resident", "layerwise"]),
    default="auto",
    show_default=True,
    help="resident: the whole model on the device(s); layerwise: one decoder layer at a time, resumable; "
    "auto: resident when the plan says it fits with margin.",
)
@click.option(
    "--max-gpu-memory", help="Cap per GPU, e.g. 250GiB: the device map of a resident run, and the plan's budget."
)
@click.option("--max-cpu-memory", help="Host memory the plan may count on, e.g. 64GiB (default: what is free here).")
@click.option(
    "--plan", is_flag=True, help="Predict memory, disk and time per mode from the base's headers; load nothing."
)
@click.option("--gpus", help="Target for --plan: COUNTxMODEL such as 8xB300, or cpu (default: the GPUs present).")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--seed", type=int, default=1234, show_default=True)
@click.option("--keep-intermediate", is_flag=True, help="Keep intermediates (a BF16 copy of an INT4 base).")
@click.pass_obj
def quantize_command(
    obj: dict[str, object],
    base: str,
    out: Path | None,
    profile: str | None,
    recipe: str | None,
    calib: tuple[str, ...],
    calib_size: int,
    calib_seq: int,
    batch_size: int,
    device: str,
    mode: str,
    max_gpu_memory: str | None,
    max_cpu_memory: str | None,
    plan: bool,
    gpus: str | None,
    output_format: str,
    seed: int,
    keep_intermediate: bool,
) -> int:
    """Quantize BASE to NVFP4 into OUT, write provenance, and validate the result (exit 1 if it fails)."""
    if plan:
        tokens = calib_size * max(len(calib), 1) * calib_seq
        return _plan(base, out, gpus, batch_size, calib_seq, tokens, max_gpu_memory, max_cpu_memory, output_format)
    if out is None:
        raise click.UsageError("--out is required (the folder for the export)")
    from hubkit.quantize.pipeline import QuantizeOptions, quantize
    from hubkit.validate.render import render_json, render_text

    options = QuantizeOptions(
        base=base, out=out, profile=profile, recipe=recipe, calib=calib, calib_size=calib_size, calib_seq=calib_seq,
        batch_size=batch_size, device=device, max_gpu_memory=max_gpu_memory, seed=seed,
        keep_intermediate=keep_intermediate, progress=output_format == "text" and not obj.get("quiet"), mode=mode,
        max_cpu_memory=max_cpu_memory,
    )  # fmt: skip
    result = quantize(options)
    if not result.primary:  # another process of a torchrun job: rank 0 reports
        return ExitCode.OK
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "out": str(result.out),
                    "provenance": result.provenance,
                    "validation": json.loads(render_json(result.report)),
                },
                default=str,
            )
        )
    else:
        coverage = result.provenance.get("coverage", {})
        click.echo(render_text(result.report))
        click.echo(
            f"wrote {result.out}: {coverage.get('experts_without_tokens', 0)} of {coverage.get('experts', 0)} "
            "experts received no calibration tokens (max-based amax backstop)"
        )
    return ExitCode.OK if result.report.passed else ExitCode.ARTIFACT_FAILED


def _plan(
    base: str,
    out: Path | None,
    gpus: str | None,
    batch: int,
    seq: int,
    tokens: int,
    max_gpu_memory: str | None,
    max_cpu_memory: str | None,
    output_format: str,
) -> int:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.devices import present_gpus
    from hubkit.quantize.plan import estimate

    target = gpus or present_gpus()
    plan = estimate(
        load_checkpoint(base), target, batch=batch, seq=seq, tokens=tokens, out=out, max_gpu_memory=max_gpu_memory,
        max_cpu_memory=max_cpu_memory,
    )  # fmt: skip
    click.echo(json.dumps(plan.as_dict(), indent=2) if output_format == "json" else plan.render())
    return ExitCode.OK
