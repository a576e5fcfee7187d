"""``hubkit release`` end to end on the embedded example (the workflows and ``hubkit init``: test_workflows.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import TINY_RELEASE, copy_of, example_copy

pytest.importorskip("modelopt")


@pytest.fixture
def released(released_example: Path, tmp_path: Path) -> Path:
    """A copy of the example released once per session (conftest), that a test may release again."""
    return copy_of(released_example, tmp_path)


@pytest.fixture(scope="module")
def validated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example released up to its push (quantized, carded, validated) once per module; never changed: a test
    works on :func:`copy_of` it."""
    from hubkit.cli import main

    folder = example_copy(tmp_path_factory.mktemp("validated"))
    with pytest.raises(SystemExit) as exit_:
        main(["-q", "release", str(folder / "hubkit.toml"), "--until", "validate"])
    assert not exit_.value.code
    return folder


def local_hub(folder: Path):
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    server = HubServer(folder / ".hubkit" / "local-hub", user="release")
    server.start()
    return server, HfApi(endpoint=server.endpoint, token=server.token)


@pytest.mark.slow
def test_example_release_end_to_end(released: Path) -> None:
    state = json.loads((released / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json").read_text())
    assert state["status"] == "complete"
    assert set(state["stages"]) == {"quantize", "card", "validate", "push", "tag"}
    server, api = local_hub(released)
    try:
        files = {f.path for f in api.list_repo_tree("example-org/Kimi-Tiny-NVFP4", recursive=True)}
        assert {"README.md", "config.json", "hf_quant_config.json", "modeling_kimi_k25.py"} <= files
        assert not any(f.startswith(".hubkit/") for f in files)
        assert [t.name for t in api.list_repo_refs("example-org/Kimi-Tiny-NVFP4").tags] == ["v1"]
        card = api.hf_hub_download("example-org/Kimi-Tiny-NVFP4", "README.md")
        assert "Quantized modules: 48 = 2 layers × 8 experts × 3 projections" in Path(card).read_text()
    finally:
        server.stop()


@pytest.mark.slow
def test_rerun_after_completion_is_a_no_op(hubkit, released: Path) -> None:
    store = released / ".hubkit" / "local-hub"
    before = sorted(p.name for p in store.rglob("commits/*.json"))
    result = hubkit("release", released / "hubkit.toml", "--format", "json")
    assert result.code == 0, result.err
    statuses = {s["name"]: s["status"] for s in result.json()["stages"]}
    assert statuses == {"quantize": "unchanged", "card": "unchanged", "validate": "unchanged", "push": "unchanged",
                        "tag": "unchanged", "smoke": "skipped"}  # fmt: skip
    assert sorted(p.name for p in store.rglob("commits/*.json")) == before


@pytest.mark.slow
def test_changed_card_input_reruns_card_and_later_stages_only(hubkit, released: Path) -> None:
    result = hubkit(
        "release", released / "hubkit.toml", "--set", "card.evaluation_note=Scores coming soon.", "--format", "json"
    )
    assert result.code == 0, result.err
    report = result.json()
    statuses = {s["name"]: s["status"] for s in report["stages"]}
    assert statuses["quantize"] == "unchanged" and statuses["card"] == "ran" and statuses["push"] == "ran"
    assert "+Scores coming soon." in report["card_diff"]


def test_dry_run_changes_nothing(hubkit, tmp_path: Path) -> None:
    folder = example_copy(tmp_path)
    result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    assert {s["status"] for s in result.json()["stages"]} <= {"would run", "skipped"}
    assert not (folder / "Kimi-Tiny-NVFP4").exists()
    assert not (folder / ".hubkit" / "local-hub" / "repos").exists()  # the server saw no write


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "line"),
    [(signal.SIGINT, 130, "hubkit: interrupted"), (signal.SIGTERM, 143, "hubkit: terminated (SIGTERM)")],
)
def test_kill_during_push_then_rerun_completes(
    hubkit, validated: Path, tmp_path: Path, signum: int, code: int, line: str
) -> None:
    """Ctrl-C or SIGTERM mid-push: one line, its exit code, the lock released, nothing left running; a rerun
    completes."""
    from hubkit.locks import lock_path

    folder = copy_of(validated, tmp_path)
    env = dict(os.environ)
    command = [
        sys.executable,
        "-m",
        "hubkit",
        "-q",
        "release",
        str(folder / "hubkit.toml"),
        "--set",
        "push.batch=1",
        "--set",
        "release.atomic=false",
    ]
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True)
    store = folder / ".hubkit" / "local-hub"
    deadline = time.monotonic() + 120
    while len(list(store.rglob("commits/*.json"))) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signum)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert err.strip() == line
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing of hubkit's outlived it
    assert not lock_path(folder / "Kimi-Tiny-NVFP4").exists()
    state = folder / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json"
    failed = json.loads(state.read_text())["failed"]  # the outcome is recorded, also on a signal
    assert failed["stage"] == "push" and failed["message"] == line.removeprefix("hubkit: ").replace(
        "interrupted", "interrupted (Ctrl-C)"
    )
    result = hubkit(
        "release", folder / "hubkit.toml", "--set", "push.batch=1", "--set", "release.atomic=false", "--format", "json"
    )
    assert result.code == 0, result.err
    push = next(s for s in result.json()["stages"] if s["name"] == "push")
    assert push["status"] == "ran"
    assert "failed" not in json.loads(state.read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("calib_size = 32", "calib_sise = 32"), "unknown key 'quantize.calib_sise'"),
        (lambda t: t.replace('[base]\nrepo = "example-org/Kimi-Tiny"\npath = "base"', ""), "missing key 'base'"),
        (
            lambda t: t.replace('endpoint = "local"', 'endpoint = "http://127.0.0.1:9"'),
            "not checked: Hub: cannot check the token at http://127.0.0.1:9: cannot reach the Hub",
        ),
    ],
)
def test_manifest_problems_are_one_line_exit_2(hubkit, tmp_path: Path, monkeypatch, edit, message: str) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_anything")
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(edit((TINY_RELEASE / "hubkit.toml").read_text()))
    start = time.monotonic()
    result = hubkit("release", manifest)
    assert result.code == 2, result.err
    assert message in result.err + result.out and "Traceback" not in result.err  # the summary lists unchecked
    assert time.monotonic() - start < 30  # fails before any quantization
