"""HK9xx: the model card (README.md), when present, is well formed and agrees with the checkpoint."""

from __future__ import annotations

from collections.abc import Iterator

from hubkit.card.check import (
    MAX_CARD_BYTES,
    CardProblem,
    check_facts,
    check_front_matter,
    check_sections,
    comparable_facts,
    decode_card,
)
from hubkit.card.facts import checkpoint_facts
from hubkit.checkpoint.model import UnreadableFile
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

README = "README.md"


def _decoded(ctx: Context) -> tuple[str | None, CardProblem | None]:
    """The card's text, or why it cannot be read as one; (None, None) without a readable README.md."""
    entry = ctx.checkpoint.files.get(README)
    if entry is None or entry.problem is not None:  # missing: HK107; unreadable: HK113
        return None, None
    if entry.size > MAX_CARD_BYTES:
        return None, CardProblem("size", f"{README} is {entry.size:,} bytes, over hubkit's limit of {MAX_CARD_BYTES:,}")

    def compute() -> tuple[str | None, CardProblem | None]:
        try:
            return decode_card(ctx.checkpoint.read_file(README))
        except UnreadableFile as unreadable:
            return None, CardProblem("unreadable", f"{README} {unreadable.reason}")

    return ctx.memo("card_text", compute)


def _card_text(ctx: Context) -> str | None:
    return _decoded(ctx)[0]


def _issues(problems: list[CardProblem]) -> Iterator[Issue]:
    for problem in problems:
        yield Issue(problem.message, README, line=problem.line)


@check(
    "HK901", "card-front-matter", Severity.ERROR,
    what="README.md is UTF-8 text and starts with valid YAML front matter holding license, base_model, base_model_relation: quantized, "
    "pipeline_tag, library_name and tags (license 'other' also needs license_name and license_link).",
    why="The Hub builds the model tree, search and the license banner from these keys.",
)  # fmt: skip
def card_front_matter(ctx: Context) -> Iterator[Issue]:
    text, problem = _decoded(ctx)
    if problem is not None:  # reported once, here; the other card checks have no text to read
        yield Issue(problem.message, README, line=problem.line)
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
    "HK903", "card-facts", Severity.ERROR, requires=["config", "tensors"],
    what="Every number README.md states that the checkpoint can tell (module count, group size, KV dtype, layers, "
    "experts, parameter counts) agrees with the checkpoint.",
    why="Numbers retyped from logs drift; a card that contradicts its weights misleads every user.",
)  # fmt: skip
def card_facts(ctx: Context) -> Iterator[Issue]:
    text = _card_text(ctx)
    if text is not None:
        facts = comparable_facts(ctx.checkpoint, checkpoint_facts(ctx.checkpoint, ctx.modules))
        yield from _issues(check_facts(text, facts))
