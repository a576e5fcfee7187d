"""Options declared once: each option group is a frozen dataclass whose fields carry their declaration (help,
default, bounds, choices, check, CLI flag, manifest table), and everything else is derived from it.

- ``hubkit.commands`` turns the fields into Click options (:func:`cli_fields`);
- ``hubkit.manifest`` turns the fields of a table into that table's pydantic model and JSON Schema
  (:func:`table_model`);
- the release builds the options from the manifest with :func:`from_manifest`, no field copied by hand;
- every construction (CLI, manifest, Python API) runs the same checks (:class:`Options`, :func:`check_value`).

Adding an option (or a manifest key) is one edit: a field with ``option(...)`` in its group. Fields without it
(progress, worker counts set by code) are neither on the command line nor in the manifest.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hubkit.errors import HubkitError

#: The metadata key under which a field keeps its declaration.
DECLARATION = "hubkit.option"
#: The check context key for the codes of hubkit's checks (given where they are known: CLI, manifest check).
CHECK_CODES = "check_codes"

T = TypeVar("T")
#: A field's check: (value, context) -> the value, normalised; raises ValueError saying what is wrong. A sequence
#: field's check is given each item.
Check = Callable[[Any, Mapping[str, Any]], Any]


@dataclasses.dataclass(frozen=True)
class Option:
    """How one dataclass field is declared: on the command line, in the manifest, and what values it takes."""

    help: str
    flag: str | None = None  # e.g. "--no-validate" for a field ``validate: bool = True``; default: --field-name
    short: str | None = None  # e.g. "-o"
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    minimum: int | None = None  # integer bounds
    maximum: int | None = None
    #: turns the command-line text into the field's value (and raises HubkitError on bad input)
    convert: Callable[[Any], Any] | None = None
    #: run on the value wherever it comes from (CLI, manifest, Python API)
    check: Check | None = None
    show_default: bool = False
    cli: bool = True  # False: a manifest key or an API field only
    #: the manifest table that holds this key (its own table, or one it shares, such as "release"); None: not in it
    table: str | None = None
    #: the key's type in the manifest where it differs from the field's (``str | int`` for a push batch)
    toml_type: Any = None

    def name(self, field: str) -> str:
        """The option as the command line spells it."""
        return self.flag or "--" + field.replace("_", "-")


def option(help: str, default: Any = dataclasses.MISSING, **declaration: Any) -> Any:
    """A declared dataclass field (see :class:`Option` for the keywords); without a default it is required."""
    if isinstance(default, list):
        raise TypeError("declare a sequence default as a tuple")
    return dataclasses.field(default=default, metadata={DECLARATION: Option(help, **declaration)})


def declared(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The declared fields of the options dataclass ``cls``, in declaration order."""
    return [(f, f.metadata[DECLARATION]) for f in dataclasses.fields(cls) if DECLARATION in f.metadata]


def cli_fields(cls: type) -> list[tuple[dataclasses.Field[Any], Option]]:
    """The fields of ``cls`` that are command-line options."""
    return [(f, spec) for f, spec in declared(cls) if spec.cli]


def check_value(spec: Option, value: Any, context: Mapping[str, Any] | None = None) -> Any:
    """``value`` (each item of a sequence) checked against its declaration: choices, bounds, then its check,
    which may normalise it; a ValueError says what is wrong. The one place a value is judged: the command line,
    the manifest and the Python API all call it."""
    if isinstance(value, tuple | list):
        return type(value)(check_value(spec, item, context) for item in value)
    if value is None:
        return None
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"'{value}' is not one of {', '.join(spec.choices)}")
    if isinstance(value, int) and not isinstance(value, bool):
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"{value} is less than the minimum {spec.minimum}")
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"{value} is more than the maximum {spec.maximum}")
    return spec.check(value, context or {}) if spec.check is not None else value


class Options:
    """The base of every options dataclass: constructing one checks each declared field (:func:`check_value`)."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field, spec in declared(type(self)):
            value = getattr(self, field.name)
            if isinstance(value, list) and typing.get_origin(hints[field.name]) is tuple:
                value = tuple(value)  # the manifest's arrays
            try:
                checked = check_value(spec, value)
            except ValueError as exc:
                raise HubkitError(f"{spec.name(field.name) if spec.cli else field.name}: {exc}") from None
            if checked is not getattr(self, field.name):
                object.__setattr__(self, field.name, checked)


def from_manifest(cls: type[T], manifest: Any, **given: Any) -> T:
    """The options ``cls`` as ``manifest`` sets them: each field declared with a table takes that table's key of
    the same name; ``given`` sets the others (and wins). The one way the release turns tables into options."""
    tables = {info.alias or name: name for name, info in type(manifest).model_fields.items()}
    values = {
        field.name: getattr(getattr(manifest, tables[spec.table]), field.name)
        for field, spec in declared(cls)
        if spec.table is not None and field.name not in given
    }
    return cls(**values, **given)


def table_model(name: str, cls: type, table: str) -> Any:
    """The pydantic model of the manifest table ``table``: one key per field of ``cls`` declared in it, with the
    field's type (strict: ``"32"`` is no integer, ``1`` no boolean), default, bounds, choices, help and check."""
    from pydantic import AfterValidator, ConfigDict, Field, ValidationInfo, create_model
    from pydantic_core import PydanticCustomError

    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {}
    for field, spec in declared(cls):
        if spec.table != table:
            continue
        kind = spec.toml_type or _toml_type(hints[field.name], spec.choices)
        if spec.check is not None:

            def check(value: Any, info: ValidationInfo, spec: Option = spec) -> Any:
                try:
                    return check_value(spec, value, info.context)
                except ValueError as exc:
                    raise PydanticCustomError("option", "{problem}", {"problem": str(exc)}) from None

            if typing.get_origin(kind) is list:  # each item, so that a problem names its item (select.0)
                kind = list[typing.Annotated[typing.get_args(kind)[0], AfterValidator(check)]]  # type: ignore[misc]
            else:
                kind = typing.Annotated[kind, AfterValidator(check)]
        bounds = {"ge": spec.minimum, "le": spec.maximum}
        given: dict[str, Any] = {key: bound for key, bound in bounds.items() if bound is not None}
        if isinstance(field.default, tuple):
            given["default_factory"] = list
        elif field.default is not dataclasses.MISSING:
            given["default"] = field.default
        fields[field.name] = (kind, Field(description=spec.help, **given))
    config = ConfigDict(extra="forbid", frozen=True, strict=True)
    model: Any = create_model(name, __config__=config, **fields)
    return model


def _toml_type(annotation: Any, choices: tuple[str, ...] | None) -> Any:
    """A field's type as a manifest key: text for a path, an array for a tuple, the choices as literals."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [_toml_type(a, choices) for a in typing.get_args(annotation)]
        return typing.Union[tuple(members)]  # noqa: UP007  (built at run time)
    if typing.get_origin(annotation) is tuple:
        return list[_toml_type(typing.get_args(annotation)[0], choices)]  # type: ignore[misc]
    if annotation is Path:
        return str
    if choices is not None and annotation is str:
        return typing.Literal[choices]
    return annotation
