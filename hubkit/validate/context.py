"""What the checks see: the checkpoint, its profile, an optional reference and base, and shared derivations."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

from hubkit.checkpoint.json_text import JsonProblem, decode_json
from hubkit.checkpoint.loader import MAX_JSON_BYTES
from hubkit.checkpoint.model import CONFIG, QUANT_CONFIG, Checkpoint
from hubkit.checkpoint.modules import ModuleTable
from hubkit.checkpoint.source import HUB_SCHEME
from hubkit.errors import HubkitError
from hubkit.reads import read_regular
from hubkit.validate.exclusions import ExclusionReading, ModuleMatcher, read_exclusions
from hubkit.validate.profiles import Profile

T = TypeVar("T")


@dataclass(frozen=True)
class Reference:
    """The parts of a reference release the validator compares against: exclusions and quant settings."""

    name: str
    exclude_modules: list[str]
    settings: dict[str, Any]


def load_reference(ref: str) -> Reference:
    """Read a reference: a checkpoint folder, or its ``hf_quant_config.json`` / ``config.json``."""
    usage = "pass a release folder, its hf_quant_config.json, or hf://ORG/NAME"
    try:
        data = decode_json(_reference_bytes(ref))
    except OSError as exc:
        raise HubkitError(f"cannot read reference {ref} ({exc.strerror or exc}); {usage}") from None
    except JsonProblem as problem:
        raise HubkitError(f"reference {ref} {problem.phrase}; {usage}") from None
    if isinstance(data, dict) and isinstance(data.get("quantization"), dict):
        quant = data["quantization"]
        patterns = quant.get("exclude_modules")
        settings = {k: quant.get(k) for k in ("quant_algo", "kv_cache_quant_algo", "group_size")}
    elif isinstance(data, dict) and isinstance(data.get("quantization_config"), dict):
        block = data["quantization_config"]
        patterns = block.get("ignore")
        settings = {"quant_algo": block.get("quant_algo"), "group_size": _config_group_size(block)}
    else:
        raise HubkitError(f"reference {ref} holds no modelopt quantization config; {usage}")
    if not isinstance(patterns, list):
        raise HubkitError(f"reference {ref} has no exclusion list; pass its hf_quant_config.json")
    return Reference(ref, [str(p) for p in patterns], settings)


def _reference_bytes(ref: str) -> bytes:
    """hf_quant_config.json (else config.json) of a folder or Hub repo, or the named file itself."""
    if ref.startswith(HUB_SCHEME):
        from hubkit.checkpoint.hub_source import HubSource

        source = HubSource(ref)
        sizes = {entry.path: entry.size for entry in source.list_files()}
        for name in (QUANT_CONFIG, CONFIG):
            if name in sizes:
                if sizes[name] > MAX_JSON_BYTES:
                    raise HubkitError(f"reference {ref}: {name} is {sizes[name]:,} bytes, larger than any config")
                return source.read_range(name, 0, sizes[name])
        raise HubkitError(f"reference {ref} has neither {QUANT_CONFIG} nor {CONFIG}")
    path = Path(ref)
    if not path.exists():
        raise HubkitError(f"reference {ref} does not exist; pass a release folder or its hf_quant_config.json")
    if path.is_dir():
        found = [path / name for name in (QUANT_CONFIG, CONFIG) if (path / name).exists()]
        if not found:
            raise HubkitError(f"reference {ref} is a folder without {QUANT_CONFIG} or {CONFIG}")
        path = found[0]
    return read_regular(path, limit=MAX_JSON_BYTES, what="reference")


def _config_group_size(block: dict[str, Any]) -> Any:
    groups = block.get("config_groups")
    if isinstance(groups, dict):
        for group in groups.values():
            if isinstance(group, dict) and isinstance(group.get("weights"), dict):
                return group["weights"].get("group_size")
    return None


@dataclass
class Context:
    checkpoint: Checkpoint
    profile: Profile
    reference: Reference | None = None
    base: Checkpoint | None = None
    deep: bool = False
    workers: int = 4
    progress: bool = False
    available: frozenset[str] = field(init=False)
    #: the parts of the checkpoint that are whole (see ``Check.requires``)
    whole: frozenset[str] = field(init=False)
    _memo: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        extras = {"base": self.base is not None, "reference": self.reference is not None, "deep": self.deep}
        self.available = frozenset(k for k, on in extras.items() if on)
        shards = self.checkpoint.shards.values()
        parts = {
            "config": self.checkpoint.usable(CONFIG),
            "tensors": all(shard.fatal is None and not shard.bad_entries for shard in shards),
        }
        self.whole = frozenset(k for k, on in parts.items() if on)

    def memo(self, key: str, compute: Callable[[], T]) -> T:
        """Compute a value shared by several checks once per run."""
        if key not in self._memo:
            self._memo[key] = compute()
        return cast(T, self._memo[key])

    @cached_property
    def modules(self) -> ModuleTable:
        return ModuleTable.from_checkpoint(self.checkpoint)

    @cached_property
    def matcher(self) -> ModuleMatcher:
        return ModuleMatcher(self.modules)

    @cached_property
    def exclusions(self) -> ExclusionReading | None:
        """The checkpoint's own exclusion list, expanded; None when it has none."""
        patterns = self.checkpoint.exclude_modules
        return None if patterns is None else read_exclusions(self.matcher, patterns)

    @cached_property
    def reference_exclusions(self) -> ExclusionReading | None:
        return None if self.reference is None else read_exclusions(self.matcher, self.reference.exclude_modules)

    @cached_property
    def _classes(self) -> tuple[list[int], frozenset[int], frozenset[int]]:
        """Engine-quantizable Linears, NVFP4 modules and never-quantized Linears, as index sets."""
        never = self.profile.never_quantized_pattern
        linear = self.modules.indices(self.modules.linear)
        never_linear = self.modules.matching(never) & linear if never is not None else set()
        return (
            sorted(linear - never_linear),
            frozenset(self.modules.indices(self.modules.quantized)),
            frozenset(never_linear),
        )

    @property
    def linear_modules(self) -> list[int]:
        """Indices (into ``modules.names``) of the Linears an engine could quantize."""
        return self._classes[0]

    @property
    def quantized_modules(self) -> frozenset[int]:
        """Indices of the modules stored as NVFP4."""
        return self._classes[1]

    @property
    def never_quantized_modules(self) -> frozenset[int]:
        """Indices of Linears that engines never quantize (router, embeddings, vision tower, ...)."""
        return self._classes[2]
