"""The secret scan: access tokens and private keys in any bytes, found at C speed, confirmed by detect-secrets.

The bytes of a file are fed in order, in chunks of any size (memory stays bounded by a chunk and a small
overlap, so a token across two chunks is still found). Fast prefilters (literal-led regular expressions, each a
superset of some detectors' patterns) find candidate positions; the line around each is then handed to the
detectors themselves, which decide and name the secret. Tokens are ASCII, so a token inside binary content is
found as well. validate (HK803) and push use this one scanner; push runs it over the very bytes it hashes.
"""

from __future__ import annotations

import itertools
import json
import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from hubkit.checkpoint.safetensors_header import MAX_HEADER_BYTES, ShardHeader, parse_header

#: Bump when the prefilters or detectors change: a cached "scanned clean" record of an older scan is void.
SCANNER_VERSION = 1

#: detect-secrets detectors with few false positives on model repos (no entropy or keyword guessing:
#: tokenizer vocabularies are full of high-entropy strings).
SECRET_PLUGINS = [
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "DiscordBotTokenDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector", "NpmDetector",
    "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
]  # fmt: skip

#: Candidate positions: together a superset of every detector's matches (tests hold each detector to it).
PREFILTERS = [
    re.compile(pattern)
    for pattern in (
        rb"A(?:KC[a-zA-Z0-9]{10}|P[0-9A-F][a-zA-Z0-9]{8}|3T[A-Z0-9]|BIA|CCA|KIA|SIA|ccountKey=|C[a-z0-9]{32})",
        rb"\.[a-zA-Z0-9_-]{6}\.[a-zA-Z0-9_-]{27}",  # Discord
        rb"gh[pousr]_[A-Za-z0-9_]{36}",
        rb"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas)-",
        rb"GR1348941",
        rb"eyJ",
        rb"-us[0-9]",  # Mailchimp
        rb"_authToken=",  # npm
        rb"T3BlbkFJ",  # OpenAI
        rb"PRIVATE KEY",
        rb"PuTTY-User-Key-File-2",
        rb"pypi-AgE",
        rb"SG\.[a-zA-Z0-9_-]{22}\.",
        rb"sq0csp-",
        rb"k_live_",  # Stripe
        rb":[0-9A-Za-z_-]{35}",  # Telegram
        rb"SK[a-z0-9]{32}",  # Twilio
        rb"hf_[A-Za-z0-9]{30}",
        rb"api_org_[A-Za-z0-9]{30}",
    )
]
#: Prefilters for case-insensitive detectors, run over the lower-cased bytes.
LOWER_PREFILTERS = [re.compile(pattern) for pattern in (rb"aws", rb"xox", rb"hooks\.slack\.com")]

OVERLAP = 4096  # bytes kept from one chunk to the next: a token across the boundary is found whole
CONTEXT = 1024  # bytes each side of a candidate handed to the detectors (the line, cut to this)
SHORT_TOKEN = 512  # a candidate this far inside text just judged was judged with it
MAX_SECRETS = 20  # per file: enough to act on, and a hostile file cannot make the report huge


def redact(secret: str) -> str:
    """Enough of a secret to find it, never enough to use it."""
    return f"{secret[:4]}…({len(secret)} chars)" if len(secret) > 8 else "…"


@dataclass(frozen=True)
class Secret:
    """One secret found: its kind, where (``line 3``, ``byte 1,234``, ``the safetensors header``) and a redaction."""

    kind: str
    where: str
    shown: str

    def describe(self) -> str:
        return f"{self.kind} on {self.where} ({self.shown}); revoke it and remove it"


