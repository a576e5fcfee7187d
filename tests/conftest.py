"""Shared test fixtures: tiny real checkpoints built in code, the reference files, a CLI runner.

What many tests build is built once per session (the example's inputs, the released example, the full-scale
skeletons, the tiny export) and never changed: a test that changes one works on a copy (:func:`copy_of`,
:func:`linked_copy`, the ``tiny`` fixture).
"""

from __future__ import annotations

import os
import tempfile

# huggingface_hub reads these once, at import. Xet stays on, as in production: the local server answers as a
# Hub without Xet, and hubkit then uploads by classic LFS
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_UPDATE_CHECK", "1")
# The tests' own Hugging Face home (removed when the session ends), so that no test reads or writes the user's
# cache or finds the user's saved token. One per session, also when a test module imports this one again.
if not os.environ.get("HUBKIT_TEST_HF_HOME"):
    os.environ["HUBKIT_TEST_HF_HOME"] = tempfile.mkdtemp(prefix="hubkit-tests-")
    os.environ["HUBKIT_TEST_HF_HOME_OWNER"] = str(os.getpid())  # a pytest run in a test shares it, never removes it
os.environ["HF_HOME"] = os.environ["HUBKIT_TEST_HF_HOME"]
# matplotlib (the card's pictures) keeps its font cache there too, not in the user's config folder
os.environ["MPLCONFIGDIR"] = os.path.join(os.environ["HUBKIT_TEST_HF_HOME"], "matplotlib")
os.environ.pop("HF_HUB_CACHE", None)
os.environ.pop("HUGGINGFACE_HUB_CACHE", None)
os.environ.pop("HF_XET_CACHE", None)
os.environ.pop("HF_ASSETS_CACHE", None)
os.environ.pop("HF_TOKEN_PATH", None)

import functools
import json
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from hubkit.cli import main
from hubkit.hub.server import HubServer
from hubkit.testing.kimi import TINY, KimiDims, build_nvfp4_checkpoint, int4_base_layout, write_sparse_checkpoint

if TYPE_CHECKING:
    import torch

# Test modules import the helpers below as ``tests.conftest`` while pytest loads this file as ``conftest``: one
# module object for both names, so that it runs once and its caches are built once.
if __name__ == "conftest":
    sys.modules.setdefault("tests.conftest", sys.modules[__name__])

# A suite launched in the background by a non-interactive shell inherits SIGINT as ignored, and so would every
# hubkit process it starts; the tests that interrupt a run need Python's own handler (a child gets the default
# disposition back on exec, and Python then installs the same handler).
signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA = REPO_ROOT / "tests" / "data"
#: Real configs of public releases, vendored (see tests/data/README.md).
REFERENCES = DATA / "references"
#: The model card of the release this project grew from.
SEED_CARD = DATA / "seed" / "Kimi-K2.7-Code-NVFP4.model-card.txt"
#: The example release: a tiny Kimi-shaped model published to a local Hub.
TINY_RELEASE = REPO_ROOT / "examples" / "tiny-release"
#: The environment of a hubkit subprocess: this checkout first on the path, the rest as the tests run.
SUBPROCESS_ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def example_project(tmp_path: Path, edit: Callable[[str], str] = lambda text: text) -> Path:
    """The example release's manifest (passed through ``edit``) in a fresh folder, its inputs not built."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "hubkit.toml").write_text(edit((TINY_RELEASE / "hubkit.toml").read_text()))
    return folder


@functools.cache
def _example_inputs() -> Path:
    """The example's tiny INT4 base and calibration text, built once per session (see :func:`example_copy`)."""
    from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base, tiny_kimi_base

    folder = Path(tempfile.mkdtemp(prefix="hubkit-example-inputs-"))
    deepseek = tiny_base(folder / "work" / "deepseek")
    int4_base_from(tiny_kimi_base(folder / "work" / "kimi", deepseek), folder / "base")
    calibration_jsonl(folder / "calib.jsonl")
    return folder


def example_copy(tmp_path: Path) -> Path:
    """The example release's manifest in a fresh folder, with its tiny INT4 base and calibration text (copies of
    the ones built once per session, so a test may change them)."""
    inputs = _example_inputs()
    folder = tmp_path / "release"
    folder.mkdir()
    shutil.copy(TINY_RELEASE / "hubkit.toml", folder / "hubkit.toml")
    shutil.copytree(inputs / "base", folder / "base")
    shutil.copy(inputs / "calib.jsonl", folder / "calib.jsonl")
    return folder


@pytest.fixture(scope="session")
def released_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example released once per session (quantized on the CPU, pushed to its local Hub); never changed:
    a test that changes it works on :func:`copy_of` it."""
    pytest.importorskip("modelopt")
    from hubkit.manifest import load_manifest
    from hubkit.release.pipeline import Release, ReleaseOptions

    folder = example_copy(tmp_path_factory.mktemp("released"))
    result = Release(load_manifest(folder / "hubkit.toml"), ReleaseOptions(progress=False)).run()
    assert result.passed, result.as_dict()
    return folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    """A copy of a released folder (its export, records and local Hub) that a test may change."""
    return Path(shutil.copytree(folder, tmp_path / "copy", symlinks=True))


@pytest.fixture(scope="session")
def kimi_k26_skeleton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real nvidia/Kimi-K2.6-NVFP4 configs over a full-scale skeleton whose tensors follow them (sparse shards:
    a few MB on disk), built once per session; never changed: a test that changes it works on a
    :func:`linked_copy`."""
    files = {
        "config.json": read_json(REFERENCES / "nvidia--Kimi-K2.6-NVFP4.config.json"),
        "hf_quant_config.json": read_json(REFERENCES / "nvidia--Kimi-K2.6-NVFP4.hf_quant_config.json"),
    }
    return build_nvfp4_checkpoint(tmp_path_factory.mktemp("k26") / "ckpt", KimiDims(), sparse=True, files=files)


