"""HK3xx: the weight index and the shards agree tensor by tensor and byte by byte."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from itertools import repeat
from operator import eq
from typing import Any

from hubkit.checkpoint.model import INDEX
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check
from hubkit.validate.rules.safetensors import shard_columns


def _index(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The index's weight_map and metadata when both are well formed (else HK301 says what is wrong)."""

    def compute() -> tuple[dict[str, Any], dict[str, Any]] | None:
        data = ctx.checkpoint.document(INDEX)
        if data is None or not isinstance(data.get("weight_map"), dict) or not isinstance(data.get("metadata"), dict):
            return None
        if not all(isinstance(v, str) for v in data["weight_map"].values()):
            return None
        return data["weight_map"], data["metadata"]

    return ctx.memo("index", compute)


def _index_agrees(ctx: Context, weight_map: dict[str, Any]) -> bool:
    """True when the index names exactly the stored tensors, each in its own shard (set algebra, C speed).

    Every name of every shard must map to that shard, and the index must hold as many names as the shards
    together: a name stored in two shards fails one of them, so agreement also proves no name is stored
    twice (no tensor table is merged for it).
    """

    def compute() -> bool:
        shards = ctx.checkpoint.shards.values()
        if sum(len(h.tensors) for h in shards) != len(weight_map):
            return False
        return all(all(map(eq, repeat(h.file), map(weight_map.get, h.tensors))) for h in shards)

    return ctx.memo("index_agrees", compute)


def stored_twice(ctx: Context) -> dict[str, list[str]]:
    """Tensor name -> the shards that store it, for names stored more than once."""
    parsed = _index(ctx)
    if parsed is not None and _index_agrees(ctx, parsed[0]):
        return {}
    return ctx.checkpoint.duplicate_tensors


def _sample(names: list[str]) -> str:
    shown = ", ".join(sorted(names)[:3])
    return shown + (f", … ({len(names):,} in all)" if len(names) > 3 else "")


@check(
    "HK301", "index-malformed", Severity.ERROR,
    what="The index is an object with a weight_map of name -> shard and metadata.total_size.",
    why="transformers reads index['metadata'] and index['weight_map']; a missing part fails the load.",
)  # fmt: skip
def index_malformed(ctx: Context) -> Iterator[Issue]:
    data = ctx.checkpoint.document(INDEX)
    if data is None:
        return
    line_of = ctx.checkpoint.line_of
    if not isinstance(data.get("weight_map"), dict):
        yield Issue("weight_map is missing or not an object", INDEX, line=line_of(INDEX, "weight_map"))
    elif not all(isinstance(v, str) for v in data["weight_map"].values()):
        yield Issue("weight_map values must be shard file names", INDEX, line=line_of(INDEX, "weight_map"))
    metadata = data.get("metadata")
    if not isinstance(metadata, dict):
        yield Issue("metadata is missing; transformers needs index['metadata']", INDEX, line=line_of(INDEX, "metadata"))
    elif type(metadata.get("total_size")) is not int:
        yield Issue(
            "metadata.total_size is missing or not an integer", INDEX, line=line_of(INDEX, "metadata", "total_size")
        )


@check(
    "HK302", "indexed-tensor-missing", Severity.ERROR,
    what="Every tensor the index lists is stored in the shard the index names.",
    why="The loader opens the named shard and fails when the tensor is not there.",
)  # fmt: skip
def indexed_tensor_missing(ctx: Context) -> Iterator[Issue]:
    parsed = _index(ctx)
    if parsed is None:
        return
    weight_map = parsed[0]
    if _index_agrees(ctx, weight_map):
        return
    tensors = ctx.checkpoint.tensors
    shards = ctx.checkpoint.shards
    unknown = {h.file for h in shards.values() if h.fatal is not None}  # reported where they are (HK113, HK2)
    malformed = {name for h in shards.values() for name, _ in h.bad_entries}  # HK205
    absent: dict[str, list[str]] = defaultdict(list)
    elsewhere: dict[str, list[str]] = defaultdict(list)
    for name, shard in weight_map.items():
        stored = tensors.get(name)
        if stored is None:
            if shard not in unknown and name not in malformed:  # values are strings (_index)
                absent[str(shard)].append(name)
        elif ctx.checkpoint.shard_of[name] != shard and name not in stored_twice(ctx):
            elsewhere[str(shard)].append(name)
    for shard, names in sorted(absent.items()):
        yield Issue(f"{len(names):,} indexed tensors are in no shard: {_sample(names)}", shard, sorted(names)[0])
    for shard, names in sorted(elsewhere.items()):
        yield Issue(f"{len(names):,} tensors indexed here are stored in another shard: {_sample(names)}", shard)


