"""Release stages as classes listed once; a tag never moves (push and release alike); the calibration text
fingerprinted by its content."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubkit.hub.server import HubServer
from tests.conftest import copy_of, example_project

REPO = "example-org/Kimi-Tiny-NVFP4"  # the example manifest's repo


def test_the_stages_are_listed_once_in_order() -> None:
    from hubkit.release import options
    from hubkit.release.stages import NAMES, STAGES, Stage

    assert NAMES == ("quantize", "card", "validate", "push", "tag", "smoke")
    assert options.STAGES == NAMES  # the command line's choices are the stages that run
    for stage in STAGES:
        assert issubclass(stage, Stage)
        assert stage.__module__ == f"hubkit.release.stages.{stage.name}"  # one module each


def test_push_never_moves_a_tag(hubkit, hub: HubServer, tiny: Path) -> None:
    from huggingface_hub import HfApi

    first = hubkit("push", tiny, "--repo", "org/tagged", "--tag", "v1", "--format", "json")
    assert first.code == 0, first.err
    tagged = first.json()["commit"]
    again = hubkit("push", tiny, "--repo", "org/tagged", "--tag", "v1", "--format", "json")
    assert again.code == 0 and again.json()["tag"] == "v1"  # the tag already names this commit

    (tiny / "NOTES.txt").write_text("a later release\n")
    moved = hubkit("-q", "push", tiny, "--repo", "org/tagged", "--tag", "v1", "--format", "json")
    assert moved.code == 2, moved.out
    assert moved.err.count("\n") == 1 and f"tag v1 already names commit {tagged}" in moved.err
    assert "pick a new tag" in moved.err
    tags = HfApi(endpoint=hub.endpoint, token=hub.token).list_repo_refs("org/tagged").tags
    assert [(t.name, t.target_commit) for t in tags] == [("v1", tagged)]


def test_release_tag_stage_never_claims_a_tag_that_names_another_commit(hubkit, tmp_path: Path) -> None:
    """``--from tag`` with no push recorded: the tag stage tags the branch's head, by push's rule."""
    from huggingface_hub import HfApi

    folder = example_project(tmp_path)
    server = HubServer(folder / ".hubkit" / "local-hub", user="release")
    server.start()
    try:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo(REPO)
        api.upload_file(path_or_fileobj=b"first\n", path_in_repo="NOTES.txt", repo_id=REPO)
        old = api.model_info(REPO).sha
        api.create_tag(REPO, tag="v1", revision=old)
        api.upload_file(path_or_fileobj=b"second\n", path_in_repo="NOTES.txt", repo_id=REPO)
        head = api.model_info(REPO).sha
    finally:
        server.stop()

    result = hubkit("release", folder / "hubkit.toml", "--from", "tag", "--until", "tag", "--format", "json")
    assert result.code == 0, result.err
    tag = next(s for s in result.json()["stages"] if s["name"] == "tag")
    assert tag["status"] == "skipped" and "is never moved" in tag["detail"] and head in tag["detail"]
    assert tag["outputs"] == {"tag": "v1", "commit": old}

    tagged = hubkit("release", folder / "hubkit.toml", "--from", "tag", "--until", "tag", "--set", "release.tag=v2",
                    "--format", "json")  # fmt: skip
    assert tagged.code == 0, tagged.err
    tag = next(s for s in tagged.json()["stages"] if s["name"] == "tag")
    assert tag["status"] == "ran" and tag["outputs"] == {"tag": "v2", "commit": head}


@pytest.mark.slow
def test_a_calibration_edit_that_keeps_the_size_reruns_quantize(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)

    def quantize_status() -> str:
        result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
        assert result.code == 0, result.err
        return str(next(s["status"] for s in result.json()["stages"] if s["name"] == "quantize"))

    assert quantize_status() == "unchanged"
    calib = folder / "calib.jsonl"
    text = calib.read_text()
    first = json.loads(text.splitlines()[0])
    edited = json.dumps({**first, "text": first["text"][::-1]})  # the same characters, in another order
    assert len(edited) == len(text.splitlines()[0]) and edited != text.splitlines()[0]
    calib.write_text(text.replace(text.splitlines()[0], edited, 1))
    assert calib.stat().st_size == len(text.encode())
    assert quantize_status() == "would run"
