"""The workflows in a real model repo and the action on a self-hosted runner: the card CI checks is the one the
manifest names, the Hub token sits behind a protected environment, every action is a pinned Node 24 release, and
the action keeps its virtual environment on the runner's volume, keyed by what it was built from."""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.github_actions import ACTION, JobRun, hubkit_on_path, init_model_repo, install_stand_in, run_job, run_steps

#: The first major of each action that runs on Node 24 (GitHub's runners drop Node 20).
NODE24_MAJORS = {
    "actions/checkout": 5,
    "actions/setup-python": 6,
    "actions/cache": 5,
    "actions/upload-artifact": 6,
    "actions/download-artifact": 6,
}
USES = re.compile(r"^\s*(?:- )?uses:\s*(?P<ref>\S+)(?:\s*#\s*(?P<comment>.*))?$")


def workflow_files() -> list[Path]:
    return [
        REPO_ROOT / "action.yml",
        *sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml")),
        *sorted((REPO_ROOT / "templates" / "init").glob("*.yml")),
    ]


# ----------------------------------------------------------------------------------------- pins


def test_every_action_is_pinned_by_sha_to_a_node24_release() -> None:
    versions: dict[str, str] = {}
    seen: set[str] = set()
    for path in workflow_files():
        for line in path.read_text().splitlines():
            match = USES.match(line)
            if not match or match["ref"].startswith("./") or match["ref"] == "HUBKIT_ACTION_REF":
                continue
            action, _, sha = match["ref"].partition("@")
            assert re.fullmatch(r"[0-9a-f]{40}", sha), f"{path.name}: not pinned by a full SHA: {line}"
            version = re.match(r"v(\d+)\.\d+\.\d+\b", match["comment"] or "")
            assert version, f"{path.name}: no '# vX.Y.Z' comment naming the pinned release: {line}"
            assert versions.setdefault(match["ref"], version[0]) == version[0], f"one SHA, two versions: {line}"
            seen.add(action)
            if action in NODE24_MAJORS:
                assert int(version[1]) >= NODE24_MAJORS[action], f"{path.name}: a Node 20 release: {line}"
    assert set(NODE24_MAJORS) <= seen
    for action in NODE24_MAJORS:  # one release of each action everywhere
        assert len({ref for ref in versions if ref.startswith(f"{action}@")}) == 1, action


# ----------------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "workflow",
    [REPO_ROOT / "templates" / "init" / "release.yml", *sorted((REPO_ROOT / ".github" / "workflows").glob("*.yml"))],
)
def test_jobs_that_read_secrets_run_in_a_protected_environment(workflow: Path) -> None:
    document = yaml.safe_load(workflow.read_text())
    assert "secrets." not in yaml.safe_dump(document.get("env") or {})
    for name, job in document["jobs"].items():
        if "secrets." in yaml.safe_dump(job) or "id-token" in (job.get("permissions") or {}):
            assert job.get("environment"), f"{workflow.name}: job {name} reads a secret outside an environment"


def test_the_model_release_uses_the_hub_release_environment() -> None:
    job = yaml.safe_load((REPO_ROOT / "templates" / "init" / "release.yml").read_text())["jobs"]["release"]
    assert job["environment"] == "hub-release"


