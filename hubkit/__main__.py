"""Allow ``python -m hubkit``."""

from hubkit.cli import main

main()
