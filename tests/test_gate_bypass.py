"""Validation cannot be bypassed: push uploads only the bytes a passed validation read, and a stage that did not
run is never reported as passed (``push`` alone, ``release`` with ``--skip validate`` / ``--from``, the API)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from hubkit.hub.server import HubServer
from tests.conftest import copy_of

REPO = "example-org/Kimi-Tiny-NVFP4"  # the example manifest's repo
EXPORT = "Kimi-Tiny-NVFP4"


def remote_bytes(endpoint: str, token: str, repo: str, path: str) -> bytes:
    from huggingface_hub import HfApi

    return Path(HfApi(endpoint=endpoint, token=token).hf_hub_download(repo, path)).read_bytes()


def released_config(folder: Path) -> bytes:
    """config.json as the release's local Hub holds it."""
    server = HubServer(folder / ".hubkit" / "local-hub")
    server.start()
    try:
        return remote_bytes(server.endpoint, server.token, REPO, "config.json")
    finally:
        server.stop()


def break_config(export: Path) -> None:
    """A config that no longer matches the weights (validation finds it), the same size, the mtime restored."""
    config = export / "config.json"
    before = config.stat()
    data = json.loads(config.read_text())
    data["text_config"]["num_hidden_layers"] += 1
    broken = json.dumps(data, indent=2)
    config.write_text(broken.ljust(before.st_size) if len(broken) <= before.st_size else broken)
    os.utime(config, ns=(before.st_atime_ns, before.st_mtime_ns))


def stages(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in report["stages"]}


# ------------------------------------------------------------------------------------------------ release


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [("--skip", "validate"), ("--from", "push"), ("--from", "push", "--until", "push"), ()],
    ids=["skip-validate", "from-push", "push-only", "whole"],
)
def test_release_never_pushes_a_broken_export(
    hubkit, released_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args
) -> None:
    folder = copy_of(released_example, tmp_path)
    pushed = released_config(folder)
    break_config(folder / EXPORT)
    result = hubkit("release", folder / "hubkit.toml", *args, "--format", "json")
    assert result.code == 1, result.err
    report = result.json()
    assert report["passed"] is False
    failed = next(s for s in report["stages"] if s["status"] == "failed")
    assert failed["name"] in ("validate", "push") and "HK" in failed["detail"]
    if failed["name"] == "push":
        assert "config.json" in failed["detail"] and "nothing was pushed" in failed["detail"]
    assert released_config(folder) == pushed  # the Hub never received the broken config
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    text = hubkit("release", folder / "hubkit.toml", *args, "--format", "github")
    assert text.code == 1 and "PASSED" not in text.out and "FAILED" in text.out
    assert "PASSED" not in summary.read_text() and "FAILED" in summary.read_text()
    assert released_config(folder) == pushed


@pytest.mark.slow
def test_dry_run_says_the_push_would_validate_first(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)
    break_config(folder / EXPORT)
    result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--skip", "validate", "--format", "json")
    push = stages(result.json())["push"]
    assert push["status"] == "would run" and "validates first" in push["detail"] and "config.json" in push["detail"]


@pytest.mark.slow
def test_skip_validate_after_a_valid_edit_validates_first_then_pushes(
    hubkit, released_example: Path, tmp_path: Path
) -> None:
    folder = copy_of(released_example, tmp_path)
    config = folder / EXPORT / "config.json"
    config.write_text(config.read_text() + "\n")  # the same JSON: still valid, other bytes
    result = hubkit("release", folder / "hubkit.toml", "--skip", "validate", "--format", "json")
    assert result.code == 0, result.err
    report = stages(result.json())
    assert report["validate"]["status"] == "skipped"  # the stage did not run, and does not say it passed
    assert report["push"]["status"] == "ran" and "validated it first" in report["push"]["detail"]
    assert "config.json" in report["push"]["detail"]
    assert released_config(folder) == config.read_bytes()
    again = hubkit("release", folder / "hubkit.toml", "--skip", "validate", "--format", "json")
    assert again.code == 0 and stages(again.json())["push"]["status"] == "unchanged"


@pytest.mark.slow
def test_an_unchanged_export_is_pushed_without_validating_again(hubkit, released_example: Path, tmp_path: Path):
    folder = copy_of(released_example, tmp_path)
    result = hubkit("release", folder / "hubkit.toml", "--from", "push", "--set", "push.batch=4", "--format", "json")
    assert result.code == 0, result.err
    push = stages(result.json())["push"]
    assert push["status"] == "ran" and "validated it first" not in push["detail"]
    export = folder / EXPORT
    record = json.loads((export / ".hubkit" / "validated.json").read_text())
    on_disk = {
        p.relative_to(export).as_posix(): p for p in export.rglob("*") if p.is_file() and ".hubkit" not in p.parts
    }
    assert record["files"] == {name: hashlib.sha256(p.read_bytes()).hexdigest() for name, p in sorted(on_disk.items())}


@pytest.mark.slow
def test_changed_validation_rules_validate_again_before_the_push(hubkit, released_example: Path, tmp_path: Path):
    folder = copy_of(released_example, tmp_path)
    record = json.loads((folder / EXPORT / ".hubkit" / "validated.json").read_text())
    assert record["passed"] is True and "config.json" in record["files"]
    config = folder / EXPORT / "config.json"
    config.write_text(config.read_text() + "\n")  # valid under the rules it passed, new bytes to push
    result = hubkit(
        "release", folder / "hubkit.toml", "--skip", "validate", "--set", "validate.strict=true", "--format", "json"
    )
    push = stages(result.json())["push"]
    assert "under the current [validate] rules" in push["detail"], push


