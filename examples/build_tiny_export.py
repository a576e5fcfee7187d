"""Write a tiny Kimi-K2.x-shaped experts-only NVFP4 export (real safetensors data) to the given folder."""

from __future__ import annotations

import sys
from pathlib import Path

from hubkit.fixtures.kimi import TINY, build_nvfp4_checkpoint

if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/build_tiny_export.py OUT_DIR")
    out = Path(sys.argv[1])
    if out.exists():
        sys.exit(f"{out} already exists; pass a new folder")
    build_nvfp4_checkpoint(out, TINY)
    print(f"wrote a tiny NVFP4 export to {out}")
