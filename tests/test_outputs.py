"""Outputs other programs read: every ``--format json`` output checked against its JSON Schema in ``schemas/``,
SARIF 2.1.0 for code scanning, and the Markdown report for pull requests and step summaries."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from hubkit.hub.server import HubServer
from tests.conftest import REPO_ROOT, copy_of, example_project, read_json, write_json

SCHEMAS = REPO_ROOT / "schemas"
OUTPUT_SCHEMAS = [
    "validate", "validate-checks", "push", "release", "diff", "card-check", "quantize-plan", "quantize",
]  # fmt: skip


def _registry() -> Registry:
    resources = [(p.name, Resource.from_contents(json.loads(p.read_text()))) for p in SCHEMAS.glob("*.schema.json")]
    return Registry().with_resources(resources)


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(read_json(SCHEMAS / f"{name}.schema.json"), registry=_registry())


def assert_valid(name: str, document: Any) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator(name).iter_errors(document)]
    assert not errors, errors


def broken(tiny: Path) -> Path:
    """The tiny export with findings: a config that does not parse (with its line) and stray files."""
    (tiny / "generation_config.json").write_text('{"max_length": 8,\n "eos_token_id": NaN}\n')
    for i in range(5):
        (tiny / f"stray{i}.tmp").write_text("x")
    return tiny


# -- the schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", OUTPUT_SCHEMAS)
def test_each_schema_is_draft_2020_12_and_lists_its_keys(name: str) -> None:
    schema = read_json(SCHEMAS / f"{name}.schema.json")
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    body = schema["items"] if schema["type"] == "array" else schema
    assert set(body["required"]) == set(body["properties"]) - {"note"}
    assert "additionalProperties" not in body  # keys added later keep old readers valid


def test_the_wheel_ships_the_schemas() -> None:
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert config["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["schemas"] == "hubkit/_data/schemas"


@pytest.mark.slow
def test_the_built_wheel_carries_every_schema(tmp_path: Path) -> None:
    pytest.importorskip("hatchling")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    with zipfile.ZipFile(next(tmp_path.glob("*.whl"))) as wheel:
        names = set(wheel.namelist())
    assert {f"hubkit/_data/schemas/{name}.schema.json" for name in OUTPUT_SCHEMAS} <= names


def test_check_jsonschema_resolves_a_schema_s_references_beside_it(hubkit, tiny: Path, tmp_path: Path) -> None:
    report = hubkit("validate", broken(tiny), "--format", "json").json()
    run = {"schema": 1, "out": str(tiny), "provenance": {}, "validation": report}
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    write_json(good, run)
    del report["findings"][0]["code"]
    write_json(bad, run)
    checker = [sys.executable, "-m", "check_jsonschema", "--schemafile", str(SCHEMAS / "quantize.schema.json")]
    ok = subprocess.run([*checker, str(good)], capture_output=True, text=True, cwd=tmp_path)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    failed = subprocess.run([*checker, str(bad)], capture_output=True, text=True, cwd=tmp_path)
    assert failed.returncode == 1 and "'code' is a required property" in failed.stdout


# -- validate ------------------------------------------------------------------------------------------------


def test_validate_json_passing_and_failing_match_the_schema(hubkit, tiny: Path) -> None:
    passed = hubkit("validate", tiny, "--format", "json")
    assert passed.code == 0, passed.err
    assert_valid("validate", passed.json())
    failed = hubkit("validate", broken(tiny), "--format", "json")
    assert failed.code == 1
    report = failed.json()
    assert_valid("validate", report)
    assert any(f["line"] == 2 for f in report["findings"]) and report["schema"] == 1


def test_a_renamed_key_fails_the_schema_and_an_added_one_does_not(hubkit, tiny: Path) -> None:
    report = hubkit("validate", broken(tiny), "--format", "json").json()
    assert validator("validate").is_valid({**report, "later": {"added": True}})
    renamed = {**report, "summary": {**report["summary"]}}
    renamed["summary"]["error_count"] = renamed["summary"].pop("errors")
    assert not validator("validate").is_valid(renamed)
    finding = dict(report["findings"][0])
    finding["rule"] = finding.pop("code")
    assert not validator("validate").is_valid({**report, "findings": [finding]})


def test_list_checks_json_matches_the_schema(hubkit) -> None:
    listed = hubkit("validate", "--list-checks", "--format", "json")
    assert listed.code == 0
    assert_valid("validate-checks", listed.json())


# -- push and release ------------------------------------------------------------------------------------------


def test_push_json_carries_its_schema_version_failed_and_passed(hubkit, hub: HubServer, tiny: Path) -> None:
    # a file changes after the first commit: the push uploads it as it was, then fails its verification
    hub.faults.after_commit = lambda applied: (tiny / "late.txt").write_text("late\n") if applied == 1 else None
    failed = hubkit("push", tiny, "--repo", "org/outputs", "--batch", "1", "--no-validate", "--format", "json")
    assert failed.code == 1, failed.err
    result = failed.json()
    assert result["schema"] == 1 and result["passed"] is False and result["mismatches"]
    assert_valid("push", result)
    hub.faults.after_commit = None
    planned = hubkit("push", tiny, "--repo", "org/outputs", "--dry-run", "--format", "json")
    assert planned.code == 0, planned.err
    assert_valid("push", planned.json())
    pushed = hubkit("push", tiny, "--repo", "org/outputs", "--format", "json")
    assert pushed.code == 0, pushed.err
    assert pushed.json()["schema"] == 1 and pushed.json()["passed"]
    assert_valid("push", pushed.json())


def test_release_json_of_a_stopped_preflight_matches_the_schema(hubkit, hub: HubServer, tmp_path: Path) -> None:
    project = example_project(tmp_path)  # its base and calibration text are not built: the preflight fails
    stopped = hubkit("release", project / "hubkit.toml", "--dry-run", "--format", "json")
    assert stopped.code == 2
    result = stopped.json()
    assert result["schema"] == 1 and result["passed"] is False
    assert any(check["status"] == "failed" for check in result["preflight"])
    assert_valid("release", result)


@pytest.mark.slow
def test_release_json_of_a_finished_release_matches_the_schema(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)
    rerun = hubkit("release", folder / "hubkit.toml", "--format", "json")
    assert rerun.code == 0, rerun.err
    result = rerun.json()
    assert result["passed"] and {stage["status"] for stage in result["stages"]} <= {"unchanged", "skipped"}
    assert_valid("release", result)


# -- diff, card check, quantize --------------------------------------------------------------------------------


def test_diff_json_identical_and_different_match_the_schema(hubkit, tiny: Path, tmp_path: Path) -> None:
    import shutil

    other = Path(shutil.copytree(tiny, tmp_path / "other"))
    same = hubkit("diff", tiny, other, "--format", "json")
    assert same.code == 0 and same.json()["identical"]
    assert_valid("diff", same.json())
    config = read_json(other / "generation_config.json")
    config["max_length"] = 1
    write_json(other / "generation_config.json", config)
    (other / "tokenizer_config.json").unlink()
    different = hubkit("diff", tiny, other, "--format", "json")
    assert different.code == 1 and different.json()["files"]["changed"]
    assert_valid("diff", different.json())


def test_card_check_json_matches_the_schema(hubkit, tiny: Path, tmp_path: Path) -> None:
    clean = hubkit("card", "check", tiny / "README.md", "--checkpoint", tiny, "--format", "json")
    assert clean.code == 0, clean.out
    assert_valid("card-check", clean.json())
    card = tiny / "README.md"
    card.write_text(card.read_text().replace("license:", "licence:", 1) + "\n## Extra\n")
    problems = hubkit("card", "check", card, "--checkpoint", tiny, "--format", "json")
    assert problems.code == 1 and problems.json()["problems"]
    assert_valid("card-check", problems.json())
    project = example_project(tmp_path)
    note = hubkit("card", "check", "--manifest", project / "hubkit.toml", "--format", "json")
    assert note.code == 0 and "note" in note.json()
    assert_valid("card-check", note.json())


def test_quantize_plan_json_carries_its_schema_version(hubkit, tiny: Path) -> None:
    for target in ("8xB300", "cpu"):
        plan = hubkit("quantize", "--base", tiny, "--plan", "--gpus", target, "--format", "json")
        assert plan.code == 0, plan.err
        assert plan.json()["schema"] == 2
        assert_valid("quantize-plan", plan.json())


@pytest.mark.slow
def test_quantize_json_matches_the_schema(hubkit, tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    base, calib = tiny_base(tmp_path / "base"), calibration_jsonl(tmp_path / "calib.jsonl", samples=8)
    args = ["--calib-size", "8", "--calib-seq", "32", "--batch-size", "4", "--device", "cpu", "--format", "json"]
    run = hubkit("quantize", "--base", base, "--out", tmp_path / "out", "--calib", calib, *args)
    assert run.code in (0, 1), run.err
    assert run.json()["schema"] == 1
    assert_valid("quantize", run.json())


# -- SARIF -----------------------------------------------------------------------------------------------------

_TEXT = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}
_LEVEL = {"enum": ["none", "note", "warning", "error"]}
_ARTIFACT = {
    "type": "object",
    "required": ["uri"],
    "additionalProperties": False,
    "properties": {"uri": {"type": "string", "format": "uri-reference"}, "uriBaseId": {"type": "string"}},
}
#: The part of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json, OASIS) that hubkit's log uses: its required
#: properties, value ranges, and no property the standard does not define.
SARIF_SUBSET = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "runs"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string", "format": "uri"},
        "version": {"const": "2.1.0"},
        "runs": {"type": "array", "minItems": 1, "maxItems": 1, "items": {"$ref": "#/$defs/run"}},
    },
    "$defs": {
        "run": {
            "type": "object",
            "required": ["tool", "results"],
            "additionalProperties": False,
            "properties": {
                "tool": {
                    "type": "object",
                    "required": ["driver"],
                    "additionalProperties": False,
                    "properties": {"driver": {"$ref": "#/$defs/driver"}},
                },
                "results": {"type": "array", "items": {"$ref": "#/$defs/result"}},
                "originalUriBaseIds": {"type": "object", "additionalProperties": _ARTIFACT},
                "properties": {"type": "object"},
            },
        },
        "driver": {
            "type": "object",
            "required": ["name", "version", "rules"],
            "additionalProperties": False,
            "properties": {
                "name": {"const": "hubkit"},
                "version": {"type": "string"},
                "semanticVersion": {"type": "string"},
                "rules": {"type": "array", "items": {"$ref": "#/$defs/rule"}},
            },
        },
        "rule": {
            "type": "object",
            "required": ["id", "name", "shortDescription", "fullDescription", "help"],
            "additionalProperties": False,
            "properties": {
                "id": {"type": "string"},
                "name": {"type": "string"},
                "shortDescription": _TEXT,
                "fullDescription": _TEXT,
                "help": _TEXT,
                "defaultConfiguration": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {"level": _LEVEL},
                },
                "properties": {"type": "object"},
            },
        },
        "result": {
            "type": "object",
            "required": ["ruleId", "level", "message", "locations"],
            "additionalProperties": False,
            "properties": {
                "ruleId": {"type": "string"},
                "ruleIndex": {"type": "integer", "minimum": -1},
                "level": _LEVEL,
                "message": _TEXT,
                "locations": {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/location"}},
                "properties": {"type": "object"},
            },
        },
        "location": {
            "type": "object",
            "required": ["physicalLocation"],
            "additionalProperties": False,
            "properties": {
                "physicalLocation": {
                    "type": "object",
                    "required": ["artifactLocation"],
                    "additionalProperties": False,
                    "properties": {
                        "artifactLocation": _ARTIFACT,
                        "region": {
                            "type": "object",
                            "required": ["startLine"],
                            "additionalProperties": False,
                            "properties": {"startLine": {"type": "integer", "minimum": 1}},
                        },
                    },
                }
            },
        },
    },
}


def sarif(hubkit, path: Path | str) -> dict[str, Any]:
    result = hubkit("validate", path, "--format", "sarif")
    assert result.code in (0, 1), result.err
    log = json.loads(result.out)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(SARIF_SUBSET).iter_errors(log)]
    assert not errors, errors
    return log


def test_sarif_rules_come_from_the_check_registry(hubkit, tiny: Path) -> None:
    from hubkit import __version__
    from hubkit.validate.engine import all_checks

    log = sarif(hubkit, tiny)
    assert log["$schema"].endswith("sarif-schema-2.1.0.json")
    driver = log["runs"][0]["tool"]["driver"]
    assert driver["version"] == __version__ and "informationUri" not in driver
    rules = {rule["id"]: rule for rule in driver["rules"]}
    for check in all_checks():
        rule = rules[check.code]
        assert rule["name"] == check.name and rule["shortDescription"]["text"] == check.what
        assert rule["fullDescription"]["text"] == check.why
    assert log["runs"][0]["results"] == []


def test_sarif_results_name_their_rule_level_file_and_line(
    hubkit, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken(tiny)
    (tiny / "README.md").unlink()  # HK110, a warning
    monkeypatch.chdir(tmp_path)
    log = sarif(hubkit, "tiny")
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    results = run["results"]
    assert {r["ruleId"] for r in results} >= {"HK102", "HK108"}
    for result in results:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
    levels = {r["ruleId"]: r["level"] for r in results}
    assert levels["HK102"] == "error" and "warning" in levels.values()
    parse = next(r for r in results if r["ruleId"] == "HK102")
    where = parse["locations"][0]["physicalLocation"]
    assert where["artifactLocation"] == {"uri": "tiny/generation_config.json", "uriBaseId": "%SRCROOT%"}
    assert where["region"] == {"startLine": 2}
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == tmp_path.resolve().as_uri() + "/"
    stray = [r for r in results if r["ruleId"] == "HK108"]
    assert len(stray) == 5 and all("region" not in r["locations"][0]["physicalLocation"] for r in stray)


def test_sarif_uris_are_encoded_and_absolute_outside_the_working_folder(
    hubkit, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tiny / "a b#1%|.tmp").write_text("x")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    log = sarif(hubkit, tiny)
    artifact = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert artifact == {"uri": (tiny / "a b#1%|.tmp").resolve().as_uri()}
    assert artifact["uri"].endswith("/a%20b%231%25%7C.tmp")


# -- Markdown --------------------------------------------------------------------------------------------------


class _Cells(HTMLParser):
    """The text of each table row's cells, as a Markdown renderer shows them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append("\n")
        else:
            raise AssertionError(f"the report made an HTML element <{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def rendered_rows(markdown: str) -> list[list[str]]:
    """Render as GitHub does (CommonMark with tables); only the table's own elements are expected."""
    markdown_it = pytest.importorskip("markdown_it")
    page = markdown_it.MarkdownIt("commonmark").enable("table").enable("strikethrough").render(markdown)
    table = page[page.index("<table>") : page.index("</table>") + len("</table>")]
    parser = _Cells()
    parser.feed(re.sub(r"</?(table|thead|tbody)>|\s*style=\"[^\"]*\"", "", table))
    return parser.rows


def test_markdown_groups_findings_by_check_with_counts_and_first_examples(hubkit, tiny: Path) -> None:
    report = hubkit("validate", broken(tiny), "--format", "markdown")
    assert report.code == 1
    lines = report.out.splitlines()
    assert lines[0] == "### hubkit validate: ❌ FAILED"
    assert re.search(r"\d+ errors, \d+ warnings, \d+ infos \(\d+ checks\)", lines[2])
    rows = rendered_rows(report.out)
    assert rows[0] == ["code", "check", "severity", "count", "first examples"]
    by_code = {row[0]: row for row in rows[1:]}
    assert by_code["HK102"][1:4] == ["invalid-json", "error", "1"]
    assert by_code["HK102"][4].startswith("generation_config.json:2: ")
    stray = by_code["HK108"]
    assert stray[1:4] == ["stray-file", "error", "5"]
    examples = stray[4].split("\n")
    assert len(examples) == 4 and examples[-1] == "and 2 more"
    assert all(example.startswith("stray") for example in examples[:3])


def test_markdown_shows_hostile_names_as_text(hubkit, tiny: Path) -> None:
    name = "x|<img src=y onerror=z>*b*_c_`d`[e](f)~~g~~@octocat&amp;\\h\ti.tmp"
    (tiny / name).write_text("x")
    report = hubkit("validate", tiny, "--format", "markdown")
    assert report.code == 1
    table = [line for line in report.out.splitlines() if line.startswith("|")]
    assert all(line.count("|") - line.count("\\|") == 6 for line in table)  # no cell broken by a pipe
    assert "<img" not in report.out and "@octocat" not in report.out  # no HTML, no mention
    row = next(row for row in rendered_rows(report.out) if row[0] == "HK108")
    flat = name.replace("\t", " ")
    assert row[4] == f"{flat}: {flat} does not belong in a release; delete it".replace("@", "@\u200b")


def test_github_step_summary_is_the_markdown_report(hubkit, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    broken(tiny)
    assert hubkit("validate", tiny, "--format", "github").code == 1
    monkeypatch.delenv("GITHUB_STEP_SUMMARY")
    assert summary.read_text() == hubkit("validate", tiny, "--format", "markdown").out


def test_markdown_escape_keeps_any_text_on_one_line_of_one_cell() -> None:
    from hubkit.validate.render import markdown_escape

    text = "a\n\n# b\r\n- c | d\n> e <script>x</script> ``` f"
    escaped = markdown_escape(text)
    assert "\n" not in escaped and "\r" not in escaped
    assert rendered_rows(f"| h |\n| --- |\n| {escaped} |")[1] == [" ".join(text.split())]


def test_sarif_of_a_hub_repo_names_its_files_by_address(hubkit, hub: HubServer, tiny: Path) -> None:
    pushed = hubkit("push", broken(tiny), "--repo", "org/remote", "--no-validate")
    assert pushed.code == 0, pushed.err
    log = sarif(hubkit, "hf://org/remote")
    uris = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in log["runs"][0]["results"]}
    assert "hf://org/remote/generation_config.json" in uris and "hf://org/remote/stray0.tmp" in uris
