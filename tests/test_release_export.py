"""``hubkit release`` of an export made elsewhere (``[release] export``): validated, carded, pushed and tagged
where it is; hubkit writes only its card and its records there, and never deletes or rewrites the user's files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hubkit.testing.kimi import TINY, build_nvfp4_checkpoint, int4_base_layout, write_checkpoint

REPO = "example-org/Kimi-Tiny-NVFP4"

MANIFEST = f"""
[release]
repo = "{REPO}"
endpoint = "local"
tag = "v1"
export = "export"

[base]
repo = "example-org/Kimi-Tiny"
path = "base"
trust_remote_code = true

[validate]
profile = "kimi-k2-nvfp4"

[card]
license = "other"
license_name = "modified-mit"
license_link = "https://example.com/LICENSE"
producer = "the hubkit tests"

[card.serve]
tensor_parallel_size = 1
"""

QUANTIZE = """
[quantize]
out = "export"
calib = ["calib.jsonl"]
"""


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project: an export as another tool leaves it (no card, a file of the user's), its base, a manifest."""
    folder = tmp_path_factory.mktemp("project") / "project"
    export = build_nvfp4_checkpoint(folder / "export", TINY)
    (export / "README.md").unlink()  # modelopt's hf_ptq.py writes no card
    (export / "notes.txt").write_text("how I made this export\n")
    side = {p.name: p.read_bytes() for p in export.iterdir() if p.suffix in (".py", ".model", ".jinja")}
    for name in ("generation_config.json", "tokenizer_config.json"):
        side[name] = (export / name).read_bytes()
    config = json.loads((export / "config.json").read_text())
    config.pop("quantization_config", None)
    side["config.json"] = json.dumps(config).encode()
    write_checkpoint(folder / "base", int4_base_layout(TINY), files=side)
    (folder / "hubkit.toml").write_text(MANIFEST)
    return folder


