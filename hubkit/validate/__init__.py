"""Pre-upload validation: checks with stable codes, run over the checkpoint model, rendered for people and CI."""

from __future__ import annotations

import gc
from dataclasses import dataclass

from hubkit.checkpoint import load_checkpoint
from hubkit.validate.context import Context, Reference, load_reference
from hubkit.validate.engine import Finding, Report, Severity, applicable, findings_of, select_checks
from hubkit.validate.profiles import choose_profile
from hubkit.validate.split import can_fork, cancel, finish, share, start


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
    split: bool = True  # share the checks with a forked child where that is safe (see hubkit.validate.split)


def validate(path: str, options: ValidateOptions = ValidateOptions(), *, retain: list[object] | None = None) -> Report:
    """Validate the checkpoint at ``path``; user errors raise HubkitError, artifact faults are findings.

    With ``options.split`` and where it is safe, half of the checks run in a forked child that reads the
    checkpoint too (see ``hubkit.validate.split``). ``retain`` receives the loaded context, for a caller
    about to exit that need not free it (garbage collection then stays off).
    """
    reference = load_reference(options.reference) if options.reference else None
    gc_was_enabled = gc.isenabled()
    gc.disable()  # hundreds of thousands of small objects, no cycles: collection only costs time
    child = None
    try:
        if options.split and can_fork(path, options.base):  # forked first: the rest, imports too, runs twice
            child = start(lambda: _their_findings(_context(path, options, reference, progress=False), options))
        checks = select_checks(list(options.select), list(options.ignore))
        # The checks kept here never need a tensor's bytes (--deep, which does, is kept here too), so they
        # read headers without byte ranges; the worker's HK205 vouches that no entry's range is malformed
        # (an entry the full reading drops), else they run again over a fully read checkpoint.
        light = child is not None and not options.deep and any(c.code == MALFORMED_ENTRY for c in checks)
        context = _context(path, options, reference, progress=options.progress, byte_ranges=not light)
        chosen = applicable(context, checks)
        here, there = share(chosen) if child else (chosen, [])
        findings = findings_of(context, here)
        if child is not None:
            theirs = finish(child)
            if light and (theirs is None or any(f.code == MALFORMED_ENTRY for f in theirs)):
                context = _context(path, options, reference, progress=options.progress)
                findings = findings_of(context, here)
            findings += findings_of(context, there) if theirs is None else theirs
        if retain is not None:
            retain.append(context)
    except BaseException:
        cancel(child)
        raise
    finally:
        if gc_was_enabled and retain is None:
            gc.enable()  # (with retain, the process is about to end: a collection would only cost time)
    findings.sort(key=lambda f: (f.severity.rank, f.file or "", f.code, f.tensor or ""))
    return Report(
        path, context.profile.name, reference.name if reference else None, findings, len(chosen), options.strict
    )


#: The check of malformed header entries (see ``validate``).
MALFORMED_ENTRY = "HK205"


def _context(
    path: str, options: ValidateOptions, reference: Reference | None, *, progress: bool, byte_ranges: bool = True
) -> Context:
    checkpoint = load_checkpoint(path, progress=progress, byte_ranges=byte_ranges)
    base = load_checkpoint(options.base, progress=progress) if options.base else None
    profile = choose_profile(checkpoint, options.profile)
    return Context(checkpoint, profile, reference, base, deep=options.deep, workers=options.workers, progress=progress)


def _their_findings(context: Context, options: ValidateOptions) -> list[Finding]:
    """The worker's side of a split run: its share of the applicable checks. The context is kept: the
    worker ends without freeing it, which would take longer than the checks' last steps."""
    _KEPT.append(context)
    checks = select_checks(list(options.select), list(options.ignore))
    return findings_of(context, share(applicable(context, checks))[1])


_KEPT: list[Context] = []


__all__ = ["Report", "Severity", "ValidateOptions", "validate"]
