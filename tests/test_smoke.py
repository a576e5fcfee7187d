"""The smoke stage: vLLM on this runner, in a named environment, or in vLLM's container image; required or not.

No vLLM, Docker engine or GPU exists where these tests run. Each external program is replaced by a test double
written into tmp_path and put first on PATH: a ``vllm`` script that serves the three HTTP endpoints smoke uses
(/health, /version, /v1/completions), a ``docker`` script that records its arguments and then runs that server
with what follows the image, and an ``nvidia-smi`` that names a GPU. hubkit's own code runs unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY_RELEASE

SYSTEM_PATH = os.environ.get("PATH", "")

FAKE_VLLM = f"""#!{sys.executable}
import json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"program": "vllm", "argv": args}}) + "\\n")
port = int(args[args.index("--port") + 1])


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/health":
            self.answer(b"")
        elif self.path == "/version":
            self.answer(json.dumps({{"version": "0.0-fake"}}).encode())
        else:
            self.send_error(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.answer(json.dumps({{"model": body["model"], "choices": [{{"text": " GPUs hum softly"}}]}}).encode())

    def answer(self, data):
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

FAKE_DOCKER = f"""#!{sys.executable}
import json, os, sys

args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"program": "docker", "argv": args, "HF_TOKEN": os.environ.get("HF_TOKEN")}}) + "\\n")
if args[0] != "run":
    sys.exit(0)
if os.environ.get("FAKE_DOCKER_DOWN"):
    sys.exit("docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock.")
index = 1
while args[index].startswith("-"):  # docker run's options: these take a value, the rest are flags
    index += 2 if args[index] in ("--name", "--gpus", "--network", "-e", "-v") else 1
server = os.path.join(os.path.dirname(os.path.abspath(__file__)), "vllm-image-entrypoint")
os.execv(server, [server, *args[index + 1:]])
"""

FAKE_NVIDIA_SMI = """#!/bin/sh
echo "NVIDIA B300 SXM6 AC"
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def write_program(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def programs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin folder of test doubles, alone on PATH (so a real vllm or docker here cannot answer instead)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    write_program(folder / "nvidia-smi", FAKE_NVIDIA_SMI)
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls.jsonl"))
    return folder


def calls(tmp_path: Path) -> list[dict]:
    log = tmp_path / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def manifest_file(tmp_path: Path, smoke: str = "", port: int | None = None) -> Path:
    """The example manifest with a [smoke] table of the test's own (and the example's inputs left unbuilt)."""
    text = (TINY_RELEASE / "hubkit.toml").read_text()
    head, _, _ = text.partition("[smoke]")
    folder = tmp_path / "project"
    folder.mkdir(parents=True)
    table = f"[smoke]\nport = {port or free_port()}\ntimeout_s = 60\n{smoke}"
    (folder / "hubkit.toml").write_text(head + table)
    return folder / "hubkit.toml"


def load(path: Path):
    from hubkit.manifest import load_manifest

    return load_manifest(path)


# ------------------------------------------------------------------------------------- the runners


def test_local_runner_serves_the_release_with_vllm_from_path(programs: Path, tmp_path: Path) -> None:
    from hubkit.release.smoke import run_smoke, smoke_availability

    write_program(programs / "vllm", FAKE_VLLM)
    manifest = load(manifest_file(tmp_path))
    assert smoke_availability(manifest) == (True, f"vLLM ({programs / 'vllm'}) and a GPU are available")
    out = tmp_path / "export"
    out.mkdir()
    record = run_smoke(manifest, out)
    assert record["ok"] and record["answers"] == [" GPUs hum softly"], record
    assert record["summary"].startswith("load + generation on NVIDIA B300 SXM6 AC with vLLM 0.0-fake in ")
    [call] = calls(tmp_path)
    port = str(manifest.smoke.port)
    assert call["argv"] == ["serve", "example-org/Kimi-Tiny-NVFP4", "--revision", "main", "--port", port,
                            "--tensor-parallel-size", "1", "--kv-cache-dtype", "fp8", "--trust-remote-code"]  # fmt: skip
    assert (out / ".hubkit" / "smoke-vllm.log").is_file()


def test_a_named_environment_supplies_vllm(programs: Path, tmp_path: Path) -> None:
    from hubkit.release.smoke import run_smoke, smoke_availability

    environment = tmp_path / "vllm-env"
    (environment / "bin").mkdir(parents=True)
    write_program(environment / "bin" / "vllm", FAKE_VLLM)
    manifest = load(manifest_file(tmp_path, f'environment = "{environment}"\n'))
    assert smoke_availability(manifest)[0]  # not on PATH, but in the environment named
    out = tmp_path / "export"
    out.mkdir()
    assert run_smoke(manifest, out)["ok"]
    assert calls(tmp_path)[0]["argv"][:2] == ["serve", "example-org/Kimi-Tiny-NVFP4"]

    missing = load(manifest_file(tmp_path / "other", f'environment = "{tmp_path / "nowhere"}"\n'))
    available, why = smoke_availability(missing)
    assert not available and "nowhere/bin/vllm does not exist: pip install vllm into that environment" in why


def test_docker_runner_runs_vllms_image_with_the_token_by_name(
    programs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    from hubkit.release.smoke import run_smoke, smoke_availability

    write_program(programs / "docker", FAKE_DOCKER)
    write_program(programs / "vllm-image-entrypoint", FAKE_VLLM)
    monkeypatch.setenv("HF_TOKEN", "hf_smokeSecretValue123")
    manifest = load(manifest_file(tmp_path, 'runner = "docker"\n'))
    assert smoke_availability(manifest) == (True, "vLLM (image vllm/vllm-openai:latest) and a GPU are available")
    out = tmp_path / "export"
    out.mkdir()
    record = run_smoke(manifest, out)
    assert record["ok"] and record["image"] == "vllm/vllm-openai:latest", record
    assert "in vllm/vllm-openai:latest" in record["summary"]
    run, image_server, removal = calls(tmp_path)
    argv = run["argv"]
    assert argv[:4] == ["run", "--rm", "--name", argv[3]] and argv[3].startswith("hubkit-smoke-")
    assert argv[argv.index("--gpus") + 1] == "all" and argv[argv.index("--network") + 1] == "host"
    assert argv[argv.index("HF_TOKEN") - 1 : argv.index("HF_TOKEN") + 1] == ["-e", "HF_TOKEN"]
    assert f"{constants.HF_HOME}:/root/.cache/huggingface" in argv
    image = argv.index("vllm/vllm-openai:latest")
    assert argv[image + 1 : image + 3] == ["--model", "example-org/Kimi-Tiny-NVFP4"]
    assert "hf_smokeSecretValue123" not in json.dumps(argv) + record["command"]  # by name, never by value
    assert run["HF_TOKEN"] == "hf_smokeSecretValue123"  # docker reads it from its own environment
    assert image_server["argv"] == argv[image + 1 :]
    assert removal["argv"] == ["rm", "--force", argv[3]]  # the container never outlives the stage


def test_smoke_image_defaults_to_the_cards_and_can_be_set(tmp_path: Path) -> None:
    from hubkit.release.smoke import image_of

    text = manifest_file(tmp_path, 'runner = "docker"\n').read_text()
    card = text.replace("[card.serve]\n", '[card.serve]\nimage = "vllm/vllm-openai:v0.11.0"\n')
    (tmp_path / "card.toml").write_text(card)
    assert image_of(load(tmp_path / "card.toml")) == "vllm/vllm-openai:v0.11.0"
    (tmp_path / "own.toml").write_text(card + 'image = "registry.example/vllm:nightly"\n')
    assert image_of(load(tmp_path / "own.toml")) == "registry.example/vllm:nightly"


@pytest.mark.parametrize(
    ("smoke", "message"),
    [
        ('image = "vllm/vllm-openai:v0.11.0"\n', 'image is used only with runner = "docker"'),
        ('runner = "docker"\nenvironment = "/venv"\n', 'environment is used only with runner = "local"'),
        ('runner = "podman"\n', "'smoke.runner'"),
    ],
)
def test_smoke_keys_of_the_other_runner_are_manifest_errors(hubkit, tmp_path: Path, smoke: str, message: str) -> None:
    result = hubkit("release", manifest_file(tmp_path, smoke), "--dry-run")
    assert result.code == 2 and message in result.err, result.err


# ------------------------------------------------------------------------------------- required or skipped


def test_smoke_that_cannot_run_is_skipped_and_said(hubkit, programs: Path, tmp_path: Path) -> None:
    result = hubkit("release", manifest_file(tmp_path), "--from", "smoke", "--format", "json")
    assert result.code == 0, result.err
    report = result.json()
    smoke = next(s for s in report["stages"] if s["name"] == "smoke")
    assert smoke["status"] == "skipped" and "vLLM is not installed on this runner: pip install vllm" in smoke["detail"]
    [check] = report["preflight"]  # only the stage that runs is checked
    assert check["status"] == "warning" and "set [smoke] required = true to fail instead" in check["detail"]


def test_required_smoke_that_cannot_run_fails_before_any_work(hubkit, programs: Path, tmp_path: Path) -> None:
    result = hubkit("release", manifest_file(tmp_path, "required = true\n"), "--from", "smoke")
    assert result.code == 2, result.err
    assert "smoke: [smoke] required = true, and it cannot run here: vLLM is not installed" in result.err
    assert "pip install vllm" in result.err and 'runner = "docker"' in result.err
    assert "## hubkit release: FAILED" in result.out  # the summary says so too

    docker = hubkit("release", manifest_file(tmp_path / "d", 'runner = "docker"\nrequired = true\n'), "--from", "smoke")
    assert docker.code == 2 and "Docker is not installed on this runner: install Docker Engine" in docker.err


def test_smoke_that_does_not_come_up_fails_the_release(
    hubkit, programs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_program(programs / "docker", FAKE_DOCKER)
    monkeypatch.setenv("FAKE_DOCKER_DOWN", "1")
    manifest = manifest_file(tmp_path, 'runner = "docker"\nrequired = true\n')
    result = hubkit("release", manifest, "--from", "smoke", "--format", "json")
    assert result.code == 1, result.err
    smoke = next(s for s in result.json()["stages"] if s["name"] == "smoke")
    assert smoke["status"] == "failed" and smoke["detail"].startswith("vLLM did not come up (see ")
    log = manifest.parent / "Kimi-Tiny-NVFP4" / ".hubkit" / "smoke-vllm.log"
    assert "Cannot connect to the Docker daemon" in log.read_text()
    state = json.loads((manifest.parent / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json").read_text())
    assert state["failed"]["stage"] == "smoke" and "did not come up" in state["failed"]["message"]


# ------------------------------------------------------------------------------------- through the pipeline


@pytest.mark.slow
def test_release_smoke_with_vllm_updates_the_card_and_publishes_it(
    programs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The example released with a vLLM on PATH: smoke runs, the card then says where it was validated."""
    pytest.importorskip("modelopt")
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer
    from hubkit.manifest import load_manifest
    from hubkit.release.pipeline import Release, ReleaseOptions
    from tests.conftest import example_copy

    write_program(programs / "vllm", FAKE_VLLM)
    monkeypatch.setenv("PATH", f"{programs}{os.pathsep}{SYSTEM_PATH}")  # quantize may call other programs
    folder = example_copy(tmp_path)
    text = (
        (folder / "hubkit.toml").read_text().replace("[smoke]\n", f"[smoke]\nrequired = true\nport = {free_port()}\n")
    )
    (folder / "hubkit.toml").write_text(text)
    result = Release(load_manifest(folder / "hubkit.toml"), ReleaseOptions(progress=False)).run()
    assert result.passed, result.as_dict()
    smoke = next(s for s in result.stages if s.name == "smoke")
    assert smoke.status == "ran" and "NVIDIA B300 SXM6 AC with vLLM 0.0-fake" in smoke.detail
    with HubServer(folder / ".hubkit" / "local-hub", user="release") as server:
        card = HfApi(endpoint=server.endpoint, token=server.token).hf_hub_download(
            "example-org/Kimi-Tiny-NVFP4", "README.md"
        )
        assert "Validated load + generation on NVIDIA B300 SXM6 AC with vLLM 0.0-fake." in Path(card).read_text()
    assert shutil.which("vllm") == str(programs / "vllm")
