"""Help and messages: every option described, usage as the command behaves, ``quantize --plan`` failing at once
without a GPU, preflight checks that could not ask the Hub said "not checked", and the libraries' warnings kept
for ``-v``."""

from __future__ import annotations

import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from hubkit import logs
from hubkit.cli import cli
from tests.conftest import example_project


def commands(command: click.Command = cli, path: str = "hubkit") -> Iterator[tuple[str, click.Command]]:
    """Every command of the CLI with its full name, groups included."""
    yield path, command
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from commands(sub, f"{path} {name}")


# ------------------------------------------------------------------------------------------- help texts


def test_every_option_and_argument_of_every_command_is_described() -> None:
    undescribed = []
    for name, command in commands():
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                undescribed.append(f"{name} {param.opts[-1]}")
            shown = param.human_readable_name.strip("[].")  # an argument is described in the command's text
            if isinstance(param, click.Argument) and shown not in (command.help or ""):
                undescribed.append(f"{name} {shown}")
    assert not undescribed, undescribed


def test_every_format_option_lists_its_formats(hubkit) -> None:
    formats = [(name, p) for name, c in commands() for p in c.params if "--format" in getattr(p, "opts", [])]
    assert {name for name, _ in formats} >= {"hubkit diff", "hubkit card check", "hubkit manifest check"}
    for name, param in formats:
        assert isinstance(param.type, click.Choice)
        for choice in param.type.choices:
            assert str(choice) in (param.help or ""), (name, choice, param.help)
    card_check = hubkit("card", "check", "--help").out
    assert "--format [text|json|github]  Output: text for people, json" in card_check


def test_push_batch_help_says_files_or_a_size_per_commit(hubkit) -> None:
    text = " ".join(hubkit("push", "--help").out.split())
    assert (
        "--batch FILES|SIZE How much one commit holds: a number of files (such as 8) or a size (such as 40GiB); "
        "default 16 files." in text
    )
    assert "bytes per commit" not in text


def test_validate_usage_shows_path_required_as_it_is(hubkit, tiny: Path) -> None:
    usage = hubkit("validate", "--help").out
    assert usage.startswith("Usage: hubkit validate [OPTIONS] PATH\n") and "[PATH]" not in usage
    assert "PATH (a folder or hf://ORG/NAME[@REV]) is required, except with" in " ".join(usage.split())
    missing = hubkit("validate")
    assert missing.code == 2 and "Usage: hubkit validate [OPTIONS] PATH" in missing.err
    assert "PATH is required" in missing.err
    assert hubkit("validate", "--list-checks").code == 0
    assert hubkit("validate", "--explain", "HK201").code == 0
    assert hubkit("validate", tiny).code == 0


# ------------------------------------------------------------------------------------------- quantize --plan


