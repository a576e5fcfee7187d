"""The one output path: typed problems, GitHub workflow commands (escaped once), the step summary (appended once
per command run), and a command's result as text for people, JSON for machines or GitHub annotations.

Commands build an :class:`Output` for their ``--format`` and write through it; what is specific to one command
(validate's tables, the release summary) is rendered by that command's own module and passed in here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from hubkit.errors import HubkitError, redact
from hubkit.logs import stderr
from hubkit.records import append_text

Level = Literal["error", "warning", "notice"]
STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
#: Names shown of a group of findings before "… and N more".
SHOWN_OF_GROUP = 3


def escape_data(text: str) -> str:
    """The message of a workflow command as GitHub's runner reads it back: ``%``, CR and LF escaped."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """A property value of a workflow command (``file=``, ``title=``): also ``:`` and ``,`` escaped."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def workflow_command(name: str, message: str = "", **properties: object) -> str:
    """``::name key=value,...::message``, every part escaped; properties that are None are left out."""
    shown = ",".join(f"{key}={escape_property(str(value))}" for key, value in properties.items() if value is not None)
    return f"::{name}{' ' + shown if shown else ''}::{escape_data(message)}"


def annotation(
    level: Level, message: str, *, file: str | None = None, line: int | None = None, title: str | None = None
) -> str:
    """A GitHub annotation (``::error file=…,line=…,title=…::message``)."""
    return workflow_command(level, message, file=file, line=line, title=title)


def group_start(name: str) -> str:
    """The line that opens a folded group of log lines in a GitHub Actions log."""
    return workflow_command("group", name)


GROUP_END = "::endgroup::"


def counted(names: Sequence[str], noun: str) -> str:
    """``48 tensors: a, b, c, … and 45 more``: how many, and the first few by name."""
    shown = ", ".join(names[:SHOWN_OF_GROUP])
    more = f", … and {len(names) - SHOWN_OF_GROUP} more" if len(names) > SHOWN_OF_GROUP else ""
    return f"{len(names)} {noun}: {shown}{more}"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an input, where it is, and how bad it is.

    ``origin`` names where a value came from when that is not a line of ``file`` (``--set quantize.mode=…``);
    ``code`` is the check or kind (``HK301``, ``front-matter``). ``str()`` is the one-line text form,
    ``FILE:LINE: [CODE: ]MESSAGE``."""

    message: str
    file: str | None = None
    line: int | None = None
    key: str | None = None
    code: str | None = None
    severity: Level = "error"
    origin: str | None = None

    @property
    def location(self) -> str | None:
        if self.origin is not None:
            return self.origin
        if self.file is not None and self.line:
            return f"{self.file}:{self.line}"
        return self.file

    def __str__(self) -> str:
        return ": ".join(part for part in (self.location, self.code, self.message) if part)

    def annotation(self, *, title: str, file: str | None = None) -> str:
        """This problem as a GitHub annotation on its file (else ``file``), at its line (else line 1)."""
        where = self.file or file
        return annotation(
            self.severity, self.message, file=where, line=(self.line or 1) if where else None, title=title
        )


class Output:
    """One command run's output in its ``--format`` (text, json, github): lines and JSON on stdout, problems as
    text or annotations, and with ``github`` the step summary, appended at most once per run."""

    def __init__(self, output_format: str, *, title: str) -> None:
        self.format = output_format
        self.title = title
        self._summarised = False

    @property
    def github(self) -> bool:
        return self.format == "github"

    def echo(self, text: str) -> None:
        click.echo(text)

    def json(self, value: Any, *, indent: int | None = 2) -> None:
        click.echo(json.dumps(value, indent=indent, default=str))

    def problem(
        self,
        problem: Problem,
        *,
        text: str | None = None,
        file: str | None = None,
        title: str | None = None,
        to_stderr: bool = False,
    ) -> None:
        """``problem`` as an annotation (``github``; on ``file`` when it names none; titled ``title``, else the
        command's), else as ``text`` (its ``str()`` unless given), on stdout or on the real stderr (an error:
        shown under ``-q`` too)."""
        if self.github:
            click.echo(problem.annotation(title=title or self.title, file=file))
        else:
            click.echo(str(problem) if text is None else text, file=stderr() if to_stderr else None)

    def summary(self, markdown: str | Callable[[], str]) -> None:
        """Append ``markdown`` (or what it renders, rendered only when needed) to ``$GITHUB_STEP_SUMMARY``
        (``github`` only, once per run, credentials of URLs masked); one that cannot be written is a warning
        annotation, never the run's outcome."""
        target = os.environ.get(STEP_SUMMARY_ENV)
        if not self.github or not target or self._summarised:
            return
        self._summarised = True
        text = markdown if isinstance(markdown, str) else markdown()
        try:
            append_text(Path(target), redact(text) + "\n")
        except HubkitError as exc:
            click.echo(annotation("warning", f"cannot write the step summary: {exc}", title=self.title))
