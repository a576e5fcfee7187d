"""HK1xx: the files and layout of a checkpoint folder, and what it must share with its base."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from hubkit.checkpoint.json_text import JsonProblem, decode_json
from hubkit.checkpoint.model import (
    CONFIG,
    GENERATION_CONFIG,
    INDEX,
    JSON_FILES,
    RECORD_DIR,
    TOKENIZER_CONFIG,
    Checkpoint,
    UnreadableFile,
)
from hubkit.checkpoint.modules import is_int4_side_tensor
from hubkit.checkpoint.source import FileEntry
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tiktoken.model", "vocab.json", "spiece.model")
HUB_HARD_LIMIT = 500 * 1000**3
HUB_RECOMMENDED_LIMIT = 200 * 1000**3
HUB_MAX_FILES = 100_000
HUB_MAX_FILES_PER_FOLDER = 10_000

_STRAY_DIRS = {".git", "__pycache__", ".ipynb_checkpoints", ".cache", "wandb", "runs", ".idea", ".vscode"}
_STRAY_FILE = re.compile(
    r"(optimizer|scheduler|scaler)\.(pt|bin|safetensors)|rng_state.*\.pth|training_args\.bin|trainer_state\.json"
    r"|.*\.pyc|\.DS_Store|.*\.(tmp|swp|part|incomplete|lock)|nohup\.out|core(\.\d+)?"
)


def _published(checkpoint: Checkpoint) -> Iterator[FileEntry]:
    """Files that would be uploaded (hubkit's own record folder excluded)."""
    for entry in checkpoint.files.values():
        if not entry.path.startswith(RECORD_DIR + "/"):
            yield entry


@check(
    "HK101", "missing-config", Severity.ERROR,
    what="config.json must exist at the top of the checkpoint.",
    why="Without it neither transformers nor vLLM can build the model.",
)  # fmt: skip
def missing_config(ctx: Context) -> Iterator[Issue]:
    if CONFIG not in ctx.checkpoint.files:
        yield Issue("config.json is missing; copy it from the export", CONFIG)


@check(
    "HK102", "invalid-json", Severity.ERROR,
    what="Every config file (config, quant config, generation config, tokenizer config, index) parses as a JSON object.",
    why="A config that does not parse stops the loader before a single weight is read.",
)  # fmt: skip
def invalid_json(ctx: Context) -> Iterator[Issue]:
    for name in JSON_FILES:
        doc = ctx.checkpoint.documents.get(name)
        if doc is None or doc.unreadable:  # a file that cannot be read at all: HK113
            continue
        if doc.error:
            yield Issue(f"{name} {doc.error}; fix or re-export it", name, line=doc.error_line)
        elif not isinstance(doc.data, dict):
            yield Issue(f"{name} is not a JSON object", name, line=1)


@check(
    "HK103", "missing-weights-index", Severity.ERROR,
    what="A checkpoint has safetensors weights, and a sharded one has model.safetensors.index.json.",
    why="transformers and vLLM find the shards of a sharded checkpoint only through the index.",
)  # fmt: skip
def missing_index(ctx: Context) -> Iterator[Issue]:
    shards = ctx.checkpoint.shards
    if not shards:
        yield Issue("no .safetensors files found; the export wrote no weights here")
    elif len(shards) > 1 and INDEX not in ctx.checkpoint.files:
        yield Issue(f"{len(shards)} shards but no {INDEX}; copy the index from the export", INDEX)


@check(
    "HK104", "missing-tokenizer", Severity.ERROR,
    what="tokenizer_config.json and a tokenizer vocabulary file are present.",
    why="A release that cannot be tokenized cannot be served.",
)  # fmt: skip
def missing_tokenizer(ctx: Context) -> Iterator[Issue]:
    files = ctx.checkpoint.files
    if TOKENIZER_CONFIG not in files:
        yield Issue("tokenizer_config.json is missing; copy it from the base model", TOKENIZER_CONFIG)
    if not any(name in files for name in TOKENIZER_FILES) and not any(p.endswith(".tiktoken") for p in files):
        yield Issue(f"no tokenizer vocabulary ({', '.join(TOKENIZER_FILES)}); copy it from the base model")


@check(
    "HK105", "missing-generation-config", Severity.ERROR,
    what="generation_config.json is present.",
    why="Engines take default sampling settings and stop tokens from it; without it generation can run on forever.",
)  # fmt: skip
def missing_generation_config(ctx: Context) -> Iterator[Issue]:
    if GENERATION_CONFIG not in ctx.checkpoint.files:
        yield Issue("generation_config.json is missing; copy it from the base model", GENERATION_CONFIG)


def auto_map_modules(document: Any) -> set[str]:
    """Python modules named by every ``auto_map`` in a config (local ``module.Class`` references)."""
    found: set[str] = set()
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "auto_map" and isinstance(value, dict):
                for target in value.values():
                    for item in target if isinstance(target, list) else [target]:
                        if isinstance(item, str) and "--" not in item and "." in item:
                            found.add(item.rsplit(".", 1)[0].replace(".", "/") + ".py")
            else:
                found |= auto_map_modules(value)
    elif isinstance(document, list):
        for item in document:
            found |= auto_map_modules(item)
    return found


@check(
    "HK106", "missing-remote-code", Severity.ERROR,
    what="Every Python file named by an auto_map in config.json or tokenizer_config.json is present.",
    why="trust_remote_code loads these files; a missing one fails the load.",
)  # fmt: skip
def missing_remote_code(ctx: Context) -> Iterator[Issue]:
    checkpoint = ctx.checkpoint
    needed = auto_map_modules(checkpoint.document(CONFIG)) | auto_map_modules(checkpoint.document(TOKENIZER_CONFIG))
    for path in sorted(needed - set(checkpoint.files)):
        state = "a folder, not a file" if checkpoint.is_folder(path) else "missing"
        yield Issue(f"{path} is named by an auto_map but {state}; copy it from the base model", path)


@check(
    "HK107", "missing-model-card", Severity.WARNING,
    what="README.md (the model card) is present.",
    why="The card is what users read first; it is rendered later by 'hubkit card', so this is a warning until release.",
)  # fmt: skip
def missing_readme(ctx: Context) -> Iterator[Issue]:
    if "README.md" not in ctx.checkpoint.files:
        yield Issue("README.md is missing; render it with 'hubkit card render'", "README.md")


@check(
    "HK108", "stray-file", Severity.ERROR,
    what="No caches, optimizer states, version-control folders or temporary files are in the folder.",
    why="They leak training state, waste upload time and confuse users of the repo.",
)  # fmt: skip
def stray_files(ctx: Context) -> Iterator[Issue]:
    reported: set[str] = set()
    for entry in _published(ctx.checkpoint):
        parts = entry.path.split("/")
        stray_dir = next((p for p in parts[:-1] if p in _STRAY_DIRS), None)
        if stray_dir is not None:
            folder = "/".join(parts[: parts.index(stray_dir) + 1])
            if folder not in reported:
                reported.add(folder)
                yield Issue(f"{folder}/ does not belong in a release; delete it", folder)
        elif _STRAY_FILE.fullmatch(parts[-1]):
            yield Issue(f"{entry.path} does not belong in a release; delete it", entry.path)


@check(
    "HK109", "symlink-escapes", Severity.ERROR,
    what="No symbolic link points outside the checkpoint folder.",
    why="An upload would publish whatever the link points to, which may be private.",
)  # fmt: skip
def symlink_escapes(ctx: Context) -> Iterator[Issue]:
    for entry in _published(ctx.checkpoint):
        if entry.symlink_escapes:
            yield Issue(f"{entry.path} is a symlink to a path outside the checkpoint; copy the file in", entry.path)


@check(
    "HK110", "file-over-hub-limit", Severity.ERROR,
    what=f"No file is larger than the Hub's hard limit ({HUB_HARD_LIMIT // 1000**3} GB).",
    why="The Hub refuses such a file after the upload has spent hours on it.",
)  # fmt: skip
def file_over_limit(ctx: Context) -> Iterator[Issue]:
    for entry in _published(ctx.checkpoint):
        if entry.size > HUB_HARD_LIMIT:
            yield Issue(f"{entry.path} is {entry.size / 1000**3:,.1f} GB; re-shard below 200 GB", entry.path)


@check(
    "HK111", "file-large", Severity.WARNING,
    what=f"No file is larger than the Hub's recommended size ({HUB_RECOMMENDED_LIMIT // 1000**3} GB).",
    why="Very large files upload and download unreliably; ~5 GB shards are the norm.",
)  # fmt: skip
def file_large(ctx: Context) -> Iterator[Issue]:
    for entry in _published(ctx.checkpoint):
        if HUB_RECOMMENDED_LIMIT < entry.size <= HUB_HARD_LIMIT:
            yield Issue(f"{entry.path} is {entry.size / 1000**3:,.1f} GB; consider smaller shards", entry.path)


@check(
    "HK112", "too-many-files", Severity.ERROR,
    what=f"At most {HUB_MAX_FILES:,} files in the repo and {HUB_MAX_FILES_PER_FOLDER:,} in one folder.",
    why="The Hub refuses commits beyond these limits.",
)  # fmt: skip
def too_many_files(ctx: Context) -> Iterator[Issue]:
    entries = list(_published(ctx.checkpoint))
    if len(entries) > HUB_MAX_FILES:
        yield Issue(f"{len(entries):,} files; the Hub allows {HUB_MAX_FILES:,} per repo")
    folders = Counter(e.path.rpartition("/")[0] for e in entries)
    for folder, count in folders.items():
        if count > HUB_MAX_FILES_PER_FOLDER:
            yield Issue(f"{folder or '.'} holds {count:,} files; the Hub allows {HUB_MAX_FILES_PER_FOLDER:,}", folder)


@check(
    "HK113", "unreadable-file", Severity.ERROR,
    what="Every file in the folder can be read: regular files this user may open, symlinks that lead to a "
    "file, folders that can be listed, no folder where a config or the card should be.",
    why="A file the validator cannot read is a file no check has looked at, and one the upload cannot send.",
)  # fmt: skip
def unreadable_file(ctx: Context) -> Iterator[Issue]:
    for path, problem in ctx.checkpoint.problems.items():
        if not path.startswith(RECORD_DIR + "/"):
            yield Issue(f"{path} {problem}; replace it with a readable file or delete it", path)


# ------------------------------------------------------------------------------------------ with --base

_BASE_SHARED = re.compile(
    r"[^/]+\.py|tokenizer\.json|tokenizer_config\.json|tokenizer\.model|tiktoken\.model|.*\.tiktoken|vocab\.json"
    r"|merges\.txt|special_tokens_map\.json|added_tokens\.json|chat_template\.(jinja|json)|generation_config\.json"
)


def _same_content(path: str, ours: bytes, theirs: bytes) -> bool:
    if ours == theirs:
        return True
    if path.endswith(".json"):  # formatting and the writer's version stamp do not matter
        try:
            a, b = decode_json(ours), decode_json(theirs)
        except JsonProblem:
            return False
        if isinstance(a, dict) and isinstance(b, dict):
            a.pop("transformers_version", None)
            b.pop("transformers_version", None)
        return bool(a == b)
    return False


@check(
    "HK120", "differs-from-base", Severity.ERROR, needs=["base"],
    what="Tokenizer files, chat template, remote code and generation config are identical to the base model's.",
    why="Quantization must not change how text is tokenized, templated or generated.",
)  # fmt: skip
def differs_from_base(ctx: Context) -> Iterator[Issue]:
    base = ctx.base
    assert base is not None
    for path in sorted(base.files):
        if not _BASE_SHARED.fullmatch(path) or path not in ctx.checkpoint.files:
            continue
        if ctx.checkpoint.files[path].problem is not None:
            continue  # HK113 reports it
        ours = ctx.checkpoint.read_file(path)
        try:
            theirs = base.read_file(path)
        except UnreadableFile as unreadable:
            yield Issue(f"the base's {path} {unreadable.reason}; it could not be compared", path)
            continue
        if not _same_content(path, ours, theirs):
            digest = hashlib.sha256(ours).hexdigest()[:12]
            yield Issue(f"{path} differs from the base's (sha256 {digest}…); copy the base's file", path)


@check(
    "HK121", "missing-from-base", Severity.ERROR, needs=["base"],
    what="Every tokenizer, chat template, remote-code and generation file of the base is in the export.",
    why="The export step copies these; one left behind breaks tokenization or loading.",
)  # fmt: skip
def missing_from_base(ctx: Context) -> Iterator[Issue]:
    base = ctx.base
    assert base is not None
    for path in sorted(base.files):
        if _BASE_SHARED.fullmatch(path) and path not in ctx.checkpoint.files:
            yield Issue(f"{path} is in the base but not in the export; copy it", path)


@check(
    "HK122", "base-weight-unaccounted", Severity.ERROR, needs=["base"], requires=["tensors"],
    what="Every weight of the base is in the export (INT4 weight_packed as a weight, plain tensors by name).",
    why="A weight the exporter dropped (tied-weight dedup, a renamed prefix) loads as garbage or fails the load.",
)  # fmt: skip
def base_weight_unaccounted(ctx: Context) -> Iterator[Issue]:
    base = ctx.base
    assert base is not None
    ours = ctx.checkpoint.tensors
    missing: list[str] = []
    for name in base.tensors:
        if is_int4_side_tensor(name, base.tensors):
            continue
        wanted = name[: -len("_packed")] if name.endswith(".weight_packed") else name
        if wanted not in ours:
            missing.append(wanted)
    if missing:
        from hubkit.validate.exclusions import group_names

        shown = "; ".join(group_names([n.rpartition(".")[0] for n in missing], limit=6))
        yield Issue(f"{len(missing):,} base weights are missing from the export: {shown}")


@check(
    "HK123", "base-tensor-changed", Severity.ERROR, needs=["base"],
    what="Tensors kept unquantized have the base's shape and dtype.",
    why="A reshaped or recast BF16 tensor means the export mangled a module it should have copied.",
)  # fmt: skip
def base_tensor_changed(ctx: Context) -> Iterator[Issue]:
    base = ctx.base
    assert base is not None
    for name, theirs in base.tensors.items():
        ours = ctx.checkpoint.tensors.get(name)
        if ours is None or ours.dtype == "U8" or theirs.dtype not in ("BF16", "F16", "F32"):
            continue
        if is_int4_side_tensor(name, base.tensors):
            continue
        if ours.dims != theirs.dims or ours.dtype != theirs.dtype:
            yield Issue(
                f"{ours.dtype} {list(ours.dims)} here but {theirs.dtype} {list(theirs.dims)} in the base",
                ctx.checkpoint.shard_of[name],
                name,
            )
