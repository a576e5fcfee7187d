"""The release manifest (``hubkit.toml``): one schema, validated with messages that name the key and line.

Tables: ``[release]`` and ``[base]`` (which repo, from what), ``[card]`` (the model card), and the stage tables
``[quantize]``, ``[validate]``, ``[push]``, ``[smoke]`` whose keys the release pipeline defines.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, WithJsonSchema
from pydantic_core import PydanticCustomError

from hubkit.errors import HubkitError
from hubkit.hub_ids import repo_id_problem
from hubkit.options import CHECK_CODES, table_model
from hubkit.options.push import PushOptions
from hubkit.options.quantize import CALIB_QUALIFIERS as CALIB_QUALIFIERS
from hubkit.options.quantize import QuantizeOptions
from hubkit.options.quantize import calibration_location as calibration_location
from hubkit.options.quantize import calibration_qualifiers as calibration_qualifiers
from hubkit.options.validate import ValidateOptions
from hubkit.output import Problem
from hubkit.reads import read_regular
from hubkit.sizes import MiB

#: What ``hubkit init`` writes where only the user knows the value; ``manifest check`` reports any left.
PLACEHOLDER = "CHANGE-ME"
#: At most this many manifest problems are listed; the rest are counted.
MAX_PROBLEMS = 20
#: The largest manifest read: a real one is a few KiB (a pull request controls the file `manifest check` reads).
MAX_MANIFEST_BYTES = 1 * MiB


def _repo_id(value: str) -> str:
    problem = repo_id_problem(value)
    if problem:
        raise PydanticCustomError("repo_id", "{problem}", {"problem": problem})
    return value


#: The shape of a repo id, for editors reading the JSON Schema; huggingface_hub's rules are checked on load.
REPO_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
RepoId = Annotated[str, AfterValidator(_repo_id), WithJsonSchema({"type": "string", "pattern": REPO_ID_PATTERN})]


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ReleaseTable(_Table):
    repo: RepoId = Field(description="Hub repo id, ORG/NAME")
    endpoint: str | None = None
    private: bool = False
    revision: str = "main"
    tag: str | None = None
    atomic: bool = True
    export: str | None = Field(
        default=None,
        description="an export made elsewhere (a folder, relative to the manifest) to release instead of quantizing; "
        "hubkit writes only its card and its records there",
    )


class BaseTable(_Table):
    repo: RepoId = Field(description="the base model's Hub repo id")
    revision: str | None = Field(default=None, description="the base's commit SHA (or branch/tag) to quantize")
    path: str | None = Field(default=None, description="a local copy of the base, if any")
    trust_remote_code: bool = Field(
        default=False, description="run the modelling code the base ships (auto_map); review that code first"
    )


class ServeTable(_Table):
    """How the card tells users to serve the model with vLLM."""

    image: str = "vllm/vllm-openai:latest"
    tensor_parallel_size: int = Field(default=8, ge=1)
    tool_call_parser: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    extra_args: list[str] = Field(default_factory=list)


class EvalResult(_Table):
    task: str
    dataset: str
    metric: str
    value: float
    baseline: float | None = None


class CardTable(_Table):
    template: str | None = Field(default=None, description="template name or folder (default: nvfp4)")
    title: str | None = None
    summary: str | None = Field(default=None, description="one-paragraph description; derived when absent")
    license: str
    license_name: str | None = None
    license_link: str | None = None
    license_text: str | None = Field(default=None, description="how the card names the license, e.g. 'Modified MIT'")
    pipeline_tag: str = "text-generation"
    library_name: str = "transformers"
    tags: list[str] = Field(default_factory=list)
    producer: str | None = Field(default=None, description="who made this release, for the card's wording")
    disclaimer: str | None = None
    links: dict[str, str] = Field(default_factory=dict)
    serve: ServeTable = ServeTable()
    evaluation: list[EvalResult] = Field(default_factory=list)
    evaluation_note: str = "Evaluation is pending and will be added."
    notes: list[str] = Field(default_factory=list, description="extra reproducibility notes")
    sections: list[str] = Field(default_factory=list, description="Markdown files appended as sections")


class QuantizeTable(table_model("QuantizeTable", QuantizeOptions, "quantize")):  # type: ignore[misc]
    """How the release quantizes: the keys of ``hubkit quantize`` (``hubkit.options.quantize``)."""


class ValidateTable(table_model("ValidateTable", ValidateOptions, "validate")):  # type: ignore[misc]
    """How the release validates: the keys of ``hubkit validate`` (``hubkit.options.validate``)."""


class PushTable(table_model("PushTable", PushOptions, "push")):  # type: ignore[misc]
    """How the release uploads: the keys of ``hubkit push`` (``hubkit.options.push``)."""


def _for_runner(runner: str) -> Any:
    """A ``[smoke]`` key that only one runner uses: set for the other runner, it is an error, not ignored."""

    def check(value: Any, info: ValidationInfo) -> Any:
        if value is not None and info.data.get("runner", "local") != runner:
            raise PydanticCustomError(
                "smoke_runner", "{key} is used only with runner = \"{runner}\"; set that runner or remove {key}",
                {"key": info.field_name, "runner": runner},
            )  # fmt: skip
        return value

    return AfterValidator(check)


class SmokeTable(_Table):
    """Where and how the smoke stage serves the pushed revision with vLLM."""

    enabled: bool = True
    required: bool = Field(default=False, description="fail the release when smoke cannot run on this runner")
    runner: Literal["local", "docker"] = Field(
        default="local", description="local: vllm on PATH or in 'environment'; docker: vLLM's container image"
    )
    environment: Annotated[str | None, _for_runner("local")] = Field(
        default=None, description="a Python environment (venv folder) whose bin/vllm serves; default: PATH"
    )
    image: Annotated[str | None, _for_runner("docker")] = Field(
        default=None, description="the vLLM image; default: [card.serve] image"
    )
    port: int = Field(default=8765, ge=1, le=65535, description="the port vLLM serves on (127.0.0.1)")
    prompts: list[str] = Field(default_factory=lambda: ["Write a haiku about GPUs."])
    max_tokens: int = Field(default=64, ge=1)
    timeout_s: int = Field(default=3600, ge=60)


def _quantize_or_export(table: Any, info: ValidationInfo) -> Any:
    """Exactly one of ``[quantize]`` (hubkit makes the export) and ``[release] export`` (it was made elsewhere)."""
    release = info.data.get("release")
    export = release.export if isinstance(release, ReleaseTable) else None
    if table is not None and export is not None:
        raise PydanticCustomError(
            "quantize_or_export", "[release] export names an export made elsewhere, and [quantize] would make "
            "one; remove the [quantize] table or [release] export", {},
        )  # fmt: skip
    if table is None and export is None and release is not None:
        raise PydanticCustomError(
            "quantize_missing", "missing; add a [quantize] table, or set [release] export to release an export "
            "made elsewhere", {},
        )  # fmt: skip
    return table


class Manifest(_Table):
    release: ReleaseTable
    base: BaseTable
    quantize: Annotated[QuantizeTable | None, AfterValidator(_quantize_or_export)] = Field(
        default=None, validate_default=True
    )
    card: CardTable | None = None
    validate_: ValidateTable = Field(default_factory=ValidateTable, alias="validate")
    push: PushTable = Field(default_factory=PushTable)
    smoke: SmokeTable = Field(default_factory=SmokeTable)

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, populate_by_name=True)

    @property
    def path(self) -> Path | None:
        return getattr(self, "_path", None)

    @property
    def made_elsewhere(self) -> bool:
        """Whether the release publishes an export made elsewhere (``[release] export``) rather than quantizing."""
        return self.release.export is not None

    @property
    def export(self) -> str:
        """The export's folder, relative to the manifest: ``[release] export`` or ``[quantize] out``."""
        if self.release.export is not None:
            return self.release.export
        assert self.quantize is not None  # the schema requires one of them
        return str(self.quantize.out)

    @property
    def export_key(self) -> str:
        """The manifest key that names the export's folder, for messages."""
        return "[release] export" if self.made_elsewhere else "[quantize] out"


