"""The quantization error of each decoder layer, measured right after the layer is calibrated.

For every enabled fake-quant weight quantizer of the layer (modelopt's own ``iter_weights_for_calibration``
pairs, so a transformers fused-experts module counts each expert's slice of its 3-D ``gate_up_proj`` and
``down_proj`` with that expert's own quantizer), the relative error ``||Q(W) - W||² / ||W||²`` of the quantizer
applied to its weight as calibrated, the same call modelopt makes when it folds a weight. Per layer: the mean
of those errors weighted by the weights' sizes, the largest and where it is, and how many weights were measured
(0: the recipe quantizes no weight in that layer). The MXFP4 cast quantizes without modelopt and measures none.

What it costs: one fake-quant pass over the layer's quantized weights (what one weight-only calibration pass
does), one weight at a time, so the extra memory is a few float32 copies of the largest single weight (one
expert's slice for fused experts); no forward pass, no data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hubkit.records import load_record, write_json

#: Where a layerwise run keeps the errors of its committed layers, beside its resume state.
LAYER_ERROR_FILE = "layer-error.json"
_QUANTIZER_SUFFIX = ".weight_quantizer"


@dataclass
class LayerErrors:
    """The errors of the decoder layers measured so far, by layer index; with ``path``, kept there after each
    layer so that a resumed run reports the layers an earlier run measured."""

    path: Path | None = None
    measuring: bool = True  # False: a process that does not report (a torchrun rank other than 0)
    layers: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None:
            kept = load_record(self.path)
            if isinstance(kept, list) and all(_well_formed(entry) for entry in kept):
                self.layers = {entry["layer"]: entry for entry in kept}

    def measure(self, index: int, layer: nn.Module, root: nn.Module | None = None) -> None:
        """Measure decoder layer ``index`` (``root``: the model it sits in, for offloaded weights)."""
        if not self.measuring:
            return
        self.layers[index] = {"layer": index, **layer_error(layer, root)}
        if self.path is not None:
            write_json(self.path, self.record(), indent=None)

    def record(self) -> list[dict[str, Any]]:
        """Provenance's ``layer_error``: one entry per measured layer, in layer order."""
        return [self.layers[index] for index in sorted(self.layers)]


@torch.no_grad()
def layer_error(layer: nn.Module, root: nn.Module | None = None) -> dict[str, Any]:
    """``mean`` (size-weighted), ``max`` and ``max_module`` of the relative errors of ``layer``'s quantized
    weights, and ``weights`` (how many); ``mean`` and ``max`` are None when it has none."""
    total = weighted = 0.0
    worst: tuple[float, str] | None = None
    count = 0
    for name, weight, quantizer in _quantized_weights(layer, root):
        reference = weight.float().contiguous()  # as modelopt's fold_weight hands a weight to its quantizer
        energy = float(reference.square().sum())
        if not energy:
            continue  # an all-zero weight has no relative error
        error = float((quantizer(reference).float() - reference).square().sum()) / energy
        if not math.isfinite(error):
            continue
        size = reference.numel()
        total, weighted, count = total + size, weighted + size * error, count + 1
        if worst is None or error > worst[0]:
            worst = (error, name)
    if worst is None:
        return {"mean": None, "max": None, "max_module": None, "weights": 0}
    return {"mean": weighted / total, "max": worst[0], "max_module": worst[1], "weights": count}


def _quantized_weights(layer: nn.Module, root: nn.Module | None) -> Iterator[tuple[str, torch.Tensor, Any]]:
    """(quantizer name, weight, quantizer) of every enabled fake-quant weight quantizer in ``layer``."""
    from modelopt.torch.quantization.nn import QuantModule
    from modelopt.torch.quantization.utils import enable_weight_access_and_writeback

    names = {id(module): name for name, module in layer.named_modules()}
    everything = dict(root.named_modules()) if root is not None else None
    for module in layer.modules():
        if not isinstance(module, QuantModule):
            continue
        access = (
            enable_weight_access_and_writeback(module, root, everything, writeback=False)
            if root is not None
            else nullcontext()
        )
        with access:
            for weight, quantizer in module.iter_weights_for_calibration():
                if _fake_quantizes(quantizer) and weight is not None and weight.numel():
                    yield names.get(id(quantizer), "").removesuffix(_QUANTIZER_SUFFIX), weight, quantizer


def _fake_quantizes(quantizer: Any) -> bool:
    """Whether ``quantizer`` (a TensorQuantizer, or a SequentialQuantizer of them) changes the weight it is
    applied to and hands back a tensor of its shape (enabled, fake quant)."""
    parts = list(quantizer) if isinstance(quantizer, nn.Sequential) else [quantizer]
    enabled = [q for q in parts if getattr(q, "is_enabled", False)]
    return bool(enabled) and all(getattr(q, "fake_quant", False) for q in enabled)


def _well_formed(entry: Any) -> bool:
    """An entry in the shape :meth:`LayerErrors.measure` writes (a damaged or tampered file is not read)."""
    if not isinstance(entry, dict) or set(entry) != {"layer", "mean", "max", "max_module", "weights"}:
        return False
    numbers = [entry["layer"], entry["weights"]]
    if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
        return False
    errors = [entry["mean"], entry["max"]]
    if entry["weights"] == 0:
        return errors == [None, None] and entry["max_module"] is None
    return all(isinstance(e, float) and math.isfinite(e) and e >= 0 for e in errors) and isinstance(
        entry["max_module"], str
    )
