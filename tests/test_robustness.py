"""Broken inputs, one class at a time: every fault inside a checkpoint is one finding naming its file (exit 1),
reported once where it is; every bad argument is one line on stderr (exit 2); nothing is exit 3.

Each class goes through ``validate``, ``diff``, ``card check`` and, where the Hub can hold the input,
``validate hf://...`` against hubkit's local Hub server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import struct
import tempfile
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hubkit.checkpoint import LocalSource, load_checkpoint
from hubkit.checkpoint.safetensors_header import HeaderLimits, read_shard_header
from hubkit.testing.kimi import TINY, build_nvfp4_checkpoint
from hubkit.validate.context import Context
from hubkit.validate.engine import all_checks, findings_of
from hubkit.validate.options import ValidateOptions
from hubkit.validate.profiles import choose_profile
from hubkit.validate.runner import validate
from tests.conftest import CliResult, read_json, write_json

SHARD = "model-00001-of-00001.safetensors"
INDEX = "model.safetensors.index.json"
Hubkit = Callable[..., CliResult]


def findings(result: CliResult) -> list[tuple[str, str | None]]:
    """(code, file) of every finding of a ``--format json`` run."""
    assert result.code in (0, 1), f"exit {result.code}: {result.err}"
    return sorted((f["code"], f["file"]) for f in result.json()["findings"])


def one_line_exit_2(result: CliResult) -> str:
    assert result.code == 2, f"exit {result.code}: {result.out} {result.err}"
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("hubkit: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def served(hub, folder: Path, repo: str) -> str:
    """The folder as a Hub repo of the local server, as it is (no validation on the way)."""
    hub.store.import_folder("models", repo, folder)
    return f"hf://{repo}"


@pytest.fixture(scope="module")
def sharded_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny export in several shards, so that one broken shard leaves others intact."""
    return build_nvfp4_checkpoint(tmp_path_factory.mktemp("sharded") / "tiny", TINY, shard_bytes=150_000)


@pytest.fixture
def sharded(sharded_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(sharded_template, tmp_path / "sharded"))


