"""The card stage: the model card (README.md) and its pictures rendered into OUT from the export and the
manifest's ``[card]``.

In an export made elsewhere (``[release] export``) a README.md that hubkit did not render is the export's own
card: it is kept as it is and pushed (hubkit never overwrites a user's file); move it away to have hubkit render
the card. A README.md counts as hubkit's when its sha256 is the one this stage recorded when it wrote it.
"""

from __future__ import annotations

import hashlib

from hubkit.card.pictures import COVERAGE_PICTURE, ERROR_PICTURE, plots_installed
from hubkit.records import check_replaceable_file, write_text
from hubkit.release.stages.base import Stage, StageResult, card_text, fingerprint, folder_fingerprint

#: Why the card stage keeps an export's own README.md.
OWN_CARD = "kept the export's own README.md (hubkit never overwrites it; move it away to have hubkit render the card)"


class Card(Stage):
    name = "card"

    def fingerprint(self) -> str:
        card = self.manifest.card.model_dump() if self.manifest.card else None
        if self.manifest.made_elsewhere:  # no quantize record: the export itself is the input
            return fingerprint(card, folder_fingerprint(self.out))
        quantized = self.release.recorded("quantize").get("fingerprint")
        pictures = plots_installed(), *((self.out / path).is_file() for path in (COVERAGE_PICTURE, ERROR_PICTURE))
        return fingerprint(card, quantized, (self.out / "README.md").is_file(), pictures)

    def plan(self) -> StageResult:
        readme = self.out / "README.md"
        if self._own_card():
            return StageResult(self.name, "skipped", detail=OWN_CARD)
        return StageResult(
            self.name, "would run", detail=f"render {readme}" + (" (replaces it)" if readme.exists() else "")
        )

    def _own_card(self) -> bool:
        """Whether OUT holds a README.md of an export made elsewhere that hubkit did not write."""
        readme = self.out / "README.md"
        if not self.manifest.made_elsewhere or not (readme.exists() or readme.is_symlink()):
            return False
        text = card_text(readme)
        written = self.release.recorded(self.name).get("outputs", {}).get("sha256")
        return text is None or _sha256(text) != written

    def run(self) -> StageResult:
        from hubkit.card.render import render_card
        from hubkit.checkpoint import load_checkpoint

        readme = self.out / "README.md"
        if self._own_card():
            return StageResult(self.name, "skipped", detail=OWN_CARD)
        check_replaceable_file(readme)  # a link, a FIFO or a folder in its place is refused, never written through
        text = render_card(load_checkpoint(str(self.out)), self.manifest, pictures=self.out)
        if card_text(readme) != text:
            write_text(readme, text)  # whole or not at all
        return StageResult(self.name, "ran", outputs={"bytes": len(text), "sha256": _sha256(text)})


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