@pytest.fixture
def project(template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the project, its files' mtimes kept, that a test may change."""
    return Path(shutil.copytree(template, tmp_path / "project"))


def user_files(export: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of the export outside hubkit's records: its bytes and its mtime."""
    return {
        p.relative_to(export).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(export.rglob("*"))
        if p.is_file() and not p.relative_to(export).as_posix().startswith(".hubkit/")
    }


def hub_files(project: Path) -> dict[str, bytes]:
    """The files of the release on the project's local Hub, read back (the Hub's own .gitattributes left out)."""
    from huggingface_hub import HfApi

    from hubkit.hub.server import HubServer

    server = HubServer(project / ".hubkit" / "local-hub", user="release")
    server.start()
    try:
        api = HfApi(endpoint=server.endpoint, token=server.token)
        files = {name: Path(api.hf_hub_download(REPO, name, local_dir=project / "download")).read_bytes()
                 for name in api.list_repo_files(REPO) if name != ".gitattributes"}  # fmt: skip
        assert [t.name for t in api.list_repo_refs(REPO).tags] == ["v1"]
        return files
    finally:
        server.stop()


def statuses(result) -> dict[str, str]:
    return {s["name"]: s["status"] for s in result.json()["stages"]}


def test_an_export_made_elsewhere_is_released_and_left_as_it_was(hubkit, project: Path) -> None:
    export = project / "export"
    before = user_files(export)

    result = hubkit("release", project / "hubkit.toml", "--format", "json")

    assert result.code == 0, result.err + result.out
    report = result.json()
    assert statuses(result) == {"quantize": "skipped", "card": "ran", "validate": "ran", "push": "ran",
                                "tag": "ran", "smoke": "skipped"}  # fmt: skip
    assert report["stages"][0]["detail"] == "export made elsewhere"
    assert not any("quantize" in c["name"] or c["name"] in ("GPUs", "disk") for c in report["preflight"])
    after = user_files(export)
    assert {name: after[name] for name in before} == before  # byte for byte, mtime for mtime
    assert set(after) - set(before) == {"README.md"}  # the card, and nothing else of hubkit's outside .hubkit/
    published = hub_files(project)
    assert {name: content for name, (content, _) in after.items()} == published
    assert "notes.txt" in published and b"NVFP4" in published["README.md"]

    rerun = hubkit("release", project / "hubkit.toml", "--format", "json")
    assert rerun.code == 0, rerun.err
    assert statuses(rerun) == {"quantize": "skipped", "card": "unchanged", "validate": "unchanged",
                               "push": "unchanged", "tag": "unchanged", "smoke": "skipped"}  # fmt: skip
    assert user_files(export) == after

    again = hubkit("release", project / "hubkit.toml", "--from", "card", "--format", "json")
    assert again.code == 0, again.err
    assert statuses(again)["quantize"] == "skipped" and statuses(again)["card"] == "unchanged"
    assert user_files(export) == after

    from_quantize = hubkit("release", project / "hubkit.toml", "--from", "quantize", "--format", "json")
    assert from_quantize.code == 0, from_quantize.err
    assert from_quantize.json()["stages"][0] == {**from_quantize.json()["stages"][0], "status": "skipped",
                                                 "detail": "export made elsewhere"}  # fmt: skip


def test_release_from_card_on_an_export_made_elsewhere(hubkit, project: Path) -> None:
    before = user_files(project / "export")
    result = hubkit("release", project / "hubkit.toml", "--from", "card", "--format", "json")
    assert result.code == 0, result.err + result.out
    after = user_files(project / "export")
    assert {name: after[name] for name in before} == before
    assert "README.md" in hub_files(project)


def test_the_exports_own_card_is_kept_and_pushed(hubkit, project: Path) -> None:
    from hubkit.testing.kimi import write_card

    readme = project / "export" / "README.md"
    readme.write_text("# My own card\n\nWritten by hand, without front matter.\n")
    before = user_files(project / "export")
    result = hubkit("release", project / "hubkit.toml", "--format", "json")
    assert result.code == 1  # hubkit's card checks hold for the export's own card too
    assert statuses(result)["card"] == "skipped" and statuses(result)["validate"] == "failed"
    assert user_files(project / "export") == before

    write_card(project / "export")
    readme.write_text(readme.read_text() + "\nWritten by hand.\n")
    before = user_files(project / "export")
    result = hubkit("release", project / "hubkit.toml", "--format", "json")
    assert result.code == 0, result.err + result.out
    card = next(s for s in result.json()["stages"] if s["name"] == "card")
    assert card["status"] == "skipped" and "kept the export's own README.md" in card["detail"]
    assert user_files(project / "export") == before
    assert hub_files(project)["README.md"] == readme.read_bytes()


def test_a_failing_validation_stops_before_push_and_deletes_nothing(hubkit, project: Path) -> None:
    export = project / "export"
    shard = next(export.glob("*.safetensors"))
    shard.write_bytes(shard.read_bytes()[:-64])  # a truncated shard
    before = user_files(export)
    result = hubkit("release", project / "hubkit.toml", "--format", "json")
    assert result.code == 1, result.err + result.out
    assert statuses(result)["validate"] == "failed" and "push" not in statuses(result)
    assert user_files(export) == {**before, "README.md": user_files(export)["README.md"]}
    assert not (project / ".hubkit" / "local-hub" / "repos").exists() or not any(
        (project / ".hubkit" / "local-hub" / "repos").rglob("commits/*.json")
    )


def test_hubkit_never_quantizes_into_an_export_it_released(hubkit, project: Path) -> None:
    assert hubkit("release", project / "hubkit.toml", "--until", "validate").code == 0
    manifest = project / "hubkit.toml"
    manifest.write_text(manifest.read_text().replace('export = "export"\n', "") + QUANTIZE)
    (project / "calib.jsonl").write_text('{"text": "hello"}\n')
    before = user_files(project / "export")
    result = hubkit("release", manifest, "--dry-run")
    assert result.code == 2
    assert "is an export made elsewhere that hubkit released" in result.err
    assert user_files(project / "export") == before


def test_export_and_quantize_together_are_one_manifest_problem(hubkit, tmp_path: Path) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(MANIFEST + QUANTIZE)
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2, result.out
    lines = [line for line in (result.out + result.err).splitlines() if "[release] export" in line]
    assert len(lines) == 1 and "[quantize]" in lines[0], result.out + result.err


def test_a_manifest_needs_quantize_or_export(hubkit, tmp_path: Path) -> None:
    manifest = tmp_path / "hubkit.toml"
    manifest.write_text(MANIFEST.replace('export = "export"\n', ""))
    result = hubkit("manifest", "check", manifest)
    assert result.code == 2
    assert "add a [quantize] table, or set [release] export" in result.out + result.err


def test_a_missing_export_is_refused_before_any_work(hubkit, project: Path) -> None:
    shutil.rmtree(project / "export")
    result = hubkit("release", project / "hubkit.toml")
    assert result.code == 2
    assert f"[release] export {project / 'export'} does not exist" in result.err
    assert not (project / "export").exists()


def test_a_symlinked_export_resolves_to_its_folder(hubkit, project: Path) -> None:
    os.rename(project / "export", project / "real-export")
    (project / "export").symlink_to(project / "real-export")
    result = hubkit("release", project / "hubkit.toml", "--dry-run", "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["out"] == str((project / "real-export").resolve())


def test_init_writes_a_manifest_that_releases_an_export(hubkit, tmp_path: Path) -> None:
    from hubkit.manifest import load_manifest

    result = hubkit("init", tmp_path / "model", "--repo", "org/M-NVFP4", "--base", "org/M", "--export", "ptq out")
    assert result.code == 0, result.err
    manifest = load_manifest(tmp_path / "model" / "hubkit.toml")
    assert manifest.release.export == "ptq out" and manifest.quantize is None
    assert "[quantize]" not in (tmp_path / "model" / "hubkit.toml").read_text()


def test_an_export_that_holds_the_manifest_is_refused(hubkit, project: Path) -> None:
    manifest = project / "hubkit.toml"
    manifest.write_text(manifest.read_text().replace('export = "export"', 'export = "."'))
    result = hubkit("release", manifest, "--dry-run")
    assert result.code == 2
    assert "the release publishes that folder as it is" in result.err
