"""The options of ``hubkit validate`` and the ``[validate]`` table of the manifest, declared once."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hubkit.checkpoint.safetensors_header import DEFAULT_LIMITS, HeaderLimits
from hubkit.options import CHECK_CODES, Options, option
from hubkit.resources import profile_names


def check_selector(selector: str, context: Mapping[str, Any]) -> str:
    """A ``--select``/``--ignore`` entry or a ``[validate] select/ignore`` item: a check code or prefix (``HK702``,
    ``HK7``), upper-cased; with the known codes in ``context``, it must name a check. The one rule for all."""
    code = selector.strip().upper()
    if not re.fullmatch(r"HK\d{0,3}", code):
        raise ValueError(f"'{selector}' is not a check code or prefix such as HK702 or HK7")
    codes = context.get(CHECK_CODES)
    if codes is not None and not any(known.startswith(code) for known in codes):
        raise ValueError(f"'{selector}' names no check; run 'hubkit validate --list-checks' for the codes")
    return code


def comma_list(text: str | None) -> tuple[str, ...]:
    """``HK2,HK501`` -> ("HK2", "HK501")."""
    return tuple(part.strip() for part in (text or "").split(",") if part.strip())


@dataclass(frozen=True)
class ValidateOptions(Options):
    profile: str | None = option(
        "Profile from checks/ (default: chosen from the config).", None, choices=tuple(profile_names()),
        table="validate",
    )  # fmt: skip
    reference: str | None = option(
        "Reference release: folder, hf_quant_config.json/config.json, or hf://ORG/NAME[@REV].", None,
        table="validate",
    )  # fmt: skip
    base: str | None = option("Base model the export was made from: folder or hf://ORG/NAME[@REV].", None)
    deep: bool = option(
        "Also read the scale tensors and check their values (~1/9 of the data).", False, table="validate"
    )
    select: tuple[str, ...] = option(
        "Only these codes or prefixes, comma-separated (HK2,HK501).", (), convert=comma_list,
        check=check_selector, table="validate",
    )  # fmt: skip
    ignore: tuple[str, ...] = option(
        "Skip these codes or prefixes, comma-separated.", (), convert=comma_list, check=check_selector,
        table="validate",
    )  # fmt: skip
    strict: bool = option("Warnings fail the validation too.", False, table="validate")
    workers: int = option("Parallel reads for --deep.", 4, minimum=1, maximum=64, show_default=True)
    progress: bool = False
    #: bounds on what the headers may declare (the defaults are documented in the README)
    limits: HeaderLimits = DEFAULT_LIMITS
