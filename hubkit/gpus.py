"""Which NVIDIA GPUs this process may use, found one way: ``nvidia-smi``, within ``CUDA_VISIBLE_DEVICES``.

No torch: the preflight, the smoke test and ``hubkit quantize --plan`` ask before (or without) importing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable


def visible_gpus() -> list[str]:
    """Names of the NVIDIA GPUs this process may use; empty when there are none or ``nvidia-smi`` is absent."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = [line.strip() for line in listed.stdout.splitlines() if line.strip()] if listed.returncode == 0 else []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        entries = [e for e in visible.split(",") if e.strip()]
        if any(e.strip().startswith("-") for e in entries):
            entries = entries[: next(i for i, e in enumerate(entries) if e.strip().startswith("-"))]
        names = names[: len(entries)]
    return names


def gpu_model(name: str, models: Iterable[str]) -> str | None:
    """The one of ``models`` (``B300``, ``H100``, ...) that the GPU ``name`` is, or None."""
    return next((model for model in models if model in name.upper()), None)


def gpu_set(names: list[str], models: Iterable[str]) -> str | None:
    """``8xB300`` for the GPUs ``names``, when the first is one of ``models``; None otherwise."""
    model = gpu_model(names[0], models) if names else None
    return f"{len(names)}x{model}" if model else None
