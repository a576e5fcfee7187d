"""Benchmark ``hubkit quantize --mode layerwise`` at Kimi-K2's full topology: 61 decoder layers (the first dense),
384 routed experts and one shared expert per MoE layer, 8 experts per token, behind the Kimi wrapper (vision tower,
``language_model.model.layers``), with the routed experts INT4 pack-quantized as Kimi ships them. Only the widths
are small (hidden 64, expert intermediate 32, ~280 MiB of BF16 weights), so every per-module cost of a real run
(69,120 quantized modules, their quantizers, export handlers and name conversion) is there at a fraction of the
compute.

The max recipe calibrates on 64 samples x 64 tokens; the export must pass ``hubkit validate --profile
kimi-k2-nvfp4`` (with its 69,120-module count). Prints time per layer (mean, max), peak RSS and peak disk next to
what ``quantize --plan`` predicted, with the error, and each part of a layer (read, dequantize, calibrate,
error, export, write) against the plan's. ``--layers N`` runs a shallower model of the same width.
Run: ``python benchmarks/bench_kimi_topology.py`` (about 11 minutes on two cores; ``--layers 3``: one minute).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quantize  # noqa: E402
from benchmarks.bench_quantize import MIB, RECIPE  # noqa: E402

#: Kimi-K2's topology (moonshotai/Kimi-K2.5's text config) at the tiny models' widths.
TOPOLOGY = {"n_routed_experts": 384, "n_shared_experts": 1, "num_experts_per_tok": 8, "first_k_dense_replace": 1}
OPTIONS = ("--calib-size", "64", "--calib-seq", "64", "--batch-size", "8", "--trust-remote-code")
PROFILE = "kimi-k2-nvfp4"


def build(work: Path, layers: int) -> Path:
    """The base, built in a child process (a process's peak RSS includes what its parent held when it started)."""
    folder = work / f"kimi-{layers}-layers"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.bench_kimi_topology import build_here; "
        "build_here(sys.argv[2], int(sys.argv[3]))"
    )
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(folder), str(layers)], capture_output=True)
    if done.returncode:
        raise SystemExit(f"building the base failed: {done.stderr.decode()[-3000:]}")
    return folder / "int4"


def build_here(folder: str, layers: int) -> None:
    from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base, tiny_kimi_base

    where = Path(folder)
    where.mkdir()
    deepseek = tiny_base(where / "deepseek", num_hidden_layers=layers, **TOPOLOGY)
    kimi = tiny_kimi_base(where / "bf16", deepseek)
    calibration_jsonl(where / "calib.jsonl", samples=64, words=80)
    int4_base_from(kimi, where / "int4")


def validate(out: Path) -> tuple[int, str]:
    """``hubkit validate --profile kimi-k2-nvfp4`` on the export: its exit code and its text report."""
    command = [sys.executable, "-m", "hubkit", "-q", "validate", str(out), "--profile", PROFILE]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def quantized_modules(out: Path) -> int:
    """NVFP4 modules in the export (those with a ``weight_scale_2``), read from its headers."""
    from hubkit.checkpoint import load_checkpoint

    return sum(1 for name in load_checkpoint(str(out)).tensors if name.endswith(".weight_scale_2"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=61, help="decoder layers (default 61, as Kimi-K2)")
    parser.add_argument("--keep", type=Path, help="build and run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubkit-bench-kimi-") as temporary:
        work = args.keep or Path(temporary)
        work.mkdir(parents=True, exist_ok=True)
        built = work / f"kimi-{args.layers}-layers" / "int4"
        base = built if args.keep and built.is_dir() else build(work, args.layers)
        print(f"built a {args.layers}-layer Kimi-topology INT4 base in {base}", flush=True)
        m = bench_quantize.run(base, "layerwise", options=OPTIONS, recipe=RECIPE)
        out = base.parent / "runs-layerwise" / "out"
        code, report = validate(out)
        count = quantized_modules(out)
        predicted = m.predicted
        seconds = m.layer_seconds
        moe = seconds[1:] or seconds  # layer 0 is dense
        print(f"\nKimi topology: {args.layers} layers, {TOPOLOGY['n_routed_experts']} experts, hidden 64; "
              f"BF16 weights {m.weights / MIB:,.0f} MiB; layerwise, {RECIPE}, 64 x 64 tokens; wall {m.wall:,.0f} s")  # fmt: skip
        print("| | measured | plan | error |")
        print("|---|---|---|---|")
        rows = [
            ("peak RSS", m.rss / MIB, predicted["host_bytes"] / MIB, "MiB"),
            ("peak disk beside --out", m.disk / MIB, predicted["disk_bytes"] / MIB, "MiB"),
            ("time per MoE layer, mean", statistics.mean(moe), predicted["seconds_per_layer"], "s"),
            ("time per layer, max", max(seconds), predicted["seconds_per_layer"], "s"),
        ]
        for what, measured, plan, unit in rows:
            print(
                f"| {what} | {measured:,.1f} {unit} | {plan:,.1f} {unit} | {100 * (plan - measured) / measured:+.0f} % |"
            )
        bench_quantize.part_report([m])  # each part of a layer against the plan's
        expected = (args.layers - 1) * TOPOLOGY["n_routed_experts"] * 3
        print(f"\nquantized modules: {count:,} (expected {expected:,})")
        print(f"hubkit validate --profile {PROFILE}: exit {code}" + ("" if code == 0 else f"\n{report[-3000:]}"))
        memory_ok = all(abs(p - m_) <= 0.25 * m_ for _, m_, p, unit in rows[:2])
        print("peak RSS and disk within 25 % of the plan: " + ("yes" if memory_ok else "NO"))
    sys.exit(0 if code == 0 and count == expected and memory_ok else 1)


if __name__ == "__main__":
    main()
