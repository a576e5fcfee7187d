"""HK8xx: nothing executable or secret rides along with the weights."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator

from hubkit.checkpoint.loader import MAX_JSON_BYTES
from hubkit.checkpoint.model import INDEX, RECORD_DIR, UnreadableFile
from hubkit.checkpoint.safetensors_header import ShardHeader
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check
from hubkit.validate.rules.safetensors import shard_columns
from hubkit.validate.secrets import (
    Secret,
    StreamScan,
    header_secrets,
    name_secrets,
    scan_bytes,
    scan_repetitive,
    uncovered,
)

PICKLE_EXTENSIONS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".dill")
SCAN_CHUNK = 8 * 1024 * 1024


def _candidates(ctx: Context) -> Iterator[str]:
    for path, entry in ctx.checkpoint.files.items():
        if entry.problem is not None:
            continue  # never opened: HK113 reports it
        if not path.endswith(".safetensors") and not path.startswith(RECORD_DIR + "/") and not entry.is_symlink:
            yield path


def _looks_like_pickle(head: bytes) -> bool:
    return (
        (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)  # pickle protocol 2-5
        or head.startswith(b"PK\x03\x04")  # torch.save zip archive
        or head.startswith(b"\x93NUMPY")  # numpy arrays may hold pickled objects
    )


def pickle_files(ctx: Context) -> list[str]:
    def compute() -> list[str]:
        found = []
        for path in _candidates(ctx):
            if path.lower().endswith(PICKLE_EXTENSIONS):
                found.append(path)
            elif ctx.checkpoint.files[path].size >= 2:
                with contextlib.suppress(OSError):
                    if _looks_like_pickle(ctx.checkpoint.source.read_range(path, 0, 8)):
                        found.append(path)
        return found

    return ctx.memo("pickle_files", compute)


@check(
    "HK801", "pickle-file", Severity.WARNING,
    what="No pickle-capable file (by extension or magic bytes) is part of the release.",
    why="Loading a pickle can run arbitrary code; a safetensors release has no need for one.",
)  # fmt: skip
def pickle_file(ctx: Context) -> Iterator[Issue]:
    for path in pickle_files(ctx):
        yield Issue(f"{path} can hold a pickle; ship weights as safetensors and delete it", path)


@check(
    "HK802", "unsafe-pickle", Severity.ERROR,
    what="Pickle-capable files are scanned with picklescan; any dangerous or suspicious import is reported.",
    why="Such a file runs code on the machine of everyone who loads it.",
)  # fmt: skip
def unsafe_pickle(ctx: Context) -> Iterator[Issue]:
    if not pickle_files(ctx):
        return
    from picklescan.scanner import SafetyLevel, scan_file_path

    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    for path in pickle_files(ctx):
        local = ctx.checkpoint.source.local_path(path)
        if local is None:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            result = scan_file_path(str(local))
        risky = sorted(
            {
                f"{g.module}.{g.name}"
                for g in result.globals
                if g.safety in (SafetyLevel.Dangerous, SafetyLevel.Suspicious)
            }
        )
        if risky:
            yield Issue(f"imports {', '.join(risky[:5])}; do not publish this file", path)
        elif result.scan_err:
            yield Issue("picklescan could not parse this pickle-capable file; delete it or convert it", path)


def _scan_source(ctx: Context, path: str, ranges: list[tuple[int, int]]) -> list[Secret]:
    """The secrets in ``ranges`` of ``path``, read a chunk at a time (memory stays bounded for any size)."""
    scan = StreamScan()
    source = ctx.checkpoint.source
    for begin, end in ranges:
        for offset in range(begin, end, SCAN_CHUNK):
            try:
                chunk = source.read_range(path, offset, min(SCAN_CHUNK, end - offset))
            except OSError as exc:
                raise UnreadableFile(path, f"cannot be read: {exc.strerror or exc}") from None
            if not chunk:
                break
            scan.feed(chunk, offset)
    return scan.finish()


def _shard_secrets(ctx: Context, shard: ShardHeader) -> list[Secret]:
    """A shard with a valid header: its header, and every byte of its data section no tensor covers."""
    columns = next(c for c in shard_columns(ctx) if c.shard is shard)  # the table other checks read too
    found = header_secrets(shard, {kind[0] for kind in columns.kinds})
    if not shard.exact:  # the parsed header may lack strings of the file (a repeated key, an unknown field)
        raw = _scan_source(ctx, shard.file, [(0, shard.data_start)])
        found = raw + [s for s in found if (s.kind, s.shown) not in {(r.kind, r.shown) for r in raw}]
    begins, ends = columns.begins, columns.ends
    if begins and begins[0] == 0 and begins[1:] == ends[:-1]:
        gaps = [(ends[-1], shard.data_length)] if ends[-1] < shard.data_length else []  # as writers lay them out
    else:
        gaps = uncovered(zip(begins, ends, strict=True), shard.data_length)
    start = shard.data_start
    return found + _scan_source(ctx, shard.file, [(start + b, start + e) for b, e in gaps])


def _strings(value: object) -> int:
    """How many strings (keys included) a parsed JSON value holds."""
    if isinstance(value, str):
        return 1
    if isinstance(value, dict):
        return len(value) + sum(map(_strings, value.values()))
    if isinstance(value, list):
        return sum(map(_strings, value))
    return 0


def _index_secrets(ctx: Context, path: str) -> list[Secret]:
    """The weight index (tens of MB, fetched once when remote). When the parsed document provably holds every
    string of the file (as many quotes as its strings need, no escapes), only the strings that are not tensor
    names of the headers (scanned there) are scanned, and the file read again only to locate a finding; else
    the file's distinct lines are (see ``scan_repetitive``)."""
    document = ctx.checkpoint.documents.get(INDEX)
    data = document.data if document is not None else None
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if document is None or not isinstance(data, dict) or not isinstance(weight_map, dict) or document.escaped:
        return scan_repetitive(ctx.checkpoint.read_file(path))
    rest = {key: value for key, value in data.items() if key != "weight_map"}
    if document.quotes != 2 * (1 + 2 * len(weight_map) + _strings(rest)):
        return scan_repetitive(ctx.checkpoint.read_file(path))
    names = weight_map.keys() - ctx.checkpoint.tensors.keys()
    strings = [json.dumps(rest, ensure_ascii=False), *names, *set(map(str, weight_map.values()))]
    if scan_bytes("\n".join(strings).encode("utf-8", errors="replace")):
        return scan_bytes(ctx.checkpoint.read_file(path))
    return []


