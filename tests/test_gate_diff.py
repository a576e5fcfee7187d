"""``hubkit diff`` says IDENTICAL only when nothing differs: every file compared by content (JSON key by key,
text by lines, weights by bytes, tensor by tensor with ``--deep``), every difference shown, exit 1."""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliResult, read_json, write_json

SHARD = "model-00001-of-00001.safetensors"
INDEX = "model.safetensors.index.json"
Hubkit = Callable[..., CliResult]


@pytest.fixture
def pair(tiny: Path, tmp_path: Path) -> tuple[Path, Path]:
    """Two copies of the tiny export: A and B (B is the one a test changes)."""
    return tiny, Path(shutil.copytree(tiny, tmp_path / "b"))


def differs(hubkit: Hubkit, a: Path | str, b: Path | str, *extra: str) -> tuple[str, dict[str, Any]]:
    """The text and JSON answers of a diff that must find a difference (exit 1, never IDENTICAL)."""
    text = hubkit("diff", a, b, *extra)
    assert text.code == 1, text.out + text.err
    assert text.out.rstrip().splitlines()[-1] == "DIFFERENT", text.out
    assert "IDENTICAL" not in [line.strip() for line in text.out.splitlines()]
    result = hubkit("diff", a, b, *extra, "--format", "json")
    assert result.code == 1, result.err
    report = result.json()
    assert report["identical"] is False
    return text.out, report


def changed(report: dict[str, Any], path: str) -> dict[str, Any]:
    (entry,) = [c for c in report["files"]["changed"] if c["path"] == path]
    return entry


def edit_json(path: Path, edit: Callable[[Any], None]) -> None:
    data = read_json(path)
    edit(data)
    write_json(path, data)


def tensor_data(folder: Path, name: str | None = None) -> tuple[str, int]:
    """A tensor of the shard (the first one with data, or ``name``) and where its data begins in the file."""
    raw = (folder / SHARD).read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    for key, info in header.items():
        if (
            key != "__metadata__"
            and (name is None or key == name)
            and info["data_offsets"][1] > info["data_offsets"][0]
        ):
            return key, 8 + length + info["data_offsets"][0]
    raise AssertionError(f"no tensor {name} with data")


def flip_tensor_byte(folder: Path) -> str:
    name, offset = tensor_data(folder)
    with (folder / SHARD).open("r+b") as handle:
        handle.seek(offset)
        byte = handle.read(1)
        handle.seek(offset)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return name


# ------------------------------------------------------------------------------------------ the same


@pytest.mark.parametrize("deep", [False, True])
def test_identical_copies_are_identical(hubkit: Hubkit, pair: tuple[Path, Path], deep: bool) -> None:
    a, b = pair
    (b / ".hubkit").mkdir(exist_ok=True)
    (b / ".hubkit" / "notes.json").write_text("{}")  # hubkit's own records are not part of the checkpoint
    flags = ["--deep"] if deep else []
    text = hubkit("diff", a, b, *flags)
    assert text.code == 0 and text.out.rstrip().splitlines()[-1] == "IDENTICAL", text.out
    report = hubkit("diff", a, b, *flags, "--format", "json").json()
    assert report["identical"] is True and report["tensor_data"] == "compared" and report["deep"] is deep
    assert report["files"] == {"only_in_a": [], "only_in_b": [], "changed": [], "not_compared": [], "ignored": []}


# ------------------------------------------------------------------------------------------ JSON files


def _set_rope(config: dict[str, Any], value: float) -> None:
    config["text_config"]["rope_theta"] = value


def _set_positions(config: dict[str, Any], value: int) -> None:
    config["text_config"]["max_position_embeddings"] = value


def _set_auto_model(config: dict[str, Any], value: str) -> None:
    config["auto_map"]["AutoModel"] = value


