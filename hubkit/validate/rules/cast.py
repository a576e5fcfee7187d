"""HK705 (``--base``): an export cast from an MXFP4 base dequantizes as the base does on every lossless block.

Pure bytes, no torch: a row whose nibbles equal the base's (with -0 read as +0) and whose E4M3 block scales times
``weight_scale_2`` equal the base's 2^k_j is exact as a whole (C-speed comparisons); any other row is decoded block
by block. A block is lossless when its exponent k_j lies in E4M3's window below k_max (``nvfp4-format.md`` §10)
or it is all zero. Sampled tensors by default; every tensor with ``--deep``.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from hubkit.checkpoint.model import Checkpoint, UnreadableFile
from hubkit.checkpoint.safetensors_header import TensorInfo
from hubkit.progress import progress_bar
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

#: Tensors compared without ``--deep``: evenly spread over the sorted names.
SAMPLED_TENSORS = 64
#: Rows read at once are at most this many bytes per tensor.
MAX_READ = 16 * 1024 * 1024
LISTED_TENSORS = 50
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
#: Each byte with a -0 nibble (code 8) read as +0: both decode to zero.
POSITIVE_ZERO = bytes((0 if b & 15 == 8 else b & 15) | ((0 if b >> 4 == 8 else b >> 4) << 4) for b in range(256))


def _e4m3(byte: int) -> float:
    sign = -1.0 if byte & 0x80 else 1.0
    exponent, mantissa = (byte >> 3) & 15, byte & 7
    if exponent == 15 and mantissa == 7:
        return math.nan
    if exponent == 0:
        return sign * mantissa / 8 * 2.0**-6
    return sign * (1 + mantissa / 8) * 2.0 ** (exponent - 7)


E4M3 = tuple(_e4m3(b) for b in range(256))
#: 2^k -> its E4M3 byte, for k in E4M3's exact window [-9, 8].
E4M3_POWER = {k: next(b for b in range(128) if E4M3[b] == 2.0**k) for k in range(-9, 9)}


@dataclass(frozen=True)
class CastPair:
    """One module cast from MXFP4: the base's tensors and the export's."""

    module: str
    packed: TensorInfo
    e8m0: TensorInfo
    weight: TensorInfo
    scale: TensorInfo
    scale_2: TensorInfo


_WIDTH = {"U8": 1, "F8_E4M3": 1, "F32": 4}


def _sound(checkpoint: Checkpoint, name: str, tensor: TensorInfo) -> bool:
    """As many bytes as its shape needs, inside its file (other checks report the rest)."""
    shard = checkpoint.shards.get(checkpoint.shard_of.get(name, ""))
    return (
        shard is not None
        and shard.fatal is None
        and tensor.nbytes == tensor.numel * _WIDTH.get(tensor.dtype, 0)
        and tensor.end <= shard.data_length
    )


def cast_pairs(ctx: Context) -> list[CastPair]:
    """Modules that are MXFP4 in the base and NVFP4 in the export, with shapes that fit each other."""
    base = ctx.base
    assert base is not None
    ours, theirs = ctx.checkpoint.tensors, base.tensors
    pairs = []
    for name, packed in theirs.items():
        module = name.removesuffix(".weight_packed")
        e8m0, weight = theirs.get(module + ".weight_scale"), ours.get(module + ".weight")
        scale, scale_2 = ours.get(module + ".weight_scale"), ours.get(module + ".weight_scale_2")
        if (
            name.endswith(".weight_packed")
            and packed.dtype == "U8"
            and e8m0 is not None
            and e8m0.dtype == "U8"
            and weight is not None
            and scale is not None
            and scale_2 is not None
            and weight.dtype == "U8"
            and scale.dtype == "F8_E4M3"
            and scale_2.dtype == "F32"
            and scale_2.nbytes == 4
            and all(
                _sound(checkpoint, module + suffix, tensor)
                for checkpoint, suffix, tensor in (
                    (base, ".weight_packed", packed),
                    (base, ".weight_scale", e8m0),
                    (ctx.checkpoint, ".weight", weight),
                    (ctx.checkpoint, ".weight_scale", scale),
                    (ctx.checkpoint, ".weight_scale_2", scale_2),
                )
            )
        ):
            pairs.append(CastPair(module, packed, e8m0, weight, scale, scale_2))
    return sorted(pairs, key=lambda p: p.module)


def _read(checkpoint: Checkpoint, name: str, tensor: TensorInfo, start: int, length: int) -> bytes:
    shard = checkpoint.shards[checkpoint.shard_of[name]]
    try:
        data = checkpoint.source.read_range(shard.file, shard.data_start + tensor.data_offsets[0] + start, length)
    except OSError as exc:
        raise UnreadableFile(shard.file, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) != length:
        raise UnreadableFile(shard.file, "ends before its header says")
    return data


def _block_differs(mx: bytes, e8m0: int, nv: bytes, scales: tuple[float, float], scale_2: float) -> bool:
    """Whether one 32-block dequantizes differently (16 bytes of nibbles each side, element 2i the low nibble)."""
    mx_scale = 0.0 if e8m0 == 0 else 2.0 ** (e8m0 - 127)
    for i in range(16):
        half = scales[i // 8] * scale_2
        for shift in (0, 4):
            if E2M1[(mx[i] >> shift) & 15] * mx_scale != E2M1[(nv[i] >> shift) & 15] * half:
                return True
    return False


def compare(ctx: Context, pair: CastPair) -> tuple[int, str | None]:
    """Lossless blocks that differ (and why the tensor could not be compared, if so)."""
    base = ctx.base
    assert base is not None
    rows = pair.packed.shape[0] if len(pair.packed.shape) == 2 else 0
    if (
        pair.weight.shape != pair.packed.shape
        or len(pair.e8m0.shape) != 2
        or pair.e8m0.shape[0] != rows
        or pair.packed.shape[1] != pair.e8m0.shape[1] * 16
        or pair.scale.shape != (rows, pair.e8m0.shape[1] * 2)
    ):
        return 0, f"shapes do not fit: base {list(pair.packed.shape)}, export {list(pair.weight.shape)}"
    (scale_2,) = struct.unpack("<f", _read(ctx.checkpoint, pair.module + ".weight_scale_2", pair.scale_2, 0, 4))
    if not (math.isfinite(scale_2) and scale_2 > 0):
        return 0, f"weight_scale_2 is {scale_2!r}"
    mantissa, exponent = math.frexp(scale_2)
    blocks, row_bytes = pair.e8m0.shape[1], pair.packed.shape[1]
    per_read = max(1, MAX_READ // max(1, row_bytes))

    def exponents(first: int, count: int) -> bytes:
        return _read(base, pair.module + ".weight_scale", pair.e8m0, first * blocks, count * blocks)

    if mantissa == 0.5:  # weight_scale_2 = 2^m pins k_max = m + 8
        k_max = exponent - 1 + 8
    else:  # not the cast's pinning: the window is the base tensor's own
        chunks = (exponents(first, min(per_read, rows - first)) for first in range(0, rows, per_read))
        largest = max((max(chunk, default=0) for chunk in chunks), default=0)
        k_max = largest - 127 if largest else 0
    m = k_max - 8
    # e8m0 byte -> the E4M3 byte of 2^(k_j - m) where that is exact (the fast path's expectation).
    expected = bytes(E4M3_POWER.get(b - 127 - m, 0xFF) if b else 0x01 for b in range(256))
    differing = 0
    for first in range(0, rows, per_read):
        count = min(per_read, rows - first)
        scales = exponents(first, count)
        mx = _read(base, pair.module + ".weight_packed", pair.packed, first * row_bytes, count * row_bytes)
        nv = _read(ctx.checkpoint, pair.module + ".weight", pair.weight, first * row_bytes, count * row_bytes)
        nv_scale = _read(
            ctx.checkpoint, pair.module + ".weight_scale", pair.scale, first * 2 * blocks, count * 2 * blocks
        )
        for row in range(count):
            e8m0 = scales[row * blocks : (row + 1) * blocks]
            mx_row = mx[row * row_bytes : (row + 1) * row_bytes]
            nv_row = nv[row * row_bytes : (row + 1) * row_bytes]
            scale_row = nv_scale[row * 2 * blocks : (row + 1) * 2 * blocks]
            wanted = e8m0.translate(expected)
            if (
                mantissa == 0.5
                and nv_row == mx_row.translate(POSITIVE_ZERO)
                and scale_row[0::2] == wanted
                and scale_row[1::2] == wanted
            ):
                continue
            for j, k in enumerate(e8m0):
                if k and k - 127 < k_max - 17:
                    continue  # outside E4M3's window: not claimed bit-exact
                halves = (E4M3[scale_row[2 * j]], E4M3[scale_row[2 * j + 1]])
                if _block_differs(mx_row[16 * j : 16 * j + 16], k, nv_row[16 * j : 16 * j + 16], halves, scale_2):
                    differing += 1
    return differing, None


def _chosen(pairs: list[CastPair], deep: bool) -> list[CastPair]:
    if deep or len(pairs) <= SAMPLED_TENSORS:
        return pairs
    step = len(pairs) / SAMPLED_TENSORS
    return [pairs[int(i * step)] for i in range(SAMPLED_TENSORS)]


@check(
    "HK705", "mxfp4-cast-mismatch", Severity.ERROR, needs=["base"], requires=["tensors"],
    what="Where the base is MXFP4, every lossless block's NVFP4 dequantization equals the base's (sampled tensors; all with --deep).",
    why="A cast from MXFP4 claims bit-exactness on those blocks; one that dequantizes differently changes the model.",
)  # fmt: skip
def mxfp4_cast_mismatch(ctx: Context) -> Iterator[Issue]:
    base = ctx.base
    assert base is not None
    pairs = _chosen(cast_pairs(ctx), ctx.deep)
    if not pairs:
        return
    with (
        progress_bar(total=len(pairs), desc="cast", unit="tensor", enabled=ctx.progress) as bar,
        ThreadPoolExecutor(max(1, ctx.workers)) as pool,
    ):

        def one(pair: CastPair) -> tuple[int, str | None]:
            result = compare(ctx, pair)
            bar.update(1)
            return result

        results = list(pool.map(one, pairs))
    listed = 0
    for pair, (differing, problem) in zip(pairs, results, strict=True):
        if (differing or problem) and listed < LISTED_TENSORS:
            listed += 1
            name = pair.module + ".weight"
            text = problem or f"{differing:,} lossless MXFP4 blocks dequantize differently from the base"
            yield Issue(f"{text}; re-run the cast", ctx.checkpoint.shard_of[name], name)
