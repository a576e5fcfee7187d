"""Property: whatever config.json, hf_quant_config.json or the weight index hold, ``validate``, ``diff`` and
``card check`` answer with exit 0, 1 or 2: never exit 3, never a traceback.

One JSON file of the real tiny export is replaced per example: a value somewhere in it swapped for random
JSON (wrong types, huge and negative numbers, deep nesting), a key deleted, or the text itself damaged
(invalid UTF-8, NaN and Infinity literals, numbers beyond float range, nesting thousands deep, a cut).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hubkit.cli import main

FILES = ["config.json", "hf_quant_config.json", "model.safetensors.index.json"]

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 10**12, 10**30, 2**63, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
    st.sampled_from(["", "modelopt", "NVFP4", "FP8", "compressed-tensors", "pack-quantized", "*", "language_model*"]),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
#: Text that no JSON decoder should accept, or that hits decoder limits.
RAW_TOKENS = [b"NaN", b"Infinity", b"-Infinity", b"1e400", b'"\xff"', b'"\xed\xa0\x80"', b'"\\ud800"',
              b"[" * 3000 + b"]" * 3000, b'{"a":' * 2000 + b"0" + b"}" * 2000, b"\x00", b"\xef\xbb\xbf"]  # fmt: skip


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into ``value`` (the weight map only by a few of its keys: it has hundreds)."""
    found = [prefix]
    if isinstance(value, dict):
        for key in list(value)[:8]:
            found += _paths(value[key], (*prefix, key))
    elif isinstance(value, list):
        for index in range(min(len(value), 4)):
            found += _paths(value[index], (*prefix, index))
    return found


def _replace(document: Any, path: tuple[Any, ...], new: Any, delete: bool) -> Any:
    if not path:
        return new
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = new
    return document


@st.composite
def edits(draw: st.DrawFn, originals: dict[str, bytes]) -> tuple[str, bytes]:
    """(file name, its new bytes)."""
    name = draw(st.sampled_from(FILES))
    original = originals[name]
    if draw(st.booleans()):  # a structured edit: still JSON, of the wrong shape
        document = json.loads(original)
        paths = _paths(document)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        new = draw(JSON_VALUES)
        document = _replace(document, path, new, delete=draw(st.booleans()))
        return name, json.dumps(document, indent=draw(st.sampled_from([None, 2]))).encode()
    # a damaged text: a token somewhere, or a cut
    at = draw(st.integers(0, len(original)))
    if draw(st.integers(0, 4)) == 0:
        return name, original[:at]
    token = draw(st.sampled_from(RAW_TOKENS))
    return name, original[:at] + token + original[at + draw(st.integers(0, 8)) :]


def run(*args: str) -> tuple[int, str]:
    """``hubkit ARGS`` in-process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()  # pragma: no cover - main always exits


class Originals(dict[str, bytes]):
    """The real files, with a short repr for hypothesis' reports."""

    def __repr__(self) -> str:
        return f"Originals({', '.join(f'{k}: {len(v)} bytes' for k, v in self.items())})"


@pytest.fixture(scope="module")
def originals(tiny_template: Path) -> Originals:
    return Originals({name: (tiny_template / name).read_bytes() for name in FILES})


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
@settings(
    max_examples=int(os.environ.get("HUBKIT_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_no_config_makes_hubkit_crash(tiny_template: Path, originals: dict[str, bytes], data: st.DataObject) -> None:
    name, content = data.draw(edits(originals))
    deep = data.draw(st.booleans())
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(shutil.copytree(tiny_template, Path(tmp) / "tiny", copy_function=os.link))
        (folder / name).unlink()  # never write through the hard link into the template
        (folder / name).write_bytes(content)
        card = Path(tmp) / "README.md"
        shutil.copy(tiny_template / "README.md", card)
        for args in (
            ["validate", str(folder), "--format", "json", *(["--deep"] if deep else [])],
            ["diff", str(tiny_template), str(folder)],
            ["card", "check", str(card), "--checkpoint", str(folder)],
        ):
            code, err = run(*args)
            assert code in (0, 1, 2), f"hubkit {' '.join(args[:1])} exit {code}: {err}"
            assert "Traceback" not in err and "internal error" not in err, err
