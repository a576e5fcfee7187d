"""HK2xx and HK3xx end to end: break a real tiny checkpoint one way at a time, expect the one right finding.

Every test edits the bytes the fixture writer produced (header rewritten, file cut or extended, index
edited) and runs ``hubkit validate --format json`` in-process.
"""

from __future__ import annotations

import json
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from hubkit.checkpoint import LocalSource, load_checkpoint
from hubkit.checkpoint import safetensors_header as sh
from tests.conftest import CliResult, codes, read_json, write_json

SHARD = "model-00001-of-00001.safetensors"
INDEX = "model.safetensors.index.json"
Hubkit = Callable[..., CliResult]

# ------------------------------------------------------------------------------------------- helpers


def split_shard(path: Path) -> tuple[bytes, bytes]:
    """The raw header bytes (with any padding) and the data section of a safetensors file."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return blob[8 : 8 + length], blob[8 + length :]


def load_header(path: Path) -> dict[str, Any]:
    return json.loads(split_shard(path)[0])


def compact(header: dict[str, Any]) -> bytes:
    return json.dumps(header, separators=(",", ":")).encode()


def write_shard(path: Path, header: bytes | dict[str, Any], data: bytes, *, length: int | None = None) -> None:
    """Write a safetensors file: length field (the true one unless given), header padded to 8, data."""
    raw = header if isinstance(header, bytes) else compact(header)
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw) if length is None else length) + raw + data)


def entries_by_offset(header: dict[str, Any]) -> list[str]:
    """Tensor names in data order."""
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"])


def validate_json(hubkit: Hubkit, folder: Path) -> CliResult:
    result = hubkit("validate", folder, "--format", "json")
    assert result.code == 1, f"exit {result.code}, stderr: {result.err}"
    return result


def findings_of(result: CliResult, code: str) -> list[dict[str, Any]]:
    found = [f for f in result.json()["findings"] if f["code"] == code]
    assert found, f"{code} not among {sorted(codes(result))}"
    return found


def edit_header(tiny: Path, change: Callable[[dict[str, Any]], None], data_change: Callable[[bytes], bytes] = bytes):
    """Rewrite the shard's header (compact, padded) after ``change``; ``data_change`` edits the data."""
    path = tiny / SHARD
    header = load_header(path)
    data = split_shard(path)[1]
    change(header)
    write_shard(path, header, data_change(data))
    return header


def edit_raw(tiny: Path, change: Callable[[bytes], bytes]) -> None:
    """Rewrite the shard's raw header bytes (padding removed first), fixing up the length field."""
    path = tiny / SHARD
    raw, data = split_shard(path)
    write_shard(path, change(raw.rstrip(b" ")), data)


def tensor_table(folder: Path) -> dict[str, tuple[str, tuple[int, ...], tuple[int, int], str]]:
    checkpoint = load_checkpoint(str(folder))
    return {n: (t.dtype, t.dims, t.data_offsets, checkpoint.shard_of[n]) for n, t in checkpoint.tensors.items()}


# ------------------------------------------------------------------------------------------- baseline


def test_valid_tiny_passes(hubkit: Hubkit, tiny: Path) -> None:
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 0, result.out + result.err
    report = result.json()
    assert report["summary"]["passed"] is True
    assert report["summary"]["errors"] == 0
    assert not {c for c in codes(result) if c.startswith(("HK2", "HK3"))}


