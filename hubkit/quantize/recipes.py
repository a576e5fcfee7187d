"""Quantization recipes: modelopt's own recipes by name, a recipe YAML file, or a hubkit preset."""

from __future__ import annotations

import contextlib
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError
from hubkit.reads import read_regular
from hubkit.sizes import MiB

#: The largest recipe file read (a recipe is a page of YAML).
MAX_RECIPE_BYTES = 1 * MiB
#: Short names for the recipes hubkit users reach for most.
PRESETS = {
    "nvfp4-experts-mse": "general/ptq/nvfp4_experts_only_mse-kv_fp8_cast",
}


@dataclass(frozen=True)
class Recipe:
    """A resolved recipe: where it came from, and modelopt's fully expanded quantization config."""

    name: str
    quantize: dict[str, Any]


def resolve_recipe(name_or_file: str) -> Recipe:
    """Load a recipe with modelopt's loader (so new modelopt recipes work without a hubkit change)."""
    from modelopt.recipe import load_recipe

    target = PRESETS.get(name_or_file, name_or_file)
    path = Path(target)
    if path.suffix in (".yaml", ".yml") and not os.path.lexists(path):
        raise HubkitError(f"recipe file {target} does not exist")
    if os.path.lexists(path) and not path.is_dir():  # modelopt's loader reads it: a regular file of bounded size
        read_regular(path, limit=MAX_RECIPE_BYTES, what="recipe file")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            loaded = load_recipe(target)
    except Exception as exc:  # modelopt raises several types for an unknown or malformed recipe
        known = ", ".join(sorted(PRESETS))
        raise HubkitError(
            f"cannot load recipe '{name_or_file}' ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            f"use a modelopt recipe name such as {PRESETS['nvfp4-experts-mse']}, a recipe .yaml file, or: {known}"
        ) from exc
    quantize = getattr(loaded, "quantize", None)
    if quantize is None:
        raise HubkitError(f"recipe '{name_or_file}' is not a post-training quantization recipe")
    return Recipe(target, quantize.model_dump())
