"""The check families; importing this package registers every check."""

from hubkit.validate.rules import (  # noqa: F401
    card,
    cast,
    exclusions,
    files,
    index,
    numerics,
    quant_config,
    safetensors,
    security,
    tensors,
)
