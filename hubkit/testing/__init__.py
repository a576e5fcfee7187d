"""A kit for rehearsing a release in your own CI: tiny checkpoints, a tiny base, calibration text, a local Hub.

Everything here is built in code in seconds and never downloaded::

    from hubkit.testing import HubServer, build_int4_base, build_nvfp4_checkpoint, calibration_jsonl

    export = build_nvfp4_checkpoint(tmp / "Kimi-Tiny-NVFP4")  # passes `hubkit validate`
    build_int4_base(tmp / "base")  # needs the quantize extra: what `[base] path` of a manifest quantizes
    calibration_jsonl(tmp / "calib.jsonl")
    with HubServer(tmp / "hub") as hub:  # HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token
        ...

The names in ``__all__`` are the stable API; the modules behind them (``hubkit.testing.kimi``,
``hubkit.quantize.tiny_models``) hold more builders, which may change. Importing this module imports neither
torch nor huggingface_hub.
"""

from __future__ import annotations

from hubkit.hub.server import HubServer
from hubkit.quantize.tiny_models import build_int4_base, calibration_jsonl
from hubkit.testing.kimi import TINY, KimiDims, build_nvfp4_checkpoint

__all__ = ["TINY", "HubServer", "KimiDims", "build_int4_base", "build_nvfp4_checkpoint", "calibration_jsonl"]
