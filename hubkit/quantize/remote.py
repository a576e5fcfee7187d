"""Remote code: Python files a base ships for transformers to import (``auto_map``); light to import.

transformers runs that code only with ``trust_remote_code=True``, and hubkit passes the user's choice, never a
value derived from the base: a base that ships code needs ``--trust-remote-code`` (manifest: ``[base]
trust_remote_code = true``), refused before anything is loaded.
"""

from __future__ import annotations

from typing import Any

from hubkit.errors import HubkitError

#: The files whose ``auto_map`` transformers follows (the model's config, the tokenizer's).
REMOTE_CODE_CONFIGS = ("config.json", "tokenizer_config.json")
FLAG = "--trust-remote-code"
MANIFEST_KEY = "[base] trust_remote_code = true"


def auto_map_targets(document: Any) -> list[str]:
    """Every class an ``auto_map`` names, at any depth: ``module.Class`` here, or ``ORG/NAME--module.Class``."""
    found: list[str] = []
    if isinstance(document, dict):
        for key, value in document.items():
            if key == "auto_map" and isinstance(value, dict):
                for target in value.values():
                    found += [t for t in (target if isinstance(target, list) else [target]) if isinstance(t, str)]
            else:
                found += auto_map_targets(value)
    elif isinstance(document, list):
        for item in document:
            found += auto_map_targets(item)
    return found


def remote_code(documents: dict[str, Any]) -> dict[str, list[str]]:
    """Per config file (name -> parsed JSON), the code its ``auto_map`` names: a local ``module.py``, or another
    repo's ``ORG/NAME--module.Class``; only files that name any."""
    named: dict[str, list[str]] = {}
    for name in REMOTE_CODE_CONFIGS:
        targets = auto_map_targets(documents.get(name))
        if targets:
            files = (t if "--" in t else t.rsplit(".", 1)[0].replace(".", "/") + ".py" for t in targets)
            named[name] = list(dict.fromkeys(files))
    return named


def refusal(named: dict[str, list[str]]) -> str | None:
    """The one-line refusal for a base that ships code when it is not trusted (None when it ships none)."""
    if not named:
        return None
    where = "; ".join(f"auto_map in {name}: {listed(files)}" for name, files in named.items())
    return f"the base ships its own modelling code ({where}); review it and pass {FLAG} (manifest: {MANIFEST_KEY})"


def listed(files: list[str], most: int = 5) -> str:
    """At most ``most`` names, each on one line of printable text (a config's strings are not trusted either)."""
    shown = [ascii(f)[1:-1] for f in files[:most]]
    return ", ".join(shown) + (f" and {len(files) - most} more" if len(files) > most else "")


def require_trust(documents: dict[str, Any], trusted: bool) -> None:
    """Refuse (exit 2) a base whose configs name code to run unless the user trusts it."""
    message = None if trusted else refusal(remote_code(documents))
    if message:
        raise HubkitError(message)
