"""Declarative profiles (``checks/*.toml``): what a family of checkpoints must look like."""

from __future__ import annotations

import ast
import operator
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from hubkit.checkpoint.model import Checkpoint
from hubkit.errors import HubkitError
from hubkit.reads import read_regular_text
from hubkit.resources import data_dir
from hubkit.sizes import MiB

DEFAULT_PROFILE = "modelopt-nvfp4"
#: The largest profile file read (a profile is a page of TOML).
MAX_PROFILE_BYTES = 1 * MiB


@dataclass(frozen=True)
class Profile:
    """One family of checkpoints: how to recognise it and the rules its exports follow."""

    name: str
    description: str
    match: dict[str, Any]
    quantization: dict[str, Any]
    modules: dict[str, Any]
    quantize: dict[str, Any] = field(default_factory=dict)

    @property
    def specificity(self) -> int:
        return len(self.match)

    def matches(self, checkpoint: Checkpoint) -> bool:
        facts = _match_facts(checkpoint)
        for key, wanted in self.match.items():
            have = facts.get(key)
            options = wanted if isinstance(wanted, list) else [wanted]
            values = have if isinstance(have, list) else [have]
            if not any(v in options for v in values):
                return False
        return True

    @cached_property
    def quantized_pattern(self) -> re.Pattern[str] | None:
        return _union(self.modules.get("quantized", []))

    @cached_property
    def never_quantized_pattern(self) -> re.Pattern[str] | None:
        return _union(self.modules.get("never_quantized", []))

    @cached_property
    def expert_pattern(self) -> re.Pattern[str] | None:
        pattern = self.modules.get("expert")
        return re.compile(pattern) if pattern else None

    @property
    def fused_groups(self) -> list[list[str]]:
        return [list(group) for group in self.modules.get("fused", [])]

    def expected_quantized_count(self, config: dict[str, Any]) -> int | None:
        """Evaluate the profile's count expression over the text config; None when it has none."""
        expression = self.modules.get("expected_quantized_count")
        return None if not expression else evaluate_count(expression, config)


def _union(patterns: list[str]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{p})" for p in patterns)) if patterns else None


def _match_facts(checkpoint: Checkpoint) -> dict[str, Any]:
    config = checkpoint.config
    found_block = config.get("quantization_config")
    block: dict[str, Any] = found_block if isinstance(found_block, dict) else {}
    found_quant = (checkpoint.quant_config or {}).get("quantization")
    quant: dict[str, Any] = found_quant if isinstance(found_quant, dict) else {}
    return {
        "architectures": config.get("architectures"),
        "model_type": config.get("model_type"),
        "quant_method": block.get("quant_method") or ("modelopt" if checkpoint.quant_config else None),
        "quant_algo": quant.get("quant_algo") or block.get("quant_algo"),
    }


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.FloorDiv: operator.floordiv}


def evaluate_count(expression: str, config: dict[str, Any]) -> int:
    """Evaluate integer arithmetic over config keys (``+ - * //`` and parentheses only).

    A few lines of ``ast`` rather than a dependency: the profiles need nothing more than this.
    """

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return value(node.body)
        if isinstance(node, ast.Constant) and type(node.value) is int:
            return node.value
        if isinstance(node, ast.Name):
            found = config.get(node.id)
            if type(found) is not int:
                raise KeyError(node.id)
            return found
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return int(_OPERATORS[type(node.op)](value(node.left), value(node.right)))
        raise ValueError(f"unsupported expression element {ast.dump(node)}")

    return value(ast.parse(expression, mode="eval"))


def _load_file(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_regular_text(path, limit=MAX_PROFILE_BYTES, what="profile"))
    except tomllib.TOMLDecodeError as exc:
        raise HubkitError(f"profile {path} is unreadable ({exc}); fix or remove it") from exc


_ALLOWED_KEYS = {"name", "description", "extends", "match", "quantization", "modules", "quantize"}


def load_profiles(directory: Path | None = None) -> dict[str, Profile]:
    """Every profile in ``checks/``, with ``extends`` resolved (tables merge key by key)."""
    folder = directory or data_dir("checks")
    raw = {path.stem: _load_file(path) for path in sorted(folder.glob("*.toml"))}
    for stem, data in raw.items():
        unknown = set(data) - _ALLOWED_KEYS
        if unknown:
            raise HubkitError(f"profile {stem}: unknown keys {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")

    def resolved(stem: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
        if stem in seen:
            raise HubkitError(f"profile {stem} extends itself through {' -> '.join(seen)}")
        data = raw[stem]
        parent_name = data.get("extends")
        if not parent_name:
            return data
        if parent_name not in raw:
            raise HubkitError(f"profile {stem} extends unknown profile {parent_name}")
        parent = resolved(parent_name, (*seen, stem))
        merged = {**parent, **{k: v for k, v in data.items() if not isinstance(v, dict)}}
        for table in ("quantization", "modules", "quantize"):
            merged[table] = {**parent.get(table, {}), **data.get(table, {})}
        merged["match"] = data.get("match", {})
        return merged

    profiles = {}
    for stem in raw:
        data = resolved(stem)
        profiles[stem] = Profile(
            name=stem,
            description=str(data.get("description", "")),
            match=dict(data.get("match", {})),
            quantization=dict(data.get("quantization", {})),
            modules=dict(data.get("modules", {})),
            quantize=dict(data.get("quantize", {})),
        )
    return profiles


def choose_profile(checkpoint: Checkpoint, requested: str | None) -> Profile:
    """The profile named by ``requested``, else the most specific one whose match table fits."""
    profiles = load_profiles()
    if requested:
        if requested not in profiles:
            raise HubkitError(f"unknown profile '{requested}'; available: {', '.join(sorted(profiles))}")
        return profiles[requested]
    fitting = [p for p in profiles.values() if p.match and p.matches(checkpoint)]
    if not fitting:
        return profiles[DEFAULT_PROFILE]
    return max(fitting, key=lambda p: (p.specificity, p.name))
