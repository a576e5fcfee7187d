"""No secret is published: every byte validate, push and release would publish is scanned for tokens and private
keys, whatever the file's name; only tensor data that a valid safetensors header declares is not read. Symlinks
out of the folder or into ``.hubkit/`` are refused. The scan loads from any install path."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from hubkit.hub.server import HubServer
from tests.conftest import REPO_ROOT, SUBPROCESS_ENV, copy_of

HF = "hf_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi"
GITHUB = "ghp_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8"
AWS = "AKIAIOSFODNN7EXAMPLE"
PEM = "-----BEGIN RSA PRIVATE KEY-----"
SHARD = "model-00001-of-00001.safetensors"
INDEX = "model.safetensors.index.json"

#: One sample per detector (and both Hugging Face forms); the prefilters must let each through to its detector.
SAMPLES = {
    "aws-id": AWS,
    "aws-secret": 'aws_secret_access_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"',
    "artifactory-akc": 'password="AKCp8budTFpbypBqQbGJPz3pGCi28pPivfWczqjfYb9GAkU3"',
    "artifactory-ap": 'password="AP6xxxxxxxxxx1234"',
    "azure": "AccountKey=" + "a" * 86 + "==",
    "discord": "MTk4NjIyNDgzNDcxOTI1MjQ4.Cl2FMQ.ZnCjm1XVW7vRze4b7Cq4se7kKWs",
    "github": GITHUB,
    "gitlab": "glpat-" + "x1Y2z3W4v5U6t7S8r9Q0",
    "jwt": "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "mailchimp": "0123456789abcdef0123456789abcdef-us12",
    "npm": "//registry.npmjs.org/:_authToken=npm_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8",
    "openai": "sk-" + "a1B2c3D4e5F6g7H8i9J0" + "T3BlbkFJ" + "k1L2m3N4o5P6q7R8s9T0",
    "pem": PEM,
    "pypi": "pypi-AgEIcHlwaS5vcmc" + "A" * 70,
    "sendgrid": "SG." + "a" * 22 + "." + "b" * 43,
    "slack": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "slack-upper": "XOXB-123456789012-1234567890123-ABCDEFGHIJKLMNOPQRSTUVWX",
    "slack-hook": "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "square": "sq0csp-" + "a" * 43,
    "stripe": "sk_live_" + "a1B2c3D4e5F6g7H8i9J0k1L2",
    "telegram": "110201543:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw1",
    "twilio": "AC" + "0123456789abcdef" * 2,
    "huggingface": HF,
    "huggingface-org": "api_org_" + "QwErTyUiOpAsDfGhJkLzXcVbNmQwErTyUi",
}


def remote_files(hub: HubServer, repo: str) -> set[str]:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        return {f.path for f in HfApi(endpoint=hub.endpoint, token=hub.token).list_repo_tree(repo, recursive=True)}
    except RepositoryNotFoundError:
        return set()


def rewrite_header(
    path: Path, edit: Callable[[dict], dict], trailing: bytes = b"", replace: tuple[bytes, bytes] = (b"", b"")
) -> None:
    """Rewrite a safetensors file's header (its tensor data kept; ``replace`` applied to its JSON text), with
    ``trailing`` bytes after the data."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.dumps(edit(json.loads(data[8 : 8 + length])), separators=(",", ":")).encode()  # as writers do
    header = header.replace(*replace) if replace[0] else header
    path.write_bytes(struct.pack("<Q", len(header)) + header + data[8 + length :] + trailing)


def read_header(path: Path) -> bytes:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + length]


def with_metadata(note: str) -> Callable[[dict], dict]:
    metadata = {"format": "pt", "note": note}
    return lambda header: {"__metadata__": metadata} | {k: v for k, v in header.items() if k != "__metadata__"}


