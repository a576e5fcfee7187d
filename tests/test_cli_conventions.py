"""What users of a CLI expect: -q/-v/--debug on either side of the command's name, -q silencing the libraries
too, -v logging through ``logging``, --version, shell completion, and stages and profiles as choices."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import click
import pytest

from tests.conftest import SUBPROCESS_ENV


def hubkit_process(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *args], env=env or SUBPROCESS_ENV, capture_output=True, text=True
    )


# ------------------------------------------------------------------------------------- -q, -v, --debug


@pytest.mark.parametrize("position", ["before", "after"])
def test_verbosity_options_are_taken_after_the_command_too(hubkit, position: str) -> None:
    for option in ("-q", "-v", "-vv", "--debug", "--quiet", "--verbose"):
        args = [option, "validate", "/nonexistent"] if position == "before" else ["validate", "/nonexistent", option]
        result = hubkit(*args)
        assert (
            result.code == 2 and result.err == "hubkit: error: /nonexistent does not exist; pass a checkpoint folder\n"
        )
    card = hubkit("card", "check", "/nonexistent/README.md", "-q")
    assert card.code == 2 and "No such option" not in card.err


def test_debug_after_the_command_shows_the_traceback(hubkit, tiny: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hubkit.validate.engine import REGISTRY, all_checks

    all_checks()  # the registry is filled as the rules are imported

    def explode(ctx):
        raise RuntimeError("boom")

    monkeypatch.setitem(
        REGISTRY, "HK101", REGISTRY["HK101"].__class__(**{**REGISTRY["HK101"].__dict__, "run": explode})
    )
    plain = hubkit("validate", tiny)
    assert plain.code == 3 and "Traceback" not in plain.err
    debug = hubkit("validate", tiny, "--debug")
    assert debug.code == 3 and "Traceback" in debug.err and "RuntimeError: boom" in debug.err


def test_verbose_logs_the_libraries_through_logging(tmp_path: Path) -> None:
    from hubkit.hub.server import HubServer

    with HubServer(tmp_path / "hub") as server:
        env = {**SUBPROCESS_ENV, "HF_ENDPOINT": server.endpoint}
        quiet_default = hubkit_process("validate", "hf://org/model", env=env)
        verbose = hubkit_process("validate", "hf://org/model", "-v", env=env)
    missing = "hubkit: error: hf://org/model: repository not found (or private: set HF_TOKEN)\n"
    assert quiet_default.returncode == verbose.returncode == 2
    assert quiet_default.stderr == missing
    requests = [line for line in verbose.stderr.splitlines() if ": info: HTTP Request: GET " in line]
    assert any("/api/models/org/model" in line for line in requests), verbose.stderr
    assert verbose.stderr.endswith(missing)


LIBRARIES = """
import json, logging, os, sys, warnings
from hubkit import logs

with logs.session():
    logs.configure(logs.Settings(quiet={quiet}, verbose={verbose}))
    import huggingface_hub.utils
    import transformers
    from loguru import logger
    from tqdm import tqdm

    seen = {{
        "hf_progress_bars": not huggingface_hub.utils.are_progress_bars_disabled(),
        "transformers": transformers.logging.get_verbosity(),
    }}
    logger.debug("loguru-debug")
    logger.warning("loguru-warning")
    logging.getLogger("some.library").info("library-info")
    transformers.logging.get_logger("transformers").warning("transformers-warning")
    warnings.warn("python-warning")
    for _ in tqdm(range(3), desc="a-library-bar"):
        pass
    print("a-plain-print", file=sys.stderr)
