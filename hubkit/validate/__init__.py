"""Pre-upload validation: checks with stable codes, run over the checkpoint model, rendered for people and CI."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from hubkit.checkpoint import load_checkpoint
from hubkit.validate.context import Context, load_reference
from hubkit.validate.engine import Report, Severity, run_all, select_checks
from hubkit.validate.profiles import choose_profile


@dataclass(frozen=True)
class ValidateOptions:
    profile: str | None = None
    reference: str | None = None
    base: str | None = None
    deep: bool = False
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    strict: bool = False
    workers: int = 4
    progress: bool = False
    split: bool = True  # share the checks with a forked child where that is safe (see engine.run_all)


def validate(path: str, options: ValidateOptions = ValidateOptions(), *, retain: list[object] | None = None) -> Report:
    """Validate the checkpoint at ``path``; user errors raise HubkitError, artifact faults are findings.

    ``retain`` receives the loaded context, for a caller about to exit that need not free it (garbage
    collection then stays off).
    """
    checks = select_checks(list(options.select), list(options.ignore))
    reference = load_reference(options.reference) if options.reference else None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects, no cycles: collection only costs time
    try:
        checkpoint = load_checkpoint(path, progress=options.progress)
        base = load_checkpoint(options.base, progress=options.progress) if options.base else None
        profile = choose_profile(checkpoint, options.profile)
        context = Context(
            checkpoint, profile, reference, base, deep=options.deep, workers=options.workers, progress=options.progress
        )
        findings, ran = run_all(context, checks, split=options.split)
        if retain is not None:
            retain.append(context)
    finally:
        if gc_was_enabled and retain is None:
            gc.enable()  # (with retain, the process is about to end: a collection would only cost time)
    findings.sort(key=lambda f: (f.severity.rank, f.file or "", f.code, f.tensor or ""))
    return Report(path, profile.name, reference.name if reference else None, findings, ran, options.strict)


__all__ = ["Report", "Severity", "ValidateOptions", "validate"]
