"""The content of two versions of one file compared, with bounded output: JSON key by key, text by lines."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from hubkit.validate.exclusions import group_names

#: Changes listed per JSON file, diff lines per text file; what is left out is counted.
MAX_CHANGES = 40
MAX_DIFF_LINES = 60
#: Lines that differ (after the common head and tail) beyond which no line diff is computed, only located.
MAX_DIFFERING_LINES = 5000
#: A value longer than this (as JSON) is shown in short: its kind and size.
MAX_VALUE_CHARS = 120
#: Diff lines longer than this are cut (a minified file is one long line).
MAX_LINE_CHARS = 240
#: How many numbered-name groups a weight_map summary lists per kind of change.
MAX_GROUPS = 6

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*\Z")


def key_path(path: tuple[str | int, ...]) -> str:
    """``("text_config", "rope_theta")`` -> ``text_config.rope_theta``; indices as ``[3]``, odd keys quoted."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        elif _PLAIN_KEY.match(step):
            text += f".{step}" if text else step
        else:
            text += f"[{json.dumps(step)}]"
    return text or "(the whole document)"


def short_value(value: Any) -> Any:
    """``value`` itself when small, else a phrase naming its kind and size (output stays bounded)."""
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= MAX_VALUE_CHARS:
        return value
    if isinstance(value, dict):
        return f"<an object of {len(value):,} keys>"
    if isinstance(value, list):
        return f"<a list of {len(value):,} items>"
    if isinstance(value, str):
        return value[: MAX_VALUE_CHARS - 3] + "..."
    return text[: MAX_VALUE_CHARS - 3] + "..."


def _short_pair(left: Any, right: Any) -> tuple[Any, Any]:
    """Two changed values in short; two long strings are cut around their first difference."""
    if not (isinstance(left, str) and isinstance(right, str) and max(len(left), len(right)) > MAX_VALUE_CHARS):
        return short_value(left), short_value(right)
    common = next((i for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y), min(len(left), len(right)))
    start = max(0, common - 20)
    window = MAX_VALUE_CHARS - 6

    def cut(text: str) -> str:
        return ("..." if start else "") + text[start : start + window] + ("..." if len(text) > start + window else "")

    return cut(left), cut(right)


def _same(a: Any, b: Any) -> bool:
    """Equal scalars as JSON sees them (``1``, ``1.0`` and ``true`` are three different things); containers
    are never taken as equal here, since Python's ``==`` would equate them across types: their items are."""
    return not isinstance(a, (dict, list)) and type(a) is type(b) and a == b


def json_changes(a: Any, b: Any, *, index: bool = False) -> list[dict[str, Any]]:
    """Every difference between two JSON values, by key path: ``{"key", "change", "a", "b"}`` where ``change`` is
    "changed", "added" (no ``a``) or "removed" (no ``b``). ``index``: the weight map of a safetensors index is
    compared as a mapping of tensor to shard and summarised (``change`` "moved", "only in A", "only in B")."""
    changes: list[dict[str, Any]] = []
    stack: list[tuple[tuple[str | int, ...], Any, Any]] = [((), a, b)]
    while stack:  # iterative: no recursion however deep the documents go
        path, left, right = stack.pop()
        if _same(left, right):
            continue
        if index and path == ("weight_map",) and isinstance(left, dict) and isinstance(right, dict):
            changes += weight_map_changes(left, right)
        elif isinstance(left, dict) and isinstance(right, dict):
            pending = []
            for key in [*left, *(k for k in right if k not in left)]:
                if key not in right:
                    changes.append({"key": key_path((*path, key)), "change": "removed", "a": short_value(left[key])})
                elif key not in left:
                    changes.append({"key": key_path((*path, key)), "change": "added", "b": short_value(right[key])})
                else:
                    pending.append(((*path, key), left[key], right[key]))
            stack += reversed(pending)
        elif isinstance(left, list) and isinstance(right, list) and len(left) == len(right):
            stack += reversed([((*path, i), x, y) for i, (x, y) in enumerate(zip(left, right, strict=True))])
        elif isinstance(left, list) and isinstance(right, list):
            changes.append(_list_change(path, left, right))
        else:
            shown_left, shown_right = _short_pair(left, right)
            changes.append({"key": key_path(path), "change": "changed", "a": shown_left, "b": shown_right})
    return changes


