"""Allow ``python -m hubkit``."""

from hubkit.cli import run

run()
