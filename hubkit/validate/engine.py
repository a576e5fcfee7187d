"""The validation engine: findings, severities, the registry of checks with stable codes, and the runner."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from hubkit.checkpoint.model import UnreadableFile
from hubkit.errors import HubkitError
from hubkit.validate.secrets import mask

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

#: Findings one check lists before the rest are counted in one last finding: a broken checkpoint of
#: millions of tensors must not become millions of findings (and gigabytes of report).
MAX_FINDINGS_PER_CHECK = 1000


@dataclass(frozen=True, slots=True)
class Issue:
    """What a check reports; the runner adds the check's code and severity."""

    message: str
    file: str | None = None
    tensor: str | None = None
    line: int | None = None  # 1-based, in ``file`` (a config's key, a card's line)


@dataclass(frozen=True, slots=True)
class Finding:
    code: str
    severity: Severity
    check: str
    message: str
    file: str | None = None
    tensor: str | None = None
    line: int | None = None

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
    #: parts of the checkpoint the check reads, which must be whole for it to say anything: "config"
    #: (config.json a readable JSON object) and "tensors" (every shard's header read). A broken part is
    #: reported once, where it is (HK101/HK102/HK113, HK2xx), and the checks that need it do not run.
    requires: frozenset[str] = field(default_factory=frozenset)

    @property
    def family(self) -> str:
        return FAMILIES[self.code[2]]

    def explain(self) -> str:
        text = (
            f"{self.code} {self.name} ({self.severity.value}, family {self.family})\n\n"
            f"What it does\n  {self.what}\n\nWhy it matters\n  {self.why}\n"
        )
        if self.requires:
            parts = " and ".join(REQUIREMENTS[r] for r in sorted(self.requires))
            text += f"\nSkipped when\n  {parts} (that fault is reported once, by its own check).\n"
        return text


#: What each ``requires`` name means, for ``--explain``.
REQUIREMENTS = {
    "config": "config.json is missing, unreadable or not a JSON object",
    "tensors": "a safetensors header could not be read in full",
}


REGISTRY: dict[str, Check] = {}


def check(
    code: str,
    name: str,
    severity: Severity,
    *,
    what: str,
    why: str,
    needs: Iterable[str] = (),
    requires: Iterable[str] = (),
) -> Callable[[CheckFunction], CheckFunction]:
    """Register a check; a duplicate or retired code fails at import, never at run time."""

    def register(function: CheckFunction) -> CheckFunction:
        if not CODE_PATTERN.fullmatch(code):
            raise ValueError(f"check code {code!r} is not HK followed by three digits")
        if code in REGISTRY or code in RETIRED_CODES:
            raise ValueError(f"check code {code} is already taken or retired")
        unknown = set(requires) - REQUIREMENTS.keys()
        if unknown:
            raise ValueError(f"check {code} requires unknown parts {sorted(unknown)}")
        REGISTRY[code] = Check(code, name, severity, what, why, function, frozenset(needs), frozenset(requires))
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
    """The checks whose extra inputs (base, reference, deep) this run has and whose parts of the
    checkpoint are whole."""
    return [item for item in checks if item.needs <= context.available and item.requires <= context.whole]


def run_checks(context: Context, checks: list[Check]) -> Iterator[tuple[Check, list[Finding]]]:
    """Run each applicable check; yields the check with its findings.

    A file that cannot be read while a check reads it is that check's finding, naming the file.
    """
    for item in applicable(context, checks):
        findings: list[Finding] = []
        unlisted = 0
        try:
            for issue in item.run(context):
                if len(findings) >= MAX_FINDINGS_PER_CHECK:
                    unlisted += 1
                    continue
                tensor = None if issue.tensor is None else mask(issue.tensor)  # names may hold a token: never shown
                file = None if issue.file is None else mask(issue.file)
                findings.append(
                    Finding(item.code, item.severity, item.name, mask(issue.message), file, tensor, issue.line)
                )
        except UnreadableFile as unreadable:
            message = f"{unreadable.path} {unreadable.reason}; this check could not read it"
            findings.append(Finding(item.code, Severity.ERROR, item.name, message, unreadable.path))
        if unlisted:
            message = f"… and {unlisted:,} more findings of this check, not listed"
            findings.append(Finding(item.code, item.severity, item.name, message))
        yield item, findings


def findings_of(context: Context, checks: list[Check]) -> list[Finding]:
    """Every finding of the applicable ``checks``."""
    return [finding for _, found in run_checks(context, checks) for finding in found]
