"""The gate around ``hubkit quantize``: a base's own modelling code runs only with the user's opt-in
(``--trust-remote-code`` / ``[base] trust_remote_code``), refused at once otherwise (the CLI and the release
preflight); the base's commit is recorded in provenance and on the card; ``init`` pins ``[base] revision``; and
SIGTERM during a layerwise MSE calibration acts within the calibration of a layer, not after it."""

from __future__ import annotations

import io
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubkit.testing.kimi import KimiDims, build_nvfp4_checkpoint
from tests.conftest import REPO_ROOT, SUBPROCESS_ENV, example_copy, export_files

EXAMPLE = REPO_ROOT / "examples" / "kimi-k2.7-code-nvfp4"
TRUST_LINE = "trust_remote_code = true"
#: Appended to the base's modelling code: proves whether transformers imported it.
MARKER_CODE = '\nimport os as _os\nif _os.environ.get("REMOTE_CODE_MARKER"):\n    open(_os.environ["REMOTE_CODE_MARKER"], "a").write("ran\\n")\n'
COMMIT = "0123456789abcdef0123456789abcdef01234567"


# -- remote code -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example release (a tiny Kimi-shaped INT4 base that ships its modelling code), the code marked."""
    pytest.importorskip("modelopt")
    folder = example_copy(tmp_path_factory.mktemp("gate"))
    with open(folder / "base" / "modeling_kimi_k25.py", "a") as handle:
        handle.write(MARKER_CODE)
    return folder


def test_remote_code_without_the_flag_is_exit_2_naming_it_and_runs_nothing(
    hubkit, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("REMOTE_CODE_MARKER", str(marker))
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", project / "base", "--out", out, "--calib", project / "calib.jsonl")
    assert result.code == 2, result.err
    assert len(result.err.strip().splitlines()) == 1 and "Traceback" not in result.err
    for words in ("auto_map in config.json", "modeling_kimi_k25.py", "configuration_kimi_k25.py",
                  "pass --trust-remote-code", "[base] trust_remote_code = true"):  # fmt: skip
        assert words in result.err, (words, result.err)
    assert not marker.exists() and not out.exists() and not (tmp_path / ".out.partial").exists()


def test_remote_code_named_only_by_the_tokenizer_is_refused_too(hubkit, tmp_path: Path) -> None:
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"model_type": "deepseek_v3"}))
    (base / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_x.XTokenizer", "other/repo--fast.Fast"]}})
    )
    result = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--calib", "x.jsonl")
    assert result.code == 2, result.err
    assert "auto_map in tokenizer_config.json: tokenization_x.py, other/repo--fast.Fast" in result.err


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_the_release_preflight_refuses_untrusted_remote_code(hubkit, project: Path, tmp_path: Path) -> None:
    manifest = project / "untrusted.toml"  # beside the example's: the same base and calibration file
    text = (project / "hubkit.toml").read_text()
    assert TRUST_LINE in text
    manifest.write_text(text.replace(TRUST_LINE, "trust_remote_code = false"))
    dry = hubkit("release", manifest, "--dry-run", "--until", "quantize", "--format", "json")
    assert dry.code == 2, dry.err
    found = {check["name"]: check for check in dry.json()["preflight"]}
    assert found["base remote code"]["status"] == "failed"
    assert "[base] trust_remote_code = true" in found["base remote code"]["detail"]
    assert "modeling_kimi_k25.py" in found["base remote code"]["detail"]
    trusted = hubkit("release", project / "hubkit.toml", "--dry-run", "--until", "quantize", "--format", "json")
    found = {check["name"]: check for check in trusted.json()["preflight"]}
    assert found["base remote code"]["status"] == "ok", found


