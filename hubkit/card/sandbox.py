"""Card templates rendered in a child process bounded in time, memory and output.

A template folder is someone else's code. Jinja2's sandbox keeps it from Python internals, but not from
``{{ "x" * 10**10 }}``, from three nested ``range(100000)`` loops, or from a macro that calls itself. The
child process renders with a CPU-time limit and an address-space limit, streams the card and stops past
:data:`MAX_CARD_BYTES`; whatever stops it is one line naming the template (exit 2), never a MemoryError or
a hang. The child gets the facts, and of the environment only PATH, TMPDIR and the locale: no token.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import resource
import signal
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from jinja2.loaders import split_template_path

from hubkit.errors import HubkitError
from hubkit.reads import read_regular_text
from hubkit.sizes import MiB

#: The largest template file read (a card template is a few KiB).
MAX_TEMPLATE_BYTES = 1 * MiB
#: The largest card a template may render (the body, before the front matter).
MAX_CARD_BYTES = 1 * MiB
#: CPU seconds a render may take; a real card renders in well under one.
RENDER_SECONDS = 3
#: Memory a render may allocate beyond the child's own start-up.
RENDER_MEMORY = 512 * MiB
#: Wall-clock backstop for the child as a whole (start-up included, on a busy machine).
WALL_SECONDS = 60

_CHILD = "import sys, json; sys.path[:0] = json.loads(sys.argv[1]); from hubkit.card.sandbox import child; child()"


class _OutOfTime(BaseException):
    """The render used up its CPU seconds (a BaseException: no ``except Exception`` on the way swallows it)."""


def render_template(folders: list[Path], entry: str, context: dict[str, Any]) -> str:
    """The body ``entry`` (found in ``folders``, first match wins) renders from ``context``, in a bounded child."""
    payload = pickle.dumps({"folders": [str(f) for f in folders], "entry": entry, "context": context})
    shown = Path(folders[0], entry)
    environment = {name: os.environ[name] for name in ("PATH", "LANG", "LC_ALL", "TMPDIR") if name in os.environ}
    command = [sys.executable, "-I", "-c", _CHILD, json.dumps(sys.path)]
    try:
        done = subprocess.run(
            command, input=payload, capture_output=True, timeout=WALL_SECONDS, env=environment, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise HubkitError(f"card template {shown} did not finish within {WALL_SECONDS} s; simplify it") from exc
    except OSError as exc:
        raise HubkitError(f"cannot start the card renderer ({sys.executable}): {exc.strerror or exc}") from exc
    if done.returncode == 0:
        try:
            result = json.loads(done.stdout)
        except ValueError:
            result = {"error": f"card template {shown}: the renderer's answer could not be read"}
        if "error" in result:
            raise HubkitError(result["error"])
        return str(result["text"])
    if done.returncode == -signal.SIGXCPU:
        raise HubkitError(f"card template {shown} ran past its limit of {RENDER_SECONDS} s of CPU time; simplify it")
    if done.returncode == -signal.SIGKILL:
        raise HubkitError(f"card template {shown}: the renderer was killed (out of memory?); simplify the template")
    last = (done.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1][:200]
    raise HubkitError(f"card template {shown} stopped the renderer (exit status {done.returncode}: {last})")


def child() -> None:
    """The child's side: read the request from stdin, render within the limits, answer JSON on stdout."""
    request = pickle.load(sys.stdin.buffer)
    entry = str(Path(request["folders"][0], request["entry"]))
    try:
        _limit_resources()
        result = {"text": _render(request["folders"], request["entry"], request["context"])}
    except HubkitError as exc:
        result = {"error": str(exc)}
    except _OutOfTime:
        result = {"error": f"card template {entry} ran past its limit of {RENDER_SECONDS} s of CPU time; simplify it"}
    except MemoryError:
        result = {
            "error": f"card template {entry} needed more than {RENDER_MEMORY // MiB:,} MiB of memory; simplify it"
        }
    except RecursionError:
        result = {"error": f"card template {entry} nested calls too deeply (a macro calling itself?); simplify it"}
    sys.stdout.write(json.dumps(result))


