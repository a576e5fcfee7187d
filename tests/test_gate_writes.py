"""One write path everywhere: planted links, FIFOs and devices are refused (exit 2) and never written through;
tampered records never crash or skip work; a full disk is exit 2 with nothing half-written; a failed ``init``
writes nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubkit.hub.local import CACHE_VERSION
from hubkit.hub.server import HubServer
from tests.conftest import TINY_RELEASE, copy_of

OUT = "Kimi-Tiny-NVFP4"


def one_line(err: str) -> bool:
    return len([line for line in err.splitlines() if line.strip()]) == 1 and "Traceback" not in err


def listing(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def temporaries(folder: Path) -> list[str]:
    return [p for p in listing(folder) if p.endswith(".tmp")]


def commits(hub: HubServer) -> int:
    return sum(1 for method, path in hub.faults.requests if method == "POST" and "/commit/" in path)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs), to be filled by :func:`fill`; skipped where mounting is not allowed."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte."""
    handle = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(handle, b"\0" * size)
    finally:
        os.close(handle)


def card_manifest(tmp_path: Path) -> Path:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text((TINY_RELEASE / "hubkit.toml").read_text())
    return manifest


# ---------------------------------------------------------------------------------- push: records in .hubkit/


def test_push_never_writes_through_a_planted_hash_clock_link(hubkit, hub: HubServer, tiny: Path, tmp_path: Path):
    outside = tmp_path / "precious.txt"
    outside.write_text("precious\n")
    (tiny / ".hubkit").mkdir(exist_ok=True)
    (tiny / ".hubkit" / "hash-clock").symlink_to(outside)
    result = hubkit("push", tiny, "--repo", "org/tiny", "--no-validate")
    assert result.code == 2 and one_line(result.err), result
    assert "hash-clock is a symbolic link" in result.err
    assert outside.read_text() == "precious\n" and commits(hub) == 0


