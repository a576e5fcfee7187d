"""Options declared once: the manifest tables, their JSON Schema, the Click options and the release's options all
come from one declaration per group (``hubkit.options``), and the CLI, the manifest and the API check alike."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from tests.conftest import example_project


def line_of(path: Path, text: str) -> int:
    """The number of the manifest line that starts with ``text``."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


# -- strict types -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "wrong", "key"),
    [
        ("calib_size = 32", 'calib_size = "32"', "quantize.calib_size"),
        ("batch_size = 4", "batch_size = 4.0", "quantize.batch_size"),
        ("atomic = true", "atomic = 1", "release.atomic"),
        ("deep = true", 'deep = "yes"', "validate.deep"),
    ],
)
def test_the_manifest_refuses_a_value_of_another_type(hubkit, tmp_path: Path, line: str, wrong: str, key: str) -> None:
    from hubkit.errors import HubkitError
    from hubkit.manifest import load_manifest

    manifest = example_project(tmp_path, lambda text: text.replace(line, wrong)) / "hubkit.toml"
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2
    [problem] = result.err.splitlines()
    assert problem.startswith(f"{manifest}:{line_of(manifest, wrong)}: '{key}': Input should be a valid"), problem
    with pytest.raises(HubkitError, match=re.escape(f"'{key}'")):
        load_manifest(manifest)


def test_a_union_key_of_no_member_type_is_one_problem(hubkit, tmp_path: Path) -> None:
    manifest = example_project(tmp_path, lambda text: text.replace('batch = "8"', "batch = true")) / "hubkit.toml"
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2
    assert result.err.splitlines() == [
        f"{manifest}:{line_of(manifest, 'batch = true')}: 'push.batch': Input should be a valid string or integer"
    ]


# -- check codes: one rule for the CLI, the manifest and the API ---------------------------------------------------


def test_api_release_refuses_a_select_that_names_no_check(tmp_path: Path) -> None:
    from hubkit import api
    from hubkit.errors import HubkitError

    project = example_project(tmp_path, lambda text: text.replace("deep = true", 'deep = true\nselect = ["HK999"]'))
    manifest = project / "hubkit.toml"
    with pytest.raises(
        HubkitError, match=rf":{line_of(manifest, 'select')}: 'validate.select.0': 'HK999' names no check"
    ):
        api.release(manifest)
    assert not (project / "Kimi-Tiny-NVFP4").exists()  # refused before any stage ran


def test_select_is_checked_alike_on_the_command_line_in_the_manifest_and_in_the_api(hubkit, tmp_path: Path) -> None:
    from hubkit.errors import HubkitError
    from hubkit.validate.options import ValidateOptions

    cli = hubkit("validate", tmp_path, "--select", "HK999")
    assert cli.code == 2 and "'HK999' names no check" in cli.err
    manifest = example_project(tmp_path) / "hubkit.toml"
    checked = hubkit("manifest", "check", manifest, "--set", 'validate.ignore=["HK999"]')
    assert checked.code == 2 and "'HK999' names no check" in checked.err
    with pytest.raises(HubkitError, match="'X1' is not a check code or prefix"):
        ValidateOptions(select=("X1",))
    assert ValidateOptions(select=("hk7",)).select == ("HK7",)


def test_bounds_and_checks_hold_for_the_api_as_for_the_command_line(hubkit) -> None:
    from hubkit.errors import HubkitError
    from hubkit.quantize.options import QuantizeOptions

    with pytest.raises(HubkitError, match="--calib-size: 0 is less than the minimum 1"):
        QuantizeOptions(out=Path("out"), base="base", calib_size=0)
    with pytest.raises(HubkitError, match="--calib: 'bad=1' in 'x\\?bad=1' is not config=NAME"):
        QuantizeOptions(out=Path("out"), base="base", calib=("x?bad=1",))
    with pytest.raises(HubkitError, match="--mode: 'fast' is not one of auto, resident, layerwise, cast"):
        QuantizeOptions(out=Path("out"), base="base", mode="fast")
    result = hubkit("quantize", "--base", "base", "--out", "out", "--calib", "x?bad=1")
    assert result.code == 2 and "--calib: 'bad=1' in 'x?bad=1' is not config=NAME" in result.err


# -- lines ---------------------------------------------------------------------------------------------------------


