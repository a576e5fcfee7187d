"""Preflight: everything a release needs, checked before its first stage and reported at once (exit 2).

The GPUs a runner has are named by a test double of ``nvidia-smi`` written into tmp_path and put first on PATH
(no GPU exists where these tests run); the quantize plan, the disk figures, the recipe, the calibration sources
and the card's metadata check are hubkit's and the Hub client's own code.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SUBPROCESS_ENV, example_project, fake_gpus, linked_copy


def checks(result) -> dict[str, dict]:
    """Preflight checks of a ``--format json`` run by name (the last of a name, for calibration sources)."""
    return {check["name"]: check for check in result.json()["preflight"]}


def test_every_missing_input_is_reported_at_once(hubkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_gpus(tmp_path, monkeypatch)  # none

    def edit(text: str) -> str:
        text = text.replace('device = "cpu"', 'device = "cuda"').replace(
            'license = "other"', 'license = "modified-mit"'
        )
        text = text.replace("deep = true", 'deep = true\nreference = "reference/hf_quant_config.json"')
        return text.replace("[card.serve]", 'sections = ["extra.md"]\n\n[card.serve]')

    folder = example_project(tmp_path, edit)
    dry = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
    assert dry.code == 2, dry.err
    found = checks(dry)
    failed = {name for name, check in found.items() if check["status"] == "failed"}
    assert failed == {
        "base", "calibration calib.jsonl", "GPUs", "card section", "validate reference", "card metadata (Hub)",
    }, found  # fmt: skip
    assert found["disk"]["status"] == "not checked"  # without a base there is no plan: said, not passed
    for line in (
        f"base: [base] path {folder / 'base'} does not exist; put the base model there, or remove 'path'",
        "calibration calib.jsonl: calibration file calib.jsonl does not exist; fix [quantize] calib",
        'GPUs: no NVIDIA GPU is visible (nvidia-smi lists none) and [quantize] device = "cuda"',
        f"card section: cannot read {folder / 'extra.md'} (No such file or directory); fix [card] sections",
        "validate reference: reference ",
        "reference/hf_quant_config.json does not exist",
        "card metadata (Hub): http://127.0.0.1:",
        '"license" must be one of [apache-2.0, mit, openrail,',
    ):
        assert line in dry.err, (line, dry.err)
    assert "preflight: 6 of " in dry.err and "nothing was run" in dry.err and "Traceback" not in dry.err
    assert {s["status"] for s in dry.json()["stages"]} <= {"would run", "skipped"}  # the plan is still shown

    run = hubkit("release", folder / "hubkit.toml")
    assert run.code == 2 and "preflight: 6 of " in run.err
    assert "## hubkit release: FAILED" in run.out and "  - failed: base:" in run.out
    assert not (folder / "Kimi-Tiny-NVFP4").exists()  # no stage ran


@pytest.mark.slow
def test_quantize_plan_against_the_gpus_present_and_the_free_disk(
    hubkit, kimi_int4_skeleton: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from hubkit.checkpoint import load_checkpoint
    from hubkit.manifest import load_manifest
    from hubkit.release.preflight import GIB, quantize_needs

    folder = example_project(tmp_path, lambda t: t.replace('device = "cpu"', 'device = "auto"'))
    linked_copy(kimi_int4_skeleton, folder / "base")
    (folder / "calib.jsonl").write_text('{"text": "hello"}\n')
    manifest = folder / "hubkit.toml"

    dry = ("release", manifest, "--dry-run", "--until", "quantize", "--format", "json")
    fake_gpus(tmp_path, monkeypatch, *["NVIDIA H100 80GB HBM3"] * 8)
    resident = checks(hubkit(*dry, "--set", 'quantize.mode="resident"'))
    assert resident["GPUs"]["status"] == "failed", resident
    assert (
        "GiB of GPU memory over all of them and 8xH100 has 632.0 GiB: run on "
        '14xB300, 21xB200, 27xH200, 47xH100, or set [quantize] mode = "layerwise"' in resident["GPUs"]["detail"]
    )

    # auto: resident does not fit, so layerwise, one decoder layer at a time on one H100
    roomy = checks(hubkit(*dry, "--set", 'quantize.max_cpu_memory="2TiB"'))
    assert roomy["GPUs"]["status"] == "ok", roomy
    assert roomy["GPUs"]["detail"].startswith("8xH100: 79.0 GiB, the quantize plan's layerwise run needs ")
    assert "; mode auto chose layerwise: resident does not fit with a 15 % margin" in roomy["GPUs"]["detail"]
    assert roomy["host memory"]["status"] == "ok", roomy
    cramped = checks(hubkit(*dry, "--set", 'quantize.max_cpu_memory="16GiB"'))
    assert cramped["host memory"]["status"] == "failed"
    assert "GiB of host memory and 16.0 GiB is available" in cramped["host memory"]["detail"]

    fake_gpus(tmp_path, monkeypatch, *["NVIDIA B300 SXM6 AC"] * 8)
    result = hubkit(*dry, "--set", 'quantize.max_cpu_memory="2TiB"')
    found = checks(result)
    assert found["GPUs"]["status"] == "ok" and found["GPUs"]["detail"].startswith("8xB300: 268.0 GiB, the quantize")
    table = load_manifest(manifest).quantize.model_copy(update={"max_cpu_memory": "2TiB"})
    needs = quantize_needs(load_checkpoint(str(folder / "base")), "8xB300", table)
    free = shutil.disk_usage(folder).free
    assert found["disk"]["status"] == ("failed" if needs.disk > free else "ok"), found["disk"]
    assert f"quantize (layerwise: export and scratch) {needs.disk / GIB:,.1f} GiB" in found["disk"]["detail"]
    if needs.disk > free:  # about 570 GiB: the export and one layer's scratch, no BF16 copy
        assert result.code == 2 and "free space there, or point [quantize] out" in result.err

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # GPUs installed, none for this process
    hidden = checks(hubkit("release", manifest, "--dry-run", "--until", "quantize", "--format", "json"))
    assert hidden["GPUs"]["status"] == "warning" and "quantize will run on the CPU" in hidden["GPUs"]["detail"]


@pytest.mark.slow
def test_hub_dataset_names_are_not_checked_offline_and_the_rest_passes(hubkit, tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    from tests.conftest import example_copy

    folder = example_copy(tmp_path)
    online = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
    assert online.code == 0, online.err
    found = checks(online)
    assert {c["status"] for c in found.values()} <= {"ok", "warning"}, found  # warning: smoke, where no vLLM
    assert found["card metadata (Hub)"]["detail"].endswith("/api/validate-yaml accepts it (license other)")
    assert found["recipe"]["detail"] == "general/ptq/nvfp4_experts_only_mse-kv_fp8_cast loads with modelopt"
    assert found["GPUs"]["detail"].startswith('none needed: [quantize] device = "cpu"')
    assert (
        found["host memory"]["status"] == "ok"
        and "the quantize plan's resident run needs" in (found["host memory"]["detail"])
    )  # a tiny model on the CPU: auto takes resident

    offline = subprocess.run(
        [sys.executable, "-m", "hubkit", "release", str(folder / "hubkit.toml"), "--dry-run", "--until", "quantize",
         "--set", 'quantize.calib=["calib.jsonl", "cnn_dailymail"]', "--format", "json"],
        env={**SUBPROCESS_ENV, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True,
    )  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    dataset = next(c for c in json.loads(offline.stdout)["preflight"] if c["name"] == "calibration cnn_dailymail")
    assert dataset["status"] == "not checked" and "offline" in dataset["detail"]
    assert "not checked: calibration cnn_dailymail" not in offline.stdout  # JSON: the summary is text only


def test_only_the_stages_that_will_run_are_checked(hubkit, tmp_path: Path) -> None:
    folder = example_project(tmp_path)  # no base, no calibration data: push does not need them
    result = hubkit(
        "release", folder / "hubkit.toml", "--dry-run", "--from", "push", "--until", "tag", "--format", "json"
    )
    assert result.code == 0, result.err
    assert [(c["name"], c["status"]) for c in result.json()["preflight"]] == [("Hub", "ok")]


def test_a_missing_quantize_extra_is_named_with_its_install_command(tmp_path: Path) -> None:
    """An environment without accelerate and datasets (their import machinery answers "not found")."""
    folder = example_project(tmp_path)
    program = f"""
