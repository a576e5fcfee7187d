"""Progress in CI logs: heartbeat lines (what, done/total, rate, ETA) on stderr when it is not a terminal or
the output is for machines, at ``HUBKIT_HEARTBEAT`` seconds; none under ``-q``; bars on a terminal; release
stages folded into GitHub groups with ``--format github``."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkit.hub.server import HubServer
from tests.conftest import SUBPROCESS_ENV, copy_of

UPLOAD_LINE = re.compile(
    r"^hubkit: push: upload [\d.]+ k?B/[\d.]+ kB \((\d+)/(\d+) files\), [\d.]+ [kM]?B/s, (ETA \S+|done in \S+)$"
)


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[HubServer]:
    server = HubServer(tmp_path / "hub-store")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    """A tiny NVFP4 export in several shards (several commits with ``--batch 2``)."""
    from hubkit.testing.kimi import TINY, nvfp4_layout, write_checkpoint

    folder = tmp_path / "export"
    folder.mkdir()
    write_checkpoint(folder, nvfp4_layout(TINY), shard_bytes=100_000)
    return folder


def push_process(hub: HubServer, folder: Path, *options: str, heartbeat: str = "0.05", repo: str = "org/beat"):
    """``hubkit [OPTIONS] push FOLDER --format json`` in a subprocess, stderr a pipe unless given."""
    env = {**SUBPROCESS_ENV, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HUBKIT_HEARTBEAT": heartbeat}
    env["HF_HOME"] = str(folder.parent / "hf-home")
    command = [sys.executable, "-m", "hubkit", *options, "push", str(folder), "--repo", repo, "--batch", "2"]
    return subprocess.run(
        [*command, "--no-validate", "--format", "json"], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_push_to_a_log_prints_heartbeat_lines_per_commit_with_rate_and_eta_unless_quiet(
    hub: HubServer, shards: Path
) -> None:
    result = push_process(hub, shards)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["verified"] is True  # stdout stays the JSON alone
    lines = [line for line in result.stderr.splitlines() if line.startswith("hubkit: push: upload")]
    assert lines and all(UPLOAD_LINE.match(line) for line in lines), result.stderr
    files = {UPLOAD_LINE.match(line).group(1) for line in lines}  # type: ignore[union-attr]
    commits = len(json.loads(result.stdout)["commits"])
    assert len(files) >= commits - 1 >= 2  # a line after each commit (the card's alone adds one file)
    assert "ETA" in "".join(lines) and lines[-1].split(", ")[-1].startswith("done in")

    quiet = push_process(hub, shards, "-q", repo="org/quiet")
    assert quiet.returncode == 0 and quiet.stderr == ""
    off = push_process(hub, shards, heartbeat="0", repo="org/off")
    assert off.returncode == 0 and "hubkit:" not in off.stderr


def test_a_bad_interval_is_one_line_exit_2(hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("HUBKIT_HEARTBEAT", value)
        result = hubkit("validate", tiny, "--format", "json")
        assert result.code == 2 and result.out == ""
        assert result.err.splitlines() == [f"hubkit: error: HUBKIT_HEARTBEAT={value!r} is not a number of seconds: "
                                           "set it to e.g. 30 or 0.5 (0 turns heartbeat lines off), or unset it"]  # fmt: skip


def test_a_terminal_shows_bars_not_heartbeat_lines(hub: HubServer, shards: Path) -> None:
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a width for the bars
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hubkit", "push", str(shards), "--repo", "org/beat", "--batch", "2", "--no-validate"],
            env={**SUBPROCESS_ENV, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HUBKIT_HEARTBEAT": "0.01",
                 "HF_HOME": str(shards.parent / "hf-home")},
            stdout=subprocess.PIPE, stderr=follower, text=True,
        )  # fmt: skip
        out, _ = process.communicate(timeout=120)
    finally:
        os.close(follower)
        reader.join(timeout=10)
        os.close(leader)
    terminal = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0 and "VERIFIED" in out
    assert "upload:" in terminal and "%|" in terminal  # tqdm's bar
    assert "hubkit: push: upload" not in terminal


def test_a_bar_counts_from_threads_and_each_step_prints_a_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubkit.progress import progress_bar

    monkeypatch.setenv("HUBKIT_HEARTBEAT", "3600")
    with progress_bar(total=8000, desc="hash", unit="B", unit_scale=True) as bar:
        workers = [threading.Thread(target=lambda: [bar.update(1) for _ in range(1000)]) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert capsys.readouterr().err == ""  # shorter than the interval: no line at all

    monkeypatch.setenv("HUBKIT_HEARTBEAT", "0.000001")
    with progress_bar(total=8000, desc="hash", unit="B", unit_scale=True) as bar:
        workers = [threading.Thread(target=lambda: [bar.update(1) for _ in range(1000)]) for _ in range(8)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    last = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(r"hubkit: hash 8\.0 kB/8\.0 kB, [\d.]+ [kMG]?B/s, done in \d+s", last), last

    monkeypatch.setenv("HUBKIT_HEARTBEAT", "3600")
    with progress_bar(total=4, desc="layers", unit="layer", each=True, initial=1) as bar:  # resumed after layer 1
        for _ in range(3):
            bar.update(1)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(", ")[0] for line in lines] == [f"hubkit: layers {n}/4" for n in (2, 3, 4, 4)], lines
    assert [line.split(", ")[2].split()[0] for line in lines] == ["ETA", "ETA", "ETA", "done"]


def test_a_hub_base_download_prints_heartbeat_lines(hub: HubServer, shards: Path, tmp_path: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_ENDPOINT", hub.endpoint)
        patch.setenv("HF_TOKEN", hub.token)
        push(PushOptions(folder=shards, repo="org/base", validate=False, progress=False))
    env = {**SUBPROCESS_ENV, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token, "HF_HOME": str(tmp_path / "hf")}

    def download(progress: bool) -> tuple[Path, list[str]]:
        code = f"from hubkit.quantize.pipeline import base_folder; print(base_folder('hf://org/base', progress={progress}))"
        run = subprocess.run([sys.executable, "-c", code], env={**env, "HUBKIT_HEARTBEAT": "0.000001"},
                             capture_output=True, text=True, timeout=120)  # fmt: skip
        assert run.returncode == 0, run.stderr
        return Path(run.stdout.strip()), [line for line in run.stderr.splitlines() if line.startswith("hubkit: ")]

    folder, lines = download(progress=True)
    assert {p.name for p in shards.glob("*.safetensors")} == {p.name for p in folder.glob("*.safetensors")}
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert re.fullmatch(rf"hubkit: download org/base {size / 1000:.1f} kB/{size / 1000:.1f} kB \((\d+)/\1 files\), "
                        r"[\d.]+ [kMG]?B/s, done in \d+s", lines[-1]), lines  # fmt: skip
    assert any("ETA" in line for line in lines)
    assert download(progress=False)[1] == []  # a quiet run


@pytest.mark.slow
def test_release_for_github_folds_each_stage_in_a_group(
    hubkit, released_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_of(released_example, tmp_path)
    monkeypatch.setenv("HUBKIT_HEARTBEAT", "0.000001")
    result = hubkit(
        "release", folder / "hubkit.toml", "--set", "card.evaluation_note=Scores coming soon.", "--format", "github"
    )
    assert result.code == 0, result.err
    assert "::group::" not in result.out and result.out.startswith("## hubkit release: PASSED")
    lines = result.err.splitlines()
    groups = [line for line in lines if line.startswith("::")]
    assert [line.removeprefix("::group::stage ") for line in groups[::2]][:4] == ["card", "validate", "push", "tag"]
    assert groups[1::2] == ["::endgroup::"] * (len(groups) // 2) and len(groups) % 2 == 0  # each group closed
    push = lines[
        lines.index("::group::stage push") + 1 : lines.index("::endgroup::", lines.index("::group::stage push"))
    ]
    assert any(UPLOAD_LINE.match(line) for line in push), push
    assert all(line.startswith("hubkit: push: ") for line in push if line.startswith("hubkit: ")), push

    quiet = hubkit(
        "-q", "release", folder / "hubkit.toml", "--set", "card.evaluation_note=Later.", "--format", "github"
    )
    assert quiet.code == 0 and quiet.err == ""


@pytest.mark.slow
def test_a_layerwise_quantize_prints_a_line_per_layer(tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    base = tiny_base(tmp_path / "base", num_hidden_layers=3)
    calib = calibration_jsonl(tmp_path / "calib.jsonl", samples=8)
    command = [sys.executable, "-m", "hubkit", "quantize", "--base", str(base), "--out", str(tmp_path / "out"),
               "--calib", str(calib), "--calib-size", "8", "--calib-seq", "32", "--batch-size", "4",
               "--mode", "layerwise", "--format", "json"]  # fmt: skip
    env = {**SUBPROCESS_ENV, "PYTHONWARNINGS": "ignore", "HF_HOME": str(tmp_path / "hf"), "HUBKIT_HEARTBEAT": "3600"}
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert json.loads(run.stdout)["provenance"]["run"]["mode"] == "layerwise"
    lines = [line for line in run.stderr.splitlines() if line.startswith("hubkit: quantize: layers")]
    assert [line.split(", ")[0] for line in lines] == [f"hubkit: quantize: layers {n}/3" for n in (1, 2, 3, 3)], lines
    assert all(re.search(r", ([\d.]+ layer/s|\S+/layer), ETA \S+$", line) for line in lines[:3]), lines
    assert lines[-1].split(", ")[-1].startswith("done in")