def no_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine's nvidia-smi lists no GPU (a test double first on PATH)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "nvidia-smi").write_text("#!/bin/sh\n")
    (folder / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_plan_without_gpus_says_no_gpu_before_reading_the_base(
    hubkit, tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hubkit.checkpoint as checkpoint_package

    no_gpus(tmp_path, monkeypatch)
    read: list[object] = []
    real_load = checkpoint_package.load_checkpoint
    monkeypatch.setattr(checkpoint_package, "load_checkpoint", lambda *a, **k: read.append(a) or real_load(*a, **k))
    result = hubkit("quantize", "--base", tiny, "--plan")
    assert result.code == 2 and result.err == (
        "hubkit: error: no GPU is visible here; name the target with --gpus, e.g. --gpus 8xB300 or --gpus cpu\n"
    )
    assert read == []  # the shards' headers were never read
    planned = hubkit("quantize", "--base", tiny, "--plan", "--gpus", "cpu", "--format", "json")
    assert planned.code == 0 and read, planned.err  # with a target, the plan reads the base as before


# ------------------------------------------------------------------------------------------- preflight offline


def preflight(result) -> dict[str, dict]:
    return {check["name"]: check for check in result.json()["preflight"]}


@pytest.fixture
def hub_release(tmp_path: Path) -> Path:
    """The example release with its base and reference on the Hub and no local server of its own."""

    def edit(text: str) -> str:
        text = text.replace('path = "base"', "").replace('endpoint = "local"', "")
        return text.replace("deep = true", 'deep = true\nreference = "hf://example-org/Kimi-Reference"')

    return example_project(tmp_path, edit) / "hubkit.toml"


HUB_CHECKS = ("base", "validate reference", "Hub")
DRY_RUN = ("--dry-run", "--from", "validate", "--until", "tag", "--format", "json")


def test_hub_checks_offline_are_not_checked(hubkit, hub_release: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_unchecked")
    result = hubkit("release", hub_release, *DRY_RUN)
    assert result.code == 0, result.err
    found = preflight(result)
    for name in HUB_CHECKS:
        assert found[name]["status"] == "not checked" and "HF_HUB_OFFLINE is set" in found[name]["detail"], found


def test_hub_checks_against_an_endpoint_that_refuses_are_not_checked(
    hubkit, hub_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = socket.create_server(("127.0.0.1", 0))
    endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()  # nothing listens there: every connection is refused
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_unchecked")
    result = hubkit("release", hub_release, *DRY_RUN)
    assert result.code == 0, result.err
    found = preflight(result)
    for name in HUB_CHECKS:
        assert found[name]["status"] == "not checked", found
        assert "cannot reach the Hub" in found[name]["detail"] and "Connection refused" in found[name]["detail"]
    assert found["Hub"]["detail"].startswith(f"cannot check the token at {endpoint}: ")


def test_hub_checks_the_hub_answered_no_still_fail(
    hubkit, hub, hub_release: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_the_servers")
    result = hubkit("release", hub_release, *DRY_RUN)
    assert result.code == 2
    found = preflight(result)
    assert {name: found[name]["status"] for name in HUB_CHECKS} == dict.fromkeys(HUB_CHECKS, "failed"), found
    assert "the Hub rejected the token" in found["Hub"]["detail"]


# ------------------------------------------------------------------------------------------- library warnings


def emit_library_warnings() -> None:
    """A deprecation, a future and a user warning raised in modelopt's and transformers' modules, and a warning
    logged by each library's logger."""
    for module in ("modelopt.torch.quantization", "transformers.modeling_utils"):
        code = (
            "import warnings\n"
            "warnings.warn('old API', DeprecationWarning)\n"
            "warnings.warn('changes soon', FutureWarning)\n"
            "warnings.warn('untested version', UserWarning)\n"
        )
        exec(compile(code, f"<{module}>", "exec"), {"__name__": module})
        logging.getLogger(module).warning("logged by %s", module)


def library_output(settings: logs.Settings, capsys: pytest.CaptureFixture[str]) -> tuple[list[str], str]:
    """(warnings shown, log lines) while a hubkit command runs with ``settings``."""
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")
        with logs.session():
            logs.configure(settings)
            emit_library_warnings()
            logging.getLogger("hubkit.release").warning("hubkit's own")
    return [f"{w.category.__name__}: {w.message}" for w in shown], capsys.readouterr().err


def test_library_warnings_reach_the_terminal_only_with_verbose(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Once transformers is imported (by another test), its logger writes through a handler of its own bound to
    # the stderr of that moment, not through hubkit's: give it the logging state it has before that import.
    library = logging.getLogger("transformers")
    monkeypatch.setattr(library, "handlers", [])
    monkeypatch.setattr(library, "propagate", True)
    shown, err = library_output(logs.Settings(), capsys)
    assert shown == [] and "logged by" not in err, (shown, err)
    assert "hubkit: warning: hubkit's own" in err  # hubkit's own warnings are not the libraries'

    shown, err = library_output(logs.Settings(verbose=1), capsys)
    assert sorted(shown) == sorted(
        ["DeprecationWarning: old API", "FutureWarning: changes soon", "UserWarning: untested version"] * 2
    )
    assert "modelopt.torch.quantization: warning: logged by" in err
    assert "transformers.modeling_utils" in err and "hubkit: warning: hubkit's own" in err

    shown, err = library_output(logs.Settings(), capsys)  # each command's setting ends with it
    assert shown == [] and "logged by" not in err


def test_a_hub_that_cannot_be_asked_stops_a_real_run_before_any_stage(
    hubkit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The token check says "not checked", never "failed"; but a real run that pushes or tags does not start
    without a Hub to push to (hours of quantization would be wasted), while a dry run only reports it."""
    from tests.conftest import example_project

    monkeypatch.setenv("HF_TOKEN", "hf_anything")
    folder = example_project(tmp_path, lambda t: t.replace('endpoint = "local"', 'endpoint = "http://127.0.0.1:9"'))
    run = hubkit("release", folder / "hubkit.toml", "--from", "tag", "--until", "tag")
    assert run.code == 2, run.err
    assert "not checked: Hub: cannot check the token at http://127.0.0.1:9: cannot reach the Hub" in run.out + run.err
    assert "push and tag need the Hub: rerun when it answers" in run.err and "Traceback" not in run.err
    assert "failed: Hub" not in run.out + run.err
    dry = hubkit("release", folder / "hubkit.toml", "--from", "tag", "--until", "tag", "--dry-run")
    assert dry.code == 0, dry.err
