"""The local Hub-compatible server cannot be led outside its store, written without this run's token, made to
store bytes it did not check, made to drop a commit by a merge, or made to drop a connection by a malformed
request. Hostile requests go by raw HTTP; the legitimate path by the real huggingface_hub client."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from hubkit.hub.server import HubServer


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "hub" / "store"


@pytest.fixture
def hub(root: Path) -> Iterator[HubServer]:
    with HubServer(root) as server:
        yield server


def api(hub: HubServer) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=hub.token)


def outside(tmp_path: Path, root: Path) -> set[str]:
    """Every path under the test's folder that is not in the store."""
    return {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if not p.is_relative_to(root)}


def call(
    hub: HubServer,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    token: str | None = "run",
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request; ``token="run"`` sends the server's token, None sends none."""
    host, port = hub.httpd.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=30)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {hub.token if token == 'run' else token}"
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def raw(hub: HubServer, request: bytes, shut_write: bool = False) -> tuple[int, dict[str, str], bytes]:
    """Bytes as they are on the wire (e.g. a body shorter than its Content-Length); the answer must come."""
    host, port = hub.httpd.server_address[:2]
    with socket.create_connection((str(host), port), timeout=30) as sock:
        sock.sendall(request)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def error(body: bytes) -> str:
    message = json.loads(body)["error"]
    assert isinstance(message, str) and message
    return message


def make_repo(hub: HubServer, repo: str = "org/model") -> None:
    api(hub).create_repo(repo)
    api(hub).upload_file(path_or_fileobj=b"hello\n", path_in_repo="notes.txt", repo_id=repo)


# ------------------------------------------------------------------------------------------------ the store's edge


BAD_REPOS = [
    {"organization": "../..", "name": "escape"},
    {"organization": "..", "name": ".."},
    {"organization": "/tmp", "name": "escape"},
    {"organization": "a/../../..", "name": "escape"},
    {"name": "escape", "type": "../../../x"},
    {"name": "escape", "type": "/abs"},
    {"name": "escape", "type": "models"},
    {"name": "escape", "type": "bucket"},
    {"name": ".."},
    {"name": "a..b"},
    {"name": "a--b"},
    {"name": "-lead"},
    {"name": "trail."},
    {"name": "x" * 97},
    {"name": "name.git"},
    {"name": "sp ace"},
    {"name": "ünicode"},
    {"name": ""},
    {"name": 7},
    {"name": "ok", "organization": "-org"},
]


def test_create_repo_refuses_ids_types_and_organizations_outside_the_rules(
    hub: HubServer, root: Path, tmp_path: Path
) -> None:
    before = outside(tmp_path, root)
    for fields in BAD_REPOS:
        status, headers, body = call(hub, "POST", "/api/repos/create", fields)
        assert status == 400, (fields, body)
        assert error(body) and headers["content-type"] == "application/json"
    assert outside(tmp_path, root) == before
    assert not (root / "repos").exists()
    for repo_type, name in [("model", "Kimi-K2.7_NVFP4.v1"), ("dataset", "calib"), ("space", "demo")]:
        api(hub).create_repo(f"org/{name}", repo_type=repo_type, space_sdk="static" if repo_type == "space" else None)
    assert api(hub).model_info("org/Kimi-K2.7_NVFP4.v1").id == "org/Kimi-K2.7_NVFP4.v1"


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/%2e%2e%2F%2e%2e%2F%2e%2e%2Frepos%2Fmodels%2Forg/secret",
        "/api/models/..%2F..%2F..%2Frepos%2Fmodels%2Forg/secret/tree/main",
        "/api/models/%2e%2e%2F%2e%2e%2F%2e%2e%2Frepos%2Fmodels%2Forg/secret/refs",
        "/%2e%2e%2F%2e%2e%2F%2e%2e%2Frepos%2Fmodels%2Forg/secret/resolve/main/secret.txt",
        "/api/models/{absolute}/secret",
    ],
)
def test_an_encoded_dot_dot_never_reads_a_repo_outside_the_store(tmp_path: Path, root: Path, path: str) -> None:
    path = path.replace("{absolute}", quote(str(tmp_path / "hub" / "repos" / "models" / "org"), safe=""))
    with HubServer(tmp_path / "hub") as neighbour:  # a Hub store one level above this one
        api(neighbour).create_repo("org/secret")
        api(neighbour).upload_file(path_or_fileobj=b"top secret\n", path_in_repo="secret.txt", repo_id="org/secret")
    with HubServer(root) as hub:
        make_repo(hub)  # repos/models/org exists: a path through it can climb out
        status, _, body = call(hub, "GET", path, token=None)
    assert 400 <= status < 500 and b"secret.txt" not in body and b"top secret" not in body