def test_spaced_header_takes_careful_path_with_identical_table(
    hubkit: Hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compact_table = tensor_table(tiny)
    path = tiny / SHARD
    header = load_header(path)
    metadata = header["__metadata__"]
    write_shard(path, json.dumps(header).encode(), split_shard(path)[1])  # ", " and ": " separators
    assert b'", "' in split_shard(path)[0]

    careful = sh._parse_header_json
    calls: list[str] = []

    def spy(shard: sh.ShardHeader, raw: bytes) -> None:
        calls.append(shard.file)
        careful(shard, raw)

    monkeypatch.setattr(sh, "_parse_header_json", spy)
    spaced = load_checkpoint(str(tiny))
    assert calls == [SHARD], "a header with whitespace must go to the careful parser"
    assert spaced.shards[SHARD].fatal is None
    assert spaced.shards[SHARD].duplicate_keys == []
    assert spaced.shards[SHARD].metadata == metadata
    assert tensor_table(tiny) == compact_table

    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 0, result.out + result.err
    assert result.json()["summary"]["passed"] is True


# ------------------------------------------------------------------------------------------- HK201


@pytest.mark.parametrize(
    "length",
    [
        pytest.param(lambda size: size - 8 + 1, id="one-past-end"),
        pytest.param(lambda size: size, id="file-size"),
        pytest.param(lambda size: 10**18, id="1e18"),
        pytest.param(lambda size: 2**64 - 1, id="u64-max"),
        pytest.param(lambda size: 0, id="zero"),
    ],
)
def test_hk201_header_length_out_of_range(hubkit: Hubkit, tiny: Path, length: Callable[[int], int]) -> None:
    path = tiny / SHARD
    blob = path.read_bytes()
    path.write_bytes(struct.pack("<Q", length(len(blob))) + blob[8:])
    found = findings_of(validate_json(hubkit, tiny), "HK201")
    assert [f["file"] for f in found] == [SHARD]


def test_hk201_file_shorter_than_length_field(hubkit: Hubkit, tiny: Path) -> None:
    (tiny / SHARD).write_bytes(b"\x10\x00\x00")
    found = findings_of(validate_json(hubkit, tiny), "HK201")
    assert [f["file"] for f in found] == [SHARD]


def test_hk201_huge_length_reads_nothing(hubkit: Hubkit, tiny: Path) -> None:
    """A length of 10**18 must be refused before any read: no allocation, no crash."""
    path = tiny / SHARD
    blob = path.read_bytes()
    path.write_bytes(struct.pack("<Q", 10**18) + blob[8:])
    tracemalloc.start()
    try:
        shard = sh.read_shard_header(LocalSource(tiny), SHARD, len(blob))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shard.fatal_kind == "length"
    assert shard.tensors == {}
    assert peak < 64 * 1024, f"reading a refused header allocated {peak:,} bytes"
    findings_of(validate_json(hubkit, tiny), "HK201")


# ------------------------------------------------------------------------------------------- HK202

NAME = b'"language_model.model.layers.1.mlp.experts.0.down_proj.input_scale"'


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: raw[:1] + b"\xff" + raw[1:], id="between-tokens"),
        pytest.param(
            lambda raw: raw.replace(NAME, NAME[:1] + b"\xff" + NAME[1:]),
            id="in-tensor-name",
        ),
        pytest.param(
            lambda raw: raw.replace(b'"format":"pt"', b'"format":"p\xc3"'),
            id="in-metadata-value",
        ),
    ],
)
def test_hk202_header_not_utf8(hubkit: Hubkit, tiny: Path, change: Callable[[bytes], bytes]) -> None:
    edit_raw(tiny, change)
    found = findings_of(validate_json(hubkit, tiny), "HK202")
    assert [f["file"] for f in found] == [SHARD]
    assert "UTF-8" in found[0]["message"]


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda raw: b" " + raw, id="leading-space"),
        pytest.param(lambda raw: b"\n" + raw, id="leading-newline"),
        pytest.param(lambda raw: b"\xef\xbb\xbf" + raw, id="utf8-bom"),
        pytest.param(lambda raw: b"[" + raw + b"]", id="array"),
        pytest.param(lambda raw: b'"' + raw.replace(b'"', b"'") + b'"', id="string"),
    ],
)
def test_hk202_header_not_starting_with_brace(hubkit: Hubkit, tiny: Path, change: Callable[[bytes], bytes]) -> None:
    edit_raw(tiny, change)
    found = findings_of(validate_json(hubkit, tiny), "HK202")
    assert [f["file"] for f in found] == [SHARD]
    assert "'{'" in found[0]["message"]


def test_hk202_truncated_json(hubkit: Hubkit, tiny: Path) -> None:
    edit_raw(tiny, lambda raw: raw[: len(raw) // 2])
    found = findings_of(validate_json(hubkit, tiny), "HK202")
    assert [f["file"] for f in found] == [SHARD]


def test_hk202_deeply_nested_header(hubkit: Hubkit, tiny: Path) -> None:
    """serde_json (the Rust loader) stops at depth 128; hubkit must report, not crash."""
    deep = b"[" * 5000 + b"]" * 5000
    edit_raw(tiny, lambda raw: raw.replace(b'"dtype":"F32"', b'"note":' + deep + b',"dtype":"F32"', 1))
    found = findings_of(validate_json(hubkit, tiny), "HK202")
    assert [f["file"] for f in found] == [SHARD]


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(b"NaN", id="nan"),
        pytest.param(b"Infinity", id="infinity"),
        pytest.param(b'"\\ud800"', id="lone-surrogate"),
    ],
)
def test_hk202_non_standard_json(hubkit: Hubkit, tiny: Path, token: bytes) -> None:
    edit_raw(tiny, lambda raw: raw.replace(b'"dtype":"F32"', b'"note":' + token + b',"dtype":"F32"', 1))
    found = findings_of(validate_json(hubkit, tiny), "HK202")
    assert [f["file"] for f in found] == [SHARD]


