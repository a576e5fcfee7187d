"""``hubkit push`` against the local Hub-compatible server, through the real huggingface_hub client."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubkit.hub.server import HubServer


def api(hub: HubServer):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=hub.token)


def tree(hub: HubServer, repo: str, revision: str = "main") -> dict[str, int]:
    return {f.path: f.size for f in api(hub).list_repo_tree(repo, revision=revision, recursive=True)}


def commits(hub: HubServer) -> int:
    return sum(1 for method, path in hub.faults.requests if method == "POST" and "/commit/" in path)


def test_fresh_push_then_rerun_is_a_no_op(hubkit, hub: HubServer, tiny: Path) -> None:
    first = hubkit("push", tiny, "--repo", "org/tiny", "--batch", "3", "--format", "json")
    assert first.code == 0, first.err
    report = first.json()
    local = sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*") if p.is_file() and ".hubkit" not in p.parts)
    assert sorted(report["new"]) == local and report["verified"] is True
    assert report["commits"][-1]["files"] == ["README.md"]  # the card lands last
    assert all(len(c["files"]) <= 3 for c in report["commits"])
    remote = tree(hub, "org/tiny")
    assert set(local) <= set(remote) and ".hubkit/hashes.json" not in remote
    assert report["commit_url"] == f"{hub.endpoint}/org/tiny/commit/{api(hub).model_info('org/tiny').sha}"
    made = commits(hub)
    second = hubkit("push", tiny, "--repo", "org/tiny", "--format", "json").json()
    assert second["new"] == [] and second["changed"] == [] and second["commits"] == [] and second["verified"]
    assert commits(hub) == made
    assert second["bytes_hashed"] == 0  # the hash cache answered


def test_dry_run_writes_nothing(hubkit, hub: HubServer, tiny: Path) -> None:
    before = snapshot(tiny)
    result = hubkit("push", tiny, "--repo", "org/dry", "--dry-run", "--format", "json")
    assert result.code == 0 and result.json()["dry_run"] is True and result.json()["commits"]
    writes = [(m, p) for m, p in hub.faults.requests if m in ("POST", "PUT", "DELETE")]
    assert writes == []
    assert not hub.store.exists("models", "org/dry")
    assert snapshot(tiny) == before  # not even .hubkit/hashes.json


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_files_with_the_same_bytes_are_uploaded_intact(hub: HubServer, tiny: Path) -> None:
    import shutil

    from hubkit.hub.push import PushOptions, push

    for copy in ("copy-a.safetensors", "copy-b.safetensors"):
        shutil.copyfile(tiny / SHARD, tiny / copy)
    result = push(PushOptions(folder=tiny, repo="org/twins", batch="16", validate=False, progress=False))
    assert result.verified
    contents = [set(commit["files"]) for commit in result.commits]
    assert all(len({"copy-a.safetensors", "copy-b.safetensors", SHARD} & files) <= 1 for files in contents)


def test_xet_enabled_client_uploads_by_lfs_to_a_hub_without_xet(hub: HubServer, tiny: Path) -> None:
    from huggingface_hub import constants

    from hubkit.hub.push import PushOptions, push

    assert not constants.HF_HUB_DISABLE_XET  # the client would use Xet if the Hub offered it
    pytest.importorskip("hf_xet")
    result = push(PushOptions(folder=tiny, repo="org/lfs", batch="4", progress=False, backoff_s=0))
    assert result.verified and result.xet_offered is False
    asked = [p for _, p in hub.faults.requests if "xet-write-token" in p]
    assert len(asked) == 1  # asked once; the 404 is permanent: not retried
    assert any(p.startswith("/lfs-upload/") for _, p in hub.faults.requests)


def test_dropped_connection_mid_upload_is_retried(hubkit, hub: HubServer, tiny: Path) -> None:
    hub.faults.drop_upload_after_bytes = 1000
    result = hubkit("push", tiny, "--repo", "org/dropped", "--format", "json")
    assert result.code == 0 and result.json()["verified"] is True
    assert hub.faults.drop_upload_after_bytes is None  # the fault fired


def test_push_killed_midway_then_rerun_completes_without_reuploading(hub: HubServer, tiny: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from hubkit.hub.push import PushOptions, push
    from hubkit.testing.kimi import TINY, nvfp4_layout, write_checkpoint

    for item in tiny.glob("*.safetensors"):
        item.unlink()
    write_checkpoint(tiny, nvfp4_layout(TINY), shard_bytes=100_000)  # several shards: several commits
    (tiny / "README.md").unlink()  # the card came from the old shard layout; not needed here
    command = [
        sys.executable,
        "-m",
        "hubkit",
        "-q",
        "push",
        str(tiny),
        "--repo",
        "org/resume",
        "--batch",
        "1",
        "--no-validate",
    ]
    process = subprocess.Popen(command, env={**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": hub.token})
    deadline = time.monotonic() + 60
    while commits(hub) < 3 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) != 0  # interrupted
    landed = tree(hub, "org/resume")
    hub.faults.requests.clear()
    result = push(PushOptions(folder=tiny, repo="org/resume", batch="1", validate=False, progress=False))
    assert result.verified
    resent = set(result.new + result.changed)
    assert resent and not resent & set(landed)
    uploads = [p for m, p in hub.faults.requests if m == "PUT"]
    assert len(uploads) <= len([p for p in resent if p.endswith(".safetensors") or p.endswith(".model")])


def test_atomic_push_leaves_main_untouched_until_the_merge(hub: HubServer, tiny: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    client = api(hub)
    client.create_repo("org/atomic")
    client.upload_file(path_or_fileobj=b"old release\n", path_in_repo="NOTES.txt", repo_id="org/atomic")
    before = client.model_info("org/atomic").sha
    seen: list[str] = []
    original = client.merge_pull_request

    def spy(*args, **kwargs):
        seen.append(api(hub).model_info("org/atomic").sha)  # main just before the merge
        return original(*args, **kwargs)

    import hubkit.hub.push as module

    real_api = module.hub_api
    module.hub_api = lambda: _patched(real_api(), spy)
    try:
        result = push(PushOptions(folder=tiny, repo="org/atomic", atomic=True, tag="v1", progress=False, backoff_s=0))
    finally:
        module.hub_api = real_api
    assert result.merged and result.pull_request == 1 and result.verified
    assert seen == [before]  # nothing reached main before the merge
    main = tree(hub, "org/atomic")
    assert "README.md" in main and "NOTES.txt" in main  # kept and reported, not deleted
    assert result.remote_only == ["NOTES.txt"]
    assert [t.name for t in client.list_repo_refs("org/atomic").tags] == ["v1"]


def _patched(client, merge):
    client.merge_pull_request = merge
    return client


def test_create_pr_is_reused_on_rerun(hubkit, hub: HubServer, tiny: Path) -> None:
    first = hubkit("push", tiny, "--repo", "org/pr", "--create-pr", "--format", "json").json()
    (tiny / "extra.txt").write_text("one more file\n")
    second = hubkit("push", tiny, "--repo", "org/pr", "--create-pr", "--format", "json").json()
    assert first["pull_request"] == second["pull_request"] == 1
    assert second["new"] == ["extra.txt"]
    assert len(list(api(hub).get_repo_discussions("org/pr"))) == 1
    assert "extra.txt" not in tree(hub, "org/pr")  # still only on the PR
    assert "extra.txt" in tree(hub, "org/pr", "refs/pr/1")


def test_push_to_a_branch_private(hubkit, hub: HubServer, tiny: Path) -> None:
    result = hubkit("push", tiny, "--repo", "org/private", "--revision", "candidate", "--private")
    assert result.code == 0, result.err
    assert api(hub).model_info("org/private").private is True
    assert "README.md" in tree(hub, "org/private", "candidate") and "README.md" not in tree(hub, "org/private")


def test_429_storm_is_survived(hub: HubServer, tiny: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    hub.faults.too_many_requests, hub.faults.retry_after_s = 6, 0
    result = push(PushOptions(folder=tiny, repo="org/storm", progress=False, backoff_s=0))
    assert result.verified and hub.faults.too_many_requests == 0


def test_commit_lost_after_apply_is_not_duplicated(hub: HubServer, tiny: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    hub.faults.fail_commit_after_apply = 1
    result = push(PushOptions(folder=tiny, repo="org/lost", batch="100", progress=False, backoff_s=0))
    assert result.verified
    assert result.commits[0]["recovered"] is True
    assert commits(hub) == len(result.commits)  # the first commit was not sent twice


@pytest.mark.parametrize(
    ("token", "repo", "message"),
    [
        ("hf_wrong", "org/x", "rejected the token"),
        (None, "org/x", "no Hub token"),
    ],
)
def test_user_errors_exit_2_without_echoing_the_token(
    hubkit, hub: HubServer, tiny: Path, monkeypatch, token, repo, message
) -> None:
    if token is None:
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setenv("HF_HOME", str(tiny.parent / "empty-hf-home"))
    else:
        monkeypatch.setenv("HF_TOKEN", token)
    result = hubkit("push", tiny, "--repo", repo)
    assert result.code == 2 and message in result.err
    assert "hf_wrong" not in result.err + result.out and hub.token not in result.err + result.out


@pytest.mark.parametrize("repo", ["name-without-org", "org/bad name!", "org/a/b", "org/-name", "org/a..b", "/name", ""])
def test_malformed_repo_id_is_refused_before_anything_is_read(hubkit, hub: HubServer, tiny: Path, repo: str) -> None:
    before = snapshot(tiny)
    result = hubkit("push", tiny, "--repo", repo)
    assert result.code == 2 and "ORG/NAME" in result.err and len(result.err.strip().splitlines()) == 1
    assert hub.faults.requests == [] and snapshot(tiny) == before  # no request, no hashing, no cache


def _symlink_out(tiny: Path, tmp_path: Path) -> str:
    (tmp_path / "private.txt").write_text("secret")
    os.symlink(tmp_path / "private.txt", tiny / "link.txt")
    return "link.txt"


def _symlink_loop(tiny: Path, tmp_path: Path) -> str:
    (tiny / "extra").mkdir()
    os.symlink("b", tiny / "extra" / "a")
    os.symlink("a", tiny / "extra" / "b")
    return "extra/"  # a or b, whichever is listed first


def _dangling_symlink(tiny: Path, tmp_path: Path) -> str:
    os.symlink("gone.bin", tiny / "weights.bin")
    return "weights.bin"


def _fifo(tiny: Path, tmp_path: Path) -> str:
    os.mkfifo(tiny / "pipe.bin")  # opening it for reading would block forever
    return "pipe.bin"


def _unreadable_file(tiny: Path, tmp_path: Path) -> str:
    (tiny / "generation_config.json").chmod(0)
    return "generation_config.json"


def _unreadable_folder(tiny: Path, tmp_path: Path) -> str:
    (tiny / "extra").mkdir()
    (tiny / "extra" / "notes.txt").write_text("notes")
    (tiny / "extra").chmod(0)
    return "extra"


AS_ROOT = os.geteuid() == 0


@pytest.mark.parametrize(
    "make",
    [
        _symlink_out,
        _symlink_loop,
        _dangling_symlink,
        _fifo,
        pytest.param(_unreadable_file, marks=pytest.mark.skipif(AS_ROOT, reason="root reads any file")),
        pytest.param(_unreadable_folder, marks=pytest.mark.skipif(AS_ROOT, reason="root reads any folder")),
    ],
)
def test_unfit_folders_are_one_line_exit_1_before_any_request(
    hubkit, hub: HubServer, tiny: Path, tmp_path: Path, make
) -> None:
    path = make(tiny, tmp_path)
    try:
        result = hubkit("push", tiny, "--repo", "org/unfit", "--no-validate")
    finally:
        for item in tiny.rglob("*"):
            if not item.is_symlink():
                item.chmod(0o755)  # let pytest remove it
    assert result.code == 1, result.err
    assert path in result.err and len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    assert hub.faults.requests == []


def test_validation_errors_stop_the_push(hubkit, hub: HubServer, tiny: Path) -> None:
    (tiny / "generation_config.json").unlink()
    result = hubkit("push", tiny, "--repo", "org/invalid")
    assert result.code == 1 and "HK105" in result.err
    assert hub.faults.requests == []


def edit_in_place(path: Path) -> None:
    """Change one byte, keeping the size and restoring the mtime (as ``touch -r`` would)."""
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(data)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def remote_sha256(hub: HubServer, repo: str, path: str) -> str:
    entry = next(f for f in api(hub).list_repo_tree(repo, recursive=True) if f.path == path)
    return str(entry.lfs.sha256)


def local_sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


SHARD = "model-00001-of-00001.safetensors"


def test_in_place_edit_with_restored_mtime_is_uploaded(hubkit, hub: HubServer, tiny: Path) -> None:
    assert hubkit("push", tiny, "--repo", "org/edit", "--no-validate").code == 0
    edit_in_place(tiny / SHARD)
    result = hubkit("push", tiny, "--repo", "org/edit", "--no-validate", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["changed"] == [SHARD] and result.json()["verified"] is True
    assert remote_sha256(hub, "org/edit", SHARD) == local_sha256(tiny / SHARD)


def ordered(tiny: Path) -> list[str]:
    """The files in the order ``--batch 1`` commits them: small files by path, the card last."""
    files = sorted(p.relative_to(tiny).as_posix() for p in tiny.rglob("*") if p.is_file() and ".hubkit" not in p.parts)
    return [p for p in files if p != "README.md"] + ["README.md"]


def _edit_shard(tiny: Path) -> None:
    edit_in_place(tiny / SHARD)


def _remove_config(tiny: Path) -> None:
    (tiny / "generation_config.json").unlink()


def _add_file(tiny: Path) -> None:
    (tiny / "late.txt").write_text("written while the push ran\n")


@pytest.mark.parametrize(
    ("change", "named"),
    [(_edit_shard, SHARD), (_remove_config, "generation_config.json"), (_add_file, "late.txt")],
)
def test_folder_changed_after_the_upload_fails_the_push_and_a_rerun_fixes_it(
    hubkit, hub: HubServer, tiny: Path, change, named: str
) -> None:
    order = ordered(tiny)
    after = order.index(SHARD) + 1  # the shard's own commit (--batch 1)
    hub.faults.after_commit = lambda applied: change(tiny) if applied == after else None
    result = hubkit("push", tiny, "--repo", "org/race", "--batch", "1", "--no-validate")
    assert result.code == 1, result.err
    assert named in result.out and "rerun the push" in result.out
    assert "VERIFIED" not in result.out + result.err and "VERIFY FAILED" in result.out
    hub.faults.after_commit = None
    again = hubkit("push", tiny, "--repo", "org/race", "--batch", "1", "--no-validate", "--delete-extra")
    assert again.code == 0, again.out + again.err
    assert "VERIFIED" in again.out
    assert remote_sha256(hub, "org/race", SHARD) == local_sha256(tiny / SHARD)
    assert set(tree(hub, "org/race")) - {".gitattributes"} == set(ordered(tiny))


def test_file_changed_before_its_upload_is_uploaded_as_it_is_then(hubkit, hub: HubServer, tiny: Path) -> None:
    assert ordered(tiny).index(SHARD) > 0
    hub.faults.after_commit = lambda applied: _edit_shard(tiny) if applied == 1 else None
    result = hubkit("push", tiny, "--repo", "org/early", "--batch", "1", "--no-validate", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["verified"] is True
    assert remote_sha256(hub, "org/early", SHARD) == local_sha256(tiny / SHARD)


def _on_lfs_batch(tiny: Path, times: int):
    done = []

    def hook(method: str, path: str) -> None:
        if path.endswith("/info/lfs/objects/batch") and len(done) < times:
            done.append(path)
            edit_in_place(tiny / SHARD)  # after hubkit hashed it and checked it, before its bytes travel

    return hook


def test_file_changing_during_its_upload_is_retried_then_uploaded(hub: HubServer, tiny: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    hub.faults.on_request = _on_lfs_batch(tiny, times=1)
    result = push(PushOptions(folder=tiny, repo="org/moving", batch="1", validate=False, progress=False, backoff_s=0))
    assert result.verified
    assert remote_sha256(hub, "org/moving", SHARD) == local_sha256(tiny / SHARD)


def test_file_changing_at_every_try_ends_in_exit_1_saying_rerun(hub: HubServer, tiny: Path) -> None:
    from hubkit.errors import ExitCode
    from hubkit.hub.push import PushOptions, push
    from hubkit.hub.remote import PushIncomplete

    hub.faults.on_request = _on_lfs_batch(tiny, times=100)
    options = PushOptions(
        folder=tiny, repo="org/moving", batch="1", validate=False, progress=False, retries=3, backoff_s=0
    )
    with pytest.raises(PushIncomplete) as caught:
        push(options)
    assert caught.value.exit_code == ExitCode.ARTIFACT_FAILED
    message = str(caught.value)
    assert SHARD in message and "changed during its upload" in message and "rerun the push" in message


@pytest.mark.parametrize(
    "fault",
    [
        {"fail_commits": 3, "fail_commit_status": 503},  # the client never retries a commit: hubkit does
        {"fail_uploads": 1, "fail_upload_status": 503},  # the client retries uploads itself
        # the exit 3: drops outlasting the client's own retries (~23 s) surfaced as a RuntimeError
        pytest.param(
            {"drop_upload_after_bytes": 1000, "drop_uploads": 6},
            id="drops-outlasting-client-retries",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_transient_faults_are_retried(hub: HubServer, tiny: Path, fault: dict[str, int]) -> None:
    from hubkit.hub.push import PushOptions, push

    for name, value in fault.items():
        setattr(hub.faults, name, value)
    options = PushOptions(folder=tiny, repo="org/flaky", batch="1", validate=False, progress=False, backoff_s=0)
    assert push(options).verified
    assert hub.faults.fail_commits == 0 and hub.faults.fail_uploads <= 0  # the faults fired
    assert hub.faults.drop_upload_after_bytes is None


def test_transient_faults_outlasting_the_retries_end_in_exit_1_saying_rerun(hub: HubServer, tiny: Path) -> None:
    from hubkit.errors import ExitCode
    from hubkit.hub.push import PushOptions, push
    from hubkit.hub.remote import PushIncomplete

    hub.faults.fail_commits = 100
    options = PushOptions(folder=tiny, repo="org/down", validate=False, progress=False, retries=3, backoff_s=0)
    with pytest.raises(PushIncomplete) as caught:
        push(options)
    assert caught.value.exit_code == ExitCode.ARTIFACT_FAILED and "rerun the push" in str(caught.value)
    assert commits(hub) == 3
    hub.faults.fail_commits = 0
    assert push(options).verified  # the rerun resumes


def test_permanent_refusals_are_not_retried(hubkit, hub: HubServer, tiny: Path) -> None:
    hub.faults.fail_uploads, hub.faults.fail_upload_status = 100, 403
    result = hubkit("push", tiny, "--repo", "org/forbidden", "--no-validate")
    assert result.code == 2 and "403" in result.err and len(result.err.strip().splitlines()) == 1
    puts = [p for m, p in hub.faults.requests if m == "PUT"]
    assert puts and len(puts) == len(set(puts))  # each file tried once: neither hubkit nor the client retried


def test_unreachable_endpoint_is_exit_2_at_once(hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_TOKEN", "hf_any_token")
    result = hubkit("push", tiny, "--repo", "org/x", "--no-validate")
    assert result.code == 2 and "cannot reach the Hub" in result.err and "HF_ENDPOINT" in result.err


def test_remote_changed_before_the_verify_fails_it(hubkit, hub: HubServer, tiny: Path) -> None:
    last = len(ordered(tiny))

    def tamper(applied: int) -> None:
        if applied == last:  # after the card's commit: another writer replaces a file
            api(hub).upload_file(path_or_fileobj=b'{"max_length": 1}\n', path_in_repo="generation_config.json",
                                 repo_id="org/tamper")  # fmt: skip

    hub.faults.after_commit = tamper
    result = hubkit("push", tiny, "--repo", "org/tamper", "--batch", "1", "--no-validate")
    assert result.code == 1 and "generation_config.json: the remote holds other bytes" in result.out
    assert "VERIFIED" not in result.out


def test_interrupt_mid_upload_leaves_no_upload_thread(hub: HubServer, tiny: Path) -> None:
    import _thread
    import threading

    from hubkit.hub.push import PushOptions, push

    hub.faults.upload_delay_s = 0.5
    hub.faults.on_request = lambda method, path: _thread.interrupt_main() if method == "PUT" else None
    with pytest.raises(KeyboardInterrupt):
        push(PushOptions(folder=tiny, repo="org/stop", batch="100", validate=False, progress=False))
    hub.faults.on_request = None
    uploading = [t.name for t in threading.enumerate() if t.name.startswith(("hubkit-commit", "ThreadPoolExecutor"))]
    assert uploading == []
    puts = sum(1 for m, _ in hub.faults.requests if m == "PUT")
    import time

    time.sleep(1.0)
    assert sum(1 for m, _ in hub.faults.requests if m == "PUT") == puts


def test_github_format_writes_a_step_summary(hubkit, hub: HubServer, tiny: Path, monkeypatch, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert hubkit("push", tiny, "--repo", "org/gh", "--format", "github").code == 0
    api(hub).upload_file(path_or_fileobj=b"stale\n", path_in_repo="old.txt", repo_id="org/gh")
    result = hubkit("push", tiny, "--repo", "org/gh", "--format", "github")
    assert result.code == 0 and "::warning title=hubkit push::old.txt exists only on the remote" in result.out
    text = summary.read_text()
    head = api(hub).model_info("org/gh").sha
    assert text.startswith("earlier step\n") and text.count("### hubkit push") == 2
    assert f"({hub.endpoint}/org/gh/commit/{head})" in text and "VERIFIED" in text
    assert hubkit("push", tiny, "--repo", "not-a-repo", "--format", "github").code == 2
    assert "### hubkit push failed" in summary.read_text() and "ORG/NAME" in summary.read_text()


def test_delete_extra_and_strict_remote_only(hubkit, hub: HubServer, tiny: Path) -> None:
    assert hubkit("push", tiny, "--repo", "org/extra").code == 0
    api(hub).upload_file(path_or_fileobj=b"stale\n", path_in_repo="old.txt", repo_id="org/extra")
    assert hubkit("push", tiny, "--repo", "org/extra", "--strict").code == 1
    assert hubkit("push", tiny, "--repo", "org/extra", "--delete-extra").code == 0
    assert "old.txt" not in tree(hub, "org/extra")


def test_server_state_survives_a_restart(hub: HubServer, tiny: Path, tmp_path: Path) -> None:
    from hubkit.hub.push import PushOptions, push

    push(PushOptions(folder=tiny, repo="org/persist", progress=False))
    again = HubServer(tmp_path / "hub-store")
    again.start()
    try:
        from huggingface_hub import HfApi

        files = {
            f.path
            for f in HfApi(endpoint=again.endpoint, token=again.token).list_repo_tree("org/persist", recursive=True)
        }
        assert "README.md" in files
    finally:
        again.stop()


@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("HUBKIT_LIVE_REPO")),
    reason="opt-in: set HF_TOKEN and HUBKIT_LIVE_REPO (a repo you own) to push to the real Hub",
)
def test_live_hub_push(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Hub with Xet on (conftest leaves it on): the transport production uses."""
    from hubkit.hub.push import PushOptions, push

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    options = PushOptions(folder=tiny, repo=os.environ["HUBKIT_LIVE_REPO"], revision="hubkit-live-test", progress=False)
    first = push(options)
    assert first.verified and first.xet_offered is True  # uploaded through Xet, as production does
    assert push(options).commits == []  # a rerun is a no-op on the real Hub too


def test_multipart_lfs_transfer(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.hub.push import PushOptions, push

    server = HubServer(tmp_path / "store", multipart_chunk=200_000)
    server.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", server.token)
        result = push(PushOptions(folder=tiny, repo="org/multipart", progress=False))
        assert result.verified
        paths = [p for _, p in server.faults.requests]
        assert any(p.startswith("/lfs-part/") for p in paths) and any(p.startswith("/lfs-complete/") for p in paths)
    finally:
        server.stop()


def test_atomic_push_to_a_new_branch_that_starts_with_the_same_files_is_a_no_op(hub: HubServer, tiny: Path) -> None:
    """The new branch starts from main, which holds the same bytes: nothing to commit, no pull request, no crash."""
    from hubkit.hub.push import PushOptions, push

    first = push(PushOptions(folder=tiny, repo="org/same", progress=False, validate=False, backoff_s=0))
    assert first.verified
    again = push(PushOptions(folder=tiny, repo="org/same", revision="v2", atomic=True, progress=False, validate=False))
    assert again.verified and again.pull_request is None and not again.new and not again.changed
