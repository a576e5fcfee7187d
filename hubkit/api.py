"""hubkit's Python API: the library functions behind the CLI verbs, under the verbs' names.

    from hubkit.api import ValidateOptions, validate
    report = validate("Kimi-K2.7-NVFP4", ValidateOptions(deep=True))

    from hubkit.api import PushOptions, push
    result = push(PushOptions(Path("Kimi-K2.7-NVFP4"), repo="my-org/Kimi-K2.7-NVFP4", token=token,
                              endpoint="https://huggingface.co", commit_message="Release v1"))

The options dataclasses are the ones the CLI flags and the manifest tables are derived from (``hubkit.options``):
constructing one checks its values as ``hubkit quantize``/``validate``/``push`` and ``hubkit.toml`` do.

Each name is imported on first use (PEP 562), so ``from hubkit.api import validate`` costs what ``hubkit
validate`` costs and nothing imports torch until ``quantize`` runs (it needs the ``quantize`` extra). The API has its own module because ``hubkit.validate``,
``hubkit.release`` and ``hubkit.card`` are subpackages: ``from hubkit import validate`` would give the subpackage
once anything has imported it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the real names, for type checkers; at run time __getattr__ imports them
    from hubkit.card.check import CardProblem, check_card
    from hubkit.card.facts import checkpoint_facts
    from hubkit.card.render import render_card
    from hubkit.checkpoint import Checkpoint, load_checkpoint
    from hubkit.errors import ExitCode, HubkitError
    from hubkit.hub.options import PushOptions
    from hubkit.hub.push import PushResult, push
    from hubkit.manifest import Manifest, load_manifest, manifest_json_schema, manifest_problems
    from hubkit.quantize.options import QuantizeOptions
    from hubkit.quantize.pipeline import QuantizeResult, quantize
    from hubkit.quantize.plan import Plan, estimate
    from hubkit.release.options import ReleaseOptions
    from hubkit.release.pipeline import Release, ReleaseResult
    from hubkit.validate.engine import Finding, Report, Severity
    from hubkit.validate.options import ValidateOptions
    from hubkit.validate.runner import validate

_WHERE = {
    "CardProblem": "hubkit.card.check",
    "check_card": "hubkit.card.check",
    "checkpoint_facts": "hubkit.card.facts",
    "render_card": "hubkit.card.render",
    "Checkpoint": "hubkit.checkpoint",
    "load_checkpoint": "hubkit.checkpoint",
    "ExitCode": "hubkit.errors",
    "HubkitError": "hubkit.errors",
    "PushOptions": "hubkit.hub.options",
    "PushResult": "hubkit.hub.push",
    "push": "hubkit.hub.push",
    "Manifest": "hubkit.manifest",
    "load_manifest": "hubkit.manifest",
    "manifest_json_schema": "hubkit.manifest",
    "manifest_problems": "hubkit.manifest",
    "QuantizeOptions": "hubkit.quantize.options",
    "QuantizeResult": "hubkit.quantize.pipeline",
    "quantize": "hubkit.quantize.pipeline",
    "Plan": "hubkit.quantize.plan",
    "estimate": "hubkit.quantize.plan",
    "ReleaseOptions": "hubkit.release.options",
    "Release": "hubkit.release.pipeline",
    "ReleaseResult": "hubkit.release.pipeline",
    "Finding": "hubkit.validate.engine",
    "Report": "hubkit.validate.engine",
    "Severity": "hubkit.validate.engine",
    "ValidateOptions": "hubkit.validate.options",
    "validate": "hubkit.validate.runner",
}

__all__ = [
    "CardProblem",
    "Checkpoint",
    "ExitCode",
    "Finding",
    "HubkitError",
    "Manifest",
    "Plan",
    "PushOptions",
    "PushResult",
    "QuantizeOptions",
    "QuantizeResult",
    "Release",
    "ReleaseOptions",
    "ReleaseResult",
    "Report",
    "Severity",
    "ValidateOptions",
    "check_card",
    "checkpoint_facts",
    "estimate",
    "load_checkpoint",
    "load_manifest",
    "manifest_json_schema",
    "manifest_problems",
    "push",
    "quantize",
    "release",
    "render_card",
    "validate",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'hubkit.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def release(manifest: str | Path = "hubkit.toml", options: ReleaseOptions | None = None) -> ReleaseResult:
    """Run the release MANIFEST describes, as ``hubkit release`` does (``options.overrides`` are its ``--set``)."""
    from hubkit.manifest import load_manifest
    from hubkit.release.options import ReleaseOptions
    from hubkit.release.pipeline import Release
    from hubkit.validate.options import check_codes

    options = options if options is not None else ReleaseOptions(progress=False)
    return Release(load_manifest(Path(manifest), options.overrides, check_codes=check_codes()), options).run()
