"""What a release may touch: hubkit's record of the folders it made, and the lock on the output folder.

hubkit deletes or overwrites a folder only when hubkit's own record inside it, ``.hubkit/state.json`` (kept by
``hubkit.records``), says hubkit made it; any other folder is refused with exit 2 before any work. An export made
elsewhere (``[release] export``) is released where it is: hubkit writes its records into it, and those records
say it was made elsewhere, so it never becomes replaceable. The lock keeps two releases off the same output
folder: a second run exits 2 naming the pid that holds it (``hubkit.locks``, shared with quantize's ``--out``).
"""

from __future__ import annotations

from pathlib import Path

from hubkit.errors import HubkitError
from hubkit.records import STATE, read_state


def has_files(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError as exc:
        raise HubkitError(f"cannot read {folder}: {exc.strerror or exc}; check its permissions") from exc


#: The value of ``state.json``'s "export" in an export made elsewhere: hubkit released it, and never replaces it.
MADE_ELSEWHERE = "made elsewhere"


def check_replaceable(folder: Path, role: str) -> None:
    """Refuse (exit 2) when ``folder`` exists and is not empty and not provably hubkit's."""
    if not folder.exists() and not folder.is_symlink():
        return
    if not folder.is_dir():
        raise HubkitError(f"{role} {folder} is a file, not a folder; name a folder that hubkit may create")
    if not has_files(folder):
        return
    state = read_state(folder)
    if state is None:
        raise HubkitError(
            f"{role} {folder} holds files that hubkit did not make (it has no hubkit record {STATE}); "
            "hubkit never deletes or overwrites them: name a new or empty folder, or move those files away"
        )
    if state.get("export") == MADE_ELSEWHERE:
        raise HubkitError(
            f"{role} {folder} is an export made elsewhere that hubkit released ([release] export); hubkit never "
            "deletes or overwrites it: name a new or empty folder"
        )


def check_export(folder: Path, role: str) -> None:
    """Refuse (exit 2) an export made elsewhere that is not there to release: a missing path, or a file."""
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise HubkitError(f"{role} {folder} {what}; name the folder that holds the export to release")
    if not has_files(folder):
        raise HubkitError(f"{role} {folder} is empty; name the folder that holds the export to release")


def check_outside(
    folder: Path, inputs: dict[str, Path], role: str, why: str = "hubkit replaces that folder on each run"
) -> None:
    """Refuse (exit 2) an output folder that holds one of the release's inputs, or lies inside one."""
    for name, path in inputs.items():
        if path == folder or folder in path.parents:
            raise HubkitError(
                f"{role} {folder} holds the {name} {path}, and {why}; name a folder of its own for the export"
            )
        if path in folder.parents:
            raise HubkitError(f"{role} {folder} lies inside the {name} {path}; name a folder outside it")
