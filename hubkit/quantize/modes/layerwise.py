"""``layerwise``: one decoder layer at a time from the base's own shards (``quantize/layerwise.py``), resumable
after a kill, and data-parallel under ``torchrun``."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.errors import HubkitError
from hubkit.quantize.modes import CalibratedMode, register
from hubkit.quantize.plan import (
    HOST_BYTES_PER_TENSOR,
    LAYER_FACTOR_CPU,
    LAYER_FACTOR_CUDA,
    PROCESS_BYTES,
    Estimate,
    Shape,
    activation_bytes,
    layer_part_seconds,
    resume_state_bytes,
    rewrite_bytes,
)
from hubkit.records import MADE_BY, STATE_FILE

if TYPE_CHECKING:
    from hubkit.quantize.pipeline import Job

log = logging.getLogger(__name__)


@register("layerwise")
class Layerwise(CalibratedMode):
    order = 20
    spans_devices = False

    def estimate(self, shape: Shape, kind: str, tokens: int, batch: int, seq: int, world: int) -> Estimate:
        factor = LAYER_FACTOR_CPU if kind == "cpu" else LAYER_FACTOR_CUDA
        share = math.ceil(tokens / max(world, 1))
        layer = max(int(shape.largest_layer * factor), shape.largest_loading)  # calibrating, or loading
        device = shape.rest_bytes + layer + activation_bytes(shape, share, batch, seq)
        export_layer = shape.export_bytes * shape.largest_layer // max(shape.weight_bytes, 1)
        # every process of a torchrun job reads the layer it calibrates through the host, and holds the whole
        # model's per-tensor bookkeeping (skeleton, quantizers, name tables)
        process = PROCESS_BYTES + HOST_BYTES_PER_TENSOR * shape.tensors
        host = world * (process + (device if kind == "cpu" else 2 * shape.largest_layer + export_layer))
        host += world * max(shape.read_bytes, default=0)  # the next layer, read while this one calibrates
        scratch = rewrite_bytes(shape) + world * share * shape.hidden * 2 * 2  # the open shard; two layers' inputs
        disk = shape.export_bytes + scratch + resume_state_bytes(shape)
        parts = layer_part_seconds(shape, kind, share, math.ceil(share / max(batch * seq, 1)))
        seconds = round(sum(v for part, v in parts.items() if part != "read"), 2) if shape.layer_bytes else None
        return Estimate(self.name, device, host, disk, seconds, None, parts if shape.layer_bytes else None)

    def staging(self, job: Job) -> Path:
        """Rank 0 prepares the staging folder (or finds the run to resume); the other processes wait for it."""
        import torch

        from hubkit.quantize.pipeline import prepare_out, staging_folder

        if job.dist.rank == 0:
            prepare_out(job.options.out, job.fingerprint)
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
        return staging_folder(job.options.out)

    def calibrate(self, job: Job) -> tuple[dict[str, Any], bool]:
        import torch

        from hubkit.quantize import cpu_fallback, interrupts
        from hubkit.quantize.coverage import ExpertCoverage
        from hubkit.quantize.layer_error import LAYER_ERROR_FILE, LayerErrors
        from hubkit.quantize.layerwise import (
            PREFETCH_ENV,
            BaseWeights,
            LayerwiseRun,
            Skeleton,
            bound_host_heap,
            check_modelopt,
        )
        from hubkit.quantize.pipeline import SCRATCH, read_record, stage
        from hubkit.records import ensure_folder
        from hubkit.sizes import parse_size

        options, dist, batches, staging = job.options, job.dist, job.batches, job.staging
        assert staging is not None
        check_modelopt()
        bound_host_heap()
        place = torch.device(f"cuda:{dist.local_rank}" if job.device == "cuda" else "cpu")
        groups = [batches[i : i + options.batch_size] for i in range(0, len(batches), options.batch_size)]
        mine = groups[dist.rank :: dist.world]
        if not mine:
            raise HubkitError(
                f"{len(groups)} calibration batches cannot feed {dist.world} processes; pass more --calib"
            )
        with stage(job.timings, "layers"), cpu_fallback.active(force=job.device == "cpu") as fallback:
            skeleton = Skeleton(job.base, BaseWeights(job.base, job.int4), place, options.trust_remote_code)
            text = getattr(skeleton.model.config, "text_config", None) or skeleton.model.config
            experts = getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None) or 0
            coverage = ExpertCoverage(int(experts), int(getattr(text, "num_experts_per_tok", 1)), limit=len(mine))
            scratch = staging / SCRATCH
            ensure_folder(scratch)
            run = LayerwiseRun(
                skeleton, job.recipe.quantize, mine, staging, scratch, read_record(staging / MADE_BY).get("fingerprint", ""),
                parse_size(options.shard_size), coverage, progress=options.progress, rank=dist.rank, world=dist.world,
                layer_errors=LayerErrors(scratch / LAYER_ERROR_FILE) if dist.rank == 0 else LayerErrors(measuring=False),
                prefetch=os.environ.get(PREFETCH_ENV) != "0" and prefetch_fits(job.plan),
            )  # fmt: skip
            torch.manual_seed(options.seed)
            run.run()
            job.resumed_layers, job.layer_seconds, job.peak_device_bytes = (
                run.resumed_layers,
                run.layer_seconds,
                run.peak_device_bytes,
            )
            job.held_input_bytes = run.held_input_bytes
            job.layer_error = run.layer_errors.record()
            job.layer_parts, job.prefetch = run.layer_parts, run.prefetch
            summary = coverage.reduced().summary()
            summary["tokens"] = sum(len(b) for b in batches)
            if dist.rank == 0:  # keep only the records that every layer is done, for a rerun after a crash from here on
                for item in scratch.iterdir():
                    if item.name not in (STATE_FILE, LAYER_ERROR_FILE):
                        shutil.rmtree(item) if item.is_dir() and not item.is_symlink() else item.unlink()
                        interrupts.kill_point("scratch-item-removed")
        return summary, fallback

    def record(self, job: Job) -> dict[str, Any]:
        return {
            "resumed_layers": job.resumed_layers,
            "layer_seconds": job.layer_seconds,
            "layer_parts": job.layer_parts,
            "prefetch": job.prefetch,
            "held_input_bytes": job.held_input_bytes,
            "layer_error": job.layer_error,
        }

    def keeps_progress(self, staging: Path) -> bool:
        """Committed layers stay for a rerun of the same command to resume."""
        from hubkit.quantize.pipeline import SCRATCH

        if (staging / SCRATCH / STATE_FILE).is_file():
            log.warning("progress kept in %s: rerun the same command to resume (or delete that folder)", staging)
            return True
        return False


def prefetch_fits(plan: dict[str, Any]) -> bool:
    """Whether the plan's host budget holds the layerwise estimate, which counts one layer read ahead (an unknown
    budget: assumed to)."""
    budget = plan.get("host_budget_bytes")
    host = plan.get("modes", {}).get("layerwise", {}).get("host_bytes")
    return budget is None or host is None or host <= budget
