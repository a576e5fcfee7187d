"""Render a model card: front matter through huggingface_hub's ModelCardData, the body through Jinja2.

Templates run in Jinja2's sandbox: a template folder is someone else's code, and the card it renders is
published, so a template reaches only the facts it is given (no attributes such as ``__globals__``).
"""

from __future__ import annotations

import re
import traceback
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
from huggingface_hub import ModelCardData

from hubkit.card.facts import (
    base_revision_words,
    checkpoint_facts,
    dataset_words,
    read_provenance,
    read_smoke,
    recipe_words,
)
from hubkit.checkpoint.model import Checkpoint
from hubkit.errors import HubkitError
from hubkit.manifest import Manifest
from hubkit.resources import data_dir

DEFAULT_TEMPLATE = "nvfp4"
ENTRY = "card.md.j2"
BASE_TAGS = ("nvfp4", "modelopt", "quantized")


def _environment(template: str | None) -> tuple[jinja2.Environment, str]:
    builtin = data_dir("templates")
    folders = [builtin]
    name = template or DEFAULT_TEMPLATE
    if template and Path(template).is_dir():
        folders.insert(0, Path(template))
        entry = ENTRY
    elif (builtin / name / ENTRY).is_file():
        entry = f"{name}/{ENTRY}"
    else:
        known = ", ".join(sorted(p.name for p in builtin.iterdir() if (p / ENTRY).is_file()))
        raise HubkitError(f"unknown card template '{name}'; use one of: {known}, or a folder holding {ENTRY}")
    environment = jinja2.sandbox.SandboxedEnvironment(
        loader=jinja2.FileSystemLoader([str(f) for f in folders]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    return environment, entry


def serve_command(repo: str, manifest: Manifest, facts: dict[str, Any]) -> str:
    """The vLLM serve line with the flags this checkpoint needs."""
    assert manifest.card is not None
    serve = manifest.card.serve
    env = " ".join(f"{k}={v}" for k, v in sorted(serve.env.items()))
    lines = [f"{env + ' ' if env else ''}python3 -m vllm.entrypoints.openai.api_server", f"  --model {repo}"]
    lines.append(f"  --tensor-parallel-size {serve.tensor_parallel_size}")
    if facts["kv_cache_dtype"] == "FP8":
        lines.append("  --kv-cache-dtype fp8")
    if serve.tool_call_parser:
        lines.append(f"  --tool-call-parser {serve.tool_call_parser} --enable-auto-tool-choice")
    lines += [f"  {arg}" for arg in serve.extra_args]
    if facts["trust_remote_code"]:
        lines.append("  --trust-remote-code")
    return " \\\n".join(lines)


def front_matter(manifest: Manifest, facts: dict[str, Any], hub_datasets: list[str]) -> ModelCardData:
    card = manifest.card
    assert card is not None
    tags = list(dict.fromkeys([*BASE_TAGS, *([str(facts["model_type"])] if facts["model_type"] else []), *card.tags]))
    data: dict[str, Any] = {
        "license": card.license,
        "base_model": manifest.base.repo,
        "base_model_relation": "quantized",
        "pipeline_tag": card.pipeline_tag,
        "library_name": card.library_name,
        "tags": tags,
    }
    if card.license_name:
        data["license_name"] = card.license_name
    if card.license_link:
        data["license_link"] = card.license_link
    if hub_datasets:
        data["datasets"] = hub_datasets
    if card.evaluation:
        from huggingface_hub import EvalResult

        data["model_name"] = manifest.release.repo.split("/", 1)[1]
        data["eval_results"] = [
            EvalResult(
                task_type=r.task,
                dataset_type=r.dataset,
                dataset_name=r.dataset,
                metric_type=r.metric,
                metric_value=r.value,
            )
            for r in card.evaluation
        ]
    return ModelCardData(**data)


def render_card(checkpoint: Checkpoint, manifest: Manifest, template: str | None = None) -> str:
    """The README.md of a release; byte-identical for the same inputs."""
    card = manifest.card
    if card is None:
        raise HubkitError("the manifest has no [card] table; add one with at least 'license'")
    facts = checkpoint_facts(checkpoint)
    provenance = read_provenance(checkpoint)
    datasets, hub_datasets = dataset_words(provenance or {})
    versions = (provenance or {}).get("versions") or {}
    commit = versions.get("modelopt_commit")
    modelopt = f"(commit {commit})" if commit else f"{versions.get('nvidia-modelopt', '')}".strip()
    notes = list((provenance or {}).get("notes") or [])
    if ((provenance or {}).get("environment") or {}).get("CUDA_LAUNCH_BLOCKING") == "1":
        notes.append("Export was run with CUDA_LAUNCH_BLOCKING=1.")
    notes += card.notes
    environment, entry = _environment(template or card.template)
    base_dir = manifest.path.parent if manifest.path else Path.cwd()
    context = {
        "title": card.title or manifest.release.repo.split("/", 1)[1],
        "card": card.model_dump() | {"reference": card.links.get("reference")},
        "release": manifest.release.model_dump(),
        "base": manifest.base.model_dump(),
        "facts": facts,
        "provenance": provenance,
        "smoke": read_smoke(checkpoint),  # "validated on ..." only from a passed smoke record
        "recipe": ((provenance or {}).get("recipe") or {}).get("name"),
        "recipe_words": recipe_words((provenance or {}).get("recipe") or {}),
        "base_revision": base_revision_words(provenance or {}),
        "datasets": datasets,
        "modelopt": modelopt,
        "notes": notes,
        "license_text": card.license_text or card.license_name or card.license,
        "serve_command": serve_command(manifest.release.repo, manifest, facts),
        "extra_sections": [_read_section(base_dir / s) for s in card.sections],
    }
    try:
        body = environment.get_template(entry).render(context)
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
    metadata = front_matter(manifest, facts, hub_datasets).to_yaml()
    return _tidy(f"---\n{metadata}\n---\n\n{body}")


def _template_line(error: BaseException) -> str:
    """``template:line`` where rendering failed (Jinja2 puts template lines into the traceback)."""
    found = [
        f"{frame.filename}:{frame.lineno}"
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.endswith(".py")
    ]
    return found[-1] if found else "the card template"


def _read_section(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise HubkitError(f"cannot read card section {path}: {exc.strerror or exc}") from exc


def _tidy(text: str) -> str:
    """Trailing spaces off, a blank line before every heading, never two blank lines in a row."""
    lines = [line.rstrip() for line in text.splitlines()]
    joined = re.sub(r"\n(#{1,6} )", r"\n\n\1", "\n".join(lines))
    return re.sub(r"\n{3,}", "\n\n", joined).strip() + "\n"
