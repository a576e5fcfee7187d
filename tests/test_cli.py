"""The command line contract: exit codes, output formats, check listing and selection, start-up cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubkit import __version__
from hubkit.validate.engine import FAMILIES, all_checks
from tests.conftest import read_json, write_json


def test_version_and_help(hubkit) -> None:
    assert hubkit("--version").out.strip() == f"hubkit, version {__version__}"
    result = hubkit("--help")
    assert result.code == 0 and "validate" in result.out


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys\nfrom hubkit.cli import main\n"
        "try:\n    main(['validate', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'modelopt', 'huggingface_hub', 'detect_secrets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out


def test_registry_codes_are_stable_and_documented() -> None:
    checks = all_checks()
    assert len({c.code for c in checks}) == len(checks)
    for check in checks:
        assert check.code[2] in FAMILIES and check.what and check.why and check.name
    assert {c.code[2] for c in checks} >= set("12345678")


def test_list_checks_text_and_json(hubkit) -> None:
    text = hubkit("validate", "--list-checks")
    assert text.code == 0 and "HK501" in text.out and "exclusion-matches-nothing" in text.out
    listed = hubkit("validate", "--list-checks", "--format", "json", "--select", "HK7").json()
    assert [c["code"] for c in listed] == ["HK701", "HK702", "HK703", "HK704", "HK705"]
    assert listed[0]["needs"] == ["deep"] and listed[4]["needs"] == ["base"]


def test_explain(hubkit) -> None:
    result = hubkit("validate", "--explain", "hk203")
    assert result.code == 0
    assert "duplicate-key" in result.out and "Why it matters" in result.out


@pytest.mark.parametrize(
    "args",
    [
        ["validate", "--explain", "HK999"],
        ["validate", "PATH", "--select", "HK99"],
        ["validate", "PATH", "--ignore", "XY1"],
        ["validate", "PATH", "--profile", "no-such-profile"],
        ["validate", "PATH", "--reference", "missing/hf_quant_config.json"],
        ["validate", "PATH", "--reference", "hf://nvidia/Kimi-K2.6-NVFP4"],
        ["validate", "hf://nvidia/Kimi-K2.6-NVFP4"],
        ["validate", "does/not/exist"],
        ["validate", "PATH/config.json"],
        ["validate"],
        ["validate", "PATH", "--format", "yaml"],
        ["no-such-command"],
    ],
)
def test_user_errors_exit_2_with_one_line(hubkit, tiny: Path, args: list[str], monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: an unreachable Hub
    result = hubkit(*[a.replace("PATH", str(tiny)) for a in args])
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert result.out == ""
    assert len([line for line in result.err.splitlines() if line.strip()]) <= 3


def test_broken_file_inside_checkpoint_is_a_finding_not_a_user_error(hubkit, tiny: Path) -> None:
    (tiny / "config.json").write_bytes(b"\xff\xfe garbage")
    shard = next(tiny.glob("*.safetensors"))
    shard.write_bytes(b"\x00" * 3)
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 1
    assert {"HK102", "HK201"} <= {f["code"] for f in result.json()["findings"]}


def test_select_and_ignore(hubkit, tiny: Path) -> None:
    (tiny / "README.md").unlink()
    (tiny / "generation_config.json").unlink()
    selected = hubkit("validate", tiny, "--format", "json", "--select", "HK10", "--ignore", "HK105").json()
    assert {f["code"] for f in selected["findings"]} == {"HK107"}
    assert (
        selected["summary"]["checks"] == len([c for c in all_checks() if c.code.startswith("HK10") and not c.needs]) - 1
    )


def test_json_schema(hubkit, tiny: Path) -> None:
    (tiny / "README.md").unlink()
    report = hubkit("validate", tiny, "--format", "json").json()
    assert report["schema"] == 1
    assert set(report) == {"schema", "path", "profile", "reference", "summary", "findings"}
    assert set(report["summary"]) == {"errors", "warnings", "infos", "checks", "passed"}
    assert report["summary"]["warnings"] == 1 and report["summary"]["passed"] is True
    assert set(report["findings"][0]) == {"code", "severity", "check", "message", "file", "tensor", "line"}


def test_text_output_groups_by_file(hubkit, tiny: Path) -> None:
    quant = read_json(tiny / "hf_quant_config.json")
    quant["quantization"]["exclude_modules"].append("language_model.layers.1.self_attn*")
    write_json(tiny / "hf_quant_config.json", quant)
    result = hubkit("validate", tiny)
    assert result.code == 1
    lines = result.out.splitlines()
    assert lines[-1].startswith("FAILED: ")
    assert "hf_quant_config.json" in lines
    assert any(line.startswith("  HK501 error") for line in lines)


def test_github_format_and_step_summary(hubkit, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    for i in range(14):
        (tiny / f"stray{i}.tmp").write_text("x")
    (tiny / "README.md").unlink()
    result = hubkit("validate", tiny, "--format", "github")
    assert result.code == 1
    errors = [line for line in result.out.splitlines() if line.startswith("::error ")]
    warnings = [line for line in result.out.splitlines() if line.startswith("::warning ")]
    assert len(errors) == 10 and len(warnings) == 1
    assert "title=HK108 stray-file" in errors[0] and f"file={tiny}/stray" in errors[0]
    assert "4 more findings are not annotated" in result.out
    assert "hubkit validate: ❌ FAILED" in summary.read_text()


def test_internal_error_exit_3_without_traceback(hubkit, tiny: Path, monkeypatch) -> None:
    from hubkit.validate.engine import REGISTRY

    def explode(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(
        REGISTRY, "HK101", REGISTRY["HK101"].__class__(**{**REGISTRY["HK101"].__dict__, "run": explode})
    )
    result = hubkit("validate", tiny)
    assert result.code == 3
    assert "internal error: RuntimeError: boom" in result.err and "Traceback" not in result.err
    assert "Traceback" in hubkit("--debug", "validate", tiny).err


def test_generic_profile_for_a_non_kimi_export(hubkit, tiny: Path) -> None:
    config = read_json(tiny / "config.json")
    config["architectures"] = ["DeepseekV3ForCausalLM"]
    write_json(tiny / "config.json", config)
    report = hubkit("validate", tiny, "--format", "json").json()
    assert report["profile"] == "modelopt-nvfp4" and report["summary"]["passed"]


def test_console_script_entry_point(tiny: Path) -> None:
    """``python -m hubkit`` and the installed script end without freeing the checkpoint: output stays whole."""
    (tiny / "README.md").unlink()  # a warning, so the report has a finding to print
    script = Path(sys.executable).parent / "hubkit"
    for command in ([sys.executable, "-m", "hubkit"], [str(script)]):
        result = subprocess.run([*command, "validate", str(tiny), "--format", "json"], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["summary"]["passed"] is True
        assert [f["code"] for f in report["findings"]] == ["HK107"]
