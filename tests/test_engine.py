"""The validation engine's shortcuts answer exactly what the plain way answers.

* module-name regexes, substring searches and regex groups answered once per digit-masked template equal
  a pattern matched against every name;
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from hubkit.checkpoint.modules import ModuleTable, is_digit_blind
from hubkit.checkpoint.safetensors_header import TensorInfo
from hubkit.validate.exclusions import ModuleMatcher

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
