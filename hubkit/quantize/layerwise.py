"""``--mode layerwise``: one decoder layer at a time on the device, read from the base's own shards, calibrated,
exported and freed; resumable after every layer.

What comes from the libraries, and what hubkit adds:

- **Layer discovery, activation capture and replay** are modelopt's ``LayerActivationCollector`` (the skip / run /
  capture machinery behind ``algorithm.layerwise``). A Kimi-shaped wrapper (``language_model.model.layers``),
  which modelopt's own discoverers miss, is registered through its ``register_decoder_layer_support`` hook.
- **Calibration of a layer** is the recipe's own modelopt algorithm (``mse_calibrate``, ``max_calibrate``, ...),
  looked up in modelopt's calibration-mode registry with the recipe's arguments, exactly as
  ``algorithm.layerwise`` calls it; under ``torchrun`` its amax synchronisation runs over torch.distributed.
- **Weights** are read from the base's shards by name when a layer is needed (the next layer in a background
  thread while this one calibrates, ``LayerReader``), INT4 ``pack-quantized`` modules moved packed to the
  calibration device and dequantized there by compressed-tensors' ``CompressedTensorsDequantizer``, a group of
  modules at a time (``dequantize_in_pieces``), and put into the model by transformers' own loader
  (``convert_and_load_state_dict_in_model``, with the model's conversion mapping, as ``from_pretrained`` does),
  so fused experts come out as they do on a whole-model load.
- **Export of a layer** runs modelopt's export steps (MoE input preparation, shared-input resmoothing, gate/up
  sync, the per-module export handlers, ``postprocess_state_dict``, the quant-aware reverse name conversion) on
  that layer, in the order ``export_hf_checkpoint`` runs them on a whole model; the quantization config comes
  from modelopt's ``get_quant_config`` over the whole model at the end, and the config files from the model's own
  ``save_pretrained``.

What hubkit writes itself, and why: modelopt's ``layerwise_calibrate`` keeps every calibrated layer's quantizer
buffers until a whole-model export at the end (for an NVFP4-MSE recipe about an eighth of the BF16 expert
weights, ~250 GB for Kimi), and its checkpoints keep every layer's activations; its streaming exporter writes a
different shard layout from the whole-model exporter. So the loop below (the same sequence as
``layerwise_calibrate``: capture the next layer's inputs with quantizers off, calibrate, move on) exports each
layer as soon as it is calibrated, keeps one layer of resume state, and writes shards in ``save_pretrained``'s
layout (``shards.py``), so a layerwise export is byte for byte the resident one.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import re
import shutil
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from hubkit.checkpoint.modules import is_int4_side_tensor
from hubkit.errors import HubkitError
from hubkit.progress import progress_bar
from hubkit.quantize import interrupts
from hubkit.quantize.layer_error import LayerErrors
from hubkit.quantize.shards import TORCH_DTYPES, ShardWriter
from hubkit.records import STATE_FILE, check_replaceable_file, load_record, replacing, write_json
from hubkit.sizes import MiB

log = logging.getLogger(__name__)
#: modelopt releases whose layerwise and export internals this module was checked against.
CHECKED_MODELOPT_VERSIONS = ("0.47",)
_WRITER_NUMBERS = ("max_bytes", "open_size", "total_size")
_PART = re.compile(r"__part_\d{5,}\.safetensors")
_PENDING = re.compile(r"pending-[\w.-]+\.safetensors")
OUTPUT_META = "output_meta.pt"
KV_CACHE_MAX_BOUND = 448  # modelopt's export: KV-cache scale = amax / 448 for FP8 and NVFP4 KV caches
_INT4_PARTS = (".weight_packed", ".weight_scale", ".weight_shape", ".weight_zero_point", ".weight_g_idx")
#: BF16 bytes of INT4 modules dequantized at once: the dequantizer's temporaries (unpacked integers, float
#: products) are a few times its output, so a piece bounds them however large the layer.
DEQUANTIZE_PIECE_BYTES = 256 * MiB
#: The parts of a layer's time in provenance's ``layer_parts`` (and the plan's ``part_seconds``).
PARTS = ("read", "dequantize", "calibrate", "error", "export", "write")
#: ``0`` turns off reading the next layer while this one calibrates (on unless the plan's host budget says no).
PREFETCH_ENV = "HUBKIT_LAYERWISE_PREFETCH"


def check_modelopt() -> None:
    import modelopt

    version = str(modelopt.__version__)
    if not version.startswith(CHECKED_MODELOPT_VERSIONS):
        raise HubkitError(
            f"--mode layerwise has not been checked with nvidia-modelopt {version} "
            f"(checked: {', '.join(CHECKED_MODELOPT_VERSIONS)}); use --mode resident or install one of those"
        )


def wrapped_decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """Decoder layers of a multimodal wrapper whose language model is itself a causal LM
    (``language_model.model.layers``, as Kimi-K2.x); modelopt's own discoverers stop one level short."""
    layers = getattr(getattr(getattr(model, "language_model", None), "model", None), "layers", None)
    if isinstance(layers, nn.ModuleList) and len(layers) and len({type(layer) for layer in layers}) == 1:
        return layers
    return None


def has_wrapped_decoder_layers(model: nn.Module) -> bool:
    return wrapped_decoder_layers(model) is not None


def register_layer_discovery() -> None:
    """Tell modelopt where a wrapper's decoder layers are (idempotent)."""
    from modelopt.torch.quantization.utils.layerwise_calib import LayerActivationCollector

    LayerActivationCollector.register_decoder_layer_support(has_wrapped_decoder_layers, wrapped_decoder_layers)