JSON_EDITS = {
    "rope_theta": ("config.json", _set_rope, 50000.0, 100000.0, "text_config.rope_theta: 50000.0 -> 100000.0"),
    "max_position_embeddings": (
        "config.json",
        _set_positions,
        131072,
        262144,
        "text_config.max_position_embeddings: 131072 -> 262144",
    ),
    "auto_map": (
        "config.json",
        _set_auto_model,
        "modeling_kimi_k25.KimiK25ForConditionalGeneration",
        "evil.Model",
        'auto_map.AutoModel: "modeling_kimi_k25.KimiK25ForConditionalGeneration" -> "evil.Model"',
    ),
    "generation": (
        "generation_config.json",
        lambda doc, value: doc.__setitem__("temperature", value),
        0.6,
        1.0,
        "temperature: 0.6 -> 1.0",
    ),
    "tokenizer": (
        "tokenizer_config.json",
        lambda doc, value: doc["auto_map"].__setitem__("AutoTokenizer", [value, None]),
        "tokenization_kimi.TikTokenTokenizer",
        "tokenization_evil.Tokenizer",
        'auto_map.AutoTokenizer[0]: "tokenization_kimi.TikTokenTokenizer" -> "tokenization_evil.Tokenizer"',
    ),
}


@pytest.mark.parametrize("case", sorted(JSON_EDITS))
def test_a_json_value_that_changed_is_shown_by_key(hubkit: Hubkit, pair: tuple[Path, Path], case: str) -> None:
    a, b = pair
    name, edit, old, new, line = JSON_EDITS[case]
    edit_json(a / name, lambda doc: edit(doc, old))
    edit_json(b / name, lambda doc: edit(doc, old))
    assert hubkit("diff", a, b).code == 0
    edit_json(b / name, lambda doc: edit(doc, new))
    out, report = differs(hubkit, a, b)
    assert f"  {name}: 1 key differs\n    {line}\n" in out, out
    entry = changed(report, name)
    assert entry["kind"] == "json"
    (change,) = entry["changes"]
    assert (change["change"], change["a"], change["b"]) == ("changed", old, new)


