"""The ``hubkit`` command group: global options and the mapping of errors to exit codes, nothing else."""

from __future__ import annotations

import logging
import sys
import traceback
from typing import NoReturn

import click

from hubkit import __version__
from hubkit.commands.card import card_group
from hubkit.commands.diff import diff_command
from hubkit.commands.init import init_command
from hubkit.commands.manifest import manifest_group
from hubkit.commands.push import push_command
from hubkit.commands.quantize import quantize_command
from hubkit.commands.release import release_command
from hubkit.commands.validate import validate_command
from hubkit.errors import ExitCode, HubkitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="hubkit")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (repeat for more).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr; no progress bars.")
@click.option("--debug", is_flag=True, help="Show the traceback of internal errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, debug: bool) -> None:
    """Take a quantized checkpoint to a correct, documented, verified Hugging Face Hub repo."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="hubkit: %(message)s", stream=sys.stderr)
    ctx.ensure_object(dict).update({"quiet": quiet, "verbose": verbose, "debug": debug})


cli.add_command(card_group)
cli.add_command(diff_command)
cli.add_command(init_command)
cli.add_command(manifest_group)
cli.add_command(push_command)
cli.add_command(quantize_command)
cli.add_command(release_command)
cli.add_command(validate_command)


def main(argv: list[str] | None = None) -> NoReturn:
    """Entry point: run the CLI and exit with hubkit's exit codes (0, 1, 2, 3, 130)."""
    args = sys.argv[1:] if argv is None else argv
    try:
        result = cli.main(args=args, prog_name="hubkit", standalone_mode=False, obj={})
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = ExitCode.USER_ERROR
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("hubkit: interrupted", err=True)
        code = ExitCode.INTERRUPTED
    except HubkitError as exc:
        click.echo(f"hubkit: error: {exc}", err=True)
        code = exc.exit_code
    except BrokenPipeError:
        code = ExitCode.OK
    except Exception as exc:
        if "--debug" in args:
            traceback.print_exc()
        click.echo(
            f"hubkit: internal error: {type(exc).__name__}: {exc} (a bug in hubkit; rerun with --debug for the traceback)",
            err=True,
        )
        code = ExitCode.INTERNAL_ERROR
    sys.exit(code)
