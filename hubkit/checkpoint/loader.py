"""Fill the checkpoint model from a source: configs in full, safetensors files by header only."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from hubkit.checkpoint.model import JSON_FILES, RECORD_DIR, Checkpoint, JsonDocument, parse_json_document
from hubkit.checkpoint.safetensors_header import (
    DEFAULT_LIMITS,
    HeaderLimits,
    ShardHeader,
    declared_tensors,
    parse_header,
    read_header_bytes,
    read_header_length,
)
from hubkit.checkpoint.source import CheckpointSource, FileEntry, open_source
from hubkit.progress import progress_bar

#: Config files larger than this are reported, not read (no config is anywhere near it).
MAX_JSON_BYTES = 64 * 1024 * 1024
#: Files the checkpoint model reads as single files; a folder of that name is reported, not walked past.
SINGLE_FILES = (*JSON_FILES, "README.md")

T = TypeVar("T")
R = TypeVar("R")


def load_checkpoint(
    ref: str | CheckpointSource, *, workers: int = 1, progress: bool = False, limits: HeaderLimits = DEFAULT_LIMITS
) -> Checkpoint:
    """Describe the checkpoint at ``ref`` (a folder, ``hf://`` address or an open source).

    Nothing in the folder raises: an unreadable file, a broken config or a header beyond ``limits`` is
    recorded for the checks to report.
    """
    source = open_source(ref) if isinstance(ref, str) else ref
    if source.local_path("") is None:
        workers = max(workers, 8)  # remote: headers come by range request, many at once
    files = _with_folders_named_as_files(source, {entry.path: entry for entry in source.list_files()})
    documents = {name: _read_json(source, files[name]) for name in JSON_FILES if name in files}
    shard_paths = [
        path
        for path, entry in files.items()
        if path.endswith(".safetensors") and not entry.is_symlink and not path.startswith(RECORD_DIR + "/")
    ]
    with progress_bar(total=len(shard_paths), desc="headers", unit="shard", enabled=progress) as bar:
        headers = _read_headers(source, [files[p] for p in shard_paths], workers, limits, bar.update)
    return Checkpoint(source, files, documents, {h.file: h for h in headers})


def _with_folders_named_as_files(source: CheckpointSource, files: dict[str, FileEntry]) -> dict[str, FileEntry]:
    """Add an entry, with its problem, for each folder that sits where a config or the card should be."""
    for name in SINGLE_FILES:
        if name in files:
            continue
        local = source.local_path(name)
        if any(path.startswith(name + "/") for path in files) or (local is not None and local.is_dir()):
            files[name] = FileEntry(name, 0, is_dir=True, problem="is a folder, not a file")
    return dict(sorted(files.items()))


def _read_headers(
    source: CheckpointSource,
    entries: list[FileEntry],
    workers: int,
    limits: HeaderLimits,
    advance: Callable[[int], object],
) -> list[ShardHeader]:
    """Every shard's header, read within ``limits``: the header lengths first (8 bytes each), then the
    headers in order, each counted before it is decoded; past a checkpoint limit a shard is not read."""

    def length(entry: FileEntry) -> ShardHeader:
        if entry.problem is not None:
            return ShardHeader(entry.path, entry.size, fatal_kind="unreadable", fatal=f"{entry.path} {entry.problem}")
        return read_header_length(source, entry.path, entry.size)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        shards = list(_ordered(pool, length, entries, workers))
        header_bytes = 0
        for shard in shards:
            if shard.fatal is None:
                header_bytes += shard.header_length
                if header_bytes > limits.header_bytes_per_checkpoint:
                    _over_budget(shard, f"the headers exceed {limits.header_bytes_per_checkpoint:,} bytes")

        def fetch(shard: ShardHeader) -> tuple[ShardHeader, bytes | None]:
            return shard, read_header_bytes(source, shard)

        tensors, exhausted = 0, False
        for shard, raw in _ordered(pool, fetch, shards, workers):
            if raw is not None:
                declared = declared_tensors(raw)
                if declared <= limits.tensors_per_shard:  # a shard over its own limit is reported by itself
                    tensors += declared
                    exhausted = exhausted or tensors > limits.tensors_per_checkpoint
                if exhausted:
                    _over_budget(shard, f"the headers declare more than {limits.tensors_per_checkpoint:,} tensors")
                else:
                    parse_header(shard, raw, limits.tensors_per_shard)
                del raw
            advance(1)
    return shards


def _over_budget(shard: ShardHeader, reason: str) -> None:
    shard.fatal_kind, shard.fatal = "budget", f"not read: {reason}"


def _ordered(pool: ThreadPoolExecutor, work: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``work`` over ``items`` in order, at most ``window`` at a time (so at most that many results wait)."""
    pending: deque[Future[R]] = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) >= max(1, window):
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def _read_json(source: CheckpointSource, entry: FileEntry) -> JsonDocument:
    name = entry.path
    if entry.problem is not None:
        return JsonDocument(name, error=entry.problem, unreadable=True)
    if entry.size > MAX_JSON_BYTES:
        return JsonDocument(name, error=f"is {entry.size:,} bytes, larger than any config should be")
    try:
        return parse_json_document(name, source.read_range(name, 0, entry.size))
    except OSError as exc:
        return JsonDocument(name, error=f"cannot be read: {exc.strerror or exc}")