def test_added_and_removed_keys_and_lists(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair

    def edit(config: dict[str, Any]) -> None:
        del config["text_config"]["qk_rope_head_dim"]
        config["text_config"]["rope_scaling"] = {"type": "yarn", "factor": 32.0}
        config["quantization_config"]["ignore"].append("language_model.model.layers.3.mlp.experts*")

    edit_json(b / "config.json", edit)
    out, report = differs(hubkit, a, b)
    assert "text_config.qk_rope_head_dim: 16 -> (absent)" in out
    assert 'text_config.rope_scaling: (absent) -> {"type": "yarn", "factor": 32.0}' in out
    assert 'added "language_model.model.layers.3.mlp.experts*"' in out
    kinds = {c["key"]: c["change"] for c in changed(report, "config.json")["changes"]}
    assert kinds["text_config.qk_rope_head_dim"] == "removed" and kinds["text_config.rope_scaling"] == "added"


def test_a_long_string_is_shown_around_its_change(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    template = "{% for message in messages %}" * 40
    edit_json(a / "tokenizer_config.json", lambda doc: doc.__setitem__("chat_template", template + "{{ eos }}"))
    edit_json(b / "tokenizer_config.json", lambda doc: doc.__setitem__("chat_template", template + "{{ bos }}"))
    out, _ = differs(hubkit, a, b)
    (line,) = [line for line in out.splitlines() if "chat_template:" in line]
    assert "{{ eos }}" in line and "{{ bos }}" in line and len(line) < 300


def test_json_types_are_compared_strictly(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    edit_json(a / "generation_config.json", lambda doc: doc.__setitem__("do_sample", 1))
    edit_json(b / "generation_config.json", lambda doc: doc.__setitem__("do_sample", True))
    out, _ = differs(hubkit, a, b)
    assert "do_sample: 1 -> true" in out


def test_the_same_json_written_differently_is_not_identical(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "generation_config.json").write_text(json.dumps(read_json(a / "generation_config.json")))  # one line
    out, report = differs(hubkit, a, b)
    assert "generation_config.json: the same JSON values, written differently" in out
    assert changed(report, "generation_config.json")["changes"] == []


def test_json_that_does_not_parse_is_compared_as_text(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (a / "extra.json").write_text('{"a": 1,\n "b": 2\n')
    (b / "extra.json").write_text('{"a": 1,\n "b": 3\n')
    out, report = differs(hubkit, a, b)
    assert '+ "b": 3' in out and changed(report, "extra.json")["kind"] == "text"


def test_the_weight_map_is_summarised(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    moved = [f"language_model.model.layers.{i}.mlp.experts.0.up_proj.weight" for i in (1, 2, 3)]
    edit_json(b / INDEX, lambda index: index["weight_map"].update(dict.fromkeys(moved, "model-elsewhere.safetensors")))
    out, report = differs(hubkit, a, b)
    assert "weight_map: 3 tensors moved between shards" in out
    assert "language_model.model.layers.{1-3}.mlp.experts.0.up_proj.weight (3 modules)" in out
    (change,) = changed(report, INDEX)["changes"]
    assert (change["key"], change["change"], change["count"]) == ("weight_map", "moved", 3)


def test_long_json_differences_are_bounded(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    write_json(a / "vocab.json", {f"token{i}": i for i in range(5000)})
    write_json(b / "vocab.json", {f"token{i}": i + 1 for i in range(5000)})
    out, report = differs(hubkit, a, b)
    entry = changed(report, "vocab.json")
    assert entry["summary"] == "5,000 keys differ" and len(entry["changes"]) == 40 and entry["more"] == 4960
    assert "... and 4,960 more" in out and len(out.splitlines()) < 100


# ------------------------------------------------------------------------------------------ text files


def test_remote_code_is_compared_by_lines(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    source = (a / "modeling_deepseek.py").read_text()
    (b / "modeling_deepseek.py").write_text(source.replace("DeepseekV3Model", "DeepseekV3Model  # patched", 1))
    out, report = differs(hubkit, a, b)
    assert "  modeling_deepseek.py: the lines differ\n" in out
    assert "-class DeepseekV3Model: ..." in out and "+class DeepseekV3Model  # patched: ..." in out
    entry = changed(report, "modeling_deepseek.py")
    assert entry["kind"] == "text" and "+++ b/modeling_deepseek.py" in entry["diff"]


@pytest.mark.parametrize("name", ["README.md", "chat_template.jinja", "tokenization_kimi.py"])
def test_every_text_file_is_compared(hubkit: Hubkit, pair: tuple[Path, Path], name: str) -> None:
    a, b = pair
    (b / name).write_text((a / name).read_text() + "one more line\n")
    out, report = differs(hubkit, a, b)
    assert "+one more line" in out and changed(report, name)["kind"] == "text"


def test_a_long_text_diff_is_bounded_and_line_numbers_are_true(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (a / "notes.txt").write_text("".join(f"line {i}\n" for i in range(20000)))
    (b / "notes.txt").write_text("".join(f"LINE {i}\n" if 10000 <= i < 13000 else f"line {i}\n" for i in range(20000)))
    (a / "huge.txt").write_text("".join(f"line {i}\n" for i in range(20000)))
    (b / "huge.txt").write_text("".join(f"LINE {i}\n" if i >= 10000 else f"line {i}\n" for i in range(20000)))
    out, report = differs(hubkit, a, b)
    entry = changed(report, "notes.txt")
    assert entry["diff"][2].startswith("@@ -9998,") and "-line 10000" in entry["diff"]
    assert len(entry["diff"]) == 60 and entry["more"] > 5000 and len(out.splitlines()) < 150
    assert changed(report, "huge.txt")["diff"] == [
        "20,000 lines -> 20,000 lines; the first difference is at line 10,001"
    ]


def test_line_endings_alone_are_a_difference(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "modeling_deepseek.py").write_bytes((a / "modeling_deepseek.py").read_bytes().replace(b"\n", b"\r\n"))
    out, _ = differs(hubkit, a, b)
    assert "line endings" in out


def test_control_characters_cannot_forge_the_verdict(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "notes\nIDENTICAL").write_text("x")
    (a / "README.md").write_text("\x1b[2J\nIDENTICAL\n")
    out, _ = differs(hubkit, a, b)
    assert "\x1b" not in out and "notes\\nIDENTICAL" in out


# ------------------------------------------------------------------------------------------ files and bytes


def test_files_only_on_one_side_are_listed(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "configuration_kimi_k25.py").unlink()
    (b / "extra").mkdir()
    (b / "extra" / "notes.txt").write_text("x")
    out, report = differs(hubkit, a, b)
    assert "files only in A: configuration_kimi_k25.py" in out and "files only in B: extra/notes.txt" in out
    assert report["files"]["only_in_a"] == ["configuration_kimi_k25.py"]
    assert report["files"]["only_in_b"] == ["extra/notes.txt"]


def test_links_are_compared_by_what_they_hold(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    for side in pair:
        (side / "extra").mkdir()
        (side / "extra" / "here").symlink_to("../extra")  # a link to a folder: compared by its target
        (side / "tokenizer.json").symlink_to("tokenizer_config.json")  # a link to a file: by the file's bytes
    assert hubkit("diff", a, b).code == 0
    (b / "extra" / "here").unlink()
    (b / "extra" / "here").symlink_to("..")
    (b / "tokenizer.json").unlink()
    (b / "tokenizer.json").symlink_to("generation_config.json")
    out, report = differs(hubkit, a, b)
    assert "extra/here: a link to the folder ../extra -> a link to the folder .." in out
    assert changed(report, "tokenizer.json")["kind"] == "json"


def test_a_binary_file_is_compared_by_size_and_sha256(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    (b / "tiktoken.model").write_bytes(b"\x00\xff" + (a / "tiktoken.model").read_bytes())
    out, report = differs(hubkit, a, b)
    entry = changed(report, "tiktoken.model")
    assert entry["kind"] == "binary" and entry["a"]["size"] + 2 == entry["b"]["size"]
    assert f"sha256 {entry['a']['sha256'][:12]}" in out and f"sha256 {entry['b']['sha256'][:12]}" in out


def test_tensor_bytes_are_never_called_identical_and_deep_names_the_tensor(
    hubkit: Hubkit, pair: tuple[Path, Path]
) -> None:
    a, b = pair
    name = flip_tensor_byte(b)
    out, report = differs(hubkit, a, b)
    assert f"{SHARD}: the bytes differ" in out and "use --deep" in out and "IDENTICAL" not in out
    assert report["tensor_data"] == "compared" and report["tensors"]["data_differs"] == []
    out, report = differs(hubkit, a, b, "--deep")
    assert f"{SHARD}: the bytes differ; the data differ in 1 tensor" in out and name in out
    assert report["tensors"]["data_differs"] == [name] and changed(report, SHARD)["tensors"] == [name]


def test_deep_tells_a_header_change_from_a_data_change(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    raw = (b / SHARD).read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    rewritten = json.dumps(dict(reversed(header.items()))).encode()  # same entries, other order and spacing
    rewritten += b" " * (-len(rewritten) % 8)
    (b / SHARD).write_bytes(struct.pack("<Q", len(rewritten)) + rewritten + raw[8 + length :])
    out, report = differs(hubkit, a, b, "--deep")
    assert f"{SHARD}: the bytes differ outside the tensor data" in out
    assert report["tensors"]["data_differs"] == []


def test_a_metadata_change_is_shown(hubkit: Hubkit, pair: tuple[Path, Path]) -> None:
    a, b = pair
    raw = (b / SHARD).read_bytes()
    length = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = {**header.get("__metadata__", {}), "format": "np"}
    rewritten = json.dumps(header).encode()
    rewritten += b" " * (-len(rewritten) % 8)
    (b / SHARD).write_bytes(struct.pack("<Q", len(rewritten)) + rewritten + raw[8 + length :])
    out, _ = differs(hubkit, a, b)
    assert "__metadata__.format:" in out and '-> "np"' in out


# ------------------------------------------------------------------------------------------ on the Hub


def test_a_hub_repo_against_a_folder(hubkit: Hubkit, hub, pair: tuple[Path, Path]) -> None:
    from hubkit.hub.push import PushOptions, push

    a, b = pair
    push(PushOptions(folder=a, repo="org/diff-gate", progress=False))
    ref = "hf://org/diff-gate"
    same = hubkit("diff", ref, b, "--deep", "--format", "json")
    assert same.code == 0, same.out
    assert same.json()["files"]["ignored"] == [".gitattributes (the Hub's own file, only in A)"]
    name = flip_tensor_byte(b)
    edit_json(b / "config.json", lambda config: _set_positions(config, 4096))
    hub.bytes_sent = 0
    shallow = hubkit("diff", ref, b)
    assert hub.bytes_sent < (a / SHARD).stat().st_size / 2  # the Hub's sha256 of the weights, not their bytes
    assert shallow.code == 1 and shallow.out.rstrip().endswith("DIFFERENT"), shallow.out
    assert "text_config.max_position_embeddings: (absent) -> 4096" in shallow.out
    assert f"{SHARD}: the bytes differ" in shallow.out
    deep = hubkit("diff", ref, b, "--deep", "--format", "json")
    assert deep.code == 1 and deep.json()["tensors"]["data_differs"] == [name]