def leak(folder: Path, case: str) -> str:
    """Put a secret into ``folder`` the way ``case`` says; the path the finding must name."""
    if case == "train.log":
        (folder / "train.log").write_text(f"step 1 loss 2.3\nstep 2 loss 2.1\nlogin with {HF}\n")
    elif case == ".netrc":
        (folder / ".netrc").write_text(f"machine huggingface.co\nlogin me\npassword {HF}\n")
    elif case == "config.json.bak":
        (folder / "config.json.bak").write_text(json.dumps({"hub_token": GITHUB}, indent=1) + "\n")
    elif case == "no-extension":
        (folder / "credentials").write_text(f"[default]\naws_access_key_id = {AWS}\n")
    elif case == ".env.local":
        (folder / ".env.local").write_text(f"HF_TOKEN={HF}\n")
    elif case == "binary":
        (folder / "vocab.dat").write_bytes(os.urandom(3000) + b"\x00" + PEM.encode() + b"\xff" + os.urandom(3000))
        return "vocab.dat"
    elif case == "metadata":
        rewrite_header(folder / SHARD, with_metadata(f"pushed with {HF}"))
        return SHARD
    elif case == "metadata-escaped":
        rewrite_header(folder / SHARD, with_metadata("ESCAPED" + HF[1:]), replace=(b"ESCAPED", b"\\u0068"))
        return SHARD
    elif case == "metadata-repeated-key":  # a JSON reader keeps the last "note": the first is still published
        replace = (b'"note":"REPEATED"', f'"note":"{HF}","note":"clean"'.encode())
        rewrite_header(folder / SHARD, with_metadata("REPEATED"), replace=replace)
        return SHARD
    elif case == "after-the-tensors":
        rewrite_header(folder / SHARD, lambda header: header, trailing=f"\n{GITHUB}\n".encode())
        return SHARD
    elif case == "json-escaped":
        (folder / "chat_template.json").write_text('{"note": "\\u0068' + HF[1:] + '"}\n')
        return "chat_template.json"
    elif case == "utf-16":
        (folder / "notes.txt").write_text(f"first line\nlogin {HF}\n", encoding="utf-16")
        return "notes.txt"
    elif case == "file-name":
        (folder / f"notes-{HF}.txt").write_text("nothing secret inside\n")
        return "notes-hf_Q…(37 chars).txt"
    elif case.startswith("index-"):
        index = folder / INDEX
        data = json.loads(index.read_text())
        if case == "index-metadata":
            data["metadata"]["note"] = GITHUB
        elif case == "index-tensor-name":
            data["weight_map"][f"leak.{HF}"] = SHARD
        text = json.dumps(data, indent=2)
        if case == "index-repeated-key":  # a JSON reader keeps the last "metadata": the first is still published
            text = text.replace('"metadata": {', f'"metadata": {{"note": "{HF}"}},\n  "metadata": {{', 1)
        index.write_text(text + "\n")
        return INDEX
    elif case == "symlink-in-folder":
        (folder / "notes").mkdir()
        (folder / "notes" / "token.txt").write_text(f"{HF}\n")
        (folder / "alias.txt").symlink_to(Path("notes") / "token.txt")
        return "alias.txt"
    else:
        raise AssertionError(case)
    return {"no-extension": "credentials"}.get(case, case)


CASES = [
    "train.log", ".netrc", "config.json.bak", "no-extension", ".env.local", "binary", "metadata", "metadata-escaped",
    "metadata-repeated-key", "after-the-tensors", "symlink-in-folder", "index-metadata", "index-tensor-name",
    "index-repeated-key", "file-name", "json-escaped", "utf-16",
]  # fmt: skip
SECRETS = (HF, GITHUB, AWS, HF[4:20], GITHUB[5:20])


def assert_never_shown(*texts: str) -> None:
    for text in texts:
        assert not any(secret in text for secret in SECRETS), text