def shards_of(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.safetensors"))


def rewrite_header(path: Path, change: Callable[[bytes], bytes]) -> None:
    """Replace the header of a shard, keeping its length (so the data offsets still hold)."""
    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    header = change(blob[8 : 8 + length])
    assert len(header) == length
    path.write_bytes(blob[:8] + header + blob[8 + length :])


# ----------------------------------------------------------------------- files that cannot be read at all


def _folder(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _loop(path: Path) -> None:
    path.unlink()
    path.symlink_to(path.name)  # a link to itself


def _dangling(path: Path) -> None:
    path.unlink()
    path.symlink_to("no-such-file")


UNREADABLE = {
    "folder": (_folder, "is a folder, not a file"),
    "fifo": (_fifo, "FIFO"),
    "loop": (_loop, "symlink loop"),
    "dangling": (_dangling, "symlink to nothing"),
}


@pytest.mark.parametrize("name", ["config.json", "hf_quant_config.json", "README.md", "modeling_deepseek.py", INDEX])
@pytest.mark.parametrize("kind", sorted(UNREADABLE))
def test_a_file_that_cannot_be_read_is_one_finding(hubkit: Hubkit, tiny: Path, name: str, kind: str) -> None:
    make, words = UNREADABLE[kind]
    make(tiny / name)
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 1, result.err
    # a folder where remote code should be is what HK106 (the check that wants the file) reports
    code = "HK106" if (kind, name) == ("folder", "modeling_deepseek.py") else "HK113"
    assert findings(result) == [(code, name)], result.out
    assert words.replace("is a folder, not a file", "a folder, not a file") in result.json()["findings"][0]["message"]

    if code == "HK113":  # diff compares what it can read: a folder, itself, it can
        different = hubkit("diff", tiny, tiny)  # the same folder: still not 'identical'
        assert different.code == 1 and f"cannot read in B: {name}" in different.out, different.out + different.err


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_card_check_of_a_card_that_is_no_file_is_exit_2(hubkit: Hubkit, tiny: Path, kind: str) -> None:
    UNREADABLE[kind][0](tiny / "README.md")
    assert "README.md" in one_line_exit_2(hubkit("card", "check", tiny / "README.md"))


def test_card_check_against_a_broken_checkpoint_is_one_problem(hubkit: Hubkit, tiny: Path, tmp_path: Path) -> None:
    card = tmp_path / "README.md"
    shutil.copy(tiny / "README.md", card)
    assert hubkit("card", "check", card, "--checkpoint", tiny).code == 0
    (tiny / "config.json").write_bytes(b'{"architectures": ["\xff"]}')
    result = hubkit("card", "check", card, "--checkpoint", tiny, "--format", "json")
    assert result.code == 1, result.err
    problems = result.json()["problems"]
    assert [p["kind"] for p in problems] == ["checkpoint"], problems
    assert "config.json is not UTF-8" in problems[0]["message"]


def test_a_symlink_loop_inside_a_subfolder_is_one_finding_and_a_link_to_a_folder_is_none(
    hubkit: Hubkit, tiny: Path
) -> None:
    (tiny / "extra").mkdir()
    (tiny / "extra" / "self").symlink_to("../extra")  # a link to a folder inside: fine, never followed
    (tiny / "extra" / "a").symlink_to("b")
    (tiny / "extra" / "b").symlink_to("a")
    result = hubkit("validate", tiny, "--format", "json")
    assert findings(result) == [("HK113", "extra/a"), ("HK113", "extra/b")]


# ------------------------------------------------------------------ permissions: as another user than root


@contextlib.contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block without root's right to read any file: as 'nobody' by effective ids when this is
    root (the tests run as root in CI), else as the user it is, whose permissions already apply."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


@pytest.fixture
def open_tiny(tiny_template: Path, hubkit: Hubkit) -> Iterator[Path]:
    """A copy of the tiny export that another user may read, in a folder anyone may enter."""
    hubkit("validate", tiny_template)  # every lazy import done while this is still root
    hubkit("diff", tiny_template, tiny_template)
    top = Path(tempfile.mkdtemp(prefix="hubkit-perm-"))
    try:
        top.chmod(0o755)
        folder = Path(shutil.copytree(tiny_template, top / "tiny"))
        for item in folder.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
        yield folder
    finally:
        for item in top.rglob("*"):
            item.chmod(0o755 if item.is_dir() else 0o644)
        shutil.rmtree(top)


@pytest.mark.parametrize("name", ["config.json", "README.md", "modeling_deepseek.py", SHARD, INDEX])
def test_a_file_without_read_permission_is_one_finding(hubkit: Hubkit, open_tiny: Path, name: str) -> None:
    (open_tiny / name).chmod(0)
    with unprivileged():
        result = hubkit("validate", open_tiny, "--format", "json")
        different = hubkit("diff", open_tiny, open_tiny)
    assert result.code == 1, result.err
    assert findings(result) == [("HK113", name)], result.out
    assert "cannot be read" in result.json()["findings"][0]["message"]
    assert different.code == 1 and f"{name} cannot be read" in different.out


def test_an_unlistable_subfolder_is_one_finding_and_an_unlistable_root_is_exit_2(
    hubkit: Hubkit, open_tiny: Path
) -> None:
    (open_tiny / "extra").mkdir()
    (open_tiny / "extra" / "notes.txt").write_text("x")
    (open_tiny / "extra").chmod(0)
    with unprivileged():
        result = hubkit("validate", open_tiny, "--format", "json")
    assert findings(result) == [("HK113", "extra")], result.out
    assert "cannot be listed" in result.json()["findings"][0]["message"]

    (open_tiny / "extra").chmod(0o755)
    open_tiny.chmod(0)
    with unprivileged():
        line = one_line_exit_2(hubkit("validate", open_tiny))
        diff_line = one_line_exit_2(hubkit("diff", open_tiny, open_tiny))
    assert "cannot list the folder" in line and "no .safetensors" not in line
    assert "cannot list the folder" in diff_line


def test_a_file_that_stops_being_readable_during_the_checks_is_that_checks_finding(open_tiny: Path) -> None:
    checkpoint = load_checkpoint(str(open_tiny))
    context = Context(checkpoint, choose_profile(checkpoint, None))
    for name in ("README.md", "modeling_deepseek.py"):
        (open_tiny / name).chmod(0)
    with unprivileged():
        found = findings_of(context, all_checks())
    about = {(f.code, f.file) for f in found}
    assert ("HK901", "README.md") in about  # the card checks read README.md
    assert ("HK803", "modeling_deepseek.py") in about  # the secret scan reads every text file
    assert all(f.severity.value == "error" and "cannot be read" in f.message for f in found), found


# --------------------------------------------------------------------- JSON that is not a usable config


BROKEN_JSON: dict[str, bytes] = {
    "not-utf8": b'{\n  "architectures": ["\xff\xfe"]\n}',
    "nested-deep": b"[" * 5000 + b"]" * 5000,
    "nested-object": b'{"a":' * 3000 + b"1" + b"}" * 3000,
    "truncated": b'{\n  "a": 1,\n  "b": ',
    "nan": b'{\n  "a": NaN\n}',
    "huge-float": b'{"a": 1e400}',
    "array": b"[1, 2, 3]",
}


@pytest.mark.parametrize("name", ["config.json", "hf_quant_config.json", INDEX])
@pytest.mark.parametrize("kind", sorted(BROKEN_JSON))
def test_broken_json_is_one_finding_local_remote_and_in_diff(
    hubkit: Hubkit,
    hub,
    tiny: Path,
    name: str,
    kind: str,
) -> None:
    (tiny / name).write_bytes(BROKEN_JSON[kind])
    local = hubkit("validate", tiny, "--format", "json")
    assert local.code == 1, local.err
    assert findings(local) == [("HK102", name)], local.out
    remote = hubkit("validate", served(hub, tiny, f"org/{kind}"), "--format", "json")
    assert findings(remote) == findings(local), remote.out
    different = hubkit("diff", tiny, tiny)
    assert different.code == 1 and f"cannot read in B: {name}" in different.out, different.out


def test_a_json_error_names_its_line(hubkit: Hubkit, tiny: Path) -> None:
    (tiny / "config.json").write_bytes(b'{\n  "a": 1,\n  "b": [1, 2,\n  ]\n}')
    (finding,) = hubkit("validate", tiny, "--format", "json").json()["findings"]
    assert finding["code"] == "HK102" and finding["line"] == 4, finding


def test_an_oversized_config_is_reported_in_one_sentence(hubkit: Hubkit, tiny: Path) -> None:
    with (tiny / "generation_config.json").open("r+b") as handle:
        handle.truncate(65 * 1024 * 1024)  # sparse: larger than any config
    (finding,) = hubkit("validate", tiny, "--format", "json").json()["findings"]
    assert finding["message"].startswith("generation_config.json is 68,157,440 bytes, larger than any config")
    assert " is is " not in finding["message"]


def test_configs_of_the_wrong_shape_crash_nothing(
    hubkit: Hubkit, tiny: Path, tiny_template: Path, tmp_path: Path
) -> None:
    config = read_json(tiny / "config.json")
    config["architectures"] = {"not": "a list"}
    config["text_config"]["n_routed_experts"] = 10**15  # a claim that must not be enumerated
    config["text_config"]["num_hidden_layers"] = "four"
    config["quantization_config"]["ignore"] = 7
    write_json(tiny / "config.json", config)
    quant = read_json(tiny / "hf_quant_config.json")
    quant["quantization"] = ["not", "an", "object"]
    quant["producer"] = "modelopt"
    write_json(tiny / "hf_quant_config.json", quant)
    result = hubkit("validate", tiny, "--format", "json", "--deep")
    assert result.code == 1, result.err
    assert {"HK401", "HK608"} <= {code for code, _ in findings(result)}
    card = tmp_path / "README.md"
    shutil.copy(tiny / "README.md", card)
    assert hubkit("card", "check", card, "--checkpoint", tiny).code == 1
    assert hubkit("diff", tiny_template, tiny).code == 1


# ------------------------------------------------------------------------ the card is not text


def test_a_binary_card_is_one_problem_everywhere(hubkit: Hubkit, tiny: Path, hub) -> None:
    (tiny / "README.md").write_bytes(b"---\nlicense: other\n---\n\x89PNG\r\n\x1a\n\x00\xff\xfe")
    result = hubkit("validate", tiny, "--format", "json")
    assert findings(result) == [("HK901", "README.md")], result.out
    assert result.json()["findings"][0]["line"] == 4
    remote = hubkit("validate", served(hub, tiny, "org/binary-card"), "--format", "json")
    assert findings(remote) == findings(result)
    checked = hubkit("card", "check", tiny / "README.md", "--format", "json")
    assert checked.code == 1
    assert [p["kind"] for p in checked.json()["problems"]] == ["encoding"]


# ----------------------------------------------------------- a fault in a header is reported once, where it is


def test_a_header_starting_with_whitespace_is_one_finding_and_is_read(hubkit: Hubkit, sharded: Path) -> None:
    def lead_with_spaces(raw: bytes) -> bytes:
        body = raw.rstrip(b" ")
        assert len(raw) - len(body) >= 2, "the writer pads headers to 8 bytes"
        return b"  " + body + b" " * (len(raw) - len(body) - 2)

    target = shards_of(sharded)[1]
    rewrite_header(target, lead_with_spaces)
    result = hubkit("validate", sharded, "--format", "json", "--deep")
    assert findings(result) == [("HK202", target.name)], result.out
    assert "'{'" in result.json()["findings"][0]["message"]


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda raw: b"[" + raw[1:], id="not-json"),
        pytest.param(lambda raw: raw[:10] + b"\xff" + raw[11:], id="not-utf8"),
        pytest.param(lambda raw: raw.replace(b'"shape":[', b'"shape":"', 1), id="malformed-entry"),
    ],
)
def test_a_broken_shard_header_does_not_cascade(
    hubkit: Hubkit, sharded: Path, damage: Callable[[bytes], bytes]
) -> None:
    target = shards_of(sharded)[1]
    rewrite_header(target, damage)
    result = hubkit("validate", sharded, "--format", "json", "--deep")
    found = findings(result)
    assert {file for _, file in found} == {target.name}, found  # no index, count, expert or card findings
    assert {code for code, _ in found} <= {"HK202", "HK205", "HK207", "HK208"}, found


