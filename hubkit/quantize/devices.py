"""Which accelerators a run has: the GPUs present (for ``--plan``), and the process's place in a ``torchrun`` job.

Importing this module imports nothing heavy; the GPUs present are found as everywhere else (``hubkit.gpus``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hubkit.errors import HubkitError
from hubkit.gpus import gpu_set, visible_gpus
from hubkit.quantize.plan import GPU_MEMORY_GIB


def present_gpus() -> str:
    """The GPUs visible here as ``COUNTxMODEL`` (e.g. ``8xB300``), for ``--plan`` without ``--gpus``."""
    names = visible_gpus()
    if not names:
        raise HubkitError("no GPU is visible here; name the target with --gpus, e.g. --gpus 8xB300 or --gpus cpu")
    target = gpu_set(names, GPU_MEMORY_GIB)
    if target is None:
        raise HubkitError(f"unknown GPU {names[0]!r}; name the target with --gpus, e.g. --gpus 8xB300")
    return target


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