def load_manifest(
    path: Path, overrides: list[str] | tuple[str, ...] = (), *, check_codes: Collection[str] | None = None
) -> Manifest:
    """Read and validate a manifest, with ``table.key=value`` overrides.

    Every problem becomes one HubkitError that lists them all, each naming its key and the manifest line
    that sets it, or the ``--set`` argument that did. With ``check_codes`` (the codes of hubkit's checks),
    ``[validate] select/ignore`` must each name one of them.
    """
    text, data, overridden = _read(path, overrides)
    try:
        manifest = Manifest.model_validate(data, context={CHECK_CODES: check_codes})
    except ValidationError as exc:
        raise HubkitError(_describe(path, _problems(path, text, exc, overridden))) from exc
    except RecursionError as exc:
        raise HubkitError(f"{path}: values nested too deeply; fix the file") from exc
    object.__setattr__(manifest, "_path", path)
    return manifest


def manifest_problems(
    path: Path, overrides: list[str] | tuple[str, ...] = (), *, check_codes: Collection[str] | None = None
) -> list[Problem]:
    """Every schema problem of the manifest at ``path``, each naming its file, line and key (``str()``: the line
    ``FILE:LINE: message``); empty when it is valid.

    An unreadable file or invalid TOML raises HubkitError (TOML parsing stops at the first error)."""
    text, data, overridden = _read(path, overrides)
    try:
        Manifest.model_validate(data, context={CHECK_CODES: check_codes})
    except ValidationError as exc:
        problems = _problems(path, text, exc, overridden)
    except RecursionError as exc:
        raise HubkitError(f"{path}: values nested too deeply; fix the file") from exc
    else:
        problems = []
    return problems + _placeholders(path, text, data, overridden)


