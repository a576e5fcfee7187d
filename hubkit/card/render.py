"""Render a model card: front matter through huggingface_hub's ModelCardData, the body through Jinja2.

Templates run in Jinja2's sandbox, in a child process bounded in time, memory and output (see
``hubkit.card.sandbox``): a template folder is someone else's code, and the card it renders is published, so a
template reaches only the facts it is given (no attributes such as ``__globals__``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCardData

from hubkit.card.facts import (
    base_revision_words,
    checkpoint_facts,
    dataset_words,
    read_provenance,
    read_smoke,
    recipe_words,
)
from hubkit.card.pictures import draw_pictures
from hubkit.card.sandbox import render_template
from hubkit.checkpoint.model import Checkpoint
from hubkit.errors import HubkitError
from hubkit.manifest import Manifest
from hubkit.reads import read_regular_text
from hubkit.resources import data_dir
from hubkit.sizes import MiB

DEFAULT_TEMPLATE = "nvfp4"
ENTRY = "card.md.j2"
BASE_TAGS = ("nvfp4", "modelopt", "quantized")
#: The largest ``[card] sections`` file read (a section is a page of Markdown).
MAX_SECTION_BYTES = 1 * MiB


def _template_folders(template: str | None) -> tuple[list[Path], str]:
    """(the folders templates are looked up in, first match first; the entry template's name)."""
    builtin = data_dir("templates")
    name = template or DEFAULT_TEMPLATE
    if template and Path(template).is_dir():
        return [Path(template), builtin], ENTRY
    if (builtin / name / ENTRY).is_file():
        return [builtin], f"{name}/{ENTRY}"
    known = ", ".join(sorted(p.name for p in builtin.iterdir() if (p / ENTRY).is_file()))
    raise HubkitError(f"unknown card template '{name}'; use one of: {known}, or a folder holding {ENTRY}")


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


def render_card(
    checkpoint: Checkpoint, manifest: Manifest, template: str | None = None, pictures: Path | None = None
) -> str:
    """The README.md of a release; byte-identical for the same inputs. ``pictures``: the folder the card goes to;
    its pictures are drawn there (``assets/``, see ``hubkit.card.pictures``), and without it none is shown."""
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
    folders, entry = _template_folders(template or card.template)
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
        "pictures": draw_pictures(provenance, pictures).context() if pictures is not None else None,
    }
    body = render_template(folders, entry, context)
    metadata = front_matter(manifest, facts, hub_datasets).to_yaml()
    return _tidy(f"---\n{metadata}\n---\n\n{body}")


def _read_section(path: Path) -> str:
    return read_regular_text(path, limit=MAX_SECTION_BYTES, what="card section").strip()


def _tidy(text: str) -> str:
    """Trailing spaces off, a blank line before every heading, never two blank lines in a row."""
    lines = [line.rstrip() for line in text.splitlines()]
    joined = re.sub(r"\n(#{1,6} )", r"\n\n\1", "\n".join(lines))
    return re.sub(r"\n{3,}", "\n\n", joined).strip() + "\n"
