"""Every local read is bounded, card templates are bounded, and usage errors are exit 2.

A FIFO, ``/dev/zero`` (named directly or through a link) or an oversize file wherever hubkit reads a file a user
names or keeps in a user's folder is one line and exit 2, never a hang or a MemoryError. Hostile card templates
stop within their CPU, memory and output limits. Commands run in a subprocess with a timeout wherever a
regression would hang, so that it fails instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from hubkit.card.check import MAX_CARD_BYTES as MAX_README_BYTES
from hubkit.card.sandbox import MAX_CARD_BYTES, MAX_TEMPLATE_BYTES
from hubkit.cli import cli
from hubkit.errors import HubkitError
from hubkit.manifest import MAX_MANIFEST_BYTES
from tests.conftest import REPO_ROOT, SUBPROCESS_ENV

MANIFEST = REPO_ROOT / "examples" / "tiny-release" / "hubkit.toml"
#: Seconds a refused input may take, process start-up included, on a busy machine.
PROMPTLY = 60


def run_hubkit(
    *args: Any, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``hubkit ARGS`` in a subprocess; a hang fails the test (TimeoutExpired) instead of hanging the suite."""
    return subprocess.run(
        [sys.executable, "-m", "hubkit", *map(str, args)],
        capture_output=True, text=True, timeout=PROMPTLY, cwd=cwd, env=env or SUBPROCESS_ENV,
    )  # fmt: skip