def _placeholders(path: Path, text: str, data: Any, overridden: dict[tuple[str, ...], str]) -> list[Problem]:
    """A problem for each value that still holds a placeholder ``hubkit init`` wrote."""
    found = []
    for location, value in _values(data, ()):
        if isinstance(value, str) and PLACEHOLDER in value:
            problem = {
                "loc": location,
                "type": "placeholder",
                "msg": f"'{value}' is a placeholder 'hubkit init' left; fill it in",
            }
            found.append(_problem(path, text, problem, overridden))
    return found


def _values(data: Any, location: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    """(key parts, value) of every value in ``data``, tables and arrays opened."""
    if isinstance(data, dict):
        return [found for key, value in data.items() for found in _values(value, (*location, str(key)))]
    if isinstance(data, list):
        return [found for index, value in enumerate(data) for found in _values(value, (*location, str(index)))]
    return [(location, data)]


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``hubkit.toml``, generated from the pydantic model (for editors: taplo, Even Better TOML)."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["properties"]["quantize"] = {"$ref": "#/$defs/QuantizeTable"}  # TOML has no null: a table, or none
    schema["title"] = "hubkit release manifest (hubkit.toml)"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _read(path: Path, overrides: list[str] | tuple[str, ...]) -> tuple[str, dict[str, Any], dict[tuple[str, ...], str]]:
    """(the text, the parsed data with the overrides applied, key parts -> the --set that set them)."""
    try:
        raw = read_regular(path, limit=MAX_MANIFEST_BYTES, what="manifest")
    except HubkitError as exc:
        cause = exc.__cause__
        if isinstance(cause, OSError):  # missing, no permission: said as ever
            raise HubkitError(f"cannot read manifest {path}: {cause.strerror or cause}") from exc
        raise
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise HubkitError(
            f"{path}: not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x}); save it as UTF-8"
        ) from exc
    data = _parse(text, str(path), "fix the file")
    overridden: dict[tuple[str, ...], str] = {}
    for override in overrides:
        overridden[_apply_override(data, override)] = override
    return text, data, overridden


def _parse(text: str, where: str, fix: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HubkitError(f"{where}: not valid TOML ({exc}); {fix}") from exc
    except RecursionError as exc:  # tomllib parses nested arrays and tables recursively
        raise HubkitError(f"{where}: arrays or tables nested too deeply; {fix}") from exc


#: A ``--set`` value starting with one of these is TOML and must parse as TOML.
TOML_OPENERS = ('"', "'", "[", "{")


def override_value(raw: str, override: str) -> Any:
    """The value of ``--set TABLE.KEY=VALUE``.

    VALUE is read as a TOML value when it parses as one (``4``, ``true``, ``"text"``, ``["a", "b"]``,
    ``{ key = 1 }``, dates). A VALUE that starts with a quote, ``[`` or ``{`` must be valid TOML; any other
    VALUE that is not TOML is taken as the text it is, so ``--set quantize.out=my export`` needs no quotes.
    Quote a text that TOML would read as something else: ``--set 'release.tag="2024-05-01"'``.
    """
    where = f"--set {_shown(override)}"
    stripped = raw.strip()
    if stripped.startswith(TOML_OPENERS):
        parsed = _parse(f"value = {stripped}", where, "the value is TOML: quote text, close brackets")
        if list(parsed) != ["value"]:  # a second line that sets another key
            raise HubkitError(f"{where}: the value is more than one TOML value; set one key per --set")
        return parsed["value"]
    try:
        parsed = tomllib.loads(f"value = {stripped}")
    except (tomllib.TOMLDecodeError, RecursionError):
        return raw
    return parsed["value"] if list(parsed) == ["value"] else raw


#: Hugging Face tokens, masked wherever a ``--set`` argument is quoted back (``card.serve.env`` may hold one).
TOKEN = re.compile(r"hf_[A-Za-z0-9]{8,}")


def _shown(override: str) -> str:
    """A ``--set`` argument as a shell would take it back, on one line, with any token masked."""
    masked = TOKEN.sub("hf_***", override)
    return shlex.quote(masked) if masked.isprintable() else repr(masked)


def _apply_override(data: dict[str, Any], override: str) -> tuple[str, ...]:
    """Apply ``card.serve.tensor_parallel_size=4`` to ``data``; return the key's parts."""
    key, sep, raw = override.partition("=")
    parts = tuple(p.strip() for p in key.strip().split("."))
    if not sep or len(parts) < 2 or not all(parts):
        raise HubkitError(f"--set {_shown(override)} is not TABLE.KEY=VALUE")
    value = override_value(raw, override)
    target = data
    for depth, part in enumerate(parts[:-1]):
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            table = ".".join(parts[: depth + 1])
            raise HubkitError(f"--set {_shown(override)}: {table} is not a table; set a key of a table")
    target[parts[-1]] = value
    return parts


#: The members of a union as pydantic names them after the key (``push.batch.str``, ``push.batch.int``).
UNION_MEMBERS = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}


def _problems(path: Path, text: str, error: ValidationError, overridden: dict[tuple[str, ...], str]) -> list[Problem]:
    """One problem per key: a value that fits no member of a union is one problem naming every member."""
    errors: list[Any] = []
    unions: dict[tuple[Any, ...], list[str]] = {}
    for problem in error.errors():
        *key, member = problem["loc"]
        if member in UNION_MEMBERS and problem["type"].endswith("_type"):
            if tuple(key) not in unions:
                errors.append({**problem, "loc": tuple(key)})
            unions.setdefault(tuple(key), []).append(UNION_MEMBERS[member])
        else:
            errors.append(problem)
    for problem in errors:
        if problem["loc"] in unions:
            problem["msg"] = f"Input should be a valid {' or '.join(unions[problem['loc']])}"
    return [_problem(path, text, problem, overridden) for problem in errors]


def _describe(path: Path, problems: list[Problem]) -> str:
    """Every problem, one per line (a single problem stays one line)."""
    if len(problems) == 1:
        return str(problems[0])
    listed = [str(problem) for problem in problems[:MAX_PROBLEMS]]
    if len(problems) > MAX_PROBLEMS:
        listed.append(f"... and {len(problems) - MAX_PROBLEMS} more")
    return f"{path}: {len(problems)} problems in the manifest:\n  " + "\n  ".join(listed)


def _problem(path: Path, text: str, problem: Any, overridden: dict[tuple[str, ...], str]) -> Problem:
    location = [str(part) for part in problem["loc"]]
    key = ".".join(location)
    override = next(  # the --set that made this key, or a table above it, or a key below it
        (arg for parts, arg in overridden.items() if _nested(tuple(location), parts)),
        None,
    )
    origin = None if override is None else f"--set {_shown(override)}"
    line = None if override is not None else _line_of(text, location)
    kind = problem["type"]
    if kind == "extra_forbidden" and len(location) == 1 and isinstance(problem.get("input"), dict):
        message = f"unknown table '[{key}]'; check the spelling (see 'hubkit init' for every table)"
    elif kind == "extra_forbidden":
        message = f"unknown key '{key}'; check the spelling (see 'hubkit init' for every key)"
    elif kind == "missing":
        message = f"missing key '{key}'; add it to the manifest"
    else:
        message = f"'{key}': {problem['msg']}"
    return Problem(message, file=str(path), line=line, key=key, origin=origin)


def _nested(one: tuple[str, ...], other: tuple[str, ...]) -> bool:
    shorter = min(len(one), len(other))
    return one[:shorter] == other[:shorter]


def _line_of(text: str, location: list[str]) -> int | None:
    """The line that sets ``location`` (``card.serve.tensor_parallel_size`` -> its table, then its key)."""
    lines = text.splitlines()
    if len(location) == 1:  # a table's own header ([name], [name.sub], [[name]]) when it has one
        header = re.compile(r"^\s*\[{1,2}\s*" + re.escape(location[0]) + r"\s*[\].]")
        for number, line in enumerate(lines, 1):
            if header.match(line):
                return number
    table_line = 0
    while location and location[-1].isdigit():  # an item of a list: the line of the list's key
        location = location[:-1]
    key = location[-1] if location else ""
    tables = [part for part in location[:-1] if not part.isdigit()]
    if tables:
        header = re.compile(r"^\s*\[{1,2}\s*" + re.escape(".".join(tables)) + r"\s*\]{1,2}\s*$")
        for number, line in enumerate(lines, 1):
            if header.match(line):
                table_line = number
                break
        else:
            for number, line in enumerate(lines, 1):
                if re.match(r"^\s*\[\s*" + re.escape(tables[0]) + r"\s*\]", line):
                    table_line = number
                    break
    assignment = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for number in range(table_line + 1, len(lines) + 1):
        if number > table_line + 1 and re.match(r"^\s*\[", lines[number - 1]):
            break
        if assignment.match(lines[number - 1]):
            return number
    return table_line or None