@pytest.mark.parametrize("planted", ["record folder", "hash cache"])
def test_push_refuses_a_linked_record_folder_or_hash_cache(
    hubkit, hub: HubServer, tiny: Path, tmp_path: Path, planted: str
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(tiny / ".hubkit", ignore_errors=True)
    if planted == "record folder":
        (tiny / ".hubkit").symlink_to(elsewhere)
    else:
        (elsewhere / "hashes.json").write_text('{"version": 2, "files": {}}')
        (tiny / ".hubkit").mkdir()
        (tiny / ".hubkit" / "hashes.json").symlink_to(elsewhere / "hashes.json")
    result = hubkit("push", tiny, "--repo", "org/tiny", "--no-validate")
    assert result.code == 2 and one_line(result.err), result
    assert "symbolic link" in result.err and commits(hub) == 0
    expected = [] if planted == "record folder" else ["hashes.json"]
    assert listing(elsewhere) == expected  # nothing written into the folder the link points at
    if expected:
        assert (elsewhere / "hashes.json").read_text() == '{"version": 2, "files": {}}'


def test_a_hash_cache_nested_too_deep_is_ignored_and_every_file_hashed(hubkit, hub: HubServer, tiny: Path):
    (tiny / ".hubkit").mkdir(exist_ok=True)
    (tiny / ".hubkit" / "hashes.json").write_text("[" * 100_000)  # deeper than Python's JSON parser goes
    result = hubkit("push", tiny, "--repo", "org/tiny", "--no-validate", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["verified"] is True
    assert json.loads((tiny / ".hubkit" / "hashes.json").read_text())["version"] == CACHE_VERSION  # written anew


def test_a_cache_entry_with_wrong_types_is_hashed_again(hubkit, hub: HubServer, tiny: Path) -> None:
    from hubkit.hub.local import HashCache, stat_key

    key = stat_key((tiny / "config.json").stat())
    (tiny / ".hubkit").mkdir(exist_ok=True)
    entry = [*key, 12345, ["not", "a", "hash"]]
    (tiny / ".hubkit" / "hashes.json").write_text(json.dumps({"version": 2, "files": {"config.json": entry}}))
    assert HashCache(tiny).get("config.json", key) is None


@pytest.mark.parametrize("refused", [".git/config", ".cache/huggingface/x.lock", "sub/.git/HEAD"])
def test_push_without_validation_refuses_paths_the_hub_refuses(
    hubkit, hub: HubServer, tiny: Path, refused: str
) -> None:
    (tiny / refused).parent.mkdir(parents=True, exist_ok=True)
    (tiny / refused).write_text("[core]\n")
    result = hubkit("push", tiny, "--repo", "org/tiny", "--no-validate")
    assert result.code == 2 and one_line(result.err), result
    assert f"the Hub refuses the path {refused}" in result.err and "--exclude" in result.err
    assert commits(hub) == 0
    excluded = hubkit("push", tiny, "--repo", "org/tiny", "--no-validate", "--exclude", refused)
    assert excluded.code == 0, excluded.err


def test_push_on_a_full_disk_still_publishes_without_its_cache(
    hubkit, hub: HubServer, tiny: Path, small_disk: Path
) -> None:
    folder = Path(shutil.copytree(tiny, small_disk / "tiny"))
    shutil.rmtree(folder / ".hubkit", ignore_errors=True)
    (folder / ".hubkit").mkdir()
    fill(small_disk)
    result = hubkit("push", folder, "--repo", "org/tiny", "--no-validate", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["verified"] is True
    assert "No space left on device" in result.err  # the cache is best effort: said, not fatal
    assert temporaries(folder) == [] and listing(folder / ".hubkit") in ([], ["hash-clock"])


# ---------------------------------------------------------------------------------- card render -o


def _device(path: Path) -> Path:
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # a /dev/null
    return path


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (lambda p: os.mkfifo(p) or p, "a FIFO"),
        (_device, "a device"),
        (lambda p: p.symlink_to(p.parent / "elsewhere.md") or p, "a symbolic link"),
        (lambda p: p.mkdir() or p, "a folder"),
    ],
    ids=["fifo", "device", "symlink", "folder"],
)
def test_card_render_never_replaces_what_is_not_a_regular_file(
    hubkit, tiny: Path, tmp_path: Path, make, kind: str
) -> None:
    (tmp_path / "elsewhere.md").write_text("precious\n")
    target = tmp_path / "out" / "README.md"
    target.parent.mkdir()
    make(target)
    before = os.lstat(target)
    result = hubkit("card", "render", tiny, "--manifest", card_manifest(tmp_path), "-o", target)
    assert result.code == 2 and one_line(result.err), result
    assert f"{target} is {kind}" in result.err
    after = os.lstat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    assert (tmp_path / "elsewhere.md").read_text() == "precious\n"
    assert listing(target.parent) == ["README.md"]  # nothing rendered beside it, no temporary left


# ---------------------------------------------------------------------------------- init: all or nothing


@pytest.mark.parametrize(
    ("plant", "message"),
    [
        (lambda f: (f / ".github").write_text("not a folder\n"), ".github is not a folder"),
        (lambda f: os.mkfifo(f / "hubkit.toml"), "hubkit.toml is a FIFO"),
        (lambda f: _device(f / "hubkit.toml"), "hubkit.toml is a device"),
        (
            lambda f: (f / ".github").mkdir() or (f / ".github" / "workflows").symlink_to(f.parent / "elsewhere"),
            "workflows is a symbolic link",
        ),
        (
            lambda f: (f / ".github").mkdir() or (f / ".github" / "actionlint.yaml").symlink_to(f.parent / "x.yaml"),
            "actionlint.yaml is a symbolic link",
        ),
    ],
    ids=["github-is-a-file", "fifo-manifest", "device-manifest", "linked-workflows", "linked-file"],
)
def test_a_failed_init_writes_nothing(hubkit, tmp_path: Path, plant, message: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (tmp_path / "elsewhere").mkdir()
    plant(folder)
    before = listing(tmp_path)
    result = hubkit("init", folder, "--repo", "org/M-NVFP4", "--base", "org/M", "--force")
    assert result.code == 2 and one_line(result.err), result
    assert message in result.err
    assert listing(tmp_path) == before  # not hubkit.toml, not a workflow, not a folder, not a temporary


def test_init_on_a_full_disk_writes_nothing(hubkit, small_disk: Path) -> None:
    fill(small_disk)
    before = listing(small_disk)
    result = hubkit("init", small_disk / "model", "--repo", "org/M-NVFP4", "--base", "org/M")
    assert result.code == 2 and one_line(result.err), result
    assert "No space left on device" in result.err
    assert listing(small_disk) == before


# ---------------------------------------------------------------------------------- release: lock and records


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_release_refuses_a_lock_that_is_not_a_regular_file(hubkit, tmp_path: Path, kind: str) -> None:
    from hubkit.locks import lock_path

    manifest = card_manifest(tmp_path)
    lock = lock_path(tmp_path / OUT)
    os.mkfifo(lock) if kind == "fifo" else _device(lock)
    result = hubkit("release", manifest)
    assert result.code == 2 and one_line(result.err), result
    assert "is not hubkit's lock file" in result.err
    assert stat.S_ISFIFO(os.lstat(lock).st_mode) if kind == "fifo" else stat.S_ISCHR(os.lstat(lock).st_mode)


def _state(folder: Path) -> Path:
    return folder / OUT / ".hubkit" / "state.json"


@pytest.mark.slow
@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: {**s, "stages": {**s["stages"], "validate": "ran"}},  # a stage given as a string
        lambda s: {**s, "stages": []},
        lambda s: {**s, "stages": "all"},
        lambda s: {**s, "stages": {**s["stages"], "validate": {**s["stages"]["validate"], "outputs": 1}}},
    ],
    ids=["stage-string", "stages-empty-list", "stages-string", "outputs-not-an-object"],
)
def test_a_tampered_state_never_crashes_and_never_skips_a_stage(
    hubkit, released_example: Path, tmp_path: Path, tamper
) -> None:
    folder = copy_of(released_example, tmp_path)
    state = json.loads(_state(folder).read_text())
    _state(folder).write_text(json.dumps(tamper(state)))
    planned = hubkit("release", folder / "hubkit.toml", "--dry-run", "--format", "json")
    assert planned.code in (0, 1) and "internal error" not in planned.err, planned
    result = hubkit("release", folder / "hubkit.toml", "--from", "validate", "--until", "validate", "--format", "json")
    assert result.code == 0, result.err
    validate = next(s for s in result.json()["stages"] if s["name"] == "validate")
    assert validate["status"] == "ran"  # the tampered record never let it count as done
    assert json.loads(_state(folder).read_text())["stages"]["validate"]["outputs"]["passed"] is True


