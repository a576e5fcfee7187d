"""A Hub-compatible HTTP server on 127.0.0.1, for tests and for rehearsing a release offline.

``hubkit hub serve`` runs it from the command line, ``endpoint = "local"`` for one release, and
``hubkit.testing.HubServer`` in a test.

It speaks the subset of the Hub API that huggingface_hub uses on the classic LFS path: repos, preupload, LFS
batch (basic and multipart), NDJSON commits (with PRs and parent-commit checks), repo info, paginated trees,
paths-info, refs, branches, tags, pull requests, resolve with Range, validate-yaml and whoami. It answers as a
Hub without Xet storage does: no Xet tokens (404 on the token routes), ``xetEnabled: false``, no Xet headers on
downloads, LFS transfers only. It stores everything under one folder, so it survives a restart. Faults can be
injected for tests.

It cannot be fooled into writing or reading outside its folder, nor into storing bytes it did not check: repo
ids, revisions and paths follow the Hub's rules and every store path is proven inside the store; every write
needs the random token of this run (``HubServer.token``), and an LFS upload the unguessable address the
authenticated batch call handed out; an object is stored only once its sha256 and size are right (streamed to a
temporary file, then renamed), and is served only whole; a merge never moves a branch that moved since the pull
request was opened; a malformed request gets a 4xx answer in the Hub's error shape, never a dropped connection.

Written by hand because nothing lightweight exists that accepts uploads (mirrors only serve downloads and
full reimplementations need a database and object store); stdlib only, so it starts in milliseconds.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import parse_qs, unquote, urlsplit

from hubkit.errors import HubkitError
from hubkit.hub_ids import REPO_TYPES, is_repo_id, is_revision
from hubkit.reads import read_regular
from hubkit.records import ensure_folder, replacing, write_json
from hubkit.sizes import MiB

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".model", ".tiktoken", ".gguf", ".h5", ".msgpack")
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
TREE_PAGE = 50
MAX_BODY = 128 * MiB  # an API request's body (JSON, an NDJSON commit with its inline files)
MAX_OBJECT = 1024**4  # the largest LFS object an upload may announce
MAX_RECORD = 256 * MiB  # the largest store record (repo.json, a commit) the server reads back
DRAIN_LIMIT = 256 * MiB  # an early answer reads this much of an unread body at most, then closes the connection
MAX_TICKETS = 100_000  # upload addresses handed out and not used yet (the oldest are forgotten first)
SOCKET_TIMEOUT_S = 120.0  # a client that sends nothing for this long is disconnected
PIECE = MiB
KINDS = {kind: f"{kind}s" for kind in REPO_TYPES}
_SHA1 = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TICKET = re.compile(r"[A-Za-z0-9_-]{32}")
_PATH_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")
logger = logging.getLogger(__name__)


def _now() -> str:
    """The Hub's timestamp format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class HubError(Exception):
    """An answer in the Hub's error shape: the status, ``{"error": message}``, ``X-Error-Code`` and headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}
        self.headers = headers or {}


# ------------------------------------------------------------------------------------------------ the Hub's rules


def check_repo_id(repo: str) -> str:
    """ORG/NAME by the Hub's rules (huggingface_hub's ``validate_repo_id``, the namespace required, ASCII only)."""
    if not is_repo_id(repo):
        raise HubError(
            400,
            f"Invalid repo id {repo[:200]!r}: ORG/NAME, each of letters, digits, '-', '_' and '.' (no '--' or '..', "
            "not starting or ending with '-' or '.', at most 96 characters)",
        )
    return repo


def check_kind(kind: Any) -> str:
    """The folder of a repo type: ``model``, ``dataset`` or ``space``."""
    if isinstance(kind, str) and kind in KINDS:
        return KINDS[kind]
    raise HubError(400, f"Invalid repo type {str(kind)[:50]!r}: model, dataset or space")


def check_revision(revision: Any) -> str:
    """A branch, tag, ``refs/pr/N`` or commit id, by git's rules for ref names."""
    if not is_revision(revision):
        raise HubError(400, f"Invalid rev id: {str(revision)[:200]!r}", "RevisionNotFound")
    return revision


def check_path(path: Any) -> str:
    """A file path in a repo: relative, no empty, ``.`` or ``..`` segment, no NUL or control character."""
    if (
        not isinstance(path, str)
        or not 0 < len(path) <= 4096
        or _PATH_FORBIDDEN.search(path)
        or path.startswith("/")
        or any(segment in ("", ".", "..") for segment in path.split("/"))
    ):
        raise HubError(400, f"Invalid path in repo: {str(path)[:200]!r}")
    return path


def _get(data: dict[str, Any], key: str, kind: type, default: Any = None) -> Any:
    """``data[key]`` when it has the type the Hub expects, ``default`` when it is absent or null; else a 400."""
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise HubError(400, f"Invalid {key!r} in the request body: expected {kind.__name__}")
    return value


def _json(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is ``{}``); anything else is a 400."""
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise HubError(400, "Malformed JSON in the request body") from None
    if not isinstance(data, dict):
        raise HubError(400, "The request body must be a JSON object")
    return data


def _size(value: Any, what: str, limit: int = MAX_OBJECT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
        raise HubError(400, f"Invalid {what}: an integer from 0 to {limit}")
    return value


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The (first, last) byte a ``Range`` header asks for; None without one; a 416 unless it is one valid range."""
    if header is None:
        return None
    found = re.fullmatch(r"bytes=([0-9]{0,19})-([0-9]{0,19})", header.strip())
    first_text, last_text = (found[1], found[2]) if found else ("", "")
    if first_text:
        first, last = int(first_text), int(last_text) if last_text else size - 1
        valid = first < size and (not last_text or int(last_text) >= first)
    else:  # the last N bytes
        first, last = max(size - int(last_text or 0), 0), size - 1
        valid = bool(last_text) and int(last_text) > 0 and size > 0
    if not found or not valid:
        raise HubError(
            416,
            f"Range Not Satisfiable: {header[:100]!r} of {size} bytes",
            headers={"Content-Range": f"bytes */{size}"},
        )
    return first, min(last, size - 1)


# ------------------------------------------------------------------------------------------------ faults and store