# ----------------------------------------------------------------------------------------- the card CI checks


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_model_repo_ci_checks_the_card_where_the_manifest_puts_it(hubkit, tmp_path: Path, tiny: Path) -> None:
    repo = init_model_repo(
        hubkit, tmp_path / "model", "--repo", "org/Tiny-NVFP4", "--base", "org/Tiny", "--action", ACTION
    )
    manifest = repo / "hubkit.toml"  # the base revision init leaves as a placeholder: manifest check reports it
    manifest.write_text(manifest.read_text().replace('revision = "CHANGE-ME"', f'revision = "{"0" * 40}"'))
    env = hubkit_on_path(tmp_path / "bin")
    (tmp_path / "runner").mkdir()

    def ci() -> JobRun:
        return run_job(
            repo / ".github" / "workflows" / "ci.yml", "check", repo, env=dict(env),
            stand_ins={ACTION: install_stand_in([])}, runner_temp=tmp_path / "runner",
        )  # fmt: skip

    # an ordinary repo README is no model card: it is not checked
    (repo / "README.md").write_text("# How we release Tiny-NVFP4\n\nRun the release workflow.\n")
    plain = ci()
    assert plain.passed, [(s.name, s.output) for s in plain.steps]
    assert "::notice" in plain.step("Check the model card").output
    assert "Tiny-NVFP4/README.md" in plain.step("Check the model card").output

    # the card where [quantize] out puts it is checked, and a broken one fails the job
    card = repo / "Tiny-NVFP4" / "README.md"
    card.parent.mkdir()
    card.write_text("# just a title\n")
    broken = ci()
    output = broken.step("Check the model card").output
    assert not broken.passed and "::error file=" in output and "Tiny-NVFP4/README.md" in output
    rendered = hubkit("card", "render", tiny, "--manifest", repo / "hubkit.toml", "-o", card)
    assert rendered.code == 0, rendered.err
    assert ci().passed

    # the manifest is read when CI runs: moving [quantize] out moves the card CI checks
    text = (repo / "hubkit.toml").read_text()
    (repo / "hubkit.toml").write_text(text.replace('out = "Tiny-NVFP4"', 'out = "export"'))
    (repo / "export").mkdir()
    (repo / "export" / "README.md").write_text("# just a title\n")
    moved = ci()
    assert not moved.passed and "export/README.md" in moved.step("Check the model card").output


def test_card_check_by_manifest(hubkit, tmp_path: Path) -> None:
    repo = init_model_repo(hubkit, tmp_path / "model", "--repo", "org/Tiny-NVFP4", "--base", "org/Tiny")
    (repo / "README.md").write_text("# not a model card\n")
    absent = hubkit("card", "check", "--manifest", repo / "hubkit.toml")
    assert absent.code == 0 and "no model card at" in absent.out
    assert hubkit("card", "check").code == 2  # neither a card nor a manifest
    assert hubkit("card", "check", repo / "README.md", "--manifest", repo / "hubkit.toml").code == 2
    (repo / "Tiny-NVFP4").mkdir()
    (repo / "Tiny-NVFP4" / "README.md").symlink_to(repo / "nowhere")
    assert hubkit("card", "check", "--manifest", repo / "hubkit.toml").code == 2  # a dangling link is no absent card
    text = (repo / "hubkit.toml").read_text()
    (repo / "hubkit.toml").write_text(text.replace('out = "Tiny-NVFP4"', 'out = "a\\nb"'))
    injected = hubkit("card", "check", "--manifest", repo / "hubkit.toml", "--format", "github")
    assert injected.code == 2 and "control character" in injected.err


# ----------------------------------------------------------------------------------------- the action's install


STUB_PYTHON = """#!/bin/bash
# python3 stand-in: 'python3 -m venv DIR' makes a venv whose python logs pip's arguments; anything else is Python
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin"
  echo "venv $3" >> "$STUB_LOG"
  printf '#!/bin/bash\\necho "pip $* cache=$PIP_CACHE_DIR" >> "$STUB_LOG"\\n' > "$3/bin/python"
  printf '#!/bin/sh\\necho "hubkit, version 0"\\n' > "$3/bin/hubkit"
  chmod +x "$3/bin/python" "$3/bin/hubkit"
  exit 0
fi
exec "{python}" "$@"
"""


@pytest.fixture
def action_checkout(tmp_path: Path) -> Path:
    """What the action's install step reads of its own checkout: the pins, and the source it hashes."""
    action = tmp_path / "action"
    for name in ("pyproject.toml", "constraints/release.txt", "hubkit/__init__.py"):
        (action / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, action / name)
    for name in ("templates/init/ci.yml", "checks/kimi-k2-nvfp4.toml"):
        (action / name).parent.mkdir(parents=True, exist_ok=True)
        (action / name).write_text("x\n")
    return action


