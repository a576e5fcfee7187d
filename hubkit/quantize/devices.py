"""Which accelerators a run has: the GPUs present (for ``--plan``), and the process's place in a ``torchrun`` job.

Importing this module imports nothing heavy; torch is imported only when a GPU is asked about.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

from hubkit.errors import HubkitError
from hubkit.quantize.plan import GPU_MEMORY_GIB


def present_gpus() -> str:
    """The GPUs visible here as ``COUNTxMODEL`` (e.g. ``8xB300``), for ``--plan`` without ``--gpus``."""
    if importlib.util.find_spec("torch") is None:
        raise HubkitError("no GPU is visible here (torch is not installed); name the target with --gpus 8xB300")
    import torch

    if not torch.cuda.is_available():
        raise HubkitError("no GPU is visible here; name the target with --gpus, e.g. --gpus 8xB300 or --gpus cpu")
    name = torch.cuda.get_device_name(0).upper()
    model = next((m for m in GPU_MEMORY_GIB if m in name), None)
    if model is None:
        raise HubkitError(f"unknown GPU {name!r}; name the target with --gpus, e.g. --gpus 8xB300")
    return f"{torch.cuda.device_count()}x{model}"


@dataclass(frozen=True)
class Distributed:
    """This process's place in a ``torchrun`` job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched() -> Distributed:
    """Read ``torchrun``'s environment (RANK, WORLD_SIZE, LOCAL_RANK); one process when it is absent."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise HubkitError(f"RANK/WORLD_SIZE/LOCAL_RANK are not integers ({exc}); launch with torchrun") from exc
    return Distributed(rank, world, local) if world > 1 else Distributed()