@pytest.mark.slow
def test_a_state_nested_too_deep_is_not_hubkits_record(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)
    text = "[" * 100_000  # deeper than Python's JSON parser goes: not a record hubkit wrote
    _state(folder).write_text(text)
    result = hubkit("release", folder / "hubkit.toml", "--from", "validate", "--until", "validate")
    assert result.code == 2 and one_line(result.err), result
    assert "holds files that hubkit did not make" in result.err and _state(folder).read_text() == text


@pytest.mark.slow
@pytest.mark.parametrize(
    ("planted", "stages"),
    [
        (".hubkit/validation.json", ("validate", "validate")),
        (".hubkit/state.json", ("validate", "validate")),
        (".hubkit", ("validate", "validate")),
        ("README.md", ("card", "card")),
    ],
)
def test_release_never_writes_through_a_planted_link(
    hubkit, released_example: Path, tmp_path: Path, planted: str, stages: tuple[str, str]
) -> None:
    folder = copy_of(released_example, tmp_path)
    export = folder / OUT
    state = json.loads(_state(folder).read_text())
    del state["stages"][stages[0]]  # the stage runs again
    _state(folder).write_text(json.dumps(state))
    outside = tmp_path / "outside"
    shutil.copytree(export / ".hubkit", outside) if planted == ".hubkit" else outside.write_text("precious\n")
    target = export / planted
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.symlink_to(outside)
    before = listing(outside) if outside.is_dir() else outside.read_text()
    result = hubkit("release", folder / "hubkit.toml", "--from", stages[0], "--until", stages[1])
    assert result.code == 2 and one_line(result.err), result
    assert "symbolic link" in result.err
    assert (listing(outside) if outside.is_dir() else outside.read_text()) == before
    assert target.is_symlink()


@pytest.mark.slow
def test_release_on_a_full_disk_is_exit_2_and_leaves_its_records_whole(
    hubkit, released_example: Path, small_disk: Path
) -> None:
    folder = copy_of(released_example, small_disk)
    shutil.rmtree(folder / ".hubkit" / "local-hub")  # the store is not needed to validate; room for the export
    state = _state(folder).read_text()
    (folder / OUT / ".hubkit" / "validation.json").unlink()
    fill(small_disk)
    result = hubkit("release", folder / "hubkit.toml", "--from", "validate", "--until", "validate")
    assert result.code == 2 and one_line(result.err), result
    assert "No space left on device" in result.err
    assert temporaries(folder) == [] and not (folder / OUT / ".hubkit" / "validation.json").exists()
    assert _state(folder).read_text() == state


# ---------------------------------------------------------------------------------- quantize scratch and state


