"""The GitHub Action and the workflows: hubkit's own, and those ``hubkit init`` writes for a model repo.

Offline checks (check-jsonschema's GitHub schemas, zizmor, SHA pins), and the steps' ``run:`` commands run in a
scratch model repo made by ``hubkit init``, with the action's install step replaced by the hubkit under test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT, TINY_RELEASE
from tests.github_actions import (
    ACTION,
    JobRun,
    evaluate,
    hubkit_on_path,
    init_model_repo,
    install_stand_in,
    run_job,
    run_steps,
    substitute,
)


def offline_checks(workflows: Sequence[Path], actions: Sequence[Path] = ()) -> None:
    """check-jsonschema's GitHub schemas, zizmor's auditor persona at low severity and up, and every action pinned
    by SHA."""
    for schema, files in (("vendor.github-workflows", workflows), ("vendor.github-actions", actions)):
        if files:
            result = subprocess.run(
                [sys.executable, "-m", "check_jsonschema", "--builtin-schema", schema, *map(str, files)],
                capture_output=True, text=True,
            )  # fmt: skip
            assert result.returncode == 0, result.stdout + result.stderr
    zizmor = shutil.which("zizmor") or str(Path(sys.executable).parent / "zizmor")
    audit = subprocess.run(
        [zizmor, "--offline", "--persona", "auditor", "--min-severity", "low", *map(str, [*workflows, *actions])],
        capture_output=True,
        text=True,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    for path in [*workflows, *actions]:
        for line in path.read_text().splitlines():
            uses = re.match(r"^\s*(?:- )?uses:\s*(\S+)", line)
            if uses and not uses.group(1).startswith("./"):
                assert re.fullmatch(r"[^@\s]+@[0-9a-f]{40}", uses.group(1)), f"{path.name}: unpinned action: {line}"


def pin_base(repo: Path) -> Path:
    """Fill in the base revision ``init`` leaves as a placeholder (``manifest check`` reports it until then)."""
    manifest = repo / "hubkit.toml"
    manifest.write_text(manifest.read_text().replace('revision = "CHANGE-ME"', f'revision = "{"0" * 40}"'))
    return repo


# ----------------------------------------------------------------------------------------- offline checks


def test_init_writes_workflows_that_pass_the_offline_checks(hubkit, tmp_path: Path) -> None:
    from hubkit.manifest import load_manifest

    repo = init_model_repo(
        hubkit, tmp_path / "new", "--repo", "org/Kimi-NVFP4", "--base", "moonshotai/Kimi-K2.7-Code", "--action", ACTION
    )
    manifest = load_manifest(repo / "hubkit.toml")
    assert manifest.release.repo == "org/Kimi-NVFP4" and manifest.base.repo == "moonshotai/Kimi-K2.7-Code"
    workflows = sorted((repo / ".github" / "workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["ci.yml", "release.yml"]
    offline_checks(workflows)
    for workflow in workflows:
        assert f"uses: {ACTION}" in workflow.read_text()
    # the self-hosted labels release.yml runs on are declared for actionlint
    labels = set(yaml.safe_load((repo / ".github" / "actionlint.yaml").read_text())["self-hosted-runner"]["labels"])
    runs_on = yaml.safe_load((repo / ".github" / "workflows" / "release.yml").read_text())["jobs"]["release"]["runs-on"]
    assert set(runs_on) - {"self-hosted", "linux", "x64"} <= labels

    assert hubkit("init", repo).code == 2  # never overwrites without --force


def test_init_without_an_action_marks_a_placeholder_and_refuses_an_unpinned_one(hubkit, tmp_path: Path) -> None:
    from hubkit.manifest import load_manifest

    blank = init_model_repo(hubkit, tmp_path / "blank")
    load_manifest(blank / "hubkit.toml")
    assert "CHANGE-ME" in (blank / "hubkit.toml").read_text()
    for workflow in (blank / ".github" / "workflows").glob("*.yml"):
        assert "uses: CHANGE-ME/hubkit@" in workflow.read_text()
    offline_checks(sorted((blank / ".github" / "workflows").glob("*.yml")))

    for unpinned in ("acme/hubkit@v1", "acme/hubkit", "acme/hubkit@0123abc"):
        result = hubkit("init", tmp_path / "unpinned", "--action", unpinned)
        assert result.code == 2 and "40-character commit SHA" in result.err
        assert not (tmp_path / "unpinned").exists()


def test_repository_workflows_and_action_pass_the_offline_checks() -> None:
    workflows = sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))
    assert [w.name for w in workflows] == ["ci.yml", "release.yml"]
    offline_checks(workflows, [REPO_ROOT / "action.yml"])


def test_ci_tests_every_python_version_the_package_claims() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    claimed = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in project["classifiers"]
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    ci = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    assert sorted(ci["jobs"]["test"]["strategy"]["matrix"]["python"]) == claimed
    assert project["requires-python"] == f">={claimed[0]}"
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text())
    assert action["inputs"]["python-version"]["default"] in claimed


def test_release_workflow_scopes_the_token_and_keeps_hidden_records() -> None:
    workflow = yaml.safe_load((REPO_ROOT / "templates" / "init" / "release.yml").read_text())
    job = workflow["jobs"]["release"]
    assert "HF_TOKEN" not in (workflow.get("env") or {}) and "HF_TOKEN" not in job["env"]
    with_secrets = [step["name"] for step in job["steps"] if "secrets." in yaml.safe_dump(step)]
    assert with_secrets == ["Release"]  # not the install, not the upload
    release = next(step for step in job["steps"] if step.get("name") == "Release")
    assert job["permissions"]["id-token"] == "write" and "HF_OIDC_RESOURCE" in release["env"]  # OIDC is used
    assert not job["env"]["HF_HOME"].startswith(("${{ github.workspace", ".")), "the Hub cache must not be the checkout"
    upload = next(step for step in job["steps"] if step.get("uses", "").startswith("actions/upload-artifact@"))
    assert upload["with"]["include-hidden-files"] is True


# ----------------------------------------------------------------------------------------- the runner stand-in


def test_expression_evaluation_matches_github() -> None:
    contexts = {"inputs": {"manifest": "", "dry_run": True, "python-version": "3.12"}, "steps": {}}
    assert evaluate("inputs.manifest || 'hubkit.toml'", contexts) == "hubkit.toml"
    assert evaluate("inputs.dry_run && '--dry-run' || ''", contexts) == "--dry-run"
    assert evaluate("inputs.python-version != ''", contexts) is True
    assert evaluate("always() && steps.release.outputs.out != ''", contexts) is False
    assert substitute("group-${{ inputs.manifest || 'x' }}", contexts) == "group-x"


# ----------------------------------------------------------------------------------------- a model repo's CI


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_model_repo_ci_checks_the_manifest_and_the_card_without_a_token(hubkit, tmp_path: Path, tiny: Path) -> None:
    repo = pin_base(init_model_repo(
        hubkit, tmp_path / "model", "--repo", "org/Tiny-NVFP4", "--base", "org/Tiny", "--action", ACTION
    ))  # fmt: skip
    env = hubkit_on_path(tmp_path / "bin")
    installs: list[dict[str, str]] = []

    def ci() -> JobRun:
        return run_job(
            repo / ".github" / "workflows" / "ci.yml", "check", repo, env=dict(env),
            stand_ins={ACTION: install_stand_in(installs)}, runner_temp=tmp_path / "runner",
        )  # fmt: skip

    (tmp_path / "runner").mkdir()
    first = ci()
    assert first.passed, [(s.name, s.output) for s in first.steps]
    assert installs == [{"python-version": "3.12"}]  # no quantize extra, no torch on the CPU runner
    assert "hubkit.toml: valid" in first.step("Check the manifest").output
    assert "no model card at" in first.step("Check the model card").output

    # a committed card (where the manifest's [quantize] out puts it) is checked; so is a broken one
    card = repo / "Tiny-NVFP4" / "README.md"
    card.parent.mkdir()
    rendered = hubkit("card", "render", tiny, "--manifest", repo / "hubkit.toml", "-o", card)
    assert rendered.code == 0, rendered.err
    second = ci()
    assert second.passed and "PASSED" in second.step("Check the model card").output
    card.write_text("# just a title\n")
    broken_card = ci()
    assert (
        not broken_card.passed
        and "::error file=Tiny-NVFP4/README.md" in broken_card.step("Check the model card").output
    )

    # a manifest problem fails the job with an annotation on its line
    card.unlink()
    text = (repo / "hubkit.toml").read_text().replace("[quantize]\n", "[quantize]\ncalib_sise = 4\n")
    (repo / "hubkit.toml").write_text(text.replace('repo = "org/Tiny-NVFP4"', 'repo = "not a repo id"'))
    broken = ci()
    output = broken.step("Check the manifest").output
    assert broken.step("Check the manifest").code == 2
    assert output.count("::error file=hubkit.toml,line=") == 2 and "release.repo" in output and "calib_sise" in output
    assert not broken.step("Check the model card").ran


# ----------------------------------------------------------------------------------------- a model repo's release


@pytest.mark.slow
def test_model_repo_release_keeps_its_work_on_the_data_volume(hubkit, tmp_path: Path) -> None:
    """release.yml's steps on the tiny example: the export, state and Hub cache land on the data volume, the
    records the artifact step uploads exist, and a second run (a fresh checkout) resumes: every stage unchanged."""
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base, tiny_kimi_base

    repo = init_model_repo(
        hubkit, tmp_path / "model", "--repo", "example-org/Kimi-Tiny-NVFP4", "--base", "example-org/Kimi-Tiny",
        "--action", ACTION,
    )  # fmt: skip
    shutil.copy(TINY_RELEASE / "hubkit.toml", repo / "hubkit.toml")  # endpoint = "local": a local Hub server
    int4_base_from(tiny_kimi_base(tmp_path / "work" / "kimi", tiny_base(tmp_path / "work" / "deepseek")), repo / "base")
    calibration_jsonl(repo / "calib.jsonl")
    data = tmp_path / "data"
    env = hubkit_on_path(tmp_path / "bin")
    installs: list[dict[str, str]] = []

    def release() -> JobRun:
        runner = tmp_path / "runner"
        shutil.rmtree(runner, ignore_errors=True)
        runner.mkdir()
        return run_job(
            repo / ".github" / "workflows" / "release.yml", "release", repo, env=dict(env),
            github={"repository": "example-org/model", "ref_name": "main"},
            secrets={"HF_TOKEN": ""}, env_overrides={"HUBKIT_DATA": str(data), "HF_HOME": str(data / "hf-home")},
            stand_ins={ACTION: install_stand_in(installs)}, runner_temp=runner,
        )  # fmt: skip

    first = release()
    assert first.passed, [(s.name, s.output[-3000:]) for s in first.steps]
    assert installs[0]["extras"] == "quantize" and "download.pytorch.org" in installs[0]["torch-index"]
    out = data / "example-org" / "model" / "hubkit"
    assert (out / "config.json").is_file() and (out / ".hubkit" / "state.json").is_file()
    assert not (repo / "Kimi-Tiny-NVFP4").exists(), "the export must not land in the checkout"
    assert "HF_TOKEN" not in first.step("GPU facts").env and "HF_OIDC_RESOURCE" in first.step("Release").env

    upload = first.uses[next(u for u in first.uses if u.startswith("actions/upload-artifact@"))]
    assert upload["include-hidden-files"] == "true"
    paths = [Path(line) for line in upload["path"].splitlines() if line.strip()]
    missing = [p for p in paths if not p.is_file()]
    assert missing == [out / ".hubkit" / "smoke.json"], missing  # smoke is skipped without vLLM and a GPU
    assert "hubkit release: PASSED" in first.summary

    # a new job: actions/checkout would have removed every untracked file of the checkout; the volume stays
    second = release()
    assert second.passed
    assert "| quantize | unchanged |" in second.step("Release").output


# ----------------------------------------------------------------------------------------- the action itself


def action_steps() -> list[dict[str, object]]:
    return yaml.safe_load((REPO_ROOT / "action.yml").read_text())["runs"]["steps"]


def test_action_passes_inputs_through_the_environment_only() -> None:
    for step in action_steps():
        assert "${{" not in str(step.get("run", "")), f"an expression spliced into a script: {step.get('name')}"
    install = next(s for s in action_steps() if s.get("id") == "install")
    assert not any("token" in key.lower() for key in install.get("env", {})), "the install never sees a token"


def test_action_runs_the_given_command_with_shell_like_splitting(hubkit, tmp_path: Path) -> None:
    """The action's 'Run hubkit' step, with the install step's output pointing at the Python under test."""
    repo = pin_base(init_model_repo(
        hubkit, tmp_path / "model", "--repo", "org/Tiny-NVFP4", "--base", "org/Tiny", "--action", ACTION
    ))  # fmt: skip
    (repo / "odd name.toml").write_text((repo / "hubkit.toml").read_text())
    run_step = next(s for s in action_steps() if s.get("name") == "Run hubkit")
    env = hubkit_on_path(tmp_path / "bin")
    (tmp_path / "runner").mkdir()

    def run(args: str, token: str = "") -> tuple[int, str]:
        inputs = {"args": args, "hf-token": token, "working-directory": "."}
        steps = {"install": {"outputs": {"python": sys.executable}}}
        job = run_steps([run_step], repo, {"inputs": inputs, "steps": steps}, dict(env), {}, tmp_path / "runner")
        return job.steps[0].code, job.steps[0].output

    code, output = run("manifest check hubkit.toml 'odd name.toml' --format github")
    assert code == 0 and "odd name.toml: valid" in output
    code, output = run("manifest check '$(touch pwned)' ; touch pwned2")
    assert code == 2 and not (repo / "pwned").exists() and not (repo / "pwned2").exists()


@pytest.mark.slow
def test_action_installs_hubkit_from_its_own_commit(tmp_path: Path) -> None:
    """The action's install step for real: a virtual environment from the action's source with the tested
    constraints, hubkit on PATH for later steps (network: the package index)."""
    if os.environ.get("HUBKIT_SKIP_NETWORK_TESTS"):
        pytest.skip("HUBKIT_SKIP_NETWORK_TESTS is set")
    source = tmp_path / "action"
    shutil.copytree(
        REPO_ROOT,
        source,
        ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", ".*_cache", "examples", "tests"),
    )
    runner = tmp_path / "runner"
    runner.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PYTHONPATH", "VIRTUAL_ENV"))}
    env |= {"GITHUB_ACTION_PATH": str(source), "PATH": f"{Path(sys.base_prefix) / 'bin'}{os.pathsep}{env['PATH']}"}
    declared = yaml.safe_load((REPO_ROOT / "action.yml").read_text())["inputs"]
    inputs = {name: spec.get("default", "") for name, spec in declared.items()} | {
        "python-version": "", "args": "manifest check hubkit.toml",
    }  # fmt: skip
    shutil.copy(TINY_RELEASE / "hubkit.toml", tmp_path / "hubkit.toml")
    job = run_steps(action_steps(), tmp_path, {"inputs": inputs, "github": {}}, env, {}, runner)
    assert job.passed, [(s.name, s.output[-3000:]) for s in job.steps]
    assert not job.steps[0].ran  # python-version "": the runner's own python3, no setup-python
    assert "hubkit, version" in job.step("Install hubkit").output
    assert "hubkit.toml: valid" in job.step("Run hubkit").output
    assert env["PATH"].startswith(str(runner / "hubkit-venv" / "bin"))
    version = subprocess.run(["hubkit", "--version"], env=env, capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("hubkit, version")
