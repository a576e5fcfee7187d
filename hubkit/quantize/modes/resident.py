"""``resident``: the whole model on the device(s), loaded, calibrated and exported by modelopt in one piece."""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.quantize import interrupts
from hubkit.quantize.modes import CalibratedMode, register
from hubkit.quantize.plan import (
    PROCESS_BYTES,
    RESIDENT_FACTOR_CPU,
    RESIDENT_FACTOR_CUDA,
    Estimate,
    Shape,
    calibration_seconds,
    rewrite_bytes,
)

if TYPE_CHECKING:
    from hubkit.quantize.options import QuantizeOptions
    from hubkit.quantize.pipeline import Job


@register("resident")
class Resident(CalibratedMode):
    order = 10
    spans_devices = True

    def estimate(self, shape: Shape, kind: str, tokens: int, batch: int, seq: int, world: int) -> Estimate:
        factor = RESIDENT_FACTOR_CPU if kind == "cpu" else RESIDENT_FACTOR_CUDA
        device = int(shape.weight_bytes * factor) + batch * seq * shape.hidden * 4 * 8
        host = PROCESS_BYTES + (device if kind == "cpu" else 2 * shape.largest_layer)
        disk = shape.export_bytes + rewrite_bytes(shape) + (shape.weight_bytes if shape.int4 else 0)
        return Estimate(self.name, device, host, disk, calibration_seconds(shape, kind, tokens), None)

    def calibrate(self, job: Job) -> tuple[dict[str, Any], bool]:
        """Load (an INT4 base: from its BF16 copy), calibrate, export."""
        import torch

        from hubkit.quantize import cpu_fallback
        from hubkit.quantize.pipeline import dequantize_int4, intermediate_folder, stage

        options, timings, staging = job.options, job.timings, job.staging
        assert staging is not None
        peaks = job.peak_device_bytes if job.device == "cuda" else None
        with stage(timings, "dequantize"):
            weights = dequantize_int4(job.base, intermediate_folder(options.out)) if job.int4 else job.base
        with stage(timings, "load", peaks):
            model = _load_model(weights, job.device, options.max_gpu_memory, options.trust_remote_code)
        with cpu_fallback.active(force=job.device == "cpu") as fallback:
            with stage(timings, "calibrate", peaks):
                coverage = _calibrate(model, job.recipe.quantize, job.batches, options, torch)
                job.layer_error = _layer_error(model)
            with stage(timings, "export", peaks):
                _export(model, staging, options.shard_size)
        return coverage, fallback

    def record(self, job: Job) -> dict[str, Any]:
        return {"layer_error": job.layer_error}

    def finished(self, job: Job) -> None:
        """The BF16 copy of an INT4 base goes, unless ``--keep-intermediate``."""
        from hubkit.quantize.folders import discard
        from hubkit.quantize.pipeline import intermediate_folder

        if job.int4 and not job.options.keep_intermediate:
            discard(intermediate_folder(job.options.out))


def _load_model(base: Path, device: str, max_gpu_memory: str | None, trust_remote_code: bool) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    # Kimi and other wrapped models ship their modelling code beside the weights (auto_map): loading them
    # runs that code, as vLLM's --trust-remote-code does, and only when the user passed that flag.
    kwargs: dict[str, Any] = {"dtype": torch.bfloat16, "trust_remote_code": trust_remote_code}
    if device == "cuda":  # shard over every visible GPU, as the ecosystem does (accelerate's device map)
        kwargs["device_map"] = "auto"
        if max_gpu_memory:
            kwargs["max_memory"] = {i: max_gpu_memory for i in range(torch.cuda.device_count())}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model: Any = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    model.eval()
    return model


def _calibrate(
    model: Any, quant_config: dict[str, Any], batches: list[list[int]], options: QuantizeOptions, torch: Any
) -> dict[str, Any]:
    import modelopt.torch.quantization as mtq

    from hubkit.progress import progress_bar
    from hubkit.quantize.coverage import ExpertCoverage

    torch.manual_seed(options.seed)
    text = getattr(model.config, "text_config", None) or model.config
    experts = getattr(text, "n_routed_experts", None) or getattr(text, "num_local_experts", None) or 0
    coverage = ExpertCoverage(int(experts), int(getattr(text, "num_experts_per_tok", 1)))
    coverage.attach(model)
    device = next(model.parameters()).device
    tokens = sum(len(b) for b in batches)
    passes = {"count": 0}

    def forward_loop(m: Any) -> None:
        passes["count"] += 1
        with progress_bar(total=tokens, desc="calibrate", unit="tok", unit_scale=True, enabled=options.progress) as bar:
            for start in range(0, len(batches), options.batch_size):
                group = batches[start : start + options.batch_size]
                width = max(len(b) for b in group)
                ids = torch.tensor([b + [0] * (width - len(b)) for b in group], device=device)
                mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in group], device=device)
                with torch.no_grad():
                    m(input_ids=ids, attention_mask=mask)
                bar.update(sum(len(b) for b in group))
                interrupts.check()
        coverage.detach()  # count routing of the first pass only

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):  # modelopt prints to stdout
        warnings.simplefilter("ignore")
        mtq.quantize(model, quant_config, forward_loop)
    summary = coverage.summary()
    summary["tokens"] = tokens
    return summary


def _layer_error(model: Any) -> list[dict[str, Any]]:
    """Each decoder layer's quantization error as calibrated (``layer_error.py``), found as layerwise mode finds
    the layers; none when modelopt finds no decoder layers."""
    from modelopt.torch.quantization.utils.layerwise_calib import LayerActivationCollector

    from hubkit.quantize.layer_error import LayerErrors
    from hubkit.quantize.layerwise import register_layer_discovery

    register_layer_discovery()
    errors = LayerErrors()
    for index, layer in enumerate(LayerActivationCollector.get_decoder_layers(model) or []):
        errors.measure(index, layer, model)
    return errors.record()


def _export(model: Any, staging: Path, shard_size: str) -> None:
    from modelopt.torch.export import export_hf_checkpoint

    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore")
        export_hf_checkpoint(model, export_dir=staging, max_shard_size=shard_size)
