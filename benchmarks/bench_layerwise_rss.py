"""Layerwise peak RSS against depth: ``hubkit quantize --mode layerwise`` on bench_quantize.py's INT4 DeepSeek-V3
bases (hidden 512, 8 experts, ~21 MB of BF16 weights per MoE layer) at several depths, the growth from the
shallowest to the deepest next to one layer's BF16 weights (the design promises less).

``--hubkit FOLDER`` runs another hubkit tree (e.g. an older commit's ``git archive``) on the same bases, for a
before/after comparison. Run: ``python benchmarks/bench_layerwise_rss.py --layers 4 16`` (a few minutes).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quantize  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--hubkit", type=Path, nargs="+", default=[ROOT], help="hubkit trees to run (default: this)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        bases = {layers: bench_quantize.build(work, layers, {}) for layers in args.layers}
        for tree in args.hubkit:
            bench_quantize.ROOT = tree.resolve()  # the child's PYTHONPATH
            peaks = {}
            for layers, base in bases.items():
                for old in base.parent.glob("runs-*"):
                    shutil.rmtree(old)
                measured = bench_quantize.run(base, "layerwise")
                peaks[layers] = measured.rss
                print(f"{tree}: {layers} layers: peak RSS {measured.rss / bench_quantize.MIB:,.0f} MiB", flush=True)
                layer = measured.largest_layer
            small, large = min(peaks), max(peaks)
            growth = peaks[large] - peaks[small]
            print(
                f"{tree}: {small} -> {large} layers: {growth / bench_quantize.MIB:+,.0f} MiB "
                f"(one layer's BF16 weights: {layer / bench_quantize.MIB:,.0f} MiB)"
            )


if __name__ == "__main__":
    main()