def _list_change(path: tuple[str | int, ...], left: list[Any], right: list[Any]) -> dict[str, Any]:
    """Two lists of different lengths: which items went and came (by their JSON text), bounded."""
    texts_left = [json.dumps(x, sort_keys=True) for x in left]
    texts_right = [json.dumps(x, sort_keys=True) for x in right]
    known_left, known_right = set(texts_left), set(texts_right)
    removed = [x for x, t in zip(left, texts_left, strict=True) if t not in known_right]
    added = [x for x, t in zip(right, texts_right, strict=True) if t not in known_left]
    change: dict[str, Any] = {
        "key": key_path(path),
        "change": "changed",
        "a": f"<a list of {len(left):,} items>",
        "b": f"<a list of {len(right):,} items>",
    }
    if removed:
        change["removed"] = [short_value(x) for x in removed[:MAX_GROUPS]] + _more(len(removed))
    if added:
        change["added"] = [short_value(x) for x in added[:MAX_GROUPS]] + _more(len(added))
    return change


def _more(count: int) -> list[str]:
    return [f"... and {count - MAX_GROUPS:,} more"] if count > MAX_GROUPS else []


def weight_map_changes(left: dict[str, Any], right: dict[str, Any]) -> list[dict[str, Any]]:
    """The weight map compared as a mapping of tensor to shard: tensors moved, added and removed, grouped."""
    moved = [n for n in left if n in right and not _same(left[n], right[n])]
    kinds = (
        ("moved", moved),
        ("only in A", [n for n in left if n not in right]),
        ("only in B", [n for n in right if n not in left]),
    )
    return [
        {"key": "weight_map", "change": kind, "count": len(names), "tensors": group_names(names, MAX_GROUPS)}
        for kind, names in kinds
        if names
    ]


def render_change(change: dict[str, Any]) -> list[str]:
    """One JSON change as text lines (the first names the key)."""
    if "tensors" in change:
        what = "moved between shards" if change["change"] == "moved" else change["change"]
        title = f"{change['key']}: {plural(change['count'], 'tensor')} {what}"
        return [title, *(f"  {line}" for line in change["tensors"])]
    left = _show(change["a"]) if "a" in change else "(absent)"
    right = _show(change["b"]) if "b" in change else "(absent)"
    lines = [f"{change['key']}: {left} -> {right}"]
    lines += [f"  removed {_show(x)}" for x in change.get("removed", [])]
    lines += [f"  added {_show(x)}" for x in change.get("added", [])]
    return lines


def _show(value: Any) -> str:
    if isinstance(value, str) and value.startswith("<") and value.endswith(">"):
        return value
    return json.dumps(value, ensure_ascii=False)


_HUNK = re.compile(r"@@ -(\d+)((?:,\d+)?) \+(\d+)((?:,\d+)?) @@")


def line_diff(path: str, a: str, b: str) -> tuple[list[str], int]:
    """A unified diff of two texts (first MAX_DIFF_LINES lines) and how many diff lines were left out.

    Only the part between the common head and tail is diffed, so its cost is bounded by what differs;
    past MAX_DIFFERING_LINES the first differing line is named instead.
    """
    left, right = a.splitlines(), b.splitlines()
    head = 0
    while head < min(len(left), len(right)) and left[head] == right[head]:
        head += 1
    tail = 0
    while tail < min(len(left), len(right)) - head and left[-1 - tail] == right[-1 - tail]:
        tail += 1
    if max(len(left), len(right)) - head - tail > MAX_DIFFERING_LINES:
        return [f"{len(left):,} lines -> {len(right):,} lines; the first difference is at line {head + 1:,}"], 0
    start = max(0, head - 3)
    middle_left, middle_right = left[start : len(left) - max(0, tail - 3)], right[start : len(right) - max(0, tail - 3)]
    lines = []
    for line in difflib.unified_diff(middle_left, middle_right, f"a/{path}", f"b/{path}", lineterm="", n=3):
        found = _HUNK.fullmatch(line)
        if found:
            line = f"@@ -{int(found[1]) + start}{found[2]} +{int(found[3]) + start}{found[4]} @@"
        lines.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [cut]")
    if a.endswith("\n") != b.endswith("\n"):
        lines.append(f"(a newline at the end: {_yes(a.endswith(chr(10)))} -> {_yes(b.endswith(chr(10)))})")
    if not lines:
        lines = ["the lines read the same; the line endings or line separators differ"]
    return lines[:MAX_DIFF_LINES], max(0, len(lines) - MAX_DIFF_LINES)


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def plural(count: int, noun: str) -> str:
    """``1 key``, ``3 keys``."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def visible(line: str) -> str:
    """``line`` with control characters written as escapes: a file cannot draw on the terminal or add lines."""
    if line.isprintable():
        return line
    return "".join(c if c.isprintable() or c == "\t" else repr(c)[1:-1] for c in line)
