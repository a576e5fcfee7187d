"""``cast``: an MXFP4 base's experts cast to NVFP4 in closed form (``quantize/cast.py``); no model, no data, no
GPU. It claims every MXFP4 base: ``auto`` takes it for one, and no other mode may."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.quantize.cast_plan import mxfp4_block
from hubkit.quantize.modes import Mode, register

if TYPE_CHECKING:
    from hubkit.quantize.pipeline import Job, QuantizeResult

log = logging.getLogger(__name__)


@register("cast")
class Cast(Mode):
    order = 30
    planned = False  # cast_plan.py

    def claims(self, config: dict[str, Any]) -> bool:
        return mxfp4_block(config) is not None

    def refusal(self, requested: str | None) -> str:
        if requested is None:
            return "--mode cast needs an MXFP4 base (compressed-tensors mxfp4-pack-quantized); use --mode auto for this one"
        return f"the base is MXFP4: it is cast to NVFP4 without calibration; drop --mode {requested}"

    def reason(self, config: dict[str, Any]) -> str:
        return "cast: the base is MXFP4"

    def run(self, job: Job) -> QuantizeResult:
        from hubkit.checkpoint.model import INDEX
        from hubkit.progress import progress_bar
        from hubkit.quantize.cast import DEFAULT_RECIPE, cast_recipe, run_cast
        from hubkit.quantize.folders import discard
        from hubkit.quantize.pipeline import (
            CAST_BLOCKS,
            finish,
            prepare_out,
            publish,
            read_json,
            run_record,
            stage,
            versions,
        )
        from hubkit.quantize.recipes import resolve_recipe
        from hubkit.records import write_json

        options, base, timings = job.options, job.base, job.timings
        if options.calib:
            log.warning("--calib is not used: an MXFP4 base is cast without calibration data")
        recipe = cast_recipe(options.recipe, resolve_recipe(options.recipe).quantize if options.recipe else None)
        job.reason = f"{job.reason} ({options.jobs} shards at once)"
        job.device = "cpu"
        job.staging = staging = prepare_out(options.out)[0]
        try:
            shards = len({*(read_json(base / INDEX).get("weight_map") or {"": "model.safetensors"}).values()})
            with (
                stage(timings, "cast"),
                progress_bar(total=shards, desc="cast", unit="shard", enabled=options.progress) as bar,
            ):
                report = run_cast(base, staging, recipe, options.jobs, bar)
            finish(staging, base, job.profile.quantization.get("text_model_type"))
            blocks = {name: asdict(count) for name, count in sorted(report.tensors.items())}
            write_json(staging / CAST_BLOCKS, blocks, indent=None)
            provenance: dict[str, Any] = {
                "schema": 1,
                "base": options.base,
                "base_format": "mxfp4",
                "base_revision": job.revision,
                "versions": versions(),
                "device": "cpu",
                "recipe": {
                    "name": recipe.name,
                    "builtin": recipe.name == DEFAULT_RECIPE,
                    "input_amax": recipe.input_amax,
                },
                "cast": {**report.summary(), "per_tensor": CAST_BLOCKS},
                "timings_s": timings,
                "run": {**run_record(job, self), "jobs": options.jobs},
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
            }
            return publish(job, provenance)
        except BaseException:
            discard(staging)
            raise
