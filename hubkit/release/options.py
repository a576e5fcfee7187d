"""The stages of ``hubkit release`` and its options (also the command line's, see ``hubkit.options``)."""

from __future__ import annotations

from dataclasses import dataclass

from hubkit.options import Options, option
from hubkit.release.stages import NAMES as STAGES


@dataclass(frozen=True)
class ReleaseOptions(Options):
    dry_run: bool = option("Print the plan (stages and what would be uploaded); change nothing.", False)
    first: str | None = option("Start at this stage.", None, flag="--from", choices=STAGES)
    last: str | None = option("Stop after this stage.", None, flag="--until", choices=STAGES)
    skip: tuple[str, ...] = option("Skip this stage (repeatable).", (), choices=STAGES)
    overrides: tuple[str, ...] = option(
        "Override a manifest key (repeatable).", (), flag="--set", metavar="TABLE.KEY=VALUE"
    )
    progress: bool = True
