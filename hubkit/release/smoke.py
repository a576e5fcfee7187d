"""The smoke stage: serve the pushed revision with vLLM as the card says, send a few prompts, record it all."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from hubkit.manifest import Manifest

PORT = 8765


def run_smoke(manifest: Manifest, out: Path) -> dict[str, Any]:
    """Start ``vllm serve`` on the release, wait until it answers, send the prompts; always stop the server."""
    card = manifest.card
    serve = card.serve if card else None
    command = ["vllm", "serve", manifest.release.repo, "--revision", manifest.release.revision, "--port", str(PORT)]
    if serve is not None:
        command += ["--tensor-parallel-size", str(serve.tensor_parallel_size), *serve.extra_args]
    command += ["--kv-cache-dtype", "fp8", "--trust-remote-code"]
    env = {**os.environ, **(serve.env if serve else {})}
    log = out / ".hubkit" / "smoke-vllm.log"
    started = time.monotonic()
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        try:
            loaded = _wait_ready(process, manifest.smoke.timeout_s)
            load_time = round(time.monotonic() - started, 1)
            if not loaded:
                return {"ok": False, "summary": f"vLLM did not come up (see {log})", "command": shlex.join(command)}
            answers = [
                _complete(manifest.release.repo, prompt, manifest.smoke.max_tokens) for prompt in manifest.smoke.prompts
            ]
        finally:
            process.terminate()
            process.wait(timeout=120)
    gpu = subprocess.run(
        ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
    ).stdout.split("\n")[0]
    version = subprocess.run(["vllm", "--version"], capture_output=True, text=True).stdout.strip()
    ok = all(a.strip() for a in answers)
    return {
        "ok": ok, "summary": f"load + generation on {gpu} with vLLM {version} in {load_time} s", "gpu": gpu,
        "vllm": version, "load_time_s": load_time, "prompts": manifest.smoke.prompts, "answers": answers,
        "command": shlex.join(command),
    }  # fmt: skip


def _wait_ready(process: subprocess.Popen[bytes], timeout_s: int) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=5) as response:
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(5)
    return False


def _complete(model: str, prompt: str, max_tokens: int) -> str:
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{PORT}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return str(json.loads(response.read())["choices"][0]["text"])
