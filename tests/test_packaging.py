"""The distributions: metadata, what the wheel and the sdist carry, and tests that run from the unpacked sdist."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

import hubkit
from tests.conftest import REPO_ROOT

NAME = "hubkit_nvfp4"


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist, and the wheel built from it, as ``python -m build`` makes them (the backend must be installed:
    the dev extra has hatchling)."""
    pytest.importorskip("hatchling")
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO_ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {
        "sdist": out / f"{NAME}-{hubkit.__version__}.tar.gz",
        "wheel": out / f"{NAME}-{hubkit.__version__}-py3-none-any.whl",
    }


def test_wheel_metadata(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        metadata = email.message_from_bytes(wheel.read(f"{NAME}-{hubkit.__version__}.dist-info/METADATA"))
        entry_points = wheel.read(f"{NAME}-{hubkit.__version__}.dist-info/entry_points.txt").decode()
        names = set(wheel.namelist())
    assert metadata["Name"] == "hubkit-nvfp4" and metadata["Version"] == hubkit.__version__
    assert metadata["License-Expression"] == "Apache-2.0" and metadata["License-File"] == "LICENSE"
    assert f"{NAME}-{hubkit.__version__}.dist-info/licenses/LICENSE" in names
    assert metadata["Requires-Python"] == ">=3.11"
    assert "Typing :: Typed" in metadata.get_all("Classifier")
    assert "Reference release, https://huggingface.co/nvidia/Kimi-K2.6-NVFP4" in metadata.get_all("Project-URL")
    assert "hubkit = hubkit.cli:main" in entry_points
    assert "Provides-Extra: quantize" in str(metadata) and "Provides-Extra: dev" in str(metadata)


def test_wheel_carries_the_package_its_data_and_py_typed(dists: dict[str, Path]) -> None:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
    expected = {
        "hubkit/py.typed", "hubkit/api.py", "hubkit/commands/manifest.py",
        "hubkit/_data/templates/init/ci.yml", "hubkit/_data/templates/init/release.yml",
        "hubkit/_data/templates/init/actionlint.yaml", "hubkit/_data/templates/init/hubkit.toml.j2",
        "hubkit/_data/templates/nvfp4/card.md.j2", "hubkit/_data/checks/kimi-k2-nvfp4.toml",
    }  # fmt: skip
    assert expected <= names, expected - names
    assert not any(name.startswith(("tests/", "examples/", "benchmarks/")) for name in names)


def test_sdist_carries_what_the_tests_read(dists: dict[str, Path]) -> None:
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {
        "LICENSE", "README.md", "pyproject.toml", "action.yml", ".pre-commit-hooks.yaml", ".ci/run",
        "constraints/release.txt", "constraints/dev.txt", "schemas/hubkit.schema.json",
        ".github/workflows/ci.yml", ".github/workflows/release.yml",
        "tests/conftest.py", "tests/test_workflows.py", "tests/github_actions.py",
        "examples/tiny-release/hubkit.toml", "examples/kimi-k2.7-code-nvfp4/provenance.json",
        "benchmarks/bench_validate.py", "checks/kimi-k2-nvfp4.toml", "templates/init/release.yml", "hubkit/py.typed",
    }  # fmt: skip
    assert expected <= names, expected - names
    # what a run of the example leaves in a checkout (git-ignored) stays out
    assert not any(name.startswith(("examples/tiny-release/base/", ".venv/")) for name in names)


@pytest.mark.slow
def test_tests_run_from_the_unpacked_sdist(dists: dict[str, Path], tmp_path: Path) -> None:
    """The sdist is self-sufficient: a sample of its tests passes from the unpacked tree with nothing but the
    tree on PYTHONPATH (the whole suite was run the same way; see the README)."""
    with tarfile.open(dists["sdist"]) as sdist:
        sdist.extractall(tmp_path, filter="data")
    root = tmp_path / f"{NAME}-{hubkit.__version__}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)} | {"PYTHONPATH": str(root)}
    sample = ["tests/test_cli.py", "tests/test_integrations.py", "tests/test_workflows.py", "-m", "not slow"]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *sample],
        cwd=root, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert (
        f"{root}/hubkit"
        in subprocess.run(
            [sys.executable, "-c", "import hubkit; print(hubkit.__file__)"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
    )


def test_release_workflow_checks_the_tag_against_the_built_wheel(dists: dict[str, Path], tmp_path: Path) -> None:
    """hubkit's own release.yml: its tag check, run on the wheel built here, accepts the version and refuses
    another."""
    from tests.github_actions import run_steps

    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "release.yml").read_text())
    check = next(
        s for s in workflow["jobs"]["build"]["steps"] if s.get("name") == "The tag names the version being built"
    )
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist" / dists["wheel"].name).write_bytes(dists["wheel"].read_bytes())
    (tmp_path / "runner").mkdir()
    for tag, passes in ((f"v{hubkit.__version__}", True), ("v9.9.9", False)):
        job = run_steps([check], tmp_path, {"github": {"ref_name": tag}}, dict(os.environ), {}, tmp_path / "runner")
        assert job.passed is passes, job.steps[0].output


def test_constraints_pin_every_dependency_hubkit_and_its_quantize_extra_declare() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (REPO_ROOT / "constraints" / "release.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    declared = {
        requirement.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().lower()
        for requirement in [*project["dependencies"], *project["optional-dependencies"]["quantize"]]
    }
    assert declared - pinned == set()
    ci = (REPO_ROOT / ".ci" / "run").read_text()
    assert "grep '^torch==' constraints/release.txt" in ci and "-c constraints/release.txt -c constraints/dev.txt" in ci
    readme = (REPO_ROOT / "README.md").read_text()
    torch = next(
        line
        for line in (REPO_ROOT / "constraints" / "release.txt").read_text().splitlines()
        if line.startswith("torch==")
    )
    assert f"pip install '{torch}' --index-url https://download.pytorch.org/whl/cpu" in readme


def test_lower_bounds_are_the_tested_versions() -> None:
    """Each dependency's lower bound is the version the tests pin (constraints/): no older version is tested, so
    none is claimed; a bump of a pin that leaves the bound behind fails here."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    pins = {
        canonicalize_name(name): Version(version)
        for constraints in ("release.txt", "dev.txt")
        for line in (REPO_ROOT / "constraints" / constraints).read_text().splitlines()
        if "==" in line and not line.startswith("#")
        for name, version in [line.split("==")]
    }
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [
        *project["dependencies"],
        *(r for extra in project["optional-dependencies"].values() for r in extra),
    ]
    for requirement in map(Requirement, requirements):
        name = canonicalize_name(requirement.name)
        lower = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
        assert lower, f"{requirement}: no lower bound; the tested version is {pins.get(name)}"
        assert name in pins, f"{requirement}: no tested version in constraints/"
        assert max(lower) == pins[name], f"{requirement}: the lower bound is not the tested {pins[name]}"
        assert pins[name] in requirement.specifier, f"{requirement} excludes the tested {pins[name]}"
