"""Strict reading of safetensors headers, recording every deviation instead of stopping at the first.

Written by hand on purpose: the safetensors library keeps the last of duplicate JSON keys without a
word, stops at the first error, and needs the whole file on disk; the validator must see duplicates,
report all faults of a header, and read headers by byte range (also over HTTP).
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Annotated, Any

import msgspec

from hubkit.checkpoint.source import CheckpointSource

#: Largest header the safetensors library accepts (its MAX_HEADER_SIZE).
MAX_HEADER_BYTES = 100_000_000


@dataclass(frozen=True)
class HeaderLimits:
    """Bounds on what the headers of one checkpoint may declare, checked before any table is built.

    Far above any real checkpoint (Kimi-K2.x: 277,670 tensors in 120 shards, 39 MB of headers); they keep
    the memory and time of a validation bounded whatever a header claims.
    """

    tensors_per_shard: int = 1_000_000
    tensors_per_checkpoint: int = 2_000_000
    header_bytes_per_checkpoint: int = 512 * 1024**2


DEFAULT_LIMITS = HeaderLimits()


NonNegative = Annotated[int, msgspec.Meta(ge=0)]


class TensorInfo(msgspec.Struct, gc=False):
    """One tensor as its shard's header describes it; offsets are relative to the data section."""

    dtype: str
    shape: tuple[NonNegative, ...]
    data_offsets: tuple[NonNegative, NonNegative]

    @property
    def dims(self) -> tuple[int, ...]:
        """The shape (an alias that reads well in messages)."""
        return self.shape

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def begin(self) -> int:
        return self.data_offsets[0]

    @property
    def end(self) -> int:
        return self.data_offsets[1]

    @property
    def nbytes(self) -> int:
        return self.data_offsets[1] - self.data_offsets[0]


@dataclass(slots=True)
class ShardHeader:
    """What one ``.safetensors`` file's header says, and what is wrong with it."""

    file: str
    file_size: int
    header_length: int = 0
    fatal: str | None = None
    #: "length" | "json" | "io" | "unreadable" (a file problem, HK113) | "limit" (this shard) |
    #: "budget" (not read: the checkpoint's headers already passed a limit)
    fatal_kind: str | None = None
    #: format violations that still let the header be read (e.g. whitespace before the opening '{')
    violations: list[str] = field(default_factory=list)
    duplicate_keys: list[str] = field(default_factory=list)
    #: (tensor name or "__metadata__", field) for a field repeated inside one entry
    duplicate_fields: list[tuple[str, str]] = field(default_factory=list)
    metadata: Any = None
    #: name -> entry, for every well-formed entry
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    bad_entries: list[tuple[str, str]] = field(default_factory=list)
    #: parsed by the exact path: the tensor names, dtypes and ``metadata`` hold every string of the raw header
    #: (no repeated key, no unknown field), so scanning them scans the header
    exact: bool = False

    @property
    def data_start(self) -> int:
        return 8 + self.header_length

    @property
    def data_length(self) -> int:
        return self.file_size - self.data_start


def read_shard_header(
    source: CheckpointSource, path: str, file_size: int, limits: HeaderLimits = DEFAULT_LIMITS
) -> ShardHeader:
    """Read and check the header of ``path`` without reading tensor data."""
    shard = read_header_length(source, path, file_size)
    raw = read_header_bytes(source, shard)
    if raw is not None:
        parse_header(shard, raw, limits.tensors_per_shard)
    return shard


def read_header_length(source: CheckpointSource, path: str, file_size: int) -> ShardHeader:
    """The shard with its header length read and bounded (or why it cannot be), nothing more."""
    shard = ShardHeader(file=path, file_size=file_size)
    if file_size < 8:
        shard.fatal_kind = "length"
        shard.fatal = f"file is {file_size} bytes, too short for the 8-byte header length"
        return shard
    try:
        (length,) = struct.unpack("<Q", source.read_range(path, 0, 8))
    except (OSError, struct.error) as exc:
        shard.fatal_kind, shard.fatal = "io", f"cannot read the header length: {exc}"
        return shard
    if length == 0 or length > MAX_HEADER_BYTES or length > file_size - 8:
        shard.fatal_kind = "length"
        shard.fatal = (
            f"header length field is {length:,} bytes but the file has {file_size - 8:,} bytes after it "
            f"(limit {MAX_HEADER_BYTES:,})"
        )
        return shard
    shard.header_length = length
    return shard


def read_header_bytes(source: CheckpointSource, shard: ShardHeader) -> bytes | None:
    """The raw header of a shard whose length was read, or None (and the shard made fatal)."""
    if shard.fatal is not None:
        return None
    length = shard.header_length
    try:
        raw = source.read_range(shard.file, 8, length)
    except OSError as exc:
        shard.fatal_kind, shard.fatal = "io", f"cannot read the header: {exc}"
        return None
    if len(raw) != length:
        shard.fatal_kind, shard.fatal = "length", f"header is cut short: {len(raw):,} of {length:,} bytes"
        return None
    return raw


def declared_tensors(raw: bytes) -> int:
    """How many tensors a raw header declares at most, counted before anything is decoded."""
    return raw.count(b'"data_offsets"')


_JSON_WHITESPACE = b" \t\r\n"