def test_deep_never_allocates_what_a_header_claims(hubkit: Hubkit, tiny: Path) -> None:
    """A block-scale tensor whose header claims 10**12 bytes: findings on the shard, no MemoryError."""
    header = read_json_header(tiny / SHARD)
    name = next(k for k in header if k.endswith(".weight_scale") and header[k]["dtype"] == "F8_E4M3")
    begin = header[name]["data_offsets"][0]
    header[name]["shape"] = [10**6, 10**6]
    header[name]["data_offsets"] = [begin, begin + 10**12]
    write_json_header(tiny / SHARD, header)
    tracemalloc.start()
    try:
        result = hubkit("validate", tiny, "--deep", "--format", "json")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.code == 1, result.err
    assert {"HK207", "HK208"} & {code for code, _ in findings(result)}
    assert peak < 200 * 1024 * 1024, f"peak {peak:,} bytes"


def read_json_header(path: Path) -> dict[str, object]:
    import json

    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    return dict(json.loads(blob[8 : 8 + length]))


def write_json_header(path: Path, header: dict[str, object]) -> None:
    import json

    blob = path.read_bytes()
    (length,) = struct.unpack("<Q", blob[:8])
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + blob[8 + length :])


# ---------------------------------------------------------------------------------------- header limits


def test_a_shard_over_the_per_shard_limit_is_not_decoded(sharded: Path) -> None:
    shards = shards_of(sharded)
    counts = {p.name: len(read_shard_header(LocalSource(sharded), p.name, p.stat().st_size).tensors) for p in shards}
    biggest = max(counts, key=lambda n: counts[n])
    limits = HeaderLimits(tensors_per_shard=counts[biggest] - 1, tensors_per_checkpoint=10**6)
    checkpoint = load_checkpoint(str(sharded), limits=limits)
    assert checkpoint.shards[biggest].fatal_kind == "limit" and checkpoint.shards[biggest].tensors == {}
    report = validate(str(sharded), ValidateOptions(limits=limits))
    assert sorted((f.code, f.file) for f in report.findings) == [("HK210", biggest)], report.findings


