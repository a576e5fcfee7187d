"""The validation engine's shortcuts answer exactly what the plain way answers.

* the split run (a forked child reads the checkpoint too and takes the checks outside ``STAY_HERE``) reports
  what one process reports,
  and a failing child changes nothing but the time;
* module-name regexes, substring searches and regex groups answered once per digit-masked template equal
  a pattern matched against every name;
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hubkit.checkpoint.modules import ModuleTable, is_digit_blind
from hubkit.checkpoint.safetensors_header import TensorInfo
from hubkit.validate import ValidateOptions, engine, split, validate
from hubkit.validate.exclusions import ModuleMatcher
from tests.conftest import read_json, set_exclusions, write_json


def broken(tiny: Path) -> Path:
    """Faults in both halves of a split run: a wrong total size (index family) and a layer quantized
    against the reference's exclusion list (exclusion and tensor families)."""
    index = read_json(tiny / "model.safetensors.index.json")
    index["metadata"]["total_size"] += 1
    write_json(tiny / "model.safetensors.index.json", index)
    patterns = read_json(tiny / "hf_quant_config.json")["quantization"]["exclude_modules"]
    set_exclusions(tiny, [*patterns, "language_model.model.layers.1.mlp.experts*"])
    return tiny


def findings(report: Any) -> list[tuple[str, str, str | None, str | None]]:
    return sorted((f.code, f.message, f.file, f.tensor) for f in report.findings)


def test_split_run_reports_what_one_process_reports(tiny: Path) -> None:
    path = str(broken(tiny))
    together = validate(path, ValidateOptions(split=False))
    split = validate(path, ValidateOptions(split=True))
    assert {f.code[:3] for f in together.findings} >= {"HK3", "HK6"}  # both halves found something
    assert findings(split) == findings(together)
    assert split.checks_run == together.checks_run


def test_a_malformed_byte_range_gives_the_same_findings_split_or_not(tiny: Path) -> None:
    """The main process reads headers without byte ranges; an entry whose range is malformed (which the
    full reading drops) must not make its findings differ from a one-process run."""
    shard = next(tiny.glob("*.safetensors"))
    blob = shard.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = blob[8 : 8 + length].rstrip(b" ")
    at = header.index(b'"data_offsets":[', header.index(b'.mlp.experts.0.down_proj.weight"'))
    broken_header = header[:at] + b'"data_offsets":[-1,' + header[at + len(b'"data_offsets":[') :]
    shard.write_bytes(struct.pack("<Q", len(broken_header)) + broken_header + blob[8 + length :])
    together = validate(str(tiny), ValidateOptions(split=False))
    assert "HK205" in {f.code for f in together.findings}
    assert findings(validate(str(tiny), ValidateOptions(split=True))) == findings(together)


