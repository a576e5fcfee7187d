"""How loud a run is: ``-q``/``-v``/``--debug`` applied to hubkit's own logging and to the libraries it drives.

The libraries read their verbosity from environment variables when they are imported, and hubkit imports them
only inside a command, so setting the variables when the options are parsed reaches them without importing
anything here (``hubkit --help`` stays fast). ``-q`` also points ``sys.stderr`` at the null device for the
command: that silences what no setting reaches (modelopt's plain ``print``s and its warnings, a library's own
tqdm bars), while hubkit's
log handler keeps the real stream for errors and the CLI reports its one-line errors after the command. A
command that writes problems to stderr itself writes them to ``stderr()``, the real stream. The warnings of the
libraries in ``LIBRARY_WARNINGS`` (raised in their modules, or logged by their loggers) are for the libraries'
callers, not hubkit's users: they are shown from ``-v`` on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from hubkit.errors import redact

#: Levels: quiet (errors only), normal, -v, -vv.
QUIET, NORMAL, VERBOSE, DEBUG = range(4)
LOG_LEVELS = (logging.ERROR, logging.WARNING, logging.INFO, logging.DEBUG)

#: Environment variable -> its value at each level (None: the user's own value, else unset). Each library
#: reads its variable once, at import: huggingface_hub (progress bars, verbosity), transformers, datasets,
#: tqdm (every bar of every library, since tqdm 4.66), loguru (compressed-tensors logs through it at DEBUG).
LIBRARY_ENV: dict[str, tuple[str | None, str | None, str | None, str | None]] = {
    "HF_HUB_DISABLE_PROGRESS_BARS": ("1", None, None, None),
    "HF_HUB_VERBOSITY": ("error", None, "info", "debug"),
    "TRANSFORMERS_VERBOSITY": ("error", "error", "info", "debug"),
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": ("1", None, None, None),
    "DATASETS_VERBOSITY": ("error", None, "info", "debug"),
    "TQDM_DISABLE": ("1", None, None, None),
    "LOGURU_LEVEL": ("ERROR", "WARNING", "INFO", "DEBUG"),
}

#: Libraries whose deprecation notices and other warnings reach the terminal only with ``-v``: the warnings
#: raised in their modules, and their loggers' records below ERROR.
LIBRARY_WARNINGS = ("modelopt", "transformers")


@dataclass
class Settings:
    """The verbosity options as given so far (before and after the subcommand's name)."""

    quiet: bool = False
    verbose: int = 0
    debug: bool = False

    @property
    def level(self) -> int:
        return QUIET if self.quiet else min(NORMAL + self.verbose, DEBUG)


@dataclass
class _Session:
    stderr: TextIO | None
    environment: dict[str, str | None]
    settings: Settings = field(default_factory=Settings)
    handler: logging.Handler | None = None
    null: TextIO | None = None


_session: _Session | None = None


class _Format(logging.Formatter):
    """``hubkit: warning: ...`` for hubkit's records; a library's records carry the library's logger name."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage().rstrip()
        name = "hubkit" if record.name.split(".")[0] == "hubkit" else record.name
        return f"{name}: {record.levelname.lower()}: {message}"


def _redacting(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Log records made by ``factory`` with the credentials of URLs masked, whichever handler prints them (the
    libraries log each request's URL at ``-v``, some through handlers of their own)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        with contextlib.suppress(Exception):  # a record that cannot be formatted is the handler's to report
            message = record.getMessage()
            if redact(message) != message:
                record.msg, record.args = redact(message), None
        return record

    return make


@contextlib.contextmanager
def session() -> Iterator[Settings]:
    """One command's verbosity; what ``configure`` changed is put back at the end (hubkit may run in-process)."""
    global _session
    outer, root = _session, logging.getLogger()
    saved_level, saved_handlers, saved_factory = root.level, root.handlers[:], logging.getLogRecordFactory()
    saved_library_levels = {name: logging.getLogger(name).level for name in LIBRARY_WARNINGS}
    logging.setLogRecordFactory(_redacting(saved_factory))
    _session = _Session(sys.stderr, {name: os.environ.get(name) for name in LIBRARY_ENV})
    with warnings.catch_warnings():  # the filters that configure adds end with the session
        configure(_session.settings)
        try:
            yield _session.settings
        finally:
            current, _session = _session, outer
            sys.stderr = current.stderr
            if current.null is not None:
                current.null.close()
            for name, value in current.environment.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            root.handlers[:] = saved_handlers
            root.setLevel(saved_level)
            for name, library_level in saved_library_levels.items():
                logging.getLogger(name).setLevel(library_level)
            logging.setLogRecordFactory(saved_factory)


def configure(settings: Settings) -> None:
    """Apply ``settings`` to this process: library variables, ``logging`` levels, and stderr."""
    if _session is None:  # called outside a session (a library caller): only logging
        logging.basicConfig(level=LOG_LEVELS[settings.level])
        return
    _session.settings = settings
    level = settings.level
    for name, values in LIBRARY_ENV.items():
        value = values[level] if level != NORMAL else (_session.environment[name] or values[NORMAL])
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    root = logging.getLogger()
    if _session.handler is None:
        _session.handler = logging.StreamHandler(_session.stderr)  # the real stream, also under -q
        _session.handler.setFormatter(_Format())
        root.handlers[:] = [_session.handler]
    root.setLevel(LOG_LEVELS[level])
    _library_warnings(shown=level >= VERBOSE)
    if level == QUIET and _session.null is None:
        _session.null = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed when the session ends
        sys.stderr = _session.null
    elif level != QUIET and _session.null is not None:
        sys.stderr = _session.stderr
        _session.null.close()
        _session.null = None


def _library_warnings(shown: bool) -> None:
    """The warnings of ``LIBRARY_WARNINGS``: each shown once per place it is raised (deprecations too), or none."""
    warnings.filterwarnings("default" if shown else "ignore", module=rf"({'|'.join(LIBRARY_WARNINGS)})(\.|$)")
    for name in LIBRARY_WARNINGS:
        logging.getLogger(name).setLevel(logging.NOTSET if shown else logging.ERROR)


def stderr() -> TextIO:
    """The real standard error, also under ``-q`` (for a command's own error lines)."""
    if _session is not None and _session.stderr is not None:
        return _session.stderr
    return sys.stderr


def current() -> Settings:
    """The settings of the command running now (defaults outside a command)."""
    return _session.settings if _session is not None else Settings()
