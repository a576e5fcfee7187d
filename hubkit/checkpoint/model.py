"""The one in-memory description of a checkpoint: files, parsed configs, index and tensor table."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from operator import attrgetter, itemgetter
from typing import Any

from hubkit.checkpoint.json_text import JsonProblem, decode_json, key_line
from hubkit.checkpoint.safetensors_header import ShardHeader, TensorInfo
from hubkit.checkpoint.source import CheckpointSource, FileEntry
from hubkit.records import RECORD_DIR as RECORD_DIR  # hubkit's own records: expected, never validated, never uploaded

CONFIG = "config.json"
QUANT_CONFIG = "hf_quant_config.json"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
INDEX = "model.safetensors.index.json"
JSON_FILES = (CONFIG, QUANT_CONFIG, GENERATION_CONFIG, TOKENIZER_CONFIG, INDEX)


_offsets_of = attrgetter("data_offsets")

#: Documents up to this size keep their text, so that findings can name the line of a key.
MAX_LOCATED_BYTES = 4 * 1024 * 1024


class JsonDocument:
    """A JSON file, parsed on first use (a large checkpoint's weight index is tens of MB), or why it
    could not be read or parsed: ``error`` is a phrase that follows the file's name ("is not valid
    JSON (...)"), ``error_line`` its line where one is known."""

    __slots__ = ("_data", "_error", "_line", "_raw", "_text", "escaped", "path", "quotes", "unreadable")

    def __init__(
        self,
        path: str,
        data: Any = None,
        error: str | None = None,
        *,
        raw: bytes | None = None,
        unreadable: bool = False,
    ) -> None:
        self.path, self._raw, self._data, self._error = path, raw, data, error
        self._line: int | None = None
        self._text: str | None = None
        #: the file itself could not be read: reported once as a file problem (HK113), not as bad JSON
        self.unreadable = unreadable
        #: the raw text's count of '"' and whether it holds a '\\' (known once parsed): with the parsed data they
        #: prove that no string of the file was dropped by the parser (a repeated key), for the secret scan
        self.quotes: int | None = None
        self.escaped = True

    def _parse(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            self.quotes, self.escaped = raw.count(b'"'), b"\\" in raw
            try:
                self._data = decode_json(raw)
            except JsonProblem as problem:
                self._error, self._line = problem.phrase, problem.line
            else:
                if len(raw) <= MAX_LOCATED_BYTES:
                    self._text = raw.decode("utf-8")

    @property
    def data(self) -> Any:
        self._parse()
        return self._data

    @property
    def error(self) -> str | None:
        self._parse()
        return self._error

    @property
    def error_line(self) -> int | None:
        self._parse()
        return self._line

    @property
    def usable(self) -> bool:
        """Read and parsed as a JSON object."""
        return isinstance(self.data, dict)

    def line_of(self, *path: str | int) -> int | None:
        """The line of ``path`` (keys and indices) in the file, when the file is small enough to search."""
        self._parse()
        return None if self._text is None else key_line(self._text, path)


class UnreadableFile(Exception):
    """A file of the checkpoint could not be read; the validator reports it as a finding naming the file."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path} {reason}")
        self.path = path
        self.reason = reason


@dataclass
class Checkpoint:
    """A checkpoint folder (local or on the Hub) as hubkit sees it."""

    source: CheckpointSource
    files: dict[str, FileEntry]
    documents: dict[str, JsonDocument]
    shards: dict[str, ShardHeader]

    @property
    def location(self) -> str:
        return self.source.location

    def line_of(self, name: str, *path: str | int) -> int | None:
        """The line of ``path`` in the JSON file ``name``; None when unknown."""
        doc = self.documents.get(name)
        return None if doc is None else doc.line_of(*path)

    def usable(self, name: str) -> bool:
        """Whether the JSON file ``name`` is present, readable and a JSON object."""
        doc = self.documents.get(name)
        return doc is not None and doc.usable

    @property
    def problems(self) -> dict[str, str]:
        """Path -> why it cannot be read, for every entry that cannot (each reported once, by HK113)."""
        return {path: entry.problem for path, entry in self.files.items() if entry.problem is not None}

    def is_folder(self, path: str) -> bool:
        """Whether ``path`` (not a listed file) is a folder of the checkpoint, even an empty one."""
        if any(p.startswith(path + "/") for p in self.files):
            return True
        local = self.source.local_path(path)
        if local is None or path.startswith("/") or ".." in path.split("/"):
            return False  # remote, or a name from a config that points out of the folder
        try:
            return local.is_dir()
        except OSError:  # a name too long for the file system, or not a name at all
            return False

    def read_file(self, path: str) -> bytes:
        """The whole of ``path``; an OSError becomes :class:`UnreadableFile` naming it."""
        entry = self.files[path]
        if entry.problem is not None:
            raise UnreadableFile(path, entry.problem)
        try:
            return self.source.read_range(path, 0, entry.size)
        except OSError as exc:
            raise UnreadableFile(path, f"cannot be read: {exc.strerror or exc}") from None

    def document(self, name: str) -> dict[str, Any] | None:
        """The parsed JSON object of ``name``, or None when missing or unreadable."""
        doc = self.documents.get(name)
        return doc.data if doc is not None and isinstance(doc.data, dict) else None

    @property
    def config(self) -> dict[str, Any]:
        return self.document(CONFIG) or {}

    @property
    def text_config(self) -> dict[str, Any]:
        """The language model's config: ``text_config`` for wrapped VLMs, else the config itself."""
        inner = self.config.get("text_config")
        return inner if isinstance(inner, dict) else self.config

    @property
    def quant_config(self) -> dict[str, Any] | None:
        return self.document(QUANT_CONFIG)

    @property
    def exclude_modules(self) -> list[str] | None:
        """The exclusion list of ``hf_quant_config.json``, or ``quantization_config.ignore``."""
        quant = (self.quant_config or {}).get("quantization")
        if isinstance(quant, dict) and isinstance(quant.get("exclude_modules"), list):
            return [str(p) for p in quant["exclude_modules"]]
        block = self.config.get("quantization_config")
        if isinstance(block, dict) and isinstance(block.get("ignore"), list):
            return [str(p) for p in block["ignore"]]
        return None

    @cached_property
    def tensors(self) -> dict[str, TensorInfo]:
        """Tensor name -> entry, over all shards (the first shard's entry for a name stored twice)."""
        table: dict[str, TensorInfo] = {}
        for header in reversed(self.shards.values()):
            table.update(header.tensors)
        return table

    @cached_property
    def duplicate_tensors(self) -> dict[str, list[str]]:
        """Tensor name -> every shard that declares it, for names declared more than once."""
        if sum(len(header.tensors) for header in self.shards.values()) == len(self.tensors):
            return {}
        owners: dict[str, list[str]] = {}
        for header in self.shards.values():
            for name in header.tensors:
                owners.setdefault(name, []).append(header.file)
        return {name: shards for name, shards in owners.items() if len(shards) > 1}

    @cached_property
    def shard_of(self) -> dict[str, str]:
        """Tensor name -> the shard that stores it (the first one, for a name stored twice)."""
        owners: dict[str, str] = {}
        for header in reversed(self.shards.values()):
            owners.update(dict.fromkeys(header.tensors, header.file))
        return owners

    @cached_property
    def total_tensor_bytes(self) -> int:
        offsets = list(map(_offsets_of, self.tensors.values()))
        return int(sum(map(itemgetter(1), offsets)) - sum(map(itemgetter(0), offsets)))


def parse_json_document(path: str, raw: bytes) -> JsonDocument:
    """A document for ``raw``, parsed when first read; a parse error is kept, not raised."""
    return JsonDocument(path, raw=raw)
