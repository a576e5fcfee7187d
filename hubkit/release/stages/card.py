"""The card stage: the model card (README.md) and its pictures rendered into OUT from the export and the
manifest's ``[card]``."""

from __future__ import annotations

from hubkit.card.pictures import COVERAGE_PICTURE, plots_installed
from hubkit.records import check_replaceable_file, write_text
from hubkit.release.stages.base import Stage, StageResult, card_text, fingerprint


class Card(Stage):
    name = "card"

    def fingerprint(self) -> str:
        card = self.manifest.card.model_dump() if self.manifest.card else None
        quantized = self.release.recorded("quantize").get("fingerprint")
        pictures = plots_installed(), (self.out / COVERAGE_PICTURE).is_file()
        return fingerprint(card, quantized, (self.out / "README.md").is_file(), pictures)

    def plan(self) -> StageResult:
        readme = self.out / "README.md"
        return StageResult(
            self.name, "would run", detail=f"render {readme}" + (" (replaces it)" if readme.exists() else "")
        )

    def run(self) -> StageResult:
        from hubkit.card.render import render_card
        from hubkit.checkpoint import load_checkpoint

        readme = self.out / "README.md"
        check_replaceable_file(readme)  # a link, a FIFO or a folder in its place is refused, never written through
        text = render_card(load_checkpoint(str(self.out)), self.manifest, pictures=self.out)
        if card_text(readme) != text:
            write_text(readme, text)  # whole or not at all
        return StageResult(self.name, "ran", outputs={"bytes": len(text)})
