"""The options of ``hubkit validate``, declared in ``hubkit.options.validate`` (with the manifest's
``[validate]`` table), and the codes their selectors must name."""

from __future__ import annotations

from hubkit.options.validate import ValidateOptions

__all__ = ["ValidateOptions", "check_codes"]


def check_codes() -> frozenset[str]:
    """The codes ``select``/``ignore`` must name (given to the manifest by the CLI and the Python API)."""
    from hubkit.validate.engine import all_checks

    return frozenset(check.code for check in all_checks())
