"""``hubkit quantize`` end to end on a tiny DeepSeek-V3 (CPU, real transformers and modelopt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("modelopt")
transformers = pytest.importorskip("transformers")

from safetensors.torch import load_file  # noqa: E402

from hubkit.quantize.pipeline import QuantizeOptions, quantize  # noqa: E402
from hubkit.quantize.tiny_models import (  # noqa: E402
    WORDS,
    calibration_jsonl,
    int4_base_from,
    tiny_base,
    tiny_kimi_base,
)
from tests.conftest import decode_nvfp4  # noqa: E402


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_base(tmp_path_factory.mktemp("base") / "tiny-deepseek")


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return calibration_jsonl(tmp_path_factory.mktemp("calib") / "calib.jsonl")


@pytest.fixture(scope="module")
def result(base: Path, calib: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("export") / "tiny-nvfp4"
    options = QuantizeOptions(
        base=str(base), out=out, calib=(str(calib),), calib_size=32, calib_seq=64, batch_size=4, progress=False
    )
    return quantize(options)


@pytest.mark.slow
def test_export_validates_against_its_base(result, base: Path, hubkit) -> None:
    assert result.report.passed, result.report.findings
    assert {f.code for f in result.report.findings} <= {"HK107"}  # only the card, rendered later
    deep = hubkit("validate", result.out, "--deep", "--base", base, "--format", "json")
    assert deep.code == 0, deep.out
    assert not (result.out.parent / f".{result.out.name}.partial").exists()
    assert json.loads((result.out / ".hubkit" / "state.json").read_text())["status"] == "complete"


@pytest.mark.slow
def test_only_routed_experts_are_nvfp4_close_to_bf16(result, base: Path) -> None:
    tensors = load_file(result.out / "model.safetensors")
    original = load_file(base / "model.safetensors")
    packed = {n.rsplit(".", 1)[0] for n, t in tensors.items() if t.dtype == torch.uint8}
    assert len(packed) == (3 - 1) * 8 * 3 and all(".mlp.experts." in n for n in packed)
    for name in sorted(packed)[:6]:
        weight = decode_nvfp4(
            tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"], tensors[f"{name}.weight_scale_2"]
        )
        reference = original[f"{name}.weight"].float()
        assert (weight - reference).norm() / reference.norm() < 0.12
    for expert in range(8):
        prefix = f"model.layers.1.mlp.experts.{expert}"
        for kind in ("weight_scale_2", "input_scale"):
            assert torch.equal(tensors[f"{prefix}.gate_proj.{kind}"], tensors[f"{prefix}.up_proj.{kind}"])
    # unquantized tensors keep the base's dtype (the router is upcast on load and cast back)
    assert tensors["model.layers.1.mlp.gate.weight"].dtype == original["model.layers.1.mlp.gate.weight"].dtype
    assert torch.equal(
        tensors["model.layers.0.self_attn.o_proj.weight"], original["model.layers.0.self_attn.o_proj.weight"]
    )


@pytest.mark.slow
def test_coverage_and_provenance_are_recorded(result) -> None:
    provenance = json.loads((result.out / ".hubkit" / "provenance.json").read_text())
    coverage = provenance["coverage"]
    assert coverage["routers"] == 2 and coverage["experts"] == 16
    assert coverage["experts_without_tokens"] == sum(len(ids) for ids in coverage["backstop_experts"].values())
    assert coverage["tokens"] > 0
    assert provenance["recipe"]["name"] == "general/ptq/nvfp4_experts_only_mse-kv_fp8_cast"
    assert provenance["recipe"]["quantize"]["algorithm"]["method"] == "mse"
    assert provenance["versions"]["nvidia-modelopt"] and provenance["versions"]["torch"]
    assert provenance["calibration"]["calib_size"] == 32 and provenance["calibration"]["seed"] == 1234
    # hubkit's CPU stand-ins run exactly when no CUDA device does the calibration
    assert provenance["cpu_nvfp4_fallback"] is (not torch.cuda.is_available())
    assert provenance["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert provenance["run"]["mode"] == "resident" and "fits with margin" in provenance["run"]["reason"]
    assert set(provenance["timings_s"]) >= {"load", "calibrate", "export", "validate"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"base": "NOT_A_CHECKPOINT"}, "not a checkpoint folder"),
        ({"recipe": "general/ptq/no_such_recipe"}, "cannot load recipe"),
        ({"calib": "BAD_JSONL"}, "is not JSON"),
        ({"calib": "MISSING.jsonl"}, "does not exist"),
        ({"device": "cuda"}, "no CUDA device"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    hubkit, base: Path, calib: Path, tmp_path: Path, change: dict[str, str], message: str
) -> None:
    if torch.cuda.is_available() and change.get("device") == "cuda":
        pytest.skip("this host has CUDA")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{broken\n')
    (tmp_path / "not-a-checkpoint").mkdir()
    values = {"base": str(base), "recipe": "nvfp4-experts-mse", "calib": str(calib), "device": "auto", **change}
    values["base"] = values["base"].replace("NOT_A_CHECKPOINT", str(tmp_path / "not-a-checkpoint"))
    values["calib"] = (
        values["calib"].replace("BAD_JSONL", str(bad)).replace("MISSING.jsonl", str(tmp_path / "missing.jsonl"))
    )
    out = tmp_path / "out"
    args = [
        "quantize",
        "--base",
        values["base"],
        "--out",
        out,
        "--recipe",
        values["recipe"],
        "--calib",
        values["calib"],
    ]
    result = hubkit(*args, "--device", values["device"], "--calib-size", "4", "--calib-seq", "16")
    assert result.code == 2, result.err
    assert message in result.err and "Traceback" not in result.err
    assert not out.exists() and not (tmp_path / ".out.partial").exists()


def test_refuses_a_non_empty_out_folder(hubkit, base: Path, calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = hubkit("quantize", "--base", base, "--out", out, "--calib", calib)
    assert result.code == 2 and "not empty" in result.err
    assert (out / "keep.txt").read_text() == "mine"


def test_calibration_from_a_dataset_saved_on_disk(base: Path, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from hubkit.quantize.calibration import CalibrationSource, tokenize

    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": [f"sample {i} " + " ".join(WORDS) for i in range(10)]}).save_to_disk(folder)
    source = CalibrationSource.parse(str(folder))
    records = source.records(4)
    assert source.kind == "disk" and len(records) == 4 and records[0].startswith("sample 0")
    tokens = tokenize(transformers.AutoTokenizer.from_pretrained(base), records, 8)
    assert len(tokens) == 4 and all(0 < len(t) <= 8 for t in tokens)


@pytest.mark.slow
def test_int4_pack_quantized_base_end_to_end(base: Path, calib: Path, tmp_path: Path, hubkit) -> None:
    int4 = int4_base_from(base, tmp_path / "int4-base")
    assert "model.layers.1.mlp.experts.0.gate_proj.weight_packed" in load_file(int4 / "model.safetensors")
    out = tmp_path / "out"
    result = quantize(
        QuantizeOptions(
            base=str(int4), out=out, calib=(str(calib),), calib_size=8, calib_seq=32, batch_size=4, progress=False
        )
    )
    assert result.report.passed, result.report.findings
    assert not (tmp_path / ".out.bf16").exists()  # the BF16 intermediate is removed after success
    assert "dequantize" in result.provenance["timings_s"]
    tensors = load_file(out / "model.safetensors")
    name = "model.layers.2.mlp.experts.4.down_proj"
    weight = decode_nvfp4(tensors[f"{name}.weight"], tensors[f"{name}.weight_scale"], tensors[f"{name}.weight_scale_2"])
    reference = load_file(base / "model.safetensors")[f"{name}.weight"].float()
    assert (weight - reference).norm() / reference.norm() < 0.2  # INT4 then NVFP4: both roundings add up
    assert hubkit("validate", out, "--base", int4, "--deep").code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "modelopt"


def test_dequantization_is_reused_by_a_rerun(base: Path, tmp_path: Path) -> None:
    from hubkit.quantize.pipeline import dequantize_int4

    int4 = int4_base_from(base, tmp_path / "int4-base")
    first = dequantize_int4(int4, tmp_path / "bf16")
    stamp = (first / "model.safetensors").stat().st_mtime_ns
    assert "quantization_config" not in json.loads((first / "config.json").read_text())
    assert dequantize_int4(int4, tmp_path / "bf16") == first
    assert (first / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.fixture(scope="module")
def kimi_base(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_kimi_base(tmp_path_factory.mktemp("kimi") / "tiny-kimi", base)


@pytest.mark.slow
def test_kimi_shaped_model_follows_the_reference_precision_split(
    kimi_base: Path, calib: Path, tmp_path: Path, hubkit
) -> None:
    from hubkit.testing.kimi import KimiDims, reference_exclusions

    out = tmp_path / "kimi-nvfp4"
    options = QuantizeOptions(
        base=str(kimi_base),
        out=out,
        profile="kimi-k2-nvfp4",
        trust_remote_code=True,
        calib=(str(calib),),
        calib_size=8,
        calib_seq=32,
        progress=False,
    )
    result = quantize(options)
    assert result.report.profile == "kimi-k2-nvfp4" and result.report.passed, result.report.findings
    exclusions = json.loads((out / "hf_quant_config.json").read_text())["quantization"]["exclude_modules"]
    # the structure of nvidia/Kimi-K2.6-NVFP4's list: lm_head, layer 0, per-layer attention and shared experts, vision
    wanted = reference_exclusions(KimiDims(layers=3, first_dense=1))
    assert set(wanted) <= set(exclusions)
    assert {p for p in exclusions if p not in wanted} <= {
        "language_model.model.embed_tokens", "language_model.model.layers.1.mlp.gate", "language_model.model.layers.2.mlp.gate"
    }  # fmt: skip
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["model_type"] == "deepseek_v3" and "quantization_config" not in config["text_config"]
    (tmp_path / "reference.json").write_text(
        json.dumps({"quantization": {"exclude_modules": wanted, "quant_algo": "NVFP4"}})
    )
    checked = hubkit(
        "validate", out, "--reference", tmp_path / "reference.json", "--base", kimi_base, "--format", "json"
    )
    assert checked.code == 0, checked.out
    assert {f["code"] for f in checked.json()["findings"]} <= {"HK107", "HK504"}


def test_chat_samples_go_through_the_chat_template(base: Path, tmp_path: Path) -> None:
    from hubkit.quantize.calibration import CalibrationSource, tokenize

    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    chats = tmp_path / "chats.jsonl"
    chats.write_text(json.dumps({"messages": [{"role": "user", "content": "the quick fox"}]}) + "\n")
    records = CalibrationSource.parse(str(chats)).records(5)
    assert records == [[{"role": "user", "content": "the quick fox"}]]
    templated = tokenize(tokenizer, records, 64)[0]
    plain = tokenize(tokenizer, ["the quick fox"], 64)[0]
    assert templated != plain and tokenizer.convert_tokens_to_ids("<s>") in templated
