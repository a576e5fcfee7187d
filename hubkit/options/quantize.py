"""The options of ``hubkit quantize`` and the ``[quantize]`` table of the manifest, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError
from hubkit.options import Options, option
from hubkit.resources import profile_names
from hubkit.sizes import parse_size


def _size(value: str, context: Mapping[str, Any]) -> str:
    """A size as typed (``250GiB``), checked now so a typo fails before any work."""
    try:
        parse_size(value)
    except HubkitError as exc:
        raise ValueError(str(exc)) from None
    return value


#: ``auto`` and each mode of ``hubkit/quantize/modes/`` (which checks at import that the two agree)
MODES = ("auto", "resident", "layerwise", "cast")
#: What a calibration source may name after its location, as llm-compressor's dataset arguments do
#: (``dataset_config_name``, ``splits``, ``text_column``): ``SOURCE?config=NAME&split=NAME&column=NAME``.
CALIB_QUALIFIERS = ("config", "split", "column")


def calibration_qualifiers(spec: str) -> tuple[str, dict[str, str]]:
    """(location, {qualifier: value}) of a calibration source ``SOURCE[?config=NAME&split=NAME&column=NAME]``;
    a ValueError says what is wrong. ``?`` always starts the qualifiers."""
    location, mark, query = spec.partition("?")
    if not mark:
        return spec, {}
    if not location:
        raise ValueError(f"'{spec}' names no source before '?'")
    qualifiers: dict[str, str] = {}
    for part in query.split("&"):
        key, equals, value = part.partition("=")
        if key not in CALIB_QUALIFIERS or not equals or not value:
            raise ValueError(f"'{part}' in '{spec}' is not config=NAME, split=NAME or column=NAME")
        if key in qualifiers:
            raise ValueError(f"'{spec}' names {key} twice")
        qualifiers[key] = value
    return location, qualifiers


def calibration_location(spec: str) -> str:
    """The file, folder or dataset name of a calibration source, without its qualifiers."""
    return spec.partition("?")[0]


def _calib_source(spec: str, _context: Mapping[str, Any]) -> str:
    """A calibration source well formed (its qualifiers), before any work."""
    try:
        calibration_qualifiers(spec)
    except ValueError as exc:
        raise ValueError(f"{exc}; the form is SOURCE?config=NAME&split=NAME&column=NAME") from None
    return spec


@dataclass(frozen=True)
class QuantizeOptions(Options):
    #: the export's folder (on the command line declared by the command, as --plan needs none)
    out: Path = option("folder of the export, relative to the manifest", cli=False, table="quantize")  # noqa: RUF009
    base: str = option("Base model: a local folder or hf://ORG/NAME[@REV].")
    profile: str | None = option(
        "Profile from checks/ (sets the default recipe and validates the output).", None,
        choices=tuple(profile_names()), table="quantize",
    )  # fmt: skip
    recipe: str | None = option(
        "modelopt recipe name, recipe .yaml file, or hubkit preset (nvfp4-experts-mse).", None, table="quantize"
    )
    calib: tuple[str, ...] = option(
        "Calibration source: .jsonl/.txt/.parquet file, saved dataset, Hub dataset (repeatable); "
        "SOURCE?config=NAME&split=NAME&column=NAME names a dataset's config, split and text column (quote it).",
        (), check=_calib_source, table="quantize",
    )  # fmt: skip
    calib_size: int = option("Samples per source.", 512, minimum=1, show_default=True, table="quantize")
    calib_seq: int = option("Tokens per sample.", 512, minimum=8, show_default=True, table="quantize")
    batch_size: int = option("Calibration batch size.", 1, minimum=1, show_default=True, table="quantize")
    device: str = option(
        "Where to calibrate.", "auto", choices=("auto", "cpu", "cuda"), show_default=True, table="quantize"
    )
    mode: str = option(
        "resident: the whole model on the device(s); layerwise: one decoder layer at a time, resumable; "
        "cast: an MXFP4 base's experts cast to NVFP4 bit for bit, no data, no GPU; "
        "auto: cast for an MXFP4 base, else resident when the plan says it fits with margin.",
        "auto", choices=MODES, show_default=True, table="quantize",
    )  # fmt: skip
    max_gpu_memory: str | None = option(
        "Cap per GPU, e.g. 250GiB: the device map of a resident run, and the plan's budget.", None, check=_size,
        table="quantize",
    )  # fmt: skip
    max_cpu_memory: str | None = option(
        "Host memory the plan may count on, e.g. 64GiB (default: what is free here).", None, check=_size,
        table="quantize",
    )  # fmt: skip
    jobs: int = option("Shards converted at once by the MXFP4 cast (memory: about one shard's experts each).", 4,
                       minimum=1, show_default=True, table="quantize")  # fmt: skip
    seed: int = option("Seed of the calibration sample.", 1234, show_default=True, table="quantize")
    trust_remote_code: bool = option(
        "Run the modelling code the base ships (auto_map in its config); review that code first.", False,
        table="base",
    )  # fmt: skip
    keep_intermediate: bool = option(
        "Keep intermediates (a resident run's BF16 copy of an INT4 base).", False, table="quantize"
    )
    progress: bool = True
    #: the export's shard limit: modelopt's default (tests pass a small one to get several shards)
    shard_size: str = "10GB"
