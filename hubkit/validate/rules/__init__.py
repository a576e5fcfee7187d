"""The check families; importing this package registers every check."""

from hubkit.validate.rules import (  # noqa: F401
    exclusions,
    files,
    index,
    numerics,
    quant_config,
    safetensors,
    security,
    tensors,
)
