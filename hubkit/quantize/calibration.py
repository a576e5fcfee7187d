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
from hubkit.reads import MiB, open_regular

#: Known Hub datasets: (config, split, field holding the text or the chat messages).
HUB_DATASETS = {
    "cnn_dailymail": ("3.0.0", "train", "article"),
    "abisee/cnn_dailymail": ("3.0.0", "train", "article"),
    "nvidia/Nemotron-Post-Training-Dataset-v2": (None, "chat", "messages"),
}
TEXT_FIELDS = ("text", "article", "content", "messages", "conversations", "prompt")
#: The longest calibration record (a .jsonl line, a .txt block) read; a sample is cut to --calib-seq tokens anyway.
MAX_RECORD_BYTES = 16 * MiB


@dataclass(frozen=True)
class CalibrationSource:
    """One ``--calib`` value, resolved to a kind: jsonl, txt, parquet, disk (datasets.save_to_disk) or hub."""

    spec: str
    kind: str

    @classmethod
    def parse(cls, spec: str) -> CalibrationSource:
        path = Path(spec)
        if path.is_dir():
            if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
                return cls(spec, "disk")
            raise HubkitError(f"calibration folder {spec} is not a dataset saved with datasets.save_to_disk")
        if path.suffix in (".jsonl", ".txt", ".parquet"):
            if not os.path.lexists(path):
                raise HubkitError(f"calibration file {spec} does not exist")
            open_regular(path, what="calibration file").close()  # a FIFO or a device is refused, never read
            return cls(spec, path.suffix[1:])
        if path.exists():
            raise HubkitError(f"calibration file {spec} is not .jsonl, .txt or .parquet")
        return cls(spec, "hub")

    def records(self, limit: int) -> list[Any]:
        """Up to ``limit`` samples: strings, or lists of chat messages."""
        try:
            return list(_take(self._iterate(), limit))
        except HubkitError:
            raise
        except Exception as exc:  # unreadable files surface as many exception types
            raise HubkitError(f"cannot read calibration source {self.spec}: {type(exc).__name__}: {exc}") from exc

    def _iterate(self) -> Iterator[Any]:
        if self.kind == "txt":
            yield from self._blocks()
        elif self.kind == "jsonl":
            for number, line in self._lines():
                if line.strip():
                    try:
                        yield _sample(json.loads(line), f"{self.spec}:{number}")
                    except json.JSONDecodeError as exc:
                        raise HubkitError(f"{self.spec}:{number} is not JSON ({exc.msg}); fix the line") from exc
        else:
            for row in self._dataset():
                yield _sample(row, self.spec)

    def _lines(self) -> Iterator[tuple[int, str]]:
        """(number, line) of a local text file, streamed: each line at most :data:`MAX_RECORD_BYTES`."""
        with open_regular(Path(self.spec), what="calibration file") as stream:
            for number in itertools.count(1):
                line = stream.readline(MAX_RECORD_BYTES + 1)
                if not line:
                    return
                if len(line) > MAX_RECORD_BYTES:
                    raise HubkitError(
                        f"{self.spec}:{number} is longer than hubkit's limit of {MAX_RECORD_BYTES:,} bytes per "
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
                    f"{self.spec}:{number}: the block ending here is longer than hubkit's limit of "
                    f"{MAX_RECORD_BYTES:,} bytes per calibration record; separate samples by empty lines"
                )
        yield from _nonblank("".join(block))

    def _dataset(self) -> Any:
        import datasets

        if self.kind == "parquet":
            return datasets.load_dataset("parquet", data_files=self.spec, split="train")
        if self.kind == "disk":
            loaded = datasets.load_from_disk(self.spec)
            return loaded[next(iter(loaded))] if isinstance(loaded, datasets.DatasetDict) else loaded
        config, split, _ = HUB_DATASETS.get(self.spec, (None, "train", None))
        return datasets.load_dataset(self.spec, config, split=split, streaming=True)


def _nonblank(text: str) -> Iterator[str]:
    if text.strip():
        yield text.strip()


def _sample(row: Any, where: str) -> Any:
    if isinstance(row, str):
        return row
    if isinstance(row, dict):
        for field in TEXT_FIELDS:
            if row.get(field):
                return row[field]
    raise HubkitError(f"{where}: no text field ({', '.join(TEXT_FIELDS)}) in the record")


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
