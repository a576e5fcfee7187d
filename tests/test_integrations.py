"""Integrations: ``hubkit manifest`` (lint and JSON Schema, used by editors), the pre-commit hooks, the Python API."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT

SCHEMA = REPO_ROOT / "schemas" / "hubkit.schema.json"
MANIFESTS = [
    REPO_ROOT / "examples" / "tiny-release" / "hubkit.toml",
    REPO_ROOT / "examples" / "kimi-k2.7-code-nvfp4" / "hubkit.toml",
]


def broken_manifest(path: Path) -> Path:
    text = MANIFESTS[0].read_text().replace('repo = "example-org/Kimi-Tiny-NVFP4"', 'repo = "no slash"')
    path.write_text(text.replace("calib_size = 32", "calib_size = 0\ncalib_sise = 4"))
    return path


# ----------------------------------------------------------------------------------------- hubkit manifest


def test_manifest_check_reports_every_problem_with_its_line(hubkit, tmp_path: Path) -> None:
    assert hubkit("manifest", "check", *MANIFESTS).code == 0
    result = hubkit("manifest", "check", broken_manifest(tmp_path / "hubkit.toml"))
    assert result.code == 2
    lines = result.err.splitlines()
    assert len(lines) == 3 and "Traceback" not in result.err
    assert any(re.match(r".*hubkit\.toml:5: 'release\.repo'", line) for line in lines)
    assert any("calib_size" in line and "greater than or equal to 1" in line for line in lines)
    assert any("unknown key 'quantize.calib_sise'" in line for line in lines)
    assert "3 problem(s)" in result.out


def test_manifest_check_github_annotations_overrides_and_unreadable_files(hubkit, tmp_path: Path) -> None:
    broken = broken_manifest(tmp_path / "hubkit.toml")
    github = hubkit("manifest", "check", broken, "--format", "github")
    assert github.code == 2 and github.out.count(f"::error file={broken},line=") == 3
    fixed = hubkit("manifest", "check", broken, "--set", "release.repo=org/name", "--set", "quantize.calib_size=8")
    assert fixed.code == 2 and len(fixed.err.splitlines()) == 1  # only the misspelt key is left
    missing = hubkit("manifest", "check", tmp_path / "absent.toml")
    assert missing.code == 2 and "cannot read manifest" in missing.err
    (tmp_path / "bad.toml").write_text("[release\n")
    assert "not valid TOML" in hubkit("manifest", "check", tmp_path / "bad.toml").err


def test_committed_schema_is_current(hubkit) -> None:
    result = hubkit("manifest", "schema")
    assert result.code == 0
    assert json.loads(result.out) == json.loads(SCHEMA.read_text()), (
        "schemas/hubkit.schema.json is stale: hubkit manifest schema > schemas/hubkit.schema.json"
    )


def test_schema_accepts_the_manifests_and_rejects_what_the_model_rejects(hubkit, tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert hubkit("init", tmp_path / "new", "--repo", "org/Kimi-NVFP4", "--base", "org/Kimi").code == 0
    import tomllib

    for manifest in [*MANIFESTS, tmp_path / "new" / "hubkit.toml"]:
        jsonschema.validate(tomllib.loads(manifest.read_text()), schema)
    errors = list(
        jsonschema.Draft202012Validator(schema).iter_errors(
            tomllib.loads(broken_manifest(tmp_path / "b.toml").read_text())
        )
    )
    assert len(errors) == 3


def test_editors_read_the_schema_directive(tmp_path: Path) -> None:
    """taplo (the engine of Even Better TOML) validates a manifest that starts with ``#:schema``."""
    taplo = shutil.which("taplo") or str(Path(sys.executable).parent / "taplo")
    if not Path(taplo).exists():
        pytest.skip("taplo is not installed (the dev extra has it)")
    shutil.copy(SCHEMA, tmp_path / "hubkit.schema.json")
    good = tmp_path / "hubkit.toml"
    good.write_text("#:schema ./hubkit.schema.json\n" + MANIFESTS[0].read_text())
    bad = tmp_path / "bad.toml"
    bad.write_text("#:schema ./hubkit.schema.json\n" + broken_manifest(tmp_path / "b.toml").read_text())
    ok = subprocess.run([taplo, "lint", str(good)], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    failed = subprocess.run([taplo, "lint", str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode != 0 and "calib_sise" in failed.stderr and "no slash" in failed.stderr


# ----------------------------------------------------------------------------------------- pre-commit


def hooks() -> dict[str, dict[str, object]]:
    return {hook["id"]: hook for hook in yaml.safe_load((REPO_ROOT / ".pre-commit-hooks.yaml").read_text())}


def run_hook(hook_id: str, cwd: Path, files: list[str], args: list[str] = ()) -> subprocess.CompletedProcess[str]:  # type: ignore[assignment]
    """A hook as pre-commit runs it: entry + args + the staged files its ``files`` pattern selects."""
    hook = hooks()[hook_id]
    selected = [f for f in files if re.search(str(hook.get("files", "")), f)]
    if hook.get("pass_filenames", True) is False:
        selected = []
    command = [*shlex.split(str(hook["entry"])), *args, *selected]
    assert command[0] == "hubkit"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *command[1:]], cwd=cwd, env=env, capture_output=True, text=True
    )


def test_pre_commit_hooks_are_valid_for_pre_commit() -> None:
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    result = subprocess.run(
        [pre_commit, "validate-manifest", str(REPO_ROOT / ".pre-commit-hooks.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert set(hooks()) == {"hubkit-manifest", "hubkit-card", "hubkit-validate"}


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
def test_pre_commit_hooks_run_their_commands(hubkit, tmp_path: Path, tiny: Path) -> None:
    repo = tmp_path / "model"
    assert hubkit("init", repo, "--repo", "org/Tiny-NVFP4", "--base", "org/Tiny").code == 0
    staged = ["hubkit.toml", ".github/workflows/ci.yml", "README.md", "docs/README.md", "Tiny-NVFP4/README.md"]
    assert run_hook("hubkit-manifest", repo, staged).returncode == 2  # the base revision is still CHANGE-ME
    manifest = (repo / "hubkit.toml").read_text().replace('"CHANGE-ME"', f'"{"0" * 40}"')
    (repo / "hubkit.toml").write_text(manifest)
    assert run_hook("hubkit-manifest", repo, staged).returncode == 0
    broken_manifest(repo / "hubkit.toml")
    assert run_hook("hubkit-manifest", repo, staged).returncode == 2
    (repo / "hubkit.toml").write_text(manifest)

    # the card is where the manifest puts it ([quantize] out); the repo's own README.md is not checked
    (repo / "README.md").write_text("# How this model is released\n")
    assert run_hook("hubkit-card", repo, staged).returncode == 0
    card_path = repo / "Tiny-NVFP4" / "README.md"
    card_path.parent.mkdir()
    assert hubkit("card", "render", tiny, "--manifest", MANIFESTS[0], "-o", card_path).code == 0
    card = run_hook("hubkit-card", repo, staged)
    assert card.returncode == 0 and "PASSED" in card.stdout
    card_path.write_text("# a title only\n")
    assert run_hook("hubkit-card", repo, staged).returncode == 1

    assert run_hook("hubkit-validate", repo, staged, [str(tiny)]).returncode == 0
    (tiny / "config.json").unlink()
    assert run_hook("hubkit-validate", repo, staged, [str(tiny)]).returncode == 1


@pytest.mark.slow
def test_pre_commit_installs_and_runs_the_hooks(tmp_path: Path) -> None:
    """``pre-commit try-repo`` on this checkout: pre-commit installs hubkit itself and runs the commit hooks
    (network: the package index)."""
    if not (REPO_ROOT / ".git").exists() or os.environ.get("HUBKIT_SKIP_NETWORK_TESTS"):
        pytest.skip("needs a git checkout of hubkit and the package index")
    pre_commit = shutil.which("pre-commit") or str(Path(sys.executable).parent / "pre-commit")
    repo = tmp_path / "model"
    repo.mkdir()
    shutil.copy(MANIFESTS[0], repo / "hubkit.toml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"PRE_COMMIT_HOME": str(tmp_path / "cache"), "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com"}
    for command in (["git", "init", "-q"], ["git", "add", "hubkit.toml"]):
        subprocess.run(command, cwd=repo, check=True, env=env)
    result = subprocess.run(
        [pre_commit, "try-repo", str(REPO_ROOT), "--files", "hubkit.toml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"hubkit manifest check\.+Passed", result.stdout)
    assert re.search(r"hubkit card check\.+Passed", result.stdout)  # no card where the manifest puts it yet


# ----------------------------------------------------------------------------------------- Python API


def readme_python_examples() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def test_readme_python_api_example_runs(tiny: Path, capsys: pytest.CaptureFixture[str]) -> None:
    examples = readme_python_examples()
    assert examples, "README.md has no Python API example"
    for example in examples:
        code = example.replace('"Kimi-K2.7-NVFP4"', repr(str(tiny))).replace('"hubkit.toml"', repr(str(MANIFESTS[0])))
        exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "passed: True" in out and "problems: []" in out


def test_python_api_names_are_the_real_ones_and_import_nothing_heavy() -> None:
    code = (
        "import sys, hubkit.api as api\n"
        "assert not {'torch', 'hubkit.validate.runner', 'hubkit.hub.push'} & set(sys.modules), sorted(sys.modules)\n"
        "from hubkit.validate.runner import validate\n"
        "from hubkit.hub.push import push\n"
        "assert api.validate is validate and api.push is push\n"
        "assert all(getattr(api, name) is not None for name in api.__all__)\n"
        "assert 'torch' not in sys.modules\n"
        "print(len(api.__all__))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr
    import hubkit.api

    assert int(result.stdout) == len(hubkit.api.__all__) and set(hubkit.api.__all__) == {*hubkit.api._WHERE, "release"}
    with pytest.raises(AttributeError):
        _ = hubkit.api.quantize_everything  # type: ignore[attr-defined]


def test_python_api_release_runs_a_dry_run(tmp_path: Path) -> None:
    """``release()`` reads the manifest and sequences the stages as the command does."""
    from hubkit.api import ReleaseOptions, release

    shutil.copy(MANIFESTS[0], tmp_path / "hubkit.toml")
    result = release(tmp_path / "hubkit.toml", ReleaseOptions(dry_run=True, first="card", last="card", progress=False))
    assert [(s.name, s.status) for s in result.stages][:2] == [("quantize", "skipped"), ("card", "would run")]


# ----------------------------------------------------------------------------------------- README truth


def test_shell_completion_as_documented() -> None:
    assert "_HUBKIT_COMPLETE=bash_source hubkit" in (REPO_ROOT / "README.md").read_text()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "_HUBKIT_COMPLETE": "bash_complete"}
    env |= {"COMP_WORDS": "hubkit manifest c", "COMP_CWORD": "2"}
    result = subprocess.run([sys.executable, "-m", "hubkit"], capture_output=True, text=True, env=env)
    assert result.returncode == 0 and result.stdout.split() == ["plain,check"]


def test_readme_lists_every_runtime_dependency() -> None:
    import tomllib

    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    readme = (REPO_ROOT / "README.md").read_text()
    listed = readme.split("- **hubkit itself**", 1)[1].split("\n- ", 1)[0]
    names = {re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0] for requirement in project["dependencies"]}
    assert {name for name in names if name not in listed} == set()
