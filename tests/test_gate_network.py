"""The network cannot hang or fool hubkit: every wait is bounded, every answer capped, listings that go round
refused, offline is exit 2 at once, endpoint credentials are never shown, and the previous card is read from
this run's endpoint, never from the shared cache.

The hostile servers here are real HTTP servers on 127.0.0.1, each stopping by itself.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SUBPROCESS_ENV, example_project

SHA = "a" * 40
CONFIG = json.dumps({"model_type": "kimi_k2", "architectures": ["DeepseekV3ForCausalLM"]}).encode().ljust(2500)
MiB = 1024**2


def one_line(err: str) -> bool:
    return len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------ servers


class Hostile(ThreadingHTTPServer):
    """A Hub that answers ``model_info`` and ``whoami`` like the Hub, and everything else as ``answer`` says."""

    daemon_threads = True

    def __init__(self, answer: Callable[[BaseHTTPRequestHandler], None], everything: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answer, self.everything = answer, everything
        self.sent = 0  # body bytes written to clients
        self.pages = 0  # tree pages served

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: Hostile
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms wait between the headers and the body

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if self.server.everything:
            self.server.answer(self)
        elif path == "/api/whoami-v2":
            send_json(self, {"name": "someone", "type": "user", "auth": {}})
        elif path.startswith("/api/models/") and "/tree/" not in path:
            send_json(self, {"id": "org/model", "sha": SHA, "siblings": [{"rfilename": "config.json"}]})
        else:
            self.server.answer(self)

    do_HEAD = do_POST = do_GET


def send_json(handler: BaseHTTPRequestHandler, data: Any, headers: dict[str, str] | None = None) -> None:
    body = json.dumps(data).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    for key, value in (headers or {}).items():
        handler.send_header(key, value)
    handler.end_headers()
    handler.wfile.write(body)


def stream(handler: BaseHTTPRequestHandler, status: int, total: int, length: str | None = None) -> None:
    """Send ``total`` bytes (in 1 MiB writes) until the client hangs up; count what went out."""
    handler.send_response(status)
    if length is not None:
        handler.send_header("Content-Length", length)
    handler.send_header("Connection", "close")
    handler.end_headers()
    chunk = b"x" * MiB
    try:
        for _ in range(total // MiB):
            handler.wfile.write(chunk)
            handler.server.sent += len(chunk)
    except OSError:
        pass  # the client hung up, as it should
    handler.close_connection = True


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler], None]], Hostile]]:
    """Start a hostile server and point HF_ENDPOINT at it (short timeouts); it stops with the test."""
    servers: list[Hostile] = []

    def start(answer: Callable[[BaseHTTPRequestHandler], None], everything: bool = False) -> Hostile:
        server = Hostile(answer, everything)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HUBKIT_HUB_TIMEOUT", "2")
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def tree_files(handler: BaseHTTPRequestHandler) -> None:
    """One page listing config.json (for servers whose trouble is elsewhere)."""
    send_json(handler, [{"type": "file", "oid": "1" * 40, "size": len(CONFIG), "path": "config.json"}])


@pytest.fixture
def silent() -> Iterator[str]:
    """An endpoint that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=64)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def run_hubkit(*args: str, env: dict[str, str], limit_s: float = 40) -> tuple[subprocess.CompletedProcess[str], float]:
    """``hubkit ARGS`` in a subprocess (a hang fails the test instead of stalling it), and how long it took."""
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "hubkit", *args],
        env={**SUBPROCESS_ENV, **env}, capture_output=True, text=True, timeout=limit_s,
    )  # fmt: skip
    return done, time.monotonic() - start


# ------------------------------------------------------------------------------------------------ timeouts


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_validate_against_a_server_that_never_answers_ends_within_the_timeout(silent: str) -> None:
    done, took = run_hubkit("validate", "hf://org/model", env={"HF_ENDPOINT": silent, "HUBKIT_HUB_TIMEOUT": "1"})
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "cannot reach the Hub (timed out)" in done.stderr, done.stderr
    assert took < 20


