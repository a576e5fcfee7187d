"""Property: no manifest and no ``--set`` value makes ``hubkit release --dry-run`` crash.

Manifests are random bytes (invalid UTF-8 included), random text, the example with a line replaced by a
random key and TOML value (wrong types, huge and deep values), or nested thousands deep; ``--set`` values are
random text. Every run must end with exit 0, 1 or 2 — never 3, never a traceback. The release endpoint is
the local one and HF_ENDPOINT points at a closed port, so nothing reaches the network.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.conftest import REPO_ROOT

EXAMPLE = (REPO_ROOT / "examples" / "tiny-release" / "hubkit.toml").read_text()
TABLES = tomllib.loads(EXAMPLE)
KEYS = [f"{table}.{key}" for table, keys in TABLES.items() for key in keys] + ["card.serve.env", "release.nosuch"]

scalars = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.text(max_size=40),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)


def toml_text(value: object) -> str:
    return tomlkit.item(value).as_string()


@st.composite
def mutated_example(draw: st.DrawFn) -> bytes:
    """The example with one line replaced by ``key = value`` (a random key, or one the schema knows)."""
    lines = EXAMPLE.splitlines()
    index = draw(st.integers(0, len(lines) - 1))
    key = draw(st.one_of(st.sampled_from([k.split(".")[-1] for k in KEYS]), st.text(min_size=1, max_size=10)))
    value = draw(st.one_of(values.map(toml_text), st.text(max_size=30)))
    lines[index] = draw(st.sampled_from([f"{key} = {value}", f'"{key}" = {value}', value, f"[{key}]"]))
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.sampled_from([1, 10, 100, 999, 1000, 5000, 20000]))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a = ", "}"), ("[{a = ", "}]")]))
    line = draw(st.sampled_from(["repo = ", "tags = ", "x = "]))
    table = draw(st.sampled_from(["[release]", "[card]", "[quantize]"]))
    return EXAMPLE.replace(table, f"{table}\n{line}{opener * depth}1{closer * depth}", 1).encode()


@st.composite
def retyped_example(draw: st.DrawFn) -> bytes:
    """The example with the value of one of its keys replaced (sometimes by a value of the right type)."""
    table, key = draw(st.sampled_from([k.split(".") for k in KEYS if k.count(".") == 1 and k.split(".")[0] in TABLES]))
    data = tomlkit.parse(EXAMPLE)
    if key in data[table]:
        same_type = {bool: st.booleans(), int: st.integers(-5, 10**6), str: st.text(max_size=20)}
        data[table][key] = draw(st.one_of(same_type.get(type(TABLES[table][key]), values), values))
    return tomlkit.dumps(data).encode()


manifests = st.one_of(
    st.just(EXAMPLE.encode()),
    retyped_example(),
    st.binary(max_size=200),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
    mutated_example(),
    nested(),
    st.just(EXAMPLE.encode().replace(b"hubkit example", b"hubkit \xff\xfe example")),
)
overrides = st.just([]) | st.lists(
    st.builds(
        lambda key, value: f"{key}={value}",
        st.sampled_from(KEYS),
        st.one_of(st.text(max_size=30), values.map(toml_text)),
    ),
    max_size=3,
)


@pytest.fixture
def quiet_hub(monkeypatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("HF_TOKEN", "hf_fuzz")


@pytest.mark.slow  # waits out a timeout by design, or fuzzes for seconds: the full suite runs it
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(manifest=manifests, sets=overrides)
def test_release_dry_run_never_crashes(hubkit, quiet_hub, tmp_path: Path, manifest: bytes, sets: list[str]) -> None:
    path = tmp_path / "hubkit.toml"
    path.write_bytes(manifest)
    args = [arg for override in sets for arg in ("--set", override)]
    result = hubkit("release", path, "--dry-run", *args, "--set", "release.endpoint=local", "--format", "json")
    event(f"exit {result.code}")
    assert result.code in (0, 1, 2), result
    assert "Traceback" not in result.err and "internal error" not in result.err, result.err
    if result.code == 2:
        assert result.err.startswith("hubkit: error: ") or result.err.startswith("Error: "), result.err
