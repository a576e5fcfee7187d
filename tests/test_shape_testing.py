"""The public testing kit (``hubkit.testing``) builds what it says, and ``hubkit hub serve`` is a server a CI step
can start, use with huggingface_hub, and stop cleanly with SIGINT or SIGTERM."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import hubkit.testing
from hubkit.testing import TINY, HubServer, KimiDims, build_int4_base, build_nvfp4_checkpoint, calibration_jsonl
from tests.conftest import SUBPROCESS_ENV, CliResult

READY_S = 60  # seconds a busy machine may take to start the server process


def test_the_kit_exports_a_small_api_and_imports_nothing_heavy() -> None:
    assert sorted(hubkit.testing.__all__) == sorted(
        ["TINY", "KimiDims", "HubServer", "build_nvfp4_checkpoint", "build_int4_base", "calibration_jsonl"]
    )
    program = (
        "import sys, hubkit.testing\n"
        "heavy = {'torch', 'transformers', 'compressed_tensors', 'modelopt', 'huggingface_hub'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", program], env=SUBPROCESS_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_tiny_nvfp4_export_is_a_valid_kimi_release(tmp_path: Path, hubkit: Callable[..., CliResult]) -> None:
    export = build_nvfp4_checkpoint(tmp_path / "Kimi-Tiny-NVFP4")
    config = json.loads((export / "config.json").read_text())
    assert config["quantization_config"]["quant_algo"] == "NVFP4"
    assert config["text_config"]["n_routed_experts"] == TINY.experts
    assert {"hf_quant_config.json", "README.md", "model.safetensors.index.json"} <= {p.name for p in export.iterdir()}
    result = hubkit("validate", export, "--format", "json")
    assert result.code == 0, result.out


def test_a_full_scale_skeleton_has_the_real_layout_in_a_few_megabytes(tmp_path: Path) -> None:
    from hubkit.checkpoint import load_checkpoint

    dims = KimiDims(layers=3, experts=16)  # the real widths, fewer layers and experts
    export = build_nvfp4_checkpoint(tmp_path / "skeleton", dims, sparse=True)
    checkpoint = load_checkpoint(str(export))
    apparent = sum(p.stat().st_size for p in export.glob("*.safetensors"))
    on_disk = sum(p.stat().st_blocks * 512 for p in export.glob("*.safetensors"))
    assert checkpoint.total_tensor_bytes > 1e9 and on_disk < 16 * 1024**2 < apparent


def test_calibration_text_is_json_lines_the_same_for_a_seed(tmp_path: Path) -> None:
    first = calibration_jsonl(tmp_path / "a.jsonl", samples=5, words=7)
    lines = [json.loads(line) for line in first.read_text().splitlines()]
    assert len(lines) == 5 and all(len(line["text"].split()) == 7 for line in lines)
    assert calibration_jsonl(tmp_path / "b.jsonl", samples=5, words=7).read_text() == first.read_text()
    assert calibration_jsonl(tmp_path / "c.jsonl", samples=5, words=7, seed=1).read_text() != first.read_text()


@pytest.mark.slow
def test_the_tiny_int4_base_is_compressed_tensors_pack_quantized(tmp_path: Path) -> None:
    pytest.importorskip("compressed_tensors")
    from hubkit.checkpoint import load_checkpoint

    base = build_int4_base(tmp_path / "base")
    text_config = json.loads((base / "config.json").read_text())["text_config"]
    block = text_config["quantization_config"]
    assert (block["quant_method"], block["format"]) == ("compressed-tensors", "pack-quantized")
    dtypes = {name.rsplit(".", 1)[1]: t.dtype for name, t in load_checkpoint(str(base)).tensors.items()}
    assert dtypes["weight_packed"] == "I32" and (base / "modeling_kimi_k25.py").is_file()


def push_tiny(endpoint: str, token: str, folder: Path, repo: str = "org/tiny") -> set[str]:
    """Push ``folder`` with huggingface_hub to the Hub at ``endpoint``; the files the Hub then lists. File objects
    make the client upload by classic LFS, as hubkit push does: this Hub, like one without Xet, has no Xet."""
    from huggingface_hub import CommitOperationAdd, HfApi

    api = HfApi(endpoint=endpoint, token=token)
    api.create_repo(repo)
    with contextlib.ExitStack() as stack:
        operations = [
            CommitOperationAdd(path.name, stack.enter_context(path.open("rb")))
            for path in sorted(folder.iterdir())
            if path.is_file()
        ]
        api.create_commit(repo, operations, commit_message="tiny export")
    return set(api.list_repo_files(repo))


def test_the_server_class_takes_a_push(tmp_path: Path, tiny_template: Path) -> None:
    with HubServer(tmp_path / "store") as hub:
        files = push_tiny(hub.endpoint, hub.token, tiny_template)
    assert {"config.json", "model.safetensors.index.json"} <= files


def serve(args: list[str], cwd: Path, ignore_sigint: bool = False) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """``hubkit hub serve ARGS`` started as a CI step would start it, and the two lines it prints."""
    process = subprocess.Popen(
        [sys.executable, "-m", "hubkit", "hub", "serve", *args],
        cwd=cwd,
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None,
    )
    assert process.stdout is not None
    lines = [process.stdout.readline(), process.stdout.readline()]  # flushed at once, or this waits forever
    announced = dict(line.rstrip("\n").split("=", 1) for line in lines if "=" in line)
    if set(announced) != {"HF_ENDPOINT", "HF_TOKEN"}:
        process.kill()
        pytest.fail(f"hubkit hub serve printed {lines!r}; stderr: {process.communicate(timeout=READY_S)[1]}")
    return process, announced


@pytest.mark.parametrize(
    ("stop", "ignore_sigint"),
    [(signal.SIGTERM, False), (signal.SIGINT, False), (signal.SIGINT, True)],
    ids=["SIGTERM", "SIGINT", "SIGINT-ignored-by-the-parent"],
)
def test_hub_serve_prints_its_endpoint_takes_a_push_and_stops_cleanly(
    tmp_path: Path, tiny_template: Path, stop: signal.Signals, ignore_sigint: bool
) -> None:
    process, announced = serve(["store", "--port", "0"], tmp_path, ignore_sigint)
    try:
        assert announced["HF_ENDPOINT"].startswith("http://127.0.0.1:")
        assert announced["HF_TOKEN"].startswith("hf_")
        files = push_tiny(announced["HF_ENDPOINT"], announced["HF_TOKEN"], tiny_template)
        assert {"config.json", "model.safetensors.index.json"} <= files
    finally:
        process.send_signal(stop)
        out, err = process.communicate(timeout=READY_S)
    assert process.returncode == 0, err
    assert "Traceback" not in err and "error" not in err, err
    assert out == "" and (tmp_path / "store" / "repos").is_dir()


@pytest.mark.slow
def test_hubkit_push_publishes_to_it_and_a_restarted_server_still_serves_it(
    tmp_path: Path,
    tiny_template: Path,
    hubkit: Callable[..., CliResult],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first, announced = serve([], tmp_path)  # the default folder
    try:
        for name, value in announced.items():
            monkeypatch.setenv(name, value)
        pushed = hubkit("push", tiny_template, "--repo", "org/tiny", "--no-validate", "--format", "json")
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=READY_S)
    assert pushed.code == 0 and pushed.json()["verified"] is True, pushed.err
    assert (tmp_path / ".hubkit" / "local-hub" / "repos").is_dir()  # where endpoint = "local" keeps its store

    from huggingface_hub import HfApi

    second, announced = serve(["-q"], tmp_path)
    try:
        files = HfApi(endpoint=announced["HF_ENDPOINT"], token=False).list_repo_files("org/tiny")  # reads are open
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=READY_S)
    assert "config.json" in files and second.returncode == 0 and err == ""


def test_hub_serve_refuses_a_file_a_link_a_foreign_folder_and_a_taken_port(
    tmp_path: Path, hubkit: Callable[..., CliResult]
) -> None:
    (tmp_path / "file").write_text("x")
    (tmp_path / "link").symlink_to(tmp_path / "folder", target_is_directory=True)
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "notes.txt").write_text("mine")
    for folder, says in [("file", "is not a folder"), ("link", "symbolic link"), ("project", "notes.txt")]:
        result = hubkit("hub", "serve", tmp_path / folder)
        assert result.code == 2 and says in result.err and len(result.err.splitlines()) == 1, result.err
    assert (tmp_path / "project").exists() and sorted(os.listdir(tmp_path / "project")) == ["notes.txt"]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = hubkit("hub", "serve", tmp_path / "store", "--port", port)
    assert result.code == 2 and f"127.0.0.1:{port}" in result.err and "--port 0" in result.err, result.err
