"""The ``hubkit`` command group: global options and the mapping of errors to exit codes, nothing else."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn, TextIO

import click

from hubkit import __version__, logs
from hubkit.commands.card import card_group
from hubkit.commands.diff import diff_command
from hubkit.commands.hub import hub_group
from hubkit.commands.init import init_command
from hubkit.commands.manifest import manifest_group
from hubkit.commands.push import push_command
from hubkit.commands.quantize import quantize_command
from hubkit.commands.release import release_command
from hubkit.commands.validate import validate_command
from hubkit.errors import ExitCode, HubkitError, Terminated, outside_fault, redact

VERBOSITY = "hubkit.verbosity"


def _merge_verbosity(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """``-q``/``-v``/``--debug`` given before or after a command's name add up to one setting."""
    settings: logs.Settings = ctx.meta.setdefault(VERBOSITY, logs.current())
    if param.name == "verbose":
        settings.verbose += value
    elif param.name == "quiet":
        settings.quiet = settings.quiet or value
    else:
        settings.debug = settings.debug or value
    logs.configure(settings)
    ctx.ensure_object(dict).update({"quiet": settings.quiet, "verbose": settings.verbose, "debug": settings.debug})


def verbosity_options() -> list[click.Option]:
    """The options every hubkit command takes, before or after its name."""
    return [
        click.Option(["-v", "--verbose"], count=True, expose_value=False, callback=_merge_verbosity,
                     help="More log output on stderr, hubkit's and its libraries' (-vv: debug)."),
        click.Option(["-q", "--quiet"], is_flag=True, expose_value=False, callback=_merge_verbosity,
                     help="Only errors on stderr: no progress bars or heartbeat lines, no library logs or warnings."),
        click.Option(["--debug"], is_flag=True, expose_value=False, callback=_merge_verbosity,
                     help="Show the traceback of internal errors."),
    ]  # fmt: skip


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="hubkit")
def cli() -> None:
    """Take a quantized checkpoint to a correct, documented, verified Hugging Face Hub repo."""


cli.add_command(card_group)
cli.add_command(diff_command)
cli.add_command(hub_group)
cli.add_command(init_command)
cli.add_command(manifest_group)
cli.add_command(push_command)
cli.add_command(quantize_command)
cli.add_command(release_command)
cli.add_command(validate_command)


def _add_verbosity_options(command: click.Command) -> None:
    command.params.extend(verbosity_options())
    if isinstance(command, click.Group):
        for subcommand in command.commands.values():
            _add_verbosity_options(subcommand)


_add_verbosity_options(cli)


#: Exit codes for the two ways the environment ends a run, as a shell reports a process killed by the signal.
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE  # 141: stdout's reader went away (``hubkit ... | head``)
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class StdoutUnwritable(Exception):
    """Standard output cannot take hubkit's output: closed, full, or its reader went away.

    Not an OSError, so that no command's ``except OSError`` mistakes it for a problem with its own files.
    """

    def __init__(self, error: OSError) -> None:
        super().__init__(error.strerror or str(error))
        self.error = error


class _GuardedStdout:
    """``sys.stdout`` while a command runs: a failed write raises StdoutUnwritable, everything else passes on."""

    encoding = "utf-8"
    errors = "strict"

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        if self._stream is None:  # the process was started with stdout closed (``>&-``)
            raise StdoutUnwritable(OSError(errno.EBADF, "standard output is closed"))
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise StdoutUnwritable(exc) from exc

    def flush(self) -> None:
        if self._stream is not None:
            try:
                self._stream.flush()
            except OSError as exc:
                raise StdoutUnwritable(exc) from exc

    def __getattr__(self, name: str) -> Any:
        if self._stream is None:
            raise AttributeError(name)
        return getattr(self._stream, name)


@contextlib.contextmanager
def _guarded_streams() -> Iterator[None]:
    """stdout write errors become StdoutUnwritable; SIGTERM becomes Terminated (once: cleanup may finish)."""
    saved_stdout = sys.stdout
    sys.stdout = _GuardedStdout(saved_stdout)
    terminating = False

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        nonlocal terminating
        if not terminating:
            terminating = True
            raise Terminated

    try:
        saved_handler: Any = signal.signal(signal.SIGTERM, on_sigterm)
    except ValueError:  # not the main thread (hubkit called from a library's worker thread)
        saved_handler = None
    try:
        yield
    finally:
        sys.stdout = saved_stdout
        if saved_handler is not None:
            signal.signal(signal.SIGTERM, saved_handler)


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what could not be written stays quiet."""
    with contextlib.suppress(Exception):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and exit with hubkit's exit codes (0, 1, 2, 3, 130; 141 and 143, see README)."""
    args = sys.argv[1:] if argv is None else argv
    obj: dict[str, Any] = {}
    try:
        with _guarded_streams(), logs.session():
            result = cli.main(args=args, prog_name="hubkit", standalone_mode=False, obj=obj)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USER_ERROR
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        if isinstance(exc, Terminated) or isinstance(exc.__cause__, Terminated):  # Click re-raises it as Abort
            click.echo("hubkit: terminated (SIGTERM)", err=True)
            code = EXIT_TERMINATED
        else:
            click.echo("hubkit: interrupted", err=True)
            code = ExitCode.INTERRUPTED
    except HubkitError as exc:
        click.echo(redact(f"hubkit: error: {exc}"), err=True)
        code = exc.exit_code
    except StdoutUnwritable as exc:
        _discard_stdout()
        if exc.error.errno == errno.EPIPE:  # the reader has all it wanted: quiet, as git and coreutils are
            code = EXIT_BROKEN_PIPE
        else:
            click.echo(f"hubkit: error: cannot write to standard output ({exc}); redirect it to a file", err=True)
            code = ExitCode.USER_ERROR
    except Exception as exc:
        fault = outside_fault(exc)
        if fault is not None:  # a full disk or a read-only folder: the environment's fault, not a bug
            click.echo(redact(f"hubkit: error: {fault}"), err=True)
            code = fault.exit_code
        else:
            if obj.get("debug") or "--debug" in args:
                click.echo(redact(traceback.format_exc()).rstrip(), err=True)
            click.echo(
                redact(f"hubkit: internal error: {type(exc).__name__}: {exc}")
                + " (a bug in hubkit; rerun with --debug for the traceback)",
                err=True,
            )
            code = ExitCode.INTERNAL_ERROR
    sys.exit(code)
