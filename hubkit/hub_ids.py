"""The Hub's naming rules, checked once: repo ids (ORG/NAME), repo types, and branch, tag and revision names.

The repo id rules are huggingface_hub's ``validate_repo_id`` with the namespace required and ASCII only (the Hub
refuses other letters); revision names follow git's rules for ref names. The manifest, ``hf://`` references,
``hubkit push`` and the local Hub-compatible server all ask here, each wording its own answer (a manifest problem,
an exit 2, an HTTP 400).
"""

from __future__ import annotations

import re
from typing import TypeGuard

#: The repo types the Hub knows.
REPO_TYPES = ("model", "dataset", "space")
#: One part of a repo id: letters, digits, ``_``, ``-`` and ``.``, not starting or ending with ``-`` or ``.``.
_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?")
#: What git forbids in a ref name (control characters, ``~^:?*[\``, ``..``, ``//``, ``@{``, ``/.``, ``.lock``).
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]|\.\.|//|@\{|/\.|\.lock(?:/|$)")


def repo_id_problem(value: str) -> str | None:
    """Why ``value`` is not a Hub repo id of the form ORG/NAME, or None when it is one."""
    if value.count("/") != 1:
        return f"'{value}' is not a Hub repo id of the form ORG/NAME"
    if not all(_NAME.fullmatch(part) for part in value.split("/")):
        return (
            "Repo id must use alphanumeric chars, '-', '_' or '.'. The name cannot start or end with '-' or '.' and "
            f"the maximum length is 96: '{value}' (a Hub repo id is ORG/NAME)"
        )
    if "--" in value or ".." in value:
        return f"Cannot have -- or .. in repo_id: '{value}' (a Hub repo id is ORG/NAME)"
    if value.endswith(".git"):
        return f"Repo_id cannot end by '.git': '{value}' (a Hub repo id is ORG/NAME)"
    return None


def is_repo_id(value: str) -> bool:
    """Whether ``value`` is a Hub repo id of the form ORG/NAME."""
    return repo_id_problem(value) is None


def is_revision(value: object) -> TypeGuard[str]:
    """Whether ``value`` names a branch, a tag, ``refs/pr/N`` or a commit by git's rules for ref names."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and not _REF_FORBIDDEN.search(value)
        and not value.startswith(("/", ".", "-"))
        and not value.endswith(("/", "."))
        and value != "@"
    )
