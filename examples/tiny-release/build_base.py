"""Build the example's tiny Kimi-shaped INT4 base and calibration text (idempotent)."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from hubkit.fixtures.tiny_models import calibration_jsonl, int4_base_from, tiny_base, tiny_kimi_base

if __name__ == "__main__":
    here = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)
    if not (here / "base" / "config.json").is_file():
        with tempfile.TemporaryDirectory() as work:
            deepseek = tiny_base(Path(work) / "deepseek")
            kimi = tiny_kimi_base(Path(work) / "kimi", deepseek)
            shutil.rmtree(here / "base", ignore_errors=True)
            int4_base_from(kimi, here / "base")
    if not (here / "calib.jsonl").is_file():
        calibration_jsonl(here / "calib.jsonl")
    print(f"base: {here / 'base'} (INT4 pack-quantized, Kimi-shaped); calibration: {here / 'calib.jsonl'}")