@pytest.mark.parametrize(
    "path",
    [
        "/api/models/org/model/tree/%2e%2e",
        "/api/models/org/model/tree/main/%2e%2e%2F%2e%2e",
        "/org/model/resolve/main/%2e%2e%2F%2e%2e%2Frepo.json",
        "/org/model/resolve/main/%2Fetc%2Fpasswd",
        "/org/model/resolve/main/notes.txt%00",
        "/org/model/resolve/..%2F..%2Fmain/notes.txt",
        "/api/models/org/model/revision/main%00",
    ],
)
def test_revisions_and_paths_are_checked_after_decoding(hub: HubServer, path: str) -> None:
    make_repo(hub)
    status, _, body = call(hub, "GET", path, token=None)
    assert status == 400, body
    assert error(body)


def test_double_encoding_stays_literal(hub: HubServer) -> None:
    make_repo(hub)
    assert call(hub, "POST", "/api/models/org/model/branch/a%252Fb", {})[0] == 200
    assert {b.name for b in api(hub).list_repo_refs("org/model").branches} == {"main", "a%2Fb"}
    status, headers, _ = call(hub, "GET", "/api/models/org/model/revision/%252e%252e", token=None)
    assert status == 404 and headers["x-error-code"] == "RevisionNotFound"
    status, _, body = call(hub, "GET", "/org/model/resolve/main/notes%252etxt", token=None)
    assert status == 404 and b"hello" not in body
    status, _, body = call(hub, "GET", "/org/model/resolve/main/notes%2etxt", token=None)
    assert status == 200 and body == b"hello\n"  # decoded once: an encoded dot is a dot


def test_commit_paths_and_branch_names_are_checked(hub: HubServer, root: Path, tmp_path: Path) -> None:
    make_repo(hub)
    before = outside(tmp_path, root)
    for path in ["../../escape.txt", "/abs.txt", "a/./b", "a//b", "nul\x00.txt"]:
        lines = [{"key": "header", "value": {"summary": "x"}}, {"key": "file", "value": {"path": path, "content": "x"}}]
        ndjson = b"\n".join(json.dumps(line).encode() for line in lines)
        status, _, body = call(hub, "POST", "/api/models/org/model/commit/main", ndjson)
        assert status == 400, (path, body)
    for name in ["..", "a..b", "%2e%2e", "-x", "a%00b", "a~1", "a%20b"]:
        status, _, body = call(hub, "POST", f"/api/models/org/model/branch/{name}", {})
        assert status == 400, (name, body)
    assert [b.name for b in api(hub).list_repo_refs("org/model").branches] == ["main"]
    assert set(api(hub).list_repo_files("org/model")) == {".gitattributes", "notes.txt"}
    assert outside(tmp_path, root) == before


def test_every_store_path_is_proven_inside_it(hub: HubServer, root: Path) -> None:
    from hubkit.hub.server import HubError

    with pytest.raises(HubError):
        hub.store.object_path("../../" + "0" * 58)
    (root / "repos" / "models" / "org").mkdir(parents=True)
    (root / "repos" / "models" / "org" / "linked").symlink_to(root.parent)  # a link planted in the store
    with pytest.raises(HubError, match="outside"):
        hub.store.exists("models", "org/linked")


# ------------------------------------------------------------------------------------------------ the token


