"""Locate the data folders (``templates/``, ``checks/``) in an installed wheel or in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` shipped with hubkit.

    A wheel carries it as ``hubkit/_data/<name>``; a checkout (or an editable install) has it at the
    repository root beside the package.
    """
    for candidate in (_PACKAGE_DIR / "_data" / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"hubkit's '{name}' folder is missing from this installation; reinstall hubkit")


def profile_names() -> list[str]:
    """The names of the profiles in ``checks/`` (read from the file names alone: cheap enough for start-up)."""
    return sorted(path.stem for path in data_dir("checks").glob("*.toml"))
