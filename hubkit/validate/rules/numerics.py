"""HK7xx (``--deep``): the scale tensors hold usable numbers. Reads only scale bytes, never weights."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hubkit.checkpoint.model import UnreadableFile
from hubkit.checkpoint.safetensors_header import ShardHeader, TensorInfo
from hubkit.progress import progress_bar
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check
from hubkit.validate.rules.exclusions import expert_groups

#: Nearby scale tensors are read in one request when the bytes between them are fewer than this.
COALESCE_GAP = 256 * 1024
#: No single read is larger than this, whatever a header claims (a larger tensor is read in pieces).
MAX_READ = 64 * 1024 * 1024
#: Findings of one kind listed tensor by tensor before the rest are summed up in one line.
LISTED_TENSORS = 50
#: The projections of one expert that engines fuse into one GEMM (gate and up; w1 and w3 in Kimi-K3/DeepSeek-V4).
FUSED_PAIRS = (("gate_proj", "up_proj"), ("w1", "w3"))


@dataclass
class ScaleReading:
    """What the deep pass saw in the scale tensors."""

    nan_blocks: dict[str, int]
    zero_blocks: dict[str, int]
    scalars: dict[str, float]


def _scale_tensors(shard: ShardHeader) -> list[tuple[str, TensorInfo]]:
    """The scale tensors whose bytes the header describes soundly: as many bytes as their shape needs
    (HK206 reports the others) and inside the file (HK208 reports a file shorter than its header says)."""
    return [
        (name, t)
        for name, t in shard.tensors.items()
        if (
            (t.dtype == "F8_E4M3" and name.endswith(".weight_scale") and t.nbytes == t.numel)
            or (t.dtype == "F32" and t.nbytes == 4 and name.endswith((".weight_scale_2", ".input_scale")))
        )
        and t.end <= shard.data_length
    ]


Span = tuple[int, int, list[tuple[str, TensorInfo]]]


def _coalesce(tensors: list[tuple[str, TensorInfo]]) -> list[Span]:
    spans: list[Span] = []
    for name, tensor in sorted(tensors, key=lambda item: item[1].data_offsets):
        begin, end = tensor.data_offsets
        if spans and begin - spans[-1][1] <= COALESCE_GAP and end - spans[-1][0] <= MAX_READ:
            start, last_end, members = spans[-1]
            members.append((name, tensor))
            spans[-1] = (start, max(end, last_end), members)
        else:
            spans.append((begin, end, [(name, tensor)]))
    return spans


def read_scales(ctx: Context) -> ScaleReading:
    """Read every scale tensor once (in parallel over shards, with progress) and summarise it."""

    def compute() -> ScaleReading:
        reading = ScaleReading({}, {}, {})
        work = [
            (shard, _coalesce(_scale_tensors(shard))) for shard in ctx.checkpoint.shards.values() if shard.fatal is None
        ]
        total = sum(end - begin for _, spans in work for begin, end, _ in spans)
        source = ctx.checkpoint.source
        with progress_bar(total=total, desc="scales", unit="B", unit_scale=True, enabled=ctx.progress) as bar:

            def scan(item: tuple[ShardHeader, list[Span]]) -> None:
                shard, spans = item
                for begin, end, members in spans:
                    if end - begin > MAX_READ:  # one tensor larger than a read: in pieces
                        ((name, tensor),) = members
                        for start in range(begin, end, MAX_READ):
                            piece = _read(shard, start, min(MAX_READ, end - start))
                            _summarise(reading, name, tensor, piece)
                    else:
                        data = _read(shard, begin, end - begin)
                        for name, tensor in members:
                            lo, hi = tensor.data_offsets[0] - begin, tensor.data_offsets[1] - begin
                            _summarise(reading, name, tensor, data[lo:hi])
                    bar.update(end - begin)

            def _read(shard: ShardHeader, start: int, length: int) -> bytes:
                try:
                    return source.read_range(shard.file, shard.data_start + start, length)
                except OSError as exc:
                    raise UnreadableFile(shard.file, f"cannot be read: {exc.strerror or exc}") from None

            with ThreadPoolExecutor(max(1, ctx.workers)) as pool:
                list(pool.map(scan, work))
        return reading

    return ctx.memo("scales", compute)


def _summarise(reading: ScaleReading, name: str, tensor: TensorInfo, data: bytes) -> None:
    """Add what ``data`` (all of a tensor's bytes, or one piece of them) holds to ``reading``."""
    if tensor.dtype == "F8_E4M3":
        nan = data.count(b"\x7f") + data.count(b"\xff")
        zero = data.count(b"\x00") + data.count(b"\x80")
        if nan:
            reading.nan_blocks[name] = reading.nan_blocks.get(name, 0) + nan
        if zero:
            reading.zero_blocks[name] = reading.zero_blocks.get(name, 0) + zero
    elif len(data) == 4:
        reading.scalars[name] = struct.unpack("<f", data)[0]


def _listed(ctx: Context, counts: dict[str, int], text: str) -> Iterator[Issue]:
    tensors, shard_of = ctx.checkpoint.tensors, ctx.checkpoint.shard_of
    names = sorted(counts)
    for name in names[:LISTED_TENSORS]:
        yield Issue(f"{counts[name]:,} of {tensors[name].numel:,} block scales {text}", shard_of[name], name)
    if len(names) > LISTED_TENSORS:
        rest = sum(counts[n] for n in names[LISTED_TENSORS:])
        yield Issue(f"… and {len(names) - LISTED_TENSORS:,} more tensors with {rest:,} block scales {text}")


@check(
    "HK701", "nan-block-scale", Severity.ERROR, needs=["deep"],
    what="No FP8 block scale is NaN (byte 0x7F or 0xFF).",
    why="modelopt builds before May 2026 wrote NaN scales for all-zero blocks; every output through them is NaN.",
)  # fmt: skip
def nan_block_scale(ctx: Context) -> Iterator[Issue]:
    yield from _listed(ctx, read_scales(ctx).nan_blocks, "are NaN; re-export with a fixed modelopt")


@check(
    "HK702", "zero-block-scale", Severity.WARNING, needs=["deep"],
    what="Reports FP8 block scales that are zero.",
    why="modelopt clamps scales to at least 2^-9; a zero scale erases its block of 16 weights.",
)  # fmt: skip
def zero_block_scale(ctx: Context) -> Iterator[Issue]:
    yield from _listed(ctx, read_scales(ctx).zero_blocks, "are zero")


@check(
    "HK703", "bad-global-scale", Severity.ERROR, needs=["deep"],
    what="weight_scale_2 and input_scale are finite and positive.",
    why="A zero, negative or non-finite global scale zeroes or poisons the whole Linear.",
)  # fmt: skip
def bad_global_scale(ctx: Context) -> Iterator[Issue]:
    shard_of = ctx.checkpoint.shard_of
    for name, value in sorted(read_scales(ctx).scalars.items()):
        if not math.isfinite(value) or value <= 0:
            yield Issue(f"value is {value!r}; it must be finite and positive", shard_of[name], name)


@check(
    "HK704", "gate-up-scale-mismatch", Severity.ERROR, needs=["deep"],
    what="Within one expert, gate_proj and up_proj (w1 and w3) share weight_scale_2 and input_scale.",
    why="vLLM fuses gate and up and keeps only one of the two scales, so the other projection is mis-scaled.",
)  # fmt: skip
def gate_up_scale_mismatch(ctx: Context) -> Iterator[Issue]:
    scalars = read_scales(ctx).scalars
    names = ctx.modules.names
    for moe, experts in sorted(expert_groups(ctx).items()):
        for expert, projections in sorted(experts.items()):
            pair = next(((g, u) for g, u in FUSED_PAIRS if g in projections and u in projections), None)
            if pair is None:
                continue
            gate, up = names[projections[pair[0]]], names[projections[pair[1]]]
            for kind in ("weight_scale_2", "input_scale"):
                a, b = scalars.get(f"{gate}.{kind}"), scalars.get(f"{up}.{kind}")
                if a is not None and b is not None and a != b:
                    name = f"{up}.{kind}"
                    yield Issue(
                        f"{moe}.experts.{expert}: gate {kind} {a!r} != up {b!r}", ctx.checkpoint.shard_of[name], name
                    )
