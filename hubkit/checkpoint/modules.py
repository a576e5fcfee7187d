"""Modules of a checkpoint, derived from tensor names: which are Linears, which are NVFP4-quantized.

Kept as one map per tensor suffix (module -> tensor), so that questions about 70,000 modules are set
algebra and ``map`` at C speed rather than a Python loop (or a string built) per module. Regular
expressions are answered once per name template (digits masked), not once per module.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from itertools import compress
from operator import attrgetter, itemgetter
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.checkpoint.safetensors_header import TensorInfo

#: Tensors an NVFP4 export adds to a quantized Linear besides its packed ``weight``.
NVFP4_SCALES = ("weight_scale", "weight_scale_2", "input_scale")
#: Names left behind by other formats or by modelopt internals; never valid in an export.
LEFTOVER_SUFFIXES = ("weight_packed", "weight_shape", "weight_zero_point", "_amax", "_scale", "_double_scale")

_MASK_DIGITS = str.maketrans("0123456789", "##########")
#: A pattern that spells no digit (no literal, range, escape or repeat count with one) and compares no
#: captured text can only test a digit with predicates every digit answers alike, such as ``\d``, ``\w`` or
#: ``.``; it therefore answers the same for every name that differs from another only in its digits.
_DIGIT_AWARE = re.compile(r"[0-9]|\(\?P=|\(\?\(")
_dtype_of = attrgetter("dtype")
_shape_of = attrgetter("shape")


def is_int4_side_tensor(name: str, tensors: Mapping[str, object]) -> bool:
    """A compressed-tensors INT4 side tensor (shape, zero point, group scale) with no counterpart in an NVFP4
    export, whose weight comes from ``weight_packed``."""
    if name.endswith((".weight_shape", ".weight_zero_point", ".weight_g_idx")):
        return True
    return name.endswith(".weight_scale") and name[: -len("_scale")] + "_packed" in tensors


def is_digit_blind(pattern: re.Pattern[str]) -> bool:
    """Whether ``pattern`` matches a name exactly when it matches the same name with other digits."""
    return _DIGIT_AWARE.search(pattern.pattern) is None


@dataclass
class ModuleTable:
    """Every module (tensor name minus its last component) and, per suffix, the modules that have it."""

    names: list[str]
    by_suffix: dict[str, dict[str, TensorInfo]]
    _distinct_values: dict[tuple[str, str], set[Any]] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> ModuleTable:
        by_suffix: dict[str, dict[str, TensorInfo]] = {}
        modules: dict[str, str] = {}  # one string per module, however many tensors it has
        for header in reversed(checkpoint.shards.values()):  # the first shard's entry wins, as in the table
            for name, tensor in header.tensors.items():
                module, _, suffix = name.rpartition(".")
                module = modules.setdefault(module, module)
                try:
                    by_suffix[suffix][module] = tensor
                except KeyError:
                    by_suffix[suffix] = {module: tensor}
        return cls(sorted(modules), by_suffix)

    def get(self, module: str, suffix: str) -> TensorInfo | None:
        return self.by_suffix.get(suffix, {}).get(module)

    def of_kind(self, suffix: str) -> dict[str, TensorInfo]:
        """Module -> its ``suffix`` tensor, for every module that has one."""
        return self.by_suffix.get(suffix, {})

    @cached_property
    def position(self) -> dict[str, int]:
        """Module name -> its index in ``names``."""
        return dict(zip(self.names, range(len(self.names)), strict=True))

    def indices(self, modules: Collection[str]) -> set[int]:
        """Indices of ``modules`` (all of them names in the table)."""
        if len(modules) < len(self.names) // 8:
            return set(map(self.position.__getitem__, modules))
        # Walking the names in order touches memory in order: several times faster than hash-order lookups.
        return set(compress(range(len(self.names)), map(modules.__contains__, self.names)))

    @cached_property
    def by_last(self) -> dict[str, dict[str, int]]:
        """Last name component -> parent path -> module index (``a.b.gate_proj`` -> ``gate_proj: {a.b: i}``).

        Built per template: where a template's last component has no digit, every member shares it and
        the parents are sliced off at C speed.
        """
        found: dict[str, dict[str, int]] = {}
        names = self.names
        for template, members in self.templates.items():
            _, dot, last = template.rpartition(".")
            if self._digits_masked and "#" not in last:
                member_names = map(names.__getitem__, members)
                cut = slice(0, len(template) - len(last) - len(dot))
                found.setdefault(last, {}).update(zip(map(itemgetter(cut), member_names), members, strict=True))
                continue
            for i in members:
                parent, _, own_last = names[i].rpartition(".")
                found.setdefault(own_last, {})[parent] = i
        return found

    @cached_property
    def joined(self) -> str:
        """Every module name, one per line."""
        return "\n".join(self.names)

    @cached_property
    def _digits_masked(self) -> bool:
        """Whether templates mask digits: not when a name already holds a ``#`` (a template could then
        stand for two different texts) or a line break."""
        return "#" not in self.joined and self.joined.count("\n") == len(self.names) - 1

    def mask(self, text: str) -> str:
        """The template of ``text``: every ASCII digit shown as ``#`` (unchanged when masking is off)."""
        return text.translate(_MASK_DIGITS) if self._digits_masked else text

    @cached_property
    def templates(self) -> dict[str, list[int]]:
        """Name template -> the indices of the modules that share it."""
        if not self._digits_masked:
            return {name: [i] for i, name in enumerate(self.names)}
        groups: dict[str, list[int]] = {}
        for i, template in enumerate(self.mask(self.joined).split("\n")):
            try:
                groups[template].append(i)
            except KeyError:
                groups[template] = [i]
        return groups

    def matching(self, pattern: re.Pattern[str]) -> set[int]:
        """Indices of the modules whose whole name ``pattern`` matches."""
        names = self.names
        if not is_digit_blind(pattern):
            return {i for i, name in enumerate(names) if pattern.fullmatch(name)}
        found: set[int] = set()
        for members in self.templates.values():
            if pattern.fullmatch(names[members[0]]):
                found.update(members)
        return found

    def match_groups(self, pattern: re.Pattern[str], *keys: str) -> list[tuple[Any, ...]]:
        """``(index, *group texts)`` for every module whose whole name ``pattern`` matches.

        For a digit-blind pattern, the names of one template match with the same spans, so each group
        is sliced out at C speed instead of matched again.
        """
        names = self.names
        if not is_digit_blind(pattern):
            matched = ((i, pattern.fullmatch(name)) for i, name in enumerate(names))
            return [(i, *map(found.group, keys)) for i, found in matched if found]
        rows: list[tuple[Any, ...]] = []
        for members in self.templates.values():
            found = pattern.fullmatch(names[members[0]])
            if found:
                member_names = list(map(names.__getitem__, members))
                columns = [map(itemgetter(slice(*found.span(key))), member_names) for key in keys]
                rows += zip(members, *columns, strict=True)
        return rows

    def dtypes(self, suffix: str) -> set[str]:
        """The dtypes the ``suffix`` tensors have (a handful, for 70,000 tensors)."""
        return self._distinct(suffix, "dtype")

    def shapes(self, suffix: str) -> set[tuple[int, ...]]:
        """The shapes the ``suffix`` tensors have."""
        return self._distinct(suffix, "shape")

    def _distinct(self, suffix: str, field_name: str) -> set[Any]:
        key = (suffix, field_name)
        if key not in self._distinct_values:
            self._distinct_values[key] = set(map(attrgetter(field_name), self.of_kind(suffix).values()))
        return self._distinct_values[key]

    @cached_property
    def _weights(self) -> tuple[set[str], set[str]]:
        weights = self.of_kind("weight")
        modules = list(weights)
        infos = list(weights.values())
        packed = set(compress(modules, map("U8".__eq__, map(_dtype_of, infos))))
        two_d = set(compress(modules, map((2).__eq__, map(len, map(_shape_of, infos)))))
        return packed, two_d

    @property
    def packed(self) -> set[str]:
        """Modules whose weight is packed NVFP4 (U8)."""
        return self._weights[0]

    @cached_property
    def nvfp4_complete(self) -> bool:
        """Whether exactly the packed modules carry each NVFP4 scale: then every NVFP4 module has its packed
        weight and all three scales (the usual export, proved by comparing key sets)."""
        return all(self.of_kind(s).keys() == self.packed for s in NVFP4_SCALES)

    @cached_property
    def quantized(self) -> set[str]:
        """Modules stored as NVFP4: a packed U8 weight or any NVFP4 scale."""
        if self.nvfp4_complete:  # comparing is cheaper than a union
            return self.packed
        return self.packed.union(*(self.of_kind(s).keys() for s in NVFP4_SCALES))

    @cached_property
    def linear(self) -> set[str]:
        """Linears: a 2-D weight, or an NVFP4-quantized weight."""
        two_d, quantized = self._weights[1], self.quantized
        if quantized <= two_d:  # packed NVFP4 weights are 2-D too: no new set needed
            return two_d
        return two_d | (quantized & self.of_kind("weight").keys())
