"""Exclusion lists read the way vLLM reads them, and module sets reported in readable groups.

vLLM counts a module as excluded when a pattern equals its name, is a substring of it (also after a
leading ``language_model.`` is stripped, which adds nothing to the substring test), or matches it with
``fnmatch``; each ``X*`` (not ``X.*``) is first split into ``X`` and ``X.*``.
"""

from __future__ import annotations

import bisect
import fnmatch
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import compress
from operator import methodcaller

from hubkit.checkpoint.modules import ModuleTable

_WILDCARDS = re.compile(r"[*?\[]")


def pattern_variants(pattern: str) -> list[str]:
    """The patterns vLLM actually tests for one exclusion entry."""
    if len(pattern) >= 2 and pattern.endswith("*") and pattern[-2] != ".":
        return [pattern, pattern[:-1], pattern[:-1] + ".*"]
    return [pattern]


class ModuleMatcher:
    """Answers 'which modules does this pattern exclude' for many patterns over a module table.

    A substring test runs only over the modules whose name template holds the needle's template (a
    substring keeps its place when digits are masked), and fnmatch runs once per template.
    """

    def __init__(self, table: ModuleTable) -> None:
        self.table = table
        self.names = table.names
        self._cache: dict[str, frozenset[int]] = {}
        self._absent = [c for c in "*?[" if c not in table.joined]

    def matches(self, pattern: str) -> frozenset[int]:
        """Indices of the names that ``pattern`` excludes."""
        cached = self._cache.get(pattern)
        if cached is None:
            hits: set[int] = set()
            for variant in pattern_variants(pattern):
                hits |= self._substring(variant)
                stem = variant.rstrip("*")
                if not _WILDCARDS.search(variant):
                    continue  # fnmatch without wildcards is equality, inside the substring hits
                if stem != variant and not _WILDCARDS.search(stem):
                    hits |= self._prefixed(stem)  # 'X*' is startswith(X): a range of the sorted names
                else:
                    hits |= self.table.matching(re.compile(fnmatch.translate(variant)))
            cached = self._cache[pattern] = frozenset(hits)
        return cached

    def _prefixed(self, stem: str) -> set[int]:
        first = bisect.bisect_left(self.names, stem)
        last = first
        while last < len(self.names) and self.names[last].startswith(stem):
            last += 1
        return set(range(first, last))

    def _substring(self, needle: str) -> set[int]:
        if any(c in needle for c in self._absent):
            return set()  # a character no name has (the wildcards, usually): nothing to look for
        masked, names = self.table.mask(needle), self.names
        contains = methodcaller("__contains__", needle)
        hits: set[int] = set()
        for template, members in self.table.templates.items():
            if masked in template:
                hits.update(compress(members, map(contains, map(names.__getitem__, members))))
        return hits


@dataclass
class ExclusionReading:
    """One exclusion list expanded against a checkpoint's modules."""

    patterns: list[str]
    per_pattern: dict[str, frozenset[int]]
    excluded: frozenset[int]

    def unmatched(self) -> list[str]:
        return [p for p, hits in self.per_pattern.items() if not hits]


def read_exclusions(matcher: ModuleMatcher, patterns: list[str]) -> ExclusionReading:
    per_pattern = {p: matcher.matches(p) for p in patterns}
    excluded: frozenset[int] = frozenset().union(*per_pattern.values()) if per_pattern else frozenset()
    return ExclusionReading(list(patterns), per_pattern, excluded)


_NUMBER = re.compile(r"(?<=\.)\d+(?=\.|$)")


def group_names(names: Iterable[str], limit: int = 12) -> list[str]:
    """Collapse numbered module names into ranges: ``layers.{1-60}.mlp.shared_experts.up_proj (60)``."""
    groups: dict[str, list[tuple[int, ...]]] = defaultdict(list)
    for name in names:
        numbers = tuple(int(n) for n in _NUMBER.findall(name))
        groups[_NUMBER.sub("{}", name)].append(numbers)
    lines = []
    for template in sorted(groups):
        rows = groups[template]
        slots = [sorted({row[i] for row in rows}) for i in range(len(rows[0]))]
        text = template.format(
            *("{" + format_ranges(values) + "}" if len(values) > 1 else str(values[0]) for values in slots)
        )
        full = 1
        for values in slots:
            full *= len(values)
        count = f"{len(rows):,} modules" if len(rows) == full else f"{len(rows):,} of {full:,} modules"
        lines.append(f"{text} ({count})" if len(rows) > 1 else text)
    if len(lines) > limit:
        lines = [*lines[:limit], f"... and {len(lines) - limit} more groups"]
    return lines


def format_ranges(values: list[int]) -> str:
    """``[1, 2, 3, 5]`` -> ``1-3,5``."""
    parts: list[str] = []
    start = previous = values[0]
    for value in [*values[1:], None]:
        if value is not None and value == previous + 1:
            previous = value
            continue
        parts.append(str(start) if start == previous else f"{start}-{previous}")
        if value is not None:
            start = previous = value
    return ",".join(parts)