print(json.dumps(seen))
"""


@pytest.mark.parametrize(
    ("quiet", "verbose", "shown", "hidden"),
    [
        (True, 0, [], ["loguru", "library-info", "transformers-warning", "python-warning", "a-library-bar", "print"]),
        (False, 0, ["loguru-warning", "UserWarning: python-warning", "a-library-bar", "a-plain-print"],
         ["loguru-debug", "library-info", "transformers-warning"]),  # transformers' warnings: for -v
        (False, 1, ["loguru-warning", "some.library: info: library-info", "transformers-warning", "a-plain-print"],
         ["loguru-debug"]),
    ],
)  # fmt: skip
def test_quiet_and_verbose_reach_the_libraries(quiet: bool, verbose: int, shown: list[str], hidden: list[str]) -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("loguru")
    program = LIBRARIES.format(quiet=quiet, verbose=verbose)
    result = subprocess.run([sys.executable, "-c", program], env=SUBPROCESS_ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["hf_progress_bars"] is not quiet
    assert seen["transformers"] == {True: 40, False: 40 if not verbose else 20}[quiet]
    if quiet:
        assert result.stderr == ""
    for text in shown:
        assert text in result.stderr, (text, result.stderr)
    for text in hidden:
        assert text not in result.stderr, (text, result.stderr)


@pytest.mark.slow
def test_quiet_release_writes_nothing_on_stderr(tmp_path: Path) -> None:
    """The example release (quantized on the CPU: modelopt, transformers, compressed-tensors, huggingface_hub all
    at work) with -q: the summary on stdout, not one byte on stderr."""
    pytest.importorskip("modelopt")
    from tests.conftest import example_copy

    folder = example_copy(tmp_path)
    result = hubkit_process("-q", "release", str(folder / "hubkit.toml"))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("## hubkit release: PASSED")
    assert (folder / "Kimi-Tiny-NVFP4" / "README.md").is_file()


# ------------------------------------------------------------------------------------- version, completion, choices


def test_version(hubkit) -> None:
    from hubkit import __version__

    result = hubkit("--version")
    assert result.code == 0 and result.out == f"hubkit, version {__version__}\n"


@pytest.mark.parametrize(
    ("shell", "marker"), [("bash", "complete -o nosort -F"), ("zsh", "compdef"), ("fish", "complete")]
)
def test_shell_completion_scripts(shell: str, marker: str) -> None:
    result = hubkit_process(env={**SUBPROCESS_ENV, "_HUBKIT_COMPLETE": f"{shell}_source"})
    assert result.returncode == 0 and marker in result.stdout and "_HUBKIT_COMPLETE" in result.stdout


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("hubkit validate --profile ", {"kimi-k2-nvfp4", "modelopt-mixed-nvfp4", "modelopt-nvfp4"}),
        ("hubkit quantize --profile ", {"kimi-k2-nvfp4", "modelopt-mixed-nvfp4", "modelopt-nvfp4"}),
        ("hubkit release --from ", {"quantize", "card", "validate", "push", "tag", "smoke"}),
    ],
)
def test_stages_and_profiles_complete_as_choices(words: str, expected: set[str]) -> None:
    env = {
        **SUBPROCESS_ENV,
        "_HUBKIT_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split())),
    }
    result = hubkit_process(env=env)
    assert result.returncode == 0, result.stderr
    assert {line.split(",", 1)[1] for line in result.stdout.splitlines()} == expected


def test_an_unknown_profile_or_stage_lists_the_choices(hubkit, tmp_path: Path) -> None:
    profile = hubkit("validate", tmp_path, "--profile", "kimi")
    assert (
        profile.code == 2
        and "'kimi' is not one of 'kimi-k2-nvfp4', 'modelopt-mixed-nvfp4', 'modelopt-nvfp4'" in profile.err
    )
    stage = hubkit("release", tmp_path / "hubkit.toml", "--from", "upload")
    assert stage.code == 2 and "'upload' is not one of 'quantize', 'card'" in stage.err


def _commands(group: click.Group, prefix: str = "hubkit") -> list[tuple[str, click.Command]]:
    found: list[tuple[str, click.Command]] = []
    for name, command in group.commands.items():
        found.append((f"{prefix} {name}", command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix} {name}"))
    return found


def test_every_command_shows_examples_that_parse() -> None:
    """Each command's help ends in an Examples block, and every example is a valid command line for it."""
    from hubkit.cli import cli

    for name, command in _commands(cli):
        epilog = command.epilog or ""
        assert epilog.startswith("\b\nExamples:\n"), f"{name} --help has no Examples block"
        text = epilog.split("Examples:\n", 1)[1].replace("\\\n", " ")
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            words = words[words.index("hubkit") + 1 :]  # after "torchrun ... -m"
            if ">" in words:
                words = words[: words.index(">")]
            target: click.Command = cli
            path = ["hubkit"]
            while isinstance(target, click.Group):
                path.append(words.pop(0))
                target = target.commands[path[-1]]
            assert " ".join(path).startswith(name), f"{name}'s example runs another command: {line}"
            target.make_context(name, words)  # raises on an unknown option, a bad choice or a bad value