# ------------------------------------------------------------------------------------------- HK203


def test_hk203_duplicate_tensor_key_in_compact_header(hubkit: Hubkit, tiny: Path) -> None:
    """The same tensor twice in one compact header: the fast path must send it to the careful one."""
    header = load_header(tiny / SHARD)
    name = entries_by_offset(header)[0]
    entry = compact({name: header[name]})[1:-1]  # '"name":{...}'
    edit_raw(tiny, lambda raw: raw[:-1] + b"," + entry + b"}")

    shard = sh.read_shard_header(LocalSource(tiny), SHARD, (tiny / SHARD).stat().st_size)
    assert shard.duplicate_keys == [name]

    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK203")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert not {"HK206", "HK207", "HK208"} & codes(result)  # same offsets: nothing else is wrong


def test_hk203_duplicate_tensor_key_with_other_offsets(hubkit: Hubkit, tiny: Path) -> None:
    """A duplicate whose last copy wins would make the first tensor's bytes vanish without a word."""
    header = load_header(tiny / SHARD)
    first, last = entries_by_offset(header)[0], entries_by_offset(header)[-1]
    impostor = compact({first: header[last]})[1:-1]
    edit_raw(tiny, lambda raw: raw[:-1] + b"," + impostor + b"}")
    found = findings_of(validate_json(hubkit, tiny), "HK203")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, first)]


DUP_FIELD = b'"dtype":"F32","dtype":"F32"'


def test_hk203_duplicate_field_in_compact_header(hubkit: Hubkit, tiny: Path) -> None:
    edit_raw(tiny, lambda raw: raw.replace(b'"dtype":"F32"', DUP_FIELD, 1))
    found = findings_of(validate_json(hubkit, tiny), "HK203")
    assert [f["file"] for f in found] == [SHARD]


def test_hk203_duplicate_field_in_spaced_header(hubkit: Hubkit, tiny: Path) -> None:
    """With whitespace the careful parser runs and does see the repeated field."""
    edit_raw(tiny, lambda raw: raw.replace(b'"dtype":"F32"', DUP_FIELD, 1).replace(b"},", b"}, "))
    found = findings_of(validate_json(hubkit, tiny), "HK203")
    assert [f["file"] for f in found] == [SHARD]
    assert "'dtype'" in found[0]["message"]


def test_hk203_duplicate_field_names_the_tensor(hubkit: Hubkit, tiny: Path) -> None:
    name = NAME.strip(b'"').decode()
    edit_raw(
        tiny, lambda raw: raw.replace(NAME + b':{"dtype":"F32"', NAME + b":{" + DUP_FIELD, 1).replace(b"},", b"}, ")
    )
    found = findings_of(validate_json(hubkit, tiny), "HK203")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]


def test_hk203_duplicate_metadata_key_in_compact_header(hubkit: Hubkit, tiny: Path) -> None:
    edit_raw(tiny, lambda raw: raw.replace(b'"format":"pt"', b'"format":"tf","format":"pt"', 1))
    findings_of(validate_json(hubkit, tiny), "HK203")


# ------------------------------------------------------------------------------------------- HK204-HK206


def test_hk204_unknown_dtype(hubkit: Hubkit, tiny: Path) -> None:
    name = ""

    def change(header: dict[str, Any]) -> None:
        nonlocal name
        name = entries_by_offset(header)[-1]
        header[name]["dtype"] = "F7"

    edit_header(tiny, change)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK204")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert "'F7'" in found[0]["message"]
    assert "HK206" not in codes(result)  # no byte size for an unknown dtype


