"""The smoke stage: serve the pushed revision with vLLM as the card says, send a few prompts, record it all.

vLLM runs where ``[smoke] runner`` says: ``local`` starts ``vllm`` from PATH or from the Python environment named
by ``environment``; ``docker`` starts vLLM's container image (``image``, else ``[card.serve] image``) with the
GPUs, the host network (so a local Hub endpoint is reachable) and the Hub cache mounted. The token reaches the
container by name (``-e HF_TOKEN``), never on the command line.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.gpus import visible_gpus
from hubkit.records import record_folder, replacing

if TYPE_CHECKING:
    from hubkit.manifest import Manifest

#: Where the vLLM image keeps the Hub cache (its user is root).
CONTAINER_HF_HOME = "/root/.cache/huggingface"
INSTALL_VLLM = "pip install vllm"
INSTALL_DOCKER = "install Docker Engine and the NVIDIA Container Toolkit"


@dataclass(frozen=True)
class Server:
    """How to start the vLLM server: the command, its environment, and the container to remove at the end."""

    command: list[str]
    env: dict[str, str]
    container: str | None = None
    image: str | None = None


def vllm_arguments(manifest: Manifest) -> list[str]:
    """``vllm serve``'s options for the release, as the card's serve line has them."""
    serve = manifest.card.serve if manifest.card else None
    args = ["--revision", manifest.release.revision, "--port", str(manifest.smoke.port)]
    if serve is not None:
        args += ["--tensor-parallel-size", str(serve.tensor_parallel_size), *serve.extra_args]
    return [*args, "--kv-cache-dtype", "fp8", "--trust-remote-code"]


def image_of(manifest: Manifest) -> str:
    """The vLLM image of a docker smoke: ``[smoke] image``, else the card's ``[card.serve] image``."""
    from hubkit.manifest import ServeTable

    serve = manifest.card.serve if manifest.card else ServeTable()
    return manifest.smoke.image or serve.image


def _vllm_executable(manifest: Manifest) -> str | None:
    environment = manifest.smoke.environment
    if environment:
        candidate = Path(environment).expanduser() / "bin" / "vllm"
        return str(candidate) if os.access(candidate, os.X_OK) else None
    return shutil.which("vllm")


def smoke_availability(manifest: Manifest) -> tuple[bool, str]:
    """Whether smoke can run here; else why not and what to install."""
    smoke = manifest.smoke
    if smoke.runner == "docker":
        if shutil.which("docker") is None:
            return False, f'Docker is not installed on this runner: {INSTALL_DOCKER}, or use runner = "local"'
    elif _vllm_executable(manifest) is None:
        if smoke.environment:
            return False, (
                f"{Path(smoke.environment) / 'bin' / 'vllm'} does not exist: {INSTALL_VLLM} into that environment"
            )
        return False, (
            f"vLLM is not installed on this runner: {INSTALL_VLLM}, name its environment with [smoke] environment, "
            'or run vLLM\'s image with [smoke] runner = "docker"'
        )
    if not visible_gpus():
        return False, "no NVIDIA GPU on this runner (nvidia-smi lists none, or is not installed); run on a GPU runner"
    where = f"image {image_of(manifest)}" if smoke.runner == "docker" else _vllm_executable(manifest)
    return True, f"vLLM ({where}) and a GPU are available"


def server(manifest: Manifest) -> Server:
    """The command that serves the release with vLLM, on the runner ``[smoke]`` names."""
    serve_env = manifest.card.serve.env if manifest.card else {}
    env = {**os.environ, **serve_env}
    repo = manifest.release.repo
    if manifest.smoke.runner == "local":
        vllm = _vllm_executable(manifest) or "vllm"
        return Server([vllm, "serve", repo, *vllm_arguments(manifest)], env)
    from huggingface_hub import constants

    container = f"hubkit-smoke-{os.getpid()}"
    passed = [name for name in ("HF_TOKEN", "HF_ENDPOINT", *sorted(serve_env)) if name in env]
    command = ["docker", "run", "--rm", "--name", container, "--gpus", "all", "--ipc=host", "--network", "host"]
    for name in passed:
        command += ["-e", name]  # by name: docker copies the value from its own environment
    command += ["-v", f"{constants.HF_HOME}:{CONTAINER_HF_HOME}", "-e", f"HF_HOME={CONTAINER_HF_HOME}"]
    image = image_of(manifest)
    return Server([*command, image, "--model", repo, *vllm_arguments(manifest)], env, container, image)


def run_smoke(manifest: Manifest, out: Path) -> dict[str, Any]:
    """Start the vLLM server on the release, wait until it answers, send the prompts; always stop the server."""
    plan = server(manifest)
    log = record_folder(out) / "smoke-vllm.log"
    started = time.monotonic()
    version = ""
    with replacing(log) as handle:
        process = subprocess.Popen(plan.command, stdout=handle, stderr=subprocess.STDOUT, env=plan.env)
        try:
            port = manifest.smoke.port
            loaded = _wait_ready(process, port, manifest.smoke.timeout_s)
            load_time = round(time.monotonic() - started, 1)
            if not loaded:
                return {
                    "ok": False, "summary": f"vLLM did not come up (see {log})", "runner": manifest.smoke.runner,
                    "image": plan.image, "command": shlex.join(plan.command),
                }  # fmt: skip
            answers = [
                _complete(port, manifest.release.repo, prompt, manifest.smoke.max_tokens)
                for prompt in manifest.smoke.prompts
            ]
            version = _version(port)
        finally:
            _stop(process, plan)
    gpu = next(iter(visible_gpus()), "an unknown GPU")
    ok = all(a.strip() for a in answers)
    where = f" in {plan.image}" if plan.image else ""
    return {
        "ok": ok, "summary": f"load + generation on {gpu} with vLLM {version}{where} in {load_time} s", "gpu": gpu,
        "vllm": version, "runner": manifest.smoke.runner, "image": plan.image, "load_time_s": load_time,
        "prompts": manifest.smoke.prompts, "answers": answers, "command": shlex.join(plan.command),
    }  # fmt: skip


def _stop(process: subprocess.Popen[bytes], plan: Server) -> None:
    process.terminate()
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if plan.container:  # the docker client going away does not always take its container with it
        subprocess.run(["docker", "rm", "--force", plan.container], capture_output=True, check=False)


def _wait_ready(process: subprocess.Popen[bytes], port: int, timeout_s: int) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(1)
    return False


def _complete(port: int, model: str, prompt: str, max_tokens: int) -> str:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return str(json.loads(response.read())["choices"][0]["text"])


def _version(port: int) -> str:
    """The server's own answer to ``GET /version`` (the same for a local vLLM and an image)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/version", timeout=10) as response:
            return str(json.loads(response.read()).get("version", "unknown"))
    except (OSError, ValueError):
        return "unknown"