def assert_one_line_exit_2(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    errors = result.stderr.strip().splitlines()
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr[-2000:]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def finishes(work: Callable[[], Any], seconds: float = 10) -> Any:
    """The result of ``work()``, which must end within ``seconds`` (a thread stuck on a FIFO fails the test)."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(("value", work()))
        except BaseException as exc:  # the caller looks at it
            outcome.append(("error", exc))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"still reading after {seconds} s"
    kind, value = outcome[0]
    if kind == "error":
        raise value
    return value


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def zero_link(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def oversize(path: Path, size: int) -> Path:
    """A sparse file of ``size`` bytes: no disk used, but a read of it all would take ``size`` bytes of memory."""
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


# ------------------------------------------------------------------------------------------- manifests


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (fifo, "is a FIFO"),
        (zero_link, "is a device"),
        (lambda p: oversize(p, MAX_MANIFEST_BYTES + 1), f"over hubkit's limit of {MAX_MANIFEST_BYTES:,}"),
    ],
    ids=["fifo", "dev-zero-link", "oversize"],
)
def test_manifest_check_refuses_hostile_manifests(tmp_path: Path, make: Callable[[Path], Path], needle: str) -> None:
    """The CI that ``hubkit init`` writes runs ``manifest check`` on pull requests: the PR controls the file."""
    make(tmp_path / "hubkit.toml")
    result = run_hubkit("manifest", "check", cwd=tmp_path)  # the default ./hubkit.toml
    assert result.returncode == 2, result.stderr
    assert needle in result.stderr and "Traceback" not in result.stderr
    assert "hubkit.toml: 1 problem(s)" in result.stdout


def test_manifest_check_refuses_dev_zero_named_directly() -> None:
    result = run_hubkit("manifest", "check", "/dev/zero")
    assert result.returncode == 2 and "/dev/zero is a device" in result.stderr, result.stderr


@pytest.mark.parametrize("command", [("card", "render", "."), ("release", "--dry-run")], ids=["card", "release"])
def test_other_commands_refuse_a_fifo_manifest(tmp_path: Path, command: tuple[str, ...]) -> None:
    manifest = fifo(tmp_path / "hubkit.toml")
    args = [*command, "--manifest", manifest] if command[0] == "card" else [command[0], manifest, *command[1:]]
    assert_one_line_exit_2(run_hubkit(*args, cwd=tmp_path), "manifest", "is a FIFO")


# ------------------------------------------------------------------------------------------- card sections


def _project_with_section(tmp_path: Path, make: Callable[[Path], Path]) -> Path:
    manifest = tmp_path / "hubkit.toml"
    text = MANIFEST.read_text()
    manifest.write_text(text.replace("[card]\n", '[card]\nsections = ["extra.md"]\n', 1))
    assert "extra.md" in manifest.read_text()
    make(tmp_path / "extra.md")
    return manifest


@pytest.mark.parametrize(
    ("make", "needle"),
    [(fifo, "is a FIFO"), (zero_link, "is a device"), (lambda p: oversize(p, 2**20 + 1), "over hubkit's limit")],
    ids=["fifo", "dev-zero-link", "oversize"],
)
def test_card_sections_are_bounded_regular_files(
    tiny: Path, tmp_path: Path, make: Callable[[Path], Path], needle: str
) -> None:
    manifest = _project_with_section(tmp_path, make)
    assert_one_line_exit_2(run_hubkit("card", "render", tiny, "--manifest", manifest), "card section", needle)


# ------------------------------------------------------------------------------------------- card templates


def render_with(tiny: Path, tmp_path: Path, template: str) -> subprocess.CompletedProcess[str]:
    folder = tmp_path / "template"
    folder.mkdir(exist_ok=True)
    (folder / "card.md.j2").write_text(template)
    output = tmp_path / "README.md"
    result = run_hubkit("card", "render", tiny, "--manifest", MANIFEST, "--template", folder, "-o", output)
    assert not output.exists()
    return result


@pytest.mark.parametrize(
    ("template", "needle"),
    [
        ('{{ "x" * 10**10 }}', "memory"),
        ('{{ "x" * 1000000 * 2000 }}', "memory"),
        ('{{ "%*d"|format(2000000000, 1) }}', "memory"),
        ('{% for i in range(100000) %}{{ "x" * 1000 }}{% endfor %}', f"more than hubkit's limit of {MAX_CARD_BYTES:,}"),
        ("{% for i in range(100000) %}{% for j in range(100) %}{{ i }}{% endfor %}{% endfor %}", "limit of"),
        ("{{ range(10**9) }}", "Range too big"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "nested calls too deeply"),
        ("# {{ title }}\n\n{{ 1 / 0 }}\n", "card.md.j2:3: card template error: ZeroDivisionError"),
    ],
    ids=[
        "str-times-1e10",
        "str-growth",
        "format-width",
        "output-in-loop",
        "output-nested",
        "huge-range",
        "recursion",
        "zero-division",
    ],
)
def test_hostile_templates_are_exit_2(tiny: Path, tmp_path: Path, template: str, needle: str) -> None:
    assert_one_line_exit_2(render_with(tiny, tmp_path, template), needle)


@pytest.mark.slow
@pytest.mark.parametrize(
    "template",
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% for k in range(100000) %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}{{ m(60) }}",
        '{% set ns = namespace(s="x") %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}'
        "{{ ns.s|length }}",
        "{% set n = 9 %}{{ n ** (n ** n) }}",  # one C-level computation: no Python signal handler runs
    ],
    ids=["nested-ranges", "macro-fan-out", "doubling-concatenation", "uninterruptible-power"],
)
def test_templates_that_never_end_stop_at_the_limits(tiny: Path, tmp_path: Path, template: str) -> None:
    """Bounded by CPU time (3 s) or memory (512 MiB), whichever comes first."""
    result = render_with(tiny, tmp_path, template)
    assert_one_line_exit_2(result, "card template")
    assert "CPU time" in result.stderr or "memory" in result.stderr


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (fifo, "is a FIFO"),
        (zero_link, "is a device"),
        (lambda p: oversize(p, MAX_TEMPLATE_BYTES + 1), "over hubkit's limit"),
    ],
    ids=["fifo", "dev-zero-link", "oversize"],
)
def test_template_files_are_bounded_regular_files(
    tiny: Path, tmp_path: Path, make: Callable[[Path], Path], needle: str
) -> None:
    folder = tmp_path / "template"
    folder.mkdir()
    make(folder / "card.md.j2")
    result = run_hubkit("card", "render", tiny, "--manifest", MANIFEST, "--template", folder)
    assert_one_line_exit_2(result, "card template", needle)


def test_an_included_template_is_bounded_too(tiny: Path, tmp_path: Path) -> None:
    folder = tmp_path / "template"
    folder.mkdir()
    (folder / "card.md.j2").write_text('# {{ title }}\n{% include "part.md.j2" %}\n')
    fifo(folder / "part.md.j2")
    result = run_hubkit("card", "render", tiny, "--manifest", MANIFEST, "--template", folder)
    assert_one_line_exit_2(result, "part.md.j2 is a FIFO")


# ------------------------------------------------------------------------------------------- other inputs


def test_card_check_refuses_an_oversize_card(tmp_path: Path) -> None:
    readme = oversize(tmp_path / "README.md", MAX_README_BYTES + 1)
    assert_one_line_exit_2(run_hubkit("card", "check", readme), "model card", "over hubkit's limit")


def test_a_fifo_token_file_is_refused_before_the_client_reads_it(tiny: Path, tmp_path: Path) -> None:
    home = tmp_path / "hf-home"
    home.mkdir()
    fifo(home / "token")
    env = {
        k: v for k, v in SUBPROCESS_ENV.items() if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE")
    }
    env.update(HF_HOME=str(home), HF_ENDPOINT="http://127.0.0.1:9")
    result = run_hubkit("push", tiny, "--repo", "org/name", "--dry-run", "--no-validate", env=env)
    assert_one_line_exit_2(result, "token file", "is a FIFO")


@pytest.mark.parametrize("suffix", [".jsonl", ".txt"])
def test_calibration_files_are_regular_and_streamed_with_a_record_limit(tmp_path: Path, suffix: str) -> None:
    from hubkit.quantize.calibration import MAX_RECORD_BYTES, CalibrationSource

    with pytest.raises(HubkitError, match="is a FIFO"):
        finishes(lambda: CalibrationSource.parse(str(fifo(tmp_path / f"calib{suffix}"))))
    with pytest.raises(HubkitError, match="is a device"):
        finishes(lambda: CalibrationSource.parse(str(zero_link(tmp_path / f"zero{suffix}"))))
    huge = oversize(tmp_path / f"huge{suffix}", MAX_RECORD_BYTES + 10)  # one record of zero bytes, no newline
    with pytest.raises(HubkitError, match="limit of"):
        finishes(lambda: CalibrationSource.parse(str(huge)).records(4))
    small = tmp_path / f"small{suffix}"
    small.write_text('{"text": "a"}\n{"text": "b"}\n' if suffix == ".jsonl" else "a\n\nb\n\n\nc\n")
    assert CalibrationSource.parse(str(small)).records(2) == ["a", "b"]


def test_records_in_a_users_folder_are_never_waited_on(tmp_path: Path) -> None:
    """hubkit's own records (state, hash cache, markers) are read back from folders a user controls."""
    from hubkit.checkpoint.source import LocalSource
    from hubkit.hub.local import HashCache
    from hubkit.records import made_by_hubkit, read_state

    (tmp_path / ".hubkit").mkdir()
    fifo(tmp_path / ".hubkit" / "state.json")
    fifo(tmp_path / ".hubkit" / "hashes.json")
    fifo(tmp_path / ".hubkit" / "made-by.json")
    # Each is read without waiting: it counts as absent, or it is refused with one line (never followed).
    for read, absent in ((lambda: read_state(tmp_path), None), (lambda: HashCache(tmp_path).entries, {}),
                         (lambda: made_by_hubkit(tmp_path), False)):  # fmt: skip
        try:
            assert finishes(read) == absent
        except HubkitError as refused:
            assert "FIFO" in str(refused)
    with pytest.raises(OSError, match="FIFO"):
        finishes(lambda: LocalSource(tmp_path).read_range(".hubkit/state.json", 0, 10))


@pytest.mark.slow
def test_a_fifo_card_section_fails_the_preflight(tmp_path: Path) -> None:
    manifest = _project_with_section(tmp_path, fifo)
    result = run_hubkit("release", manifest, "--dry-run", "--until", "card", "--format", "json")
    assert result.returncode == 2, result.stderr
    assert "card section" in result.stdout + result.stderr and "is a FIFO" in result.stdout + result.stderr


# ------------------------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("quantize", "--plan"), "--base"),
        (("quantize", "--out", "OUT"), "--base"),
        (("quantize", "--plan", "--gpus", "cpu"), "--base"),
        (("push", "."), "--repo"),
        (("push", ".", "--dry-run"), "--repo"),
    ],
)
def test_missing_required_options_are_usage_errors(hubkit, args: tuple[str, ...], option: str) -> None:
    result = hubkit(*args)
    assert result.code == 2, result
    assert f"Missing option '{option}'" in result.err and "internal error" not in result.err


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*prefix, name))
        else:
            found.append(((*prefix, name), command))
    return found


def test_every_required_option_is_enforced_by_the_command_line() -> None:
    """The class: an option Click calls required must have no default, or Click takes the default as given."""
    required = [
        (path, param.name)
        for path, command in _commands(cli)
        for param in command.params
        if isinstance(param, click.Option) and param.required
    ]
    assert required, "no required options found: the test looks in the wrong place"
    for path, command in _commands(cli):
        for param in command.params:
            if isinstance(param, click.Option) and param.required:
                context = click.Context(command)
                assert param.value_is_missing(param.get_default(context)), (path, param.name)
