"""A release always reports its outcome: a failed stage, a stage that raised, a waived check code, all in the
summary, ``state.json`` and ``$GITHUB_STEP_SUMMARY``; ``[validate] select/ignore`` in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_RELEASE, copy_of


def state(folder: Path) -> dict:
    return json.loads((folder / "Kimi-Tiny-NVFP4" / ".hubkit" / "state.json").read_text())


@pytest.mark.slow
def test_failed_validation_is_reported_and_a_waived_code_passes(
    hubkit, released_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_of(released_example, tmp_path)
    (folder / "Kimi-Tiny-NVFP4" / "scratch.tmp").write_text("left behind\n")  # HK108 stray-file, an error
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))

    failed = hubkit("release", folder / "hubkit.toml", "--format", "github")
    assert failed.code == 1, failed.err
    written = step_summary.read_text()
    assert written.startswith("## hubkit release: FAILED") and "- failed at validate: 1 errors" in written
    assert "first HK108 scratch.tmp" in written and "| validate | failed |" in written
    assert state(folder)["failed"]["stage"] == "validate"

    waived = hubkit("release", folder / "hubkit.toml", "--set", 'validate.ignore=["HK108"]', "--format", "json")
    assert waived.code == 0, waived.err
    report = waived.json()
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["validate"]["status"] == "ran" and stages["validate"]["detail"].endswith("; waived: HK108")
    assert stages["push"]["status"] == "ran"
    assert report["validate"] == {"waived": ["HK108"], "selected": []}
    assert "failed" not in state(folder)  # the last run passed
    text = hubkit("release", folder / "hubkit.toml", "--set", 'validate.ignore=["hk108"]')
    assert text.code == 0 and "- validate: waived: HK108" in text.out  # unchanged: the same waiver, normalised
    assert "| validate | unchanged |" in text.out

    again = hubkit("release", folder / "hubkit.toml", "--set", 'validate.ignore=["HK1"]', "--format", "json")
    validate = next(s for s in again.json()["stages"] if s["name"] == "validate")
    assert validate["status"] == "ran"  # the waiver is part of the stage's inputs


def test_an_unknown_code_in_the_manifest_is_a_manifest_error(hubkit, tmp_path: Path) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(
        (TINY_RELEASE / "hubkit.toml").read_text().replace("deep = true", 'deep = true\nignore = ["HK999"]')
    )
    line = manifest.read_text().splitlines().index('ignore = ["HK999"]') + 1
    result = hubkit("release", manifest, "--dry-run")
    assert result.code == 2
    expected = f"hubkit.toml:{line}: 'validate.ignore.0': 'HK999' names no check; run 'hubkit validate --list-checks'"
    assert expected in result.err


@pytest.mark.slow
def test_a_stage_that_raises_still_writes_the_summary_and_state(
    hubkit, released_example: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = copy_of(released_example, tmp_path)
    (folder / "broken-template").mkdir()
    (folder / "broken-template" / "card.md.j2").write_text("{% if %}\n")
    step_summary = tmp_path / "step-summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(step_summary))
    override = f"card.template={folder / 'broken-template'}"

    result = hubkit("release", folder / "hubkit.toml", "--set", override, "--format", "github")
    assert result.code == 2  # an input error: the exit code is the error's, as before
    errors = [line for line in result.err.splitlines() if line.startswith("hubkit: error: ")]  # beside ::group::
    assert len(errors) == 1 and "card template syntax error" in errors[0]
    for written in (result.out, step_summary.read_text()):
        assert "## hubkit release: FAILED" in written
        assert "- failed at card: " in written and "card template syntax error" in written
        assert "| quantize | unchanged |" in written and "| card | failed |" in written
    recorded = state(folder)["failed"]
    assert recorded["stage"] == "card" and "card template syntax error" in recorded["message"]

    as_json = hubkit("release", folder / "hubkit.toml", "--set", override, "--format", "json")
    assert as_json.code == 2 and as_json.json()["passed"] is False
    assert as_json.json()["stages"][-1]["name"] == "card"