def test_push_against_a_server_that_never_answers_ends_within_the_timeout(silent: str, tiny: Path) -> None:
    env = {"HF_ENDPOINT": silent, "HUBKIT_HUB_TIMEOUT": "1", "HF_TOKEN": "hf_" + "t" * 30}
    done, took = run_hubkit("push", str(tiny), "--repo", "org/model", "--no-validate", env=env)
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "HUBKIT_HUB_TIMEOUT" in done.stderr, done.stderr
    assert took < 20


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
def test_a_stalled_range_read_ends_within_the_timeout(hubkit, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server lists the files, then never answers the read of one."""
    stalled = threading.Event()

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if "/tree/" in handler.path:
            tree_files(handler)
        else:
            stalled.wait(10)  # never answers within the client's timeout

    serve(answer)
    monkeypatch.setenv("HUBKIT_HUB_TIMEOUT", "0.5")
    start = time.monotonic()
    result = hubkit("validate", "hf://org/model")
    stalled.set()
    assert result.code == 2, result.err
    assert one_line(result.err) and "config.json" in result.err
    assert time.monotonic() - start < 10  # 3 tries of 0.5 s, 1 + 2 s apart


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
def test_a_retry_after_of_a_day_is_waited_no_longer_than_the_timeout(serve) -> None:
    """The listing is answered 429 with ``Retry-After: 86400`` once; the client waits the timeout, not a day."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.server.pages += 1
        if "/tree/" in handler.path and handler.server.pages == 1:
            handler.send_response(429)
            handler.send_header("Retry-After", "86400")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif "/tree/" in handler.path:
            tree_files(handler)
        else:
            start, end = map(int, handler.headers["Range"].removeprefix("bytes=").split("-"))
            body = CONFIG[start : end + 1]
            handler.send_response(206)
            handler.send_header("Content-Range", f"bytes {start}-{start + len(body) - 1}/{len(CONFIG)}")
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

    server = serve(answer)
    done, took = run_hubkit(
        "validate", "hf://org/model", env={"HF_ENDPOINT": server.endpoint, "HUBKIT_HUB_TIMEOUT": "1"}
    )
    assert done.returncode in (0, 1), done.stderr  # the checkpoint was read: its findings are another matter
    assert server.pages >= 2 and took < 20, took


@pytest.mark.parametrize("value", ["soon", "0", "-1", "1,2,3", "inf"])
def test_a_bad_timeout_setting_is_exit_2(hubkit, serve, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    serve(tree_files)
    monkeypatch.setenv("HUBKIT_HUB_TIMEOUT", value)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2 and one_line(result.err) and "HUBKIT_HUB_TIMEOUT" in result.err, result.err


# ------------------------------------------------------------------------------------------------ listings


def test_a_tree_page_that_names_itself_as_next_is_refused(hubkit, serve) -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.server.pages += 1
        if handler.server.pages > 50:  # the server gives up in the end; hubkit must have stopped long before
            tree_files(handler)
            return
        url = handler.server.endpoint + handler.path
        entry = {"type": "file", "oid": "1" * 40, "size": len(CONFIG), "path": "config.json"}
        send_json(handler, [entry], {"Link": f'<{url}>; rel="next"'})

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "next page" in result.err
    assert server.pages <= 2


def test_tree_pages_that_go_round_in_a_cycle_are_refused(hubkit, serve) -> None:
    """Page A leads to page B, which leads back to A."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.server.pages += 1
        on_b = "cursor=b" in handler.path
        base = handler.server.endpoint + handler.path.split("?")[0]
        entry = {"type": "file", "oid": "1" * 40, "size": len(CONFIG), "path": "b.json" if on_b else "config.json"}
        if handler.server.pages > 50:
            send_json(handler, [entry])
            return
        send_json(handler, [entry], {"Link": f'<{base}?recursive=true&cursor={"a" if on_b else "b"}>; rel="next"'})

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "cycle" in result.err
    assert server.pages <= 4


def test_a_listing_that_never_ends_is_refused(hubkit, serve) -> None:
    """Empty pages, each naming a new next page: no entry repeats, and still the listing must end."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.server.pages += 1
        base = handler.server.endpoint + handler.path.split("?")[0]
        more = handler.server.pages < 1_100  # the server gives up in the end; hubkit must have stopped before
        send_json(handler, [], {"Link": f'<{base}?cursor={handler.server.pages}>; rel="next"'} if more else {})

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "more than 1,000 pages" in result.err
    assert server.pages <= 1_000


def test_push_refuses_a_listing_that_goes_round(hubkit, serve, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.server.pages += 1
        if "/tree/" not in handler.path:
            handler.send_error(404)
            return
        entry = {"type": "file", "oid": "1" * 40, "size": 1, "path": "config.json"}
        url = handler.server.endpoint + handler.path
        send_json(handler, [entry], {"Link": f'<{url}>; rel="next"'} if handler.server.pages < 50 else {})

    serve(answer)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t" * 30)
    result = hubkit("push", tiny, "--repo", "org/model", "--no-validate", "--dry-run")
    assert result.code == 2, result.err
    assert one_line(result.err) and "next page" in result.err


# ------------------------------------------------------------------------------------------------ capped answers


@pytest.mark.parametrize("declared", [True, False], ids=["with-length", "without-length"])
def test_a_server_that_ignores_range_is_not_read_whole(hubkit, serve, declared: bool) -> None:
    """config.json is 2.5 KB; the server answers its Range request with a 200 MiB body."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if "/tree/" in handler.path:
            tree_files(handler)
        else:
            stream(handler, 200, 200 * MiB, str(200 * MiB) if declared else None)

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "ignored the Range request" in result.err
    assert server.sent < 32 * MiB  # what the socket buffers took before hubkit hung up, not the 200 MiB


def test_a_range_answer_longer_than_asked_is_refused(hubkit, serve) -> None:
    """A 206 that claims (and sends) far more than the range asked for."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        if "/tree/" in handler.path:
            tree_files(handler)
        else:
            stream(handler, 206, 200 * MiB, str(1024 * MiB))

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "more than the 2,500 bytes asked for" in result.err
    assert server.sent < 32 * MiB


def test_an_oversized_api_answer_is_refused(hubkit, serve) -> None:
    """A tree listing that claims 1 GiB."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        stream(handler, 200, 100 * MiB, str(1024 * MiB))

    server = serve(answer)
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "larger than 64 MiB" in result.err
    assert server.sent < 32 * MiB


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
def test_an_answer_that_drips_is_cut_off(hubkit, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    """The listing comes a byte at a time, each within the read timeout: the whole answer has a deadline too."""

    def answer(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        try:
            for _ in range(100):
                handler.wfile.write(b" ")
                handler.wfile.flush()
                time.sleep(0.1)
        except OSError:
            pass

    serve(answer)
    monkeypatch.setenv("HUBKIT_HUB_TIMEOUT", "0.25")
    start = time.monotonic()
    result = hubkit("validate", "hf://org/model")
    assert result.code == 2, result.err
    assert one_line(result.err) and "too slowly" in result.err
    assert time.monotonic() - start < 6  # 10 read timeouts, and one more


def not_json(handler: BaseHTTPRequestHandler) -> None:
    body = b"<html>a login page, say</html>"
    handler.send_response(200)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.mark.parametrize("args", [("validate", "hf://org/model"), ("push", "{tiny}", "--repo", "org/model")])
def test_answers_that_are_not_json_are_exit_2(hubkit, serve, tiny: Path, monkeypatch: pytest.MonkeyPatch, args) -> None:
    serve(not_json, everything=True)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t" * 30)
    result = hubkit(*(str(tiny) if a == "{tiny}" else a for a in args), *(["--no-validate"] if "push" in args else []))
    assert result.code == 2 and one_line(result.err) and "not JSON" in result.err, result.err


# ------------------------------------------------------------------------------------------------ offline


def test_offline_push_is_exit_2_at_once(tiny: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "HF_TOKEN": "hf_" + "t" * 30, "HF_ENDPOINT": "http://127.0.0.1:9"}
    done, took = run_hubkit("push", str(tiny), "--repo", "org/model", "--no-validate", env=env)
    assert done.returncode == 2, done.stderr
    assert one_line(done.stderr) and "HF_HUB_OFFLINE is set" in done.stderr
    assert took < 15  # the interpreter's start included; no retry


@pytest.mark.parametrize("args", [("validate", "hf://org/model"), ("push", "{tiny}", "--repo", "org/model")])
def test_offline_is_exit_2_in_process_too(hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch, args) -> None:
    """HF_HUB_OFFLINE set after huggingface_hub was imported counts as well."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t" * 30)
    start = time.monotonic()
    result = hubkit(*(str(tiny) if a == "{tiny}" else a for a in args))
    assert result.code == 2 and one_line(result.err) and "HF_HUB_OFFLINE is set" in result.err, result.err
    assert time.monotonic() - start < 5


# ------------------------------------------------------------------------------------------------ credentials


def test_endpoint_credentials_never_shown_by_push(tiny: Path) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    env = {"HF_ENDPOINT": f"http://someone:s3cret-pass@127.0.0.1:{port}", "HF_TOKEN": "hf_" + "t" * 30}
    done, _ = run_hubkit("-vv", "push", str(tiny), "--repo", "org/model", "--no-validate", env=env)
    assert done.returncode == 2, done.stderr
    assert "s3cret-pass" not in done.stdout + done.stderr
    assert "***@127.0.0.1" in done.stderr


def test_endpoint_credentials_never_shown_in_logs_or_errors(hubkit, serve, monkeypatch) -> None:
    """-vv logs each request's URL; a refused answer names it; neither shows the password."""
    server = serve(lambda handler: stream(handler, 200, 2 * MiB, str(1024 * MiB)))
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint.replace("http://", "http://someone:s3cret-pass@"))
    result = hubkit("-vv", "validate", "hf://org/model")
    assert result.code == 2, result.err
    assert "s3cret-pass" not in result.out + result.err
    assert "***@127.0.0.1" in result.err


def test_endpoint_credentials_never_shown_in_the_release_summary(hubkit, tmp_path: Path, monkeypatch) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    endpoint = f"http://someone:s3cret-pass@127.0.0.1:{port}"
    folder = example_project(tmp_path, lambda text: text.replace('endpoint = "local"', f'endpoint = "{endpoint}"'))
    summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("HF_TOKEN", "hf_" + "t" * 30)
    for output_format in ("github", "json"):
        result = hubkit("release", folder / "hubkit.toml", "--from", "push", "--until", "push",
                        "--format", output_format)  # fmt: skip
        assert result.code in (1, 2), result.err
        shown = result.out + result.err
        assert "s3cret-pass" not in shown and "***@127.0.0.1" in shown, shown
    assert "s3cret-pass" not in summary.read_text() and "***@127.0.0.1" in summary.read_text()
    for record in folder.rglob("*.json"):
        assert "s3cret-pass" not in record.read_text()


# ------------------------------------------------------------------------------------------------ card


def test_the_previous_card_comes_from_this_endpoint_not_the_shared_cache(tmp_path: Path, monkeypatch) -> None:
    """A card cached from one server is never shown as another endpoint's; reading it writes nothing to the
    shared cache (the tests' own HF_HOME, see conftest)."""
    from huggingface_hub import HfApi, constants

    from hubkit.hub.server import HubServer
    from hubkit.manifest import load_manifest
    from hubkit.release.pipeline import Release, ReleaseOptions

    assert Path(constants.HF_HUB_CACHE).is_relative_to(os.environ["HF_HOME"])  # never the user's cache
    repo = "example-org/Kimi-Tiny-NVFP4"
    with HubServer(tmp_path / "elsewhere") as elsewhere:
        api = HfApi(endpoint=elsewhere.endpoint, token=elsewhere.token)
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=b"the card of another server", path_in_repo="README.md", repo_id=repo)
        api.hf_hub_download(repo, "README.md")  # the shared cache now holds it, known by the repo's name
    cache = Path(constants.HF_HUB_CACHE)
    cached = sorted(cache.rglob("*"))
    release = Release(load_manifest(example_project(tmp_path) / "hubkit.toml"), ReleaseOptions(progress=False))

    closed = socket.create_server(("127.0.0.1", 0))
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed.getsockname()[1]}")
    closed.close()
    monkeypatch.setenv("HUBKIT_HUB_TIMEOUT", "2")
    assert release.stage("push").previous_card() == ""  # this endpoint has no card to compare with

    with HubServer(tmp_path / "here") as here:
        api = HfApi(endpoint=here.endpoint, token=here.token)
        api.create_repo(repo)
        api.upload_file(path_or_fileobj=b"the card here", path_in_repo="README.md", repo_id=repo)
        monkeypatch.setenv("HF_ENDPOINT", here.endpoint)
        monkeypatch.setenv("HF_TOKEN", here.token)
        assert release.stage("push").previous_card() == "the card here"
    assert sorted(cache.rglob("*")) == cached  # nothing written to the shared cache
