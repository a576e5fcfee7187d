"""On a CUDA host: a medium DeepSeek-V3 (about 4 GiB of BF16 weights, 6 layers, 64 experts, the size of the
H200 run the plan's resident factor comes from) quantized resident and layerwise; peak GPU memory per stage
(``torch.cuda.max_memory_allocated``, on the busiest GPU) next to the plan's prediction, the layerwise run's
seconds per part of a layer (read, dequantize, calibrate, error, export, write) next to the plan's, and whether
the two exports are byte-identical. Part of ``benchmarks/gpu_check.sh``.

Run: ``python benchmarks/gpu_medium.py [--work DIR]`` (needs CUDA and the quantize extra; about 3 minutes).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
GIB = 1024**3
#: 6 layers (1 dense), 64 experts of 3 x 2048 x 1024: 4.0 GiB of BF16 weights.
MEDIUM = {
    "vocab_size": 256, "hidden_size": 2048, "intermediate_size": 4096, "moe_intermediate_size": 1024,
    "num_hidden_layers": 6, "first_k_dense_replace": 1, "n_routed_experts": 64, "n_shared_experts": 1,
    "num_experts_per_tok": 4, "n_group": 1, "topk_group": 1, "num_attention_heads": 16, "num_key_value_heads": 16,
    "q_lora_rank": 512, "kv_lora_rank": 256, "qk_nope_head_dim": 64, "qk_rope_head_dim": 32, "v_head_dim": 64,
    "max_position_embeddings": 1024,
}  # fmt: skip


def build(folder: Path, smoke: bool = False) -> Path:
    """The medium model, initialised on the GPU (seconds, not minutes) and saved with the tiny tokenizer; with
    ``smoke``, the tiny one on the CPU (to try this script where there is no GPU)."""
    import torch
    import transformers

    from hubkit.quantize.tiny_models import TINY_TEXT_CONFIG, tiny_tokenizer

    torch.manual_seed(0)
    config = transformers.DeepseekV3Config(**{**TINY_TEXT_CONFIG, **({} if smoke else MEDIUM)})
    with torch.device("cpu" if smoke else "cuda"):
        model = transformers.DeepseekV3ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    tiny_tokenizer(folder)
    return folder


def quantize(base: Path, calib: Path, out: Path, mode: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "hubkit", "-q", "quantize", "--base", str(base), "--out", str(out),
               "--calib", str(calib), "--calib-size", "64", "--calib-seq", "256", "--batch-size", "8",
               "--mode", mode, "--format", "json"]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{mode} failed ({done.returncode}): {done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["wall_s"] = time.perf_counter() - start
    return result


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "provenance.json"
    }


def main() -> None:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="the tiny model on the CPU: try the script itself")
    args = parser.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        raise SystemExit("needs a CUDA device (--smoke runs a tiny model on the CPU)")
    from hubkit.quantize.tiny_models import WORDS

    with tempfile.TemporaryDirectory(prefix="hubkit-medium-", dir=args.work) as folder:
        work = Path(folder)
        start = time.perf_counter()
        base = build(work / "base", args.smoke)
        weights = sum(p.stat().st_size for p in base.glob("*.safetensors"))
        print(f"medium base: {weights / GIB:.2f} GiB of BF16 weights, built in {time.perf_counter() - start:.0f} s")
        calib = work / "calib.jsonl"
        calib.write_text("".join(json.dumps({"text": " ".join(WORDS * 20)}) + "\n" for _ in range(64)))
        outs = {}
        for mode in ("resident", "layerwise"):
            result = quantize(base, calib, work / mode, mode)
            run, provenance = result["provenance"]["run"], result["provenance"]
            predicted = run["plan"]["modes"][mode]["device_gib"]
            peaks = run["measured"]["peak_device_bytes"] or {}
            stages = ", ".join(f"{stage} {value / GIB:.2f} GiB" for stage, value in peaks.items())
            peak = max(peaks.values(), default=0) / GIB
            print(f"{mode}: {result['wall_s']:.0f} s wall; stages {provenance['timings_s']}")
            if peaks:
                print(f"  peak GPU memory (max_memory_allocated) per stage: {stages}")
                print(f"  peak {peak:.2f} GiB vs plan {predicted:.2f} GiB ({100 * (predicted - peak) / peak:+.0f} %); "
                      f"{peak / (weights / GIB):.2f}x the BF16 weights")  # fmt: skip
            else:
                print("  no GPU memory measured (not a CUDA run)")
            if mode == "layerwise":
                seconds = run["layer_seconds"]
                print(f"  seconds per layer {seconds} vs plan {run['plan']['modes'][mode]['seconds_per_layer']}")
                timed = run["layer_parts"][1:] or run["layer_parts"]  # the first layer is dense
                planned = run["plan"]["modes"][mode].get("part_seconds") or {}
                for part, plan in planned.items():
                    measured = statistics.mean(parts.get(part, 0.0) for parts in timed)
                    print(f"  {part}: {measured:.3f} s per layer vs plan {plan:.3f}")
            print(f"  validation passed: {result['validation']['summary']['passed']}")
            outs[mode] = work / mode
        same = digests(outs["resident"]) == digests(outs["layerwise"])
        device = "CUDA" if torch.cuda.is_available() else "CPU"
        print(f"layerwise export byte-identical to resident ({device}): {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