# ------------------------------------------------------------------------------------------------ the scanner


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_detector_is_reached_through_the_prefilters(name: str) -> None:
    from hubkit.validate.secrets import StreamScan, scan_bytes

    text = f"first line\nvalue {SAMPLES[name]} here\n".encode()
    found = scan_bytes(text)
    assert found and found[0].where == "line 2", found
    assert all(SAMPLES[name] not in s.describe() for s in found)
    for cut in range(1, len(text), 7):  # split anywhere: still found, on the same line
        scan = StreamScan()
        scan.feed(text[:cut], 0)
        scan.feed(text[cut:], cut)
        assert scan.finish() == found, cut


def test_a_token_across_two_large_chunks_is_found_with_its_line() -> None:
    from hubkit.validate.secrets import StreamScan

    data = b"x" * 100 + b"\n" + b"y" * (8 * 1024 * 1024 - 120) + f" {HF} ".encode() + b"z" * 1000
    scan = StreamScan()
    for offset in range(0, len(data), 8 * 1024 * 1024):
        scan.feed(data[offset : offset + 8 * 1024 * 1024], offset)
    found = scan.finish()
    assert [(s.kind, s.where) for s in found] == [("Hugging Face Token", "line 2")]


# ------------------------------------------------------------------------------------------------ validate


@pytest.mark.parametrize("case", CASES)
def test_validate_finds_a_secret_in_any_published_file(hubkit, tiny: Path, case: str) -> None:
    path = leak(tiny, case)
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 1, result.err
    found = [f for f in result.json()["findings"] if f["code"] == "HK803"]
    assert [f["file"] for f in found] == [path, "notes/token.txt"][: 2 if case == "symlink-in-folder" else 1], found
    assert_never_shown(result.out, result.err)
    text = hubkit("validate", tiny)
    assert text.code == 1 and path in text.out
    assert_never_shown(text.out, text.err)


def test_the_finding_names_the_line(hubkit, tiny: Path) -> None:
    leak(tiny, "train.log")
    found = [f for f in hubkit("validate", tiny, "--format", "json").json()["findings"] if f["code"] == "HK803"]
    assert found[0]["message"].startswith("Hugging Face Token on line 3 (hf_Q…(37 chars))")


def test_a_token_in_a_tensor_name_is_found(hubkit, tiny: Path) -> None:
    first = next(name for name in json.loads(read_header(tiny / SHARD)) if name != "__metadata__")
    rewrite_header(tiny / SHARD, lambda header: {**header, f"leak.{HF}": header[first]})
    found = [f for f in hubkit("validate", tiny, "--format", "json").json()["findings"] if f["code"] == "HK803"]
    assert [f["file"] for f in found] == [SHARD] and "safetensors header" in found[0]["message"]


def test_tensor_data_of_a_valid_header_is_not_read_but_bytes_outside_it_are(hubkit, tiny: Path) -> None:
    shard = tiny / SHARD
    raw = bytearray(shard.read_bytes())
    (length,) = struct.unpack("<Q", raw[:8])
    raw[8 + length + 4 : 8 + length + 4 + len(HF)] = HF.encode()  # inside the first tensor's bytes
    shard.write_bytes(raw)
    result = hubkit("validate", tiny, "--format", "json", "--select", "HK803")
    assert result.code == 0, result.out


def test_a_large_file_is_scanned_in_chunks_to_its_end(hubkit, tiny: Path) -> None:
    with open(tiny / "dataset.jsonl", "wb") as handle:
        for _ in range(20):
            handle.write(b'{"text": "' + b"a" * (1024 * 1024 - 20) + b'"}\n')
        handle.write(f'{{"text": "{GITHUB}"}}\n'.encode())
    found = [f for f in hubkit("validate", tiny, "--format", "json").json()["findings"] if f["code"] == "HK803"]
    assert [(f["file"], f["message"].split(" (")[0]) for f in found] == [("dataset.jsonl", "GitHub Token on line 21")]