class BaseWeights:
    """The base's tensors, read by name from its own shards when needed (never copied). A compressed-tensors INT4
    module is read as its packed parts and dequantized to BF16 by compressed-tensors' own dequantizer."""

    def __init__(self, folder: Path, int4: bool) -> None:
        from hubkit.checkpoint import load_checkpoint

        checkpoint = load_checkpoint(str(folder))
        self.folder = folder
        self.info = checkpoint.tensors
        self.shard_of = checkpoint.shard_of
        self.dequantizer: Any = None
        if int4:
            from compressed_tensors.entrypoints.convert.converters import CompressedTensorsDequantizer

            self.dequantizer = CompressedTensorsDequantizer(folder)
        self.parts: dict[str, list[str]] = {}
        for name in self.info:
            if name.endswith(".weight_packed"):
                module = name.removesuffix(".weight_packed")
                self.parts[f"{module}.weight"] = [module + s for s in _INT4_PARTS if module + s in self.info]
            elif not is_int4_side_tensor(name, self.info):
                self.parts[name] = [name]

    def names(self) -> list[str]:
        """Tensor names as a BF16 checkpoint of the same model would have them."""
        return list(self.parts)

    def logical(self, name: str) -> tuple[torch.dtype, tuple[int, ...]]:
        """Dtype and shape of ``name`` as the model receives it (an INT4 weight: BF16, eight values per int32)."""
        info = self.info.get(name)
        if info is not None:
            return TORCH_DTYPES[str(info.dtype)], tuple(info.shape)
        packed = self.info[name.removesuffix(".weight") + ".weight_packed"]
        rows, words = packed.shape
        return torch.bfloat16, (rows, words * 8)

    def dtype(self, name: str) -> str | None:
        info = self.info.get(name)
        return None if info is None else str(info.dtype)

    def read(self, names: list[str], between: Callable[[], None] = interrupts.check) -> dict[str, torch.Tensor]:
        """The tensors of ``names`` as stored (INT4 modules as their packed parts), on the host; ``between`` runs
        after every tensor (the main thread's signal check, or a reader thread's stop check)."""
        from safetensors import safe_open

        wanted: dict[str, list[str]] = {}
        for name in names:
            for part in self.parts[name]:
                wanted.setdefault(self.shard_of[part], []).append(part)
        raw: dict[str, torch.Tensor] = {}
        for shard, parts in wanted.items():
            with safe_open(str(self.folder / shard), framework="pt") as handle:
                for part in parts:
                    # a copy: a view into the shard's mapping would keep every page of it read so far resident for
                    # as long as the tensor lives (the embeddings live the whole run): RSS grew with depth
                    raw[part] = handle.get_tensor(part).clone()
                    between()
        return raw

    def dequantize(self, raw: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
        """``raw`` (from :meth:`read`) as the model receives it: INT4 modules in BF16 on ``device``."""
        if self.dequantizer is None:
            return raw
        with _quiet():
            return dequantize_in_pieces(self.dequantizer, raw, device, DEQUANTIZE_PIECE_BYTES)


def dequantize_in_pieces(
    dequantizer: Any, raw: dict[str, torch.Tensor], device: torch.device, piece_bytes: int
) -> dict[str, torch.Tensor]:
    """compressed-tensors' dequantizer over ``raw``, on ``device``: the packed parts of INT4 modules (a quarter of
    their BF16 bytes) move there and are dequantized there (its ``process`` is plain torch arithmetic, which runs
    where its inputs are), a group of modules of at most ``piece_bytes`` BF16 bytes at a time (one module at
    least); the other tensors stay on the host, passed through by the dequantizer as it passes them. The result
    has the order of one ``process`` call over the whole of ``raw``."""
    modules = [name.removesuffix(".weight_packed") for name in raw if name.endswith(".weight_packed")]
    result: dict[str, torch.Tensor] = {}
    taken: set[str] = set()
    piece: dict[str, torch.Tensor] = {}
    size = 0
    for module in modules:
        parts = [module + suffix for suffix in _INT4_PARTS if module + suffix in raw]
        bf16 = raw[module + ".weight_packed"].numel() * 8 * 2  # eight 4-bit values per int32, two bytes each
        if piece and size + bf16 > piece_bytes:
            result.update(dequantizer.process(piece))
            piece, size = {}, 0
        piece.update((part, raw[part].to(device)) for part in parts)
        taken.update(parts)
        size += bf16
    if piece:
        result.update(dequantizer.process(piece))
    result.update(dequantizer.process({name: tensor for name, tensor in raw.items() if name not in taken}))
    return result


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Library chatter (modelopt prints to stdout, transformers draws its own loading bars) goes to stderr or
    nowhere, so ``--format json`` keeps a clean stdout."""
    from transformers.utils import logging

    hf_logging: Any = logging
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
            warnings.simplefilter("ignore")
            yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def drop_int4_block(config: Any) -> None:
    """The model is built in BF16: drop the compressed-tensors block, as the dequantized folder's config does."""
    for holder in (config, getattr(config, "text_config", None)):
        block = getattr(holder, "quantization_config", None)
        if holder is not None and block is not None:
            fields = block if isinstance(block, dict) else getattr(block, "to_dict", dict)()
            if not fields or fields.get("format") == "pack-quantized":
                with contextlib.suppress(AttributeError):
                    delattr(holder, "quantization_config")


class Skeleton:
    """The model on the meta device, its non-layer weights loaded; decoder layers materialized one at a time."""

    def __init__(self, base: Path, weights: BaseWeights, device: torch.device, remote: bool) -> None:
        import transformers
        from accelerate import init_empty_weights
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.modeling_utils import LoadStateDictConfig

        config = transformers.AutoConfig.from_pretrained(base, trust_remote_code=remote)
        drop_int4_block(config)
        auto: Any = transformers.AutoModelForCausalLM
        with _quiet(), init_empty_weights():
            self.model: Any = auto.from_config(config, dtype=torch.bfloat16, trust_remote_code=remote)
        if (base / "generation_config.json").is_file():
            self.model.generation_config = transformers.GenerationConfig.from_pretrained(base)
        self.model.config.name_or_path = str(base)
        self.model.eval()
        if getattr(self.model.config, "tie_word_embeddings", False) or getattr(
            getattr(self.model.config, "text_config", None), "tie_word_embeddings", False
        ):
            raise HubkitError("--mode layerwise does not handle tied embeddings yet; use --mode resident")
        self.weights = weights
        self.device = device
        self.load_config = LoadStateDictConfig(
            dtype=torch.bfloat16,
            dtype_plan=self.model._get_dtype_plan(torch.bfloat16),
            device_map={"": device},
            weight_mapping=cast(Any, get_model_conversion_mapping(self.model)),
        )
        register_layer_discovery()
        from modelopt.torch.quantization.utils.layerwise_calib import LayerActivationCollector

        layers = LayerActivationCollector.get_decoder_layers(self.model)
        if layers is None:
            raise HubkitError("modelopt finds no decoder layers in this model; use --mode resident")
        self.layers: nn.ModuleList = layers
        names = {id(m): n for n, m in self.model.named_modules()}
        self.layer_names = [names[id(layer)] for layer in layers]
        self.container = self.layer_names[0].rsplit(".", 1)[0] + "."
        self._check_mapping()
        rest = [n for n in weights.names() if not n.startswith(self.container)]
        self._load(weights.read(rest), self.model, "the model outside its decoder layers", skip=self.container)
        self._buffers_to_device(self.model)

    def _check_mapping(self) -> None:
        """Every tensor of the base through transformers' loader onto the meta device (no data read): proves the
        base fills the model before any work, and leaves the model with the conversions ``from_pretrained`` would
        have used (``_weight_conversions``), which modelopt's exporter reverses when it names exported tensors."""
        from transformers.core_model_loading import convert_and_load_state_dict_in_model
        from transformers.modeling_utils import LoadStateDictConfig

        placeholders = {}
        for name in self.weights.names():
            dtype, shape = self.weights.logical(name)
            placeholders[name] = torch.empty(shape, dtype=dtype, device="meta")
        config = LoadStateDictConfig(
            dtype=torch.bfloat16,
            dtype_plan=self.load_config.dtype_plan,
            device_map={"": "meta"},
            weight_mapping=self.load_config.weight_mapping,
        )
        with _quiet():
            info, _ = convert_and_load_state_dict_in_model(self.model, placeholders, config)
        parameters = {n for n, _ in self.model.named_parameters()}
        missing = sorted(parameters & set(info.missing_keys))
        problems = (
            sorted(info.unexpected_keys) + [str(k[0]) for k in info.mismatched_keys] + list(info.conversion_errors)
        )
        if missing or problems:
            raise HubkitError(
                f"the base's tensors do not match the model built from its config (missing {missing[:3]}, "
                f"unexpected {problems[:3]}); use --mode resident"
            )

    def layer_tensor_names(self, index: int) -> list[str]:
        prefix = self.layer_names[index] + "."
        return [n for n in self.weights.names() if n.startswith(prefix)]

    def materialize(self, index: int, raw: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Decoder layer ``index`` with its weights, from ``raw`` (its tensors as :meth:`BaseWeights.read` gives
        them) or read now."""
        layer: nn.Module = self.layers[index]
        if raw is None:
            raw = self.weights.read(self.layer_tensor_names(index))
        self._load(raw, layer, self.layer_names[index])
        self._buffers_to_device(layer)
        return layer

    def _load(self, raw: dict[str, torch.Tensor], scope: nn.Module, what: str, skip: str | None = None) -> None:
        from transformers.core_model_loading import convert_and_load_state_dict_in_model

        tensors = self.weights.dequantize(raw, self.device)
        del raw
        with _quiet():
            info, _ = convert_and_load_state_dict_in_model(self.model, tensors, self.load_config)
        del tensors
        missing = [n for n, p in scope.named_parameters() if p.is_meta and not (skip and n.startswith(skip))]
        problems = (
            sorted(info.unexpected_keys) + [str(k[0]) for k in info.mismatched_keys] + list(info.conversion_errors)
        )
        if missing or problems:
            raise HubkitError(
                f"the base's tensors do not fill {what} (missing {missing[:3]}, unexpected {problems[:3]}); "
                "use --mode resident"
            )

    def _buffers_to_device(self, scope: nn.Module) -> None:
        for module in scope.modules():
            for key, buffer in module._buffers.items():
                if buffer is not None and not buffer.is_meta and buffer.device != self.device:
                    module._buffers[key] = buffer.to(self.device)


def calibration_function(algorithm: dict[str, Any] | None) -> tuple[Callable[..., Any] | None, dict[str, Any]]:
    """The recipe's calibration function and its arguments, as modelopt's calibration mode would call it."""
    from modelopt.torch.quantization.mode import BaseCalibrateModeDescriptor, CalibrateModeRegistry

    algorithm = dict(algorithm or {})
    method = algorithm.get("method")
    descriptor = CalibrateModeRegistry[BaseCalibrateModeDescriptor._get_mode_name(method, check=True)]
    if not type(descriptor)._supports_layerwise:
        raise HubkitError(f"modelopt's '{method}' calibration cannot run one layer at a time; use --mode resident")
    kwargs = descriptor.config_class(**algorithm).model_dump()
    for key in ("method", "layerwise", "moe_calib_experts_ratio"):
        kwargs.pop(key, None)
    return type(descriptor)._calib_func, kwargs


def outside_layer_quantizers(model: nn.Module, container: str) -> list[str]:
    """Enabled quantizers outside the decoder layers: never fed activations one layer at a time."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, TensorQuantizer) and module.is_enabled and not name.startswith(container)
    ]


def _detached_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` that owns its tensors, leaving ``module`` itself on the meta device.

    modelopt's export handlers rewrite the modules they export (packed weights, new scale buffers), while its
    ``get_quant_config`` must see the calibrated modules as they were before export. So the tensors move to a
    structural copy that is exported, and the original keeps its quantizers (on meta) for the config at the end.
    """
    tensors = [(n, t.detach()) for n, t in module.named_parameters(remove_duplicate=False)]
    buffers = [(n, b) for n, b in module.named_buffers(remove_duplicate=False) if b is not None]
    module.to("meta")
    clone = copy.deepcopy(module)
    for name, tensor in tensors:
        owner, _, leaf = name.rpartition(".")
        clone.get_submodule(owner)._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
    for name, buffer in buffers:
        owner, _, leaf = name.rpartition(".")
        clone.get_submodule(owner)._buffers[leaf] = buffer
    return clone


@dataclass
class PartTimes:
    """Seconds of one layer's parts (``PARTS``), as provenance's ``layer_parts`` records them:

    - ``read``: its tensors from the base's shards to the host (with prefetch, the reader thread's own time, spent
      while the layer before calibrated), and ``read_wait``: how long the loop waited for them;
    - ``dequantize``: INT4 to BF16 on the device, and the loader putting the tensors into the layer;
    - ``calibrate``: the recipe's calibration, including capturing the next layer's inputs from this one;
    - ``error``: the weight quantization error of the calibrated layer (``layer_error.py``);
    - ``export``: modelopt's export steps for the layer, and freeing the exported copy (a garbage collection);
    - ``write``: the shard writer, and the commit of the resume state.
    """

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys((*PARTS, "read_wait"), 0.0))

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - began

    def rounded(self) -> dict[str, float]:
        return {name: round(value, 4) for name, value in self.seconds.items()}


class _Stopped(Exception):
    """The reader thread was told to stop (the run ended or failed)."""


class LayerReader:
    """The decoder layers' tensors as read from the base's shards (host tensors, INT4 still packed). With
    ``prefetch``, :meth:`ahead` reads a layer in one background thread while the loop works on the one before: at
    most one layer ahead. An error in the thread is raised by :meth:`take`; the thread never outlives the ``with``
    block (it stops after the tensor it is reading)."""

    def __init__(self, skeleton: Skeleton, prefetch: bool) -> None:
        self.skeleton = skeleton
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="hubkit-prefetch") if prefetch else None
        self._ahead: tuple[int, Future[tuple[dict[str, torch.Tensor], float]]] | None = None

    def __enter__(self) -> LayerReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._ahead = None
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ahead(self, index: int) -> None:
        """Start reading layer ``index`` in the background (nothing without prefetch, or past the last layer)."""
        if self._pool is not None and index < len(self.skeleton.layers):
            self._ahead = (index, self._pool.submit(self._read, index, self._stopping))

    def take(self, index: int, times: PartTimes) -> dict[str, torch.Tensor]:
        """Layer ``index``'s tensors: those read ahead, waited for, or else read now."""
        began = time.perf_counter()
        if self._ahead is not None and self._ahead[0] == index:
            future, self._ahead = self._ahead[1], None
            raw, seconds = future.result()
        else:
            raw, seconds = self._read(index, interrupts.check)
        times.seconds["read"] = seconds
        times.seconds["read_wait"] = time.perf_counter() - began
        return raw

    def _read(self, index: int, between: Callable[[], None]) -> tuple[dict[str, torch.Tensor], float]:
        began = time.perf_counter()
        raw = self.skeleton.weights.read(self.skeleton.layer_tensor_names(index), between)
        return raw, time.perf_counter() - began

    def _stopping(self) -> None:
        if self._stop.is_set():
            raise _Stopped


@dataclass
class LayerwiseRun:
    """One layerwise quantization: everything the loop needs, and what it reports."""

    skeleton: Skeleton
    quant_config: dict[str, Any]
    batches: list[list[list[int]]]  # this rank's batch groups
    staging: Path
    scratch: Path
    fingerprint: str
    shard_bytes: int
    coverage: Any
    progress: bool = True
    rank: int = 0
    world: int = 1
    #: read the next layer from the shards while this one calibrates
    prefetch: bool = True
    resumed_layers: list[int] = field(default_factory=list)
    layer_seconds: list[float] = field(default_factory=list)
    #: per layer, the seconds of each part (``PartTimes``)
    layer_parts: list[dict[str, float]] = field(default_factory=list)
    peak_device_bytes: dict[str, int] = field(default_factory=dict)
    #: the most bytes of captured layer inputs the loop held at once (the plan's activations term)
    held_input_bytes: int = 0
    #: each layer's quantization error, measured right after it is calibrated
    layer_errors: LayerErrors = field(default_factory=LayerErrors)

    @property
    def model(self) -> Any:
        return self.skeleton.model

    def forward_loop(self, model: nn.Module) -> None:
        device = self.skeleton.device
        for group in self.batches:
            width = max(len(b) for b in group)
            ids = torch.tensor([b + [0] * (width - len(b)) for b in group], device=device)
            mask = torch.tensor([[1] * len(b) + [0] * (width - len(b)) for b in group], device=device)
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask, use_cache=False)
            interrupts.check()

    def run(self) -> list[str]:
        """Calibrate and export every layer (resuming where a killed run stopped); returns the shard files."""
        import modelopt.torch.quantization as mtq
        from modelopt.torch.export.model_utils import TiedWeightMap
        from modelopt.torch.export.quant_utils import get_quant_config
        from modelopt.torch.export.unified_export_hf import _resolve_export_dtype

        check_modelopt()
        calib_func, calib_kwargs = calibration_function(self.quant_config.get("algorithm"))
        with _quiet():
            mtq.quantize(self.model, {**self.quant_config, "algorithm": None})
        outside = outside_layer_quantizers(self.model, self.skeleton.container)
        if outside:
            raise HubkitError(
                f"the recipe quantizes {outside[0]} outside the decoder layers, which --mode layerwise never "
                "calibrates; use --mode resident"
            )
        self.dtype = _resolve_export_dtype(self.model, None)
        self.revert = self._reversible()
        self.tied_map = TiedWeightMap(self.model)
        with _quiet():
            self.kv_format = get_quant_config(self.model)["quantization"]["kv_cache_quant_algo"]
        layers = self.skeleton.layers
        total = len(layers)
        state = self._load_state(total)
        self._last_state = state
        start = int(state.get("next_layer", 0))
        if not start and self.rank == 0:  # a run killed before its first commit: its files are of no use
            for stale in [*self.staging.glob("__part_*"), *self.scratch.iterdir()]:
                shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()
        self.coverage.attach(self.model)
        if start:
            self.resumed_layers = list(range(start))
            if self.rank == 0:
                self.coverage.load(state.get("coverage", {}))
        writer = self._writer(state)
        before, after, rest_params = self._export_rest()
        if not start:
            for key, tensor, size in before:
                writer.add(key, tensor, size)
        total_params = int(state.get("layer_parameters", 0))
        if start < total:  # else every layer was committed before a crash in the last steps
            total_params = self._layers(start, writer, calib_func, calib_kwargs, total_params)
        if self.rank != 0:
            return []
        if state.get("shards"):  # a run that died after writing every shard
            files: list[str] = state["shards"]
        else:
            for key, tensor, size in after:
                writer.add(key, tensor, size)
            with _quiet():
                files = writer.finish(total_params + rest_params)
            interrupts.kill_point("shards-written")
            self._record({**self._last_state, "shards": files})
            writer.forget_obsolete()  # only now: a rerun before the record above reads the open shard from them
            interrupts.kill_point("shards-recorded")
        with _quiet():
            self._write_configs()
        interrupts.kill_point("configs-written")
        return files

    def _layers(
        self,
        start: int,
        writer: ShardWriter,
        calib_func: Callable[..., Any] | None,
        calib_kwargs: dict[str, Any],
        total_params: int,
    ) -> int:
        """Calibrate, export and commit layers ``start`` onwards; returns the exported parameter count so far."""
        from modelopt.torch.quantization.utils.layerwise_calib import LayerActivationCollector

        layers = self.skeleton.layers
        total = len(layers)
        collector = LayerActivationCollector(self.model, status_callback=log.debug)  # the layers bar says it
        collector._patch_all_layers(decoder_layers=layers)
        bar = progress_bar(
            total=total, desc="layers", unit="layer", enabled=self.progress and self.rank == 0, each=True, initial=start
        )
        freezing = gc.get_freeze_count() == 0  # a caller's own frozen objects are left as they are
        if freezing:
            gc.collect()
            gc.freeze()  # the skeleton and its quantizers, millions of objects at Kimi's size: see ``_free_export``
        try:
            with bar, LayerReader(self.skeleton, self.prefetch) as reader:
                reader.ahead(start)
                resumed = self._resumed_inputs(start, layers) if start else None
                with _quiet():
                    inputs = collector.get_first_layer_inputs(start, resumed, self.forward_loop)
                for index in range(start, total):
                    began = time.perf_counter()
                    times = PartTimes()
                    self._reset_peak()
                    raw = reader.take(index, times)
                    with times.part("dequantize"):
                        layer = self.skeleton.materialize(index, raw)
                    del raw
                    reader.ahead(index + 1)  # while this layer calibrates
                    last = index + 1 == total
                    with times.part("calibrate"):
                        next_inputs = self._capture_next(collector, layer) if not last else None
                        held = _held_bytes([inputs, next_inputs])  # this layer's inputs and the next's, at once
                        self.held_input_bytes = max(self.held_input_bytes, held)
                        self._calibrate(layer, inputs, calib_func, calib_kwargs)
                    with times.part("error"):
                        self.layer_errors.measure(index, layer)
                    self._peak("calibrate")
                    if self.rank == 0:
                        with times.part("export"):
                            self._prepare_export(collector, index, inputs[0])
                            tensors, params = self._export_layer(layer, self.skeleton.layer_names[index])
                        total_params += params
                        with times.part("write"):
                            for key, tensor, size in tensors:
                                writer.add(key, tensor, size)
                        del tensors
                        self._peak("export")
                    else:
                        layer.to("meta")
                    inputs = next_inputs if next_inputs is not None else []  # frees this layer's inputs
                    with times.part("write"):
                        self._commit(index, total, writer, next_inputs, layers, total_params)
                    with times.part("export"):
                        self._free_export()
                    self.layer_seconds.append(round(time.perf_counter() - began, 3))
                    self.layer_parts.append(times.rounded())
                    bar.update(1)
                    interrupts.check()
        finally:
            if freezing:
                gc.unfreeze()
            collector._unpatch_all_layers()
        return total_params

    # -- one layer ---------------------------------------------------------------------------------------------

    def _free_export(self) -> None:
        """Free what the export made: the exported copy's modules hold reference cycles, so its tensors go only
        with a garbage collection. The objects that live the whole run (the skeleton, the quantizers of every
        layer) are frozen before the loop, out of the collection's way: at Kimi's topology (384 experts, hidden 64,
        12 layers) a collection took 0.36 -> 0.55 s, growing with depth, and takes 0.002 -> 0.018 s frozen."""
        gc.collect()
        if self.skeleton.device.type == "cuda":
            torch.cuda.empty_cache()  # as modelopt's own layerwise loop does after every layer

    def _capture_next(self, collector: Any, layer: nn.Module) -> list[Any]:
        """The next layer's inputs, from this layer with its quantizers off (modelopt's order for amax-only and
        every algorithm that does not take QDQ activations from the previous layer)."""
        from modelopt.torch.quantization.conversion import set_quantizer_by_cfg_context

        with _quiet(), set_quantizer_by_cfg_context(layer, [{"quantizer_name": "*", "enable": False}]):
            captured: list[Any] = collector.cache_outputs_for_next_layer_calib(layer, self.forward_loop)
        _calib_state(layer).mode = "original"
        return captured

    def _calibrate(
        self, layer: nn.Module, inputs: list[Any], func: Callable[..., Any] | None, kwargs: dict[str, Any]
    ) -> None:
        def replay(module: nn.Module) -> None:
            for args, keywords in inputs:
                module(*args, **keywords)

        if func is not None:
            with _quiet():
                func(layer, forward_loop=replay, **kwargs)

    def _prepare_export(self, collector: Any, index: int, sample: Any) -> None:
        """modelopt's model-level export preparation, on this layer: MoE inputs, shared-input resmoothing (its
        probe forward reaches only this layer: earlier layers are skipped, the next one stops the pass), gate/up."""
        from modelopt.torch.export.layer_utils import sync_moe_gate_up_amax
        from modelopt.torch.export.unified_export_hf import _prepare_moe_inputs, requantize_resmooth_fused_llm_layers
        from modelopt.torch.quantization.utils.layerwise_calib import _SkipLayer

        layers = self.skeleton.layers
        layer = layers[index]
        with _quiet():
            _prepare_moe_inputs(layer, self.dtype, False)
            for earlier in range(index):
                if not isinstance(layers[earlier], _SkipLayer):
                    collector._swap_to_dummy(earlier)
            own = _calib_state(layer)
            own.mode, own.cached_inputs = "run", deque([sample])
            following = _calib_state(layers[index + 1]) if index + 1 < len(layers) else None
            kept = following.collected_inputs if following is not None else []
            if following is not None:
                following.mode, following.collected_inputs = "capture", []
            try:
                requantize_resmooth_fused_llm_layers(self.model)
            finally:
                own.mode, own.cached_inputs = "original", deque()
                if following is not None:  # its captured inputs are replayed when it is calibrated next
                    following.mode, following.collected_inputs = "original", kept
            sync_moe_gate_up_amax(layer)

    def _export_layer(self, layer: nn.Module, name: str) -> tuple[list[tuple[str, torch.Tensor, int]], int]:
        from modelopt.torch.export.registry import ExportContext
        from modelopt.torch.export.unified_export_hf import _dispatch_export_handler
        from modelopt.torch.quantization.plugins.huggingface import _reconstruct_fused_moe_linear

        copy_ = _detached_copy(layer)
        with _quiet():
            context = ExportContext(model=copy_, dtype=self.dtype)
            for sub_name, sub_module in copy_.named_modules():
                _dispatch_export_handler(f"{name}.{sub_name}" if sub_name else name, sub_module, context)
            _reconstruct_fused_moe_linear(copy_)
        params = sum(p.numel() for p in copy_.parameters())
        state = {f"{name}.{key}": value for key, value in copy_.state_dict().items()}
        del copy_
        return self._finished(state), params

    def _export_rest(self) -> tuple[list[Any], list[Any], int]:
        """The tensors outside the decoder layers, exported as the whole-model exporter does, split into those the
        resident state dict holds before the layers and those after."""
        from modelopt.torch.export.registry import ExportContext
        from modelopt.torch.export.unified_export_hf import _dispatch_export_handler

        container = self.skeleton.container
        with _quiet():
            context = ExportContext(model=self.model, dtype=self.dtype)
            for name, module in self.model.named_modules():
                if not (name + ".").startswith(container):
                    _dispatch_export_handler(name, module, context)
        keys = list(self.model.state_dict(keep_vars=True))
        first = next(i for i, key in enumerate(keys) if key.startswith(container))
        state = self.model.state_dict()
        before = {k: state[k] for k in keys[:first]}
        after = {k: state[k] for k in keys[first:] if not k.startswith(container)}
        params = sum(p.numel() for n, p in self.model.named_parameters() if not n.startswith(container))
        return self._finished(before), self._finished(after), params

    def _finished(self, state: dict[str, torch.Tensor]) -> list[tuple[str, torch.Tensor, int]]:
        """modelopt's per-state-dict export steps, then the base's dtype for tensors loading upcast (the same
        rule as the resident path's ``_restore_base_dtypes``; the split size stays that of the exported tensor)."""
        from huggingface_hub import get_torch_storage_size
        from modelopt.torch.export.quant_aware_conversion import revert_weight_conversion_quant_aware
        from modelopt.torch.export.quant_utils import postprocess_state_dict

        with _quiet():
            state = postprocess_state_dict(state, KV_CACHE_MAX_BOUND, self.kv_format, False, tied_map=self.tied_map)
            if self.revert:
                try:
                    state = revert_weight_conversion_quant_aware(self.model, state)
                except Exception as exc:  # modelopt raises several types for a mapping it cannot reverse
                    raise HubkitError(
                        f"modelopt cannot reverse this model's weight conversion one layer at a time ({exc}); "
                        "use --mode resident"
                    ) from exc
        wanted = {"BF16": torch.bfloat16, "F16": torch.float16}
        finished = []
        for key, tensor in state.items():
            size = get_torch_storage_size(tensor)
            base = self.skeleton.weights.dtype(key)
            if tensor.dtype == torch.float32 and base in wanted:
                tensor = tensor.to(wanted[base])
            finished.append((key, tensor.detach().contiguous().cpu(), size))
        return finished

    def _reversible(self) -> bool:
        """Whether modelopt can give exported tensors their hub names for this model. ``export_hf_checkpoint``
        tries, and when it cannot (a conversion it does not reverse, such as a scoped converter in a wrapper) keeps
        the in-memory names for the weights and the quantization config alike; so does this run."""
        from modelopt.torch.export.quant_aware_conversion import _build_reverse_rules, build_reverse_name_mapper

        try:
            with _quiet():
                build_reverse_name_mapper(self.model)
                _build_reverse_rules(self.model)
        except Exception:  # modelopt raises several types for a mapping it cannot reverse
            return False
        return True

    def _write_configs(self) -> None:
        """config.json, generation_config.json and remote code through the model's own ``save_pretrained`` (no
        weights), then modelopt's quantization config over the whole model, as ``export_hf_checkpoint`` writes it."""
        import tempfile

        from modelopt.torch.export.quant_aware_conversion import build_reverse_name_mapper, revert_quant_config_names
        from modelopt.torch.export.quant_utils import get_quant_config
        from modelopt.torch.export.unified_export_hf import (
            _add_mtp_exclusions,
            _patch_revert_weight_conversion,
            _sanitize_generation_config_for_save,
            _unpatch_revert_weight_conversion,
            _write_hf_export_config,
        )

        quant_config = get_quant_config(self.model)
        _add_mtp_exclusions(self.model, quant_config)
        mapper = build_reverse_name_mapper(self.model) if self.revert else None
        if mapper is not None and quant_config:
            revert_quant_config_names(quant_config.get("quantization", {}), mapper)
        with tempfile.TemporaryDirectory(dir=self.scratch) as folder:
            patches = _patch_revert_weight_conversion()
            _sanitize_generation_config_for_save(self.model)
            try:
                self.model.save_pretrained(folder, state_dict={})
                interrupts.kill_point("configs-saving")
            finally:
                _unpatch_revert_weight_conversion(patches)
            for item in Path(folder).iterdir():
                if item.is_file() and not item.name.startswith("model") and item.suffix != ".safetensors":
                    os.replace(item, self.staging / item.name)
        _write_hf_export_config(self.model, quant_config, self.staging)

    # -- resume --------------------------------------------------------------------------------------------------

    def _load_state(self, total: int) -> dict[str, Any]:
        """The state of a killed run of the same inputs to resume, or {} (start over) when there is none or it is
        not in the shape this class writes: a damaged or tampered record never skips a layer."""
        state = load_record(self.scratch / STATE_FILE)
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint or state.get("layers") != total:
            return {}
        if not _resumable(state, total):
            return {}
        return state

    def _writer(self, state: dict[str, Any]) -> ShardWriter:
        if state.get("writer"):
            return ShardWriter.restore(self.staging, self.scratch, state["writer"])
        return ShardWriter(self.staging, self.scratch, self.shard_bytes)

    def _inputs_file(self, index: int) -> Path:
        return self.scratch / f"inputs-{index:05d}-rank{self.rank}.pt"

    def _resumed_inputs(self, start: int, layers: nn.ModuleList) -> list[Any]:
        check_replaceable_file(self.scratch / OUTPUT_META)  # never read through a link planted in .hubkit/
        check_replaceable_file(self._inputs_file(start))
        metas = torch.load(self.scratch / OUTPUT_META, weights_only=True)
        for index in range(start):
            _calib_state(layers[index]).output_meta = metas[index]
        inputs: list[Any] = torch.load(self._inputs_file(start), map_location=self.skeleton.device, weights_only=True)
        return inputs

    def _commit(
        self,
        index: int,
        total: int,
        writer: ShardWriter,
        next_inputs: list[Any] | None,
        layers: nn.ModuleList,
        total_params: int,
    ) -> None:
        """Make layer ``index`` durable: files first, then the state that names them (the commit), then cleanup."""
        if next_inputs is not None:
            _save_atomic(next_inputs, self._inputs_file(index + 1))
        if self.rank == 0:
            writer.commit(f"{index:05d}")
            originals = [getattr(layers[i], "_original", layers[i]) for i in range(index + 1)]  # skipped: a stand-in
            metas = [_calib_state(layer).output_meta for layer in originals]
            _save_atomic(metas, self.scratch / OUTPUT_META)
            interrupts.kill_point("layer-files")
        _barrier(self.world)
        if self.rank == 0:
            state = {
                "fingerprint": self.fingerprint,
                "layers": total,
                "next_layer": index + 1,
                "writer": writer.state(),
                "layer_parameters": total_params,
                "coverage": self.coverage.state(),
            }
            self._record(state)
            self._last_state = state
            interrupts.kill_point("layer-recorded")
            writer.forget_obsolete()
        _barrier(self.world)
        self._inputs_file(index).unlink(missing_ok=True)
        interrupts.kill_point("layer-done")

    def _record(self, state: dict[str, Any]) -> None:
        write_json(self.scratch / STATE_FILE, state, indent=None)

    # -- measurement ---------------------------------------------------------------------------------------------

    def _reset_peak(self) -> None:
        if self.skeleton.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.skeleton.device)

    def _peak(self, stage: str) -> None:
        if self.skeleton.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(self.skeleton.device))
            self.peak_device_bytes[stage] = max(self.peak_device_bytes.get(stage, 0), peak)


def bound_host_heap() -> None:
    """Keep the host from holding on to memory layer after layer: torch's per-shape matmul caches bounded
    (:func:`bound_onednn_cache`), and glibc's freed layer-sized blocks given back (glibc only).

    glibc raises its mmap threshold each time a large block is freed, so that later blocks of that size come from
    the heap, which it seldom gives back: layer after layer, the process keeps more memory than one layer needs
    (measured with bench_quantize.py's 21 MiB layers: peak RSS rose ~3 MiB per layer). Fixing the threshold at
    glibc's own starting value, 128 KiB (mallopt's M_MMAP_THRESHOLD, which also stops the adjustment), keeps it
    flat. It applies to the whole process and costs a little system time.
    """
    import ctypes
    import ctypes.util
    import platform

    bound_onednn_cache()
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD


#: Compiled oneDNN CPU kernels, and ideep's matmul descriptors, kept for reuse (defaults: 1,024 each).
ONEDNN_CACHE_CAPACITY = 8
#: The environment variables that size those two caches: oneDNN's kernel cache, and the cache of matmul
#: primitive descriptors that ideep (torch's layer over oneDNN) keeps apart from it.
ONEDNN_CACHE_ENV = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")


def bound_onednn_cache() -> None:
    """Keep torch's CPU matmul backend from caching a compiled kernel and a descriptor per input shape.

    Routed experts see a different token count on almost every call, so each expert matmul is a new shape, and
    two caches of up to 1,024 entries each grow with depth outside Python's reach (malloc'd, not Python objects):
    oneDNN's kernels, and ideep's matmul primitive descriptors (about 250 KiB each here, found by tracing the
    native allocations still live after 3 and after 13 layers with memray: +36 MiB in 146 more descriptors).
    Measured after each layer's commit (hidden 512, 8 experts, 16 layers): RSS rose 622 -> 698 MiB with only
    oneDNN's cache bounded, 626 -> 633 MiB with both. Both read their capacity when first used, so this runs
    before the first layer; a capacity the user set is kept. Neither changes a result: a missed entry is
    compiled again.
    """
    for name in ONEDNN_CACHE_ENV:
        os.environ.setdefault(name, str(ONEDNN_CACHE_CAPACITY))


def _calib_state(layer: Any) -> Any:
    """modelopt's per-layer layerwise state (its ``_LayerCalibState``), set on every decoder layer it patches."""
    return layer._layerwise_calib


def _held_bytes(value: Any) -> int:
    """Bytes of the distinct tensors (storages) inside ``value``, a nesting of lists, tuples and dicts."""
    from torch.utils._pytree import tree_leaves

    storages = {
        (leaf.device, leaf.untyped_storage().data_ptr()): leaf.untyped_storage().nbytes()
        for leaf in tree_leaves(value)
        if isinstance(leaf, torch.Tensor)
    }
    return sum(storages.values())


def _save_atomic(value: Any, path: Path) -> None:
    with replacing(path) as stream:
        torch.save(value, stream)


def _resumable(state: dict[str, Any], total: int) -> bool:
    """Whether ``state`` has the shape :meth:`LayerwiseRun._commit` writes, every value of its type, and names
    only files this class makes (a tampered name never sends a rename outside the staging folder)."""
    writer, coverage = state.get("writer"), state.get("coverage")
    if not isinstance(writer, dict) or not isinstance(coverage, dict):
        return False
    parts, open_keys, where = writer.get("parts"), writer.get("open_keys"), writer.get("where")
    numbers = [state.get("next_layer"), state.get("layer_parameters"), *(writer.get(k) for k in _WRITER_NUMBERS)]
    if not all(_count(n) for n in numbers) or not 0 < state["next_layer"] <= total:
        return False
    if not isinstance(parts, list) or not isinstance(open_keys, list) or not isinstance(where, dict):
        return False
    return (
        all(isinstance(p, dict) and _PART.fullmatch(str(p.get("file"))) and _strings(p.get("keys")) for p in parts)
        and _strings(open_keys)
        and _strings(list(where.values()))
        and all(_PENDING.fullmatch(name) for name in where.values())
        and all(
            isinstance(entry, dict) and _count(entry.get("calls")) and _strings(entry.get("counts"), int)
            for entry in coverage.values()
        )
    )


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _strings(value: Any, kind: type = str) -> bool:
    """A list whose every item is a ``kind`` (a str, or an int that is not a bool)."""
    return isinstance(value, list) and all(isinstance(v, kind) and not isinstance(v, bool) for v in value)


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()
