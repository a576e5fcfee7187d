"""Sizes in bytes: the one parser (``40GiB``, ``40GB``, ``512MiB``, plain bytes) and the ways hubkit prints them.

Decimal units (``GB``) and binary units (``GiB``) mean what they mean to huggingface_hub and accelerate; case is
ignored (``40gib``). Every option that takes a size (``--batch``, ``--max-gpu-memory``, ``--shard-size``, ...)
parses it here, so one spelling works everywhere.
"""

from __future__ import annotations

import re

from hubkit.errors import HubkitError

KiB = 1024
MiB = 1024**2
GiB = 1024**3
_SCALE = {"B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "TB": 1000**4,
          "KIB": KiB, "MIB": MiB, "GIB": GiB, "TIB": 1024**4}  # fmt: skip
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", re.IGNORECASE)


def size_or_none(text: str) -> int | None:
    """``80GiB``, ``250GB``, ``512MiB`` or plain bytes -> bytes; None when ``text`` is not a size."""
    found = _SIZE.fullmatch(text)
    if not found:
        return None
    return int(float(found[1]) * _SCALE[(found[2] or "B").upper()])


def parse_size(text: str) -> int:
    """``80GiB``, ``250GB``, ``512MiB`` or plain bytes -> bytes; exit 2 naming the spelling when it is not a size."""
    size = size_or_none(text)
    if size is None:
        raise HubkitError(f"{text!r} is not a size; write it like 80GiB, 250GB or 512MiB")
    return size


def human_size(count: float) -> str:
    """Bytes in decimal units, as the Hub shows them: ``340.2 GB``."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(count) < 1000 or unit == "TB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def binary_size(size: float) -> str:
    """Bytes in binary units, as memory is planned: GiB from 1 GiB up, MiB below (``1,024.0 GiB``)."""
    return f"{size / GiB:,.1f} GiB" if size >= GiB else f"{size / MiB:,.1f} MiB"
