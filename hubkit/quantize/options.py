"""The options of ``hubkit quantize``, declared in ``hubkit.options.quantize`` (with the manifest's
``[quantize]`` table); light to import."""

from __future__ import annotations

from hubkit.options.quantize import MODES, QuantizeOptions

__all__ = ["MODES", "QuantizeOptions"]
