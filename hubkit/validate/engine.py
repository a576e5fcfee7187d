"""The validation engine: findings, severities, the registry of checks with stable codes, and the runner."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from hubkit.errors import HubkitError

if TYPE_CHECKING:
    from hubkit.validate.context import Context


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


#: Family digit -> family name; the first digit of a code is its family.
FAMILIES = {
    "1": "files",
    "2": "safetensors",
    "3": "index",
    "4": "quant-config",
    "5": "exclusions",
    "6": "tensors",
    "7": "numerics",
    "8": "security",
    "9": "card",
}

#: Codes that were used once and must never be given to another check.
RETIRED_CODES: frozenset[str] = frozenset()

CODE_PATTERN = re.compile(r"HK[1-9]\d\d")


@dataclass(frozen=True, slots=True)
class Issue:
    """What a check reports; the runner adds the check's code and severity."""

    message: str
    file: str | None = None
    tensor: str | None = None


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    check: str
    message: str
    file: str | None = None
    tensor: str | None = None

    @property
    def family(self) -> str:
        return FAMILIES[self.code[2]]


CheckFunction = Callable[["Context"], Iterable[Issue]]


@dataclass(frozen=True)
class Check:
    """One registered check: a stable code, a severity, a short name and its what/why text."""

    code: str
    name: str
    severity: Severity
    what: str
    why: str
    run: CheckFunction
    needs: frozenset[str] = field(default_factory=frozenset)  # "base", "reference", "deep"

    @property
    def family(self) -> str:
        return FAMILIES[self.code[2]]

    def explain(self) -> str:
        return (
            f"{self.code} {self.name} ({self.severity.value}, family {self.family})\n\n"
            f"What it does\n  {self.what}\n\nWhy it matters\n  {self.why}\n"
        )


REGISTRY: dict[str, Check] = {}


def check(
    code: str, name: str, severity: Severity, *, what: str, why: str, needs: Iterable[str] = ()
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; a duplicate or retired code fails at import, never at run time."""

    def register(function: CheckFunction) -> CheckFunction:
        if not CODE_PATTERN.fullmatch(code):
            raise ValueError(f"check code {code!r} is not HK followed by three digits")
        if code in REGISTRY or code in RETIRED_CODES:
            raise ValueError(f"check code {code} is already taken or retired")
        REGISTRY[code] = Check(code, name, severity, what, why, function, frozenset(needs))
        return function

    return register


def all_checks() -> list[Check]:
    """Every registered check, sorted by code."""
    import hubkit.validate.rules  # noqa: F401  (registers the checks)

    return [REGISTRY[code] for code in sorted(REGISTRY)]


def parse_code_list(text: str | None) -> list[str]:
    """Split a ``--select``/``--ignore`` value and refuse anything that names no check."""
    if not text:
        return []
    known = [c.code for c in all_checks()]
    selectors = [part.strip().upper() for part in text.split(",") if part.strip()]
    for selector in selectors:
        if not re.fullmatch(r"HK\d{0,3}", selector) or not any(code.startswith(selector) for code in known):
            raise HubkitError(f"'{selector}' names no check; run 'hubkit validate --list-checks' for the codes")
    return selectors


def select_checks(select: list[str], ignore: list[str]) -> list[Check]:
    """Checks chosen by code prefixes (all when ``select`` is empty), minus the ignored ones."""
    return [
        c
        for c in all_checks()
        if (not select or any(c.code.startswith(s) for s in select)) and not any(c.code.startswith(i) for i in ignore)
    ]


def find_check(code: str) -> Check:
    found = {c.code: c for c in all_checks()}.get(code.upper())
    if found is None:
        raise HubkitError(f"no check has the code '{code}'; run 'hubkit validate --list-checks'")
    return found


@dataclass
class Report:
    """The result of one validation run."""

    path: str
    profile: str
    reference: str | None
    findings: list[Finding]
    checks_run: int
    strict: bool = False

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    @property
    def passed(self) -> bool:
        failing = {Severity.ERROR, Severity.WARNING} if self.strict else {Severity.ERROR}
        return not any(f.severity in failing for f in self.findings)


def applicable(context: Context, checks: list[Check]) -> list[Check]:
    """The checks whose extra inputs (base, reference, deep) this run has."""
    return [item for item in checks if item.needs <= context.available]


def run_checks(context: Context, checks: list[Check]) -> Iterator[tuple[Check, list[Finding]]]:
    """Run each applicable check; yields the check with its findings."""
    for item in applicable(context, checks):
        findings = [
            Finding(item.code, item.severity, item.name, issue.message, issue.file, issue.tensor)
            for issue in item.run(context)
        ]
        yield item, findings


#: Checks that stay in this process when the run is split: the families that read the module table,
#: --deep (threads and a progress bar) and the card facts; together they weigh about as much as the rest
#: (files, headers, the index, secrets) on a full-scale Kimi checkpoint.
STAY_HERE = ("HK5", "HK6", "HK7", "HK903")


def run_all(context: Context, checks: list[Check], *, split: bool = True) -> tuple[list[Finding], int]:
    """Run the applicable checks; return their findings and how many ran.

    With ``split`` and where fork is safe, the checks outside ``STAY_HERE`` run in a forked child, which shares the loaded checkpoint copy-on-write and sends its findings back through
    a pipe: two cores for a 277,000-tensor checkpoint. If the child fails in any way, its checks run
    here instead, so a bug surfaces exactly as it would without the child.
    """
    chosen = applicable(context, checks)
    here = [c for c in chosen if c.code.startswith(STAY_HERE)]
    there = [c for c in chosen if not c.code.startswith(STAY_HERE)]
    if not (split and here and there and _fork_is_safe(context)):
        return _findings(context, chosen), len(chosen)
    sys.stdout.flush()
    sys.stderr.flush()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: run its share, hand the findings over, leave without any cleanup
        status = 1
        try:
            os.close(read_end)
            payload = pickle.dumps(_findings(context, there))
            with os.fdopen(write_end, "wb") as pipe:
                pipe.write(payload)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        found = _findings(context, here)
        with os.fdopen(read_end, "rb") as pipe:
            payload = pipe.read()
        _, status = os.waitpid(pid, 0)
    except BaseException:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise
    theirs = pickle.loads(payload) if status == 0 and payload else _findings(context, there)
    return found + theirs, len(chosen)


def _findings(context: Context, checks: list[Check]) -> list[Finding]:
    return [finding for _, found in run_checks(context, checks) for finding in found]


def _fork_is_safe(context: Context) -> bool:
    """Linux (fork is the platform's way there), two usable cores, no other thread that a fork could
    catch holding a lock, and local files only (a child must not share the parent's HTTP connections)."""
    if sys.platform != "linux" or threading.active_count() > 1 or len(os.sched_getaffinity(0)) < 2:
        return False
    checkpoints = [context.checkpoint] + ([context.base] if context.base is not None else [])
    return all(c.source.local_path("") is not None for c in checkpoints)
