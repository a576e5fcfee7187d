"""Shared machinery, one module each: sizes, GPU discovery, Hub names, dtypes and ownership records.

Each test pins a behaviour that used to differ between the copies: ``--batch 40GiB`` was refused while
``--max-gpu-memory 40GiB`` worked, ``--plan`` found GPUs through torch while the preflight asked ``nvidia-smi``,
and the two ownership formats are both still recognised.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hubkit.errors import HubkitError
from hubkit.hub.server import HubServer
from hubkit.records import MADE_BY, STATE, made_by, made_by_hubkit, read_state, write_state
from hubkit.sizes import GiB, MiB, binary_size, human_size, parse_size
from tests.conftest import fake_gpus

# ------------------------------------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "size"),
    [("40GiB", 40 * GiB), ("40GB", 40 * 1000**3), ("512MiB", 512 * MiB), ("512 mib", 512 * MiB), ("4096", 4096),
     ("1.5GiB", 3 * GiB // 2), ("2TB", 2 * 1000**4), ("64B", 64)],
)  # fmt: skip
def test_one_size_parser(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_a_size_typo_is_one_line() -> None:
    with pytest.raises(HubkitError, match="is not a size; write it like 80GiB"):
        parse_size("40 gigs")


def test_sizes_are_printed_two_ways() -> None:
    assert human_size(340_200_000_000) == "340.2 GB"  # as the Hub shows sizes
    assert binary_size(80 * GiB) == "80.0 GiB" and binary_size(512 * MiB) == "512.0 MiB"  # as memory is planned


@pytest.mark.parametrize(
    ("text", "files", "size"),
    [("8", 8, None), ("40GB", None, 40 * 1000**3), ("40GiB", None, 40 * GiB), ("512 MiB", None, 512 * MiB)],
)
def test_batch_takes_every_size_spelling(text: str, files: int | None, size: int | None) -> None:
    from hubkit.hub.push import BatchLimit

    assert BatchLimit.parse(text) == BatchLimit(files=files, bytes=size)


@pytest.mark.parametrize("text", ["0", "0GiB", "1.5", "forty", "-3"])
def test_batch_refuses_what_is_neither(text: str) -> None:
    from hubkit.hub.push import BatchLimit

    with pytest.raises(HubkitError, match="is not a file count"):
        BatchLimit.parse(text)


def test_push_batch_in_gib(hubkit, hub: HubServer, tiny: Path) -> None:
    """``push --batch 40GiB`` works like ``--max-gpu-memory 40GiB`` (it was refused: GB only)."""
    result = hubkit("push", tiny, "--repo", "org/gib", "--batch", "40GiB", "--no-validate", "--format", "json")
    assert result.code == 0, result.err
    report = result.json()
    assert len(report["commits"]) == 2 and report["commits"][-1]["files"] == ["README.md"]  # all, then the card


# ------------------------------------------------------------------------------------------------ GPU discovery


def test_gpus_are_found_one_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight, the smoke test and ``quantize --plan`` see the same GPUs (``--plan`` asked torch before)."""
    from hubkit import gpus
    from hubkit.quantize.devices import present_gpus
    from hubkit.release import preflight, smoke

    fake_gpus(tmp_path, monkeypatch, "NVIDIA H100 80GB HBM3", "NVIDIA H100 80GB HBM3")
    assert gpus.visible_gpus() == ["NVIDIA H100 80GB HBM3"] * 2
    assert present_gpus() == "2xH100"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert present_gpus() == "1xH100"
    assert preflight.visible_gpus is gpus.visible_gpus and smoke.visible_gpus is gpus.visible_gpus


def test_no_gpu_and_an_unknown_gpu_name_the_way_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.quantize.devices import present_gpus

    fake_gpus(tmp_path, monkeypatch)
    with pytest.raises(HubkitError, match="no GPU is visible here; name the target with --gpus"):
        present_gpus()
    fake_gpus(tmp_path, monkeypatch, "Tesla T4")
    with pytest.raises(HubkitError, match="unknown GPU 'Tesla T4'"):
        present_gpus()


# --------------------------------------------------------------------------------------------------- Hub names