import importlib.abc, sys
class NotInstalled(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("accelerate", "datasets"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, NotInstalled())
from hubkit.cli import main
main(["release", {str(folder / "hubkit.toml")!r}, "--dry-run", "--until", "quantize"])
"""
    result = subprocess.run([sys.executable, "-c", program], env=SUBPROCESS_ENV, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert (
        "quantize extra: the quantize stage needs accelerate, datasets, from the quantize extra: "
        "pip install 'hubkit-nvfp4[quantize]'" in result.stderr
    )
    assert "not checked: recipe:" in result.stdout  # modelopt loads recipes: not claimed without it


# ------------------------------------------------------------------------------------- the Hub's metadata check


CARD = "---\nlicense: {license}\nbase_model: org/base\n{extra}---\n\n# A model\n"


@pytest.mark.parametrize(
    ("license", "extra", "error"),
    [
        ("apache-2.0", "", None),
        ("[mit, apache-2.0]", "", None),
        ("other", "license_name: modified-mit\nlicense_link: https://example.com/LICENSE\n", None),
        ("modified-mit", "", '"license" must be one of [apache-2.0, mit, openrail, '),
        ("Apache-2.0", "", '"license" must be one of ['),  # the Hub's ids are lower case
        (
            "other",
            "license_link: https://example.com/LICENSE\n",
            '"license_name" is required when "license" is "other"',
        ),
    ],
)
def test_local_hub_checks_card_metadata_as_the_hub_does(tmp_path: Path, license: str, extra: str, error) -> None:
    """``ModelCard.validate()`` and an upload of README.md, from the real client, against the local server."""
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    card = tmp_path / "README.md"
    card.write_text(CARD.format(license=license, extra=extra))
    with HubServer(tmp_path / "hub") as server:
        validate = subprocess.run(
            [sys.executable, "-c", f"from huggingface_hub import ModelCard; ModelCard.load({str(card)!r}).validate()"],
            env={**SUBPROCESS_ENV, "HF_ENDPOINT": server.endpoint}, capture_output=True, text=True,
        )  # fmt: skip
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo("tester/model")
        if error is None:
            assert validate.returncode == 0, validate.stderr
            api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id="tester/model")
        else:
            assert validate.returncode == 1 and error in validate.stderr, validate.stderr
            with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
                api.upload_file(path_or_fileobj=card, path_in_repo="README.md", repo_id="tester/model")
