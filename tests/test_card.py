"""Model cards: rendered from facts (golden test against the seed release card), checked against checkpoints."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hubkit.checkpoint import load_checkpoint
from hubkit.cli import main
from hubkit.testing.kimi import KimiDims, build_nvfp4_checkpoint, write_files
from tests.conftest import REPO_ROOT, SEED_CARD, codes, linked_copy

EXAMPLE = REPO_ROOT / "examples" / "kimi-k2.7-code-nvfp4"
SEED = SEED_CARD
#: Each card check of the full-scale skeleton takes seconds: the fast lane keeps one case of each kind.
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def release(kimi_k26_skeleton: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Full-scale Kimi skeleton with the real K2.6 configs and the example's provenance record."""
    files = {
        ".hubkit/provenance.json": json.loads((EXAMPLE / "provenance.json").read_text()),
        ".hubkit/smoke.json": json.loads((EXAMPLE / "smoke.json").read_text()),
        "README.md": "placeholder\n",
    }
    folder = linked_copy(kimi_k26_skeleton, tmp_path_factory.mktemp("k27") / "ckpt")
    write_files(folder, files)
    return folder


@pytest.fixture(scope="module")
def card(release: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The card of ``release``, rendered once for the tests that only read it."""
    out = tmp_path_factory.mktemp("card") / "README.md"
    with pytest.raises(SystemExit) as exit_:
        main(["card", "render", str(release), "--manifest", str(EXAMPLE / "hubkit.toml"), "-o", str(out)])
    assert not exit_.value.code
    return out.read_text()


def render(hubkit, checkpoint: Path, *extra: str) -> str:
    result = hubkit("card", "render", checkpoint, "--manifest", EXAMPLE / "hubkit.toml", *extra)
    assert result.code == 0, result.err
    return result.out


SEED_FACTS = [
    "DeepSeek-V3 (MLA attention, 384 routed experts + 1 shared expert, 61 layers), wrapped with a vision tower + mm_projector (KimiK25ForConditionalGeneration)",
    "~1T total / ~32B activated",
    "general/ptq/nvfp4_experts_only_mse-kv_fp8_cast (MSE-static weight scales via FP8 scale sweep; dynamic NVFP4 input scales; FP8 KV cache)",
    "Group size: 16. KV cache: FP8.",
    "69,120 = 60 layers × 384 experts × 3 projections (gate_proj, up_proj, down_proj)",
    "attention (MLA), shared experts, the layer-0 dense MLP, lm_head, and the vision tower / mm_projector",
    "The exclude_modules / quantization_config match nvidia/Kimi-K2.6-NVFP4",
    "cnn_dailymail + Nemotron-Post-Training-Dataset-v2; calib_size=512, calib_seq=512",
    "0 experts required the max-based amax backstop",
    "from its native INT4 (compressed-tensors pack-quantized) → BF16 → NVFP4",
    "--model decart-ai/Kimi-K2.7-Code-NVFP4",
    "--tensor-parallel-size 8",
    "--kv-cache-dtype fp8",
    "--tool-call-parser kimi_k2 --enable-auto-tool-choice",
    "--trust-remote-code",
    "VLLM_USE_FLASHINFER_MOE_FP4=1",
    "Validated load + generation on NVIDIA B300 with vLLM 0.23",
    "NVIDIA Model Optimizer (commit cc17f2c)",
    "compressed-tensors==0.14.0.x (CompressedLinear was deprecated in 0.15+)",
    "CUDA_LAUNCH_BLOCKING=1",
    "Modified MIT",
    "Coding-focused evaluation against the INT4 baseline is pending and will be added.",
]
SEED_SECTIONS = [
    "Description", "License/Terms of Use", "Model Architecture", "Input", "Output", "Software Integration",
    "Post Training Quantization", "Calibration Dataset", "Usage", "Reproducibility Notes", "Evaluation",
    "Model Limitations",
]  # fmt: skip


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("ร—", "×").replace("โ†’", "→"))


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
def test_golden_card_states_what_the_seed_card_states(card: str) -> None:
    seed = _plain(SEED.read_text(encoding="utf-8", errors="replace"))
    for fact in SEED_FACTS:
        assert _plain(fact) in _plain(card), fact
        assert _plain(fact) in seed, f"not in the seed card: {fact}"
    headings = re.findall(r"^## (.+)$", card, re.MULTILINE)
    assert headings == SEED_SECTIONS
    front = card.split("---")[1]
    for line in ("base_model: moonshotai/Kimi-K2.7-Code", "base_model_relation: quantized", "license: other",
                 "license_name: modified-mit", "library_name: transformers", "pipeline_tag: text-generation",
                 "- cnn_dailymail", "- nvidia/Nemotron-Post-Training-Dataset-v2", "- nvfp4"):  # fmt: skip
        assert line in front, line


def test_render_is_deterministic_and_passes_its_own_check(hubkit, release: Path, card: str, tmp_path: Path) -> None:
    assert render(hubkit, release) == card  # rendered again, to stdout: the same as the module's card (-o)
    out = tmp_path / "README.md"
    out.write_text(card)
    assert hubkit("card", "check", out, "--checkpoint", release).code == 0


def test_smaller_sibling_yields_its_own_numbers(hubkit, tmp_path: Path) -> None:
    dims = KimiDims(layers=5, experts=16, experts_per_token=2, vision_blocks=2)
    sibling = build_nvfp4_checkpoint(tmp_path / "sibling", dims, sparse=True, files={"README.md": "x\n"})
    card = render(hubkit, sibling)
    assert "192 = 4 layers × 16 experts × 3 projections" in card
    assert "16 routed experts + 1 shared expert, 5 layers" in card
    assert "69,120" not in card and "384" not in card
    assert "The calibration record of this export is not available." in card
    assert "Validated load" not in card  # no smoke record, no claim


def test_template_override_block_and_extra_section(hubkit, release: Path, tmp_path: Path) -> None:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "card.md.j2").write_text(
        '{% extends "nvfp4/card.md.j2" %}{% block usage %}## Usage\n\nRun it with our launcher ({{ facts.quantized_modules }} NVFP4 modules).\n{% endblock %}'
    )
    card = render(hubkit, release, "--template", folder)
    assert "Run it with our launcher (69120 NVFP4 modules)." in card and "api_server" not in card
    assert "## Model Architecture" in card


def test_missing_fact_names_the_fact(hubkit, release: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "card.md.j2").write_text("# {{ title }}\n\nServed by {{ facts.serving_gpus }}.\n")
    result = hubkit("card", "render", release, "--manifest", EXAMPLE / "hubkit.toml", "--template", folder)
    assert result.code == 2 and "serving_gpus" in result.err and "Traceback" not in result.err


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("69,120 =", "69,000 ="), "quantized modules"),
        pytest.param(lambda t: t.replace("base_model_relation: quantized\n", ""), "base_model_relation", marks=SLOW),
        (lambda t: t.replace("license: other", "license: [other"), "not valid YAML"),
        pytest.param(lambda t: t.replace("## Calibration Dataset", "## Data"), "Calibration Dataset", marks=SLOW),
        pytest.param(lambda t: t.replace("Group size: 16", "Group size: 32"), "group size", marks=SLOW),
        pytest.param(lambda t: t.replace("~32B activated", "~37B activated"), "params", marks=SLOW),
    ],
)
def test_card_check_refuses(hubkit, release: Path, card: str, tmp_path: Path, edit, message: str) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(edit(card))
    result = hubkit("card", "check", readme, "--checkpoint", release)
    assert result.code == 1
    assert message in result.out
    if message in ("quantized modules", "not valid YAML"):
        assert re.search(rf"README\.md:\d+: .*{re.escape(message)}", result.out)
    report = hubkit("card", "check", readme, "--checkpoint", release, "--format", "json").json()
    assert (report["passed"] is False and report["problems"][0]["line"] is not None) or message in (
        "Calibration Dataset",
        "base_model_relation",
    )


def test_validate_runs_the_card_family(hubkit, tiny: Path) -> None:
    assert hubkit("validate", tiny, "--select", "HK9", "--format", "json").json()["findings"] == []
    readme = tiny / "README.md"
    readme.write_text(readme.read_text().replace("Group size: 16", "Group size: 64"))
    assert codes(hubkit("validate", tiny, "--format", "json")) == {"HK903"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.replace("[card]\n", "[card]\nlicence = 'mit'\n"), "unknown key 'card.licence'"),
        (lambda t: t.replace('repo = "moonshotai/Kimi-K2.7-Code"', 'revision = "main"'), "missing key 'base.repo'"),
        (
            lambda t: t.replace("tensor_parallel_size = 8", "tensor_parallel_size = 'eight'"),
            "card.serve.tensor_parallel_size",
        ),
        (lambda t: t.replace('repo = "decart-ai/Kimi-K2.7-Code-NVFP4"', 'repo = "not a repo id"'), "release.repo"),
    ],
)
def test_manifest_errors_name_the_key_and_line(hubkit, release: Path, tmp_path: Path, change, message: str) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(change((EXAMPLE / "hubkit.toml").read_text()))
    result = hubkit("card", "render", release, "--manifest", manifest)
    assert result.code == 2, result.err
    assert message in result.err and re.search(r"hubkit\.toml:\d+", result.err), result.err


def test_card_render_without_a_card_table(hubkit, tiny: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text('[release]\nrepo = "org/name"\n[base]\nrepo = "org/base"\n[quantize]\nout = "out"\n')
    result = hubkit("card", "render", tiny, "--manifest", manifest)
    assert result.code == 2 and "[card]" in result.err


def test_fixture_cards_are_valid(tiny: Path) -> None:
    from hubkit.card.check import check_card
    from hubkit.card.facts import checkpoint_facts

    assert check_card((tiny / "README.md").read_text(), checkpoint_facts(load_checkpoint(str(tiny)))) == []


@pytest.mark.parametrize(
    ("template", "line"),
    [
        ("# {{ title }}\n\n{{ cycler.__init__.__globals__.os.popen('id').read() }}\n", 3),
        ("# {{ title }}\n{{ lipsum.__globals__['os'].environ['HF_TOKEN'] }}\n", 2),
        ("{{ self.__init__.__globals__ }}\n", 1),
        ("# x\n\n\n{% set f = facts.__class__.__mro__ %}{{ f }}\n", 4),
    ],
)
def test_card_templates_run_in_a_sandbox(
    hubkit, tiny: Path, tmp_path: Path, monkeypatch, template: str, line: int
) -> None:
    """A template folder is someone else's code: it can neither run commands nor read the token into the card."""
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_value")
    folder = tmp_path / "hostile"
    folder.mkdir()
    (folder / "card.md.j2").write_text(template)
    output = tmp_path / "README.md"
    manifest = REPO_ROOT / "examples" / "tiny-release" / "hubkit.toml"
    result = hubkit("card", "render", tiny, "--manifest", manifest, "--template", folder, "-o", output)
    assert result.code == 2, result
    assert result.err.startswith(f"hubkit: error: {folder / 'card.md.j2'}:{line}: ") and "sandbox" in result.err
    assert "hf_secret_token_value" not in result.err + result.out and "uid=" not in result.err + result.out
    assert not output.exists() and list(tmp_path.glob(".README.md.*")) == []