@pytest.mark.parametrize(
    "repo",
    ["org/Kimi-K2.7-NVFP4", "a/b", "org/x_y", "noslash", "a/b/c", "org/-x", "org/x.", "org/a--b", "org/a..b",
     "org/x.git", 'org/x"y', "org/" + "x" * 97, "org/ünï", ""],
)  # fmt: skip
def test_the_repo_id_checks_agree(repo: str) -> None:
    """The manifest, ``hf://`` references, ``hubkit push`` and the local Hub apply one rule (they were four)."""
    from hubkit.checkpoint.hub_source import parse_hub_ref
    from hubkit.hub.push import check_repo_id
    from hubkit.hub.server import HubError
    from hubkit.hub.server import check_repo_id as server_check
    from hubkit.hub_ids import repo_id_problem

    valid = repo_id_problem(repo) is None
    try:
        check_repo_id(repo)
        pushed = True
    except HubkitError:
        pushed = False
    try:
        server_check(repo)
        served = True
    except HubError:
        served = False
    try:
        parse_hub_ref(f"hf://{repo}@main")
        referenced = True
    except HubkitError:
        referenced = False
    assert valid == pushed == served == referenced


def test_revision_names_follow_git() -> None:
    from hubkit.hub_ids import is_revision

    assert all(is_revision(name) for name in ("main", "v1.0", "refs/pr/3", "release/2026-01"))
    assert not any(is_revision(name) for name in ("", "a..b", "-x", "x.lock", "a b", "x/", "@", None))


# ------------------------------------------------------------------------------------------------------ dtypes


def test_one_dtype_map() -> None:
    """quantize's torch dtypes come from the one name map, and agree with the widths the checks use."""
    from hubkit.dtypes import DTYPE_BITS, LIBRARY_NAMES, tensor_bytes
    from hubkit.quantize.shards import DTYPE_NAMES, TORCH_DTYPES, Entry

    assert TORCH_DTYPES.keys() == LIBRARY_NAMES.keys()
    for name, dtype in TORCH_DTYPES.items():
        assert DTYPE_NAMES[dtype] == name and dtype.itemsize * 8 == DTYPE_BITS[name]
        assert Entry("t", name, (3, 5)).nbytes == tensor_bytes(name, 15) == 15 * dtype.itemsize


# ---------------------------------------------------------------------------------------- ownership records


def old_record(folder: Path, name: str, record: dict) -> Path:
    (folder / ".hubkit").mkdir(parents=True)
    (folder / name).write_text(json.dumps(record))
    return folder


@pytest.mark.parametrize(
    ("name", "record"),
    [
        (MADE_BY, {"made_by": "hubkit quantize", "purpose": "staging", "hubkit": "0.1.0"}),  # quantize's mark
        (STATE, {"status": "complete", "errors": 0}),  # quantize's finished export
        (STATE, {"made_by": {"tool": "hubkit", "version": "0.1.0"}, "stages": {}}),  # a release's record
        (STATE, {"stages": {"quantize": {}}}),  # a release's record from before made_by
    ],
)
def test_folders_hubkit_made_in_an_earlier_shape_are_still_hubkits(tmp_path: Path, name: str, record: dict) -> None:
    from hubkit.quantize.folders import remove_owned
    from hubkit.release.workspace import check_replaceable

    folder = old_record(tmp_path / "made", name, record)
    (folder / "model.safetensors").write_bytes(b"x")
    assert made_by_hubkit(folder)
    if name == STATE:
        assert read_state(folder) == record
        check_replaceable(folder, "[quantize] out")  # the release may replace it
    remove_owned(folder, "an earlier run's staging folder")
    assert not folder.exists()


@pytest.mark.parametrize(
    "record", [{"made_by": "someone else"}, {"made_by": {"tool": "other"}}, {"what": "mine"}, ["status"]]
)
def test_a_record_hubkit_did_not_write_is_not_hubkits(tmp_path: Path, record: object) -> None:
    from hubkit.quantize.folders import remove_owned
    from hubkit.release.workspace import check_replaceable

    folder = tmp_path / "theirs"
    (folder / ".hubkit").mkdir(parents=True)
    for name in (MADE_BY, STATE):
        (folder / name).write_text(json.dumps(record))
    assert not made_by_hubkit(folder) and read_state(folder) is None
    with pytest.raises(HubkitError, match="was not made by hubkit"):
        remove_owned(folder, "the staging folder")
    with pytest.raises(HubkitError, match="holds files that hubkit did not make"):
        check_replaceable(folder, "[quantize] out")


def test_every_ownership_record_is_written_in_one_shape(tmp_path: Path) -> None:
    """quantize's mark, quantize's state and a release's state carry the same ``made_by``."""
    from hubkit.quantize.folders import make_owned

    staging = make_owned(tmp_path / "staging", "staging")
    mark = json.loads((staging / MADE_BY).read_text())
    assert mark == {"made_by": made_by(), "purpose": "staging"}
    write_state(staging, {"status": "complete", "errors": 0})
    state = json.loads((staging / STATE).read_text())
    assert state["made_by"] == made_by() == {"tool": "hubkit", "version": state["made_by"]["version"]}
    (staging / MADE_BY).unlink()
    assert made_by_hubkit(staging) and read_state(staging) == state