def _limit_resources() -> None:
    """A CPU-time alarm (a clean error), a hard CPU limit behind it, and a cap on the address space."""

    def out_of_time(signum: int, frame: object) -> None:
        raise _OutOfTime

    signal.signal(signal.SIGPROF, out_of_time)
    signal.setitimer(signal.ITIMER_PROF, RENDER_SECONDS)
    used = resource.getrusage(resource.RUSAGE_SELF)
    hard = int(used.ru_utime + used.ru_stime) + RENDER_SECONDS + 2
    resource.setrlimit(resource.RLIMIT_CPU, (hard, hard))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    limit = pages * os.sysconf("SC_PAGE_SIZE") + RENDER_MEMORY
    _, hard_as = resource.getrlimit(resource.RLIMIT_AS)
    if hard_as == resource.RLIM_INFINITY or limit < hard_as:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard_as))


def _render(folders: list[str], entry: str, context: dict[str, Any]) -> str:
    shown = Path(folders[0], entry)
    environment = jinja2.sandbox.SandboxedEnvironment(
        loader=_BoundedLoader(folders),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    try:
        parts: list[str] = []
        size = 0
        for part in environment.get_template(entry).generate(context):
            size += len(part.encode("utf-8"))
            if size > MAX_CARD_BYTES:
                raise HubkitError(
                    f"card template {shown} rendered more than hubkit's limit of {MAX_CARD_BYTES:,} bytes; "
                    "a card is a page of Markdown"
                )
            parts.append(part)
        return "".join(parts)
    except (HubkitError, _OutOfTime, MemoryError, RecursionError):
        raise
    except jinja2.exceptions.SecurityError as exc:
        raise HubkitError(
            f"{_template_line(exc)}: the card template tried something the sandbox forbids ({str(exc).rstrip('.')}); "
            "a template may use the facts it is given, not Python internals"
        ) from exc
    except jinja2.TemplateSyntaxError as exc:
        raise HubkitError(
            f"{exc.filename or exc.name}:{exc.lineno}: card template syntax error: {exc.message}"
        ) from exc
    except jinja2.UndefinedError as exc:
        found = re.search(r"'([^']+)' is undefined|has no attribute '([^']+)'", str(exc))
        name = next((g for g in found.groups() if g), str(exc)) if found else str(exc)
        raise HubkitError(
            f"the card template needs the fact '{name}', which is missing; add it to the manifest"
        ) from exc
    except jinja2.TemplateError as exc:
        raise HubkitError(f"card template error: {exc}") from exc
    except Exception as exc:  # {{ 1 / 0 }}, range(10**9): the template's fault, not hubkit's
        raise HubkitError(f"{_template_line(exc)}: card template error: {type(exc).__name__}: {exc}") from exc


def _template_line(error: BaseException) -> str:
    """``template:line`` where rendering failed (Jinja2 puts template lines into the traceback)."""
    found = [
        f"{frame.filename}:{frame.lineno}"
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.endswith(".py")
    ]
    return found[-1] if found else "the card template"


class _BoundedLoader(jinja2.BaseLoader):
    """Jinja2's FileSystemLoader, reading only regular files of at most :data:`MAX_TEMPLATE_BYTES`.

    The first folder holding the name wins, whatever it is there: a FIFO or a link to ``/dev/zero`` named
    ``card.md.j2`` is refused, never waited on, read without end, or passed over for the built-in one."""

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, None]:
        pieces = split_template_path(template)
        for folder in self.folders:
            path = Path(folder, *pieces)
            if os.path.lexists(path):
                return read_regular_text(path, limit=MAX_TEMPLATE_BYTES, what="card template"), str(path), None
        raise jinja2.TemplateNotFound(template, f"{template!r} not found in {', '.join(self.folders)}")
