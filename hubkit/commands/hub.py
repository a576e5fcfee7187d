"""``hubkit hub``: the local Hub-compatible server, to rehearse a release or run tests without the network."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import click

from hubkit.commands._options import examples
from hubkit.errors import ExitCode, HubkitError


@click.group(
    "hub",
    epilog=examples(
        "hubkit hub serve",
        "hubkit hub serve ./hub-store --port 8080",
    ),
)
def hub_group() -> None:
    """Run a local Hub-compatible server (what endpoint = "local" starts for a release)."""


@hub_group.command(
    "serve",
    epilog=examples(
        "hubkit hub serve                          # ./.hubkit/local-hub, a free port",
        "hubkit hub serve ./hub-store --port 8080 > hub.env &   # then: set -a; . ./hub.env",
    ),
)
@click.argument("folder", metavar="[DIR]", required=False, type=click.Path(path_type=Path))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="The port to listen on, on 127.0.0.1; 0 picks a free one.",
)
@click.pass_obj
def serve_command(obj: dict[str, object], /, folder: Path | None, port: int) -> int:
    """Serve a local Hub from DIR on 127.0.0.1 until SIGINT or SIGTERM (exit 0).

    DIR (default: .hubkit/local-hub, the store that endpoint = "local" keeps beside a manifest) holds the repos,
    commits and objects: a restarted server serves what it stored before.

    \b
    Prints two lines on stdout, for a shell or a CI step to read:
      HF_ENDPOINT=http://127.0.0.1:PORT
      HF_TOKEN=hf_...      (random for each run; writes need it)
    With both in the environment, huggingface_hub, hubkit push and release use this server.
    """
    from hubkit.hub.server import HubServer
    from hubkit.release.pipeline import LOCAL_STORE

    store = _store_folder(folder or Path(LOCAL_STORE))
    try:
        server = HubServer(store, user="local", port=port)
    except OSError as exc:
        raise HubkitError(
            f"cannot listen on 127.0.0.1:{port}: {exc.strerror or exc}; choose another --port, or --port 0 for a "
            "free one"
        ) from exc
    saved_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with it ignored
    try:
        with server:
            click.echo(f"HF_ENDPOINT={server.endpoint}")
            click.echo(f"HF_TOKEN={server.token}")
            if not obj.get("quiet"):
                click.echo(f"hubkit: serving {store} at {server.endpoint}; stop with Ctrl-C or SIGTERM", err=True)
            while True:
                signal.pause()
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (hubkit.errors.Terminated): the server has stopped
        pass
    finally:
        signal.signal(signal.SIGINT, saved_sigint)
    if not obj.get("quiet"):
        click.echo("hubkit: Hub server stopped", err=True)
    return ExitCode.OK


def _store_folder(folder: Path) -> Path:
    """``folder`` as the server's store: a folder (created when absent) holding a Hub store's files only."""
    from hubkit.records import ensure_folder
    from hubkit.release.pipeline import STORE_ENTRIES

    if folder.is_symlink():
        raise HubkitError(f"{folder} is a symbolic link; name the folder itself")
    if folder.exists() and not folder.is_dir():
        raise HubkitError(f"{folder} is not a folder; name a folder for the Hub's files (created if absent)")
    ensure_folder(folder)
    try:
        others = sorted(set(os.listdir(folder)) - STORE_ENTRIES)
    except OSError as exc:
        raise HubkitError(f"cannot read {folder}: {exc.strerror or exc}; check its permissions") from exc
    if others:
        raise HubkitError(
            f"{folder} holds files that are not a Hub store's ({', '.join(others[:3])}); name a new or empty "
            "folder, or one a hubkit Hub server made"
        )
    return folder
