"""Benchmark ``hubkit quantize``: CPU wall time and peak memory of the tiny end-to-end run, and ``--plan`` for
Kimi-K2.x (INT4 base, full-scale sparse skeleton of its headers) on 8xB300, 8xH200 and 8xH100.

Run: ``python benchmarks/bench_quantize.py``
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def tiny_run(work: Path) -> None:
    from hubkit.fixtures.tiny_models import WORDS, tiny_deepseek, tiny_tokenizer

    base = tiny_deepseek(work / "base")
    tiny_tokenizer(base)
    calib = work / "calib.jsonl"
    calib.write_text("".join(json.dumps({"text": " ".join(WORDS * 3)}) + "\n" for _ in range(64)))
    command = [sys.executable, "-m", "hubkit", "-q", "quantize", "--base", str(base), "--out", str(work / "out"),
               "--calib", str(calib), "--calib-size", "64", "--calib-seq", "64", "--batch-size", "8", "--format", "json"]  # fmt: skip
    start = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - start
    peak = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    if done.returncode != 0:
        raise SystemExit(f"quantize failed ({done.returncode}): {done.stderr[-2000:]}")
    result = json.loads(done.stdout)
    timings = result["provenance"]["timings_s"]
    print(f"tiny end-to-end on CPU: {wall:.1f} s wall, peak memory {peak / 1024:.0f} MB, stages {timings}")
    print(f"  validation passed: {result['validation']['summary']['passed']}")


def plans(work: Path) -> None:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.fixtures.kimi import KimiDims, int4_base_layout, write_sparse_checkpoint
    from hubkit.quantize.plan import estimate

    dims = KimiDims()
    config = {"text_config": {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers}}
    skeleton = write_sparse_checkpoint(work / "kimi-int4", int4_base_layout(dims), files={"config.json": config})
    base = load_checkpoint(str(skeleton))
    print(f"Kimi-K2.x INT4 base skeleton: {len(base.tensors):,} tensors, {base.total_tensor_bytes / 1e9:,.0f} GB")
    for gpus in ("8xB300", "8xH200", "8xH100"):
        print(f"--plan --gpus {gpus} (batch 1, seq 512):")
        print("  " + estimate(base, gpus, batch=1, seq=512, out=work).render().replace("\n", "\n  "))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="hubkit-bench-quantize-") as folder:
        tiny_run(Path(folder))
        plans(Path(folder))
