"""Fill the checkpoint model from a source: configs in full, safetensors files by header only."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from hubkit.checkpoint.model import JSON_FILES, RECORD_DIR, Checkpoint, JsonDocument, parse_json_document
from hubkit.checkpoint.safetensors_header import ShardHeader, read_shard_header
from hubkit.checkpoint.source import CheckpointSource, open_source
from hubkit.progress import progress_bar

#: Config files larger than this are reported, not read (no config is anywhere near it).
MAX_JSON_BYTES = 64 * 1024 * 1024


def load_checkpoint(ref: str | CheckpointSource, *, workers: int = 1, progress: bool = False) -> Checkpoint:
    """Describe the checkpoint at ``ref`` (a folder, ``hf://`` address or an open source)."""
    source = open_source(ref) if isinstance(ref, str) else ref
    if source.local_path("") is None:
        workers = max(workers, 8)  # remote: headers come by range request, many at once
    files = {entry.path: entry for entry in source.list_files()}
    documents = {name: _read_json(source, name, files[name].size) for name in JSON_FILES if name in files}
    shard_paths = [
        path
        for path, entry in files.items()
        if path.endswith(".safetensors") and not entry.is_symlink and not path.startswith(RECORD_DIR + "/")
    ]
    with progress_bar(total=len(shard_paths), desc="headers", unit="shard", enabled=progress) as bar:

        def read(path: str) -> ShardHeader:
            header = read_shard_header(source, path, files[path].size)
            bar.update(1)
            return header

        if workers > 1:
            with ThreadPoolExecutor(workers) as pool:
                headers = list(pool.map(read, shard_paths))
        else:
            headers = [read(path) for path in shard_paths]
    return Checkpoint(source, files, documents, {h.file: h for h in headers})


def _read_json(source: CheckpointSource, name: str, size: int) -> JsonDocument:
    if size > MAX_JSON_BYTES:
        return JsonDocument(name, error=f"is {size:,} bytes, larger than any config should be")
    try:
        return parse_json_document(name, source.read_range(name, 0, size))
    except OSError as exc:
        return JsonDocument(name, error=f"cannot be read: {exc}")
