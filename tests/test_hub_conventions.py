"""Hub conventions of ``hubkit push`` and the release summary: commit messages, the token from ``--token`` or a
named variable (never shown), sizes in human units with throughput, and what a no-op rerun's summary says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hubkit.hub.server import HubServer
from tests.conftest import copy_of, example_project

#: A token nobody issued, distinctive enough to find anywhere it leaked to.
FAKE_TOKEN = "hf_FAKEtokenZ9q8w7e6r5t4y3u2i1o0pLeakCheck"


def api(hub: HubServer):
    from huggingface_hub import HfApi

    return HfApi(endpoint=hub.endpoint, token=hub.token)


def files_under(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ commit messages


def test_commit_message_and_description_reach_the_hubs_history(hubkit, hub: HubServer, tiny: Path) -> None:
    result = hubkit(
        "push", tiny, "--repo", "org/tiny", "--batch", "3",
        "--commit-message", "Release v1 of Kimi-Tiny", "--commit-description", "Made by the nightly job.",
    )  # fmt: skip
    assert result.code == 0, result.err
    history = [c for c in api(hub).list_repo_commits("org/tiny") if c.title != "initial commit"][::-1]
    count = len(history)
    assert count > 1
    assert [c.title for c in history] == [
        f"Release v1 of Kimi-Tiny (commit {n} of {count})" for n in range(1, count + 1)
    ]
    assert {c.message for c in history} == {"Made by the nightly job."}


def test_default_message_counts_files_in_good_english(hubkit, hub: HubServer, tiny: Path) -> None:
    assert hubkit("push", tiny, "--repo", "org/tiny").code == 0
    titles = [c.title for c in api(hub).list_repo_commits("org/tiny")][::-1]
    local = sum(1 for p in tiny.rglob("*") if p.is_file() and ".hubkit" not in p.parts)
    assert titles == ["initial commit", f"hubkit: upload {local - 1} files (commit 1 of 2)",
                      "hubkit: upload 1 file (commit 2 of 2)"]  # fmt: skip
    (tiny / "README.md").write_text((tiny / "README.md").read_text() + "\nOne more line.\n")
    assert hubkit("push", tiny, "--repo", "org/tiny").code == 0
    assert api(hub).list_repo_commits("org/tiny")[0].title == "hubkit: upload 1 file"  # one commit: no "1 of 1"


def test_commit_message_is_one_line(hubkit, hub: HubServer, tiny: Path) -> None:
    result = hubkit("push", tiny, "--repo", "org/tiny", "--commit-message", "two\nlines")
    assert result.code == 2 and "--commit-description" in result.err and len(result.err.strip().splitlines()) == 1


def test_manifest_push_table_takes_the_commit_message(tmp_path: Path) -> None:
    from hubkit.manifest import load_manifest
    from hubkit.release.stages.push import push_options

    folder = example_project(tmp_path)
    manifest = load_manifest(
        folder / "hubkit.toml", ["push.commit_message=Release v2", "push.commit_description=From CI."]
    )
    options = push_options(manifest, out=folder / "out", progress=False, dry_run=True)
    assert (options.commit_message, options.commit_description) == ("Release v2", "From CI.")


# ------------------------------------------------------------------------------------------ the token


def test_token_option_wins_over_the_clients_chain(hubkit, hub: HubServer, tiny: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)  # the client's chain holds a token the Hub rejects
    result = hubkit("push", tiny, "--repo", "org/tiny", "--token", hub.token, "--format", "json")
    assert result.code == 0, result.err
    assert result.json()["verified"] is True


def test_token_env_names_the_variable(hubkit, hub: HubServer, tiny: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.setenv("HF_TOKEN_ORG", hub.token)
    result = hubkit("push", tiny, "--repo", "org/tiny", "--token-env", "HF_TOKEN_ORG")
    assert result.code == 0, result.err


def test_token_beats_token_env(hubkit, hub: HubServer, tiny: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN_ORG", hub.token)
    result = hubkit("push", tiny, "--repo", "org/tiny", "--token", FAKE_TOKEN, "--token-env", "HF_TOKEN_ORG")
    assert result.code == 2 and "rejected the token" in result.err
    assert FAKE_TOKEN not in result.out + result.err


@pytest.mark.parametrize("value", [None, "", "  "])
def test_unset_or_empty_token_env_is_one_line_naming_it(hubkit, hub, tiny: Path, monkeypatch, value) -> None:
    monkeypatch.delenv("HF_TOKEN_ORG", raising=False)
    if value is not None:
        monkeypatch.setenv("HF_TOKEN_ORG", value)
    result = hubkit("push", tiny, "--repo", "org/tiny", "--token-env", "HF_TOKEN_ORG")
    assert result.code == 2 and result.err.count("\n") == 1
    assert "HF_TOKEN_ORG" in result.err and "unset or empty" in result.err
    assert not hub.store.exists("models", "org/tiny")


def test_token_env_given_a_token_does_not_echo_it(hubkit, hub, tiny: Path) -> None:
    result = hubkit("push", tiny, "--repo", "org/tiny", "--token-env", FAKE_TOKEN + "-x")
    assert result.code == 2 and "name of an environment variable" in result.err
    assert FAKE_TOKEN not in result.out + result.err


def test_rejected_token_appears_nowhere(hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.delenv("HF_TOKEN")
    for output in ("github", "json"):
        result = hubkit("-vv", "push", tiny, "--repo", "org/tiny", "--token", FAKE_TOKEN, "--format", output, "--debug")
        assert result.code == 2 and "rejected the token" in result.err
        assert FAKE_TOKEN not in result.out + result.err
    assert "hubkit push failed" in summary.read_text() and FAKE_TOKEN not in summary.read_text()
    assert FAKE_TOKEN not in files_under(tiny)


def test_accepted_token_appears_nowhere(hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.delenv("HF_TOKEN")
    result = hubkit("-vv", "push", tiny, "--repo", "org/tiny", "--token", hub.token, "--format", "github")
    assert result.code == 0, result.err
    again = hubkit("push", tiny, "--repo", "org/tiny", "--token", hub.token, "--format", "json")
    assert again.code == 0 and again.json()["verified"] is True
    for shown in (result.out, result.err, again.out, summary.read_text(), files_under(tiny)):
        assert hub.token not in shown


def test_python_api_push_options_take_token_and_endpoint(hub: HubServer, tiny: Path, monkeypatch) -> None:
    from hubkit.api import PushOptions, push

    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: the option must win
    options = PushOptions(tiny, repo="org/api", token=hub.token, endpoint=hub.endpoint, progress=False)
    assert hub.token not in repr(options)
    result = push(options)
    assert result.verified is True and result.commit_url is not None
    assert result.commit_url.startswith(hub.endpoint)


# ------------------------------------------------------------------------------------------ sizes


def test_sizes_are_human_with_throughput_and_exact_in_json(
    hubkit, hub: HubServer, tiny: Path, tmp_path: Path, monkeypatch
) -> None:
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    text = hubkit("push", tiny, "--repo", "org/tiny", "--format", "github")
    assert text.code == 0, text.err
    rate = r"\d+(\.\d)? [kMG]?B in 2 commits, \d+(\.\d)? [kMG]?B/s"
    assert re.search(rate, text.out), text.out
    assert re.search(rate, summary.read_text()), summary.read_text()
    assert not re.search(r"\d bytes", text.out + summary.read_text())
    assert "1 file README.md" in text.out  # the card's commit, in the singular
    size = sum(p.stat().st_size for p in tiny.rglob("*") if p.is_file() and ".hubkit" not in p.parts)
    tiny.joinpath("README.md").write_text(tiny.joinpath("README.md").read_text() + "\nchanged\n")
    report = hubkit("push", tiny, "--repo", "org/other", "--format", "json").json()
    assert report["bytes_to_upload"] == size + len("\nchanged\n") and isinstance(report["bytes_to_upload"], int)
    assert isinstance(report["upload_seconds"], float)
    rerun = hubkit("push", tiny, "--repo", "org/other")
    assert "nothing to upload" in rerun.out


# ------------------------------------------------------------------------------------------ release summary


def release_result(status: str, outputs: dict, endpoint: str = "https://huggingface.co"):
    from hubkit.release.pipeline import ReleaseResult
    from hubkit.release.stages import StageResult

    stages = [StageResult("validate", status), StageResult("push", status, outputs=outputs)]
    return ReleaseResult("hubkit.toml", "org/model", "/out", stages=stages, endpoint=endpoint)


EARLIER = {"commit": "abc123def456", "files": 13, "bytes": 790043, "uploaded": 12, "unchanged": 0, "commits": 2,
           "seconds": 0.5, "pull_request": 1, "merged": True}  # fmt: skip


def test_summary_of_a_no_op_rerun_says_nothing_was_uploaded() -> None:
    from hubkit.release.summary import render_summary

    text = render_summary(release_result("unchanged", EARLIER))
    assert "- push: nothing to upload, 12 files unchanged; commit abc123def456 (from an earlier run)" in text
    assert "790" not in text and "uploaded" not in text


def test_summary_of_a_push_that_ran_says_size_and_rate() -> None:
    from hubkit.release.summary import render_summary

    text = render_summary(release_result("ran", EARLIER))
    assert "- push: 12 files uploaded, 790.0 kB in 2 commits, 1.6 MB/s; commit abc123def456" in text


def test_summary_of_a_local_release_links_no_server() -> None:
    from hubkit.release.summary import render_summary

    text = render_summary(release_result("ran", EARLIER, endpoint="local"))
    assert "http" not in text and "- repo: org/model (on the local Hub server" in text


@pytest.mark.slow
def test_release_rerun_summary_tells_this_run(hubkit, released_example: Path, tmp_path: Path) -> None:
    pytest.importorskip("modelopt")
    folder = copy_of(released_example, tmp_path)
    rerun = hubkit("release", folder / "hubkit.toml")
    assert rerun.code == 0, rerun.err
    assert re.search(r"- push: nothing to upload, \d+ files unchanged; commit [0-9a-f]{40} \(from an earlier run\)",
                     rerun.out), rerun.out  # fmt: skip
    assert "127.0.0.1" not in rerun.out and "http://" not in rerun.out.split("| stage |")[0]
    changed = hubkit("release", folder / "hubkit.toml", "--set", "card.evaluation_note=Scores soon.")
    assert changed.code == 0, changed.err
    assert re.search(r"- push: 1 file uploaded, \d+\.\d kB in 1 commit, [\d.]+ [kMG]?B/s; commit", changed.out), (
        changed.out
    )
    assert "127.0.0.1" not in changed.out
