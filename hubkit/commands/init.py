"""``hubkit init``: a commented manifest and the two workflows for a new model."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import click

from hubkit.commands._options import examples
from hubkit.errors import ExitCode, HubkitError
from hubkit.reads import read_regular
from hubkit.records import check_replaceable_file, replacing
from hubkit.sizes import MiB

#: The largest existing file --force reads to compare and back up (each file init writes is a few KiB).
MAX_EDITED_BYTES = 1 * MiB
PLACEHOLDER_REPO = "CHANGE-ME/Model-NVFP4"
PLACEHOLDER_BASE = "CHANGE-ME/Model"
FILES = {
    "hubkit.toml": "hubkit.toml.j2",
    ".github/workflows/ci.yml": "ci.yml",
    ".github/workflows/release.yml": "release.yml",
    ".github/actionlint.yaml": "actionlint.yaml",
}
# the workflows install hubkit with its GitHub Action (action.yml), referenced by a full commit SHA
ACTION_TOKEN = "HUBKIT_ACTION_REF"
ACTION_REF = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(/[A-Za-z0-9_./-]+)?@[0-9a-f]{40}$")
PLACEHOLDER_ACTION = (
    "CHANGE-ME/hubkit@0000000000000000000000000000000000000000  # CHANGE-ME: hubkit's action, OWNER/REPO@COMMIT-SHA"
)


@click.command(
    "init",
    epilog=examples(
        "hubkit init --repo my-org/Kimi-K2.6-NVFP4 --base moonshotai/Kimi-K2.6",
        "hubkit init ./release --repo my-org/M-NVFP4 --base org/M --action OWNER/hubkit@COMMIT_SHA",
        "hubkit init --repo my-org/M-NVFP4 --base org/M --export out   # release an hf_ptq.py export as it is",
        "hubkit init --force                  # rewrite; an edited manifest is kept as hubkit.toml.bak",
    ),
)
@click.argument("folder", type=click.Path(path_type=Path), default=".")
@click.option("--repo", help="Hub repo to publish, ORG/NAME (a marked placeholder when absent).")
@click.option("--base", help="Base model's Hub repo, ORG/NAME (a marked placeholder when absent).")
@click.option(
    "--action",
    metavar="OWNER/REPO@SHA",
    help="hubkit's GitHub Action for the workflows, pinned by commit SHA (a marked placeholder when absent).",
)
@click.option(
    "--export",
    metavar="PATH",
    help="Release an export made elsewhere (its folder, relative to FOLDER) as it is: [release] export, no [quantize].",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist (an edited one is kept as FILE.bak).")
def init_command(
    folder: Path, repo: str | None, base: str | None, action: str | None, export: str | None, force: bool
) -> int:
    """Write FOLDER/hubkit.toml and the CI and release workflows for a new model."""
    if action is not None and not ACTION_REF.match(action):
        raise HubkitError(f"--action {action!r} is not OWNER/REPO@SHA with a full 40-character commit SHA; pin it so")
    from hubkit.hub_ids import repo_id_problem

    for flag, value in (("--repo", repo), ("--base", base)):
        problem = repo_id_problem(value) if value is not None else None
        if problem:
            raise HubkitError(f"{flag}: {problem}")
    if folder.exists() and not folder.is_dir():
        raise HubkitError(f"{folder} is a file; name a folder for the new model (created when missing)")
    if export is not None and not export.strip():
        raise HubkitError("--export: name the export's folder, relative to FOLDER")
    texts = render_files(folder, repo, base, action, export)
    existing = [target for target in texts if target.exists() or target.is_symlink()]
    if existing and not force:
        raise HubkitError(f"{', '.join(map(str, existing))} already exist; pass --force to overwrite")
    for target in texts:
        check_target(folder, target)
    kept = write_all(texts)
    for target in texts:
        click.echo(f"wrote {target}" + (f" (your earlier version is kept as {kept[target]})" if target in kept else ""))
    if repo is None or base is None or action is None:
        click.echo(
            "fill in the lines marked CHANGE-ME (hubkit.toml, .github/workflows/), then run: hubkit manifest check"
        )
    return ExitCode.OK


def render_files(
    folder: Path, repo: str | None, base: str | None, action: str | None = None, export: str | None = None
) -> dict[Path, str]:
    """Each file ``init`` writes, with its text.

    The manifest stays a Jinja template because its comments are written for people and belong beside the
    keys; every value enters it through the ``toml`` filter (tomlkit's TOML serialisation), never as raw
    text, and the result is parsed back to prove each value reads as given.
    """
    import tomllib

    import jinja2.sandbox
    import tomlkit

    from hubkit.resources import data_dir

    templates = data_dir("templates") / "init"
    context = {
        "repo": repo or PLACEHOLDER_REPO,
        "repo_placeholder": repo is None,
        "base": base or PLACEHOLDER_BASE,
        "base_placeholder": base is None,
        "out": (repo or PLACEHOLDER_REPO).split("/", 1)[1],
        "export": export,
    }
    environment = jinja2.sandbox.SandboxedEnvironment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    environment.filters["toml"] = lambda value: tomlkit.item(value).as_string()
    texts = {}
    for name, source in FILES.items():
        text = (templates / source).read_text(encoding="utf-8")
        if source.endswith(".j2"):
            text = environment.from_string(text).render(context)
        texts[folder / name] = text.replace(ACTION_TOKEN, action or PLACEHOLDER_ACTION)
    manifest = tomllib.loads(texts[folder / "hubkit.toml"])
    if (manifest["release"]["repo"], manifest["base"]["repo"], manifest["release"].get("export")) != (
        context["repo"], context["base"], export,
    ):  # fmt: skip
        raise RuntimeError("the manifest template does not round-trip the repo ids")
    return texts


def check_target(folder: Path, target: Path) -> None:
    """Refuse (exit 2) a target that is not absent-or-regular, or a folder on its way under ``folder`` that is a
    link or not a folder (``.github`` being a file, a linked ``.github/workflows``)."""
    for parent in reversed(target.relative_to(folder).parents[:-1]):
        path = folder / parent
        if path.is_symlink() or (path.exists() and not path.is_dir()):
            kind = "a symbolic link" if path.is_symlink() else "not a folder"
            raise HubkitError(f"{path} is {kind}; move it away, then run hubkit init again")
    check_replaceable_file(target)


def write_all(texts: dict[Path, str]) -> dict[Path, Path]:
    """Write every file (and a ``NAME.bak`` of each edited one) or none: all land together once all are written.
    Returns the backups made."""
    kept: dict[Path, Path] = {}
    made = {folder for target in texts for folder in target.parents if not folder.exists()}
    try:
        with contextlib.ExitStack() as stack:
            for target, text in texts.items():
                backup = backup_path(target, text)
                stream = stack.enter_context(replacing(target))  # entered first, so renamed after its backup
                if backup is not None:
                    stack.enter_context(replacing(backup)).write(existing(target))
                    kept[target] = backup
                stream.write(text.encode("utf-8"))
    except BaseException:
        for folder in sorted(made, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                folder.rmdir()  # the folders this run made, left empty
        raise
    return kept


def existing(target: Path) -> bytes:
    """The bytes of a file init would replace, read within bounds."""
    return read_regular(target, limit=MAX_EDITED_BYTES, what="existing file")


def backup_path(target: Path, text: str) -> Path | None:
    """A new ``NAME.bak`` (``NAME.1.bak``, ...) for ``target`` when it exists and differs from ``text``."""
    if not target.is_file() or existing(target) == text.encode("utf-8"):
        return None
    for number in range(1000):
        backup = target.with_name(f"{target.name}.bak" if number == 0 else f"{target.name}.{number}.bak")
        if not backup.exists() and not backup.is_symlink():  # never overwrites: earlier backups stay
            return backup
    raise HubkitError(f"{target}: too many backups beside it; remove the old .bak files")
