"""Property: no mutation of a real shard's header makes the header reader or the HK2 checks raise.

The header of one tiny shard is mutated (byte flips, overwrites, cuts, insertions, deletions, JSON
token swaps, random length fields up to 2**64-1, cut or extended data) and written to a fresh folder;
``read_shard_header`` must return a ShardHeader and ``validate`` a Report, whatever the bytes. Two
oracles on top: a fatal header always yields HK201 or HK202, and a file with no HK2 finding opens in
the safetensors library with the same tensor names.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from safetensors import safe_open

from hubkit.checkpoint import LocalSource
from hubkit.checkpoint.safetensors_header import (
    ShardHeader,
    _parse_header_fast,
    _parse_header_json,
    read_shard_header,
)
from hubkit.validate.engine import Report, select_checks
from hubkit.validate.options import ValidateOptions
from hubkit.validate.runner import validate

SHARD = "model-00001-of-00001.safetensors"
HK2 = ValidateOptions(select=("HK2",))
HK2_CHECKS = len(select_checks(["HK2"], []))

#: JSON scalars in the header: numbers, strings (keys, dtypes, metadata), literals.
TOKEN = re.compile(rb'-?\d+|"[^"\\]*"|true|false|null')

#: Replacements for one token that stay ASCII and shallow: every fault a header value can have.
ASCII_TOKENS = [
    b"-1", b"0", b"1", b"1.5", b"1e400", b"-0", b"18446744073709551615", b"18446744073709551616",
    b"99999999999999999999999999", b"true", b"null", b'""', b'"F7"', b'"F4"', b'"BF16"', b'"U8"',
    b"[]", b"{}", b"[0]", b"[0,4,8]", b'{"dtype":"F32"}', b'"__metadata__"', b'"dtype"', b'"shape"',
    b'"data_offsets"', b'"\\u0041"', b'"\\""', b'"a\\/b"',
]  # fmt: skip

#: Replacements that hit the known crashes (non-UTF-8 text, deep nesting).
CRASH_TOKENS = [b'"\xff"', b'"\xc3"', b'"\xed\xa0\x80"', b"[" * 3000 + b"]" * 3000]


class Original:
    """The real header (padding included) and data section of the tiny shard; a short repr for reports."""

    def __init__(self, header: bytes, data: bytes) -> None:
        self.header = header
        self.data = data

    def __repr__(self) -> str:
        return f"Original(<{len(self.header)} header bytes>, <{len(self.data)} data bytes>)"


@pytest.fixture(scope="module")
def original(tiny_template: Path) -> Original:
    blob = (tiny_template / SHARD).read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return Original(blob[8 : 8 + length], blob[8 + length :])


POSITION = st.integers(0, 2**32)


def mutations(byte: st.SearchStrategy[int], tokens: list[bytes]) -> st.SearchStrategy[list[tuple[Any, ...]]]:
    """A few token edits (which mostly keep the JSON valid), then a few raw byte edits (which mostly break it)."""
    raw = st.one_of(
        st.tuples(st.just("xor"), POSITION, byte.map(lambda b: b or 1)),
        st.tuples(st.just("set"), POSITION, byte),
        st.tuples(st.just("insert"), POSITION, st.lists(byte, min_size=1, max_size=16).map(bytes)),
        st.tuples(st.just("delete"), POSITION, st.integers(1, 64)),
        st.tuples(st.just("truncate"), POSITION),
    )
    tokenwise = st.one_of(
        st.tuples(st.just("token"), POSITION, st.sampled_from(tokens)),
        st.tuples(st.just("swap"), POSITION, POSITION),
    )
    return st.tuples(st.lists(tokenwise, max_size=4), st.lists(raw, max_size=3)).map(lambda ops: ops[0] + ops[1])


def mutate(header: bytes, ops: list[tuple[Any, ...]]) -> bytes:
    data = bytearray(header)
    for op, *args in ops:
        at = args[0] % (len(data) + 1)
        if op == "xor" and at < len(data):
            data[at] ^= args[1]
        elif op == "set" and at < len(data):
            data[at] = args[1]
        elif op == "insert":
            data[at:at] = args[1]
        elif op == "delete":
            del data[at : at + args[1]]
        elif op == "truncate":
            del data[at:]
        elif op in ("token", "swap"):
            found = list(TOKEN.finditer(data))
            if not found:
                continue
            first = found[args[0] % len(found)]
            if op == "token":
                data[first.start() : first.end()] = args[1]
            else:  # put the second token's text in place of the first (e.g. a key repeated)
                data[first.start() : first.end()] = found[args[1] % len(found)].group()
    return bytes(data)


#: The length field: half the time the true length, else off by a little or any u64.
LENGTHS = st.one_of(
    st.just(("true",)),
    st.one_of(
        st.tuples(st.just("delta"), st.integers(-64, 64)),
        st.tuples(st.just("value"), st.integers(0, 2**64 - 1)),
        st.tuples(st.just("value"), st.sampled_from([0, 1, 7, 8, 100_000_000, 100_000_001, 10**18, 2**63, 2**64 - 1])),
    ),
)
#: The data section: half the time kept, else cut, extended, or the whole file cut to a few bytes.
DATA = st.one_of(
    st.just(("keep",)),
    st.one_of(
        st.tuples(st.just("cut"), st.integers(0, 2**32)),
        st.tuples(st.just("extend"), st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("file"), st.integers(0, 24)),
    ),
)


def build_file(original: Original, ops: list[tuple[Any, ...]], length: tuple[Any, ...], data: tuple[Any, ...]) -> bytes:
    header = mutate(original.header, ops)
    body = original.data
    length_field = len(header)
    if length[0] == "delta":
        length_field = max(0, min(2**64 - 1, len(header) + length[1]))
    elif length[0] == "value":
        length_field = length[1]
    if data[0] == "cut":
        body = body[: data[1] % (len(body) + 1)]
    elif data[0] == "extend":
        body = body + data[1]
    blob = struct.pack("<Q", length_field) + header + body
    return blob[: data[1]] if data[0] == "file" else blob


def check_never_raises(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / SHARD).write_bytes(blob)
        shard = read_shard_header(LocalSource(folder), SHARD, len(blob))
        assert isinstance(shard, ShardHeader)
        assert shard.fatal is None or shard.fatal_kind in ("length", "json", "io")
        report = validate(str(folder), HK2)
        assert isinstance(report, Report)
        assert report.checks_run == HK2_CHECKS
        found = {f.code for f in report.findings}
        event(f"fatal={shard.fatal_kind}" if shard.fatal else "findings=" + ",".join(sorted(found)))
        if shard.fatal is not None:
            assert found & {"HK201", "HK202"}, shard.fatal
        elif not found:  # hubkit calls the file sound: the safetensors library must agree
            with safe_open(str(folder / SHARD), "np") as handle:
                assert set(handle.keys()) == set(shard.tensors)


FUZZ = settings(
    max_examples=int(os.environ.get("HUBKIT_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
@FUZZ
@given(
    ops=mutations(st.integers(0, 127), ASCII_TOKENS),
    length=LENGTHS,
    data=DATA,
)
def test_ascii_mutations_never_raise(original: Original, ops: list[Any], length: Any, data: Any) -> None:
    """Headers that stay ASCII (valid UTF-8) and shallow: reader and checks always answer."""
    check_never_raises(build_file(original, ops, length, data))


@pytest.mark.slow  # seconds: the full suite runs it, the fast lane keeps its family's quicker tests
@settings(FUZZ, derandomize=True, database=None, report_multiple_bugs=False, phases=[Phase.generate])
@given(
    ops=mutations(st.integers(0, 255), ASCII_TOKENS + CRASH_TOKENS),
    length=LENGTHS,
    data=DATA,
)
def test_any_mutation_never_raises(original: Original, ops: list[Any], length: Any, data: Any) -> None:
    """Arbitrary bytes, any nesting: reader and checks always answer."""
    check_never_raises(build_file(original, ops, length, data))


def careful_reading(header: bytes) -> ShardHeader:
    shard = ShardHeader(file=SHARD, file_size=8 + len(header), header_length=len(header))
    _parse_header_json(shard, header)
    return shard


@FUZZ
@given(ops=mutations(st.integers(0, 127), [*ASCII_TOKENS, b'"dtyp\\u0065"', b'"a:b"', b'{"format":"p},\\"t"}']))
def test_fast_path_agrees_with_the_careful_parser(original: Original, ops: list[Any]) -> None:
    """Whenever the counting fast path accepts a header, the careful parser (which sees every repeat)
    reads the same entries and finds nothing repeated."""
    header = mutate(original.header, ops)
    fast = ShardHeader(file=SHARD, file_size=8 + len(header), header_length=len(header))
    accepted = _parse_header_fast(fast, header)
    event(f"fast path {'accepted' if accepted else 'declined'}")
    if accepted:
        careful = careful_reading(header)
        assert careful.fatal is None
        assert not careful.duplicate_keys and not careful.bad_entries
        assert careful.duplicate_fields == fast.duplicate_fields
        assert careful.tensors == fast.tensors
        assert careful.metadata == fast.metadata


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda h: h.replace(b'"dtype":"', b'"dtyp\\u0065":"F32","dtype":"', 1), id="escaped-repeat"),
        pytest.param(
            lambda h: h.replace(b'{"__metadata__":{"format":"pt"},', b'{"__metadata__":{"format":"p},\\"t"},', 1),
            id="metadata-brace-in-string",
        ),
        pytest.param(lambda h: h.replace(b'"data_offsets"', b'"x":{},"data_offsets"', 1), id="unknown-object-field"),
    ],
)
def test_fast_path_never_hides_a_repeat(original: Original, edit: Any) -> None:
    header = edit(original.header)
    assert header != original.header
    fast = ShardHeader(file=SHARD, file_size=8 + len(header), header_length=len(header))
    if _parse_header_fast(fast, header):
        careful = careful_reading(header)
        assert (careful.tensors, careful.duplicate_fields, careful.metadata) == (
            fast.tensors,
            fast.duplicate_fields,
            fast.metadata,
        )
        assert not careful.duplicate_keys
    else:
        assert careful_reading(header).fatal is None  # still valid JSON: the careful parser reports it
