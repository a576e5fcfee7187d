"""Benchmark ``hubkit validate`` on a full-scale Kimi-K2.x NVFP4 skeleton against the bare safetensors floor.

Usage::

    python benchmarks/bench_validate.py [--dir DIR] [--rounds N] [--keep]

What it measures (every child is a cold ``sys.executable`` process, so both sides pay interpreter start):

* structural validation: ``python -m hubkit validate DIR --format json`` (everything but ``--deep``) against
  the floor, a tiny inline script that ``safe_open``s every shard and calls ``get_slice(key).get_shape()`` and
  ``.get_dtype()`` for every key. The two alternate within each round (the order flips every round) after one
  untimed warm-up of each. Targets: median ratio hubkit / floor <= 3.5x (about two seconds here, fast enough
  for a gate in a release that takes hours), hubkit peak RSS <= 1024 MB.
* CLI start: ``python -m hubkit --help`` against ``python -c pass``, alternating the same way.
* whether ``--help`` imports (or even tries to import) torch, through an import spy in a child process.

hubkit's modules are byte-compiled first (``compileall``), as ``pip install`` does for an installed copy:
in a source checkout under ``PYTHONDONTWRITEBYTECODE=1`` every run would otherwise compile them anew.

Peak memory is the child's own ``ru_maxrss``, read with ``os.wait4`` when the child is reaped: exact per
child, no wrapper code in the measured process. Linux carries a process's peak across fork and exec, so
the skeleton is built (and its 277,000-entry layout held) in a separate process, keeping this one small.
MB here means MiB (2**20 bytes).
"""

from __future__ import annotations

import argparse
import compileall
import inspect
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hubkit.testing.kimi import (  # noqa: E402  (the path above makes a source checkout importable)
    KimiDims,
    build_nvfp4_checkpoint,
    nvfp4_layout,
    shard_plan,
    write_sparse_checkpoint,
)

RATIO_TARGET = 3.5
MEMORY_TARGET_MB = 1024.0
HEAVY_MODULES = ("torch", "transformers")

FLOOR_SCRIPT = """
import glob, os, sys
from safetensors import safe_open
count = 0
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*.safetensors"))):
    with safe_open(path, framework="numpy") as handle:
        for key in handle.keys():
            view = handle.get_slice(key)
            view.get_shape()
            view.get_dtype()
            count += 1
print(count)
"""

IMPORT_SPY_SCRIPT = """
import json, runpy, sys
WATCH = set(sys.argv[1].split(","))
attempted = set()

class Spy:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in WATCH:
            attempted.add(name)
        return None  # let the real finders resolve (or fail) the import

sys.meta_path.insert(0, Spy())
sys.argv = ["hubkit", "--help"]
code = 0
try:
    runpy.run_module("hubkit", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
loaded = sorted(name for name in sys.modules if name.partition(".")[0] in WATCH)
sys.stderr.write("IMPORT-SPY " + json.dumps({"exit": code, "attempted": sorted(attempted), "loaded": loaded}) + "\\n")
"""


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_mb: float
    returncode: int
    stdout: str
    stderr: str


def mib(usage: resource.struct_rusage) -> float:
    # ru_maxrss is KiB on Linux, bytes on macOS.
    return usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)


