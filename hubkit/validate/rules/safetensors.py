"""HK2xx: every safetensors header is well formed and describes its file's bytes exactly."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from operator import attrgetter, itemgetter, sub

from hubkit.checkpoint.safetensors_header import DEFAULT_LIMITS, ShardHeader
from hubkit.dtypes import DTYPE_BITS
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

_offsets_of = attrgetter("data_offsets")
_dtype_of = attrgetter("dtype")
_shape_of = attrgetter("shape")


class _ExpectedBytes(dict[tuple[str, tuple[int, ...] | None], int | None]):
    """(dtype, shape) -> bytes the tensor must span; None for an unknown dtype or a partial byte."""

    def __missing__(self, key: tuple[str, tuple[int, ...] | None]) -> int | None:
        dtype, shape = key
        bits = DTYPE_BITS.get(dtype)
        count = 1
        for dim in shape or ():
            count *= dim
        value = None if bits is None or count * bits % 8 else count * bits // 8
        self[key] = value
        return value


def _readable(ctx: Context) -> Iterator[ShardHeader]:
    for shard in ctx.checkpoint.shards.values():
        if shard.fatal is None:
            yield shard


@dataclass(slots=True)
class _Columns:
    """One shard's tensor table, read once and shared by the checks of this family."""

    shard: ShardHeader
    #: the distinct (dtype, shape, byte length) of its tensors: a few hundred, not 2,300
    kinds: set[tuple[str, tuple[int, ...], int]]
    begins: list[int]
    ends: list[int]


def shard_columns(ctx: Context) -> list[_Columns]:
    def compute() -> list[_Columns]:
        found = []
        for shard in _readable(ctx):
            values = list(shard.tensors.values())
            offsets = list(map(_offsets_of, values))
            begins, ends = list(map(itemgetter(0), offsets)), list(map(itemgetter(1), offsets))
            kinds = set(zip(map(_dtype_of, values), map(_shape_of, values), map(sub, ends, begins), strict=True))
            found.append(_Columns(shard, kinds, begins, ends))
        return found

    return ctx.memo("shard_columns", compute)


@check(
    "HK201", "header-length", Severity.ERROR,
    what="The 8-byte header length is within the file and below the format's 100 MB limit.",
    why="A wrong length means a truncated or corrupted file; loaders fail or read garbage.",
)  # fmt: skip
def header_length(ctx: Context) -> Iterator[Issue]:
    for shard in ctx.checkpoint.shards.values():
        if shard.fatal_kind in ("length", "io"):
            yield Issue(f"{shard.fatal}; re-export or re-download the file", shard.file)


@check(
    "HK202", "header-not-json", Severity.ERROR,
    what="The header is UTF-8 JSON: one object that starts with '{'.",
    why="Every loader parses this header first; nothing in the file is usable without it.",
)  # fmt: skip
def header_not_json(ctx: Context) -> Iterator[Issue]:
    for shard in ctx.checkpoint.shards.values():
        if shard.fatal_kind == "json":
            yield Issue(f"{shard.fatal}; re-export the file", shard.file)
        elif shard.fatal is None:
            for violation in shard.violations:  # read all the same: reported here, nowhere else
                yield Issue(f"{violation}; re-export the file", shard.file)


@check(
    "HK203", "duplicate-key", Severity.ERROR,
    what="No key appears twice in a header (tensor names or entry fields).",
    why="The safetensors library silently keeps the last duplicate, so a tensor can vanish without an error.",
)  # fmt: skip
def duplicate_key(ctx: Context) -> Iterator[Issue]:
    for shard in _readable(ctx):
        for key in sorted(set(shard.duplicate_keys)):
            yield Issue(f"key '{key}' appears more than once in the header", shard.file, key)
        for owner, key in sorted(set(shard.duplicate_fields)):
            yield Issue(f"field '{key}' appears more than once in this entry", shard.file, owner)


@check(
    "HK204", "unknown-dtype", Severity.ERROR,
    what="Every dtype is one the safetensors format defines.",
    why="Loaders refuse unknown dtypes.",
)  # fmt: skip
def unknown_dtype(ctx: Context) -> Iterator[Issue]:
    for columns in shard_columns(ctx):
        if DTYPE_BITS.keys() >= {dtype for dtype, _, _ in columns.kinds}:
            continue
        shard = columns.shard
        for name, tensor in shard.tensors.items():
            if tensor.dtype not in DTYPE_BITS:
                yield Issue(f"unknown dtype '{tensor.dtype}'", shard.file, name)


@check(
    "HK205", "malformed-entry", Severity.ERROR,
    what="Every tensor entry has a string dtype, a list of non-negative integer dims and [begin, end] offsets.",
    why="A malformed entry makes the whole file unloadable.",
)  # fmt: skip
def malformed_entry(ctx: Context) -> Iterator[Issue]:
    for shard in _readable(ctx):
        for name, reason in shard.bad_entries:
            yield Issue(reason, shard.file, name)


