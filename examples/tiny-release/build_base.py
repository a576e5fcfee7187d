"""Build the example's tiny Kimi-shaped INT4 base and calibration text (idempotent)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from hubkit.testing import build_int4_base, calibration_jsonl

if __name__ == "__main__":
    here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    if not (here / "base" / "config.json").is_file():
        shutil.rmtree(here / "base", ignore_errors=True)
        build_int4_base(here / "base")
    if not (here / "calib.jsonl").is_file():
        calibration_jsonl(here / "calib.jsonl")
    print(f"base: {here / 'base'} (INT4 pack-quantized, Kimi-shaped); calibration: {here / 'calib.jsonl'}")
