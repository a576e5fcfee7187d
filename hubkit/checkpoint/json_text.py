"""JSON files of a checkpoint read safely: any bytes give a value or one sentence saying what is wrong
(with its line where there is one), and the line of a key, for findings that point into a config.

The line finder is written by hand: JSON decoders keep no positions, and the libraries that map JSON
pointers to lines recurse once per nesting level (a hostile file is nested thousands deep).
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec

#: Deeper than any config; serde_json (the Rust side of the ecosystem) stops at 128.
MAX_JSON_DEPTH = 100


class JsonProblem(ValueError):
    """Why some bytes are not a usable JSON document: a phrase that follows the file's name."""

    def __init__(self, phrase: str, line: int | None = None) -> None:
        super().__init__(phrase)
        self.phrase = phrase
        self.line = line


def line_at(raw: bytes, offset: int) -> int:
    """The 1-based line of byte ``offset``."""
    return raw.count(b"\n", 0, max(0, offset)) + 1


_BYTE = re.compile(r"\(byte (\d+)\)")


def decode_json(raw: bytes) -> Any:
    """The value of ``raw``; raises :class:`JsonProblem` for anything that is not standard UTF-8 JSON
    (NaN, a lone surrogate, a number beyond float range, nesting deeper than MAX_JSON_DEPTH)."""
    try:
        value = msgspec.json.decode(raw)
    except UnicodeDecodeError:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JsonProblem(
                f"is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start:,})", line_at(raw, exc.start)
            ) from None
        raise JsonProblem("is not UTF-8 text") from None  # pragma: no cover - msgspec and Python agree
    except RecursionError:
        raise JsonProblem(f"is nested more than {MAX_JSON_DEPTH} levels deep") from None
    except msgspec.DecodeError as exc:
        found = _BYTE.search(str(exc))
        detail = _BYTE.sub("", str(exc)).split(" - at `")[0].removeprefix("JSON is malformed: ").strip()
        line = line_at(raw, int(found[1])) if found else None
        raise JsonProblem(f"is not valid JSON ({detail})", line) from None
    if nesting_depth(value) > MAX_JSON_DEPTH:
        raise JsonProblem(f"is nested more than {MAX_JSON_DEPTH} levels deep")
    return value


def nesting_depth(value: Any) -> int:
    """How many objects and arrays deep ``value`` goes, without recursion."""
    deepest = 0
    level = [value] if isinstance(value, (dict, list)) else []
    while level:
        deepest += 1
        if deepest > MAX_JSON_DEPTH:
            return deepest
        below: list[Any] = []
        for container in level:
            items = container.values() if isinstance(container, dict) else container
            below += [item for item in items if isinstance(item, (dict, list))]
        level = below
    return deepest


_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+')


def key_line(text: str, path: tuple[str | int, ...]) -> int | None:
    """The line where ``path`` (object keys and array indices) is written in the JSON ``text``: the line
    of its key, or of the element for an index; None when the path is not there."""
    if not path:
        return 1
    stack: list[list[Any]] = []  # per open container: [kind, key or index, expecting a key]
    line, scanned = 1, 0
    for token in _TOKEN.finditer(text):
        start = token.start()
        line += text.count("\n", scanned, start)
        scanned = start
        word = token.group()
        frame = stack[-1] if stack else None
        if word in ("{", "["):
            if frame is not None and frame[0] == "[" and _at(stack, path):
                return line
            stack.append(["{", None, True] if word == "{" else ["[", 0, False])
        elif word in ("}", "]"):
            if stack:
                stack.pop()
        elif word == ",":
            if frame is not None:
                if frame[0] == "{":
                    frame[2] = True
                else:
                    frame[1] += 1
        elif word == ":":
            continue
        elif frame is not None and frame[0] == "{" and frame[2]:
            frame[1] = _key(word)
            frame[2] = False
            if _at(stack, path):
                return line
        elif frame is not None and frame[0] == "[" and _at(stack, path):
            return line
    return None


def _key(token: str) -> str:
    if "\\" not in token:
        return token[1:-1]
    try:
        return str(json.loads(token))
    except ValueError:
        return token[1:-1]


def _at(stack: list[list[Any]], path: tuple[str | int, ...]) -> bool:
    return len(stack) == len(path) and all(frame[1] == step for frame, step in zip(stack, path, strict=True))
