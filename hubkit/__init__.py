"""hubkit: take a quantized checkpoint to a correct, documented, verified Hugging Face Hub repo.

The Python API is ``hubkit.api`` (``from hubkit.api import validate``); ``import hubkit`` imports nothing else.
"""

__version__ = "0.1.0"