@check(
    "HK303", "tensor-not-indexed", Severity.ERROR,
    what="Every tensor stored in a shard is listed in the index.",
    why="Loaders only read what the index lists: an unlisted tensor is silently dropped.",
)  # fmt: skip
def tensor_not_indexed(ctx: Context) -> Iterator[Issue]:
    parsed = _index(ctx)
    if parsed is None:
        return
    weight_map = parsed[0]
    if _index_agrees(ctx, weight_map):
        return
    for shard in ctx.checkpoint.shards.values():
        names = [name for name in shard.tensors if name not in weight_map]
        if names:
            yield Issue(f"{len(names):,} tensors are not in the index: {_sample(names)}", shard.file, sorted(names)[0])


@check(
    "HK304", "tensor-in-two-shards", Severity.ERROR,
    what="No tensor is stored in more than one shard.",
    why="Which copy loads depends on the loader; the two copies may differ.",
)  # fmt: skip
def tensor_in_two_shards(ctx: Context) -> Iterator[Issue]:
    for name, shards in sorted(stored_twice(ctx).items()):
        yield Issue(f"stored in {len(shards)} shards: {', '.join(shards)}", shards[0], name)


@check(
    "HK305", "index-total-size", Severity.ERROR, requires=["tensors"],
    what="metadata.total_size equals the sum of all tensors' byte lengths.",
    why="A wrong total signals tensors missing or added after the index was written.",
)  # fmt: skip
def index_total_size(ctx: Context) -> Iterator[Issue]:
    parsed = _index(ctx)
    if parsed is None or type(parsed[1].get("total_size")) is not int:
        return
    stated = parsed[1]["total_size"]
    if stored_twice(ctx) or any(shard.fatal for shard in ctx.checkpoint.shards.values()):
        actual = ctx.checkpoint.total_tensor_bytes
    else:  # each tensor in one readable shard: the columns the HK2 checks read already
        actual = sum(sum(c.ends) - sum(c.begins) for c in shard_columns(ctx))
    if stated != actual:
        yield Issue(
            f"metadata.total_size is {stated:,} but the tensors hold {actual:,} bytes",
            INDEX,
            line=ctx.checkpoint.line_of(INDEX, "metadata", "total_size"),
        )


@check(
    "HK306", "indexed-shard-missing", Severity.ERROR,
    what="Every shard file the index names exists.",
    why="A missing shard is an incomplete checkpoint.",
)  # fmt: skip
def indexed_shard_missing(ctx: Context) -> Iterator[Issue]:
    parsed = _index(ctx)
    if parsed is None:
        return
    for shard in sorted({str(s) for s in parsed[0].values()} - set(ctx.checkpoint.files)):
        state = "is a folder" if ctx.checkpoint.is_folder(shard) else "is missing"
        yield Issue(f"the index names {shard} but the file {state}", shard)


@check(
    "HK307", "shard-not-indexed", Severity.ERROR,
    what="Every .safetensors file is named by the index.",
    why="An unindexed shard is never loaded: its tensors are dead weight or a sign of a mixed export.",
)  # fmt: skip
def shard_not_indexed(ctx: Context) -> Iterator[Issue]:
    parsed = _index(ctx)
    if parsed is None:
        return
    named = set(parsed[0].values())
    for shard in sorted(set(ctx.checkpoint.shards) - named):
        yield Issue(f"{shard} is not named by the index; delete it or re-write the index", shard)
