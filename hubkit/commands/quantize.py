"""``hubkit quantize``: reproducible NVFP4 quantization with NVIDIA Model Optimizer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import click

from hubkit.commands._options import build, click_options, examples, format_option
from hubkit.errors import ExitCode
from hubkit.quantize.options import QuantizeOptions


@click.command(
    "quantize",
    epilog=examples(
        "hubkit quantize --base hf://moonshotai/Kimi-K2.6 --plan --gpus 8xB300     # needs nothing but the headers",
        "hubkit quantize --base ./Kimi-K2.6 --out ./Kimi-K2.6-NVFP4 --profile kimi-k2-nvfp4 \\",
        "    --calib cnn_dailymail --calib nvidia/Nemotron-Post-Training-Dataset-v2",
        "hubkit quantize --base ./Kimi-K2.6 --out ./Kimi-K2.6-NVFP4 \\",
        "    --calib 'HuggingFaceH4/ultrachat_200k?split=train_sft&column=messages'   # a dataset's split and column",
        "hubkit quantize --base ./Kimi-K2.6 --out ./Kimi-K2.6-NVFP4 --calib calib.jsonl --mode layerwise",
        "torchrun --nproc-per-node 8 -m hubkit quantize --base ./Kimi-K2.6 --out ./OUT --calib calib.jsonl \\",
        "    --mode layerwise",
        "hubkit quantize --base ./Kimi-K3 --out ./Kimi-K3-NVFP4 --jobs 8      # MXFP4 base: cast, no --calib, no GPU",
    ),
)
@click_options(QuantizeOptions)
@click.option("--out", type=click.Path(path_type=Path), help="Folder for the export (required unless --plan).")
@click.option(
    "--plan", is_flag=True, help="Predict memory, disk and time per mode from the base's headers; load nothing."
)
@click.option("--gpus", help="Target for --plan: COUNTxMODEL such as 8xB300, or cpu (default: the GPUs present).")
@format_option("text", "json")
@click.pass_obj
def quantize_command(
    obj: dict[str, object], /, out: Path | None, plan: bool, gpus: str | None, output_format: str, **values: Any
) -> int:
    """Quantize BASE to NVFP4 into OUT, write provenance, and validate the result (exit 1 if it fails)."""
    if plan:
        return _plan(values, out, gpus, output_format)
    if out is None:
        raise click.UsageError("--out is required (the folder for the export)")
    from hubkit.quantize.pipeline import quantize
    from hubkit.validate.render import render_json, render_text

    options = build(QuantizeOptions, values, out=out, progress=not obj.get("quiet"))
    result = quantize(options)
    if not result.primary:  # another process of a torchrun job: rank 0 reports
        return ExitCode.OK
    if output_format == "json":
        validation = json.loads(render_json(result.report))
        click.echo(json.dumps({"schema": 1, "out": str(result.out), "provenance": result.provenance,
                               "validation": validation}, default=str))  # fmt: skip
    else:
        coverage, cast = result.provenance.get("coverage", {}), result.provenance.get("cast")
        click.echo(render_text(result.report))
        if cast:
            click.echo(
                f"wrote {result.out}: {cast['lossless_blocks']} of {cast['blocks']} MXFP4 blocks cast bit for bit, "
                f"{cast['fallback_blocks']} outside E4M3's window re-quantized from their data"
            )
        else:
            click.echo(
                f"wrote {result.out}: {coverage.get('experts_without_tokens', 0)} of {coverage.get('experts', 0)} "
                "experts received no calibration tokens (max-based amax backstop)"
            )
    return ExitCode.OK if result.report.passed else ExitCode.ARTIFACT_FAILED


def _plan(values: dict[str, Any], out: Path | None, gpus: str | None, output_format: str) -> int:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.gpus import visible_gpus
    from hubkit.quantize.cast_plan import cast_plan
    from hubkit.quantize.devices import present_gpus
    from hubkit.quantize.modes import AUTO, choose
    from hubkit.quantize.plan import available_memory, estimate, existing_folder
    from hubkit.sizes import parse_size

    if gpus is None and not visible_gpus() and not _plans_without_gpus(values["base"]):
        gpus = present_gpus()  # says at once that no GPU is visible, before the shards' headers are read
    base = load_checkpoint(values["base"])
    tokens = values["calib_size"] * max(len(values["calib"]), 1) * values["calib_seq"]
    choice = choose(AUTO, config=base.config, plan=lambda: estimate(
        base, gpus or present_gpus(), batch=values["batch_size"], seq=values["calib_seq"],
        tokens=tokens, out=out, max_gpu_memory=values["max_gpu_memory"], max_cpu_memory=values["max_cpu_memory"],
    ))  # fmt: skip
    plan = choice.plan
    if plan is None:  # a mode with a plan of its own: the cast (no GPU, no calibration)
        cap = values["max_cpu_memory"]
        free = shutil.disk_usage(existing_folder(out)).free
        cast = cast_plan(base, values["jobs"], parse_size(cap) if cap else available_memory(), free)
        click.echo(json.dumps(cast.as_dict(), indent=2) if output_format == "json" else cast.render())
        return ExitCode.OK
    if output_format == "json":  # schemas/quantize-plan.schema.json
        click.echo(json.dumps({"schema": 2, **plan.as_dict()}, indent=2))
    else:
        click.echo(plan.render())
    return ExitCode.OK


def _plans_without_gpus(ref: str) -> bool:
    """Whether the base's ``config.json`` alone (no shard headers) gives it to a mode that plans without GPUs."""
    from hubkit.checkpoint import open_source
    from hubkit.checkpoint.model import CONFIG, parse_json_document
    from hubkit.quantize.modes import registered

    source = open_source(ref)
    entry = next((e for e in source.list_files() if e.path == CONFIG and e.problem is None), None)
    config = parse_json_document(CONFIG, source.read_range(CONFIG, 0, entry.size)).data if entry else None
    return isinstance(config, dict) and any(mode.claims(config) and not mode.planned for mode in registered())
