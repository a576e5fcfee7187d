"""hubkit: take a quantized checkpoint to a correct, documented, verified Hugging Face Hub repo."""

__version__ = "0.1.0"