def parse_header(shard: ShardHeader, raw: bytes, max_tensors: int = DEFAULT_LIMITS.tensors_per_shard) -> None:
    """Decode a raw header into ``shard``: its tensors, or why it cannot be read."""
    declared = declared_tensors(raw)
    if declared > max_tensors:
        shard.fatal_kind = "limit"
        shard.fatal = f"header declares {declared:,} tensors, more than the limit of {max_tensors:,} per shard"
        return
    if raw[:1] in (b" ", b"\t", b"\r", b"\n"):
        shard.violations.append(
            "header starts with whitespace, not '{' (the format requires '{' first; the safetensors library "
            "reads it, other readers may refuse the file)"
        )
        raw = raw.lstrip(_JSON_WHITESPACE)
    if not _parse_header_fast(shard, raw):
        _parse_header_json(shard, raw)


_typed_entries = msgspec.json.Decoder(dict[str, TensorInfo])
_METADATA_PREFIX = b'{"__metadata__":'


def _parse_header_fast(shard: ShardHeader, raw: bytes) -> bool:
    """Parse a well-formed header at C speed; False sends it to the careful parser.

    ``__metadata__`` must come first, as the safetensors library writes it; it is read with Python's json
    to see repeated keys, and the entries after it with a typed decoder that requires every field (and
    refuses lone surrogates). JSON decoders keep the last of duplicate keys, so the fast path proves by
    counting that nothing was dropped: each surviving entry holds four colons (its name and three fields),
    and a repeated entry or field, an unknown field or a colon inside a name only ever adds to the count.
    """
    metadata: Any = None
    entries = raw
    if raw.startswith(_METADATA_PREFIX):
        found = _read_metadata(raw)
        if found is None:
            return False
        metadata, end = found
        if raw[end : end + 1] != b",":
            return False
        entries = b"".join((b"{", memoryview(raw)[end + 1 :]))
    try:
        tensors = _typed_entries.decode(entries)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError):
        return False
    if not tensors or "__metadata__" in tensors or entries.count(b":") != 4 * len(tensors):
        return False
    if metadata is not None:
        shard.metadata = metadata
        shard.duplicate_fields += [("__metadata__", key) for key in metadata.repeated]
    shard.tensors = tensors
    shard.exact = metadata is None or not metadata.repeated
    return True


def _read_metadata(raw: bytes) -> tuple[Any, int] | None:
    """The leading ``__metadata__`` object and the byte offset just after it, or None when it is not a
    well-formed object (the careful parser then says why). Decodes only a short prefix when it can."""
    cut = raw.find(b'},"', len(_METADATA_PREFIX))
    for head in ((raw[: cut + 1] if cut > 0 else b""), raw):
        try:
            text = head.decode("utf-8")
            metadata, end = _METADATA_DECODER.raw_decode(text, len(_METADATA_PREFIX))
        except (UnicodeDecodeError, ValueError, RecursionError):
            continue
        if isinstance(metadata, dict) and not _LONE_SURROGATE.search(text, 0, end):
            return metadata, len(text[:end].encode("utf-8"))
        return None
    return None


class _ObjectWithRepeats(dict[str, Any]):
    """A JSON object that remembers which of its keys appeared more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.repeated: list[str] = []
        if len(self) != len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.repeated.append(key)
                seen.add(key)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_METADATA_DECODER = json.JSONDecoder(object_pairs_hook=_ObjectWithRepeats, parse_constant=_refuse_constant)


_LONE_SURROGATE = re.compile(
    r"(?<!\\)\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F]{2})\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _parse_header_json(shard: ShardHeader, raw: bytes) -> None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        shard.fatal_kind, shard.fatal = "json", f"header is not valid UTF-8 (byte {exc.start})"
        return
    if not text.startswith("{"):
        shard.fatal_kind, shard.fatal = "json", "header does not start with '{'"
        return
    try:
        document = json.loads(text, object_pairs_hook=_ObjectWithRepeats, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:
        shard.fatal_kind, shard.fatal = "json", f"header is not valid JSON: {exc}"
        return
    if not isinstance(document, dict):
        shard.fatal_kind, shard.fatal = "json", "header is not a JSON object"
        return
    if _LONE_SURROGATE.search(text):
        shard.fatal_kind, shard.fatal = "json", "header is not valid JSON: a \\u escape is a lone surrogate"
        return
    shard.duplicate_keys += getattr(document, "repeated", [])
    _read_entries(shard, document)


def _read_entries(shard: ShardHeader, document: dict[str, Any]) -> None:
    tensors = shard.tensors
    bad = shard.bad_entries
    for name, entry in document.items():
        if name == "__metadata__":
            shard.metadata = entry
            shard.duplicate_fields += [(name, key) for key in getattr(entry, "repeated", ())]
            continue
        if not isinstance(entry, dict):
            bad.append((name, "entry is not an object"))
            continue
        shard.duplicate_fields += [(name, key) for key in getattr(entry, "repeated", ())]
        dtype = entry.get("dtype")
        shape = entry.get("shape")
        offsets = entry.get("data_offsets")
        if type(dtype) is not str:
            bad.append((name, "dtype is missing or not a string"))
            continue
        if type(shape) is not list or not all(type(d) is int and d >= 0 for d in shape):
            bad.append((name, "shape is missing or not a list of non-negative integers"))
            continue
        if (
            type(offsets) is not list
            or len(offsets) != 2
            or type(offsets[0]) is not int
            or type(offsets[1]) is not int
            or offsets[0] < 0
            or offsets[1] < 0
        ):
            bad.append((name, "data_offsets is missing or not [begin, end] of non-negative integers"))
            continue
        tensors[name] = TensorInfo(dtype, tuple(shape), (offsets[0], offsets[1]))
