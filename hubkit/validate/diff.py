"""``hubkit diff``: two checkpoints (local or on the Hub) compared file by file, and summarised by what matters
for a quantized export: settings, exclusions by meaning, tensors by name, dtype and shape.

Every file is compared by content: JSON key by key, text by lines, safetensors by header and bytes, anything
else by size and sha256. The pair is IDENTICAL only when both hold the same files with the same bytes.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hubkit.checkpoint.json_text import JsonProblem, decode_json
from hubkit.checkpoint.model import RECORD_DIR, Checkpoint, UnreadableFile
from hubkit.checkpoint.safetensors_header import ShardHeader, TensorInfo
from hubkit.checkpoint.source import FileEntry
from hubkit.progress import progress_bar
from hubkit.sizes import MiB
from hubkit.validate.content_diff import (
    MAX_CHANGES,
    MAX_GROUPS,
    json_changes,
    line_diff,
    plural,
    render_change,
    visible,
)
from hubkit.validate.context import Context
from hubkit.validate.exclusions import group_names, read_exclusions
from hubkit.validate.profiles import choose_profile

SETTINGS = ("quant_algo", "group_size", "kv_cache_quant_algo")
#: Files up to this size (weights excepted) are read whole and compared by content; larger ones by sha256.
MAX_CONTENT_BYTES = 64 * MiB
#: Bytes read at a time while hashing, and files hashed at once.
CHUNK = 16 * MiB
WORKERS = 8
#: The Hub's own file in every repo: not part of a checkpoint when only the Hub side has it.
HUB_ATTRIBUTES = ".gitattributes"


def _settings(checkpoint: Checkpoint) -> dict[str, Any]:
    quant = _table(checkpoint.quant_config, "quantization")
    producer = _table(checkpoint.quant_config, "producer")
    text = checkpoint.text_config
    return {
        **{key: quant.get(key) for key in SETTINGS},
        "producer": producer.get("version"),
        "architectures": checkpoint.config.get("architectures"),
        "text_model_type": text.get("model_type"),
        "num_hidden_layers": text.get("num_hidden_layers"),
        "n_routed_experts": text.get("n_routed_experts"),
    }


def _table(document: dict[str, Any] | None, key: str) -> dict[str, Any]:
    value = (document or {}).get(key)
    return value if isinstance(value, dict) else {}


def unreadable(checkpoint: Checkpoint) -> list[str]:
    """What of a checkpoint could not be read, so cannot be compared: files, configs, shard headers."""
    found = [f"{path} {problem}" for path, problem in checkpoint.problems.items()]
    found += [
        f"{name} {doc.error or 'is not a JSON object'}"
        for name, doc in sorted(checkpoint.documents.items())
        if not doc.usable and not doc.unreadable
    ]
    found += [
        f"{shard.file}: {shard.fatal}"
        for shard in checkpoint.shards.values()
        if shard.fatal is not None and shard.fatal_kind != "unreadable"
    ]
    return found


def diff_checkpoints(a: Checkpoint, b: Checkpoint, *, deep: bool = False, progress: bool = False) -> dict[str, Any]:
    """Differences of B against A: every file by content, tensors grouped by layer range rather than listed one
    by one. ``deep`` compares tensor data tensor by tensor (reading every byte of the weights that differ);
    without it weights are compared by file hash. What either side could not read is listed, and such a
    pair, like one with a file left uncompared, is never called identical."""
    left, right = _settings(a), _settings(b)
    configs = [{"key": k, "a": left[k], "b": right[k]} for k in left if left[k] != right[k]]
    context = Context(a, choose_profile(a, None))
    linear = set(context.linear_modules)
    names = context.modules.names
    ours = read_exclusions(context.matcher, a.exclude_modules or []).excluded & linear
    theirs = read_exclusions(context.matcher, b.exclude_modules or []).excluded & linear
    exclusions = {
        "quantized_in_a_excluded_in_b": group_names(names[i] for i in sorted(theirs - ours)),
        "excluded_in_a_quantized_in_b": group_names(names[i] for i in sorted(ours - theirs)),
    }
    only_a = sorted(set(a.tensors) - set(b.tensors))
    only_b = sorted(set(b.tensors) - set(a.tensors))
    changed: dict[str, list[str]] = defaultdict(list)
    for name in sorted(set(a.tensors) & set(b.tensors)):
        ta, tb = a.tensors[name], b.tensors[name]
        if (ta.dtype, ta.dims) != (tb.dtype, tb.dims):
            changed[f"{ta.dtype} {list(ta.dims)} -> {tb.dtype} {list(tb.dims)}"].append(name)
    broken = {"a": unreadable(a), "b": unreadable(b)}
    files = _FileComparison(a, b, deep, broken, progress)
    tensors = {
        "only_in_a": group_names(only_a),
        "only_in_b": group_names(only_b),
        "changed": [{"change": k, "tensors": group_names(v, limit=6)} for k, v in sorted(changed.items())],
        "data_differs": group_names(files.data_differs),
    }
    same = (
        not configs
        and not any(exclusions.values())
        and not only_a
        and not only_b
        and not changed
        and not any(broken.values())
        and files.same
    )
    return {
        "schema": 1,
        "a": a.location,
        "b": b.location,
        "identical": same,
        "configs": configs,
        "exclusions": exclusions,
        "tensors": tensors,
        "unreadable": broken,
        "files": files.as_dict(),
        "tensor_data": "not compared" if files.weights_not_compared else "compared",
        "deep": deep,
    }


class _FileComparison:
    """Every file of A against the same path in B: presence, then bytes, then what differs in the content."""

    def __init__(self, a: Checkpoint, b: Checkpoint, deep: bool, broken: dict[str, list[str]], progress: bool):
        self.a, self.b, self.deep, self.broken = a, b, deep, broken
        listed_a, listed_b = _listed(a), _listed(b)
        self.ignored = [
            f"{HUB_ATTRIBUTES} (the Hub's own file, only in {side})"
            for side, mine, other, checkpoint in (("A", listed_a, listed_b, a), ("B", listed_b, listed_a, b))
            if HUB_ATTRIBUTES in mine and HUB_ATTRIBUTES not in other and checkpoint.source.local_path("") is None
        ]
        for listed in (listed_a, listed_b):
            if self.ignored and HUB_ATTRIBUTES in listed:
                del listed[HUB_ATTRIBUTES]
        self.only_in_a = sorted(set(listed_a) - set(listed_b))
        self.only_in_b = sorted(set(listed_b) - set(listed_a))
        self.changed: list[dict[str, Any]] = []
        self.not_compared: list[str] = []
        self.weights_not_compared = False
        self.data_differs: list[str] = []
        pairs = [
            (listed_a[path], listed_b[path])
            for path in sorted(set(listed_a) & set(listed_b))
            if listed_a[path].problem is None and listed_b[path].problem is None
        ]
        hashed = []
        for entry_a, entry_b in pairs:
            link_a, link_b = _folder_link(a, entry_a), _folder_link(b, entry_b)
            if link_a is not None or link_b is not None:
                if link_a != link_b:
                    self.changed.append(_link_change(entry_a, entry_b, link_a, link_b))
            elif _by_hash(entry_a) or _by_hash(entry_b):
                hashed.append((entry_a, entry_b))
            else:
                self._compare_content(entry_a, entry_b)
        self._compare_hashed(hashed, progress)
        self.changed.sort(key=lambda change: str(change["path"]))

    @property
    def same(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.changed or self.not_compared)

    def as_dict(self) -> dict[str, Any]:
        return {
            "only_in_a": self.only_in_a,
            "only_in_b": self.only_in_b,
            "changed": self.changed,
            "not_compared": self.not_compared,
            "ignored": self.ignored,
        }

    def _cannot_read(self, side: str, problem: UnreadableFile) -> None:
        self.broken[side].append(f"{problem.path} {problem.reason}")

    def _compare_content(self, entry_a: FileEntry, entry_b: FileEntry) -> None:
        path = entry_a.path
        try:
            data_a = self.a.read_file(path)
        except UnreadableFile as problem:
            return self._cannot_read("a", problem)
        try:
            data_b = self.b.read_file(path)
        except UnreadableFile as problem:
            return self._cannot_read("b", problem)
        if data_a != data_b:
            self.changed.append(content_change(path, data_a, data_b))
        return None

    def _compare_hashed(self, pairs: list[tuple[FileEntry, FileEntry]], progress: bool) -> None:
        """Large files and weights by sha256 (the Hub's listing where it has one), many files at once; one file
        seen from both sides (the same folder, or hard links) is the same without being read."""
        same_bytes = {entry_a.path for entry_a, entry_b in pairs if self._one_file(entry_a, entry_b)}
        pairs = [pair for pair in pairs if pair[0].path not in same_bytes]
        jobs = [(side, entry) for pair in pairs for side, entry in zip("ab", pair, strict=True)]
        digests: dict[tuple[str, str], str | None] = {}
        failed: set[str] = set()
        total = sum(entry.size for _, entry in jobs)
        with (
            progress_bar(total=total, desc="hashing", unit="B", unit_scale=True, enabled=progress) as bar,
            ThreadPoolExecutor(WORKERS) as pool,
        ):
            futures = {job: pool.submit(self._digest, *job) for job in jobs}
            for (side, entry), future in futures.items():
                try:
                    digests[side, entry.path] = future.result()
                except UnreadableFile as problem:
                    self._cannot_read(side, problem)
                    failed.add(entry.path)
                bar.update(entry.size)
        for entry_a, entry_b in pairs:
            path = entry_a.path
            if path in failed:
                continue  # listed as unreadable
            digest_a, digest_b = digests["a", path], digests["b", path]
            if digest_a is None or digest_b is None:
                if entry_a.size == entry_b.size:
                    self.not_compared.append(f"{path}: the Hub lists no sha256 for it (use --deep to read it)")
                    self.weights_not_compared |= path.endswith(".safetensors")
                    continue
            elif digest_a == digest_b and entry_a.size == entry_b.size:
                same_bytes.add(path)
                continue
            self.changed.append(self._hashed_change(entry_a, entry_b, digest_a, digest_b))
        if self.deep:
            self._compare_tensor_data(same_bytes)

    def _one_file(self, entry_a: FileEntry, entry_b: FileEntry) -> bool:
        local_a, local_b = self.a.source.local_path(entry_a.path), self.b.source.local_path(entry_b.path)
        try:
            return local_a is not None and local_b is not None and os.path.samefile(local_a, local_b)
        except OSError:
            return False  # hashed, where what is wrong with it is reported

    def _digest(self, side: str, entry: FileEntry) -> str | None:
        """The sha256 of a file: listed by the Hub, else read in chunks (a large Hub file only with --deep)."""
        checkpoint = self.a if side == "a" else self.b
        if entry.sha256 is not None:
            return entry.sha256
        local = checkpoint.source.local_path(entry.path)
        if local is None and entry.size > MAX_CONTENT_BYTES and not self.deep:
            return None
        digest = hashlib.sha256()
        for chunk in _chunks(checkpoint, entry.path, 0, entry.size):
            digest.update(chunk)
        return digest.hexdigest()

    def _hashed_change(
        self, entry_a: FileEntry, entry_b: FileEntry, digest_a: str | None, digest_b: str | None
    ) -> dict[str, Any]:
        path = entry_a.path
        sides = {"a": {"size": entry_a.size, "sha256": digest_a}, "b": {"size": entry_b.size, "sha256": digest_b}}
        header_a, header_b = self.a.shards.get(path), self.b.shards.get(path)
        if not path.endswith(".safetensors"):
            return {"path": path, "kind": "binary", "summary": "the bytes differ", **sides}
        if header_a is None or header_b is None:  # a link to a shard: not read as one
            return {
                "path": path,
                "kind": "safetensors",
                "summary": "the bytes differ",
                **sides,
                "header": [],
                "changes": [],
            }
        if header_a.fatal is not None or header_b.fatal is not None:
            notes, changes = ["a header cannot be read (see above)"], []
        else:
            notes, changes = _header_notes(header_a, header_b), json_changes(header_a.metadata, header_b.metadata)
        for item in changes:
            item["key"] = "__metadata__" + ("" if item["key"].startswith("(") else "." + item["key"])
        if not self.deep:
            notes.append("which tensors' data differ is not compared (use --deep to name them)")
        summary = "; ".join(["the bytes differ", *notes])
        return {"path": path, "kind": "safetensors", "summary": summary, **sides, "header": notes, "changes": changes}

    def _compare_tensor_data(self, same_bytes: set[str]) -> None:
        """--deep: every tensor of both sides with the same dtype and shape, outside shards with the same bytes,
        hashed from its data and compared; a tensor that moved between shards is compared too."""
        a, b = self.a, self.b
        names = [
            name
            for name in sorted(set(a.tensors) & set(b.tensors))
            if (a.tensors[name].dtype, a.tensors[name].dims) == (b.tensors[name].dtype, b.tensors[name].dims)
            and not (a.shard_of[name] in same_bytes and b.shard_of[name] in same_bytes)
        ]
        try:
            hashes_a = _tensor_hashes(a, names)
        except UnreadableFile as problem:
            return self._cannot_read("a", problem)
        try:
            hashes_b = _tensor_hashes(b, names)
        except UnreadableFile as problem:
            return self._cannot_read("b", problem)
        self.data_differs = [name for name in names if hashes_a[name] != hashes_b[name]]
        differs = defaultdict(list)
        for name in self.data_differs:
            differs[a.shard_of[name]].append(name)
        for change in self.changed:
            if change["kind"] == "safetensors":
                found = differs.get(change["path"], [])
                change["tensors"] = group_names(found, MAX_GROUPS)
                if found:
                    change["summary"] += f"; the data differ in {plural(len(found), 'tensor')}"
                elif not change["header"] and not change["changes"]:
                    change["summary"] = "the bytes differ outside the tensor data (header layout, order or padding)"
        return None


def _listed(checkpoint: Checkpoint) -> dict[str, FileEntry]:
    """The checkpoint's files, without hubkit's own records."""
    return {
        path: entry
        for path, entry in checkpoint.files.items()
        if path != RECORD_DIR and not path.startswith(RECORD_DIR + "/")
    }


def _folder_link(checkpoint: Checkpoint, entry: FileEntry) -> str | None:
    """Where a symlink to a folder leads (such a link is never followed); None for anything else."""
    local = checkpoint.source.local_path(entry.path)
    if not entry.is_symlink or local is None:
        return None
    try:
        return os.readlink(local) if local.is_dir() else None
    except OSError:
        return None  # read as a file, where what is wrong with it is reported


def _link_change(entry_a: FileEntry, entry_b: FileEntry, link_a: str | None, link_b: str | None) -> dict[str, Any]:
    def what(link: str | None) -> str:
        return "a file" if link is None else f"a link to the folder {link}"

    return {
        "path": entry_a.path,
        "kind": "link",
        "summary": f"{what(link_a)} -> {what(link_b)}",
        "a": {"size": entry_a.size, "sha256": None, "link": link_a},
        "b": {"size": entry_b.size, "sha256": None, "link": link_b},
    }


def _by_hash(entry: FileEntry) -> bool:
    """Weights and large files are compared by sha256, everything else by reading it."""
    return entry.path.endswith(".safetensors") or entry.size > MAX_CONTENT_BYTES


def _chunks(checkpoint: Checkpoint, path: str, start: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``path`` from ``start`` in chunks of at most CHUNK (fewer if the file is shorter)."""
    end = start + length
    while start < end:
        try:
            chunk = checkpoint.source.read_range(path, start, min(CHUNK, end - start))
        except OSError as exc:
            raise UnreadableFile(path, f"cannot be read: {exc.strerror or exc}") from None
        if not chunk:
            return
        yield chunk
        start += len(chunk)


def _header_notes(header_a: ShardHeader, header_b: ShardHeader) -> list[str]:
    notes = []
    if len(header_a.tensors) != len(header_b.tensors):
        notes.append(f"{len(header_a.tensors):,} -> {len(header_b.tensors):,} tensors")
    elif header_a.tensors.keys() != header_b.tensors.keys():
        notes.append("other tensors")
    return notes


def _tensor_hashes(checkpoint: Checkpoint, names: list[str]) -> dict[str, str]:
    """sha256 of each named tensor's data, read shard by shard in chunks (by range requests from the Hub)."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_shard[checkpoint.shard_of[name]].append(name)

    def shard_hashes(path: str) -> dict[str, str]:
        header = checkpoint.shards[path]
        infos = sorted(((n, checkpoint.tensors[n]) for n in by_shard[path]), key=lambda item: item[1].begin)
        window = _Window(lambda start, length: next(_chunks(checkpoint, path, start, length), b""), header.file_size)
        return {name: _tensor_hash(window, header, info) for name, info in infos}

    hashes: dict[str, str] = {}
    with ThreadPoolExecutor(WORKERS) as pool:
        for found in pool.map(shard_hashes, sorted(by_shard)):
            hashes.update(found)
    return hashes


def _tensor_hash(window: _Window, header: ShardHeader, info: TensorInfo) -> str:
    digest = hashlib.sha256()
    position, end = header.data_start + info.begin, header.data_start + info.end
    while position < end:
        piece = window.read(position, min(CHUNK, end - position))
        if not piece:
            break
        digest.update(piece)
        position += len(piece)
    return digest.hexdigest()


class _Window:
    """Reads ahead CHUNK bytes at a time, so that small neighbouring tensors cost one read (one request)."""

    def __init__(self, read: Callable[[int, int], bytes], size: int) -> None:
        self._read, self._size = read, size
        self._start, self._data = 0, memoryview(b"")

    def read(self, start: int, length: int) -> memoryview:
        if not (self._start <= start and start + length <= self._start + len(self._data)):
            self._start = start
            self._data = memoryview(self._read(start, max(0, min(max(length, CHUNK), self._size - start))))
        offset = start - self._start
        return self._data[offset : offset + length]


def content_change(path: str, data_a: bytes, data_b: bytes) -> dict[str, Any]:
    """What differs between two versions of one file: JSON values by key, text by lines, else size and hash."""
    sides = {
        "a": {"size": len(data_a), "sha256": hashlib.sha256(data_a).hexdigest()},
        "b": {"size": len(data_b), "sha256": hashlib.sha256(data_b).hexdigest()},
    }
    if path.endswith(".json"):
        try:
            value_a, value_b = decode_json(data_a), decode_json(data_b)
        except JsonProblem:
            pass  # compared as text below
        else:
            changes = json_changes(value_a, value_b, index=path.endswith(".index.json"))
            if not changes:
                summary = "the same JSON values, written differently (whitespace, key order or repeated keys)"
                return {"path": path, "kind": "json", "summary": summary, **sides, "changes": []}
            shown, more = changes[:MAX_CHANGES], max(0, len(changes) - MAX_CHANGES)
            summary = f"{plural(len(changes), 'key')} {'differs' if len(changes) == 1 else 'differ'}"
            return {"path": path, "kind": "json", "summary": summary, **sides, "changes": shown, "more": more}
    text_a, text_b = _text(data_a), _text(data_b)
    if text_a is not None and text_b is not None:
        lines, more = line_diff(path, text_a, text_b)
        return {"path": path, "kind": "text", "summary": "the lines differ", **sides, "diff": lines, "more": more}
    return {"path": path, "kind": "binary", "summary": "the bytes differ", **sides}


def _text(data: bytes) -> str | None:
    """``data`` as UTF-8 text, or None for binary (not UTF-8, or holding NUL bytes)."""
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def render_diff(diff: dict[str, Any]) -> str:
    lines = [f"hubkit diff {diff['a']} {diff['b']}"]
    for side in ("a", "b"):
        lines += [f"  cannot read in {side.upper()}: {item}" for item in diff["unreadable"][side]]
    for item in diff["configs"]:
        lines.append(f"  config {item['key']}: {item['a']!r} -> {item['b']!r}")
    for key, title in (
        ("quantized_in_a_excluded_in_b", "quantized in A, BF16 in B"),
        ("excluded_in_a_quantized_in_b", "BF16 in A, quantized in B"),
    ):
        if diff["exclusions"][key]:
            lines.append(f"  {title}:")
            lines += [f"    {line}" for line in diff["exclusions"][key]]
    for key, title in (
        ("only_in_a", "tensors only in A"),
        ("only_in_b", "tensors only in B"),
        ("data_differs", "tensors whose data differ"),
    ):
        if diff["tensors"][key]:
            lines.append(f"  {title}:")
            lines += [f"    {line}" for line in diff["tensors"][key]]
    for item in diff["tensors"]["changed"]:
        lines.append(f"  {item['change']}:")
        lines += [f"    {line}" for line in item["tensors"]]
    lines += _render_files(diff["files"])
    lines.append(_verdict(diff))
    return "\n".join(map(visible, lines))


def _render_files(files: dict[str, Any]) -> list[str]:
    lines = []
    for key, title in (("only_in_a", "files only in A"), ("only_in_b", "files only in B")):
        if files[key]:
            lines.append(f"  {title}: {', '.join(files[key])}")
    for change in files["changed"]:
        lines.append(f"  {change['path']}: {change['summary']}")
        if change["kind"] == "binary" or (change["kind"] == "safetensors" and not change.get("changes")):
            lines.append(f"    {_size_and_hash(change['a'])} -> {_size_and_hash(change['b'])}")
        for item in change.get("changes", []):
            lines += [f"    {line}" for line in render_change(item)]
        lines += [f"    {line}" for line in change.get("diff", [])]
        lines += [f"    tensor data differ: {line}" for line in change.get("tensors", [])]
        if change.get("more"):
            lines.append(f"    ... and {change['more']:,} more")
    lines += [f"  not compared: {item}" for item in files["not_compared"]]
    lines += [f"  ignored: {item}" for item in files["ignored"]]
    return lines


def _size_and_hash(side: dict[str, Any]) -> str:
    sha = side["sha256"]
    return f"{side['size']:,} bytes" + (f", sha256 {sha[:12]}" if sha else "")


def _verdict(diff: dict[str, Any]) -> str:
    if diff["identical"]:
        return "IDENTICAL"
    files = diff["files"]
    found = any(files[key] for key in ("only_in_a", "only_in_b", "changed")) or any(diff["unreadable"].values())
    if files["not_compared"] and not found and not diff["configs"]:
        return f"NOT PROVED THE SAME: {len(files['not_compared'])} file(s) not compared"
    return "DIFFERENT"
