"""The stages of ``hubkit release``, listed once, in the order they run; one module each (see ``base.Stage``).

A new stage is a module here with a :class:`Stage` subclass, and its entry in :data:`STAGES`.
"""

from __future__ import annotations

from hubkit.release.options import STAGES as OPTION_CHOICES
from hubkit.release.stages.base import Stage, StageResult
from hubkit.release.stages.card import Card
from hubkit.release.stages.push import Push
from hubkit.release.stages.quantize import Quantize
from hubkit.release.stages.smoke import Smoke
from hubkit.release.stages.tag import Tag
from hubkit.release.stages.validate import Validate

STAGES: tuple[type[Stage], ...] = (Quantize, Card, Validate, Push, Tag, Smoke)
#: The stage names, in order (``--from``, ``--until``, ``--skip`` and the keys of ``state.json``).
NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
if NAMES != OPTION_CHOICES:
    raise ImportError(f"release stages {NAMES} differ from the --from/--until/--skip choices {OPTION_CHOICES}")

__all__ = ["NAMES", "STAGES", "Stage", "StageResult"]