@cache
def detectors() -> tuple[Any, ...]:
    """The detectors, as plugin objects (imported as classes: no file path is involved, so any install path works)."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class

    from hubkit.validate.secret_plugins.huggingface import HuggingFaceTokenDetector

    classes: list[type[Any]] = list(get_mapping_from_secret_type_to_class().values())
    chosen = [cls() for cls in classes if cls.__name__ in SECRET_PLUGINS]
    return (*sorted(chosen, key=lambda d: type(d).__name__), HuggingFaceTokenDetector())


def confirm(text: str) -> list[tuple[str, str]]:
    """(kind, redacted value) of every secret the detectors find in ``text`` (no filters, no network)."""
    found: dict[tuple[str, str], None] = {}
    for detector in detectors():
        for value in detector.analyze_string(text):
            found[(detector.secret_type, redact(value))] = None
    return list(found)


def candidates(data: bytes | memoryview, start: int, end: int) -> list[int]:
    """Sorted positions in ``data[start:end]`` where a prefilter matches (matches may run past ``end``)."""
    hits: set[int] = set()
    for pattern in PREFILTERS:
        hits.update(found.start() for found in pattern.finditer(data, start) if found.start() < end)
    lowered = bytes(data).lower()
    for pattern in LOWER_PREFILTERS:
        hits.update(found.start() for found in pattern.finditer(lowered, start) if found.start() < end)
    return sorted(hits)


class _Stream:
    """The secrets in one stream of bytes, fed in order: contiguous chunks are scanned as one stream, with lines
    counted; after a skipped range (tensor data) positions are given as byte offsets."""

    def __init__(self) -> None:
        self.secrets: list[Secret] = []
        self._seen: set[tuple[str, str, str]] = set()
        self._window = b""  # the carried tail of the stream
        self._window_at = 0  # its absolute offset
        self._done_to = 0  # absolute offset up to which candidates were judged
        self._lines: int | None = 0  # newlines before the window; None once lines are unknown (after a gap)

    def feed(self, data: bytes | memoryview, offset: int) -> None:
        """Scan ``data``, the file's bytes from ``offset``."""
        if not len(data):
            return
        if offset != self._window_at + len(self._window):
            self.finish()
            self._window, self._window_at, self._done_to = b"", offset, offset
            self._lines = 0 if offset == 0 else None
        self._window = self._window + bytes(data) if self._window else bytes(data)
        self._scan(final=False)

    def finish(self) -> list[Secret]:
        """Scan what is left; the secrets found so far."""
        self._scan(final=True)
        return self.secrets

    def _scan(self, final: bool) -> None:
        window = self._window
        boundary = len(window) if final else len(window) - OVERLAP
        start = self._done_to - self._window_at
        if boundary <= start:
            return
        counted, lines, judged_to = 0, self._lines, 0
        for position in candidates(window, start, boundary):
            if len(self.secrets) >= MAX_SECRETS:
                break
            if position + SHORT_TOKEN <= judged_to:
                continue  # inside the text the detectors just read whole
            if lines is not None:
                lines += window.count(b"\n", counted, position)
                counted = position
            judged_to = self._judge(window, position, lines)
        keep = max(start, boundary - 64)  # a little before the boundary: look-behinds see their context
        if self._lines is not None:
            self._lines += window.count(b"\n", 0, keep)
        self._window, self._window_at = window[keep:], self._window_at + keep
        self._done_to = self._window_at + (boundary - keep)

    def _judge(self, window: bytes, position: int, lines: int | None) -> int:
        """Hand the line around ``position`` (at most CONTEXT bytes each side) to the detectors; where it ends."""
        low = max(0, position - CONTEXT)
        begin = window.rfind(b"\n", low, position) + 1 or low
        end = window.find(b"\n", position, position + CONTEXT)
        end = min(len(window), position + CONTEXT) if end < 0 else end
        where = f"line {lines + 1}" if lines is not None else f"byte {self._window_at + position:,}"
        for kind, shown in confirm(window[begin:end].decode("utf-8", errors="replace")):
            self.add(Secret(kind, where, shown))
        return end

    def add(self, secret: Secret) -> None:
        key = (secret.kind, secret.where, secret.shown)
        if key not in self._seen and len(self.secrets) < MAX_SECRETS:
            self._seen.add(key)
            self.secrets.append(secret)