def test_unknown_tables_and_keys_name_their_line(hubkit, tmp_path: Path) -> None:
    def misspell(text: str) -> str:
        return text.replace("[smoke]", "[smoke]\nprompt = 'x'") + "\n[quantise]\nmode = 'layerwise'\n"

    manifest = example_project(tmp_path, misspell) / "hubkit.toml"
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2
    assert sorted(result.err.splitlines()) == sorted([
        f"{manifest}:{line_of(manifest, '[quantise]')}: unknown table '[quantise]'; check the spelling "
        "(see 'hubkit init' for every table)",
        f"{manifest}:{line_of(manifest, 'prompt =')}: unknown key 'smoke.prompt'; check the spelling "
        "(see 'hubkit init' for every key)",
    ])  # fmt: skip


def test_manifest_check_reports_the_placeholders_init_left(hubkit, tmp_path: Path) -> None:
    assert hubkit("init", tmp_path / "new", "--repo", "org/M-NVFP4", "--base", "org/M").code == 0
    manifest = tmp_path / "new" / "hubkit.toml"
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2
    [problem] = result.err.splitlines()
    line = line_of(manifest, 'revision = "CHANGE-ME"')
    assert problem.startswith(f"{manifest}:{line}: 'base.revision': ")
    assert "placeholder" in problem
    filled = hubkit("manifest", "check", manifest, "--set", f"base.revision={'0' * 40}")
    assert filled.code == 0, filled.err

    assert hubkit("init", tmp_path / "blank").code == 0
    blank = hubkit("manifest", "check", tmp_path / "blank" / "hubkit.toml")
    assert blank.code == 2
    assert {"'release.repo'", "'base.repo'", "'base.revision'"} <= set(re.findall(r"'[a-z_.]+'", blank.err))


# -- one declaration -----------------------------------------------------------------------------------------------


GROUPS = [
    ("quantize", "hubkit.quantize.options", "QuantizeOptions", "QuantizeTable"),
    ("validate", "hubkit.validate.options", "ValidateOptions", "ValidateTable"),
    ("push", "hubkit.hub.options", "PushOptions", "PushTable"),
]


@pytest.mark.parametrize(("table", "module", "options", "model"), GROUPS)
def test_the_table_and_its_schema_are_the_declared_fields(table: str, module: str, options: str, model: str) -> None:
    import importlib

    from hubkit.manifest import manifest_json_schema
    from hubkit.options import declared

    cls = getattr(importlib.import_module(module), options)
    fields = {field.name: spec for field, spec in declared(cls) if spec.table == table}
    schema = manifest_json_schema()["$defs"][model]
    assert set(schema["properties"]) == set(fields)
    for name, spec in fields.items():
        assert schema["properties"][name]["description"] == spec.help
        if spec.minimum is not None:
            assert schema["properties"][name]["minimum"] == spec.minimum
        if spec.choices is not None and name != "profile":
            assert schema["properties"][name]["enum"] == list(spec.choices)


def test_the_release_builds_its_options_from_every_key_of_its_tables(tmp_path: Path) -> None:
    from hubkit.hub.options import PushOptions
    from hubkit.manifest import load_manifest
    from hubkit.options import from_manifest
    from hubkit.quantize.options import QuantizeOptions
    from hubkit.validate.options import ValidateOptions

    overrides = [
        "quantize.jobs=7", "quantize.seed=9", "quantize.mode=layerwise", "quantize.max_cpu_memory=2TiB",
        "validate.strict=true", "validate.ignore=['hk702']", "push.batch=3", "push.exclude=['*.bin']",
        "push.delete_extra=true", "release.private=true", "release.revision=next",
    ]  # fmt: skip
    manifest = load_manifest(example_project(tmp_path) / "hubkit.toml", overrides)
    quantize = from_manifest(QuantizeOptions, manifest, base="base", out=tmp_path / "out")
    assert (quantize.jobs, quantize.seed, quantize.mode, quantize.max_cpu_memory) == (7, 9, "layerwise", "2TiB")
    assert quantize.calib == ("calib.jsonl",) and quantize.trust_remote_code is True  # [base] trust_remote_code
    validate = from_manifest(ValidateOptions, manifest)
    assert (validate.strict, validate.ignore, validate.deep) == (True, ("HK702",), True)
    push = from_manifest(PushOptions, manifest, folder=tmp_path)
    assert (push.batch, push.exclude, push.delete_extra) == ("3", ("*.bin",), True)
    assert (push.repo, push.revision, push.private) == ("example-org/Kimi-Tiny-NVFP4", "next", True)
    for options in (quantize, validate, push):  # every key of its table reaches the options: none is dropped
        table = {"QuantizeOptions": manifest.quantize, "ValidateOptions": manifest.validate_}.get(
            type(options).__name__, manifest.push
        )
        names = {field.name for field in dataclasses.fields(options)}  # type: ignore[arg-type]
        assert set(type(table).model_fields) <= names