def test_a_checkpoint_over_its_limits_is_one_finding_and_stops_decoding(sharded: Path) -> None:
    shards = shards_of(sharded)
    first = len(read_shard_header(LocalSource(sharded), shards[0].name, shards[0].stat().st_size).tensors)
    for limits in (
        HeaderLimits(tensors_per_checkpoint=first),
        HeaderLimits(header_bytes_per_checkpoint=struct.unpack("<Q", shards[0].read_bytes()[:8])[0]),
    ):
        checkpoint = load_checkpoint(str(sharded), limits=limits)
        assert checkpoint.shards[shards[0].name].fatal is None
        assert all(checkpoint.shards[p.name].fatal_kind == "budget" for p in shards[1:])
        assert all(not checkpoint.shards[p.name].tensors for p in shards[1:])
        report = validate(str(sharded), ValidateOptions(limits=limits))
        (finding,) = report.findings
        assert finding.code == "HK210" and finding.file is None
        assert f"{len(shards) - 1} shards were not read" in finding.message


def test_the_default_limits_are_far_above_kimi() -> None:
    limits = HeaderLimits()
    assert limits.tensors_per_checkpoint >= 7 * 277_670  # Kimi-K2.x: 277,670 tensors
    assert limits.tensors_per_shard >= 3 * 277_670  # ... in 120 shards (a one-shard Kimi would pass)
    assert limits.header_bytes_per_checkpoint >= 10 * 39_000_000  # ... in 39 MB of headers


