"""Check a model card: front matter parses and has the keys a quantized release needs, the sections are
there, and every number it states that the checkpoint can tell agrees with the checkpoint."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from hubkit.card.facts import approx
from hubkit.checkpoint.model import CONFIG, QUANT_CONFIG, Checkpoint
from hubkit.sizes import MiB

#: The largest model card read: a rendered card is at most 1 MiB of body, a hand-written one far less.
MAX_CARD_BYTES = 16 * MiB
REQUIRED_KEYS = ("license", "base_model", "base_model_relation", "pipeline_tag", "library_name", "tags")
REQUIRED_SECTIONS = (
    "Description", "License/Terms of Use", "Model Architecture", "Post Training Quantization",
    "Calibration Dataset", "Usage", "Evaluation",
)  # fmt: skip


@dataclass(frozen=True)
class CardProblem:
    kind: str  # "encoding" | "front-matter" | "sections" | "facts"
    message: str
    line: int | None = None


def decode_card(raw: bytes) -> tuple[str | None, CardProblem | None]:
    """The card's text, or the one problem that stops it being read as a card.

    A card that is not UTF-8 is a fault of the card (the Hub renders and parses cards as UTF-8), reported
    like any other problem of it, as ruff reports a file it cannot decode (E902) rather than stopping.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        return None, CardProblem(
            "encoding",
            f"the card is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start:,}); save it as UTF-8",
            line,
        )
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        return None, CardProblem("encoding", "the card holds NUL bytes: it is a binary file, not Markdown", line)
    return text.removeprefix("\ufeff"), None


def split_front_matter(text: str) -> tuple[str | None, int]:
    """(the YAML between the leading '---' lines or None, the line where the body starts)."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return None, 1
    for number, line in enumerate(lines[1:], 2):
        if line.strip() == "---":
            return "\n".join(lines[1 : number - 1]), number + 1
    return None, 1


def check_front_matter(text: str) -> list[CardProblem]:
    raw, _ = split_front_matter(text)
    if raw is None:
        return [CardProblem("front-matter", "no YAML front matter between '---' lines at the top", 1)]
    import yaml  # imported here: the validate path only needs it when a card is present

    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 2 if mark is not None else None  # +1 for 1-based, +1 for the opening '---'
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [CardProblem("front-matter", f"front matter is not valid YAML: {problem}", line)]
    except RecursionError:
        return [CardProblem("front-matter", "front matter is nested too deeply to be card metadata", 2)]
    if not isinstance(data, dict):
        return [CardProblem("front-matter", "front matter is not a mapping of keys", 2)]
    problems = [
        CardProblem("front-matter", f"front matter lacks '{key}'", 1) for key in REQUIRED_KEYS if key not in data
    ]
    if "base_model_relation" in data and data["base_model_relation"] != "quantized":
        problems.append(
            CardProblem(
                "front-matter", "base_model_relation must be 'quantized'", _key_line(raw, "base_model_relation")
            )
        )
    if data.get("license") == "other":
        problems += [
            CardProblem("front-matter", f"license 'other' needs '{key}'", _key_line(raw, "license"))
            for key in ("license_name", "license_link")
            if not data.get(key)
        ]
    return problems


def _key_line(raw: str, key: str) -> int | None:
    for number, line in enumerate(raw.splitlines(), 2):
        if line.startswith(f"{key}:"):
            return number
    return None


def check_sections(text: str) -> list[CardProblem]:
    headings = {m.group(1).strip() for m in re.finditer(r"^#{1,6}\s+(.+)$", text, re.MULTILINE)}
    return [CardProblem("sections", f"section '{s}' is missing") for s in REQUIRED_SECTIONS if s not in headings]


_STATEMENTS: list[tuple[str, str, Any]] = [
    ("quantized_modules", r"Quantized modules:\s*([\d,]+)", lambda m: int(m[1].replace(",", ""))),
    ("group_size", r"Group size:\s*(\d+)", lambda m: int(m[1])),
    ("kv_cache_dtype", r"KV cache:\s*([A-Za-z0-9]+)", lambda m: m[1]),
    ("routed_experts", r"(\d+) routed experts", lambda m: int(m[1])),
    ("shared_experts", r"\+ (\d+) shared experts?", lambda m: int(m[1])),
    ("layers", r"experts?, (\d+) layers\)", lambda m: int(m[1])),
    ("params", r"(~\d+[TBM]) total / (~\d+[TBM]) activated", lambda m: f"{m[1]} total / {m[2]} activated"),
]


def check_facts(text: str, facts: dict[str, Any]) -> list[CardProblem]:
    """Every derivable number the card states, against the checkpoint's facts."""
    expected = dict(facts)
    expected["params"] = f"{approx(facts['total_params'])} total / {approx(facts['activated_params'])} activated"
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        for fact, pattern, parse in _STATEMENTS:
            for found in re.finditer(pattern, line):
                stated, actual = parse(found), expected.get(fact)
                if actual is not None and stated != actual:
                    shown = f"{actual:,}" if isinstance(actual, int) else actual
                    problems.append(
                        CardProblem(
                            "facts", f"states {fact.replace('_', ' ')} {found[0]!r}; the checkpoint has {shown}", number
                        )
                    )
    return problems


def facts_blocker(checkpoint: Checkpoint) -> str | None:
    """Why the checkpoint's facts cannot be trusted for a comparison (a broken config or header), if so."""
    doc = checkpoint.documents.get(CONFIG)
    if doc is None:
        return f"{CONFIG} is missing"
    if not doc.usable:
        return f"{CONFIG} {doc.error or 'is not a JSON object'}"
    broken = [shard for shard in checkpoint.shards.values() if shard.fatal is not None or shard.bad_entries]
    if broken:
        return f"the header of {broken[0].file} cannot be read in full" + (
            f" (and {len(broken) - 1} more shards)" if len(broken) > 1 else ""
        )
    return None


#: Facts read from hf_quant_config.json: not compared while that file is missing or broken (HK401/HK102/HK113).
QUANT_FACTS = ("group_size", "kv_cache_dtype")


def comparable_facts(checkpoint: Checkpoint, facts: dict[str, Any]) -> dict[str, Any]:
    """The facts a card may be held to: none from a quant config that could not be read."""
    if checkpoint.usable(QUANT_CONFIG):
        return facts
    return {**facts, **dict.fromkeys(QUANT_FACTS)}


def check_card(text: str, facts: dict[str, Any] | None = None) -> list[CardProblem]:
    problems = check_front_matter(text) + check_sections(text)
    if facts is not None:
        problems += check_facts(text, facts)
    return problems