@pytest.mark.slow
def test_trusted_remote_code_runs_and_the_base_is_recorded(
    hubkit, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = tmp_path / "marker"
    monkeypatch.setenv("REMOTE_CODE_MARKER", str(marker))
    out = tmp_path / "out"
    result = hubkit(
        "quantize", "--base", project / "base", "--out", out, "--calib", project / "calib.jsonl", "--calib-size", "8",
        "--calib-seq", "32", "--device", "cpu", "--mode", "layerwise", "--trust-remote-code", "--format", "json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert marker.read_text().startswith("ran")  # transformers was told to trust it: the base's code ran
    revision = json.loads((out / ".hubkit" / "provenance.json").read_text())["base_revision"]
    assert revision["commit"] is None and revision["source"] == "folder" and revision["requested"] is None
    assert revision["fingerprint"].startswith("sha256:") and len(revision["fingerprint"]) == 7 + 64
    card = hubkit("card", "render", out, "--manifest", project / "hubkit.toml")
    assert card.code == 0, card.err
    assert f"- Base: example-org/Kimi-Tiny, from a local copy (fingerprint {revision['fingerprint']})." in card.out


# -- the base's revision -----------------------------------------------------------------------------------------


def test_a_hub_base_records_its_commit_and_untrusted_code_stops_before_the_weights(tmp_path: Path) -> None:
    from huggingface_hub import CommitOperationAdd, HfApi

    from hubkit.hub.server import HubServer

    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"auto_map": {"AutoConfig": "configuration_x.XConfig"}}))
    (base / "configuration_x.py").write_text("raise SystemExit('never imported')\n")
    (base / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    script = (
        "import sys, json\n"
        "from hubkit.errors import HubkitError\n"
        "from hubkit.quantize.pipeline import base_folder\n"
        "from hubkit.quantize.base_revision import base_revision\n"
        "try:\n"
        "    folder = base_folder(sys.argv[1], sys.argv[2] == 'trust')\n"
        "except HubkitError as exc:\n"
        "    print(json.dumps({'refused': str(exc)})); sys.exit(0)\n"
        "print(json.dumps(base_revision(sys.argv[1], folder)))\n"
    )
    with HubServer(tmp_path / "hub") as server:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo("tester/base")
        adds = [CommitOperationAdd(p.name, io.BytesIO(p.read_bytes())) for p in base.iterdir()]  # LFS, not Xet
        commit = api.create_commit("tester/base", adds, commit_message="base").oid
        env = {
            **SUBPROCESS_ENV,
            "HF_ENDPOINT": server.endpoint,
            "HF_TOKEN": server.token,
            "HF_HOME": str(tmp_path / "hf"),
        }

        def run(ref: str, trust: str) -> dict:
            done = subprocess.run([sys.executable, "-c", script, ref, trust], env=env, capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
            return json.loads(done.stdout)

        refused = run("hf://tester/base", "no")
        assert "auto_map in config.json: configuration_x.py" in refused["refused"], refused
        assert not list((tmp_path / "hf").rglob("model.safetensors"))  # refused before the weights came
        recorded = run("hf://tester/base@main", "trust")
    assert recorded["commit"] == commit and recorded["source"] == "hub" and recorded["requested"] == "main"
    assert list((tmp_path / "hf").rglob("model.safetensors"))


def test_a_local_git_checkout_records_its_head(tmp_path: Path) -> None:
    from hubkit.quantize.base_revision import base_revision

    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e"}  # fmt: skip
    for command in (["init", "-q"], ["add", "config.json"], ["commit", "-qm", "base"]):
        subprocess.run([git, *command], cwd=base, env=env, check=True)
    head = subprocess.run([git, "rev-parse", "HEAD"], cwd=base, capture_output=True, text=True).stdout.strip()
    recorded = base_revision(str(base), base)
    assert recorded["commit"] == head and recorded["source"] == "git"
    subprocess.run([git, "gc", "-q"], cwd=base, env=env, check=True)  # the branch now lives in packed-refs
    assert base_revision(str(base), base)["commit"] == head
    plain = tmp_path / "plain"
    shutil.copytree(base, plain, ignore=shutil.ignore_patterns(".git"))
    assert base_revision(str(plain), plain) == {**recorded, "commit": None, "source": "folder"}  # same bytes
    (plain / "config.json").write_text('{"changed": 1}')
    assert base_revision(str(plain), plain)["fingerprint"] != recorded["fingerprint"]


@pytest.fixture(scope="module")
def sibling(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dims = KimiDims(layers=5, experts=16, experts_per_token=2, vision_blocks=2)
    provenance = json.loads((EXAMPLE / "provenance.json").read_text())
    provenance["base_revision"] = {"requested": None, "commit": COMMIT, "source": "hub", "fingerprint": "sha256:0"}
    files = {"README.md": "x\n", ".hubkit/provenance.json": provenance}
    return build_nvfp4_checkpoint(tmp_path_factory.mktemp("sibling") / "ckpt", dims, sparse=True, files=files)


def test_the_card_states_the_base_commit_and_passes_its_check(hubkit, sibling: Path, tmp_path: Path) -> None:
    out = tmp_path / "README.md"
    rendered = hubkit("card", "render", sibling, "--manifest", EXAMPLE / "hubkit.toml", "-o", out)
    assert rendered.code == 0, rendered.err
    assert f"- Base: moonshotai/Kimi-K2.7-Code at commit {COMMIT}." in out.read_text()
    assert hubkit("card", "check", out, "--checkpoint", sibling).code == 0

    record = sibling / ".hubkit" / "provenance.json"  # a record hubkit did not write: nothing of it on the card
    saved = record.read_text()
    try:
        provenance = json.loads(saved)
        provenance["base_revision"]["commit"] = "abc\n\n## Injected"
        record.write_text(json.dumps(provenance))
        rendered = hubkit("card", "render", sibling, "--manifest", EXAMPLE / "hubkit.toml")
    finally:
        record.write_text(saved)
    assert rendered.code == 0, rendered.err
    assert "Injected" not in rendered.out and "- Base:" not in rendered.out


def test_init_pins_the_base_revision_and_trusts_no_code(tmp_path: Path) -> None:
    import tomllib

    from hubkit.commands.init import render_files
    from hubkit.manifest import Manifest

    text = render_files(tmp_path, "org/M-NVFP4", "org/M")[tmp_path / "hubkit.toml"]
    data = tomllib.loads(text)
    assert data["base"]["revision"] == "CHANGE-ME" and data["base"]["trust_remote_code"] is False
    assert "# CHANGE-ME: the base's commit SHA" in text
    manifest = Manifest.model_validate(data)
    assert manifest.base.revision == "CHANGE-ME" and manifest.base.trust_remote_code is False


# -- signals -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def moe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A DeepSeek-V3 of a dense layer and an MoE layer, whose MSE calibration takes a while on a CPU (modelopt's
    reference sweep: 126 candidate scales per expert weight)."""
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    work = tmp_path_factory.mktemp("moe")
    base = tiny_base(work / "base", num_hidden_layers=2, n_routed_experts=4)
    return base, calibration_jsonl(work / "calib.jsonl", samples=8)


def quantize_command(base: Path, calib: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "hubkit", "quantize", "--base", str(base), "--out", str(out), "--calib", str(calib),
            "--calib-size", "8", "--calib-seq", "32", "--batch-size", "4", "--device", "cpu", "--mode", "layerwise",
            "--recipe", "nvfp4-experts-mse", "--format", "json"]  # fmt: skip


def committed(state: Path) -> int:
    try:
        return int(json.loads(state.read_text())["next_layer"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigterm_mid_mse_calibration_acts_within_the_layer_and_a_rerun_resumes(
    moe: tuple[Path, Path], tmp_path: Path
) -> None:
    base, calib = moe
    out = tmp_path / "out"
    state = tmp_path / ".out.partial" / ".hubkit" / "layerwise" / "state.json"
    env = {**SUBPROCESS_ENV, "PYTHONWARNINGS": "ignore", "HF_HOME": str(tmp_path / "hf")}
    child = subprocess.Popen(
        quantize_command(base, calib, out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    seen, deadline, layer_1 = b"", time.monotonic() + 300, None
    # layer 0 (dense) is committed; then modelopt's MSE sweep of layer 1's experts is under way
    while time.monotonic() < deadline and child.poll() is None:
        if select.select([child.stderr], [], [], 0.05)[0]:
            seen += os.read(child.stderr.fileno(), 65536)
        if layer_1 is None and committed(state) == 1:
            layer_1 = len(seen)
        if layer_1 is not None and re.search(rb"MSE weight calibration: [1-9]", seen[layer_1:]):
            break
    assert child.poll() is None, seen.decode(errors="replace")[-2000:]
    child.send_signal(signal.SIGTERM)
    sent = time.monotonic()
    _, rest = child.communicate(timeout=120)
    acted = time.monotonic() - sent
    err = (seen + rest).decode(errors="replace")
    assert child.returncode == 143, err[-2000:]
    assert "hubkit: terminated (SIGTERM)" in err and "Traceback" not in err
    assert committed(state) == 1, f"the layer being calibrated was finished before the signal acted ({acted:.1f} s)"
    assert acted < 15, acted

    # the rerun and an uninterrupted run in this process (torch is imported already)
    from hubkit.quantize.pipeline import QuantizeOptions, quantize

    def run(target: Path) -> dict:
        options = QuantizeOptions(
            base=str(base), out=target, calib=(str(calib),), calib_size=8, calib_seq=32, batch_size=4, device="cpu",
            mode="layerwise", recipe="nvfp4-experts-mse", progress=False,
        )  # fmt: skip
        return quantize(options).provenance

    assert run(out)["run"]["resumed_layers"] == [0]
    whole = tmp_path / "whole"
    assert run(whole)["run"]["resumed_layers"] == []
    exported, reference = export_files(out), export_files(whole)
    assert exported.keys() == reference.keys() and [k for k in exported if exported[k] != reference[k]] == []