@pytest.mark.slow
def test_api_release_has_the_same_guarantee(released_example: Path, tmp_path: Path) -> None:
    from hubkit.api import ReleaseOptions, release

    folder = copy_of(released_example, tmp_path)
    pushed = released_config(folder)
    break_config(folder / EXPORT)
    result = release(folder / "hubkit.toml", ReleaseOptions(skip=("validate",), progress=False))
    assert not result.passed and result.failure is not None and result.failure.name == "push"
    assert released_config(folder) == pushed


# ------------------------------------------------------------------------------------------------ push


def test_push_no_validate_says_not_validated_everywhere(
    hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    text = hubkit("push", tiny, "--repo", "org/unchecked", "--no-validate")
    assert text.code == 0, text.err
    assert "NOT VALIDATED" in text.out
    data = hubkit("push", tiny, "--repo", "org/unchecked", "--no-validate", "--format", "json").json()
    assert data["validated"] is False and "NOT VALIDATED" in data["outcome"] and data["verified"] is True
    github = hubkit("push", tiny, "--repo", "org/unchecked", "--no-validate", "--format", "github")
    assert github.code == 0 and "NOT VALIDATED" in summary.read_text()
    assert "::warning title=hubkit push::NOT VALIDATED" in github.out


def test_a_validated_push_says_so(hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    data = hubkit("push", tiny, "--repo", "org/checked", "--format", "json").json()
    assert data["validated"] is True and data["outcome"] == "VERIFIED"
    assert hubkit("push", tiny, "--repo", "org/checked", "--format", "github").code == 0
    assert "NOT VALIDATED" not in summary.read_text() and "VERIFIED" in summary.read_text()


def test_a_file_changed_while_it_is_validated_is_not_pushed(
    hubkit, hub: HubServer, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Validation read the good config; the edit lands before the upload: nothing is uploaded."""
    import hubkit.validate.runner as runner

    real = runner.validate

    def validate_then_edit(*args: Any, **kwargs: Any) -> Any:
        report = real(*args, **kwargs)
        break_config(tiny)
        return report

    monkeypatch.setattr(runner, "validate", validate_then_edit)
    result = hubkit("push", tiny, "--repo", "org/raced")
    assert result.code == 2, result.err
    assert "config.json" in result.err and "validated" in result.err and len(result.err.strip().splitlines()) == 1
    assert not any(method == "POST" and "/commit/" in path for method, path in hub.faults.requests)


def test_a_file_changed_after_validation_before_its_upload_is_not_pushed(
    hubkit, hub: HubServer, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hubkit.hub.push as push_module

    real = push_module.token_user

    def edit_then_check(*args: Any, **kwargs: Any) -> Any:
        break_config(tiny)  # after the validation and the hashing, before the first commit
        return real(*args, **kwargs)

    monkeypatch.setattr(push_module, "token_user", edit_then_check)
    result = hubkit("push", tiny, "--repo", "org/late", "--batch", "1")
    assert result.code == 2, result.err
    assert "config.json changed after it was validated" in result.err
    from huggingface_hub import HfApi
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    with pytest.raises((EntryNotFoundError, RepositoryNotFoundError)):
        HfApi(endpoint=hub.endpoint, token=hub.token).hf_hub_download("org/late", "config.json")


def test_a_file_changed_just_before_its_commit_is_not_pushed(
    hubkit, hub: HubServer, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The edit lands after the last look at the file's stat key: the bytes sent are still the validated ones."""
    import hubkit.hub.push as push_module

    real = push_module._Push._refresh

    def refresh_then_edit(self: Any, batch: list[Any]) -> None:
        real(self, batch)
        if any(item.path == "config.json" for item in batch):
            break_config(tiny)

    monkeypatch.setattr(push_module._Push, "_refresh", refresh_then_edit)
    result = hubkit("push", tiny, "--repo", "org/last-moment", "--batch", "1")
    assert result.code == 2, result.err
    assert "config.json changed after it was validated" in result.err
    from huggingface_hub import HfApi

    files = {f.path for f in HfApi(endpoint=hub.endpoint, token=hub.token).list_repo_tree("org/last-moment")}
    assert "config.json" not in files


def test_api_push_validates_what_it_uploads(hub: HubServer, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.api import HubkitError, PushOptions, push

    result = push(PushOptions(folder=tiny, repo="org/api", progress=False))
    assert result.validated and result.outcome == "VERIFIED"
    unchecked = push(PushOptions(folder=tiny, repo="org/api", validate=False, progress=False))
    assert not unchecked.validated and unchecked.outcome == "VERIFIED, NOT VALIDATED"
    files = {p.relative_to(tiny).as_posix(): p for p in tiny.rglob("*") if p.is_file() and ".hubkit" not in p.parts}
    validated = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in files.items()}
    assert push(PushOptions(folder=tiny, repo="org/api", validate=False), validated=validated).validated
    validated["config.json"] = "0" * 64  # a validation that read other bytes
    with pytest.raises(HubkitError, match=r"config\.json differs from what the last passed validation read"):
        push(PushOptions(folder=tiny, repo="org/api", validate=False, progress=False), validated=validated)
