"""Which base a quantization read, recorded in its provenance and shown on the card; light to import.

A Hub base: the commit its download resolved (the snapshot folder's name). A local folder: the commit of a git
checkout (read from ``.git``, no git command runs in the user's folder) or of a Hub cache snapshot, else no commit.
Always a fingerprint: SHA-256 over the config, tokenizer and code files' bytes and every weight file's name and
size (weights are not read: a base may be terabytes).
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError
from hubkit.reads import read_regular
from hubkit.records import RECORD_DIR
from hubkit.sizes import MiB

SHA = re.compile(r"^[0-9a-f]{40}$")
#: Files identified by name and size only.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".ckpt")
#: Files larger than this are identified by name and size only.
HASHED_LIMIT = 64 * MiB


def base_revision(ref: str, folder: Path) -> dict[str, Any]:
    """What identifies the base ``ref`` (as given) read from ``folder``: requested revision, commit, fingerprint."""
    requested = (ref.removeprefix("hf://").partition("@")[2] or None) if ref.startswith("hf://") else None
    commit, source = _hub_snapshot(folder), "hub"
    if commit is None:
        commit, source = _git_head(folder), "git"
    if commit is None:
        source = "folder"
    return {"requested": requested, "commit": commit, "source": source, "fingerprint": fingerprint(folder)}


def fingerprint(folder: Path) -> str:
    digest = hashlib.sha256()
    for item in sorted(folder.rglob("*")):
        relative = item.relative_to(folder).as_posix()
        if relative.split("/", 1)[0] in (".git", RECORD_DIR, ".cache") or not item.is_file():
            continue
        size = item.stat().st_size
        digest.update(f"{relative}\0{size}\0".encode())
        if not item.name.endswith(WEIGHT_SUFFIXES) and size <= HASHED_LIMIT:
            digest.update(hashlib.sha256(read_regular(item, limit=HASHED_LIMIT, what="base file")).digest())
    return f"sha256:{digest.hexdigest()}"


def _hub_snapshot(folder: Path) -> str | None:
    """The commit of a Hub cache snapshot folder (``.../snapshots/<commit>``), as ``snapshot_download`` returns."""
    resolved = folder.resolve()
    return resolved.name if resolved.parent.name == "snapshots" and SHA.match(resolved.name) else None


def _git_head(folder: Path) -> str | None:
    """The commit checked out in ``folder``, when ``folder`` is the top of a git checkout."""
    git = folder / ".git"
    try:
        head = _small_text(git / "HEAD")
        if not head.startswith("ref: "):
            return head if SHA.match(head) else None
        ref = head.removeprefix("ref: ")
        if (git / ref).is_file():
            commit = _small_text(git / ref)
            return commit if SHA.match(commit) else None
        for line in _small_text(git / "packed-refs").splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and SHA.match(sha):
                return sha
    except (OSError, ValueError, HubkitError):
        return None
    return None


def _small_text(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(path)
    return read_regular(path, limit=MiB, what="git file").decode("ascii").strip()