WRITES = [
    ("POST", "/api/repos/create", {"name": "new"}),
    ("POST", "/api/models/org/model/preupload/main", {"files": []}),
    ("POST", "/api/models/org/model/commit/main", b'{"key": "header", "value": {"summary": "x"}}'),
    ("POST", "/api/models/org/model/branch/dev", {}),
    ("POST", "/api/models/org/model/tag/main", {"tag": "v1"}),
    ("POST", "/api/models/org/model/discussions", {"title": "x", "pullRequest": True}),
    ("POST", "/api/models/org/model/discussions/1/merge", {}),
    ("POST", "/api/models/org/model/discussions/1/status", {"status": "closed"}),
    ("POST", "/org/model.git/info/lfs/objects/batch", {"operation": "upload", "objects": []}),
    ("GET", "/api/whoami-v2", None),
    ("DELETE", "/api/models/org/model/branch/main", None),
    ("DELETE", "/api/models/org/model/tag/v1", None),
    ("DELETE", "/api/repos/delete", {"name": "model", "organization": "org"}),
    ("PUT", "/api/models/org/model/settings", {"private": True}),
]


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_every_write_needs_this_runs_token(hub: HubServer, tmp_path: Path, method: str, path: str, body: Any) -> None:
    make_repo(hub)
    head = api(hub).model_info("org/model").sha
    with HubServer(tmp_path / "other") as other:
        another_run = other.token
    for token in [None, "", "hf_test_token", "hf_local_release_token", another_run, hub.token + "x"]:
        status, _, answer = call(hub, method, path, body, token=token)
        assert status == 401, (token, answer)
        assert error(answer)
    status, _, answer = call(hub, method, path, body, headers={"Authorization": f"Basic {hub.token}"}, token=None)
    assert status == 401, answer
    info = api(hub).model_info("org/model")
    refs = api(hub).list_repo_refs("org/model")
    assert info.sha == head and [b.name for b in refs.branches] == ["main"] and not refs.tags
    assert not list(api(hub).get_repo_discussions("org/model"))
    assert not (hub.store.root / "repos" / "models" / "tester").exists()


def test_each_run_has_its_own_token(tmp_path: Path) -> None:
    with HubServer(tmp_path / "a") as first, HubServer(tmp_path / "b") as second:
        assert first.token != second.token and len(first.token) >= 40
        assert call(first, "GET", "/api/whoami-v2")[0] == 200
        assert call(first, "GET", "/api/whoami-v2", token=second.token)[0] == 401
        make_repo(first)
        assert call(first, "GET", "/org/model/resolve/main/notes.txt", token=None)[2] == b"hello\n"  # reads stay open


def lfs_href(hub: HubServer, data: bytes, repo: str = "org/model") -> str:
    """The upload address an authenticated batch call hands out for ``data``."""
    objects = [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}]
    status, _, body = call(
        hub, "POST", f"/{repo}.git/info/lfs/objects/batch", {"operation": "upload", "objects": objects}
    )
    assert status == 200, body
    return str(json.loads(body)["objects"][0]["actions"]["upload"]["href"]).removeprefix(hub.endpoint)


def objects(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "objects").iterdir() if not p.name.startswith("blob-"))


def test_an_lfs_upload_needs_the_address_an_authenticated_batch_call_handed_out(hub: HubServer, root: Path) -> None:
    make_repo(hub)
    data = b"weights" * 1000
    oid = hashlib.sha256(data).hexdigest()
    for path in [f"/lfs-upload/{oid}", f"/lfs-upload/{oid}/{'A' * 32}", f"/lfs-complete/{oid}/{'A' * 32}"]:
        status, _, body = call(hub, "PUT" if "upload" in path else "POST", path, data, token=None)
        assert status in (401, 403, 404), (path, body)
    assert objects(root) == []
    href = lfs_href(hub, data)
    other = lfs_href(hub, b"other bytes")
    assert call(hub, "PUT", other.replace(other.split("/")[2], oid), data, token=None)[0] == 403  # not its ticket
    status, _, _ = call(hub, "PUT", href, data, token=None)
    assert status == 200 and objects(root) == [f"lfs-{oid}"]


# ------------------------------------------------------------------------------------------------ stored bytes


