"""Calibration from any dataset: a source names its config, split and text column
(``SOURCE?config=NAME&split=NAME&column=NAME``, on the command line and in ``[quantize] calib``).

The datasets are real and local: saved with ``datasets.save_to_disk``, parquet and .jsonl files, and a dataset
repository of two configs served by the project's local Hub server to the real ``datasets`` client.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hubkit.errors import HubkitError
from tests.conftest import SUBPROCESS_ENV, example_project

datasets = pytest.importorskip("datasets")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CHAT = [{"role": "user", "content": "the quick fox"}, {"role": "assistant", "content": "jumps"}]


def records(spec: str, limit: int = 10) -> list:
    from hubkit.quantize.calibration import CalibrationSource

    return CalibrationSource.parse(spec).records(limit)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved DatasetDict: splits train and test; a text column, a title, a number and chat messages."""
    folder = tmp_path_factory.mktemp("calib") / "saved"
    splits = {
        split: datasets.Dataset.from_dict(
            {
                "body": [f"{split} body {i}" for i in range(3)],
                "title": [f"{split} title {i}" for i in range(3)],
                "n": [1, 2, 3],
                "chat": [CHAT] * 3,
            }
        )
        for split in ("train", "test")
    }
    datasets.DatasetDict(splits).save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_gives_the_named_split_and_column(saved: Path) -> None:
    from hubkit.quantize.calibration import CalibrationSource

    assert records(f"{saved}?split=test&column=title") == ["test title 0", "test title 1", "test title 2"]
    assert records(f"{saved}?column=body", 2) == ["train body 0", "train body 1"]  # the first split by default
    assert records(f"{saved}?split=test&column=chat", 1) == [CHAT]
    source = CalibrationSource.parse(f"{saved}?split=test&column=chat")
    assert source.provenance() == {"spec": str(saved), "kind": "disk", "split": "test", "column": "chat"}  # provenance


@pytest.mark.parametrize(
    ("qualifiers", "message"),
    [
        ("split=validation&column=body", "the dataset has no split 'validation'; splits: train, test"),
        ("column=text", "no column 'text'; columns: body, title, n, chat"),
        ("column=n", "column 'n' holds int, not text; text columns: body, title, chat"),
        ("config=news", "a saved dataset takes split=, column=; drop config="),
        ("colum=body", "'colum=body' in"),
        ("column=", "'column=' in"),
        ("column=a&column=b", "names column twice"),
    ],
)
def test_bad_names_fail_with_one_line_listing_what_exists(saved: Path, qualifiers: str, message: str) -> None:
    with pytest.raises(HubkitError) as failure:
        records(f"{saved}?{qualifiers}")
    assert message in str(failure.value) and "\n" not in str(failure.value)


def test_an_unnamed_column_is_still_guessed_and_the_error_says_how_to_name_one(saved: Path) -> None:
    with pytest.raises(HubkitError, match=r"no text field .* SOURCE\?column=NAME \(columns: body, title, n, chat\)"):
        records(str(saved))


def test_parquet_and_jsonl_files_take_a_column_only(tmp_path: Path) -> None:
    table = tmp_path / "data.parquet"
    pq.write_table(pa.table({"text": ["not this", "nor this"], "body": ["first", None], "id": [7, 8]}), table)
    assert records(f"{table}?column=body") == ["first"]  # an empty value is skipped, not sent as text
    assert records(str(table)) == ["not this", "nor this"]
    lines = tmp_path / "data.jsonl"
    lines.write_text("\n".join(json.dumps({"text": "no", "turns": CHAT, "id": i}) for i in range(2)) + "\n")
    assert records(f"{lines}?column=turns") == [CHAT, CHAT]
    for spec, message in [
        (f"{lines}?column=id", f"{lines}:1: column 'id' holds int, not text; text columns: text, turns"),
        (f"{lines}?column=body", f"{lines}:1: no column 'body'; columns: text, turns, id"),
        (f"{lines}?split=train", "a .jsonl file takes column=; drop split="),
        (f"{table}?config=x&split=y", "a .parquet file takes column=; drop config=, split="),
        (f"{table}?column=id", "column 'id' holds int, not text; text columns: text, body"),
    ]:
        with pytest.raises(HubkitError) as failure:
            records(spec)
        assert message in str(failure.value), spec
    text = tmp_path / "data.txt"
    text.write_text("a block\n")
    with pytest.raises(HubkitError, match=r"a \.txt file takes no qualifiers; drop column="):
        records(f"{text}?column=body")


