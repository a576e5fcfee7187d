"""Calibration text: Hub datasets (through ``datasets``), datasets saved on disk, and local text files."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hubkit.errors import HubkitError
from hubkit.manifest import CALIB_QUALIFIERS, calibration_qualifiers
from hubkit.reads import open_regular
from hubkit.sizes import MiB

#: Known Hub datasets: (config, split, field holding the text or the chat messages).
HUB_DATASETS = {
    "cnn_dailymail": ("3.0.0", "train", "article"),
    "abisee/cnn_dailymail": ("3.0.0", "train", "article"),
    "nvidia/Nemotron-Post-Training-Dataset-v2": (None, "chat", "messages"),
}
TEXT_FIELDS = ("text", "article", "content", "messages", "conversations", "prompt")
#: The longest calibration record (a .jsonl line, a .txt block) read; a sample is cut to --calib-seq tokens anyway.
MAX_RECORD_BYTES = 16 * MiB
#: The qualifiers each kind of source takes (see :func:`hubkit.manifest.calibration_qualifiers`).
QUALIFIERS = {
    "txt": (),
    "jsonl": ("column",),
    "parquet": ("column",),
    "disk": ("split", "column"),
    "hub": CALIB_QUALIFIERS,
}
KIND_WORDS = {
    "txt": "a .txt file",
    "jsonl": "a .jsonl file",
    "parquet": "a .parquet file",
    "disk": "a saved dataset",
    "hub": "a Hub dataset",
}


@dataclass(frozen=True)
class CalibrationSource:
    """One ``--calib`` value, resolved to a kind: jsonl, txt, parquet, disk (datasets.save_to_disk) or hub,
    with the config, split and text column it names (``SOURCE?config=NAME&split=NAME&column=NAME``)."""

    spec: str
    kind: str
    location: str
    config: str | None = None
    split: str | None = None
    column: str | None = None

    @classmethod
    def parse(cls, spec: str) -> CalibrationSource:
        try:
            location, qualifiers = calibration_qualifiers(spec)
        except ValueError as exc:
            raise HubkitError(
                f"calibration source {exc}; the form is SOURCE?config=NAME&split=NAME&column=NAME"
            ) from None
        kind = _kind(location)
        extra = [key for key in qualifiers if key not in QUALIFIERS[kind]]
        if extra:
            takes = ", ".join(f"{key}=" for key in QUALIFIERS[kind]) or "no qualifiers"
            drop = ", ".join(f"{key}=" for key in extra)
            raise HubkitError(f"calibration source {spec}: {KIND_WORDS[kind]} takes {takes}; drop {drop}")
        return cls(spec, kind, location, **qualifiers)

    @property
    def text_column(self) -> str | None:
        """The column named, else a known Hub dataset's, else None (the first of :data:`TEXT_FIELDS` found)."""
        if self.column or self.kind != "hub":
            return self.column
        return HUB_DATASETS.get(self.location, (None, None, None))[2]

    def provenance(self) -> dict[str, str]:
        """What the provenance keeps of this source: its location, kind and the qualifiers it names."""
        named = {"config": self.config, "split": self.split, "column": self.column}
        return {"spec": self.location, "kind": self.kind, **{k: v for k, v in named.items() if v}}

    def records(self, limit: int) -> list[Any]:
        """Up to ``limit`` samples: strings, or lists of chat messages."""
        try:
            return list(_take(self._iterate(), limit))
        except HubkitError:
            raise
        except Exception as exc:  # unreadable files and unreachable datasets surface as many exception types
            detail = " ".join(str(exc).split())[:500]
            raise HubkitError(f"cannot read calibration source {self.spec}: {type(exc).__name__}: {detail}") from exc

    def _iterate(self) -> Iterator[Any]:
        if self.kind == "txt":
            yield from self._blocks()
        elif self.kind == "jsonl":
            for number, line in self._lines():
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise HubkitError(f"{self.location}:{number} is not JSON ({exc.msg}); fix the line") from exc
                    yield from _sample(row, f"{self.location}:{number}", self.column)
        else:
            for row in self._dataset():
                yield from _sample(row, f"calibration source {self.spec}", self.text_column)

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(number, line) of a local text file, streamed: each line at most :data:`MAX_RECORD_BYTES`."""
        with open_regular(Path(self.location), what="calibration file") as stream:
            for number in itertools.count(1):
                line = stream.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_RECORD_BYTES:
                    raise HubkitError(
                        f"{self.location}:{number} is longer than hubkit's limit of {MAX_RECORD_BYTES:,} bytes per "
                        "calibration record; split it"
                    )
                yield number, line.decode("utf-8")

    def _blocks(self) -> Iterator[str]:
        """The blocks of a .txt file (text between empty lines), streamed: each at most :data:`MAX_RECORD_BYTES`."""
        block: list[str] = []
        size = 0
        for number, line in self._lines():
            if line == "\n":
                yield from _nonblank("".join(block))
                block, size = [], 0
                continue
            block.append(line)
            size += len(line)
            if size > MAX_RECORD_BYTES:
                raise HubkitError(
                    f"{self.location}:{number}: the block ending here is longer than hubkit's limit of "
                    f"{MAX_RECORD_BYTES:,} bytes per calibration record; separate samples by empty lines"
                )
        yield from _nonblank("".join(block))

    def _dataset(self) -> Any:
        import datasets

        if self.kind == "parquet":
            return datasets.load_dataset("parquet", data_files=self.location, split="train")
        if self.kind == "disk":
            loaded = datasets.load_from_disk(self.location)
            if not isinstance(loaded, datasets.DatasetDict):
                if self.split:
                    raise HubkitError(f"calibration source {self.spec}: the saved dataset has no splits; drop split=")
                return loaded
            return loaded[self._pick("split", self.split, list(loaded), next(iter(loaded)))]
        return self._hub_dataset(datasets)

    def _hub_dataset(self, datasets: Any) -> Any:
        """The named config and split of a Hub dataset, streamed; a name it lacks fails listing those it has."""
        known_config, known_split, _ = HUB_DATASETS.get(self.location, (None, None, None))
        configs = datasets.get_dataset_config_names(self.location)
        default = None if self.config or known_config else datasets.get_dataset_default_config_name(self.location)
        config = self._pick("config", self.config or known_config or default, configs, None)
        splits = datasets.get_dataset_split_names(self.location, config)
        fallback = "train" if "train" in splits else (splits[0] if len(splits) == 1 else None)
        split = self._pick("split", self.split or known_split, splits, fallback)
        return datasets.load_dataset(self.location, config, split=split, streaming=True)

    def _pick(self, what: str, name: str | None, names: list[str], fallback: str | None) -> str:
        """``name`` when the dataset has it, else ``fallback``; otherwise one line listing the names it has."""
        listed = ", ".join(names) or "none"
        if name is None and fallback is None:
            raise HubkitError(
                f"calibration source {self.spec}: the dataset has several {what}s ({listed}); "
                f"name one: {self.location}?{what}=NAME"
            )
        if name is not None and name not in names:
            raise HubkitError(f"calibration source {self.spec}: the dataset has no {what} '{name}'; {what}s: {listed}")
        return name or str(fallback)


def _kind(location: str) -> str:
    """The kind of source at ``location``: a local file or saved dataset by its path, else a Hub dataset."""
    path = Path(location)
    if path.is_dir():
        if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
            return "disk"
        raise HubkitError(f"calibration folder {location} is not a dataset saved with datasets.save_to_disk")
    if path.suffix in (".jsonl", ".txt", ".parquet"):
        if not os.path.lexists(path):
            raise HubkitError(f"calibration file {location} does not exist")
        open_regular(path, what="calibration file").close()  # a FIFO or a device is refused, never read
        return path.suffix[1:]
    if path.exists():
        raise HubkitError(f"calibration file {location} is not .jsonl, .txt or .parquet")
    return "hub"


def _nonblank(text: str) -> Iterator[str]:
    if text.strip():
        yield text.strip()


def _sample(row: Any, where: str, column: str | None) -> Iterator[Any]:
    """The text (or chat messages) of one record: its ``column``, else its first :data:`TEXT_FIELDS` field;
    nothing for an empty value of a named column."""
    if column is None and isinstance(row, str):
        yield row
        return
    if not isinstance(row, dict):
        raise HubkitError(f"{where}: a record is {type(row).__name__}, not an object with a text field")
    if column is None:
        found = next((row[field] for field in TEXT_FIELDS if row.get(field)), None)
        if found is None:
            raise HubkitError(
                f"{where}: no text field ({', '.join(TEXT_FIELDS)}) in the record; name its text column: "
                f"SOURCE?column=NAME (columns: {', '.join(row) or 'none'})"
            )
        yield found
        return
    if column not in row:
        raise HubkitError(f"{where}: no column '{column}'; columns: {', '.join(row) or 'none'}")
    value = row[column]
    if value is None or value == "" or value == []:
        return
    if not _is_text(value):
        texts = [name for name, held in row.items() if _is_text(held)]
        raise HubkitError(
            f"{where}: column '{column}' holds {type(value).__name__}, not text; "
            f"text columns: {', '.join(texts) or 'none'}"
        )
    yield value


def _is_text(value: Any) -> bool:
    """A string, or chat messages (a list of objects)."""
    return isinstance(value, str) or (
        isinstance(value, list) and bool(value) and all(isinstance(message, dict) for message in value)
    )


def _take(items: Iterator[Any], limit: int) -> Iterator[Any]:
    for count, item in enumerate(items):
        if count >= limit:
            return
        yield item


def tokenize(tokenizer: Any, samples: list[Any], seq_len: int) -> list[list[int]]:
    """Token ids per sample, chat samples through the tokenizer's chat template when it has one."""
    batches = []
    for sample in samples:
        if isinstance(sample, list) and getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(sample, tokenize=False)
        elif isinstance(sample, list):
            text = "\n".join(str(m.get("content", "")) if isinstance(m, dict) else str(m) for m in sample)
        else:
            text = str(sample)
        ids = tokenizer(text, truncation=True, max_length=seq_len)["input_ids"]
        if ids:
            batches.append(list(ids))
    return batches