def test_a_wrong_or_short_upload_stores_nothing(hub: HubServer, root: Path) -> None:
    make_repo(hub)
    data = b"0123456789" * 1000
    href = lfs_href(hub, data)
    status, _, body = call(hub, "PUT", href, b"X" + data[1:], token=None)
    assert status == 400 and "sha256" in error(body)
    status, _, body = call(hub, "PUT", href, data[:5000], token=None)
    assert status == 400 and objects(root) == []
    head = f"PUT {href} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(data)}\r\n\r\n".encode()
    status, headers, body = raw(hub, head + data[:4000], shut_write=True)  # the connection ends mid-body
    assert status == 400 and "ended" in error(body) and headers["connection"] == "close"
    assert objects(root) == []
    chunked = f"PUT {href} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
    assert raw(hub, chunked + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), b"Y" * len(data)))[0] == 400
    assert objects(root) == []
    pieces = b"".join(b"%x\r\n%s\r\n" % (len(data[i : i + 999]), data[i : i + 999]) for i in range(0, len(data), 999))
    assert raw(hub, chunked + pieces + b"0\r\n\r\n")[0] == 200  # the same address takes the right bytes
    assert objects(root) == [f"lfs-{hashlib.sha256(data).hexdigest()}"]


def test_a_moment_of_full_disk_leaves_no_object_and_the_push_fails(
    hubkit, hub: HubServer, root: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    hub.faults.disk_full_after_bytes = 1000
    result = hubkit("push", tiny, "--repo", "org/full", "--no-validate")
    assert result.code in (1, 2) and "VERIFIED" not in result.out, result.out
    assert "507" in result.err and len(result.err.strip().splitlines()) == 1, result.err
    for item in (root / "objects").iterdir():  # no partial object, no temporary file left behind
        assert not item.name.startswith("."), item.name
        if item.name.startswith("lfs-"):
            assert hashlib.sha256(item.read_bytes()).hexdigest() == item.name.removeprefix("lfs-")
    again = hubkit("push", tiny, "--repo", "org/full", "--no-validate", "--format", "json")
    assert again.code == 0 and again.json()["verified"] is True, again.err


def upload_by_lfs(hub: HubServer, data: bytes, path: str, tmp_path: Path) -> None:
    """An upload by classic LFS (a file object makes the client skip Xet, which this Hub lacks, as hubkit does)."""
    local = tmp_path / "upload.bin"
    local.write_bytes(data)
    with open(local, "rb") as handle:
        api(hub).upload_file(path_or_fileobj=handle, path_in_repo=path, repo_id="org/model")


def test_a_damaged_object_is_never_served_and_is_uploaded_again(hub: HubServer, root: Path, tmp_path: Path) -> None:
    make_repo(hub)
    data = bytes(range(256)) * 100
    upload_by_lfs(hub, data, "w.safetensors", tmp_path)
    stored = root / "objects" / f"lfs-{hashlib.sha256(data).hexdigest()}"
    with open(stored, "r+b") as handle:
        handle.truncate(1000)  # what a full disk once left behind
    status, _, body = call(hub, "GET", "/org/model/resolve/main/w.safetensors", token=None)
    assert status == 500 and b"\x00\x01\x02" not in body and error(body)
    status, _, _ = call(hub, "GET", "/org/model/resolve/main/w.safetensors", token=None, headers={"Range": "bytes=0-9"})
    assert status == 500
    upload_by_lfs(hub, data, "w2.safetensors", tmp_path)
    assert stored.read_bytes() == data  # the batch call saw it damaged and asked for the bytes again


def test_multipart_parts_are_checked_and_joined_on_disk(tmp_path: Path) -> None:
    with HubServer(tmp_path / "store", multipart_chunk=1000) as hub:
        make_repo(hub)
        data = bytes(range(256)) * 10  # 3 parts
        oid = hashlib.sha256(data).hexdigest()
        status, _, body = call(
            hub,
            "POST",
            "/org/model.git/info/lfs/objects/batch",
            {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
        )
        upload = json.loads(body)["objects"][0]["actions"]["upload"]
        parts = [upload["header"][str(n)].removeprefix(hub.endpoint) for n in (1, 2, 3)]
        complete = upload["href"].removeprefix(hub.endpoint)
        assert call(hub, "PUT", parts[0], data[:999], token=None)[0] == 400  # short part
        etags = []
        for number, path in enumerate(parts):
            status, headers, _ = call(hub, "PUT", path, data[number * 1000 : (number + 1) * 1000], token=None)
            assert status == 200
            etags.append(headers["etag"])
        payload = {"oid": oid, "parts": [{"partNumber": n + 1, "etag": e} for n, e in enumerate(etags)]}
        assert call(hub, "POST", complete, {"oid": oid, "parts": payload["parts"][:2]}, token=None)[0] == 400
        assert call(hub, "POST", complete, b"{broken", token=None)[0] == 400
        assert call(hub, "POST", complete.replace(complete.split("/")[-1], "B" * 32), payload, token=None)[0] == 403
        assert call(hub, "POST", complete, payload, token=None)[0] == 200
        assert (tmp_path / "store" / "objects" / f"lfs-{oid}").read_bytes() == data
        assert not list((tmp_path / "store" / "objects").glob("parts-*"))


# ------------------------------------------------------------------------------------------------ merges


def test_a_merge_refuses_when_the_branch_moved(hub: HubServer) -> None:
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HfHubHTTPError

    make_repo(hub)
    client = api(hub)
    opened = client.create_commit(
        "org/model", [CommitOperationAdd("release.txt", b"release\n")], commit_message="release", create_pr=True
    )
    client.upload_file(path_or_fileobj=b"another push\n", path_in_repo="other.txt", repo_id="org/model")
    moved = client.model_info("org/model").sha
    with pytest.raises(HfHubHTTPError) as refused:
        client.merge_pull_request("org/model", opened.pr_num)
    assert refused.value.response.status_code == 409
    assert client.model_info("org/model").sha == moved  # main kept the other push
    assert "other.txt" in client.list_repo_files("org/model")


def test_an_atomic_push_whose_branch_moved_fails_saying_rerun_then_the_rerun_keeps_both(
    hubkit, hub: HubServer, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", hub.token)
    api(hub).create_repo("org/atomic")

    def another_push(applied: int) -> None:
        if applied == 1:  # the pull request was just opened
            api(hub).upload_file(path_or_fileobj=b"another push\n", path_in_repo="other.txt", repo_id="org/atomic")

    hub.faults.after_commit = another_push
    result = hubkit("push", tiny, "--repo", "org/atomic", "--atomic", "--no-validate")
    hub.faults.after_commit = None
    errors = [line for line in result.err.splitlines() if not line.startswith("hubkit: push: ")]  # not progress
    assert result.code == 1 and "rerun the push" in result.err and len(errors) == 1, result.err
    files = api(hub).list_repo_files("org/atomic")
    assert "other.txt" in files and "README.md" not in files  # nothing of the release on main, nothing lost
    assert [d.status for d in api(hub).get_repo_discussions("org/atomic")] == ["closed"]
    again = hubkit("push", tiny, "--repo", "org/atomic", "--atomic", "--no-validate", "--format", "json")
    assert again.code == 0, again.err
    assert again.json()["merged"] is True
    files = api(hub).list_repo_files("org/atomic")
    assert "other.txt" in files and "README.md" in files


# ------------------------------------------------------------------------------------------------ malformed requests


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/api/repos/create", b"{not json", 400),
        ("POST", "/api/repos/create", b"[1, 2]", 400),
        ("POST", "/api/repos/create", b'{"name": "x", "private": "yes"}', 400),
        ("POST", "/api/repos/create", b"\xff\xfe", 400),
        ("POST", "/api/models/org/model/commit/main", b"not json\n", 400),
        ("POST", "/api/models/org/model/commit/main", b'{"key": "file", "value": "x"}', 400),
        ("POST", "/api/models/org/model/commit/main", b'{"key": "unknown", "value": {}}', 400),
        ("POST", "/api/models/org/model/commit/main", b'{"key": "file", "value": {"path": "a", "content": 5}}', 400),
        (
            "POST",
            "/api/models/org/model/commit/main",
            b'{"key": "file", "value": {"path": "a", "content": "!!", "encoding": "base64"}}',
            400,
        ),
        (
            "POST",
            "/api/models/org/model/commit/main",
            b'{"key": "lfsFile", "value": {"path": "w.bin", "oid": "../../x", "size": 1}}',
            400,
        ),
        ("POST", "/api/models/org/model/preupload/main", b'{"files": "x"}', 400),
        ("POST", "/api/models/org/model/preupload/main", b'{"files": [{"path": "a", "size": -1, "sample": ""}]}', 400),
        ("POST", "/org/model.git/info/lfs/objects/batch", b'{"objects": [{"oid": "zz", "size": 1}]}', 400),
        (
            "POST",
            "/org/model.git/info/lfs/objects/batch",
            b'{"objects": [{"oid": "' + b"a" * 64 + b'", "size": -5}]}',
            400,
        ),
        ("POST", "/org/model.git/info/lfs/objects/batch", b'{"objects": 3}', 400),
        ("POST", "/api/models/org/model/tag/main", b'{"tag": ["v1"]}', 400),
        ("POST", "/api/models/org/model/discussions/1/status", b'{"status": "merged"}', 400),
        ("POST", "/api/models/org/model/paths-info/main", b"paths=\xff\xfe", 400),
        ("GET", "/api/models/org/model/tree/main?cursor=abc", None, 400),
        ("GET", "/api/models/org/model/tree/main?cursor=-5", None, 400),
        ("POST", "/api/validate-yaml", b"[", 400),
        ("GET", "/no/such/route", None, 404),
    ],
)
def test_malformed_requests_get_a_4xx_in_the_hubs_shape(
    hub: HubServer, method: str, path: str, body: bytes | None, status: int
) -> None:
    make_repo(hub)
    answer, headers, text = call(hub, method, path, body)
    assert answer == status, text
    assert error(text) and headers["x-error-message"]
    assert call(hub, "GET", "/api/models/org/model", token=None)[0] == 200  # still serving


@pytest.mark.parametrize(
    "value", ["bytes=abc", "bytes=5-2", "bytes=0-1,3-4", "bytes=6-", "bytes=600-700", "bytes=-0", "items=0-1", "bytes="]
)
def test_bad_ranges_get_416(hub: HubServer, value: str) -> None:
    make_repo(hub)  # notes.txt: 6 bytes
    status, headers, body = call(hub, "GET", "/org/model/resolve/main/notes.txt", token=None, headers={"Range": value})
    assert status == 416, body
    assert headers["content-range"] == "bytes */6" and error(body)


def test_good_ranges_are_served(hub: HubServer) -> None:
    make_repo(hub)
    for value, expected, content_range in [
        ("bytes=1-3", b"ell", "bytes 1-3/6"),
        ("bytes=2-", b"llo\n", "bytes 2-5/6"),
        ("bytes=-2", b"o\n", "bytes 4-5/6"),
        ("bytes=4-100", b"o\n", "bytes 4-5/6"),
    ]:
        status, headers, body = call(hub, "GET", "/org/model/resolve/main/notes.txt", None, None, {"Range": value})
        assert (status, body, headers["content-range"]) == (206, expected, content_range)


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"PUT /lfs-upload/{oid}/{ticket} HTTP/1.1\r\nHost: x\r\n\r\n", 411),  # no Content-Length
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        (b"POST /api/repos/create HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{}", 400),  # ends early
    ],
)
def test_broken_framing_gets_a_4xx_not_a_dropped_connection(
    hub: HubServer, root: Path, request_bytes: bytes, status: int
) -> None:
    make_repo(hub)
    if b"{oid}" in request_bytes:
        href = lfs_href(hub, b"data").encode()
        request_bytes = request_bytes.replace(b"/lfs-upload/{oid}/{ticket}", href)
    answer, _, _ = raw(hub, request_bytes, shut_write=True)
    assert answer == status
    assert objects(root) == []
    assert call(hub, "GET", "/api/models/org/model", token=None)[0] == 200


def test_an_early_answer_reads_the_body_so_the_client_gets_it(hub: HubServer) -> None:
    make_repo(hub)
    body = b"w" * 3_000_000  # refused before a byte of it is stored
    oid = hashlib.sha256(body).hexdigest()
    request = b"PUT /lfs-upload/%s/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (
        oid.encode(),
        b"A" * 32,
        len(body),
    )
    status, headers, answer = raw(hub, request + body)
    assert status == 403 and error(answer) and headers.get("connection") != "close"