@pytest.mark.parametrize("field", ["data_offsets", "dtype", "shape"])
def test_hk205_missing_field(hubkit: Hubkit, tiny: Path, field: str) -> None:
    name = ""

    def change(header: dict[str, Any]) -> None:
        nonlocal name
        name = entries_by_offset(header)[1]
        del header[name][field]

    edit_header(tiny, change)
    found = findings_of(validate_json(hubkit, tiny), "HK205")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert field in found[0]["message"]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([0], id="one-offset"),
        pytest.param([0, 4, 8], id="three-offsets"),
        pytest.param([-4, 0], id="negative"),
        pytest.param([0, 4.0], id="float"),
        pytest.param("0,4", id="string"),
    ],
)
def test_hk205_malformed_data_offsets(hubkit: Hubkit, tiny: Path, value: Any) -> None:
    name = ""

    def change(header: dict[str, Any]) -> None:
        nonlocal name
        name = entries_by_offset(header)[0]
        header[name]["data_offsets"] = value

    edit_header(tiny, change)
    found = findings_of(validate_json(hubkit, tiny), "HK205")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]


def test_hk206_byte_length_mismatch(hubkit: Hubkit, tiny: Path) -> None:
    name = ""

    def change(header: dict[str, Any]) -> None:
        nonlocal name
        name = entries_by_offset(header)[-1]
        rows, cols = header[name]["shape"]
        header[name]["shape"] = [rows, cols // 2]

    edit_header(tiny, change)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK206")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert not {"HK207", "HK208"} & codes(result)


# ------------------------------------------------------------------------------------------- HK207, HK208


def _shift_last(header: dict[str, Any], delta: int) -> str:
    name = entries_by_offset(header)[-1]
    begin, end = header[name]["data_offsets"]
    header[name]["data_offsets"] = [begin + delta, end + delta]
    return name


def test_hk207_gap_between_tensors(hubkit: Hubkit, tiny: Path) -> None:
    header = edit_header(tiny, lambda h: _shift_last(h, 16), lambda data: data + bytes(16))
    last = entries_by_offset(header)[-1]
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK207")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, last)]
    assert "gap of 16 bytes" in found[0]["message"]
    assert not {"HK206", "HK208"} & codes(result)


def test_hk207_overlapping_ranges(hubkit: Hubkit, tiny: Path) -> None:
    header = edit_header(tiny, lambda h: _shift_last(h, -4), lambda data: data[:-4])
    names = entries_by_offset(header)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK207")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, names[-1])]
    assert names[-2] in found[0]["message"]
    assert not {"HK206", "HK208"} & codes(result)


def test_hk207_data_not_starting_at_zero(hubkit: Hubkit, tiny: Path) -> None:
    def shift_all(header: dict[str, Any]) -> None:
        for name in entries_by_offset(header):
            begin, end = header[name]["data_offsets"]
            header[name]["data_offsets"] = [begin + 8, end + 8]

    header = edit_header(tiny, shift_all, lambda data: bytes(8) + data)
    found = findings_of(validate_json(hubkit, tiny), "HK207")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, entries_by_offset(header)[0])]


def test_hk208_truncated_file(hubkit: Hubkit, tiny: Path) -> None:
    path = tiny / SHARD
    path.write_bytes(path.read_bytes()[:-100])
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK208")
    assert [f["file"] for f in found] == [SHARD]
    assert "truncated" in found[0]["message"]
    assert "HK201" not in codes(result)


def test_hk208_extra_trailing_bytes(hubkit: Hubkit, tiny: Path) -> None:
    path = tiny / SHARD
    path.write_bytes(path.read_bytes() + b"\x00" * 24)
    found = findings_of(validate_json(hubkit, tiny), "HK208")
    assert [f["file"] for f in found] == [SHARD]
    assert "longer than its tensors" in found[0]["message"]


# ------------------------------------------------------------------------------------------- HK209


@pytest.mark.parametrize(
    "metadata",
    [
        pytest.param({"format": "pt", "step": 1}, id="int-value"),
        pytest.param({"format": "pt", "extra": {"a": "b"}}, id="object-value"),
        pytest.param({"format": None}, id="null-value"),
        pytest.param(["pt"], id="list"),
    ],
)
def test_hk209_metadata_not_strings(hubkit: Hubkit, tiny: Path, metadata: Any) -> None:
    edit_header(tiny, lambda header: header.__setitem__("__metadata__", metadata))
    found = findings_of(validate_json(hubkit, tiny), "HK209")
    assert [f["file"] for f in found] == [SHARD]


