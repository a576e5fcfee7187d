"""The quantize stage: the base and the calibration text into OUT; hubkit's earlier export waits beside it until
the new one is there, and comes back if quantize fails."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubkit.errors import HubkitError
from hubkit.manifest import calibration_location
from hubkit.reads import open_regular
from hubkit.release.stages.base import Stage, StageResult, fingerprint, folder_fingerprint
from hubkit.release.workspace import check_replaceable, has_files
from hubkit.sizes import MiB

if TYPE_CHECKING:
    from hubkit.manifest import Manifest, QuantizeTable
    from hubkit.quantize.options import QuantizeOptions


class Quantize(Stage):
    name = "quantize"

    @property
    def table(self) -> QuantizeTable:
        """``[quantize]``: a release of an export made elsewhere has none, and never selects this stage."""
        assert self.manifest.quantize is not None, "the quantize stage runs only with a [quantize] table"
        return self.manifest.quantize

    def fingerprint(self) -> str:
        release = self.release
        base = release.base_ref()
        listing = base if base.startswith("hf://") else folder_fingerprint(Path(base))
        calib = [
            (location, calibration_fingerprint(release.root / location, location))
            for location in map(calibration_location, self.table.calib)
        ]
        return fingerprint(listing, self.table.model_dump(), calib)

    def plan(self) -> StageResult:
        replaces = f"; replaces hubkit's earlier export in {self.out}" if self._holds_export() else ""
        return StageResult(self.name, "would run", detail=f"{self.release.base_ref()} -> {self.out}{replaces}")

    def _holds_export(self) -> bool:
        return self.out.is_dir() and has_files(self.out)

    def run(self) -> StageResult:
        previous = self.release.previous
        check_replaceable(self.out, "[quantize] out")
        check_replaceable(previous, "the previous export's place")
        shutil.rmtree(previous, ignore_errors=True)  # hubkit's, from a run that was killed mid-stage
        if self._holds_export():
            self.out.rename(previous)
        try:
            outcome = self._quantize()
        except BaseException:
            if previous.exists() and not (self.out.exists() and has_files(self.out)):
                with contextlib.suppress(OSError):
                    self.out.rmdir()
                previous.rename(self.out)  # nothing new was made: the earlier export stays
            raise
        shutil.rmtree(previous, ignore_errors=True)
        return outcome

    def _quantize(self) -> StageResult:
        from hubkit.quantize.pipeline import quantize

        release = self.release
        result = quantize(
            quantize_options(
                self.manifest,
                root=release.root,
                out=self.out,
                base=release.base_ref(),
                progress=release.options.progress,
            )
        )
        release.state = release.load_state()
        release.save_state()  # the new export carries hubkit's record from now on, whatever its verdict
        errors = [f for f in result.report.findings if f.severity.value == "error"]
        if errors:
            return StageResult(
                self.name, "failed", detail=f"the export failed validation: {errors[0].code} {errors[0].message}"
            )
        coverage = result.provenance.get("coverage", {})
        return StageResult(self.name, "ran", outputs={"experts_without_tokens": coverage.get("experts_without_tokens")})


def quantize_options(manifest: Manifest, *, root: Path, out: Path, base: str, progress: bool) -> QuantizeOptions:
    """The manifest's ``[quantize]`` table (and ``[base] trust_remote_code``) as the options of ``quantize``."""
    from hubkit.options import from_manifest
    from hubkit.quantize.options import QuantizeOptions

    table = manifest.quantize
    assert table is not None, "quantize options exist only for a manifest with a [quantize] table"
    calib = tuple(str(root / c) if (root / calibration_location(c)).exists() else c for c in table.calib)
    return from_manifest(QuantizeOptions, manifest, base=base, out=out, calib=calib, progress=progress)


def calibration_fingerprint(path: Path, location: str) -> Any:
    """A calibration source: a local folder by its files' sizes and mtimes, a local file by its content (sha256,
    streamed: an edit that keeps the size still changes it), a Hub dataset by its name."""
    if path.is_dir():
        return folder_fingerprint(path)
    if not path.exists():
        return location
    try:
        with open_regular(path, what="calibration source") as stream:
            digest = hashlib.sha256()
            for block in iter(lambda: stream.read(MiB), b""):
                digest.update(block)
    except HubkitError:
        return location  # not a regular file: the preflight (or quantize) says why
    return digest.hexdigest()
