"""``hubkit init``: a commented manifest and the two workflows for a new model."""

from __future__ import annotations

import re
from pathlib import Path

import click

from hubkit.errors import ExitCode, HubkitError

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


@click.command("init")
@click.argument("folder", type=click.Path(path_type=Path), default=".")
@click.option("--repo", help="Hub repo to publish, ORG/NAME (a marked placeholder when absent).")
@click.option("--base", help="Base model's Hub repo, ORG/NAME (a marked placeholder when absent).")
@click.option(
    "--action",
    metavar="OWNER/REPO@SHA",
    help="hubkit's GitHub Action for the workflows, pinned by commit SHA (a marked placeholder when absent).",
)
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init_command(folder: Path, repo: str | None, base: str | None, action: str | None, force: bool) -> int:
    """Write FOLDER/hubkit.toml and the CI and release workflows for a new model."""
    if action is not None and not ACTION_REF.match(action):
        raise HubkitError(f"--action {action!r} is not OWNER/REPO@SHA with a full 40-character commit SHA; pin it so")
    import jinja2

    from hubkit.resources import data_dir

    templates = data_dir("templates") / "init"
    targets = {folder / name: templates / source for name, source in FILES.items()}
    existing = [str(t) for t in targets if t.exists()]
    if existing and not force:
        raise HubkitError(f"{', '.join(existing)} already exist; pass --force to overwrite")
    context = {
        "repo": repo or PLACEHOLDER_REPO,
        "repo_placeholder": repo is None,
        "base": base or PLACEHOLDER_BASE,
        "base_placeholder": base is None,
        "out": (repo or PLACEHOLDER_REPO).split("/", 1)[1],
    }
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    for target, source in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        text = source.read_text()
        if source.suffix == ".j2":
            text = environment.from_string(text).render(context)
        target.write_text(text.replace(ACTION_TOKEN, action or PLACEHOLDER_ACTION))
        click.echo(f"wrote {target}")
    if repo is None or base is None or action is None:
        click.echo(
            "fill in the lines marked CHANGE-ME (hubkit.toml, .github/workflows/), then: hubkit release --dry-run"
        )
    return ExitCode.OK