@dataclass
class Faults:
    """Faults to inject, each consumed when it fires."""

    drop_upload_after_bytes: int | None = None  # cut the connection mid-PUT (``drop_uploads`` times)
    drop_uploads: int = 1
    fail_uploads: int = 0  # answer this many LFS PUTs with ``fail_upload_status``
    fail_upload_status: int = 408
    upload_delay_s: float = 0.0  # wait this long before reading each LFS PUT's body
    too_many_requests: int = 0  # answer this many requests with 429 + Retry-After
    retry_after_s: int = 1
    fail_commit_after_apply: int = 0  # apply this many commits, then answer 500 as if the response was lost
    fail_commits: int = 0  # answer this many commits with ``fail_commit_status`` without applying them
    fail_commit_status: int = 503
    disk_full_after_bytes: int | None = None  # the disk fills after the store wrote this many more object bytes
    on_request: Callable[[str, str], None] | None = None  # called with (method, path) as each request arrives
    after_commit: Callable[[int], None] | None = None  # called with the count of commits applied, before answering
    commits_applied: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) log


class HubStore:
    """Repos, commits and objects in one folder; no path it touches leads outside it."""

    def __init__(self, root: Path, faults: Faults | None = None) -> None:
        self.root = Path(os.path.abspath(root))  # the same folder whatever the working directory becomes
        ensure_folder(root / "objects")
        self.base = root.resolve()
        self.faults = faults or Faults()
        self.lock = threading.RLock()

    def inside(self, path: Path) -> Path:
        """``path``, proven inside the store (links followed); a 400 otherwise."""
        if not path.resolve().is_relative_to(self.base):
            raise HubError(400, "The request names a path outside the Hub's store")
        return path

    def _repo_dir(self, kind: str, repo: str) -> Path:
        if kind not in KINDS.values():
            raise HubError(400, f"Invalid repo type {kind[:50]!r}: model, dataset or space")
        return self.inside(self.root / "repos" / kind / check_repo_id(repo))

    def exists(self, kind: str, repo: str) -> bool:
        return (self._repo_dir(kind, repo) / "repo.json").is_file()

    def _read_json(self, path: Path) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(read_regular(self.inside(path), limit=MAX_RECORD, follow_links=False))
        except (HubkitError, ValueError) as exc:
            raise HubError(500, "A record of the Hub's store cannot be read") from exc
        return data

    def meta(self, kind: str, repo: str) -> dict[str, Any]:
        return self._read_json(self._repo_dir(kind, repo) / "repo.json")

    def save_meta(self, kind: str, repo: str, meta: dict[str, Any]) -> None:
        write_json(self._repo_dir(kind, repo) / "repo.json", meta, indent=1)

    def create(self, kind: str, repo: str, private: bool) -> None:
        ensure_folder(self._repo_dir(kind, repo) / "commits")
        blob = self.put_blob(GITATTRIBUTES)
        first = self.write_commit(
            kind,
            repo,
            None,
            {".gitattributes": {"size": len(GITATTRIBUTES), "blob": blob, "lfs": None}},
            "initial commit",
        )
        self.save_meta(kind, repo, {"private": private, "branches": {"main": first}, "tags": {}, "prs": []})

    def delete(self, kind: str, repo: str) -> None:
        folder = self._repo_dir(kind, repo)
        if folder.is_symlink() or not folder.is_dir():
            raise HubError(500, "The repo's records are not a folder of the Hub's store")
        shutil.rmtree(folder)

    # ------------------------------------------------------------------------------------------ objects

    def blob_path(self, sha1: str) -> Path:
        if not _SHA1.fullmatch(sha1):
            raise HubError(400, f"Invalid blob id {sha1[:80]!r}")
        return self.inside(self.root / "objects" / f"blob-{sha1}")

    def object_path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise HubError(400, f"Invalid LFS oid {sha256[:80]!r}: 64 lowercase hex digits")
        return self.inside(self.root / "objects" / f"lfs-{sha256}")

    def parts_folder(self, ticket: str) -> Path:
        if not _TICKET.fullmatch(ticket):
            raise HubError(400, "Invalid upload address")
        return self.inside(self.root / "objects" / f"parts-{ticket}")

    @staticmethod
    def _holds(path: Path, size: int) -> bool:
        """A regular file of ``size`` bytes is at ``path`` (a link or a short file is not)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return False
        return stat.S_ISREG(info.st_mode) and info.st_size == size

    def has_object(self, sha256: str, size: int) -> bool:
        return self._holds(self.object_path(sha256), size)

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.blob_path(oid)
        if not self._holds(path, len(data)):
            self.receive(path, [data], len(data))
        return oid

    def receive(self, target: Path, pieces: Iterable[bytes], size: int, sha256: str | None = None) -> str:
        """Write ``pieces`` as ``target`` only if they are ``size`` bytes (and hash to ``sha256``): a temporary
        file renamed at the end, so a short, failed or wrong write leaves nothing. The md5 of the bytes."""
        digest, md5, written = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
        with replacing(target) as stream:
            for piece in pieces:
                written += len(piece)
                if written > size:
                    raise HubError(400, f"The upload is longer than the {size} bytes announced")
                self._write(stream, piece)
                digest.update(piece)
                md5.update(piece)
            if written != size:
                raise HubError(400, f"The upload ended after {written} of the {size} bytes announced")
            if sha256 is not None and digest.hexdigest() != sha256:
                raise HubError(400, f"sha256 mismatch: the bytes uploaded hash to {digest.hexdigest()}, not {sha256}")
        return md5.hexdigest()

    def _write(self, stream: IO[bytes], piece: bytes) -> None:
        budget = self.faults.disk_full_after_bytes
        if budget is not None:
            if len(piece) > budget:
                self.faults.disk_full_after_bytes = None
                stream.write(piece[:budget])
                raise OSError(errno.ENOSPC, "No space left on device")
            self.faults.disk_full_after_bytes = budget - len(piece)
        stream.write(piece)

    def join_parts(self, sha256: str, parts: list[Path], size: int) -> None:
        """The object ``sha256`` from its uploaded parts, in order, checked like any upload."""

        def pieces() -> Iterator[bytes]:
            for part in parts:
                with os.fdopen(
                    os.open(part, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)), "rb"
                ) as handle:
                    while piece := handle.read(PIECE):
                        yield piece

        self.receive(self.object_path(sha256), pieces(), size, sha256)

    def write_commit(
        self, kind: str, repo: str, parent: str | None, files: dict[str, Any], summary: str, description: str = ""
    ) -> str:
        body = {"parent": parent, "files": files, "summary": summary, "date": _now()}
        if description:
            body["description"] = description
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
        write_json(self._repo_dir(kind, repo) / "commits" / f"{sha}.json", body, indent=None)
        return sha

    def commit(self, kind: str, repo: str, sha: str) -> dict[str, Any]:
        if not _SHA1.fullmatch(sha):
            raise HubError(404, f"Invalid rev id: {sha[:80]}", "RevisionNotFound")
        return self._read_json(self._repo_dir(kind, repo) / "commits" / f"{sha}.json")

    def is_ancestor(self, kind: str, repo: str, ancestor: str, head: str) -> bool:
        """``ancestor`` is ``head`` or one of its parents (so moving a branch from it to ``head`` loses nothing)."""
        seen: set[str] = set()
        current: str | None = head
        while current is not None and current not in seen:
            if current == ancestor:
                return True
            seen.add(current)
            current = self.commit(kind, repo, current)["parent"]
        return False

    def resolve(self, kind: str, repo: str, revision: str) -> str | None:
        meta = self.meta(kind, repo)
        if revision in meta["branches"]:
            return str(meta["branches"][revision])
        if revision in meta["tags"]:
            return str(meta["tags"][revision])
        found = re.fullmatch(r"refs/pr/([0-9]{1,9})", revision)
        if found:
            for pr in meta["prs"]:
                if pr["num"] == int(found[1]):
                    return str(pr["head"])
        if _SHA1.fullmatch(revision) and (self._repo_dir(kind, repo) / "commits" / f"{revision}.json").is_file():
            return revision
        return None

    @contextlib.contextmanager
    def opened(self, entry: dict[str, Any]) -> Iterator[IO[bytes]]:
        """The stored bytes of a file entry, refused (500) unless they are whole: never a truncated file."""
        path = self.object_path(entry["lfs"]) if entry["lfs"] else self.blob_path(entry["blob"])
        try:
            handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise HubError(500, "The stored object of this file is missing") from exc
        with os.fdopen(handle, "rb") as stream:
            info = os.fstat(handle)
            if not stat.S_ISREG(info.st_mode) or info.st_size != entry["size"]:
                raise HubError(
                    500, f"The stored object of this file is damaged ({info.st_size} of {entry['size']} bytes)"
                )
            yield stream

    def file_bytes(self, entry: dict[str, Any]) -> bytes:
        with self.opened(entry) as stream:
            return stream.read()

    def import_folder(self, kind: str, repo: str, folder: Path) -> str:
        """Serve a local folder as a repo without uploading it: files are hard-linked into the object store.

        For rehearsals and benchmarks over huge sparse skeletons: the LFS ids are derived from path and size,
        not from the (hole-filled) content, so this never reads the data.
        """
        with self.lock:
            if not self.exists(kind, repo):
                self.create(kind, repo, private=False)
            meta = self.meta(kind, repo)
            files = dict(self.commit(kind, repo, meta["branches"]["main"])["files"])
            for item in sorted(folder.rglob("*")):
                if not item.is_file():
                    continue
                relative = check_path(item.relative_to(folder).as_posix())
                size = item.stat().st_size
                if relative.endswith(LFS_SUFFIXES):
                    oid = hashlib.sha256(f"{repo}/{relative}:{size}".encode()).hexdigest()
                    target = self.object_path(oid)
                    if not target.exists():
                        target.hardlink_to(item)
                    files[relative] = {"size": size, "blob": "0" * 40, "lfs": oid}
                else:
                    files[relative] = {"size": size, "blob": self.put_blob(item.read_bytes()), "lfs": None}
            meta["branches"]["main"] = self.write_commit(kind, repo, meta["branches"]["main"], files, "import")
            self.save_meta(kind, repo, meta)
            return str(meta["branches"]["main"])


@dataclass
class Upload:
    """An LFS upload an authenticated batch call announced: its address holds an unguessable ticket."""

    oid: str
    size: int
    parts: int = 0  # multipart: how many parts, each ``chunk`` bytes (the last the rest)
    chunk: int = 0
    etags: dict[int, str] = field(default_factory=dict)  # part number -> md5 of the part as stored


#: The license ids the Hub accepts in a card's ``license`` (it also takes a list of them), in the Hub's order.
#: Source: the Hub's own answer to ``POST /api/validate-yaml`` for an unknown id ('"license" must be one of
#: [...]'), as quoted in huggingface/huggingface_hub issue #4218 (May 2026); the list is documented at
#: https://huggingface.co/docs/hub/repositories-licenses.
HUB_LICENSES = (
    "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m", "bigscience-bloom-rail-1.0",
    "bigcode-openrail-m", "afl-3.0", "artistic-2.0", "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause",
    "bsd-3-clause-clear", "c-uda", "cc", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0",
    "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
    "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0", "cc-by-nc-sa-4.0",
    "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0", "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0",
    "etalab-2.0", "eupl-1.1", "eupl-1.2", "agpl-3.0", "gfdl", "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1",
    "lgpl-3.0", "isc", "h-research", "intel-research", "lppl-1.3c", "ms-pl", "apple-ascl", "apple-amlr", "mpl-2.0",
    "odc-by", "odbl", "openmdw-1.0", "openrail++", "osl-3.0", "postgresql", "ofl-1.1", "ncsa", "unlicense", "zlib",
    "pddl", "lgpl-lr", "deepfloyd-if-license", "fair-noncommercial-research-license", "llama2", "llama3",
    "llama3.1", "llama3.2", "llama3.3", "llama4", "grok2-community", "gemma", "unknown", "other",
)  # fmt: skip

REPO = r"(?P<kind>models|datasets|spaces)/(?P<repo>[^/]+/[^/]+)"
PREFIXED = r"/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)"
UPLOAD = r"(?P<oid>[0-9a-f]{64})/(?P<ticket>[A-Za-z0-9_-]{32})"
#: (method, path, handler, who may call it): "read" is open (a private repo needs the token), "write" needs the
#: run's token, "ticket" the unguessable address an authenticated LFS batch call handed out.
ROUTES: list[tuple[str, re.Pattern[str], str, str]] = [
    (method, re.compile(pattern), name, access)
    for method, pattern, name, access in [
        ("GET", r"/api/whoami-v2", "whoami", "write"),
        ("POST", r"/api/repos/create", "create_repo", "write"),
        ("POST", r"/api/validate-yaml", "validate_yaml", "read"),
        ("POST", rf"/api/{REPO}/preupload/(?P<rev>[^/]+)", "preupload", "write"),
        ("POST", rf"/api/{REPO}/commit/(?P<rev>[^/]+)", "commit", "write"),
        ("GET", rf"/api/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree", "read"),
        ("POST", rf"/api/{REPO}/paths-info/(?P<rev>[^/]+)", "paths_info", "read"),
        ("GET", rf"/api/{REPO}/refs", "refs", "read"),
        ("GET", rf"/api/{REPO}/commits/(?P<rev>[^/]+)", "commits", "read"),
        ("DELETE", r"/api/repos/delete", "delete_repo", "write"),
        ("DELETE", rf"/api/{REPO}/branch/(?P<name>[^/]+)", "delete_branch", "write"),
        ("DELETE", rf"/api/{REPO}/tag/(?P<name>[^/]+)", "delete_tag", "write"),
        ("POST", rf"/api/{REPO}/branch/(?P<name>[^/]+)", "create_branch", "write"),
        ("POST", rf"/api/{REPO}/tag/(?P<rev>[^/]+)", "create_tag", "write"),
        ("GET", rf"/api/{REPO}/discussions", "list_discussions", "read"),
        ("POST", rf"/api/{REPO}/discussions", "create_discussion", "write"),
        ("GET", rf"/api/{REPO}/discussions/(?P<num>[0-9]{{1,9}})", "get_discussion", "read"),
        ("POST", rf"/api/{REPO}/discussions/(?P<num>[0-9]{{1,9}})/merge", "merge", "write"),
        ("POST", rf"/api/{REPO}/discussions/(?P<num>[0-9]{{1,9}})/status", "discussion_status", "write"),
        ("GET", rf"/api/{REPO}/xet-(?P<access>read|write)-token/(?P<rev>[^/]+)", "xet_token", "read"),
        ("GET", rf"/api/{REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info", "read"),
        ("POST", rf"{PREFIXED}\.git/info/lfs/objects/batch", "lfs_batch", "write"),
        ("PUT", rf"/lfs-upload/{UPLOAD}", "lfs_upload", "ticket"),
        ("PUT", rf"/lfs-part/{UPLOAD}/(?P<part>[0-9]{{1,6}})", "lfs_part", "ticket"),
        ("POST", rf"/lfs-complete/{UPLOAD}", "lfs_complete", "ticket"),
        ("HEAD", rf"{PREFIXED}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve", "read"),
        ("GET", rf"{PREFIXED}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve", "read"),
    ]
]
STREAMED = ("lfs_upload", "lfs_part")  # their bodies go to disk as they arrive, never whole into memory
COMMIT_KEYS = ("header", "file", "lfsFile", "deletedFile", "deletedFolder")


class HubServer:
    """The server; start() returns the endpoint URL, stop() shuts it down.

    Every write needs ``token``, random for each server (``Authorization: Bearer <token>``); it belongs to
    ``user``. Reads are open, except of private repos.
    """

    def __init__(self, root: Path, user: str = "tester", port: int = 0, multipart_chunk: int | None = None) -> None:
        self.faults = Faults()
        self.store = HubStore(root, self.faults)
        self.multipart_chunk = multipart_chunk  # objects larger than this go the multipart way
        self.user = user
        self.token = f"hf_{secrets.token_urlsafe(32)}"
        self.uploads: dict[str, Upload] = {}  # ticket -> the upload it admits
        self.uploads_lock = threading.Lock()
        self.bytes_sent = 0
        handler = type("Handler", (_Handler,), {"hub": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        self.thread.start()
        return self.endpoint

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HubServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def announce(self, upload: Upload) -> str:
        """A new unguessable ticket for ``upload`` (the oldest are forgotten past ``MAX_TICKETS``)."""
        ticket = secrets.token_urlsafe(24)
        with self.uploads_lock:
            self.uploads[ticket] = upload
            while len(self.uploads) > MAX_TICKETS:
                self.uploads.pop(next(iter(self.uploads)))
        return ticket


def _store_fault(exc: BaseException) -> HubError:
    """A write the store could not make (a full disk, a refused target) as the Hub answers it: nothing stored."""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return HubError(507, "Insufficient Storage: the Hub's disk is full; nothing was stored")
    return HubError(500, "Internal Error: the Hub could not store this; nothing was stored")


def _header_text(text: str) -> str:
    """``text`` as a safe header value: ASCII, no control characters (no header can be injected)."""
    return re.sub(r"[\x00-\x1f\x7f]", " ", text.encode("ascii", "backslashreplace").decode())[:1000]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S
    _left: int | None = 0  # body bytes not read yet (Content-Length); None: a chunked body not read yet
    _framed = False  # the request said how long its body is (Content-Length or chunked)
    _answered = False

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet

    # ----------------------------------------------------------------------------------- plumbing

    def _start_body(self) -> None:
        """Learn the body's framing; a framing that cannot be trusted is a 400 and closes the connection."""
        self._left, self._framed, self._answered = 0, False, False
        encoding = self.headers.get("Transfer-Encoding")
        lengths = self.headers.get_all("Content-Length") or []
        if encoding is not None:
            if encoding.strip().lower() != "chunked" or lengths:
                self.close_connection = True
                raise HubError(400, "Unsupported Transfer-Encoding: send a Content-Length or a chunked body")
            self._left, self._framed = None, True
        elif lengths:
            if len(set(lengths)) != 1 or not re.fullmatch(r"[0-9]{1,19}", lengths[0].strip()):
                self.close_connection = True
                raise HubError(400, "Invalid Content-Length header")
            self._left, self._framed = int(lengths[0]), True

    def _pieces(self, limit: int) -> Iterator[bytes]:
        """The body as it arrives; a 413 past ``limit`` bytes, a 400 when it ends early or is malformed."""
        if self._left is None:
            yield from self._chunked(limit)
            return
        if self._left > limit:  # answered at once; the connection closes rather than read it all
            self._left, self.close_connection = 0, True
            raise HubError(413, f"Payload Too Large: the body is over {limit} bytes")
        while self._left:
            piece = self.rfile.read(min(self._left, PIECE))
            if not piece:
                self._broken("The request body ended before its Content-Length")
            self._left -= len(piece)
            yield piece

    def _chunked(self, limit: int) -> Iterator[bytes]:
        total = 0
        while True:
            found = re.fullmatch(rb"([0-9a-fA-F]{1,16})(?:;[^\r\n]*)?\r?\n", self.rfile.readline(1024))
            if not found:
                self._broken("Malformed chunked body")
            size = int(found[1], 16)
            if size == 0:
                break
            total += size
            if total > limit:
                self._left, self.close_connection = 0, True
                raise HubError(413, f"Payload Too Large: the body is over {limit} bytes")
            left = size
            while left:
                piece = self.rfile.read(min(left, PIECE))
                if not piece:
                    self._broken("The chunked body ended early")
                left -= len(piece)
                yield piece
            if self.rfile.readline(3) not in (b"\r\n", b"\n"):
                self._broken("Malformed chunked body")
        for _ in range(100):  # trailers, up to the empty line
            if self.rfile.readline(8192) in (b"\r\n", b"\n", b""):
                self._left = 0
                return
        self._broken("Too many trailers in the chunked body")

    def _broken(self, message: str) -> NoReturn:
        """The body cannot be followed to its end: answer (if the client still listens) and close."""
        self._left, self.close_connection = 0, True
        raise HubError(400, message)

    def _body(self) -> bytes:
        return b"".join(self._pieces(MAX_BODY))

    def _require_length(self) -> None:
        if not self._framed:
            raise HubError(411, "Length Required: send a Content-Length header")

    def _drain(self) -> None:
        """Read what the client sent and nobody read, so it gets the answer, not a reset (bounded; else close)."""
        if self._left == 0:
            return
        if self._left is not None and self._left > DRAIN_LIMIT:
            self.close_connection = True
            return
        try:
            for _ in self._pieces(DRAIN_LIMIT):
                pass
        except (HubError, OSError):
            self.close_connection = True

    def _headers(self, status: int, headers: dict[str, str], length: int) -> None:
        self._drain()
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self._answered = True

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self._headers(
            status, ({} if raw is not None else {"Content-Type": "application/json"}) | (headers or {}), len(body)
        )
        if self.command != "HEAD":
            self.wfile.write(body)
            self.hub.bytes_sent += len(body)

    def _fail(self, exc: HubError) -> None:
        """The Hub's error shape: the status, ``X-Error-Code``/``X-Error-Message`` and ``{"error": ...}``."""
        if self._answered:  # too late for a status: the client sees the connection end early
            self.close_connection = True
            return
        headers = {"X-Error-Message": _header_text(exc.message)} | exc.headers
        if exc.code:
            headers["X-Error-Code"] = exc.code
        with contextlib.suppress(OSError):
            self._send(exc.status, {"error": exc.message, **exc.extra}, headers)

    def _handle(self) -> None:
        try:
            self._start_body()
            self._dispatch()
        except HubError as exc:
            self._fail(exc)
        except (ConnectionError, TimeoutError):  # the client went away, or sent nothing for too long
            self.close_connection = True
        except (HubkitError, OSError) as exc:  # the store could not write (a full disk, a refused target)
            logger.debug("the local Hub could not store %s %s", self.command, self.path, exc_info=True)
            self._fail(_store_fault(exc))
        except Exception:  # a bug here: answered as the Hub answers one, never a dropped connection
            logger.debug("the local Hub failed on %s %s", self.command, self.path, exc_info=True)
            self._fail(HubError(500, "Internal Error"))

    def _dispatch(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)  # matched quoted: a revision like refs%2Fpr%2F1 is one segment
        faults = self.hub.faults
        faults.requests.append((self.command, path))
        if faults.on_request is not None:
            faults.on_request(self.command, path)
        route = next(((n, a, m) for verb, p, n, a in ROUTES if verb == self.command and (m := p.fullmatch(path))), None)
        body = b"" if route is not None and route[0] in STREAMED else self._body()
        if faults.too_many_requests > 0 and not path.startswith("/lfs-upload/"):
            faults.too_many_requests -= 1
            self._send(429, {"error": "rate limited"}, {"Retry-After": str(faults.retry_after_s)})
            return
        if route is None:
            if self.command not in ("GET", "HEAD"):
                self._user(required=True)  # whatever it was meant to change, it needs the token first
            raise HubError(404, f"no route for {self.command} {path[:200]}")
        name, access, found = route
        if access == "write":
            self._user(required=True)
        groups = {k: unquote(v) if v is not None else None for k, v in found.groupdict().items()}  # decoded once
        getattr(self, f"_{name}")(groups, query, body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization")
        if auth is None:
            if required:
                raise HubError(401, "Invalid username or password.")
            return None
        scheme, _, token = auth.strip().partition(" ")
        expected = self.hub.token.encode()
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(errors="replace"), expected):
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.hub.user

    def _repo(self, groups: dict[str, Any], write: bool = False) -> tuple[str, str]:
        kind = groups.get("kind") or groups.get("prefix") or "models"
        repo = check_repo_id(groups["repo"])
        user = self._user(required=write)
        store = self.hub.store
        if not store.exists(kind, repo) or (store.meta(kind, repo)["private"] and user is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return kind, repo

    def _revision(self, kind: str, repo: str, revision: str) -> str:
        sha = self.hub.store.resolve(kind, repo, check_revision(revision))
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    def _ticket(self, groups: dict[str, Any]) -> Upload:
        """The upload an LFS address admits; an address nobody handed out is refused."""
        upload = self.hub.uploads.get(groups["ticket"])
        if upload is None or upload.oid != groups["oid"]:
            raise HubError(403, "Unknown upload address: ask the LFS batch endpoint (with a token) for one")
        return upload

    # ----------------------------------------------------------------------------------- routes

    def _whoami(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        user = self._user(required=True)
        self._send(200, {"name": user, "type": "user", "auth": {"accessToken": {"role": "write"}}})

    def _create_repo(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        user = self._user(required=True)
        data = _json(body)
        name, namespace = _get(data, "name", str, ""), _get(data, "organization", str) or user
        kind = check_kind(_get(data, "type", str, "model"))
        repo = check_repo_id(f"{namespace}/{name}")
        private = _get(data, "private", bool, False) or _get(data, "visibility", str) == "private"
        url = f"{self.hub.endpoint}/{'' if kind == 'models' else kind + '/'}{repo}"
        with self.hub.store.lock:
            if self.hub.store.exists(kind, repo):
                raise HubError(409, "You already created this model repo", extra={"url": url})
            self.hub.store.create(kind, repo, private)
        self._send(200, {"url": url, "name": repo})

    def _validate_yaml(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        """The Hub's metadata check, as far as a release's card needs it: YAML, a mapping, the license id."""
        import yaml

        content = _get(_json(body), "content", str, "")
        front = content.split("---")[1] if content.startswith("---") and content.count("---") >= 2 else ""
        try:
            metadata = yaml.safe_load(front)
        except (yaml.YAMLError, RecursionError) as exc:
            self._send(400, {"errors": [{"message": f"Invalid YAML: {exc}"}]})
            return
        errors = []
        if metadata is not None and not isinstance(metadata, dict):
            errors.append('"value" must be of type object')
        elif metadata and "license" in metadata:
            declared = metadata["license"]
            licenses = declared if isinstance(declared, list) else [declared]
            if not all(isinstance(item, str) and item in HUB_LICENSES for item in licenses):
                errors.append(f'"license" must be one of [{", ".join((*HUB_LICENSES, "array"))}]')
            elif "other" in licenses:
                errors += [
                    f'"{key}" is required when "license" is "other"'
                    for key in ("license_name", "license_link")
                    if not metadata.get(key)
                ]
        if errors:
            self._send(400, {"errors": [{"message": message} for message in errors]})
            return
        self._send(200, {"errors": [], "warnings": []})

    def _preupload(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        files = _get(_json(body), "files", list, [])
        sha = self.hub.store.resolve(kind, repo, check_revision(groups["rev"]))
        tree = self.hub.store.commit(kind, repo, sha)["files"] if sha else {}
        answer = []
        for item in files:
            item = item if isinstance(item, dict) else {}
            path, size = check_path(item.get("path")), _size(item.get("size"), "file size")
            try:
                sample = base64.b64decode(_get(item, "sample", str, ""), validate=True)
            except ValueError:
                raise HubError(400, f"Invalid sample of {path!r}: base64 expected") from None
            lfs = path.endswith(LFS_SUFFIXES) or size >= LFS_THRESHOLD or b"\0" in sample
            current = tree.get(path)
            oid = (current["lfs"] or current["blob"]) if current else None
            answer.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": answer})

    def _lfs_batch(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        self._repo(groups, write=True)
        data = _json(body)
        if _get(data, "operation", str, "upload") != "upload":
            raise HubError(400, "This Hub's LFS batch endpoint takes uploads only")
        objects = []
        for item in _get(data, "objects", list, []):
            item = item if isinstance(item, dict) else {}
            oid, size = _get(item, "oid", str, ""), _size(item.get("size"), "object size")
            entry: dict[str, Any] = {"oid": oid, "size": size}
            chunk = self.hub.multipart_chunk
            if self.hub.store.has_object(oid, size):
                pass  # already stored: no actions
            elif chunk and size > chunk:
                parts = -(-size // chunk)
                ticket = self.hub.announce(Upload(oid, size, parts=parts, chunk=chunk))
                header = {"chunk_size": str(chunk)} | {
                    str(n): f"{self.hub.endpoint}/lfs-part/{oid}/{ticket}/{n}" for n in range(1, parts + 1)
                }
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-complete/{oid}/{ticket}", "header": header}
                }
            else:
                ticket = self.hub.announce(Upload(oid, size))
                entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{oid}/{ticket}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _xet_token(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        self._repo(groups, write=groups["access"] == "write")
        check_revision(groups["rev"])
        raise HubError(404, "Xet storage is not enabled on this Hub; upload with the LFS protocol")

    def _lfs_upload(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        upload = self._ticket(groups)
        if upload.parts:
            raise HubError(400, "This object goes by parts: PUT each part to its own address")
        faults = self.hub.faults
        time.sleep(faults.upload_delay_s)
        with self.hub.store.lock:
            drop = faults.drop_upload_after_bytes
            if drop is not None:
                faults.drop_uploads -= 1
                if faults.drop_uploads <= 0:
                    faults.drop_upload_after_bytes = None
            fail = faults.fail_uploads > 0
            faults.fail_uploads -= 1 if fail else 0
        self._require_length()
        if drop is not None:
            received = 0
            for piece in self._pieces(MAX_OBJECT):
                received += len(piece)
                if received >= drop:
                    break
            self.close_connection, self._answered = True, True
            self.connection.shutdown(socket.SHUT_RDWR)  # the connection drops mid-upload
            return
        if fail:
            raise HubError(faults.fail_upload_status, "injected upload failure")
        store = self.hub.store
        store.receive(store.object_path(upload.oid), self._pieces(upload.size), upload.size, upload.oid)
        self.hub.uploads.pop(groups["ticket"], None)
        self._send(200, None)

    def _lfs_part(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        upload = self._ticket(groups)
        number = int(groups["part"])
        if not 1 <= number <= upload.parts:
            raise HubError(400, f"No part {number} in this upload")
        self._require_length()
        size = min(upload.chunk, upload.size - (number - 1) * upload.chunk)
        folder = self.hub.store.parts_folder(groups["ticket"])
        ensure_folder(folder)
        upload.etags[number] = self.hub.store.receive(folder / f"{number:05d}", self._pieces(size), size)
        self._send(200, None, {"ETag": f'"{upload.etags[number]}"'})

    def _lfs_complete(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        upload = self._ticket(groups)
        numbers = []
        for part in _get(_json(body), "parts", list, []):
            part = part if isinstance(part, dict) else {}
            number, etag = _get(part, "partNumber", int, 0), _get(part, "etag", str, "")
            if upload.etags.get(number) != etag.strip('"'):
                raise HubError(400, f"part {number} etag mismatch (or the part was never uploaded)")
            numbers.append(number)
        if sorted(numbers) != list(range(1, upload.parts + 1)):
            raise HubError(400, f"The parts listed do not make the object: parts 1 to {upload.parts}, each once")
        folder = self.hub.store.parts_folder(groups["ticket"])
        try:
            self.hub.store.join_parts(upload.oid, [folder / f"{n:05d}" for n in numbers], upload.size)
        except HubError:  # the parts are not the object: they never will be
            self._forget(groups["ticket"], folder)
            raise
        self._forget(groups["ticket"], folder)
        self._send(200, {})

    def _forget(self, ticket: str, parts: Path) -> None:
        self.hub.uploads.pop(ticket, None)
        shutil.rmtree(parts, ignore_errors=True)

    @staticmethod
    def _commit_lines(body: bytes) -> list[tuple[str, dict[str, Any]]]:
        """The NDJSON lines of a commit as (key, value); a malformed line is a 400."""
        lines = []
        for raw in body.splitlines():
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except (ValueError, RecursionError):
                raise HubError(400, "Malformed NDJSON line in the commit") from None
            if (
                not isinstance(line, dict)
                or line.get("key") not in COMMIT_KEYS
                or not isinstance(line.get("value"), dict)
            ):
                raise HubError(400, f'Each commit line is {{"key": one of {", ".join(COMMIT_KEYS)}, "value": {{...}}}}')
            lines.append((line["key"], line["value"]))
        return lines

    def _commit(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        if self.hub.faults.fail_commits > 0:
            self.hub.faults.fail_commits -= 1
            raise HubError(self.hub.faults.fail_commit_status, "injected commit failure (not applied)")
        store = self.hub.store
        lines = self._commit_lines(body)
        header: dict[str, Any] = next((value for key, value in lines if key == "header"), {})
        summary, description = _get(header, "summary", str, ""), _get(header, "description", str, "")
        parent = _get(header, "parentCommit", str)
        revision = check_revision(groups["rev"])
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        with store.lock:
            meta = store.meta(kind, repo)
            head = store.resolve(kind, repo, revision)
            if head is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            if parent and parent != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(store.commit(kind, repo, head)["files"])
            for key, value in lines:
                if key == "file":
                    files[check_path(value.get("path"))] = self._regular_file(value)
                elif key == "lfsFile":
                    files[check_path(value.get("path"))] = self._lfs_file(value)
                elif key == "deletedFile":
                    files.pop(check_path(value.get("path")), None)
                elif key == "deletedFolder":
                    prefix = check_path(str(value.get("path")).rstrip("/")) + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
            sha = store.write_commit(kind, repo, head, files, summary, description)
            pr_url = None
            if create_pr:
                num = len(meta["prs"]) + 1
                base = revision if revision in meta["branches"] else "main"
                meta["prs"].append({"num": num, "title": summary, "status": "open", "head": sha, "base": base,
                                    "created": _now(), "description": description})  # fmt: skip
                pr_url = f"{self.hub.endpoint}/{repo}/discussions/{num}"
            elif revision in meta["branches"]:
                meta["branches"][revision] = sha
            elif re.fullmatch(r"refs/pr/[0-9]+", revision):
                next(pr for pr in meta["prs"] if f"refs/pr/{pr['num']}" == revision)["head"] = sha
            else:
                raise HubError(400, f"cannot commit to {revision}")
            store.save_meta(kind, repo, meta)
            self.hub.faults.commits_applied += 1
            applied = self.hub.faults.commits_applied
        if self.hub.faults.after_commit is not None:
            self.hub.faults.after_commit(applied)
        if self.hub.faults.fail_commit_after_apply > 0:
            self.hub.faults.fail_commit_after_apply -= 1
            raise HubError(500, "Internal Error (the commit was applied)")
        self._send(
            200, {"commitOid": sha, "commitUrl": f"{self.hub.endpoint}/{repo}/commit/{sha}", "pullRequestUrl": pr_url}
        )

    def _regular_file(self, value: dict[str, Any]) -> dict[str, Any]:
        content = _get(value, "content", str, "")
        if _get(value, "encoding", str) == "base64":
            try:
                data = base64.b64decode(content, validate=True)
            except ValueError:
                raise HubError(400, "Invalid base64 content in the commit") from None
        else:
            data = content.encode()
        return {"size": len(data), "blob": self.hub.store.put_blob(data), "lfs": None}

    def _lfs_file(self, value: dict[str, Any]) -> dict[str, Any]:
        store, oid = self.hub.store, _get(value, "oid", str, "")
        path = store.object_path(oid)
        size = (
            _size(value["size"], "LFS file size") if "size" in value else path.stat().st_size if path.is_file() else 0
        )
        if not store.has_object(oid, size):
            raise HubError(422, f"LFS object {oid} of {value.get('path')} was never uploaded")
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
        return {"size": size, "blob": git_blob_sha1(pointer.encode()), "lfs": oid}

    def _entries(self, kind: str, repo: str, sha: str) -> dict[str, Any]:
        files: dict[str, Any] = self.hub.store.commit(kind, repo, sha)["files"]
        return files

    @staticmethod
    def _tree_item(path: str, entry: dict[str, Any]) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "file", "oid": entry["blob"], "size": entry["size"], "path": path}
        if entry["lfs"]:
            item["lfs"] = {"oid": entry["lfs"], "size": entry["size"], "pointerSize": 134}
        return item

    def _repo_info(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        sha = self._revision(kind, repo, groups.get("rev") or "main")
        files = self._entries(kind, repo, sha)
        meta = self.hub.store.meta(kind, repo)
        self._send(200, {"id": repo, "modelId": repo, "sha": sha, "private": meta["private"], "siblings": [{"rfilename": p} for p in sorted(files)],
                         "tags": [], "downloads": 0, "likes": 0, "lastModified": _now(), "xetEnabled": False})  # fmt: skip

    def _tree(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        sha = self._revision(kind, repo, groups["rev"])
        files = self._entries(kind, repo, sha)
        prefix = (groups.get("path") or "").strip("/")
        if prefix:
            check_path(prefix)
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        cursor = query.get("cursor", ["0"])[0]
        if not re.fullmatch(r"[0-9]{1,9}", cursor):
            raise HubError(400, f"Invalid cursor {cursor[:50]!r}")
        items: dict[str, dict[str, Any]] = {}
        for path in sorted(files):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest:
                folder = (prefix + "/" if prefix else "") + rest.split("/", 1)[0]
                items.setdefault(folder, {"type": "directory", "oid": "0" * 40, "path": folder})
                if not recursive:
                    continue
            items[path] = self._tree_item(path, files[path])
        ordered = [items[k] for k in sorted(items)]
        start = int(cursor)
        page = ordered[start : start + TREE_PAGE]
        headers = {}
        if start + TREE_PAGE < len(ordered):
            query_text = f"recursive={'true' if recursive else 'false'}&expand=false&cursor={start + TREE_PAGE}"
            headers["Link"] = f'<{self.hub.endpoint}{urlsplit(self.path).path}?{query_text}>; rel="next"'
        self._send(200, page, headers)

    def _paths_info(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        sha = self._revision(kind, repo, groups["rev"])
        files = self._entries(kind, repo, sha)
        try:
            form = parse_qs(body.decode(), strict_parsing=False)
        except UnicodeDecodeError:
            raise HubError(400, "Malformed form body: UTF-8 expected") from None
        paths = [check_path(p) for p in form.get("paths", [])]
        self._send(200, [self._tree_item(p, files[p]) for p in paths if p in files])

    def _refs(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        meta = self.hub.store.meta(kind, repo)
        branches = [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": s} for n, s in meta["branches"].items()]
        tags = [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in meta["tags"].items()]
        prs = [
            {"name": f"refs/pr/{p['num']}", "ref": f"refs/pr/{p['num']}", "targetCommit": p["head"]}
            for p in meta["prs"]
        ]
        self._send(200, {"branches": branches, "tags": tags, "converts": [], "pullRequests": prs})

    def _commits(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        """The history of a revision, newest first (one page), as ``HfApi.list_repo_commits`` reads it."""
        kind, repo = self._repo(groups)
        sha: str | None = self._revision(kind, repo, groups["rev"])
        history = []
        while sha is not None:
            commit = self.hub.store.commit(kind, repo, sha)
            history.append({"id": sha, "authors": [{"user": self.hub.user}], "date": commit["date"],
                            "title": commit["summary"], "message": commit.get("description", "")})  # fmt: skip
            sha = commit["parent"]
        self._send(200, history)

    def _create_branch(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        name = check_revision(groups["name"])
        starting = _get(_json(body), "startingPoint", str) or "main"
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            if name in meta["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{name}")
            meta["branches"][name] = self._revision(kind, repo, starting)
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _delete_branch(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        name = check_revision(groups["name"])
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            if name == "main" or name not in meta["branches"]:
                raise HubError(404 if name != "main" else 403, f"Cannot delete branch {name}", "RevisionNotFound")
            del meta["branches"][name]
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _delete_tag(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        name = check_revision(groups["name"])
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            if meta["tags"].pop(name, None) is None:
                raise HubError(404, f"Tag {name} not found", "RevisionNotFound")
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _delete_repo(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        """The repo's records go; its objects stay (other repos may hold the same bytes)."""
        data = _json(body)
        name, namespace = _get(data, "name", str, ""), _get(data, "organization", str) or self.hub.user
        kind, repo = check_kind(_get(data, "type", str, "model")), check_repo_id(f"{namespace}/{name}")
        with self.hub.store.lock:
            if not self.hub.store.exists(kind, repo):
                raise HubError(404, "Repository not found", "RepoNotFound")
            self.hub.store.delete(kind, repo)
        self._send(200, {})

    def _create_tag(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        tag = check_revision(_get(_json(body), "tag", str, ""))
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            if tag in meta["tags"]:
                raise HubError(409, f"Tag {tag} already exists")
            meta["tags"][tag] = self._revision(kind, repo, groups["rev"])
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _discussion(self, repo: str, kind: str, pr: dict[str, Any], details: bool = False) -> dict[str, Any]:
        item: dict[str, Any] = {
            "num": pr["num"], "title": pr["title"], "status": pr["status"], "isPullRequest": True,
            "createdAt": pr["created"], "author": {"name": "tester"}, "repo": {"name": repo, "type": kind[:-1]},
            "pinned": False, "numComments": 0, "topReactions": [],
        }  # fmt: skip
        if details:
            item |= {"events": [], "conflictingFiles": [], "filesWithConflicts": [], "diff": "",
                     "changes": {"base": f"refs/heads/{pr['base']}", **({"mergeCommitId": pr["merged"]} if pr.get("merged") else {})}}  # fmt: skip
        return item

    def _list_discussions(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        prs = self.hub.store.meta(kind, repo)["prs"]
        wanted = query.get("status", ["all"])[0]
        found = [self._discussion(repo, kind, p) for p in reversed(prs) if wanted in ("all", p["status"])]
        self._send(200, {"discussions": found, "count": len(found), "start": 0, "numClosedDiscussions": 0})

    def _create_discussion(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        data = _json(body)
        title, description = _get(data, "title", str, ""), _get(data, "description", str, "")
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            num = len(meta["prs"]) + 1
            meta["prs"].append({"num": num, "title": title, "status": "open", "head": meta["branches"]["main"],
                                "base": "main", "created": _now(), "description": description})  # fmt: skip
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {"num": num, "url": f"{self.hub.endpoint}/{repo}/discussions/{num}"})

    def _pr(self, kind: str, repo: str, num: int) -> tuple[dict[str, Any], dict[str, Any]]:
        meta = self.hub.store.meta(kind, repo)
        for pr in meta["prs"]:
            if pr["num"] == num:
                return meta, pr
        raise HubError(404, f"Discussion {num} not found")

    def _get_discussion(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        _, pr = self._pr(kind, repo, int(groups["num"]))
        self._send(200, self._discussion(repo, kind, pr, details=True))

    def _merge(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        """Move the base branch to the PR's head, only when that loses nothing: the base has not moved since."""
        kind, repo = self._repo(groups, write=True)
        store = self.hub.store
        with store.lock:
            meta, pr = self._pr(kind, repo, int(groups["num"]))
            if pr["status"] != "open":
                raise HubError(400, "This pull request is not open")
            if store.commit(kind, repo, pr["head"])["parent"] is None:
                raise HubError(400, "nothing to merge")
            base = meta["branches"].get(pr["base"])
            if base is None:
                raise HubError(404, f"Invalid rev id: {pr['base']}", "RevisionNotFound")
            if not store.is_ancestor(kind, repo, base, pr["head"]):
                raise HubError(
                    409,
                    f"Merge conflict: {pr['base']} has moved since this pull request was opened; "
                    "open a new pull request from the current head",
                )
            meta["branches"][pr["base"]] = pr["head"]  # the branch moves in a single step
            pr["status"], pr["merged"] = "merged", pr["head"]
            store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _discussion_status(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        status = _get(_json(body), "status", str)
        if status not in (None, "open", "closed"):
            raise HubError(400, f"Invalid status {status[:50]!r}: open or closed")
        with self.hub.store.lock:
            meta, pr = self._pr(kind, repo, int(groups["num"]))
            pr["status"] = status or pr["status"]
            self.hub.store.save_meta(kind, repo, meta)
        event = {"id": secrets.token_hex(12), "type": "status-change", "createdAt": _now(),
                 "author": {"name": self.hub.user}, "data": {"status": pr["status"]}}  # fmt: skip
        self._send(200, {"newStatus": event})

    def _resolve(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        sha = self._revision(kind, repo, groups["rev"])
        files = self._entries(kind, repo, sha)
        entry = files.get(check_path(groups["path"]))
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", extra={})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["lfs"] or entry["blob"]}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": f'"{entry["lfs"]}"', "X-Linked-Size": str(entry["size"])}
        size = entry["size"]
        wanted = _byte_range(self.headers.get("Range"), size)
        first, last = wanted or (0, size - 1)
        if wanted:
            headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        with self.hub.store.opened(entry) as stream:  # whole, or a 500 before any header
            self._headers(206 if wanted else 200, headers, last - first + 1)
            if self.command == "HEAD":
                return
            stream.seek(first)
            left = last - first + 1
            while left:
                piece = stream.read(min(left, PIECE))
                if not piece:  # the object shrank while it was read: end early, never pad
                    self.close_connection = True
                    return
                self.wfile.write(piece)
                self.hub.bytes_sent += len(piece)
                left -= len(piece)