_ASCII_ESCAPE = re.compile(rb"\\u00([2-7][0-9a-fA-F])")
_BYTE_ORDER_MARKS = {b"\xff\xfe": 0, b"\xfe\xff": 1}  # UTF-16 LE / BE: where each ASCII character's byte is


class StreamScan:
    """The secrets in one file's bytes, fed in order (in chunks of any size; see :class:`_Stream`). Two other
    readings of the same bytes are scanned where they apply: with JSON escapes of ASCII undone (``\\u0068f_``
    is ``hf_``), and, for a file that starts with a UTF-16 byte-order mark, its characters."""

    def __init__(self) -> None:
        self._plain = _Stream()
        self._unescaped: _Stream | None = None
        self._utf16: tuple[_Stream, int] | None = None

    def feed(self, data: bytes | memoryview, offset: int) -> None:
        """Scan ``data``, the file's bytes from ``offset``."""
        data = bytes(data)
        if offset == 0 and data[:2] in _BYTE_ORDER_MARKS:
            self._utf16 = (_Stream(), _BYTE_ORDER_MARKS[data[:2]])
        self._plain.feed(data, offset)
        if b"\\u00" in data:
            self._unescaped = self._unescaped or _Stream()
            self._unescaped.feed(_ASCII_ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), data), offset)
        if self._utf16 is not None:
            stream, parity = self._utf16
            first = (parity - offset) % 2
            stream.feed(data[first::2], (offset + first) // 2)

    def finish(self) -> list[Secret]:
        """Scan what is left; every secret found, each once."""
        found = list(self._plain.finish())
        seen = {(s.kind, s.shown) for s in found}
        for other in (self._unescaped, self._utf16[0] if self._utf16 else None):
            for secret in other.finish() if other is not None else []:
                if (secret.kind, secret.shown) not in seen:
                    seen.add((secret.kind, secret.shown))
                    found.append(secret)
        return found[:MAX_SECRETS]


def scan_bytes(data: bytes) -> list[Secret]:
    """The secrets in ``data``, a whole file."""
    scan = StreamScan()
    scan.feed(data, 0)
    return scan.finish()


def uncovered(ranges: Iterable[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """The parts of ``[0, length)`` that no range covers (tensor data declared by a header covers its range)."""
    gaps: list[tuple[int, int]] = []
    reached = 0
    for begin, end in sorted(ranges):
        if begin > reached:
            gaps.append((reached, min(begin, length)))
        reached = max(reached, end)
        if reached >= length:
            break
    if reached < length:
        gaps.append((reached, length))
    return [(b, e) for b, e in gaps if e > b]


_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
#: The prefilters for text whose digits were all made '0' (quantifiers like {36} kept as they are).
_ZEROED_PREFILTERS = [
    re.compile(re.sub(rb"\{[^}]*\}|[1-9]", lambda m: m[0] if m[0][:1] == b"{" else b"0", p.pattern)) for p in PREFILTERS
]


def scan_repetitive(data: bytes) -> list[Secret]:
    """The secrets in ``data``, a large file of lines that differ mostly in their numbers (a weight index, a list
    of tensor names): its distinct lines, digits made equal, go through the prefilters (a few KB instead of tens
    of MB); only when one matches is the whole of ``data`` scanned."""
    distinct = b"\n".join(set(data.translate(_DIGITS_TO_ZERO).split(b"\n")))
    if any(p.search(distinct) for p in _ZEROED_PREFILTERS) or any(p.search(distinct.lower()) for p in LOWER_PREFILTERS):
        return scan_bytes(data)
    return []


def header_secrets(header: ShardHeader, dtypes: Iterable[str] | None = None) -> list[Secret]:
    """The secrets in a parsed safetensors header's strings: tensor names, dtypes (``dtypes``, when the caller
    has them) and ``__metadata__``."""
    where = "the safetensors header"
    found = scan_repetitive("\n".join(header.tensors).encode("utf-8", errors="replace"))
    dtypes = {tensor.dtype for tensor in header.tensors.values()} if dtypes is None else dtypes
    metadata = json.dumps(header.metadata, ensure_ascii=False) if header.metadata is not None else ""
    found += scan_bytes("\n".join([*dtypes, metadata]).encode("utf-8", errors="replace"))
    return [Secret(s.kind, where, s.shown) for s in found]


class FileScan:
    """What push scans of one file while it hashes it: every byte, except the tensor data that a valid safetensors
    header declares (the header itself, and any byte outside its tensors, are scanned)."""

    def __init__(self, path: str, size: int) -> None:
        self.size = size
        self._stream = StreamScan()
        self._head: bytearray | None = bytearray() if path.endswith(".safetensors") else None
        self._ranges: list[tuple[int, int]] = [(0, 1 << 63)]  # absolute byte ranges to scan, in order
        self._next = 0  # the first range not yet passed
        self._escaped: list[Secret] = []

    def feed(self, chunk: bytes | memoryview, offset: int) -> None:
        """The file's bytes from ``offset`` (fed in order)."""
        if self._head is None:
            self._scan_ranges(chunk, offset)
            return
        self._head += chunk
        if len(self._head) < 8:
            return
        (length,) = struct.unpack("<Q", self._head[:8])
        if length == 0 or length > MAX_HEADER_BYTES or length > self.size - 8:
            head, self._head = bytes(self._head), None  # not a safetensors file: all of it is scanned
            self._scan_ranges(head, 0)
        elif len(self._head) >= 8 + length:
            head, self._head = bytes(self._head), None
            self._read_header(head, length)
            self._scan_ranges(head, 0)

    def _read_header(self, head: bytes, length: int) -> None:
        shard = ShardHeader("", self.size, header_length=length)
        raw = head[8 : 8 + length]
        parse_header(shard, raw)
        if shard.fatal is not None:
            return  # no valid header: no byte is proven tensor data
        start = 8 + length
        gaps = uncovered((t.data_offsets for t in shard.tensors.values()), self.size - start)
        self._ranges, self._next = [(0, start), *((start + b, start + e) for b, e in gaps), (self.size, 1 << 63)], 0
        if b"\\" in raw:  # escaped characters: the decoded names and metadata are scanned too
            self._escaped = header_secrets(shard)

    def _scan_ranges(self, chunk: bytes | memoryview, offset: int) -> None:
        end = offset + len(chunk)
        view = memoryview(chunk)
        while self._next < len(self._ranges) and self._ranges[self._next][1] <= offset:
            self._next += 1
        for begin, stop in itertools.islice(self._ranges, self._next, None):
            if begin >= end:
                break
            low, high = max(begin, offset), min(stop, end)
            self._stream.feed(view[low - offset : high - offset], low)

    def secrets(self) -> list[Secret]:
        """Every secret found, once all bytes were fed."""
        if self._head is not None:  # too short for the header it announces: no byte is proven tensor data
            head, self._head = bytes(self._head), None
            self._scan_ranges(head, 0)
        found = self._stream.finish()
        seen = {(s.kind, s.shown) for s in found}
        return found + [s for s in self._escaped if (s.kind, s.shown) not in seen]


def mask(text: str) -> str:
    """``text`` with every secret in it redacted (for messages that quote names: a file or tensor name may
    hold a token)."""
    data = text.encode("utf-8", errors="replace")
    if not candidates(data, 0, len(data)):
        return text
    for detector in detectors():
        for value in set(detector.analyze_string(text)):
            text = text.replace(value, redact(value))
    return text


def name_secrets(names: Iterable[str]) -> list[tuple[str, Secret]]:
    """(masked name, secret) for each name (a file's path) that holds a secret."""
    found = []
    for name in names:
        for secret in scan_bytes(name.encode("utf-8", errors="replace")):
            found.append((mask(name), Secret(secret.kind, "its name", secret.shown)))
    return found