# -------------------------------------------------------------------------- arguments: one line, exit 2


def test_a_base_that_is_not_a_checkpoint_is_exit_2(hubkit: Hubkit, tiny: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    for base in (tmp_path / "empty", tmp_path / "notes"):
        assert "is not a checkpoint" in one_line_exit_2(hubkit("validate", tiny, "--base", base))
    assert hubkit("validate", tiny, "--base", tiny).code == 0


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: d / "missing.json", id="missing"),
        pytest.param(lambda d: d, id="folder-without-configs"),
        pytest.param(lambda d: (d / "x.json").write_bytes(b"\xff\xfe") and d / "x.json", id="not-utf8"),
        pytest.param(lambda d: (d / "x.json").write_bytes(b"[" * 4000) and d / "x.json", id="deep"),
        pytest.param(lambda d: (d / "x.json").write_text('{"quantization": 1}') and d / "x.json", id="no-config"),
        pytest.param(lambda d: os.mkfifo(d / "fifo") or d / "fifo", id="fifo"),
        pytest.param(lambda d: "hf://../..", id="hub-dots"),
    ],
)
def test_a_reference_that_is_not_one_is_exit_2(
    hubkit: Hubkit, tiny: Path, tmp_path: Path, make: Callable[[Path], object]
) -> None:
    one_line_exit_2(hubkit("validate", tiny, "--reference", str(make(tmp_path))))


@pytest.mark.parametrize(
    "ref", ["hf://../..", "hf://a b/c", "hf://org/..", "hf://org/name@", "hf://org/na%me", "hf://"]
)
def test_a_malformed_hub_address_is_exit_2_everywhere(hubkit: Hubkit, tiny: Path, ref: str) -> None:
    assert "hf://ORG/NAME" in one_line_exit_2(hubkit("validate", ref))
    one_line_exit_2(hubkit("diff", tiny, ref))
    one_line_exit_2(hubkit("validate", tiny, "--base", ref))
    one_line_exit_2(hubkit("card", "check", tiny / "README.md", "--checkpoint", ref))


# ------------------------------------------------------------------------- findings point at their line


