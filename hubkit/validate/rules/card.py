"""HK9xx: the model card (README.md), when present, is well formed and agrees with the checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

from hubkit.card.check import CardProblem, check_facts, check_front_matter, check_sections
from hubkit.card.facts import checkpoint_facts
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

README = "README.md"


def _card_text(ctx: Context) -> str | None:
    entry = ctx.checkpoint.files.get(README)
    if entry is None:
        return None
    return ctx.memo(
        "card_text", lambda: ctx.checkpoint.source.read_range(README, 0, entry.size).decode("utf-8", "replace")
    )


def _issues(problems: list[CardProblem]) -> Iterator[Issue]:
    for problem in problems:
        where = f"line {problem.line}: " if problem.line else ""
        yield Issue(f"{where}{problem.message}", README)


@check(
    "HK901", "card-front-matter", Severity.ERROR,
    what="README.md starts with valid YAML front matter holding license, base_model, base_model_relation: quantized, "
    "pipeline_tag, library_name and tags (license 'other' also needs license_name and license_link).",
    why="The Hub builds the model tree, search and the license banner from these keys.",
)  # fmt: skip
def card_front_matter(ctx: Context) -> Iterator[Issue]:
    text = _card_text(ctx)
    if text is not None:
        yield from _issues(check_front_matter(text))


@check(
    "HK902", "card-sections", Severity.ERROR,
    what="README.md has the sections of a release card (description, license, architecture, quantization, "
    "calibration, usage, evaluation).",
    why="A release without them leaves users guessing how it was made and how to run it.",
)  # fmt: skip
def card_sections(ctx: Context) -> Iterator[Issue]:
    text = _card_text(ctx)
    if text is not None:
        yield from _issues(check_sections(text))


@check(
    "HK903", "card-facts", Severity.ERROR,
    what="Every number README.md states that the checkpoint can tell (module count, group size, KV dtype, layers, "
    "experts, parameter counts) agrees with the checkpoint.",
    why="Numbers retyped from logs drift; a card that contradicts its weights misleads every user.",
)  # fmt: skip
def card_facts(ctx: Context) -> Iterator[Issue]:
    text = _card_text(ctx)
    if text is not None:
        yield from _issues(check_facts(text, checkpoint_facts(ctx.checkpoint, ctx.modules)))