def test_the_command_line_refuses_a_malformed_source_before_any_work(hubkit, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = hubkit("quantize", "--base", tmp_path / "no-base", "--out", out, "--calib", "org/data?splt=test")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "'splt=test' in 'org/data?splt=test' is not config=NAME, split=NAME or column=NAME" in result.err
    assert not out.exists()


@pytest.mark.slow
def test_the_command_line_fails_on_a_missing_column_listing_the_columns(hubkit, saved: Path, tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import tiny_base

    base = tiny_base(tmp_path / "base")
    out = tmp_path / "out"
    result = hubkit(
        "quantize", "--base", base, "--out", out, "--calib", f"{saved}?split=test&column=text", "--device", "cpu"
    )
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "no column 'text'; columns: body, title, n, chat" in result.err
    assert not out.exists()


def manifest_with(tmp_path: Path, *calib: str) -> Path:
    """The example's manifest with these calibration sources, for the Hub at HF_ENDPOINT."""
    listed = ", ".join(json.dumps(spec) for spec in calib)

    def edit(text: str) -> str:
        return text.replace('calib = ["calib.jsonl"]', f"calib = [{listed}]").replace('endpoint = "local"', "")

    folder = example_project(tmp_path, edit)
    assert f"calib = [{listed}]" in (folder / "hubkit.toml").read_text()
    return folder


def test_the_manifest_refuses_a_malformed_source_naming_its_line(hubkit, tmp_path: Path) -> None:
    folder = manifest_with(tmp_path, "data.parquet?column=body&colour=red")
    result = hubkit("manifest", "check", folder / "hubkit.toml")
    assert result.code == 2, result.err
    assert "quantize.calib" in result.err and "'colour=red' in 'data.parquet?column=body&colour=red'" in result.err


def test_preflight_reads_a_record_of_each_named_source_relative_to_the_manifest(
    hubkit, saved: Path, tmp_path: Path
) -> None:
    specs = ["saved?split=test&column=body", "saved?column=nope", "saved?split=dev", "calib.jsonl?column=text"]
    folder = manifest_with(tmp_path, *specs)
    (folder / "saved").symlink_to(saved, target_is_directory=True)
    (folder / "calib.jsonl").write_text(json.dumps({"text": "hello", "id": 1}) + "\n")
    result = hubkit("release", folder / "hubkit.toml", "--dry-run", "--until", "quantize", "--format", "json")
    assert result.code == 2, result.err  # no base in this project
    found = {c["name"]: c for c in result.json()["preflight"] if c["name"].startswith("calibration ")}
    assert found[f"calibration {specs[0]}"]["status"] == "ok", found
    assert found[f"calibration {specs[3]}"]["status"] == "ok", found
    assert found[f"calibration {specs[1]}"]["status"] == "failed"
    assert (
        "no column 'nope'; columns: body, title, n, chat; fix [quantize] calib"
        in (found[f"calibration {specs[1]}"]["detail"])
    )
    assert "no split 'dev'; splits: train, test" in found[f"calibration {specs[2]}"]["detail"]


# ------------------------------------------------------------------------------------- a Hub dataset


def dataset_repo(folder: Path) -> Path:
    """A Hub dataset repository of two configs (news: train and test; chat: train), declared in its card."""
    for config in ("news", "chat"):
        (folder / config).mkdir(parents=True)
    pq.write_table(pa.table({"body": ["news train 0", "news train 1"], "n": [1, 2]}), folder / "news/train.parquet")
    pq.write_table(pa.table({"body": ["news test 0"], "n": [3]}), folder / "news/test.parquet")
    pq.write_table(pa.table({"messages": [CHAT]}), folder / "chat/train.parquet")
    (folder / "README.md").write_text(
        "---\nconfigs:\n"
        "- config_name: news\n  data_files:\n  - split: train\n    path: news/train.parquet\n"
        "  - split: test\n    path: news/test.parquet\n"
        "- config_name: chat\n  data_files:\n  - split: train\n    path: chat/train.parquet\n---\n"
    )
    return folder


PROGRAM = """
import json, sys
from hubkit.errors import HubkitError
from hubkit.quantize.calibration import CalibrationSource
for spec in sys.argv[1:]:
    try:
        print(json.dumps(CalibrationSource.parse(spec).records(5)))
    except HubkitError as exc:
        print(json.dumps(str(exc)))
"""


@pytest.mark.slow
def test_a_hub_dataset_gives_the_named_config_split_and_column(tmp_path: Path) -> None:
    from hubkit.hub.server import HubServer

    with HubServer(tmp_path / "hub") as server:
        server.store.import_folder("datasets", "tester/calib", dataset_repo(tmp_path / "repo"))
        env = {**SUBPROCESS_ENV, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf")}
        specs = {
            "tester/calib?config=news&split=test&column=body": ["news test 0"],
            "tester/calib?config=news&column=body": ["news train 0", "news train 1"],  # train by default
            "tester/calib?config=chat": [CHAT],  # the messages field, guessed
            "tester/calib": "the dataset has several configs (news, chat); name one: tester/calib?config=NAME",
            "tester/calib?config=web": "the dataset has no config 'web'; configs: news, chat",
            "tester/calib?config=news&split=dev": "the dataset has no split 'dev'; splits: train, test",
            "tester/calib?config=news&column=text": "no column 'text'; columns: body, n",
            "tester/calib?config=news&column=n": "column 'n' holds int, not text; text columns: body",
        }
        ran = subprocess.run(
            [sys.executable, "-c", PROGRAM, *specs], env=env, capture_output=True, text=True, timeout=300
        )
    assert ran.returncode == 0, ran.stderr
    for (spec, expected), line in zip(specs.items(), ran.stdout.splitlines(), strict=True):
        got = json.loads(line)
        if isinstance(expected, list):
            assert got == expected, spec
        else:
            assert got == f"calibration source {spec}: {expected}", spec


@pytest.mark.slow
def test_preflight_checks_the_names_a_hub_source_gives(tmp_path: Path) -> None:
    """Online, a record is read as quantize reads it (offline, a Hub dataset stays "not checked": see
    test_preflight)."""
    from hubkit.hub.server import HubServer

    specs = ["tester/calib?config=news&split=test&column=body", "tester/calib?config=news&column=title"]
    folder = manifest_with(tmp_path, *specs)
    command = [sys.executable, "-m", "hubkit", "release", str(folder / "hubkit.toml"), "--dry-run", "--until",
               "quantize", "--format", "json"]  # fmt: skip
    with HubServer(tmp_path / "hub") as server:
        server.store.import_folder("datasets", "tester/calib", dataset_repo(tmp_path / "repo"))
        env = {**SUBPROCESS_ENV, "HF_ENDPOINT": server.endpoint, "HF_HOME": str(tmp_path / "hf")}
        ran = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    found = {c["name"]: c for c in json.loads(ran.stdout)["preflight"]}
    assert [found[f"calibration {spec}"]["status"] for spec in specs] == ["ok", "failed"], found
    assert "no column 'title'; columns: body, n; fix [quantize] calib" in found[f"calibration {specs[1]}"]["detail"]


def test_a_release_refuses_an_output_folder_holding_a_named_source(hubkit, tmp_path: Path) -> None:
    folder = manifest_with(tmp_path, "data/calib.jsonl?column=text")
    (folder / "data").mkdir()
    (folder / "data" / "calib.jsonl").write_text('{"text": "x"}\n')
    result = hubkit("release", folder / "hubkit.toml", "--set", "quantize.out=data")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1, result.err
    assert "holds the calibration source" in result.err
    assert (folder / "data" / "calib.jsonl").read_text() == '{"text": "x"}\n'
