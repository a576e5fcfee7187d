"""A Hub-compatible HTTP server on 127.0.0.1, for tests and for rehearsing a release offline.

It speaks the subset of the Hub API that huggingface_hub uses on the classic LFS path: repos, preupload, LFS
batch (basic and multipart), NDJSON commits (with PRs and parent-commit checks), repo info, paginated trees,
paths-info, refs, branches, tags, pull requests, resolve with Range, validate-yaml and whoami. It answers as a
Hub without Xet storage does: no Xet tokens (404 on the token routes), ``xetEnabled: false``, no Xet headers on
downloads, LFS transfers only. It stores everything under one folder, so it survives a restart. Faults can be
injected for tests.

Written by hand because nothing lightweight exists that accepts uploads (mirrors only serve downloads and
full reimplementations need a database and object store); stdlib only, so it starts in milliseconds.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".model", ".tiktoken", ".gguf", ".h5", ".msgpack")
LFS_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
TREE_PAGE = 50


def _now() -> str:
    """The Hub's timestamp format."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


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
    on_request: Callable[[str, str], None] | None = None  # called with (method, path) as each request arrives
    after_commit: Callable[[int], None] | None = None  # called with the count of commits applied, before answering
    commits_applied: int = 0
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path) log


class HubStore:
    """Repos, commits and objects in one folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "objects").mkdir(parents=True, exist_ok=True)
        self.lock = threading.RLock()

    def _repo_dir(self, kind: str, repo: str) -> Path:
        return self.root / "repos" / kind / repo

    def exists(self, kind: str, repo: str) -> bool:
        return (self._repo_dir(kind, repo) / "repo.json").is_file()

    def meta(self, kind: str, repo: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self._repo_dir(kind, repo) / "repo.json").read_text())
        return data

    def save_meta(self, kind: str, repo: str, meta: dict[str, Any]) -> None:
        path = self._repo_dir(kind, repo) / "repo.json"
        path.write_text(json.dumps(meta, indent=1))

    def create(self, kind: str, repo: str, private: bool) -> None:
        folder = self._repo_dir(kind, repo)
        (folder / "commits").mkdir(parents=True, exist_ok=True)
        blob = self.put_blob(GITATTRIBUTES)
        first = self.write_commit(
            kind,
            repo,
            None,
            {".gitattributes": {"size": len(GITATTRIBUTES), "blob": blob, "lfs": None}},
            "initial commit",
        )
        self.save_meta(kind, repo, {"private": private, "branches": {"main": first}, "tags": {}, "prs": []})

    def put_blob(self, data: bytes) -> str:
        oid = git_blob_sha1(data)
        path = self.root / "objects" / f"blob-{oid}"
        if not path.exists():
            path.write_bytes(data)
        return oid

    def object_path(self, sha256: str) -> Path:
        return self.root / "objects" / f"lfs-{sha256}"

    def write_commit(self, kind: str, repo: str, parent: str | None, files: dict[str, Any], summary: str) -> str:
        body = {"parent": parent, "files": files, "summary": summary, "date": _now()}
        sha = hashlib.sha1(json.dumps(body, sort_keys=True).encode(), usedforsecurity=False).hexdigest()
        (self._repo_dir(kind, repo) / "commits" / f"{sha}.json").write_text(json.dumps(body))
        return sha

    def commit(self, kind: str, repo: str, sha: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self._repo_dir(kind, repo) / "commits" / f"{sha}.json").read_text())
        return data

    def resolve(self, kind: str, repo: str, revision: str) -> str | None:
        meta = self.meta(kind, repo)
        if revision in meta["branches"]:
            return str(meta["branches"][revision])
        if revision in meta["tags"]:
            return str(meta["tags"][revision])
        found = re.fullmatch(r"refs/pr/(\d+)", revision)
        if found:
            for pr in meta["prs"]:
                if pr["num"] == int(found[1]):
                    return str(pr["head"])
        if (
            re.fullmatch(r"[0-9a-f]{40}", revision)
            and (self._repo_dir(kind, repo) / "commits" / f"{revision}.json").is_file()
        ):
            return revision
        return None

    def file_bytes(self, entry: dict[str, Any]) -> bytes:
        return self.read_range(entry, 0, entry["size"])

    def read_range(self, entry: dict[str, Any], start: int, length: int) -> bytes:
        path = self.object_path(entry["lfs"]) if entry["lfs"] else self.root / "objects" / f"blob-{entry['blob']}"
        with open(path, "rb") as handle:
            handle.seek(start)
            return handle.read(length)

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
                relative = item.relative_to(folder).as_posix()
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


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


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
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("GET", r"/api/whoami-v2", "whoami"),
        ("POST", r"/api/repos/create", "create_repo"),
        ("POST", r"/api/validate-yaml", "validate_yaml"),
        ("POST", rf"/api/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", rf"/api/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("GET", rf"/api/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
        ("POST", rf"/api/{REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("GET", rf"/api/{REPO}/refs", "refs"),
        ("POST", rf"/api/{REPO}/branch/(?P<name>[^/]+)", "create_branch"),
        ("POST", rf"/api/{REPO}/tag/(?P<rev>[^/]+)", "create_tag"),
        ("GET", rf"/api/{REPO}/discussions", "list_discussions"),
        ("POST", rf"/api/{REPO}/discussions", "create_discussion"),
        ("GET", rf"/api/{REPO}/discussions/(?P<num>\d+)", "get_discussion"),
        ("POST", rf"/api/{REPO}/discussions/(?P<num>\d+)/merge", "merge"),
        ("POST", rf"/api/{REPO}/discussions/(?P<num>\d+)/status", "discussion_status"),
        ("GET", rf"/api/{REPO}/xet-(?P<access>read|write)-token/(?P<rev>[^/]+)", "xet_token"),
        ("GET", rf"/api/{REPO}(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
        ("POST", r"/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", "lfs_batch"),
        ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
        ("PUT", r"/lfs-part/(?P<oid>[0-9a-f]{64})/(?P<part>\d+)", "lfs_part"),
        ("POST", r"/lfs-complete/(?P<oid>[0-9a-f]{64})", "lfs_complete"),
        (
            "HEAD",
            r"/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve",
        ),
        (
            "GET",
            r"/(?:(?P<prefix>datasets|spaces)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)",
            "resolve",
        ),
    ]
]


class HubServer:
    """The server; start() returns the endpoint URL, stop() shuts it down."""

    def __init__(
        self, root: Path, tokens: dict[str, str] | None = None, port: int = 0, multipart_chunk: int | None = None
    ) -> None:
        self.store = HubStore(root)
        self.multipart_chunk = multipart_chunk  # objects larger than this go the multipart way
        self.tokens = tokens if tokens is not None else {"hf_test_token": "tester"}
        self.faults = Faults()
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


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # quiet

    # ----------------------------------------------------------------------------------- plumbing

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, payload: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None
    ) -> None:
        body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
        self.send_response(status)
        if raw is None:
            self.send_header("Content-Type", "application/json")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            self.hub.bytes_sent += len(body)

    def _handle(self) -> None:
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)  # matched quoted: a revision like refs%2Fpr%2F1 is one segment
        faults = self.hub.faults
        faults.requests.append((self.command, path))
        if faults.on_request is not None:
            faults.on_request(self.command, path)
        body = b"" if self.command in ("GET", "HEAD") or path.startswith("/lfs-upload/") else self._body()
        if faults.too_many_requests > 0 and not path.startswith("/lfs-upload/"):
            faults.too_many_requests -= 1
            self._send(429, {"error": "rate limited"}, {"Retry-After": str(faults.retry_after_s)})
            return
        for method, pattern, name in ROUTES:
            found = pattern.fullmatch(path) if method == self.command else None
            if found:
                groups = {k: unquote(v) if v is not None else None for k, v in found.groupdict().items()}
                try:
                    getattr(self, f"_{name}")(groups, query, body)
                except HubError as exc:
                    headers = {"X-Error-Message": exc.message}
                    if exc.code:
                        headers["X-Error-Code"] = exc.code
                    self._send(exc.status, {"error": exc.message, **exc.extra}, headers)
                return
        self._send(404, {"error": f"no route for {self.command} {path}"})

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

    def _user(self, required: bool) -> str | None:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else None
        if token is None:
            if required:
                raise HubError(401, "Invalid username or password.")
            return None
        user = self.hub.tokens.get(token)
        if user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return user

    def _repo(self, groups: dict[str, Any], write: bool = False) -> tuple[str, str]:
        kind = groups.get("kind") or f"{groups.get('prefix') or 'model'}s".replace("datasetss", "datasets").replace(
            "spacess", "spaces"
        )
        kind = kind if kind.endswith("s") else kind + "s"
        repo = groups["repo"]
        user = self._user(required=write)
        store = self.hub.store
        if not store.exists(kind, repo) or (store.meta(kind, repo)["private"] and user is None):
            raise HubError(404, "Repository not found", "RepoNotFound")
        return kind, repo

    def _revision(self, kind: str, repo: str, revision: str) -> str:
        sha = self.hub.store.resolve(kind, repo, unquote(revision))
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return sha

    # ----------------------------------------------------------------------------------- routes

    def _whoami(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        user = self._user(required=True)
        self._send(200, {"name": user, "type": "user", "auth": {"accessToken": {"role": "write"}}})

    def _create_repo(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        user = self._user(required=True)
        data = json.loads(body or b"{}")
        name, namespace = data.get("name", ""), data.get("organization") or user
        kind = f"{data.get('type', 'model')}s"
        repo = f"{namespace}/{name}"
        url = f"{self.hub.endpoint}/{'' if kind == 'models' else kind + '/'}{repo}"
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", name) or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        with self.hub.store.lock:
            if self.hub.store.exists(kind, repo):
                raise HubError(409, "You already created this model repo", extra={"url": url})
            self.hub.store.create(kind, repo, data.get("visibility") == "private" or bool(data.get("private")))
        self._send(200, {"url": url, "name": repo})

    def _validate_yaml(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        """The Hub's metadata check, as far as a release's card needs it: YAML, a mapping, the license id."""
        import yaml

        content = json.loads(body or b"{}").get("content", "")
        front = content.split("---")[1] if content.startswith("---") and content.count("---") >= 2 else ""
        try:
            metadata = yaml.safe_load(front)
        except yaml.YAMLError as exc:
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
        files = json.loads(body)["files"]
        sha = self.hub.store.resolve(kind, repo, unquote(groups["rev"]))
        tree = self.hub.store.commit(kind, repo, sha)["files"] if sha else {}
        answer = []
        for item in files:
            lfs = (
                item["path"].endswith(LFS_SUFFIXES)
                or item["size"] >= LFS_THRESHOLD
                or b"\0" in base64.b64decode(item["sample"])
            )
            current = tree.get(item["path"])
            oid = (current["lfs"] or current["blob"]) if current else None
            answer.append(
                {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        self._send(200, {"files": answer})

    def _lfs_batch(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        self._repo(groups, write=True)
        objects = []
        for item in json.loads(body)["objects"]:
            entry: dict[str, Any] = {"oid": item["oid"], "size": item["size"]}
            chunk = self.hub.multipart_chunk
            if self.hub.store.object_path(item["oid"]).exists():
                pass  # already stored: no actions
            elif chunk and item["size"] > chunk:
                parts = -(-item["size"] // chunk)
                header = {"chunk_size": str(chunk)} | {
                    str(n): f"{self.hub.endpoint}/lfs-part/{item['oid']}/{n}" for n in range(1, parts + 1)
                }
                entry["actions"] = {
                    "upload": {"href": f"{self.hub.endpoint}/lfs-complete/{item['oid']}", "header": header}
                }
            else:
                entry["actions"] = {"upload": {"href": f"{self.hub.endpoint}/lfs-upload/{item['oid']}"}}
            objects.append(entry)
        self._send(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _xet_token(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        self._repo(groups, write=groups["access"] == "write")
        raise HubError(404, "Xet storage is not enabled on this Hub; upload with the LFS protocol")

    def _lfs_upload(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        faults = self.hub.faults
        length = int(self.headers.get("Content-Length") or 0)
        time.sleep(faults.upload_delay_s)
        with self.hub.store.lock:
            drop = faults.drop_upload_after_bytes
            if drop is not None:
                faults.drop_uploads -= 1
                if faults.drop_uploads <= 0:
                    faults.drop_upload_after_bytes = None
            fail = faults.fail_uploads > 0
            faults.fail_uploads -= 1 if fail else 0
        if drop is not None:
            self.rfile.read(min(drop, length))
            self.close_connection = True
            self.connection.shutdown(2)  # the connection drops mid-upload
            return
        data = self._body() if self.headers.get("Transfer-Encoding") else self.rfile.read(length)
        if fail:
            raise HubError(faults.fail_upload_status, "injected upload failure")
        if hashlib.sha256(data).hexdigest() != groups["oid"]:
            raise HubError(400, "sha256 mismatch")
        path = self.hub.store.object_path(groups["oid"])
        temporary = path.with_suffix(f".{threading.get_ident()}.part")
        temporary.write_bytes(data)
        temporary.replace(path)
        self._send(200, None)

    def _lfs_part(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        folder = self.hub.store.root / "objects" / f"parts-{groups['oid']}"
        folder.mkdir(exist_ok=True)
        (folder / f"{int(groups['part']):05d}").write_bytes(body)
        self._send(200, None, {"ETag": f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'})

    def _lfs_complete(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        oid = groups["oid"]
        folder = self.hub.store.root / "objects" / f"parts-{oid}"
        parts = json.loads(body).get("parts", [])
        chunks = []
        for part in sorted(parts, key=lambda p: p["partNumber"]):
            data = (folder / f"{part['partNumber']:05d}").read_bytes()
            if f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"' != part["etag"]:
                raise HubError(400, f"part {part['partNumber']} etag mismatch")
            chunks.append(data)
        data = b"".join(chunks)
        if hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, "sha256 mismatch after joining the parts")
        self.hub.store.object_path(oid).write_bytes(data)
        for item in folder.iterdir():
            item.unlink()
        folder.rmdir()
        self._send(200, {})

    def _commit(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        if self.hub.faults.fail_commits > 0:
            self.hub.faults.fail_commits -= 1
            raise HubError(self.hub.faults.fail_commit_status, "injected commit failure (not applied)")
        store = self.hub.store
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header: dict[str, Any] = next((line["value"] for line in lines if line["key"] == "header"), {})
        revision = unquote(groups["rev"])
        create_pr = query.get("create_pr", ["0"])[0] in ("1", "true")
        with store.lock:
            meta = store.meta(kind, repo)
            head = store.resolve(kind, repo, revision)
            if head is None:
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            parent = header.get("parentCommit")
            if parent and parent != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(store.commit(kind, repo, head)["files"])
            for line in lines:
                value = line["value"]
                if line["key"] == "file":
                    data = (
                        base64.b64decode(value["content"])
                        if value.get("encoding") == "base64"
                        else value["content"].encode()
                    )
                    files[value["path"]] = {"size": len(data), "blob": store.put_blob(data), "lfs": None}
                elif line["key"] == "lfsFile":
                    if not store.object_path(value["oid"]).exists():
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    pointer = (
                        f"version https://git-lfs.github.com/spec/v1\noid sha256:{value['oid']}\nsize {value['size']}\n"
                    )
                    files[value["path"]] = {
                        "size": value["size"],
                        "blob": git_blob_sha1(pointer.encode()),
                        "lfs": value["oid"],
                    }
                elif line["key"] == "deletedFile":
                    files.pop(value["path"], None)
                elif line["key"] == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    files = {p: e for p, e in files.items() if not p.startswith(prefix)}
            sha = store.write_commit(kind, repo, head, files, header.get("summary", ""))
            pr_url = None
            if create_pr:
                num = len(meta["prs"]) + 1
                base = revision if revision in meta["branches"] else "main"
                meta["prs"].append({"num": num, "title": header.get("summary", ""), "status": "open", "head": sha, "base": base,
                                    "created": _now(), "description": header.get("description", "")})  # fmt: skip
                pr_url = f"{self.hub.endpoint}/{repo}/discussions/{num}"
            elif revision in meta["branches"]:
                meta["branches"][revision] = sha
            elif re.fullmatch(r"refs/pr/\d+", revision):
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
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
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
        start = int(query.get("cursor", ["0"])[0])
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
        form = parse_qs(body.decode())
        paths = form.get("paths", [])
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

    def _create_branch(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        data = json.loads(body or b"{}")
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            name = unquote(groups["name"])
            if name in meta["branches"]:
                raise HubError(409, f"Reference already exists: refs/heads/{name}")
            meta["branches"][name] = self._revision(kind, repo, data.get("startingPoint") or "main")
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _create_tag(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        data = json.loads(body or b"{}")
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            if data["tag"] in meta["tags"]:
                raise HubError(409, f"Tag {data['tag']} already exists")
            meta["tags"][data["tag"]] = self._revision(kind, repo, groups["rev"])
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
        data = json.loads(body or b"{}")
        with self.hub.store.lock:
            meta = self.hub.store.meta(kind, repo)
            num = len(meta["prs"]) + 1
            meta["prs"].append({"num": num, "title": data.get("title", ""), "status": "open", "head": meta["branches"]["main"],
                                "base": "main", "created": _now(), "description": data.get("description", "")})  # fmt: skip
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
        kind, repo = self._repo(groups, write=True)
        with self.hub.store.lock:
            meta, pr = self._pr(kind, repo, int(groups["num"]))
            if pr["status"] != "open":
                raise HubError(400, "This pull request is not open")
            if self.hub.store.commit(kind, repo, pr["head"])["parent"] is None:
                raise HubError(400, "nothing to merge")
            meta["branches"][pr["base"]] = pr["head"]  # the branch moves in a single step
            pr["status"], pr["merged"] = "merged", pr["head"]
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {})

    def _discussion_status(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups, write=True)
        with self.hub.store.lock:
            meta, pr = self._pr(kind, repo, int(groups["num"]))
            pr["status"] = json.loads(body or b"{}").get("status", pr["status"])
            self.hub.store.save_meta(kind, repo, meta)
        self._send(200, {"newStatus": pr["status"]})

    def _resolve(self, groups: dict[str, Any], query: dict[str, Any], body: bytes) -> None:
        kind, repo = self._repo(groups)
        sha = self._revision(kind, repo, groups["rev"])
        files = self._entries(kind, repo, sha)
        entry = files.get(groups["path"])
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", extra={})
        headers = {"X-Repo-Commit": sha, "ETag": f'"{entry["lfs"] or entry["blob"]}"', "Accept-Ranges": "bytes"}
        if entry["lfs"]:
            headers |= {"X-Linked-Etag": f'"{entry["lfs"]}"', "X-Linked-Size": str(entry["size"])}
        size = entry["size"]
        found = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        start, end = (int(found[1]), min(int(found[2]) if found[2] else size - 1, size - 1)) if found else (0, size - 1)
        data = self.hub.store.read_range(entry, start, end - start + 1) if self.command == "GET" else b""
        if found:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if self.command == "HEAD":
            self.send_response(206 if found else 200)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(end - start + 1))
            self.end_headers()
            return
        self._send(206 if found else 200, raw=data, headers=headers)
