"""The stages of ``hubkit release`` and its options (also the command line's, see ``hubkit.options``)."""

from __future__ import annotations

from dataclasses import dataclass

from hubkit.options import Options, option

#: The stage names in order, for the CLI's choices: written out so that ``hubkit --help`` imports no stage (and no
#: manifest); ``release/stages`` refuses to import when its ``STAGES`` names differ.
STAGES = ("quantize", "card", "validate", "push", "tag", "smoke")


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
