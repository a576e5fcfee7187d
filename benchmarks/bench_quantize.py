"""Benchmark ``hubkit quantize``: resident vs layerwise on the same DeepSeek-V3 architecture at 4, 8 and 16 layers
(INT4 pack-quantized bases, as Kimi ships, ~21 MB of BF16 weights per MoE layer), on the CPU.

For every run it prints peak RSS (the quantize process, from the kernel's rusage), peak disk used beside ``--out``
(staging, intermediates and export, polled every 5 ms), wall time and calibration seconds per layer, each next
to what ``--plan`` predicted for that run. Then the checks the design promises: layerwise peak memory stays flat
(grows by less than two layers' BF16 weights from the smallest to the largest model) while resident grows, no
BF16 copy of the whole model appears on disk in layerwise mode, and every memory and disk prediction is within
25 % of the measurement. For the layerwise runs, the time of each part of a layer (read, dequantize, calibrate,
export, write: provenance's ``layer_parts``) next to the plan's ``part_seconds``, flagging any part more than 25 %
off. ``--fit`` prints the plan coefficients that fit these runs best. ``--dims`` changes the model (e.g.
``--dims n_routed_experts=128 hidden_size=64`` for many small experts).

Also: ``--plan`` for Kimi-K2.x (full-scale sparse skeleton of the INT4 base's headers) on one H100, one H200 and
8xB300. Run: ``python benchmarks/bench_quantize.py`` (about ten minutes on two cores).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: ~21 MB of BF16 weights per MoE layer: 8 experts of 3 x 512 x 768, attention and a shared expert.
DIMS = {
    "vocab_size": 256, "hidden_size": 512, "intermediate_size": 1024, "moe_intermediate_size": 768,
    "first_k_dense_replace": 1, "n_routed_experts": 8, "n_shared_experts": 1, "num_experts_per_tok": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "q_lora_rank": 128, "kv_lora_rank": 64,
    "qk_nope_head_dim": 32, "qk_rope_head_dim": 16, "v_head_dim": 32, "max_position_embeddings": 256,
}  # fmt: skip
#: max calibration: the MSE scale sweep of the default recipe takes minutes per layer of this size on a CPU.
RECIPE = "general/ptq/nvfp4_experts_only-kv_fp8_cast"
CALIB = ("--calib-size", "16", "--calib-seq", "64", "--batch-size", "8")
MIB = 1024**2


@dataclass
class Measured:
    layers: int
    mode: str
    rss: int
    disk: int
    wall: float
    layer_seconds: list[float]
    plan: dict[str, Any]
    weights: int
    largest_layer: int
    shape: Any
    parts: list[dict[str, float]]

    @property
    def predicted(self) -> dict[str, Any]:
        return dict(self.plan["modes"][self.mode])


def build(work: Path, layers: int, dims: dict[str, int]) -> Path:
    """The bases are built in a child process: this one stays small, because a process's peak RSS as the kernel
    reports it includes what its parent held when it was started."""
    folder = work / f"{layers}-layers"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.bench_quantize import build_here; "
        "import json; build_here(sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4]))"
    )
    command = [sys.executable, "-c", code, str(ROOT), str(folder), str(layers), json.dumps(dims)]
    subprocess.run(command, check=True, capture_output=True)
    return folder / "int4"


def build_here(folder: str, layers: int, dims: dict[str, int]) -> None:
    from hubkit.quantize.tiny_models import calibration_jsonl, int4_base_from, tiny_base

    where = Path(folder)
    where.mkdir()
    bf16 = tiny_base(where / "bf16", num_hidden_layers=layers, **{**DIMS, **dims})
    calibration_jsonl(where / "calib.jsonl", samples=16, words=80)
    int4_base_from(bf16, where / "int4")


def disk_use(folder: Path, skip: set[str]) -> int:
    total = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d not in skip]
        for name in files:
            with contextlib.suppress(OSError):  # removed while we looked
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def run(base: Path, mode: str, options: tuple[str, ...] = CALIB, recipe: str = RECIPE) -> Measured:
    """One ``hubkit quantize`` in its own process (``options``: the calibration's, and any other); peak RSS from its
    rusage, disk polled beside ``--out``."""
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import shape_of

    beside = base.parent / f"runs-{mode}"
    beside.mkdir()
    command = [sys.executable, "-m", "hubkit", "-q", "quantize", "--base", str(base), "--out", str(beside / "out"),
               "--calib", str(base.parent / "calib.jsonl"), *options, "--recipe", recipe, "--mode", mode,
               "--format", "json"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    peak = {"disk": 0}
    done = threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak["disk"] = max(peak["disk"], disk_use(beside, set()))
            time.sleep(0.005)

    watcher = threading.Thread(target=poll, daemon=True)
    start = time.perf_counter()
    with open(beside / "stdout.json", "wb") as out, open(beside / "stderr.txt", "wb") as err:
        child = subprocess.Popen(command, env=env, stdout=out, stderr=err)
        watcher.start()
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"quantize failed: {(beside / 'stderr.txt').read_text()[-3000:]}")
    result = json.loads((beside / "stdout.json").read_text())
    run_record = result["provenance"]["run"]
    shape = shape_of(load_checkpoint(str(base)))
    return Measured(
        len(shape.layer_bytes), mode, usage.ru_maxrss * 1024, peak["disk"], wall,
        run_record.get("layer_seconds") or [], run_record["plan"], shape.weight_bytes, shape.largest_layer, shape,
        run_record.get("layer_parts") or [],
    )  # fmt: skip


def report(runs: list[Measured]) -> bool:
    print(
        "\n| layers | mode | peak RSS (predicted) | peak disk beside --out (predicted) | wall | calibration s/layer (predicted) |"
    )
    print("|---|---|---|---|---|---|")
    ok = timed = True
    for m in runs:
        p = m.predicted
        host, disk = p["host_bytes"], p["disk_bytes"]
        per_layer = statistics.median(m.layer_seconds) if m.layer_seconds else None
        measured_layer = "n/a" if per_layer is None else f"{per_layer:.1f}"
        print(
            f"| {m.layers} | {m.mode} | {m.rss / MIB:,.0f} MiB ({host / MIB:,.0f}, {_delta(host, m.rss)}) "
            f"| {m.disk / MIB:,.1f} MiB ({disk / MIB:,.1f}, {_delta(disk, m.disk)}) | {m.wall:.0f} s "
            f"| {measured_layer} ({p['seconds_per_layer']}) |"
        )
        ok &= abs(host - m.rss) <= 0.25 * m.rss and abs(disk - m.disk) <= 0.25 * m.disk
        if per_layer is not None:
            timed &= abs(p["seconds_per_layer"] - per_layer) <= 0.25 * per_layer
    by = {(m.layers, m.mode): m for m in runs}
    small, large = min(m.layers for m in runs), max(m.layers for m in runs)
    layer = by[small, "layerwise"].largest_layer
    grow_lw = by[large, "layerwise"].rss - by[small, "layerwise"].rss
    grow_res = by[large, "resident"].rss - by[small, "resident"].rss
    flat = grow_lw < 2 * layer
    print(f"\nlayerwise peak RSS grows {grow_lw / MIB:+,.0f} MiB from {small} to {large} layers "
          f"(two layers' BF16 weights: {2 * layer / MIB:,.0f} MiB): {'flat' if flat else 'NOT flat'}")  # fmt: skip
    print(f"resident peak RSS grows {grow_res / MIB:+,.0f} MiB "
          f"(BF16 weights grow {(by[large, 'resident'].weights - by[small, 'resident'].weights) / MIB:,.0f} MiB)")  # fmt: skip
    no_copy = all(m.disk < m.weights for m in runs if m.mode == "layerwise")
    print("layerwise peak disk beside --out stays below the BF16 weights (no BF16 copy of the model): "
          + ("yes" if no_copy else "NO"))  # fmt: skip
    print("every memory and disk prediction within 25 % of the measurement: " + ("yes" if ok else "NO"))
    print("every calibration time per layer within 25 % (median over the layers; a shared machine's speed varies): "
          + ("yes" if timed else "NO"))  # fmt: skip
    return flat and no_copy and ok


PARTS = ("read", "read_wait", "dequantize", "calibrate", "error", "export", "write")


def part_report(runs: list[Measured]) -> bool:
    """Mean seconds per layer of each part, measured against the plan's, for the layerwise runs (the first layer,
    dense, left out where there are others: the plan times the largest layer)."""
    ok = True
    print("\n| layers | part | measured s/layer | plan s/layer | error |")
    print("|---|---|---|---|---|")
    for m in runs:
        if m.mode != "layerwise" or not m.parts:
            continue
        timed = m.parts[1:] or m.parts
        predicted = m.predicted.get("part_seconds") or {}
        rows = [(part, statistics.mean(p[part] for p in timed), predicted.get(part)) for part in PARTS]
        rows.append(
            ("layer", statistics.mean(m.layer_seconds[1:] or m.layer_seconds), m.predicted["seconds_per_layer"])
        )
        for part, measured, plan in rows:
            error = "n/a" if plan is None or measured <= 0 else _delta(plan, measured)
            off = plan is not None and abs(plan - measured) > 0.25 * max(measured, 1e-9) and part != "read_wait"
            ok &= not off
            plan_text = "n/a" if plan is None else f"{plan:.3f}"
            print(f"| {m.layers} | {part} | {measured:.3f} | {plan_text} | {error}{' OUTSIDE 25 %' if off else ''} |")
    print("every part within 25 % of the plan (read_wait, a difference of overlaps, not judged): "
          + ("yes" if ok else "NO"))  # fmt: skip
    return ok


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


def _delta(predicted: float, measured: float) -> str:
    return f"{100 * (predicted - measured) / measured:+.0f} %"


def fit(runs: list[Measured]) -> None:
    """Least squares for RSS = process + factor x weights (resident) and process + factor x largest layer +
    activations (layerwise), sharing the process term."""
    import numpy as np

    rows, target = [], []
    for m in runs:
        activations = m.plan["tokens"] * 512 * 2 * 1.5
        if m.mode == "resident":
            rows.append([1.0, m.weights, 0.0])
            target.append(m.rss)
        else:
            rows.append([1.0, 0.0, m.largest_layer])
            target.append(m.rss - activations)
    (process, resident, layer), *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
    print(f"\nfit: PROCESS_BYTES = {process / MIB:.0f} MiB, RESIDENT_FACTOR_CPU = {resident:.2f}, "
          f"LAYER_FACTOR_CPU = {layer:.2f}")  # fmt: skip
    rows, target = [], []
    for m in runs:
        if m.mode == "layerwise":
            for seconds in m.layer_seconds[1:]:  # layer 0 is dense
                rows.append([m.largest_layer / 1024**3 * m.plan["tokens"] / 1000, m.layers])
                target.append(seconds)
    if rows:
        (compute, scans), *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
        print(f"fit: SECONDS_PER_GIB_KTOK['cpu'] = {compute:.1f}, SECONDS_PER_LAYER_PER_LAYER = {scans:.3f} "
              f"(over {len(rows)} layers)")  # fmt: skip
    fit_parts([m for m in runs if m.mode == "layerwise" and m.parts], np)


def fit_parts(runs: list[Measured], np: Any) -> None:
    """Least squares, per part, of its seconds per layer against the plan's two terms for it (per byte or
    parameter, per module), over every MoE layer of every layerwise run of this invocation. One topology cannot tell
    the two terms apart: plan.py's were fitted to the tables of two invocations (the default and ``--dims
    n_routed_experts=128 hidden_size=64 moe_intermediate_size=128``) together."""
    from hubkit.quantize.plan import SECONDS_PER_LAYER_PER_LAYER

    gib = 1024**3
    terms: dict[str, tuple[str, Any]] = {
        "read": ("READ_SECONDS_PER_GIB, _PER_MODULE", lambda s, k: [s.of_largest(s.read_bytes) / gib]),
        "dequantize": ("1 / DEQUANTIZE_PARAMS_PER_SECOND, _SECONDS_PER_MODULE",
                       lambda s, k: [s.of_largest(s.int4_params)]),
        "calibrate": ("SECONDS_PER_GIB_KTOK, CALIBRATE_SECONDS_PER_MODULE_BATCH x batches", lambda s, k: [s.largest_layer / gib * k]),
        "error": ("ERROR_SECONDS_PER_GIB, _PER_MODULE", lambda s, k: [s.largest_layer / gib]),
        "export": ("EXPORT_SECONDS_PER_GIB, _PER_MODULE",
                   lambda s, k: [s.largest_layer / gib]),
        "write": ("WRITE_SECONDS_PER_GIB, _PER_MODULE", lambda s, k: [s.of_largest(s.layer_export_bytes) / gib]),
    }  # fmt: skip
    for part, (names, size) in terms.items():
        rows, target = [], []
        for m in runs:
            modules = [float(m.shape.of_largest(m.shape.modules))]
            scans = SECONDS_PER_LAYER_PER_LAYER * m.layers if part == "calibrate" else 0.0
            for measured in m.parts[1:]:
                rows.append(size(m.shape, m.plan["tokens"] / 1000) + modules)
                target.append(measured[part] - scans)
        if rows:
            found, *_ = np.linalg.lstsq(np.array(rows), np.array(target), rcond=None)
            print(f"fit: {part}: {names} = {', '.join(f'{value:.4g}' for value in found)}")


def kimi_plans(work: Path) -> None:
    from hubkit.checkpoint import load_checkpoint
    from hubkit.quantize.plan import estimate
    from hubkit.testing.kimi import KimiDims, int4_base_layout, write_sparse_checkpoint

    dims = KimiDims()
    config = {"text_config": {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers, "n_routed_experts": 384}}
    skeleton = write_sparse_checkpoint(work / "kimi-int4", int4_base_layout(dims), files={"config.json": config})
    base = load_checkpoint(str(skeleton))
    print(f"\nKimi-K2.x INT4 base skeleton: {len(base.tensors):,} tensors, {base.total_tensor_bytes / 1e9:,.0f} GB")
    for gpus in ("1xH100", "1xH200", "8xB300"):
        print(f"--plan --gpus {gpus} (512 samples x 512 tokens, batch 1):")
        text = estimate(base, gpus, batch=1, seq=512, tokens=512 * 512).render()
        print("  " + text.replace("\n", "\n  "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--fit", action="store_true", help="print the plan coefficients that fit these runs")
    parser.add_argument("--dims", nargs="+", default=[], metavar="KEY=VALUE", help="change the model's config")
    args = parser.parse_args()
    dims = {key: int(value) for key, _, value in (item.partition("=") for item in args.dims)}
    with tempfile.TemporaryDirectory(prefix="hubkit-bench-quantize-") as folder:
        work = Path(folder)
        runs = []
        for layers in args.layers:
            base = build(work, layers, dims)
            for mode in ("resident", "layerwise"):
                runs.append(run(base, mode))
                m = runs[-1]
                print(f"{layers} layers, {mode}: peak RSS {m.rss / MIB:,.0f} MiB, disk {m.disk / MIB:,.1f} MiB, "
                      f"{m.wall:.0f} s", flush=True)  # fmt: skip
        passed = report(runs)
        part_report(runs)
        print(load_note())
        if args.fit:
            fit(runs)
        kimi_plans(work)
    sys.exit(0 if passed else 1)


if __name__ == "__main__":
    main()