def file_secrets(ctx: Context, path: str) -> list[Secret]:
    """The secrets in ``path``: all its bytes, whatever its name, but the tensor data of a valid safetensors file."""
    entry = ctx.checkpoint.files[path]
    if entry.problem is not None:
        raise UnreadableFile(path, entry.problem)
    shard = ctx.checkpoint.shards.get(path)
    if shard is not None and shard.fatal is None:
        return _shard_secrets(ctx, shard)
    if path == INDEX and entry.size <= MAX_JSON_BYTES:
        return _index_secrets(ctx, path)
    return _scan_source(ctx, path, [(0, entry.size)])


def scanned_files(ctx: Context) -> Iterator[str]:
    """Every file that would be published and can be read: symlinks that leave the folder or lead into hubkit's
    record folder are refused (HK109, HK804), never followed."""
    for path, entry in ctx.checkpoint.files.items():
        if path.startswith(RECORD_DIR + "/") or entry.symlink_escapes or entry.links_into(RECORD_DIR) or entry.is_dir:
            continue
        yield path


@check(
    "HK803", "secret-in-file", Severity.ERROR,
    what="No file of any name holds an access token or private key (detect-secrets, plus Hugging Face token "
    "patterns); only tensor data that a valid safetensors header declares is not read.",
    why="A token in a public repo is leaked the moment it is pushed; revoke it and remove the file's copy.",
)  # fmt: skip
def secret_in_file(ctx: Context) -> Iterator[Issue]:
    for name, secret in name_secrets(p for p in ctx.checkpoint.files if not p.startswith(RECORD_DIR + "/")):
        yield Issue(secret.describe(), name)
    for path in scanned_files(ctx):
        if ctx.checkpoint.files[path].problem is not None:
            continue  # reported once, by HK113
        try:
            found = file_secrets(ctx, path)
        except UnreadableFile as unreadable:
            yield Issue(f"{path} {unreadable.reason}; it was not scanned for secrets", path)
            continue
        for secret in found:
            yield Issue(secret.describe(), path)


@check(
    "HK804", "symlink-into-records", Severity.ERROR,
    what=f"No symbolic link points into hubkit's record folder ({RECORD_DIR}/).",
    why="hubkit never publishes its records; a link would upload them (and whatever was written there) anyway.",
)  # fmt: skip
def symlink_into_records(ctx: Context) -> Iterator[Issue]:
    for path, entry in ctx.checkpoint.files.items():
        if not path.startswith(RECORD_DIR + "/") and entry.links_into(RECORD_DIR):
            yield Issue(
                f"{path} is a symlink into {RECORD_DIR}/; delete it (hubkit's records are never published)", path
            )
