"""HK8xx: nothing executable or secret rides along with the weights."""

from __future__ import annotations

import contextlib
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from hubkit.checkpoint.model import INDEX, RECORD_DIR, UnreadableFile
from hubkit.validate.context import Context
from hubkit.validate.engine import Issue, Severity, check

PICKLE_EXTENSIONS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz", ".dill")
TEXT_EXTENSIONS = (
    ".json", ".py", ".md", ".txt", ".jinja", ".yaml", ".yml", ".toml", ".cfg", ".ini", ".sh", ".env", ".model",
    ".tiktoken", ".csv", ".ipynb",
)  # fmt: skip
MAX_SCANNED_TEXT_BYTES = 64 * 1024 * 1024

#: detect-secrets detectors with few false positives on model repos (no entropy or keyword guessing:
#: tokenizer vocabularies are full of high-entropy strings).
SECRET_PLUGINS = [
    "AWSKeyDetector", "ArtifactoryDetector", "AzureStorageKeyDetector", "DiscordBotTokenDetector",
    "GitHubTokenDetector", "GitLabTokenDetector", "JwtTokenDetector", "MailchimpDetector", "NpmDetector",
    "OpenAIDetector", "PrivateKeyDetector", "PypiTokenDetector", "SendGridDetector", "SlackDetector",
    "SquareOAuthDetector", "StripeDetector", "TelegramBotTokenDetector", "TwilioKeyDetector",
]  # fmt: skip


def _candidates(ctx: Context) -> Iterator[str]:
    for path, entry in ctx.checkpoint.files.items():
        if entry.problem is not None:
            continue  # never opened: HK113 reports it
        if not path.endswith(".safetensors") and not path.startswith(RECORD_DIR + "/") and not entry.is_symlink:
            yield path


def _looks_like_pickle(head: bytes) -> bool:
    return (
        (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)  # pickle protocol 2-5
        or head.startswith(b"PK\x03\x04")  # torch.save zip archive
        or head.startswith(b"\x93NUMPY")  # numpy arrays may hold pickled objects
    )


def pickle_files(ctx: Context) -> list[str]:
    def compute() -> list[str]:
        found = []
        for path in _candidates(ctx):
            if path.lower().endswith(PICKLE_EXTENSIONS):
                found.append(path)
            elif ctx.checkpoint.files[path].size >= 2:
                with contextlib.suppress(OSError):
                    if _looks_like_pickle(ctx.checkpoint.source.read_range(path, 0, 8)):
                        found.append(path)
        return found

    return ctx.memo("pickle_files", compute)


@check(
    "HK801", "pickle-file", Severity.WARNING,
    what="No pickle-capable file (by extension or magic bytes) is part of the release.",
    why="Loading a pickle can run arbitrary code; a safetensors release has no need for one.",
)  # fmt: skip
def pickle_file(ctx: Context) -> Iterator[Issue]:
    for path in pickle_files(ctx):
        yield Issue(f"{path} can hold a pickle; ship weights as safetensors and delete it", path)


@check(
    "HK802", "unsafe-pickle", Severity.ERROR,
    what="Pickle-capable files are scanned with picklescan; any dangerous or suspicious import is reported.",
    why="Such a file runs code on the machine of everyone who loads it.",
)  # fmt: skip
def unsafe_pickle(ctx: Context) -> Iterator[Issue]:
    if not pickle_files(ctx):
        return
    from picklescan.scanner import SafetyLevel, scan_file_path

    logging.getLogger("picklescan").setLevel(logging.CRITICAL)
    for path in pickle_files(ctx):
        local = ctx.checkpoint.source.local_path(path)
        if local is None:
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            result = scan_file_path(str(local))
        risky = sorted(
            {
                f"{g.module}.{g.name}"
                for g in result.globals
                if g.safety in (SafetyLevel.Dangerous, SafetyLevel.Suspicious)
            }
        )
        if risky:
            yield Issue(f"imports {', '.join(risky[:5])}; do not publish this file", path)
        elif result.scan_err:
            yield Issue("picklescan could not parse this pickle-capable file; delete it or convert it", path)


def redact(secret: str) -> str:
    """Enough of a secret to find it, never enough to use it."""
    return f"{secret[:4]}…({len(secret)} chars)" if len(secret) > 8 else "…"


def _scannable_text(ctx: Context, path: str) -> str:
    """The text to scan; the weight index without its name -> shard map (names are checked elsewhere), taken
    from the document already read (a remote index is tens of MB: it is fetched once)."""
    document = ctx.checkpoint.documents.get(path) if path == INDEX else None
    if document is not None and document.usable:
        return json.dumps({k: v for k, v in document.data.items() if k != "weight_map"}, indent=1)
    raw = ctx.checkpoint.read_file(path)
    if path == INDEX:
        try:
            parts = msgspec.json.decode(raw, type=dict[str, msgspec.Raw])
            rest = {k: msgspec.json.decode(v) for k, v in parts.items() if k != "weight_map"}
            return json.dumps(rest, indent=1)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError):
            pass  # not a JSON object: scanned as it is
    return raw.decode("utf-8", errors="replace")


def _secret_lines(text: str, detectors: list[Any]) -> list[int]:
    """Line numbers (1-based) where any detector's own pattern matches, found in one pass per pattern.

    detect-secrets runs every plugin on every line in Python, minutes for a 10 MB tokenizer file; its
    patterns run over the whole text at C speed first, and only the lines they hit go to detect-secrets.
    """
    lines: set[int] = set()
    for detector in detectors:
        for pattern in getattr(detector, "denylist", ()):
            for found in pattern.finditer(text):
                lines.add(text.count("\n", 0, found.start()) + 1)
    return sorted(lines)


@check(
    "HK803", "secret-in-file", Severity.ERROR,
    what="No text file holds an access token or private key (detect-secrets, plus Hugging Face token patterns).",
    why="A token in a public repo is leaked the moment it is pushed; revoke it and remove the file's copy.",
)  # fmt: skip
def secret_in_file(ctx: Context) -> Iterator[Issue]:
    from detect_secrets.core.scan import scan_line
    from detect_secrets.settings import get_plugins, transient_settings

    plugin = Path(__file__).resolve().parent.parent / "secret_plugins" / "huggingface.py"
    plugins = [{"name": name} for name in SECRET_PLUGINS]
    plugins.append({"name": "HuggingFaceTokenDetector", "path": plugin.as_uri()})
    checkpoint = ctx.checkpoint
    with transient_settings({"plugins_used": plugins}):
        detectors = list(get_plugins())
        for path in _candidates(ctx):
            entry = checkpoint.files[path]
            if entry.size > MAX_SCANNED_TEXT_BYTES or path in pickle_files(ctx):
                continue
            if not path.lower().endswith(TEXT_EXTENSIONS) and "." in path.rsplit("/", 1)[-1]:
                continue
            try:
                text = _scannable_text(ctx, path)
            except UnreadableFile as unreadable:
                yield Issue(f"{path} {unreadable.reason}; it was not scanned for secrets", path)
                continue
            all_lines = text.splitlines()
            for number in _secret_lines(text, detectors):
                if number > len(all_lines):
                    continue
                for secret in scan_line(all_lines[number - 1]):
                    shown = redact(secret.secret_value) if secret.secret_value else "…"
                    yield Issue(f"{secret.type} on line {number} ({shown}); revoke it and remove it", path)
