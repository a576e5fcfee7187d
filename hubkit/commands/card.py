"""``hubkit card``: render a model card from checkpoint facts, or check one against its checkpoint."""

from __future__ import annotations

import os
from pathlib import Path

import click

from hubkit.commands._options import examples, format_option
from hubkit.errors import ExitCode, HubkitError
from hubkit.reads import read_regular
from hubkit.records import check_replaceable_file, write_text


@click.group(
    "card",
    epilog=examples(
        "hubkit card render ./Kimi-K2.6-NVFP4 --manifest hubkit.toml -o ./Kimi-K2.6-NVFP4/README.md",
        "hubkit card check ./Kimi-K2.6-NVFP4/README.md --checkpoint ./Kimi-K2.6-NVFP4",
    ),
)
def card_group() -> None:
    """Render or check the model card (README.md) of a release."""


@card_group.command(
    "render",
    epilog=examples(
        "hubkit card render ./Kimi-K2.6-NVFP4                     # the card on stdout (manifest: ./hubkit.toml)",
        "hubkit card render ./Kimi-K2.6-NVFP4 -o ./Kimi-K2.6-NVFP4/README.md --template ./my-template",
    ),
)
@click.argument("checkpoint")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), help="Release manifest (hubkit.toml).")
@click.option("--template", help="Template name (nvfp4) or a folder holding card.md.j2.")
@click.option(
    "-o", "--output", type=click.Path(path_type=Path), help="Write here instead of printing (its pictures beside it)."
)
def render_command(checkpoint: str, manifest_path: Path | None, template: str | None, output: Path | None) -> int:
    """Render the card of CHECKPOINT from its facts, its provenance record and the manifest.

    With -o, its pictures (an expert-coverage heatmap and a per-layer quantization-error plot, with the plots
    extra) are drawn beside it, in assets/; a card printed writes nothing and shows none."""
    from hubkit.card.render import render_card
    from hubkit.checkpoint import load_checkpoint
    from hubkit.manifest import load_manifest

    path = manifest_path or Path("hubkit.toml")
    if not os.path.lexists(path):  # anything else there is read as a regular file or refused, naming it
        raise HubkitError(f"manifest {path} not found; pass --manifest FILE (see examples/)")
    if output is not None:
        check_replaceable_file(output)  # a link, a FIFO, a device or a folder is refused before any work
    pictures = output.parent if output is not None else None
    text = render_card(load_checkpoint(checkpoint), load_manifest(path), template, pictures)
    if output is None:
        click.echo(text, nl=False)
    else:
        write_text(output, text)  # whole or not at all: never a half-written README
    return ExitCode.OK


@card_group.command(
    "check",
    epilog=examples(
        "hubkit card check README.md",
        "hubkit card check ./Kimi-K2.6-NVFP4/README.md --checkpoint ./Kimi-K2.6-NVFP4 --format json",
        "hubkit card check README.md --checkpoint hf://nvidia/Kimi-K2.6-NVFP4",
        "hubkit card check --manifest hubkit.toml      # the card where the manifest puts it, if it is there",
    ),
)
@click.argument("readme", type=click.Path(path_type=Path), required=False)
@click.option(
    "--manifest",
    "manifest_path",
    type=click.Path(path_type=Path),
    help="Check the card where this manifest puts it ([quantize] out/README.md); none there yet is a note, exit 0.",
)
@click.option("--checkpoint", help="Check the stated numbers against this checkpoint.")
@format_option("text", "json", "github")
def check_command(readme: Path | None, manifest_path: Path | None, checkpoint: str | None, output_format: str) -> int:
    """Check README.md: front matter, sections, and (with --checkpoint) every derivable number."""
    from hubkit.card.check import MAX_CARD_BYTES, CardProblem, check_card, comparable_facts, decode_card, facts_blocker
    from hubkit.card.facts import checkpoint_facts
    from hubkit.checkpoint import load_checkpoint
    from hubkit.output import Output, Problem

    output = Output(output_format, title="hubkit card check")
    if manifest_path is not None:
        if readme is not None:
            raise HubkitError("name the model card to check: README.md or --manifest hubkit.toml, not both")
        readme = card_of_manifest(manifest_path)
        if not readme.exists() and not readme.is_symlink():
            note = f"no model card at {readme} (where {manifest_path} puts it); the release renders and checks it"
            if output_format == "json":
                output.json(
                    {"schema": 1, "path": str(readme), "passed": True, "problems": [], "note": note}, indent=None
                )
            else:
                output.problem(Problem(note, severity="notice"))
            return ExitCode.OK
    elif readme is None:
        raise HubkitError("name the model card to check: README.md, or --manifest hubkit.toml")
    if not readme.is_file():
        state = "does not exist" if not readme.exists() else "is not a regular file"
        raise HubkitError(f"{readme} {state}; pass the model card (README.md) to check")
    raw = read_regular(readme, limit=MAX_CARD_BYTES, what="model card")
    text, unreadable = decode_card(raw)
    problems: list[CardProblem] = [] if unreadable is None else [unreadable]
    if text is not None:
        facts = None
        if checkpoint:
            loaded = load_checkpoint(checkpoint)
            blocker = facts_blocker(loaded)
            if blocker is None:
                facts = comparable_facts(loaded, checkpoint_facts(loaded))
            else:  # the checkpoint's own fault, reported once; 'hubkit validate' says more
                problems.append(CardProblem("checkpoint", f"numbers not checked: {checkpoint}: {blocker}"))
        problems += check_card(text, facts)
    if output_format == "json":
        output.json({"schema": 1, "path": str(readme), "passed": not problems,
                     "problems": [p.__dict__ for p in problems]})  # fmt: skip
        return ExitCode.OK if not problems else ExitCode.ARTIFACT_FAILED
    for problem in problems:
        output.problem(
            Problem(problem.message, file=str(readme), line=problem.line, code=problem.kind),
            title=f"card {problem.kind}",
        )
    output.echo(f"{'PASSED' if not problems else 'FAILED'}: {len(problems)} problems in {readme}")
    return ExitCode.OK if not problems else ExitCode.ARTIFACT_FAILED


def card_of_manifest(manifest_path: Path) -> Path:
    """Where the release puts the model card of ``manifest_path``: ``[quantize] out``/README.md, beside it."""
    from hubkit.manifest import load_manifest

    card: Path = manifest_path.parent / load_manifest(manifest_path).export / "README.md"
    if any(ord(character) < 32 or ord(character) == 127 for character in str(card)):
        raise HubkitError(f"{manifest_path}: [quantize] out has a control character; name a plain folder")
    return card