def test_split_run_forks_only_where_it_is_safe(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    forks: list[int] = []
    real_fork = os.fork

    def counting_fork() -> int:
        forks.append(1)
        return real_fork()

    monkeypatch.setattr(os, "fork", counting_fork)
    validate(str(tiny))
    assert forks == [1]
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        report = validate(str(tiny))  # another thread is alive: a fork could catch it holding a lock
    finally:
        stop.set()
        worker.join()
    assert forks == [1] and report.passed


def test_a_failing_child_changes_nothing_but_the_time(tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's checks run again here: a crash in one surfaces exactly as without the split."""
    path = str(broken(tiny))
    expected = findings(validate(path, ValidateOptions(split=False)))
    parent = os.getpid()
    original = engine.REGISTRY["HK305"]

    def crashes_in_the_child(ctx: Any) -> Any:
        if os.getpid() != parent:
            raise RuntimeError("child-only crash")
        return original.run(ctx)

    monkeypatch.setitem(engine.REGISTRY, "HK305", dataclasses.replace(original, run=crashes_in_the_child))
    assert findings(validate(path, ValidateOptions(split=True))) == expected

    def always_crashes(ctx: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setitem(engine.REGISTRY, "HK305", dataclasses.replace(original, run=always_crashes))
    for in_two in (False, True):
        with pytest.raises(RuntimeError, match="a bug"):
            validate(path, ValidateOptions(split=in_two))


def worker_state(pid: int) -> str:
    """R, S, Z ... from /proc, or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


@pytest.mark.skipif(not split.can_fork(), reason="fork-based split not available here")
def test_cancel_stops_a_running_worker() -> None:
    def slow() -> list[Any]:
        time.sleep(60)
        return []

    child = split.start(slow)
    assert worker_state(child.pid) in ("R", "S")
    split.cancel(child)
    deadline = time.monotonic() + 5
    while worker_state(child.pid) not in ("Z", "X", "gone") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert worker_state(child.pid) in ("Z", "X", "gone")


@pytest.mark.skipif(not split.can_fork(), reason="fork-based split not available here")
def test_a_worker_that_dies_yields_no_findings_rather_than_wrong_ones() -> None:
    def dies() -> list[Any]:
        os._exit(9)

    assert split.finish(split.start(dies)) is None
    assert split.finish(split.start(lambda: [])) == []


def test_remote_checkpoints_are_never_split(tiny: Path) -> None:
    """A forked child would share the parent's HTTP connections: remote runs stay in one process."""
    assert split.can_fork(str(tiny)) == (sys.platform == "linux" and len(os.sched_getaffinity(0)) > 1)
    assert not split.can_fork("hf://org/name")
    assert not split.can_fork(str(tiny), "hf://org/base")


# --- templates ---------------------------------------------------------------------------------------

NAME_PARTS = st.sampled_from(["layers", "mlp", "experts", "gate_proj", "up_proj", "w1", "w2", "a#b", "0", "7"])
NAMES = st.lists(
    st.builds(
        lambda parts, numbers: ".".join(
            p if i % 2 else f"{p}.{n}" for i, (p, n) in enumerate(zip(parts, numbers, strict=False))
        ),
        st.lists(NAME_PARTS, min_size=1, max_size=4),
        st.lists(st.integers(0, 120), min_size=4, max_size=4),
    ),
    min_size=1,
    max_size=40,
    unique=True,
)
PATTERNS = [
    r"layers\.\d+\.mlp\.experts\.\d+\.(gate|up)_proj",
    r".*\.w\d",
    r".*\.w1",  # spells a digit: answered name by name
    r"layers\.1\d*\..*",
    r"(?P<moe>.+\.mlp)\.experts\.(?P<expert>\d+)\.(?P<proj>\w+)",
    r"(\w+)\.\1.*",  # compares captured text: name by name
    r".*",
]


def table_of(names: list[str]) -> ModuleTable:
    tensor = TensorInfo("BF16", (2, 2), (0, 8))
    return ModuleTable(sorted(names), {"weight": {name: tensor for name in names}})


def test_digit_blindness_is_decided_conservatively() -> None:
    assert is_digit_blind(re.compile(r"layers\.\d+\.mlp"))
    assert is_digit_blind(re.compile(r"(?P<moe>.+)\.experts\.(?P<e>\d+)"))
    for aware in (r"layers\.0\.mlp", r"w[1-3]", r"x\d{2}", r"(?P<a>\w)(?P=a)", r"\x31"):
        assert not is_digit_blind(re.compile(aware))


@settings(max_examples=150, deadline=None)
@given(names=NAMES, pattern=st.sampled_from(PATTERNS))
def test_template_matching_equals_matching_every_name(names: list[str], pattern: str) -> None:
    table = table_of(names)
    compiled = re.compile(pattern)
    expected = {i for i, name in enumerate(table.names) if compiled.fullmatch(name)}
    assert table.matching(compiled) == expected
    groups = list(compiled.groupindex)
    if groups:
        rows = sorted(table.match_groups(compiled, *groups))
        fulls = ((i, compiled.fullmatch(name)) for i, name in enumerate(table.names))
        assert rows == sorted((i, *found.group(*groups)) for i, found in fulls if found)


@settings(max_examples=150, deadline=None)
@given(names=NAMES, needle=st.sampled_from(["layers.1", "layers.10.mlp", "experts", "a#b", "7.w", "gate_proj"]))
def test_template_substring_search_equals_searching_every_name(names: list[str], needle: str) -> None:
    table = table_of(names)
    found = ModuleMatcher(table).matches(needle)
    assert found == frozenset(i for i, name in enumerate(table.names) if needle in name)


@settings(max_examples=100, deadline=None)
@given(names=NAMES)
def test_parents_by_last_component_equal_splitting_every_name(names: list[str]) -> None:
    table = table_of(names)
    expected: dict[str, dict[str, int]] = {}
    for i, name in enumerate(table.names):
        parent, _, last = name.rpartition(".")
        expected.setdefault(last, {})[parent] = i
    assert table.by_last == expected
