"""Reliability of release, init and the CLI: hubkit replaces only what it made, one release per output folder,
every bad input a one-line exit 2, SIGTERM handled like Ctrl-C, an unwritable stdout never a traceback."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from hubkit.locks import lock_path
from tests.conftest import SUBPROCESS_ENV, TINY_RELEASE, copy_of, example_project


def user_files(folder: Path) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"notes.txt": "mine\n", "data/table.csv": "a,b\n"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return files


def one_line(err: str) -> bool:
    return len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err


def hubkit_process(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *args], env=SUBPROCESS_ENV, capture_output=True, text=True, **kwargs
    )


# ---------------------------------------------------------------------------------- what hubkit may replace


@pytest.mark.parametrize("dry_run", [False, True])
def test_release_refuses_an_output_folder_hubkit_did_not_make(hubkit, tmp_path: Path, dry_run: bool) -> None:
    folder = example_project(tmp_path, lambda t: t.replace('out = "Kimi-Tiny-NVFP4"', 'out = "mydata"'))
    files = user_files(folder / "mydata")
    result = hubkit("release", folder / "hubkit.toml", *(["--dry-run"] if dry_run else []))
    assert result.code == 2 and one_line(result.err), result
    assert f"{folder / 'mydata'} holds files that hubkit did not make" in result.err
    assert {name: (folder / "mydata" / name).read_text() for name in files} == files
    assert not (folder / ".hubkit").exists()  # refused before any work: not even the local Hub started


@pytest.mark.parametrize(
    ("out", "message"),
    [
        (".", "holds the manifest"),
        ("..", "holds the manifest"),
        ("base", "holds the base"),
        ("base/export", "lies inside the base"),
        (".hubkit", "holds the local Hub store"),
        ("calib.jsonl", "holds the calibration source"),
    ],
)
def test_release_refuses_an_output_folder_holding_its_inputs(hubkit, tmp_path: Path, out: str, message: str) -> None:
    folder = example_project(tmp_path)
    (folder / "base").mkdir()
    (folder / "base" / "config.json").write_text("{}")
    (folder / "calib.jsonl").write_text('{"text": "x"}\n')
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    result = hubkit("release", folder / "hubkit.toml", "--set", f"quantize.out={out}")
    assert result.code == 2 and one_line(result.err), result
    assert message in result.err
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


def test_release_refuses_an_output_path_that_is_a_file(hubkit, tmp_path: Path) -> None:
    folder = example_project(tmp_path)
    (folder / "Kimi-Tiny-NVFP4").write_text("not a folder\n")
    result = hubkit("release", folder / "hubkit.toml")
    assert result.code == 2 and one_line(result.err) and "is a file, not a folder" in result.err
    assert (folder / "Kimi-Tiny-NVFP4").read_text() == "not a folder\n"


def test_release_refuses_a_local_hub_store_hubkit_did_not_make(hubkit, tmp_path: Path) -> None:
    folder = example_project(tmp_path)
    user_files(folder / ".hubkit" / "local-hub")
    result = hubkit("release", folder / "hubkit.toml")
    assert result.code == 2 and one_line(result.err) and "local Hub store" in result.err
    assert sorted(p.name for p in (folder / ".hubkit" / "local-hub").iterdir()) == ["data", "notes.txt"]


def test_dry_run_says_what_it_would_replace_and_writes_nothing(hubkit, tmp_path: Path) -> None:
    folder = example_project(tmp_path)
    export = folder / "Kimi-Tiny-NVFP4"
    (export / ".hubkit").mkdir(parents=True)
    (export / ".hubkit" / "state.json").write_text(json.dumps({"made_by": {"tool": "hubkit"}, "stages": {}}))
    (export / "README.md").write_text("earlier card\n")
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
    assert result.code == 2 and "base: [base] path" in result.err, result.err  # the preflight: no base built here
    details = {s["name"]: s["detail"] for s in result.json()["stages"]}  # the plan is printed all the same
    assert f"replaces hubkit's earlier export in {export}" in details["quantize"]
    assert "(replaces it)" in details["card"]
    after = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.name != "hashes.json"}
    assert {p: t for p, t in after.items() if p != export / ".hubkit"} == {
        p: t for p, t in before.items() if p != export / ".hubkit"
    }
    assert not lock_path(export).exists()  # (push's hash cache is push's own dry-run question)


# ---------------------------------------------------------------------------------- input errors


def test_manifest_that_is_not_utf8_is_exit_2(hubkit, tmp_path: Path) -> None:
    folder = example_project(tmp_path)
    (folder / "hubkit.toml").write_bytes(
        (TINY_RELEASE / "hubkit.toml").read_bytes().replace(b"the hubkit", b"the \xff")
    )
    result = hubkit("release", folder / "hubkit.toml", "--dry-run")
    assert result.code == 2 and one_line(result.err) and "not UTF-8" in result.err


def test_every_manifest_problem_is_reported_with_its_key_and_line(hubkit, tmp_path: Path) -> None:
    def edit(text: str) -> str:
        text = text.replace("calib_size = 32", "calib_sise = 32")
        text = text.replace('repo = "example-org/Kimi-Tiny-NVFP4"', 'repo = "not a repo"')
        return text.replace("tensor_parallel_size = 1", "tensor_parallel_size = 0")

    folder = example_project(tmp_path, edit)
    lines = (folder / "hubkit.toml").read_text().splitlines()
    line = {key: 1 + next(i for i, text in enumerate(lines) if text.startswith(key))
            for key in ("calib_sise", "repo = ", "tensor_parallel_size")}  # fmt: skip
    result = hubkit("release", folder / "hubkit.toml", "--dry-run")
    assert result.code == 2 and "Traceback" not in result.err, result.err
    manifest = folder / "hubkit.toml"
    assert "3 problems" in result.err
    assert f"{manifest}:{line['calib_sise']}: unknown key 'quantize.calib_sise'" in result.err
    assert f"{manifest}:{line['repo = ']}: 'release.repo': 'not a repo' is not a Hub repo id" in result.err
    assert f"{manifest}:{line['tensor_parallel_size']}: 'card.serve.tensor_parallel_size'" in result.err


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("card.tags=[a", "--set 'card.tags=[a': not valid TOML"),
        ('card.title="unclosed', "--set 'card.title=\"unclosed': not valid TOML"),
        ("quantize.calib_size=abc", "--set quantize.calib_size=abc: 'quantize.calib_size'"),
        ("release.tag=2024-05-01", "--set release.tag=2024-05-01: 'release.tag'"),
        ("card.serve={ tensor_parallel_size = 0 }", "'card.serve.tensor_parallel_size'"),
        ("quantize.nosuch=1", "--set quantize.nosuch=1: unknown key 'quantize.nosuch'"),
        ("card.tags=[1]\nrelease.repo = 'x/y'", "more than one TOML value"),
        ("release.repo.name=x", "release.repo is not a table"),
        ("norelease=1", "is not TABLE.KEY=VALUE"),
        ("card.serve.env={ HF_TOKEN = 'hf_abcdefghijklmnop' ", "--set 'card.serve.env={ HF_TOKEN = '\"'\"'hf_***"),
    ],
)
def test_set_errors_cite_the_set_argument(hubkit, tmp_path: Path, override: str, message: str) -> None:
    folder = example_project(tmp_path)
    result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--set", override)
    assert result.code == 2 and one_line(result.err), result
    assert message in result.err
    assert "hubkit.toml:" not in result.err  # the manifest is not at fault
    assert "hf_abcdefghijklmnop" not in result.err  # a token in a --set value is never echoed


@pytest.mark.parametrize(
    ("override", "key", "value"),
    [
        ("quantize.calib_size=64", "calib_size", 64),
        ("quantize.out=my export", "out", "my export"),
        ("quantize.out=it's mine", "out", "it's mine"),
        ('quantize.out="2024-05-01"', "out", "2024-05-01"),
        ("quantize.calib=['a', \"b\"]", "calib", ["a", "b"]),
        ("quantize.max_gpu_memory=40GiB", "max_gpu_memory", "40GiB"),
        ("quantize.keep_intermediate=true", "keep_intermediate", True),
    ],
)
def test_set_values_are_toml_when_they_parse_else_text(tmp_path: Path, override: str, key: str, value) -> None:
    from hubkit.manifest import load_manifest

    manifest = load_manifest(example_project(tmp_path) / "hubkit.toml", [override])
    assert getattr(manifest.quantize, key) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "push", "--until", "card"], "--from push comes after --until card"),
        (["--from", "tag", "--until", "tag", "--skip", "tag"], "leaves no stage to run"),
    ],
)
def test_stage_selection_that_runs_nothing_is_exit_2(hubkit, tmp_path: Path, args: list[str], message: str) -> None:
    result = hubkit("release", example_project(tmp_path) / "hubkit.toml", *args)
    assert result.code == 2 and one_line(result.err) and message in result.err, result


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repo", "not a repo"], "--repo: 'not a repo' is not a Hub repo id of the form ORG/NAME"),
        (["--repo", "name-without-org"], "is not a Hub repo id of the form ORG/NAME"),
        (["--repo", 'org/x"\\y'], "Repo id must use alphanumeric chars"),
        (["--base", 'org/x" = 1\n[release]'], "--base:"),
    ],
)
def test_init_refuses_what_is_not_a_repo_id(hubkit, tmp_path: Path, args: list[str], message: str) -> None:
    result = hubkit("init", tmp_path / "new", *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err, result
    assert not (tmp_path / "new").exists()


def test_init_writes_values_through_a_toml_writer(tmp_path: Path) -> None:
    from hubkit.commands.init import render_files

    odd = 'org/a"b\\c\n[x]'  # what string formatting would have turned into TOML syntax
    texts = render_files(tmp_path, odd, "base/\\")
    manifest = tomllib.loads(texts[tmp_path / "hubkit.toml"])
    assert manifest["release"]["repo"] == odd and manifest["base"]["repo"] == "base/\\"
    assert manifest["quantize"]["out"] == 'a"b\\c\n[x]'
    assert manifest["card"]["license_link"] == "https://huggingface.co/base/\\/blob/main/LICENSE"
    assert "# CHANGE-ME" not in texts[tmp_path / "hubkit.toml"].split("[release]")[1].split("[base]")[0]


def test_init_into_a_file_is_exit_2(hubkit, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    for target in (tmp_path / "file", tmp_path / "file" / "sub"):
        result = hubkit("init", target)
        assert result.code == 2 and one_line(result.err), result
    assert (tmp_path / "file").read_text() == "x"


def test_init_force_keeps_an_edited_manifest(hubkit, tmp_path: Path) -> None:
    target = tmp_path / "model"
    assert hubkit("init", target, "--repo", "org/M-NVFP4", "--base", "org/M").code == 0
    manifest = target / "hubkit.toml"
    edited = manifest.read_text().replace("calib_size = 512", "calib_size = 64")
    manifest.write_text(edited)
    result = hubkit("init", target, "--repo", "org/M-NVFP4", "--base", "org/M", "--force")
    assert result.code == 0, result.err
    assert f"your earlier version is kept as {target / 'hubkit.toml.bak'}" in result.out
    assert (target / "hubkit.toml.bak").read_text() == edited
    assert "calib_size = 512" in manifest.read_text()
    manifest.write_text(edited + "# again\n")  # a second --force keeps the first backup too
    assert hubkit("init", target, "--repo", "org/M-NVFP4", "--base", "org/M", "--force").code == 0
    assert (target / "hubkit.toml.bak").read_text() == edited
    assert (target / "hubkit.toml.1.bak").read_text() == edited + "# again\n"
    unchanged = hubkit("init", target, "--repo", "org/M-NVFP4", "--base", "org/M", "--force")
    assert "kept" not in unchanged.out  # nothing edited, nothing to keep
    assert sorted(p.name for p in target.iterdir()) == [
        ".github",
        "hubkit.toml",
        "hubkit.toml.1.bak",
        "hubkit.toml.bak",
    ]


# ---------------------------------------------------------------------------------- streams and signals


def test_closed_stdout_is_exit_2_with_one_line(tiny: Path) -> None:
    command = shlex.join([sys.executable, "-m", "hubkit", "validate", str(tiny), "--format", "json"])
    result = subprocess.run(["bash", "-c", f"{command} >&-"], env=SUBPROCESS_ENV, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert one_line(result.stderr) and "standard output is closed" in result.stderr


def test_full_stdout_is_exit_2_with_one_line(tiny: Path) -> None:
    with open("/dev/full", "w") as full:
        result = subprocess.run(
            [sys.executable, "-m", "hubkit", "validate", str(tiny), "--format", "json"],
            env=SUBPROCESS_ENV, stdout=full, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert one_line(result.stderr) and "No space left on device" in result.stderr


def test_stdout_reader_going_away_is_a_quiet_exit_141() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "hubkit", "validate", "--list-checks"],
        env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # as `hubkit ... | head` does once head has enough
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == ""


def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path) -> None:
    """A read from a Hub that never answers, then SIGTERM: one line, exit 143, nothing left running."""
    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        env = {
            **SUBPROCESS_ENV,
            "HF_ENDPOINT": f"http://127.0.0.1:{silent.getsockname()[1]}",
            "HF_HUB_ETAG_TIMEOUT": "600",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "hubkit", "validate", "hf://org/model"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        silent.settimeout(60)
        connection, _ = silent.accept()  # hubkit is now waiting for the Hub
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        connection.close()
    finally:
        silent.close()
    assert process.returncode == 143, err
    assert one_line(err) and "terminated (SIGTERM)" in err
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # no worker of hubkit's outlived it


# ---------------------------------------------------------------------------------- real releases (slow)


def remote(folder: Path) -> dict:
    """What the example's local Hub says of the repo: main's head, the tags, the pull requests' statuses."""
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    repo = "example-org/Kimi-Tiny-NVFP4"
    with HubServer(folder / ".hubkit" / "local-hub", user="release") as server:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        refs = api.list_repo_refs(repo)
        return {
            "main": next(b.target_commit for b in refs.branches if b.name == "main"),
            "tags": {t.name: t.target_commit for t in refs.tags},
            "prs": [d.status for d in api.get_repo_discussions(repo) if d.is_pull_request],
        }


