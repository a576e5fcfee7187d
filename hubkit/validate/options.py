"""The options of ``hubkit validate`` (also the command line's, see ``hubkit.options``)."""

from __future__ import annotations

from dataclasses import dataclass

from hubkit.checkpoint.safetensors_header import DEFAULT_LIMITS, HeaderLimits
from hubkit.options import option
from hubkit.resources import profile_names


def _codes(text: str | None) -> tuple[str, ...]:
    from hubkit.validate.engine import parse_code_list

    return tuple(parse_code_list(text))


@dataclass(frozen=True)
class ValidateOptions:
    profile: str | None = option(
        "Profile from checks/ (default: chosen from the config).", None, choices=tuple(profile_names())
    )
    reference: str | None = option(
        "Reference release: folder, hf_quant_config.json/config.json, or hf://ORG/NAME[@REV].", None
    )
    base: str | None = option("Base model the export was made from: folder or hf://ORG/NAME[@REV].", None)
    deep: bool = option("Also read the scale tensors and check their values (~1/9 of the data).", False)
    select: tuple[str, ...] = option("Only these codes or prefixes, comma-separated (HK2,HK501).", (), convert=_codes)
    ignore: tuple[str, ...] = option("Skip these codes or prefixes, comma-separated.", (), convert=_codes)
    strict: bool = option("Warnings fail the validation too.", False)
    workers: int = option("Parallel reads for --deep.", 4, minimum=1, maximum=64, show_default=True)
    progress: bool = False
    #: bounds on what the headers may declare (the defaults are documented in the README)
    limits: HeaderLimits = DEFAULT_LIMITS
