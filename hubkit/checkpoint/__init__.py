"""One model of a checkpoint, local or on the Hub: files, configs and a tensor table from headers."""

from hubkit.checkpoint.loader import load_checkpoint
from hubkit.checkpoint.model import Checkpoint, JsonDocument, UnreadableFile
from hubkit.checkpoint.safetensors_header import HeaderLimits, ShardHeader, TensorInfo
from hubkit.checkpoint.source import CheckpointSource, FileEntry, LocalSource, list_folder, open_source
from hubkit.dtypes import DTYPE_BITS

__all__ = [
    "DTYPE_BITS",
    "Checkpoint",
    "CheckpointSource",
    "FileEntry",
    "HeaderLimits",
    "JsonDocument",
    "LocalSource",
    "ShardHeader",
    "TensorInfo",
    "UnreadableFile",
    "list_folder",
    "load_checkpoint",
    "open_source",
]
