"""``hubkit init``: a commented manifest and the two workflows for a new model."""

from __future__ import annotations

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


@click.command("init")
@click.argument("folder", type=click.Path(path_type=Path), default=".")
@click.option("--repo", help="Hub repo to publish, ORG/NAME (a marked placeholder when absent).")
@click.option("--base", help="Base model's Hub repo, ORG/NAME (a marked placeholder when absent).")
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
def init_command(folder: Path, repo: str | None, base: str | None, force: bool) -> int:
    """Write FOLDER/hubkit.toml and the CI and release workflows for a new model."""
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
        target.write_text(environment.from_string(text).render(context) if source.suffix == ".j2" else text)
        click.echo(f"wrote {target}")
    if repo is None or base is None:
        click.echo("fill in the lines marked CHANGE-ME in hubkit.toml, then run: hubkit release --dry-run")
    return ExitCode.OK
