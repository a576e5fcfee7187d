"""The options of ``hubkit quantize`` (also the command line's, see ``hubkit.options``); light to import."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hubkit.errors import HubkitError
from hubkit.options import option
from hubkit.resources import profile_names
from hubkit.sizes import parse_size

MODES = ("auto", "resident", "layerwise", "cast")


def _size(text: str | None) -> str | None:
    """A size as typed (``250GiB``), checked now so a typo fails before any work."""
    if text is not None:
        parse_size(text)
    return text


@dataclass(frozen=True)
class QuantizeOptions:
    #: the export's folder (declared by the command, as --plan needs none)
    out: Path
    base: str = option("Base model: a local folder or hf://ORG/NAME[@REV].")
    profile: str | None = option(
        "Profile from checks/ (sets the default recipe and validates the output).", None, choices=tuple(profile_names())
    )
    recipe: str | None = option("modelopt recipe name, recipe .yaml file, or hubkit preset (nvfp4-experts-mse).", None)
    calib: tuple[str, ...] = option(
        "Calibration source: .jsonl/.txt/.parquet file, saved dataset, Hub dataset (repeatable); "
        "SOURCE?config=NAME&split=NAME&column=NAME names a dataset's config, split and text column (quote it).",
        (),
    )
    calib_size: int = option("Samples per source.", 512, minimum=1, show_default=True)
    calib_seq: int = option("Tokens per sample.", 512, minimum=8, show_default=True)
    batch_size: int = option("Calibration batch size.", 1, minimum=1, show_default=True)
    device: str = option("Where to calibrate.", "auto", choices=("auto", "cpu", "cuda"), show_default=True)
    mode: str = option(
        "resident: the whole model on the device(s); layerwise: one decoder layer at a time, resumable; "
        "cast: an MXFP4 base's experts cast to NVFP4 bit for bit, no data, no GPU; "
        "auto: cast for an MXFP4 base, else resident when the plan says it fits with margin.",
        "auto", choices=MODES, show_default=True,
    )  # fmt: skip
    max_gpu_memory: str | None = option(
        "Cap per GPU, e.g. 250GiB: the device map of a resident run, and the plan's budget.", None, convert=_size
    )
    max_cpu_memory: str | None = option(
        "Host memory the plan may count on, e.g. 64GiB (default: what is free here).", None, convert=_size
    )
    jobs: int = option("Shards converted at once by the MXFP4 cast (memory: about one shard's experts each).", 4,
                       minimum=1, show_default=True)  # fmt: skip
    seed: int = option("Seed of the calibration sample.", 1234, show_default=True)
    trust_remote_code: bool = option(
        "Run the modelling code the base ships (auto_map in its config); review that code first.", False
    )
    keep_intermediate: bool = option("Keep intermediates (a resident run's BF16 copy of an INT4 base).", False)
    progress: bool = True
    #: the export's shard limit: modelopt's default (tests pass a small one to get several shards)
    shard_size: str = "10GB"

    def __post_init__(self) -> None:
        """A malformed ``--calib`` qualifier fails before any work."""
        if not self.calib:
            return
        from hubkit.manifest import calibration_qualifiers

        for spec in self.calib:
            try:
                calibration_qualifiers(spec)
            except ValueError as exc:
                raise HubkitError(f"--calib {exc}; the form is SOURCE?config=NAME&split=NAME&column=NAME") from None
