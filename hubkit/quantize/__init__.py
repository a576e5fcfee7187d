"""NVFP4 post-training quantization with NVIDIA Model Optimizer.

Importing this package imports nothing heavy; its modules other than ``plan``, ``options``, ``folders``,
``devices`` and ``modes`` (whose modes import torch only when they run) import torch and are never on the CLI
start-up path. Call ``require_extra()`` before any of them.
"""

from __future__ import annotations

import importlib.util

from hubkit.errors import HubkitError

#: Import name -> distribution of what the ``quantize`` extra installs.
EXTRA_MODULES = {
    "torch": "torch",
    "transformers": "transformers",
    "modelopt": "nvidia-modelopt",
    "compressed_tensors": "compressed-tensors",
    "accelerate": "accelerate",
    "datasets": "datasets",
}
INSTALL = (
    "pip install 'hubkit-nvfp4[quantize]' (on a machine without CUDA, first: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu)"
)


def missing_extra() -> list[str]:
    """Distributions of the ``quantize`` extra that cannot be imported here (nothing is imported to find out)."""
    missing = []
    for module, distribution in EXTRA_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(distribution)
    return missing


def require_extra() -> None:
    """Raise HubkitError (exit 2) naming the install command when the ``quantize`` extra is incomplete."""
    missing = missing_extra()
    if missing:
        raise HubkitError(f"hubkit quantize needs {', '.join(missing)}, from the quantize extra: {INSTALL}")