def test_symlinks_into_the_records_or_out_of_the_folder_are_refused(hubkit, tiny: Path, tmp_path: Path) -> None:
    (tiny / ".hubkit").mkdir(exist_ok=True)
    (tiny / ".hubkit" / "notes.txt").write_text(f"{HF}\n")
    (tiny / "notes.txt").symlink_to(Path(".hubkit") / "notes.txt")
    (tiny / "records").symlink_to(".hubkit")
    (tmp_path / "outside.txt").write_text(f"{GITHUB}\n")
    (tiny / "outside.txt").symlink_to(tmp_path / "outside.txt")
    result = hubkit("validate", tiny, "--format", "json")
    assert result.code == 1
    found = {(f["code"], f["file"]) for f in result.json()["findings"]}
    assert {("HK804", "notes.txt"), ("HK804", "records"), ("HK109", "outside.txt")} <= found
    assert not any(code == "HK803" for code, _ in found)  # refused, never followed
    assert_never_shown(result.out, result.err)


def test_validate_works_from_an_install_path_with_spaces_commas_and_non_ascii(tiny: Path, tmp_path: Path) -> None:
    site = tmp_path / "venv-quantize, #1 é" / "site-packages"
    shutil.copytree(REPO_ROOT / "hubkit", site / "hubkit", ignore=shutil.ignore_patterns("__pycache__"))
    for data in ("checks", "templates"):  # where a wheel carries them
        shutil.copytree(REPO_ROOT / data, site / "hubkit" / "_data" / data)
    leak(tiny, "train.log")
    env = {**SUBPROCESS_ENV, "PYTHONPATH": str(site)}
    done = subprocess.run(
        [sys.executable, "-m", "hubkit", "validate", str(tiny), "--format", "json", "--select", "HK803"],
        capture_output=True, text=True, env=env, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert [f["file"] for f in json.loads(done.stdout)["findings"]] == ["train.log"]


# ------------------------------------------------------------------------------------------------ push


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("validate", [True, False], ids=["validated", "no-validate"])
def test_push_uploads_nothing_of_a_folder_holding_a_secret(
    hubkit, hub: HubServer, tiny: Path, case: str, validate: bool
) -> None:
    path = leak(tiny, case)
    result = hubkit("push", tiny, "--repo", "org/leak", *([] if validate else ["--no-validate"]))
    assert result.code == 1, result.err
    if not validate:  # validated, the first finding may be another check's (the same leak seen otherwise)
        assert path in result.err and "nothing of it was uploaded" in result.err
    assert_never_shown(result.out, result.err)
    assert path not in remote_files(hub, "org/leak")


@pytest.mark.parametrize("target", ["records", "outside"])
def test_push_refuses_symlinks_into_the_records_or_out_of_the_folder(
    hubkit, hub: HubServer, tiny: Path, tmp_path: Path, target: str
) -> None:
    if target == "records":
        (tiny / ".hubkit").mkdir(exist_ok=True)
        (tiny / ".hubkit" / "notes.txt").write_text("records\n")
        (tiny / "notes.txt").symlink_to(Path(".hubkit") / "notes.txt")
    else:
        (tmp_path / "notes.txt").write_text("private\n")
        (tiny / "notes.txt").symlink_to(tmp_path / "notes.txt")
    result = hubkit("push", tiny, "--repo", "org/links", "--no-validate")
    assert result.code == 1 and "notes.txt is a symlink" in result.err
    assert remote_files(hub, "org/links") == set()


def test_a_file_given_a_secret_after_its_scan_is_not_uploaded(hubkit, hub: HubServer, tiny: Path) -> None:
    (tiny / "train.log").write_text("step 1 loss 2.3\n")

    def hook(method: str, path: str) -> None:
        if "/preupload/" in path:  # hashed and scanned already; the upload reads the file after this
            (tiny / "train.log").write_text(f"step 1 loss 2.3\n{HF}\n")

    hub.faults.on_request = hook
    result = hubkit("push", tiny, "--repo", "org/late", "--no-validate", "--batch", "100")
    assert result.code == 1, result.err
    assert "train.log" in result.err and "line 2" in result.err
    assert_never_shown(result.out, result.err)
    assert "train.log" not in remote_files(hub, "org/late")


def test_a_shard_given_a_secret_during_its_upload_is_not_published(hubkit, hub: HubServer, tiny: Path) -> None:
    def hook(method: str, path: str) -> None:
        if path.endswith("/info/lfs/objects/batch") and not (tiny / SHARD).read_bytes().endswith(b"\n"):
            with open(tiny / SHARD, "ab") as handle:  # after the tensors: not tensor data
                handle.write(f"{GITHUB}\n".encode())

    hub.faults.on_request = hook
    result = hubkit("push", tiny, "--repo", "org/late-shard", "--no-validate", "--batch", "1")
    assert result.code == 1, result.err
    assert SHARD in result.err and "GitHub Token" in result.err
    assert_never_shown(result.out, result.err)
    assert SHARD not in remote_files(hub, "org/late-shard")


def test_the_hash_cache_records_the_scan_and_a_cache_of_another_scan_is_not_trusted(
    hubkit, hub: HubServer, tiny: Path
) -> None:
    from hubkit.validate.secrets import SCANNER_VERSION

    assert hubkit("push", tiny, "--repo", "org/cache", "--no-validate").code == 0
    cache = tiny / ".hubkit" / "hashes.json"
    entries = json.loads(cache.read_text())["files"]
    assert entries and all(entry[-1] == SCANNER_VERSION for entry in entries.values())
    again = hubkit("push", tiny, "--repo", "org/cache", "--no-validate", "--format", "json").json()
    assert again["bytes_hashed"] == 0  # hashed and scanned: neither again
    data = json.loads(cache.read_text())
    data["files"] = {path: [*entry[:-1], SCANNER_VERSION - 1] for path, entry in data["files"].items()}
    cache.write_text(json.dumps(data))
    rescanned = hubkit("push", tiny, "--repo", "org/cache", "--no-validate", "--format", "json").json()
    assert rescanned["bytes_hashed"] > 0


# ------------------------------------------------------------------------------------------------ release


@pytest.mark.slow
def test_release_fails_on_a_secret_even_with_the_finding_waived(hubkit, released_example: Path, tmp_path: Path) -> None:
    folder = copy_of(released_example, tmp_path)
    (folder / "Kimi-Tiny-NVFP4" / "train.log").write_text(f"login {HF}\n")
    failed = hubkit("release", folder / "hubkit.toml", "--format", "json")
    assert failed.code == 1, failed.err
    assert_never_shown(failed.out, failed.err)
    waived = hubkit("release", folder / "hubkit.toml", "--set", 'validate.ignore=["HK803"]', "--format", "json")
    assert waived.code == 1, waived.err
    assert "train.log" in waived.out + waived.err
    assert_never_shown(waived.out, waived.err)
    from huggingface_hub import HfApi

    server = HubServer(folder / ".hubkit" / "local-hub")
    server.start()
    try:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        assert "train.log" not in {f.path for f in api.list_repo_tree("example-org/Kimi-Tiny-NVFP4", recursive=True)}
    finally:
        server.stop()


@pytest.mark.parametrize(
    "data",
    [HF.encode(), struct.pack("<Q", 16) + GITHUB.encode(), struct.pack("<Q", 10**12) + b" " + HF.encode()],
    ids=["shorter-than-a-header", "header-not-json", "length-past-the-end"],
)
def test_push_scans_all_of_a_safetensors_file_without_a_valid_header(data: bytes) -> None:
    from hubkit.validate.secrets import FileScan

    scan = FileScan("model.safetensors", len(data))
    for offset in range(0, len(data), 5):
        scan.feed(data[offset : offset + 5], offset)
    assert scan.secrets()