def test_layerwise_state_of_the_wrong_shape_is_started_over(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from hubkit.quantize.layerwise import LayerwiseRun
    from hubkit.records import STATE_FILE as STATE

    run = LayerwiseRun(None, {}, [], tmp_path, tmp_path, "fp", 1, None)  # type: ignore[arg-type]
    good = {
        "fingerprint": "fp", "layers": 3, "next_layer": 1, "layer_parameters": 10, "coverage": {},
        "writer": {"max_bytes": 100, "parts": [{"file": "__part_00000.safetensors", "keys": ["a"]}],
                   "open_keys": ["b"], "open_size": 4, "total_size": 8, "where": {"b": "pending-00000.safetensors"}},
    }  # fmt: skip
    (tmp_path / STATE).write_text(json.dumps(good))
    assert run._load_state(3) == good
    for tampered in (
        {**good, "next_layer": "1"},
        {**good, "next_layer": 9},
        {**good, "writer": []},
        {**good, "writer": {**good["writer"], "parts": [{"file": "../../elsewhere.safetensors", "keys": []}]}},
        {**good, "writer": {**good["writer"], "where": {"b": "../../etc/passwd"}}},
        {**good, "writer": {**good["writer"], "max_bytes": None}},
        {**good, "coverage": {"experts": {"counts": "x", "calls": 1}}},
    ):
        (tmp_path / STATE).write_text(json.dumps(tampered))
        assert run._load_state(3) == {}, tampered
    (tmp_path / STATE).write_text("[" * 100_000)
    assert run._load_state(3) == {}


def test_layerwise_state_and_scratch_links_are_refused(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from hubkit.quantize.layerwise import LayerwiseRun, _save_atomic
    from hubkit.records import STATE_FILE as STATE
    from hubkit.records import WriteRefused

    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    scratch = tmp_path / ".hubkit" / "layerwise"
    scratch.mkdir(parents=True)
    (scratch / STATE).symlink_to(outside)
    run = LayerwiseRun(None, {}, [], tmp_path, scratch, "fp", 1, None)  # type: ignore[arg-type]
    with pytest.raises(WriteRefused):
        run._load_state(3)
    with pytest.raises(WriteRefused):
        run._record({"fingerprint": "fp"})
    (scratch / "output_meta.pt").symlink_to(outside)
    with pytest.raises(WriteRefused):
        _save_atomic([1, 2], scratch / "output_meta.pt")
    assert outside.read_text() == "precious\n" and temporaries(tmp_path) == []


def test_shard_writer_never_writes_through_a_planted_pending_file(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from hubkit.quantize.shards import ShardWriter
    from hubkit.records import WriteRefused

    outside = tmp_path / "outside"
    outside.write_text("precious\n")
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "pending-00000.safetensors").symlink_to(outside)
    writer = ShardWriter(tmp_path, tmp_path / "scratch", 1 << 20)
    writer.add("a", torch.zeros(4))
    with pytest.raises(WriteRefused):
        writer.commit("00000")
    assert outside.read_text() == "precious\n" and temporaries(tmp_path) == []


def test_quantize_made_by_record_linked_is_refused(tmp_path: Path) -> None:
    from hubkit.records import MADE_BY, WriteRefused, made_by_hubkit

    outside = tmp_path / "record.json"
    outside.write_text('{"made_by": "hubkit quantize"}')
    (tmp_path / "staging" / ".hubkit").mkdir(parents=True)
    (tmp_path / "staging" / MADE_BY).symlink_to(outside)
    with pytest.raises(WriteRefused):
        made_by_hubkit(tmp_path / "staging")  # a planted record never makes a folder hubkit's to delete


def test_an_outside_fault_anywhere_is_exit_2(hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk met where hubkit has no write of its own (a library writing) is one line, exit 2."""
    from hubkit.card import render as card_render

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/x")

    monkeypatch.setattr(card_render, "render_card", full)
    result = hubkit("card", "render", tiny, "--manifest", TINY_RELEASE / "hubkit.toml", "-o", tiny / "README.md")
    assert result.code == 2 and one_line(result.err), result
    assert (
        result.err
        == "hubkit: error: /data/x: No space left on device; free space or fix the permissions, then run again\n"
    )


@pytest.mark.slow
def test_quantize_on_a_full_disk_is_exit_2_and_leaves_no_staging(hubkit, tmp_path: Path, small_disk: Path) -> None:
    pytest.importorskip("modelopt")
    from hubkit.quantize.tiny_models import calibration_jsonl, tiny_base

    base = tiny_base(tmp_path / "base", num_hidden_layers=2)
    calib = calibration_jsonl(tmp_path / "calib.jsonl", samples=4)
    fill(small_disk)
    before = listing(small_disk)
    result = hubkit("quantize", "--base", base, "--out", small_disk / "out", "--calib", calib, "--calib-size", "4")
    assert result.code == 2 and one_line(result.err), result
    assert "No space left on device" in result.err
    assert listing(small_disk) == before  # no staging folder, no record, no temporary