@pytest.fixture(scope="session")
def kimi_int4_skeleton(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The full-scale INT4 base of Kimi-K2.x as a sparse skeleton with the config keys the quantize plan reads,
    built once per session; never changed: a test that changes it works on a :func:`linked_copy`."""
    dims = KimiDims()
    config = {
        "architectures": ["KimiK25ForConditionalGeneration"],
        "text_config": {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers, "n_routed_experts": 384},
    }
    folder = tmp_path_factory.mktemp("kimi-int4") / "kimi"
    return write_sparse_checkpoint(folder, int4_base_layout(dims), files={"config.json": config})


def linked_copy(source: Path, target: Path) -> Path:
    """A copy of a checkpoint folder that shares its shards by hard link (cheap for the full-scale skeletons): a
    test may replace or add any other file, never write into a shard."""
    target.mkdir(parents=True)
    for item in source.iterdir():
        if item.suffix == ".safetensors":
            os.link(item, target / item.name)
        elif item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy(item, target / item.name)
    return target


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def hubkit(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run ``hubkit ARGS`` in-process; returns exit code, stdout and stderr."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = int(exc.code or 0)
        else:  # pragma: no cover - main always exits
            code = 0
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A local Hub-compatible server for one test, with HF_ENDPOINT and HF_TOKEN (its own token) pointing at it."""
    server = HubServer(tmp_path / "hub-store")
    server.start()
    monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
    monkeypatch.setenv("HF_TOKEN", server.token)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_hub(tiny_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    """A local Hub for the whole session holding the tiny export as ``org/tiny``; tests only read it (a test that
    writes, or counts requests, starts its own: ``hub``)."""
    from hubkit.hub.push import PushOptions, push

    folder = tmp_path_factory.mktemp("shared-hub")
    with HubServer(folder / "store") as server:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("HF_ENDPOINT", server.endpoint)
            env.setenv("HF_TOKEN", server.token)
            push(PushOptions(folder=shutil.copytree(tiny_template, folder / "tiny"), repo="org/tiny", progress=False))
        yield server


@pytest.fixture
def read_only_hub(shared_hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> HubServer:
    """:func:`shared_hub`, with HF_ENDPOINT and HF_TOKEN pointing at it for one test."""
    monkeypatch.setenv("HF_ENDPOINT", shared_hub.endpoint)
    monkeypatch.setenv("HF_TOKEN", shared_hub.token)
    return shared_hub


@pytest.fixture(scope="session")
def tiny_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid tiny Kimi-shaped NVFP4 export with real data, built once per session."""
    return build_nvfp4_checkpoint(tmp_path_factory.mktemp("template") / "tiny", TINY)


@pytest.fixture
def tiny(tiny_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the tiny export that a test may break."""
    return Path(shutil.copytree(tiny_template, tmp_path / "tiny"))


@pytest.fixture
def references() -> Path:
    """The vendored reference files; their absence is a broken checkout, so a failure, never a skip."""
    assert REFERENCES.is_dir(), f"reference files missing at {REFERENCES}; they ship with the repository"
    return REFERENCES


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2))


def export_files(folder: Path) -> dict[str, bytes]:
    """Every file of an export but its provenance (which records the mode, timings and resumed layers)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "provenance.json"
    }


def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """This runner's GPUs, as a stand-in nvidia-smi first on PATH lists them (none: it lists nothing)."""
    folder = tmp_path / "bin"
    folder.mkdir(exist_ok=True)
    (folder / "nvidia-smi").write_text("#!/bin/sh\n" + "".join(f"echo '{name}'\n" for name in names))
    (folder / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def set_exclusions(path: Path, patterns: list[str]) -> None:
    """Replace the exclusion list in both hf_quant_config.json and config.json, keeping them in agreement."""
    quant = read_json(path / "hf_quant_config.json")
    quant["quantization"]["exclude_modules"] = patterns
    write_json(path / "hf_quant_config.json", quant)
    config = read_json(path / "config.json")
    config["quantization_config"]["ignore"] = patterns
    write_json(path / "config.json", config)


def codes(result: CliResult) -> set[str]:
    """Finding codes of a ``--format json`` run."""
    return {f["code"] for f in result.json()["findings"]}


def decode_nvfp4(packed: torch.Tensor, scale: torch.Tensor, scale_2: torch.Tensor) -> torch.Tensor:
    """Dequantize an exported NVFP4 weight by hand: element 2k is the low nibble, 2k+1 the high nibble."""
    import torch

    e2m1 = torch.tensor([0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6])
    nibbles = torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(packed.shape[0], -1).long()
    values = e2m1[nibbles]
    blocks = values.reshape(packed.shape[0], -1, 16) * scale.float().unsqueeze(-1) * scale_2.float()
    return blocks.reshape(packed.shape[0], -1)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _example_inputs.cache_info().currsize:
        shutil.rmtree(_example_inputs(), ignore_errors=True)
    if os.environ.get("HUBKIT_TEST_HF_HOME_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["HUBKIT_TEST_HF_HOME"], ignore_errors=True)
