"""The release manifest (``hubkit.toml``): one schema, validated with messages that name the key and line.

Tables: ``[release]`` and ``[base]`` (which repo, from what), ``[card]`` (the model card), and the stage tables
``[quantize]``, ``[validate]``, ``[push]``, ``[smoke]`` whose keys the release pipeline defines.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from hubkit.errors import HubkitError

REPO_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ReleaseTable(_Table):
    repo: str = Field(pattern=REPO_ID, description="Hub repo id, ORG/NAME")
    endpoint: str | None = None
    private: bool = False
    revision: str = "main"
    tag: str | None = None
    atomic: bool = True


class BaseTable(_Table):
    repo: str = Field(pattern=REPO_ID, description="the base model's Hub repo id")
    revision: str | None = None
    path: str | None = Field(default=None, description="a local copy of the base, if any")


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


class QuantizeTable(_Table):
    out: str = Field(description="folder of the export, relative to the manifest")
    recipe: str | None = None
    profile: str | None = None
    calib: list[str] = Field(default_factory=list)
    calib_size: int = Field(default=512, ge=1)
    calib_seq: int = Field(default=512, ge=8)
    batch_size: int = Field(default=1, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    max_gpu_memory: str | None = None
    seed: int = 1234
    keep_intermediate: bool = False


class ValidateTable(_Table):
    profile: str | None = None
    reference: str | None = None
    deep: bool = False
    strict: bool = False


class PushTable(_Table):
    batch: str | int = "16"
    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    delete_extra: bool = False


class SmokeTable(_Table):
    enabled: bool = True
    prompts: list[str] = Field(default_factory=lambda: ["Write a haiku about GPUs."])
    max_tokens: int = Field(default=64, ge=1)
    timeout_s: int = Field(default=3600, ge=60)


class Manifest(_Table):
    release: ReleaseTable
    base: BaseTable
    quantize: QuantizeTable
    card: CardTable | None = None
    validate_: ValidateTable = Field(default_factory=ValidateTable, alias="validate")
    push: PushTable = Field(default_factory=PushTable)
    smoke: SmokeTable = Field(default_factory=SmokeTable)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @property
    def path(self) -> Path | None:
        return getattr(self, "_path", None)


def load_manifest(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> Manifest:
    """Read and validate a manifest, with ``table.key=value`` overrides; every problem becomes one
    HubkitError naming the key and line."""
    text, data = _read(path, overrides)
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        raise HubkitError(_describe(path, text, exc.errors()[0])) from exc
    object.__setattr__(manifest, "_path", path)
    return manifest


def manifest_problems(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Every schema problem of the manifest at ``path``, each naming the key and line; empty when it is valid.

    An unreadable file or invalid TOML raises HubkitError (TOML parsing stops at the first error)."""
    text, data = _read(path, overrides)
    try:
        Manifest.model_validate(data)
    except ValidationError as exc:
        return [_describe(path, text, problem) for problem in exc.errors()]
    return []


def manifest_json_schema() -> dict[str, Any]:
    """The JSON Schema of ``hubkit.toml``, generated from the pydantic model (for editors: taplo, Even Better TOML)."""
    schema = Manifest.model_json_schema(by_alias=True)
    schema["title"] = "hubkit release manifest (hubkit.toml)"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def _read(path: Path, overrides: list[str] | tuple[str, ...]) -> tuple[str, dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HubkitError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise HubkitError(f"{path}: not valid TOML ({exc}); fix the file") from exc
    for override in overrides:
        _apply_override(data, override)
    return text, data


def _apply_override(data: dict[str, Any], override: str) -> None:
    """``card.serve.tensor_parallel_size=4``: the value is read as TOML (numbers, booleans, lists), else text."""
    key, sep, raw = override.partition("=")
    parts = [p for p in key.strip().split(".") if p]
    if not sep or len(parts) < 2:
        raise HubkitError(f"--set {override!r} is not TABLE.KEY=VALUE")
    try:
        value = tomllib.loads(f"value = {raw}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw
    target = data
    for part in parts[:-1]:
        target = target.setdefault(part, {})
        if not isinstance(target, dict):
            raise HubkitError(f"--set {override!r}: {part} is not a table")
    target[parts[-1]] = value


def _describe(path: Path, text: str, problem: ErrorDetails) -> str:
    location = [str(part) for part in problem["loc"]]
    key = ".".join(location)
    line = _line_of(text, location)
    where = f"{path}:{line}" if line else str(path)
    kind = problem["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key '{key}'; check the spelling (see 'hubkit init' for every key)"
    if kind == "missing":
        return f"{where}: missing key '{key}'; add it to the manifest"
    return f"{where}: '{key}': {problem['msg']}"


def _line_of(text: str, location: list[str]) -> int | None:
    """The line that sets ``location`` (``card.serve.tensor_parallel_size`` -> its table, then its key)."""
    lines = text.splitlines()
    table_line = 0
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