def listing(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_quantize_replaces_only_hubkits_own_export(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)
    export = folder / "Kimi-Tiny-NVFP4"
    before = listing(export)
    failed = hubkit("release", folder / "hubkit.toml", "--until", "quantize", "--set", "quantize.recipe=no-such-recipe")
    assert failed.code == 2 and "Traceback" not in failed.err, failed
    assert listing(export) == before  # quantize failed: the earlier export is back in place, whole
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".Kimi")) == []
    rerun = hubkit("release", folder / "hubkit.toml", "--until", "quantize", "--set", "quantize.seed=7")
    assert rerun.code == 0, rerun.err
    provenance = json.loads((export / ".hubkit" / "provenance.json").read_text())
    assert json.dumps(provenance).count("7") and (export / ".hubkit" / "state.json").is_file()
    state = json.loads((export / ".hubkit" / "state.json").read_text())
    assert state["made_by"]["tool"] == "hubkit" and list(state["stages"]) == ["quantize"]
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".Kimi")) == []  # nothing left beside it


@pytest.mark.slow
def test_two_releases_on_one_output_folder(released_example: Path, tmp_path: Path) -> None:
    """Two real processes: the one holding the lock runs, the other exits 2 naming its pid; the Hub agrees."""
    folder = copy_of(released_example, tmp_path)
    manifest = str(folder / "hubkit.toml")
    lock = lock_path(folder / "Kimi-Tiny-NVFP4")
    prs = len(remote(folder)["prs"])
    command = [sys.executable, "-m", "hubkit", "-q", "release", manifest, "--format", "json"]
    first = subprocess.Popen([*command, "--set", "card.evaluation_note=First."], env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (lock.is_file() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    os.kill(first.pid, signal.SIGSTOP)  # holds the lock, does nothing: the second run must not get in
    try:
        second = hubkit_process("-q", "release", manifest, "--set", "card.evaluation_note=Second.", timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2 and one_line(second.stderr), second.stderr
    assert f"another hubkit release (pid {first.pid}) is working on" in second.stderr
    out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    stages = {s["name"]: s["status"] for s in json.loads(out)["stages"]}
    assert stages["card"] == stages["push"] == "ran"
    hub = remote(folder)
    assert hub["prs"] == ["merged"] * (prs + 1)
    state = json.loads((folder / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json").read_text())
    assert state["stages"]["push"]["outputs"]["commit"] == hub["main"]
    assert hub["tags"] == remote(released_example)["tags"]  # the release tag is never moved, and the summary says so
    tag = next(s for s in json.loads(out)["stages"] if s["name"] == "tag")
    assert tag["status"] == "skipped" and "is never moved" in tag["detail"]
    assert tag["outputs"]["commit"] == hub["tags"]["v1"] != hub["main"]
    assert not lock.exists()

    # two at once: whichever starts second either finds the lock held or the work done, never runs it again
    runs = [subprocess.Popen([*command, "--set", "card.evaluation_note=Third."], env=SUBPROCESS_ENV, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]  # fmt: skip
    results = [(run.pid, *run.communicate(timeout=300), run.returncode) for run in runs]
    assert sorted(code for *_, code in results) in ([0, 0], [0, 2]), results
    for pid, _, err, code in results:
        assert "Traceback" not in err
        if code == 2:
            other = next(p for p, *_ in results if p != pid)
            assert f"pid {other})" in err
    pushed = [json.loads(out) for _, out, _, code in results if code == 0]
    assert sum(next(s for s in run["stages"] if s["name"] == "push")["status"] == "ran" for run in pushed) == 1
    hub = remote(folder)
    assert hub["prs"] == ["merged"] * (prs + 2)
    state = json.loads((folder / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json").read_text())
    assert state["stages"]["push"]["outputs"]["commit"] == hub["main"]


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path: Path) -> None:
    from hubkit.errors import HubkitError
    from hubkit.locks import exclusive

    out = tmp_path / "export"
    lock_path(out).write_text("999999999\n")  # kill -9 leaves the file; the kernel has dropped its lock
    with exclusive(out, "[quantize] out"):
        assert lock_path(out).read_text() == f"{os.getpid()}\n"
    assert not lock_path(out).exists()
    lock_path(out).write_text("my notes\n")
    with pytest.raises(HubkitError, match="is not hubkit's lock file"), exclusive(out, "[quantize] out"):
        pass
    assert lock_path(out).read_text() == "my notes\n"
