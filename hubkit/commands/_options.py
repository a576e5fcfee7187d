"""Click options generated from an options dataclass (see ``hubkit.options``), and the one ``--format`` option
every command shares."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hubkit import progress
from hubkit.errors import HubkitError
from hubkit.options import CHECK_CODES, Option, check_value, cli_fields

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


def _click_type(annotation: Any) -> tuple[Any, bool]:
    """(Click type, multiple) for a field annotation such as ``str | None`` or ``tuple[str, ...]``."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return _click_type(typing.get_args(annotation)[0])[0], True
    if annotation is Path:
        return click.Path(path_type=Path), False
    return annotation, False


def click_options(cls: type) -> Callable[[F], F]:
    """Decorate a command with one Click option per command-line field of the options dataclass ``cls``."""
    hints = typing.get_type_hints(cls)

    def decorate(command: F) -> F:
        for field, spec in reversed(cli_fields(cls)):
            annotation = hints[field.name]
            decls = [d for d in (spec.short, spec.name(field.name)) if d]
            kwargs: dict[str, Any] = {"help": spec.help, "show_default": spec.show_default}
            required = field.default is dataclasses.MISSING
            if required:  # no default at all: Click counts an explicit default=None as a value given
                kwargs["required"] = True
            if annotation is bool:
                inverted = spec.flag is not None and spec.flag.startswith("--no-") and field.default is True
                kwargs.update(is_flag=True, flag_value=not inverted, default=field.default)
            else:
                kind, multiple = (str, False) if spec.convert else _click_type(annotation)
                kwargs.update(multiple=multiple, metavar=spec.metavar)
                if not required:
                    kwargs["default"] = field.default
                if spec.choices:
                    kind = click.Choice(spec.choices)
                elif spec.minimum is not None or spec.maximum is not None:
                    kind = click.IntRange(spec.minimum, spec.maximum)
                kwargs["type"] = kind
            if spec.convert is not None and not required:  # the converter gets the text as typed (None when absent)
                kwargs["default"] = None
            if spec.convert is not None or spec.check is not None:
                kwargs["callback"] = lambda _ctx, _param, value, name=field.name, spec=spec: _checked(name, spec, value)
            command = click.option(*decls, field.name, **kwargs)(command)
        return command

    return decorate


def _checked(name: str, spec: Option, value: Any) -> Any:
    """A command-line value converted and checked as every other source's is (see ``hubkit.options``)."""
    if spec.convert is not None:
        value = spec.convert(value)
    if not value:
        return value
    from hubkit.validate.options import check_codes

    try:
        return check_value(spec, value, {CHECK_CODES: check_codes()})
    except ValueError as exc:
        raise HubkitError(f"{spec.name(name)}: {exc}") from None


def build(cls: type[T], values: dict[str, Any], **extra: Any) -> T:
    """The options dataclass ``cls`` from a command's parsed values (and fields set by code)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in values.items() if k in names}, **extra)


def format_option(*choices: str) -> Callable[[F], F]:
    """``--format`` with the given choices (the first is the default), passed as ``output_format``."""
    meaning = {
        "text": "text for people",
        "json": "json (stdout alone)",
        "github": "github (workflow annotations)",
        "sarif": "sarif (SARIF 2.1.0, for code scanning)",
        "markdown": "markdown (for a pull-request comment or step summary)",
    }
    described = [meaning.get(choice, choice) for choice in choices]
    listed = ", ".join(described[:-1]) + " or " + described[-1] if len(described) > 1 else described[0]
    return click.option(
        "--format", "output_format", type=click.Choice(choices), default=choices[0], show_default=True,
        help=f"Output: {listed}.", callback=_show_progress,
    )  # fmt: skip


def _show_progress(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """Progress for this command's run: bars on a terminal only for text output, else heartbeat lines (with
    ``github``, each release stage's in a group)."""
    ctx.with_resource(progress.display(label=ctx.info_name or "", bars=value == "text", groups=value == "github"))
    return value


def examples(*commands: str) -> str:
    """A command's help epilog: an Examples block, one command per line (``#`` comments kept), not rewrapped."""
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in commands)