def run_child(args: list[str]) -> Run:
    """Run ``args`` to completion; wall time from spawn to reap, peak RSS from ``os.wait4``."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=REPO)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: keep Popen from waiting again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    return Run(seconds, mib(usage), proc.returncode, stdout, stderr)


def expect_ok(run: Run, what: str) -> None:
    if run.returncode != 0:
        raise SystemExit(f"{what} exited {run.returncode}\n--- stdout ---\n{run.stdout}\n--- stderr ---\n{run.stderr}")


def prepare_checkpoint(path: Path) -> tuple[int, int]:
    """Build the full-scale sparse skeleton in ``path`` unless it is already there; return (shards, tensors)."""
    layout = nvfp4_layout(KimiDims())
    shard_bytes = inspect.signature(write_sparse_checkpoint).parameters["shard_bytes"].default
    shards = len(shard_plan(layout, shard_bytes))
    index = path / "model.safetensors.index.json"
    present = sorted(path.glob("model-*.safetensors")) if path.is_dir() else []
    if len(present) == shards and index.is_file():
        print(f"reusing skeleton in {path} ({shards} shards)")
        return shards, len(layout)
    if path.is_dir() and any(path.iterdir()) and not index.is_file():
        raise SystemExit(f"{path} is not empty and holds no skeleton: refusing to write into it")
    for stale in present:  # a skeleton with another shard count: its shard names differ, remove them
        stale.unlink()
    start = time.perf_counter()
    build_nvfp4_checkpoint(path, KimiDims(), sparse=True)
    print(f"built skeleton in {path}: {shards} shards, {len(layout):,} tensors in {time.perf_counter() - start:.1f} s")
    return shards, len(layout)


def prepare_in_child(path: Path) -> int:
    """Run ``prepare_checkpoint`` in a child process (see the module docstring); return the tensor count."""
    done = subprocess.run(
        [sys.executable, __file__, "--prepare-only", "--dir", str(path)], stdout=subprocess.PIPE, text=True, check=False
    )
    sys.stdout.write(done.stdout.partition("TENSORS ")[0])
    if done.returncode != 0 or "TENSORS " not in done.stdout:
        raise SystemExit(f"building the skeleton failed (exit {done.returncode})")
    return int(done.stdout.rpartition("TENSORS ")[2])


def alternate(rounds: int, first: list[str], second: list[str]) -> tuple[list[Run], list[Run]]:
    """One untimed warm-up of each, then ``rounds`` timed pairs whose order flips every round."""
    run_child(first)
    run_child(second)
    a: list[Run] = []
    b: list[Run] = []
    for i in range(rounds):
        if i % 2 == 0:
            a.append(run_child(first))
            b.append(run_child(second))
        else:
            b.append(run_child(second))
            a.append(run_child(first))
        print(f"  round {i + 1}/{rounds}: {a[-1].seconds:6.3f} s | {b[-1].seconds:6.3f} s", flush=True)
    return a, b


def median_seconds(runs: list[Run]) -> float:
    return statistics.median(r.seconds for r in runs)


def bench_structural(path: Path, rounds: int, tensors: int) -> list[str]:
    python = sys.executable
    floor_cmd = [python, "-c", FLOOR_SCRIPT, str(path)]
    hubkit_cmd = [python, "-m", "hubkit", "validate", str(path), "--format", "json"]
    print(f"structural validation, {rounds} round(s) (floor | hubkit):", flush=True)
    floors, hubkits = alternate(rounds, floor_cmd, hubkit_cmd)
    for run in floors:
        expect_ok(run, "floor script")
        if int(run.stdout.strip()) != tensors:
            raise SystemExit(f"floor script saw {run.stdout.strip()} tensors, expected {tensors}")
    for run in hubkits:
        expect_ok(run, "hubkit validate")
        try:
            report = json.loads(run.stdout)
        except json.JSONDecodeError as exc:
            raise SystemExit(f"hubkit validate printed no JSON report ({exc}):\n{run.stdout[:2000]}") from exc
        if report["summary"]["passed"] is not True:
            raise SystemExit(f"hubkit validate did not pass:\n{run.stdout[:2000]}")
    floor, hubkit = median_seconds(floors), median_seconds(hubkits)
    ratio = hubkit / floor
    peak = max(r.peak_mb for r in hubkits)
    floor_peak = max(r.peak_mb for r in floors)
    return [
        f"structural validation: floor median {floor:.2f} s, hubkit median {hubkit:.2f} s, "
        f"ratio {ratio:.2f}x (target <= {RATIO_TARGET}x) {'OK' if ratio <= RATIO_TARGET else 'MISSED'}",
        f"peak memory: {peak:.0f} MB (target <= {MEMORY_TARGET_MB:.0f} MB) "
        f"{'OK' if peak <= MEMORY_TARGET_MB else 'MISSED'}  [floor: {floor_peak:.0f} MB]",
    ]


def bench_help(rounds: int) -> list[str]:
    python = sys.executable
    print(f"CLI start, {rounds} round(s) (python -c pass | hubkit --help):", flush=True)
    bares, helps = alternate(rounds, [python, "-c", "pass"], [python, "-m", "hubkit", "--help"])
    for run in bares:
        expect_ok(run, "python -c pass")
    for run in helps:
        expect_ok(run, "hubkit --help")
    bare, help_ = median_seconds(bares), median_seconds(helps)
    return [
        f"hubkit --help: {help_:.2f} s vs python -c pass {bare:.2f} s "
        f"(+{(help_ - bare) * 1000:.0f} ms, {help_ / bare:.1f}x)"
    ]


def check_help_imports() -> list[str]:
    run = run_child([sys.executable, "-c", IMPORT_SPY_SCRIPT, ",".join(HEAVY_MODULES)])
    expect_ok(run, "import spy")
    marker = [line for line in run.stderr.splitlines() if line.startswith("IMPORT-SPY ")]
    if not marker:
        raise SystemExit(f"import spy reported nothing:\n{run.stderr}")
    spy = json.loads(marker[-1].removeprefix("IMPORT-SPY "))
    if spy["exit"] not in (0, None):
        raise SystemExit(f"hubkit --help exited {spy['exit']} under the import spy:\n{run.stderr}")
    lines = []
    for module in HEAVY_MODULES:
        attempted = any(name.partition(".")[0] == module for name in spy["attempted"])
        loaded = any(name.partition(".")[0] == module for name in spy["loaded"])
        installed = (
            subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)",
                ],
                check=False,
            ).returncode
            == 0
        )
        verdict = "OK" if not attempted else "MISSED"
        lines.append(
            f"hubkit --help imports {module}: {'yes' if loaded else 'no'} (import attempted: "
            f"{'yes' if attempted else 'no'}; {module} installed: {'yes' if installed else 'no'}) {verdict}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, help="where the skeleton lives (reused if complete; default: a temp dir)")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per comparison (default: 5)")
    parser.add_argument("--keep", action="store_true", help="keep the default temp dir instead of removing it")
    parser.add_argument("--prepare-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prepare_only:
        _, tensors = prepare_checkpoint(args.dir.resolve())
        print(f"TENSORS {tensors}")
        return
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    created = args.dir is None
    path: Path = Path(tempfile.mkdtemp(prefix="hubkit-bench-")) if created else args.dir.resolve()
    try:
        print(f"python {sys.version.split()[0]} ({sys.executable}), {os.cpu_count()} CPUs")
        tensors = prepare_in_child(path)
        compileall.compile_dir(REPO / "hubkit", quiet=1)
        results = bench_structural(path, args.rounds, tensors)
        results += bench_help(args.rounds)
        results += check_help_imports()
        print()
        print("\n".join(results))
    finally:
        if created and not args.keep:
            shutil.rmtree(path, ignore_errors=True)
        elif created:
            print(f"kept skeleton in {path}")


if __name__ == "__main__":
    main()
