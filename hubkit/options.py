"""Options declared once: a library's frozen options dataclass says which of its fields are command-line
options (help text, flag spelling, choices), and ``hubkit.commands`` turns those fields into Click options.

Adding an option is one edit: a field with ``option(...)`` in the dataclass. Fields without it (progress,
worker counts set by code) are not on the command line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

#: The metadata key under which a field keeps its command-line declaration.
CLI = "hubkit.cli"


@dataclasses.dataclass(frozen=True)
class CliOption:
    """How one dataclass field appears on the command line."""

    help: str
    flag: str | None = None  # e.g. "--no-validate" for a field ``validate: bool = True``; default: --field-name
    short: str | None = None  # e.g. "-o"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None  # integer bounds, checked by the command line
    maximum: int | None = None
    #: turns the command-line text into the field's value (and raises HubkitError on bad input)
    convert: Callable[[Any], Any] | None = None
    show_default: bool = False


def option(help: str, default: Any = dataclasses.MISSING, **declaration: Any) -> Any:
    """A dataclass field that is also a command-line option (see :class:`CliOption` for the keywords);
    without a default it is a required option."""
    return dataclasses.field(default=default, metadata={CLI: CliOption(help, **declaration)})


def cli_fields(cls: type) -> list[tuple[dataclasses.Field[Any], CliOption]]:
    """The fields of the options dataclass ``cls`` that are command-line options, in declaration order."""
    return [(f, f.metadata[CLI]) for f in dataclasses.fields(cls) if CLI in f.metadata]