def test_findings_in_configs_carry_the_line_of_their_key(hubkit: Hubkit, tiny: Path) -> None:
    quant = read_json(tiny / "hf_quant_config.json")
    quant["quantization"]["group_size"] = "16"
    quant["quantization"]["exclude_modules"].append("no.such.module*")
    write_json(tiny / "hf_quant_config.json", quant)
    lines = (tiny / "hf_quant_config.json").read_text().splitlines()
    result = hubkit("validate", tiny, "--format", "json", "--select", "HK402,HK501")
    by_code = {f["code"]: f for f in result.json()["findings"]}
    assert '"group_size"' in lines[by_code["HK402"]["line"] - 1]
    assert "no.such.module*" in lines[by_code["HK501"]["line"] - 1]

    github = hubkit("validate", tiny, "--format", "github", "--select", "HK402,HK501")
    annotations = [line for line in github.out.splitlines() if line.startswith("::error ")]
    assert any(f"hf_quant_config.json,line={by_code['HK402']['line']}," in a for a in annotations), annotations
    text = hubkit("validate", tiny, "--select", "HK402")
    assert f"line {by_code['HK402']['line']}: quantization.group_size" in text.out


def test_card_findings_carry_their_line(hubkit: Hubkit, tiny: Path) -> None:
    card = (tiny / "README.md").read_text()
    (tiny / "README.md").write_text(card.replace("base_model_relation: quantized", "base_model_relation: finetune"))
    result = hubkit("validate", tiny, "--format", "json", "--select", "HK901")
    (finding,) = result.json()["findings"]
    assert "base_model_relation" in (tiny / "README.md").read_text().splitlines()[finding["line"] - 1]
    assert "line" not in finding["message"].split(":")[0]


def test_a_permission_denied_is_not_swallowed_as_root_would(open_tiny: Path) -> None:
    """The listing asks with the effective ids: what 'nobody' may not read is listed with its problem."""
    (open_tiny / "config.json").chmod(0)
    with unprivileged():
        entries = {e.path: e for e in LocalSource(open_tiny).list_files()}
    assert entries["config.json"].problem == "cannot be read: permission denied"
    assert stat.S_IMODE((open_tiny / "config.json").stat().st_mode) == 0


def test_no_check_lists_more_than_a_thousand_findings(hubkit: Hubkit, tmp_path: Path) -> None:
    import numpy as np
    from safetensors.numpy import save_file

    folder = tmp_path / "many"
    folder.mkdir()
    save_file({f"m.t{i}.weight": np.zeros(2, dtype=np.uint8) for i in range(1200)}, str(folder / "model.safetensors"))
    found = [f for f in hubkit("validate", folder, "--format", "json").json()["findings"] if f["code"] == "HK603"]
    assert len(found) == 1001
    summary = [f for f in found if f["message"].startswith("…")]
    assert [f["message"] for f in summary] == ["… and 200 more findings of this check, not listed"]


def test_explain_says_when_a_check_is_skipped(hubkit: Hubkit) -> None:
    text = hubkit("validate", "--explain", "HK607").out
    assert "Skipped when" in text and "config.json is missing, unreadable or not a JSON object" in text


def test_a_base_file_that_cannot_be_read_is_a_finding_naming_the_base(
    hubkit: Hubkit, tiny: Path, tiny_template: Path, tmp_path: Path
) -> None:
    base = Path(shutil.copytree(tiny_template, tmp_path / "base"))
    _fifo(base / "chat_template.jinja")
    result = hubkit("validate", tiny, "--base", base, "--format", "json")
    assert findings(result) == [("HK120", "chat_template.jinja")], result.out
    assert result.json()["findings"][0]["message"].startswith("the base's chat_template.jinja is a FIFO")


def test_deep_reads_a_scale_tensor_larger_than_one_read_in_pieces(hubkit: Hubkit, tmp_path: Path) -> None:
    """A 70 MB block-scale tensor (sparse: all zeros) is read in 64 MiB pieces whose counts add up."""
    import json

    from hubkit.validate.rules.numerics import MAX_READ

    size = MAX_READ + 5_000_000
    folder = tmp_path / "big"
    folder.mkdir()
    header = json.dumps({"m.w.weight_scale": {"dtype": "F8_E4M3", "shape": [size], "data_offsets": [0, size]}})
    raw = header.encode() + b" " * (-len(header) % 8)
    with (folder / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(raw)) + raw)
        handle.truncate(8 + len(raw) + size)
    result = hubkit("validate", folder, "--deep", "--format", "json", "--select", "HK702")
    (finding,) = result.json()["findings"]
    assert finding["message"].startswith(f"{size:,} of {size:,} block scales are zero"), finding
