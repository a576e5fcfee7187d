"""Run the applicable checks over one checkpoint and collect the findings into a report."""

from __future__ import annotations

from hubkit.checkpoint import load_checkpoint
from hubkit.checkpoint.model import CONFIG
from hubkit.errors import HubkitError
from hubkit.validate.context import Context, load_reference
from hubkit.validate.engine import Report, run_checks, select_checks
from hubkit.validate.options import ValidateOptions
from hubkit.validate.profiles import choose_profile


def validate(path: str, options: ValidateOptions | None = None) -> Report:
    """Validate the checkpoint at ``path``; user errors raise HubkitError, artifact faults are findings."""
    options = options or ValidateOptions()
    reference = load_reference(options.reference) if options.reference else None
    checkpoint = load_checkpoint(path, progress=options.progress, limits=options.limits)
    base = load_checkpoint(options.base, progress=options.progress, limits=options.limits) if options.base else None
    if base is not None and CONFIG not in base.files and not base.shards:
        raise HubkitError(
            f"--base {options.base} is not a checkpoint (no {CONFIG} and no .safetensors files); "
            "pass the folder or hf:// repo of the model the export was made from"
        )
    profile = choose_profile(checkpoint, options.profile)
    context = Context(
        checkpoint, profile, reference, base, deep=options.deep, workers=options.workers, progress=options.progress
    )
    ran = list(run_checks(context, select_checks(list(options.select), list(options.ignore))))  # the applicable ones
    findings = [finding for _, found in ran for finding in found]
    findings.sort(key=lambda f: (f.severity.rank, f.file or "", f.code, f.line or 0, f.tensor or ""))
    return Report(path, profile.name, reference.name if reference else None, findings, len(ran), options.strict)
