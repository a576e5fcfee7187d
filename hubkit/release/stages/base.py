"""What a release stage is: a name, the fingerprint of its inputs, a plan line for a dry run, and a run."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hubkit.reads import read_bounded

if TYPE_CHECKING:
    from hubkit.manifest import Manifest
    from hubkit.release.pipeline import Release


@dataclass
class StageResult:
    name: str
    status: str  # "ran" | "skipped" | "unchanged" | "would run" | "failed"
    seconds: float = 0.0
    detail: str = ""
    outputs: dict[str, Any] = field(default_factory=dict)


class Stage(ABC):
    """One stage of a release run. ``Release`` runs it when its fingerprint differs from the one it recorded at
    its last run (or is None), and gives it the manifest, OUT and what the earlier stages recorded."""

    name: ClassVar[str]

    def __init__(self, release: Release) -> None:
        self.release = release

    @property
    def manifest(self) -> Manifest:
        return self.release.manifest

    @property
    def out(self) -> Path:
        return self.release.out

    @abstractmethod
    def fingerprint(self) -> str | None:
        """The fingerprint of the stage's inputs; None: it runs every time it is selected."""

    @abstractmethod
    def plan(self) -> StageResult:
        """What a run would do, for ``--dry-run``: changes nothing."""

    @abstractmethod
    def run(self) -> StageResult:
        """Do the stage's work: "ran", "skipped" or "failed" (an error raised is recorded as "failed")."""


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_fingerprint(folder: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of every file hubkit would publish: cheap, and changes with any edit."""
    if not folder.is_dir():
        return []
    listed = []
    for item in sorted(folder.rglob("*")):
        relative = item.relative_to(folder).as_posix()
        if item.is_file() and not relative.startswith(".hubkit/"):
            stat = item.stat()
            listed.append((relative, stat.st_size, stat.st_mtime_ns))
    return listed


def card_text(readme: Path) -> str | None:
    """The export's README.md as text; None when there is none, or none that can be read within bounds."""
    from hubkit.card.check import MAX_CARD_BYTES

    try:
        return read_bounded(readme, limit=MAX_CARD_BYTES).decode("utf-8", errors="replace")
    except OSError:
        return None
