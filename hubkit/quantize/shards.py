"""Shards written as they are produced, in the layout ``save_pretrained`` gives a whole state dict, and resumable.

A layer-by-layer export never holds the whole state dict, so transformers' ``save_pretrained`` (which splits a
finished dict with huggingface_hub's ``split_torch_state_dict_into_shards`` and writes each shard with
safetensors' ``save_file``) cannot write it. Two small pieces stand in, each checked byte for byte against the
library it mirrors in ``tests/test_quantize_shards.py``:

- the split rule, applied to tensors as they arrive: a new shard starts when the next tensor would tip the open
  one over the limit; a tensor larger than the limit gets a shard of its own where it arrives;
- a safetensors file written one tensor at a time (header, then each tensor's bytes in safetensors' own order,
  which is read from safetensors itself), because ``save_file`` needs every tensor of a shard in memory at once:
  10 GB per shard at Kimi scale, and the whole export for a model that fits one shard.

The open shard lives on disk as ``pending`` files (one per commit), so a killed run resumes with it and memory
holds one layer's tensors, never a shard.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import IO, Any

import torch
from huggingface_hub import get_torch_storage_size

from hubkit.dtypes import LIBRARY_NAMES, tensor_bytes
from hubkit.quantize import interrupts
from hubkit.records import replacing, write_text

#: What ``save_pretrained`` writes into every shard's header.
METADATA = {"format": "pt"}
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
#: torch's dtype for each safetensors dtype name, and the name of each torch dtype.
TORCH_DTYPES = {name: getattr(torch, attr) for name, attr in LIBRARY_NAMES.items()}
DTYPE_NAMES = {dtype: name for name, dtype in TORCH_DTYPES.items()}
CHUNK = 16 * 1024**2


@cache
def _dtype_rank() -> dict[str, int]:
    """The order in which safetensors lays out dtypes in a file (ties broken by name), read from safetensors."""
    from safetensors.torch import save

    probe = save({f"t{i:02d}": torch.zeros(1, dtype=d) for i, d in enumerate(TORCH_DTYPES.values())})
    (length,) = struct.unpack("<Q", probe[:8])
    header = json.loads(probe[8 : 8 + length])
    order = [entry["dtype"] for key, entry in header.items() if key != "__metadata__"]
    return {dtype: rank for rank, dtype in enumerate(order)}


@dataclass(frozen=True)
class Entry:
    """One tensor of a shard to be written: its header fields, and its bytes as a tensor in memory or as a byte
    range of a safetensors file (copied in chunks: a file's pages are never all mapped at once)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    tensor: torch.Tensor | None = None
    source: tuple[Path, int, int] | None = None  # file, first byte, end

    @property
    def nbytes(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return tensor_bytes(self.dtype, count)

    def write_to(self, handle: IO[bytes]) -> None:
        if self.tensor is not None:
            handle.write(self.tensor.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            return
        assert self.source is not None
        path, begin, end = self.source
        with open(path, "rb") as source:
            source.seek(begin)
            while begin < end:
                chunk = source.read(min(CHUNK, end - begin))
                if not chunk:
                    raise OSError(f"{path} ends before byte {end}")
                handle.write(chunk)
                begin += len(chunk)


def write_safetensors(path: Path, entries: Iterable[Entry], metadata: dict[str, str] = METADATA) -> None:
    """What ``safetensors.torch.save_file(tensors, path, metadata)`` writes, one tensor at a time."""
    rank = _dtype_rank()
    ordered = sorted(entries, key=lambda e: (rank[e.dtype], e.name))
    header: dict[str, Any] = {"__metadata__": metadata}
    offset = 0
    for entry in ordered:
        header[entry.name] = {
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with replacing(path) as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for entry in ordered:
            entry.write_to(handle)


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    """The data offset and header of a safetensors file this module wrote."""
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header: dict[str, Any] = json.loads(handle.read(length))
    return 8 + length, header


@dataclass
class ShardWriter:
    """Greedy sharding over a stream of tensors; ``state()`` / ``restore()`` carry it across processes.

    Closed shards are written at ``commit`` as numbered part files in ``folder``; the open shard's tensors are
    written to ``pending`` files in ``scratch`` at ``commit`` and dropped from memory.
    """

    folder: Path
    scratch: Path
    max_bytes: int
    parts: list[dict[str, Any]] = field(default_factory=list)
    open_keys: list[str] = field(default_factory=list)
    open_size: int = 0
    total_size: int = 0
    where: dict[str, str] = field(default_factory=dict)  # open (or closing) key -> pending file holding it
    _memory: dict[str, torch.Tensor] = field(default_factory=dict)
    _closing: list[dict[str, Any]] = field(default_factory=list)
    _obsolete: set[str] = field(default_factory=set)

    def add(self, key: str, tensor: torch.Tensor, split_size: int | None = None) -> None:
        """Add one tensor; ``split_size`` is the size the split rule counts (default: its storage size, as
        huggingface_hub counts it), for a tensor whose dtype was restored after that size was taken."""
        size = get_torch_storage_size(tensor) if split_size is None else split_size
        self._memory[key] = tensor
        self.total_size += tensor.nbytes
        if size > self.max_bytes:
            self._close([key])
            return
        if self.open_size + size > self.max_bytes:
            self._close_open()
        self.open_keys.append(key)
        self.open_size += size

    def _close_open(self) -> None:
        if self.open_keys:
            self._close(self.open_keys)
            self.open_keys, self.open_size = [], 0

    def _close(self, keys: list[str]) -> None:
        part = {"file": f"__part_{len(self.parts):05d}.safetensors", "keys": list(keys)}
        self.parts.append(part)
        self._closing.append(part)

    def _entry(self, key: str, headers: dict[str, tuple[int, dict[str, Any]]]) -> Entry:
        if key in self._memory:
            tensor = self._memory[key]
            return Entry(key, DTYPE_NAMES[tensor.dtype], tuple(tensor.shape), tensor=tensor)
        path = self.scratch / self.where[key]
        if path.name not in headers:
            headers[path.name] = _header(path)
        start, header = headers[path.name]
        begin, end = header[key]["data_offsets"]
        return Entry(key, header[key]["dtype"], tuple(header[key]["shape"]), source=(path, start + begin, start + end))

    def commit(self, tag: str) -> None:
        """Write the shards closed since the last commit, then the open shard's new tensors as a pending file.
        The caller records ``state()`` afterwards: until then a crash leaves only files the next run ignores."""
        headers: dict[str, tuple[int, dict[str, Any]]] = {}
        for part in self._closing:
            write_safetensors(self.folder / part["file"], [self._entry(k, headers) for k in part["keys"]])
            for key in part["keys"]:
                source = self.where.pop(key, None)
                if source is not None:
                    self._obsolete.add(source)
        self._closing = []
        unsaved = {k: self._memory[k] for k in self.open_keys if k in self._memory}
        if unsaved:
            name = f"pending-{tag}.safetensors"
            write_safetensors(
                self.scratch / name,
                [Entry(k, DTYPE_NAMES[v.dtype], tuple(v.shape), tensor=v) for k, v in unsaved.items()],
            )
            self.where.update(dict.fromkeys(unsaved, name))
        self._memory = {}
        self._obsolete -= set(self.where.values())

    def forget_obsolete(self) -> None:
        """Remove pending files whose tensors are all in closed shards (once the state naming them is recorded)."""
        for name in self._obsolete:
            (self.scratch / name).unlink(missing_ok=True)
        self._obsolete = set()

    def state(self) -> dict[str, Any]:
        return {
            "max_bytes": self.max_bytes,
            "parts": self.parts,
            "open_keys": self.open_keys,
            "open_size": self.open_size,
            "total_size": self.total_size,
            "where": self.where,
        }

    @classmethod
    def restore(cls, folder: Path, scratch: Path, state: dict[str, Any]) -> ShardWriter:
        return cls(
            folder,
            scratch,
            int(state["max_bytes"]),
            parts=list(state["parts"]),
            open_keys=list(state["open_keys"]),
            open_size=int(state["open_size"]),
            total_size=int(state["total_size"]),
            where=dict(state["where"]),
        )

    def finish(self, total_parameters: int) -> list[str]:
        """Close the open shard, give the parts their final names, write the index; returns the shard files. The
        caller records that, then calls ``forget_obsolete``: a rerun before the record reads the pending files."""
        self._close_open()
        self.commit("final")
        count = len(self.parts)
        names = [WEIGHTS] if count == 1 else [f"model-{i + 1:05d}-of-{count:05d}.safetensors" for i in range(count)]
        weight_map: dict[str, str] = {}
        for part, name in zip(self.parts, names, strict=True):
            if (self.folder / part["file"]).exists() or not (self.folder / name).exists():
                os.replace(self.folder / part["file"], self.folder / name)  # else renamed by a run that then died
                interrupts.kill_point("shard-renamed")
            weight_map.update(dict.fromkeys(part["keys"], name))
        if count == 1:
            return names
        metadata = {"total_parameters": total_parameters, "total_size": self.total_size}
        text = json.dumps({"metadata": metadata, "weight_map": weight_map}, indent=2, sort_keys=True) + "\n"
        write_text(self.folder / INDEX, text)
        return names