@pytest.fixture
def install_step(tmp_path: Path, action_checkout: Path):
    """Run the action's install step with pip stood in for (no network) on ``action_checkout``."""
    action = action_checkout
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(STUB_PYTHON.replace("{python}", sys.executable))
    (bin_dir / "python3").chmod(stat.S_IRWXU)
    log = tmp_path / "log.txt"
    step = next(
        s for s in yaml.safe_load((REPO_ROOT / "action.yml").read_text())["runs"]["steps"] if s.get("id") == "install"
    )
    runs = 0

    def run(
        venv_root: str = "", environment: str = "self-hosted", extras: str = "quantize"
    ) -> tuple[JobRun, list[str]]:
        nonlocal runs
        runs += 1
        runner = tmp_path / f"runner{runs}"
        runner.mkdir()
        log.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "PIP_"))}
        env |= {
            "PATH": f"{bin_dir}{os.pathsep}{env['PATH']}", "GITHUB_ACTION_PATH": str(action), "STUB_LOG": str(log),
            "RUNNER_TOOL_CACHE": str(tmp_path / "tool-cache"),
        }  # fmt: skip
        inputs = {"version": "", "extras": extras, "torch-index": "https://download.pytorch.org/whl/cpu",
                  "venv-root": venv_root}  # fmt: skip
        contexts = {"inputs": inputs, "runner": {"environment": environment, "temp": str(runner)}}
        job = run_steps([step], tmp_path, contexts, env, {}, runner)
        assert job.passed, job.steps[0].output
        return job, log.read_text().splitlines()

    return run


def test_action_keeps_its_environment_on_a_self_hosted_runner(
    install_step, action_checkout: Path, tmp_path: Path
) -> None:
    volume = tmp_path / "volume"
    first, log = install_step(str(volume))
    python = Path(first.outputs["install"]["outputs"]["python"])
    venv = python.parent.parent
    assert venv.parent == volume and venv.name.startswith("venv-")
    assert log[0] == f"venv {venv}"
    assert any("install torch==" in line and "download.pytorch.org/whl/cpu" in line for line in log)
    assert all(line.endswith(f"cache={volume / 'pip-cache'}") for line in log[1:])  # pip's cache beside it

    again, log = install_step(str(volume))
    assert again.outputs["install"]["outputs"]["python"] == str(python)
    assert log == [] and "reusing" in again.steps[0].output  # nothing rebuilt, nothing downloaded

    # another commit of hubkit with the same pins: hubkit alone is reinstalled, in the same environment
    (action_checkout / "hubkit" / "__init__.py").write_text("__version__ = '9'\n")
    _, log = install_step(str(volume))
    assert len(log) == 1 and "--no-deps --force-reinstall" in log[0]
    _, log = install_step(str(volume))
    assert log == []

    # a build that was interrupted (no completion marker) is rebuilt, not reused
    (venv / ".hubkit-complete").unlink()
    _, log = install_step(str(volume))
    assert log[0] == f"venv {venv}"

    # other pins, other extras: another environment
    with (action_checkout / "constraints" / "release.txt").open("a") as constraints:
        constraints.write("# moved pins\n")
    moved, _ = install_step(str(volume))
    other, _ = install_step(str(volume), extras="")
    paths = {str(python), moved.outputs["install"]["outputs"]["python"], other.outputs["install"]["outputs"]["python"]}
    assert len(paths) == 3


def test_action_environment_defaults_by_runner(install_step, tmp_path: Path) -> None:
    self_hosted, _ = install_step()
    assert self_hosted.outputs["install"]["outputs"]["python"].startswith(
        str(tmp_path / "tool-cache" / "hubkit" / "venv-")
    )
    hosted, log = install_step(environment="github-hosted")
    assert hosted.outputs["install"]["outputs"]["python"] == str(
        tmp_path / "runner2" / "hubkit-venv" / "bin" / "python"
    )
    assert log[0].startswith("venv ") and "cache=" in log[1] and "tool-cache" not in log[1]


def test_readme_documents_every_action_input_and_the_install_from_source() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    for name in yaml.safe_load((REPO_ROOT / "action.yml").read_text())["inputs"]:
        assert f"| `{name}` |" in readme, f"README's GitHub Action table lacks the input {name}"
    first_command = readme.split("```bash\n", 1)[1].splitlines()[0]
    assert first_command.startswith("pipx install .") and "not on PyPI" in first_command
