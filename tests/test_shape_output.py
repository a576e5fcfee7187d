"""The one output path (``hubkit.output``): every annotation escaped as GitHub's runner reads it back, the step
summary appended once per run, typed manifest problems, repeated findings grouped into one row with a count,
and ``applicable()`` decided once per validation."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import TINY_RELEASE

from hubkit.hub.server import HubServer
from hubkit.output import Output, Problem, annotation, escape_data, escape_property
from hubkit.validate.engine import Finding, Report, Severity

#: A message and a file name holding everything a workflow command must escape.
HOSTILE = "100% sure\r\nthen ::error::forged"
HOSTILE_FILE = "dir,with:colons/a,b:c.txt"
_COMMAND = re.compile(r"^::(?P<name>[a-z]+)(?: (?P<properties>[^:]*))?::(?P<data>.*)$")


def unescape(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%3A", ":").replace("%2C", ",").replace("%25", "%")


def parse(line: str) -> tuple[str, dict[str, str], str]:
    """(command, properties, message) of one workflow command line, read back as the runner reads it."""
    match = _COMMAND.match(line)
    assert match, f"not one workflow command: {line!r}"
    properties = dict(part.split("=", 1) for part in (match["properties"] or "").split(",") if part)
    return match["name"], {key: unescape(value) for key, value in properties.items()}, unescape(match["data"])


def commands(out: str) -> list[tuple[str, dict[str, str], str]]:
    return [parse(line) for line in out.splitlines() if line.startswith("::")]


# ------------------------------------------------------------------------------------------------ the module


def test_an_annotation_escapes_its_message_and_properties_and_reads_back() -> None:
    line = annotation("error", HOSTILE, file=HOSTILE_FILE, line=3, title="HK1 a,b:c")
    assert "\n" not in line and "\r" not in line
    assert line.startswith("::error file=dir%2Cwith%3Acolons/a%2Cb%3Ac.txt,line=3,title=HK1 a%2Cb%3Ac::100%25 sure")
    assert parse(line) == ("error", {"file": HOSTILE_FILE, "line": "3", "title": "HK1 a,b:c"}, HOSTILE)
    assert escape_data("a%b") == "a%25b" and escape_property("a,b:c%") == "a%2Cb%3Ac%25"


def test_a_problem_has_a_text_form_and_an_annotation_on_line_one_when_it_names_none() -> None:
    problem = Problem("'quantize.mode': bad", file="hubkit.toml", line=7, key="quantize.mode")
    assert str(problem) == "hubkit.toml:7: 'quantize.mode': bad"
    assert str(Problem("bad", file="f.toml")) == "f.toml: bad"
    assert str(Problem("bad", file="f.toml", origin="--set a.b=1")) == "--set a.b=1: bad"
    assert str(Problem("missing", file="README.md", line=2, code="sections")) == "README.md:2: sections: missing"
    assert (
        Problem("bad", origin="--set a.b=1").annotation(title="t", file="f.toml")
        == "::error file=f.toml,line=1,title=t::bad"
    )
    assert Problem("note", severity="notice").annotation(title="t") == "::notice title=t::note"


def test_the_step_summary_is_appended_once_per_run_and_only_for_github(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    summary = tmp_path / "summary.md"
    summary.write_text("earlier\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    Output("text", title="t").summary("text run")
    github = Output("github", title="t")
    github.summary("first http://user:secret@host/x")
    github.summary(lambda: "second")
    assert summary.read_text() == "earlier\nfirst http://***@host/x\n"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path))  # a folder: a warning, never the run's outcome
    Output("github", title="hubkit x").summary("third")
    assert capsys.readouterr().out.startswith("::warning title=hubkit x::cannot write the step summary: ")


def test_release_stage_groups_escape_their_name(capsys: pytest.CaptureFixture[str]) -> None:
    from hubkit import progress

    with progress.display(label="release", bars=False, groups=True), progress.stage("a%\nb"):
        pass
    assert capsys.readouterr().err.splitlines() == ["::group::stage a%25%0Ab", "::endgroup::"]


# ------------------------------------------------------------------------------------------------ commands


def test_manifest_check_annotations_are_escaped_and_problems_typed(hubkit, tmp_path: Path, monkeypatch) -> None:
    from hubkit.manifest import manifest_problems

    monkeypatch.chdir(tmp_path)
    manifest = Path("hub,kit:1.toml")
    manifest.write_text('"weird%\\r\\n::key" = 1\n[quantize]\nmode = "nope"\n')
    problems = manifest_problems(manifest)
    assert all(isinstance(problem, Problem) for problem in problems)
    mode = next(problem for problem in problems if problem.key == "quantize.mode")
    assert (mode.file, mode.line) == (str(manifest), 3) and str(mode).startswith(f"{manifest}:3: 'quantize.mode': ")
    result = hubkit("manifest", "check", manifest, "--format", "github")
    assert result.code == 2
    annotations = commands(result.out)
    assert len(annotations) == len(problems) and all(a[1]["file"] == str(manifest) for a in annotations)
    weird = next(a for a in annotations if "unknown key" in a[2])
    assert weird[2].startswith("unknown key 'weird%\r\n::key'") and weird[1]["title"] == "hubkit manifest"
    assert ("error", {"file": str(manifest), "line": "3", "title": "hubkit manifest"}, mode.message) in annotations
    text = hubkit("manifest", "check", manifest)
    assert f"{manifest}:3: 'quantize.mode': " in text.err  # the text form is as it was


def test_card_check_annotations_are_escaped(hubkit, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    checkpoint = Path("ck%\r\n::x")
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text("{")
    readme = Path("READ,ME:1.md")
    readme.write_text("---\nlicense: %x\n---\n# Usage\n")
    result = hubkit("card", "check", readme, "--checkpoint", checkpoint, "--format", "github")
    assert result.code == 1
    annotations = commands(result.out)
    assert annotations and all(props["file"] == str(readme) for _, props, _ in annotations)
    unchecked = next(a for a in annotations if a[1]["title"] == "card checkpoint")
    assert unchecked[2].startswith("numbers not checked: ck%\r\n::x: ")
    assert ("error", {"file": str(readme), "line": "2", "title": "card front-matter"}) == next(
        a[:2] for a in annotations if "YAML" in a[2]
    )
    text = hubkit("card", "check", readme)
    assert f"{readme}:2: front-matter: front matter is not valid YAML" in text.out  # the text form is as it was


def test_card_check_notice_is_escaped(hubkit, tmp_path: Path) -> None:
    folder = tmp_path / "a%b::c"
    folder.mkdir()
    (folder / "hubkit.toml").write_text((TINY_RELEASE / "hubkit.toml").read_text())
    result = hubkit("card", "check", "--manifest", folder / "hubkit.toml", "--format", "github")
    assert result.code == 0, result.err
    [(name, props, message)] = commands(result.out)
    assert (name, props["title"]) == ("notice", "hubkit card check") and str(folder) in message
    assert "a%25b::c" in result.out


def test_push_annotations_are_escaped(hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import HfApi

    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    assert hubkit("push", tiny, "--repo", "org/gh", "--format", "github").code == 0
    odd = "old 100%,x::y.txt"
    HfApi(endpoint=hub.endpoint, token=hub.token).upload_file(
        path_or_fileobj=b"stale\n", path_in_repo=odd, repo_id="org/gh"
    )
    result = hubkit("push", tiny, "--repo", "org/gh", "--no-validate", "--format", "github")
    assert result.code == 0, result.err
    annotations = commands(result.out)
    assert (
        "warning",
        {"title": "hubkit push"},
        f"{odd} exists only on the remote (use --delete-extra to remove it)",
    ) in (annotations)
    assert any(message.startswith("NOT VALIDATED") for _, _, message in annotations)
    assert "old 100%25,x::y.txt" in result.out
    assert summary.read_text().count("### hubkit push") == 2  # one summary per run


def test_validate_annotations_are_escaped(hubkit, tiny: Path) -> None:
    (tiny / "stray 100%,a:b.tmp").write_text("x")
    result = hubkit("validate", tiny, "--format", "github")
    stray = [a for a in commands(result.out) if a[1].get("title") == "HK108 stray-file"]
    assert [props["file"] for _, props, _ in stray] == [f"{tiny}/stray 100%,a:b.tmp"]


# ------------------------------------------------------------------------------------------------ grouping


def _report(count: int) -> Report:
    same = "weight_scale is [8, 2] but weight [8, 16] with group 32 needs [8, 1]"
    shard = "model-0000{}.safetensors".format
    findings = [
        Finding("HK603", Severity.ERROR, "nvfp4-shape", same, shard(i % 2 + 1), f"model.layers.{i}.w")
        for i in range(count)
    ]
    findings.append(Finding("HK108", Severity.WARNING, "stray-file", "a stray file", "x.tmp"))
    findings.sort(key=lambda f: (f.severity.rank, f.file or "", f.code, f.line or 0, f.tensor or ""))
    return Report("/ck", "kimi-k2-nvfp4", None, findings, 2)


def test_repeated_findings_of_one_check_are_one_row_with_a_count() -> None:
    from hubkit.validate.render import render_github, render_json, render_markdown, render_sarif, render_text

    report = _report(48)
    text = render_text(report)
    rows = [line for line in text.splitlines() if line.startswith("  HK603")]
    assert len(rows) == 1, text
    assert rows[0].endswith(
        "(48 tensors in 2 files: model.layers.0.w, model.layers.10.w, model.layers.12.w, … and 45 more)"
    )
    assert "  HK108 warning stray-file: a stray file" in text.splitlines()
    github = [a for a in commands(render_github(report)) if a[0] == "error"]
    assert len(github) == 1 and "(48 tensors in 2 files: " in github[0][2]
    assert "more findings are not annotated" not in render_github(report)
    markdown = render_markdown(report)
    [row] = [line for line in markdown.splitlines() if line.startswith("| HK603")]
    assert "| 48 |" in row and "48 tensors in 2 files" in row and "more" in row
    assert len(json.loads(render_json(report))["findings"]) == 49
    assert len(json.loads(render_sarif(report))["runs"][0]["results"]) == 49


def test_a_single_finding_reads_as_before() -> None:
    from hubkit.validate.render import render_github, render_text

    report = _report(1)
    row = "  HK603 error   nvfp4-shape: weight_scale is [8, 2] but weight [8, 16] with group 32 needs [8, 1] "
    assert row + "[model.layers.0.w]" in render_text(report).splitlines()
    assert render_github(report).splitlines()[0] == (
        "::error file=/ck/model-00001.safetensors,title=HK603 nvfp4-shape::weight_scale is [8, 2] but weight "
        "[8, 16] with group 32 needs [8, 1] [model.layers.0.w]"
    )


# ------------------------------------------------------------------------------------------------ the runner


def test_validation_decides_the_applicable_checks_once(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.validate import engine, runner
    from hubkit.validate.options import ValidateOptions

    calls = []
    real = engine.applicable

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "applicable", counted)
    monkeypatch.setattr(runner, "applicable", counted, raising=False)
    report = runner.validate(str(tiny), ValidateOptions(progress=False))
    assert len(calls) == 1 and report.checks_run > 0