# ------------------------------------------------------------------------------------------- HK3xx


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda index: index.pop("metadata"), id="no-metadata"),
        pytest.param(lambda index: index.pop("weight_map"), id="no-weight-map"),
        pytest.param(lambda index: index["metadata"].__setitem__("total_size", "697376"), id="total-size-string"),
        pytest.param(lambda index: index.__setitem__("weight_map", []), id="weight-map-list"),
    ],
)
def test_hk301_index_malformed(hubkit: Hubkit, tiny: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    index = read_json(tiny / INDEX)
    change(index)
    write_json(tiny / INDEX, index)
    found = findings_of(validate_json(hubkit, tiny), "HK301")
    assert {f["file"] for f in found} == {INDEX}


def test_hk302_indexed_tensor_in_no_shard(hubkit: Hubkit, tiny: Path) -> None:
    ghost = "language_model.model.layers.1.mlp.experts.0.ghost_proj.weight"
    index = read_json(tiny / INDEX)
    index["weight_map"][ghost] = SHARD
    write_json(tiny / INDEX, index)
    found = findings_of(validate_json(hubkit, tiny), "HK302")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, ghost)]


def test_hk303_tensor_not_in_index(hubkit: Hubkit, tiny: Path) -> None:
    index = read_json(tiny / INDEX)
    name = sorted(index["weight_map"])[5]
    del index["weight_map"][name]
    write_json(tiny / INDEX, index)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK303")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert "HK305" not in codes(result)  # the tensor still exists: the total is unchanged


def _extra_shard(tiny: Path, file: str, name: str, source: str | None = None) -> None:
    """Write ``file`` holding one tensor ``name``, with the entry and bytes of ``source`` (default: name)."""
    path = tiny / SHARD
    header = load_header(path)
    data = split_shard(path)[1]
    entry = dict(header[source or name])
    begin, end = entry["data_offsets"]
    entry["data_offsets"] = [0, end - begin]
    write_shard(tiny / file, {"__metadata__": {"format": "pt"}, name: entry}, data[begin:end])


def test_hk304_tensor_in_two_shards(hubkit: Hubkit, tiny: Path) -> None:
    other = "model-00002-of-00002.safetensors"
    name = entries_by_offset(load_header(tiny / SHARD))[-1]
    _extra_shard(tiny, other, name)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK304")
    assert [(f["file"], f["tensor"]) for f in found] == [(SHARD, name)]
    assert SHARD in found[0]["message"] and other in found[0]["message"]
    assert "HK302" not in codes(result)


def test_hk305_wrong_total_size(hubkit: Hubkit, tiny: Path) -> None:
    index = read_json(tiny / INDEX)
    index["metadata"]["total_size"] += 1
    write_json(tiny / INDEX, index)
    found = findings_of(validate_json(hubkit, tiny), "HK305")
    assert [f["file"] for f in found] == [INDEX]


def test_hk306_indexed_shard_missing(hubkit: Hubkit, tiny: Path) -> None:
    missing = "model-00002-of-00002.safetensors"
    index = read_json(tiny / INDEX)
    index["weight_map"][sorted(index["weight_map"])[0]] = missing
    write_json(tiny / INDEX, index)
    found = findings_of(validate_json(hubkit, tiny), "HK306")
    assert [f["file"] for f in found] == [missing]


def test_hk307_shard_not_indexed(hubkit: Hubkit, tiny: Path) -> None:
    extra = "extra.safetensors"
    source = entries_by_offset(load_header(tiny / SHARD))[0]
    _extra_shard(tiny, extra, "extra.scale", source)
    result = validate_json(hubkit, tiny)
    found = findings_of(result, "HK307")
    assert [f["file"] for f in found] == [extra]
    assert [(f["file"], f["tensor"]) for f in findings_of(result, "HK303")] == [(extra, "extra.scale")]
    assert not {c for c in codes(result) if c.startswith("HK2")}  # the extra file itself is well formed


def test_a_sub_byte_tensor_that_ends_mid_byte_is_a_finding(tmp_path: Path) -> None:
    """An F4 tensor of 3 elements is 12 bits: the safetensors library refuses the file ("slice does not end up
    at a byte boundary"), so hubkit must not call it sound (found by the header fuzzer)."""
    from safetensors import safe_open

    from hubkit.api import ValidateOptions, validate

    shard = tmp_path / "model.safetensors"
    write_shard(shard, {"w": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}, b"\x00\x00")
    with pytest.raises(Exception, match="byte boundary"), safe_open(str(shard), "np") as handle:
        handle.get_tensor("w")
    report = validate(str(tmp_path), ValidateOptions(select=("HK2",)))
    found = [f for f in report.findings if f.code == "HK206"]
    assert found and "12 bits, not a whole number of bytes" in found[0].message, report.findings
