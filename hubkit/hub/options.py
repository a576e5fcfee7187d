"""The options of ``hubkit push``, declared in ``hubkit.options.push`` (with the manifest's ``[push]`` table)."""

from __future__ import annotations

from hubkit.options.push import PushOptions

__all__ = ["PushOptions"]
