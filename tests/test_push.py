"""``hubkit push`` against the local Hub-compatible server, through the real huggingface_hub client."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkit.hub.testserver import HubServer

TOKEN = "hf_test_token"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    server = HubServer(tmp_path / "hub-store")
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    yield server
    server.stop()


def api(hub: HubServer):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=TOKEN)


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
    made = commits(hub)
    second = hubkit("push", tiny, "--repo", "org/tiny", "--format", "json").json()
    assert second["new"] == [] and second["changed"] == [] and second["commits"] == [] and second["verified"]
    assert commits(hub) == made
    assert second["bytes_hashed"] == 0  # the hash cache answered


def test_dry_run_writes_nothing(hubkit, hub: HubServer, tiny: Path) -> None:
    result = hubkit("push", tiny, "--repo", "org/dry", "--dry-run", "--format", "json")
    assert result.code == 0 and result.json()["dry_run"] is True and result.json()["commits"]
    writes = [(m, p) for m, p in hub.faults.requests if m in ("POST", "PUT", "DELETE")]
    assert writes == []
    assert not hub.store.exists("models", "org/dry")


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

    from hubkit.fixtures.kimi import TINY, nvfp4_layout, write_checkpoint
    from hubkit.hub.push import PushOptions, push

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
    process = subprocess.Popen(command, env={**os.environ, "HF_ENDPOINT": hub.endpoint, "HF_TOKEN": TOKEN})
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


def test_tampered_remote_file_is_caught_by_verify(hubkit, hub: HubServer, tiny: Path) -> None:
    assert hubkit("push", tiny, "--repo", "org/tamper").code == 0
    api(hub).upload_file(
        path_or_fileobj=b'{"max_length": 1}\n', path_in_repo="generation_config.json", repo_id="org/tamper"
    )
    os.utime(tiny / "generation_config.json")  # keep the local file; only the cache entry's mtime changes
    result = hubkit("push", tiny, "--repo", "org/tamper", "--no-verify", "--dry-run", "--format", "json").json()
    assert result["changed"] == ["generation_config.json"]
    from hubkit.hub.push import PushOptions, _verify, hash_files, select_files

    hashed, _ = hash_files(tiny, select_files(tiny, (), ()), 2, False)
    from hubkit.hub.push import PushResult

    report = PushResult("org/tamper", "main")
    _verify(api(hub), PushOptions(folder=tiny, repo="org/tamper"), "main", hashed, report)
    assert report.verified is False and report.mismatches[0].startswith("generation_config.json")


@pytest.mark.parametrize(
    ("token", "repo", "message"),
    [
        ("hf_wrong", "org/x", "rejected the token"),
        (None, "org/x", "no Hub token"),
        (TOKEN, "org/bad name!", "not a valid repo id"),
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
    assert "hf_wrong" not in result.err + result.out and TOKEN not in result.err + result.out


def test_unsafe_folders_are_refused_before_any_request(hubkit, hub: HubServer, tiny: Path, tmp_path: Path) -> None:
    outside = tmp_path / "private.txt"
    outside.write_text("secret")
    os.symlink(outside, tiny / "link.txt")
    result = hubkit("push", tiny, "--repo", "org/unsafe", "--no-validate")
    assert result.code == 1 and "symlink" in result.err
    assert hub.faults.requests == []


def test_validation_errors_stop_the_push(hubkit, hub: HubServer, tiny: Path) -> None:
    (tiny / "generation_config.json").unlink()
    result = hubkit("push", tiny, "--repo", "org/invalid")
    assert result.code == 1 and "HK105" in result.err
    assert hub.faults.requests == []


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
            f.path for f in HfApi(endpoint=again.endpoint, token=TOKEN).list_repo_tree("org/persist", recursive=True)
        }
        assert "README.md" in files
    finally:
        again.stop()


@pytest.mark.skipif(
    not (os.environ.get("HF_TOKEN") and os.environ.get("HUBKIT_LIVE_REPO")),
    reason="opt-in: set HF_TOKEN and HUBKIT_LIVE_REPO (a repo you own) to push to the real Hub",
)
def test_live_hub_push(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.hub.push import PushOptions, push

    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    options = PushOptions(folder=tiny, repo=os.environ["HUBKIT_LIVE_REPO"], revision="hubkit-live-test", progress=False)
    assert push(options).verified
    assert push(options).commits == []  # a rerun is a no-op on the real Hub too


def test_multipart_lfs_transfer(tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.hub.push import PushOptions, push

    server = HubServer(tmp_path / "store", multipart_chunk=200_000)
    server.start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        monkeypatch.setenv("HF_TOKEN", TOKEN)
        result = push(PushOptions(folder=tiny, repo="org/multipart", progress=False))
        assert result.verified
        paths = [p for _, p in server.faults.requests]
        assert any(p.startswith("/lfs-part/") for p in paths) and any(p.startswith("/lfs-complete/") for p in paths)
    finally:
        server.stop()