@check(
    "HK206", "byte-length", Severity.ERROR,
    what="Each tensor's byte range is exactly elements x dtype size.",
    why="A mismatch means the header and data disagree; the tensor would load with wrong values or fail.",
)  # fmt: skip
def byte_length(ctx: Context) -> Iterator[Issue]:
    expected_cache = _ExpectedBytes()
    for columns in shard_columns(ctx):
        shard = columns.shard
        if all(expected_cache[dtype, shape] == span for dtype, shape, span in columns.kinds):
            continue  # every (dtype, shape, byte length) that occurs is right: a few hundred, not 2,300
        for name, tensor in shard.tensors.items():
            expected = expected_cache[(tensor.dtype, tensor.shape)]
            if expected is None and tensor.dtype in DTYPE_BITS:  # a sub-byte dtype's elements end mid-byte
                bits = DTYPE_BITS[tensor.dtype] * math.prod(tensor.dims)
                yield Issue(
                    f"{tensor.dtype} {list(tensor.dims)} is {bits:,} bits, not a whole number of bytes; "
                    "loaders refuse it: pad the tensor to whole bytes",
                    shard.file,
                    name,
                )
                continue
            if expected is None:
                continue  # unknown dtype (HK204)
            begin, end = tensor.data_offsets
            if end - begin != expected:
                yield Issue(
                    f"byte range [{begin}, {end}) holds {end - begin:,} bytes but {tensor.dtype} "
                    f"{list(tensor.dims)} needs {expected:,}",
                    shard.file,
                    name,
                )


@check(
    "HK207", "offset-layout", Severity.ERROR,
    what="Tensor byte ranges start at 0 and follow each other with no gap and no overlap.",
    why="Gaps hide unaccounted bytes; overlaps make two tensors share data. Loaders reject both.",
)  # fmt: skip
def offset_layout(ctx: Context) -> Iterator[Issue]:
    for columns in shard_columns(ctx):
        shard = columns.shard
        if not shard.tensors:
            continue
        if columns.begins[0] == 0 and columns.begins[1:] == columns.ends[:-1]:
            continue  # in order already, as the safetensors library writes them
        offsets = sorted(zip(columns.begins, columns.ends, strict=True))
        begins, ends = list(map(itemgetter(0), offsets)), list(map(itemgetter(1), offsets))
        if begins[0] == 0 and begins[1:] == ends[:-1]:
            continue
        ranges = sorted((t.data_offsets, name) for name, t in shard.tensors.items())
        begins = [r[0][0] for r in ranges]
        ends = [r[0][1] for r in ranges]
        if begins[0] != 0:
            yield Issue(f"data starts at offset {begins[0]:,}, not 0", shard.file, ranges[0][1])
        for i in range(1, len(ranges)):
            if begins[i] > ends[i - 1]:
                yield Issue(f"gap of {begins[i] - ends[i - 1]:,} bytes before this tensor", shard.file, ranges[i][1])
            elif begins[i] < ends[i - 1]:
                yield Issue(f"byte range overlaps '{ranges[i - 1][1]}'", shard.file, ranges[i][1])


@check(
    "HK208", "file-length", Severity.ERROR,
    what="The file is exactly 8 + header + the end of the last tensor bytes long.",
    why="A short file is truncated (an interrupted copy or upload); a long one carries unaccounted bytes.",
)  # fmt: skip
def file_length(ctx: Context) -> Iterator[Issue]:
    for columns in shard_columns(ctx):
        shard = columns.shard
        data_end = max(columns.ends, default=0)
        if data_end != shard.data_length:
            state = "truncated" if data_end > shard.data_length else "longer than its tensors"
            yield Issue(
                f"file is {state}: tensors end at {shard.data_start + data_end:,} bytes, the file has "
                f"{shard.file_size:,}; re-export or re-download it",
                shard.file,
            )


@check(
    "HK209", "metadata-not-strings", Severity.ERROR,
    what="__metadata__, when present, maps strings to strings.",
    why="The format requires it and the Rust loader rejects anything else.",
)  # fmt: skip
def metadata_not_strings(ctx: Context) -> Iterator[Issue]:
    for shard in _readable(ctx):
        metadata = shard.metadata
        if metadata is None:
            continue
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            yield Issue("__metadata__ is not a string-to-string map", shard.file)


@check(
    "HK210", "header-limits", Severity.ERROR,
    what=f"No shard declares more than {DEFAULT_LIMITS.tensors_per_shard:,} tensors; the checkpoint's headers "
    f"declare at most {DEFAULT_LIMITS.tensors_per_checkpoint:,} tensors in "
    f"{DEFAULT_LIMITS.header_bytes_per_checkpoint:,} bytes. Counted before anything is decoded.",
    why="Far beyond any real model (Kimi-K2.x has 277,670 tensors); a header past them is corrupt or hostile, "
    "and reading it would cost unbounded memory and time in every loader.",
)  # fmt: skip
def header_limits(ctx: Context) -> Iterator[Issue]:
    skipped: list[ShardHeader] = []
    for shard in ctx.checkpoint.shards.values():
        if shard.fatal_kind == "limit":
            yield Issue(f"{shard.fatal}; the file is corrupt or not a model shard", shard.file)
        elif shard.fatal_kind == "budget":
            skipped.append(shard)
    if skipped:
        because = (skipped[0].fatal or "").removeprefix("not read: ")
        yield Issue(
            f"{len(skipped):,} {'shard was' if len(skipped) == 1 else 'shards were'} not read because {because} "
            f"(first: {skipped[0].file}); "
            "the checkpoint is corrupt or not one model"
        )
