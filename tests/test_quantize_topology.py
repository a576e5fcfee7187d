"""Issue 18, "full Kimi topology": the plan counts the per-tensor cost of a layerwise run (skeleton, quantizers,
name tables, what finished layers leave), so it holds at 8 and at 384 experts; torch's per-shape matmul caches
(oneDNN's kernels, ideep's descriptors) are bounded during a layerwise run."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hubkit.checkpoint import load_checkpoint
from hubkit.quantize.plan import HOST_BYTES_PER_TENSOR, estimate, shape_of
from hubkit.sizes import MiB
from hubkit.testing.kimi import TINY, KimiDims, int4_base_layout, write_sparse_checkpoint

#: benchmarks/bench_kimi_topology.py's base: Kimi-K2's topology at the tiny widths.
TOPOLOGY = dataclasses.replace(TINY, layers=61, experts=384, experts_per_token=8)
#: Its measured peak RSS (layerwise, max recipe, 64 x 64 tokens, two cores; the plan said 630 MiB before it
#: counted the per-tensor cost).
MEASURED_PEAK = 1_771 * MiB


def skeleton(folder: Path, dims: KimiDims) -> Path:
    """A header-only INT4 base of ``dims`` (its tensor data are holes)."""
    text = {"hidden_size": dims.hidden, "num_hidden_layers": dims.layers, "n_routed_experts": dims.experts}
    return write_sparse_checkpoint(folder, int4_base_layout(dims), files={"config.json": {"text_config": text}})


def layerwise_plan(folder: Path) -> tuple[int, int]:
    """The layerwise plan's host bytes on this machine's CPU, and the base's tensor count."""
    plan = estimate(load_checkpoint(str(folder)), "cpu", batch=8, seq=64, tokens=64 * 64)
    return plan.estimate("layerwise").host_bytes, plan.shape.tensors


def test_shape_counts_the_tensors_a_bf16_checkpoint_would_list(tmp_path: Path) -> None:
    dims = dataclasses.replace(TINY, layers=3)
    folder = skeleton(tmp_path / "base", dims)
    layout = int4_base_layout(dims)
    side = sum(1 for name, _, _ in layout if name.endswith((".weight_scale", ".weight_shape")))
    assert shape_of(load_checkpoint(str(folder))).tensors == len(layout) - side


def test_the_layerwise_host_estimate_has_a_term_per_tensor_of_the_base(tmp_path: Path) -> None:
    from hubkit.quantize.modes import get

    shape = shape_of(load_checkpoint(str(skeleton(tmp_path / "base", dataclasses.replace(TINY, layers=3)))))
    for kind in ("cpu", "cuda"):
        hosts = [
            get("layerwise").estimate(dataclasses.replace(shape, tensors=count), kind, 4096, 8, 64, 1).host_bytes
            for count in (1_000, 70_000)
        ]
        assert hosts[1] - hosts[0] == HOST_BYTES_PER_TENSOR * 69_000


@pytest.mark.slow
def test_the_layerwise_plan_grows_with_the_tensor_count_as_measured(tmp_path: Path) -> None:
    few_host, few = layerwise_plan(skeleton(tmp_path / "8-experts", dataclasses.replace(TOPOLOGY, experts=8)))
    many_host, many = layerwise_plan(skeleton(tmp_path / "384-experts", TOPOLOGY))
    assert many - few > 60_000
    # the per-tensor term, plus the larger experts' bytes of one layer (a few MiB at hidden 64)
    assert (
        HOST_BYTES_PER_TENSOR * (many - few) <= many_host - few_host <= HOST_BYTES_PER_TENSOR * (many - few) + 32 * MiB
    )
    assert abs(many_host - MEASURED_PEAK) <= 0.25 * MEASURED_PEAK


@pytest.mark.parametrize("variable", ["ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"])
def test_a_layerwise_run_bounds_onednns_and_ideeps_caches(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    from hubkit.quantize import layerwise

    assert variable in layerwise.ONEDNN_CACHE_ENV
    monkeypatch.delenv(variable, raising=False)
    layerwise.bound_host_heap()
    assert os.environ[variable] == str(layerwise.ONEDNN_CACHE_CAPACITY)
    monkeypatch.setenv(variable, "64")  # the user's choice stays
    layerwise.bound_host_heap()
    assert os.environ[variable] == "64"


GROWTH = """
import sys
import torch
if sys.argv[1] == "bounded":
    from hubkit.quantize.layerwise import bound_host_heap
    bound_host_heap()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
weight = torch.randn(768, 512, dtype=torch.bfloat16)
torch.nn.functional.linear(torch.randn(1, 512, dtype=torch.bfloat16), weight)
before = rss()
for tokens in range(1, 300):  # an expert's token count differs on every call
    torch.nn.functional.linear(torch.randn(tokens, 512, dtype=torch.bfloat16), weight)
print(rss() - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_bf16_matmuls_of_many_shapes_keep_less_memory_in_a_layerwise_run() -> None:
    """299 matmul shapes keep ~200 MiB by default, ~125 MiB with only oneDNN's kernel cache bounded (ideep's
    descriptor cache still grows), ~4 MiB with both bounded."""
    pytest.importorskip("torch")
    from hubkit.quantize.layerwise import ONEDNN_CACHE_ENV

    env = {k: v for k, v in os.environ.items() if k not in ONEDNN_CACHE_ENV}
    runs = {
        "default": ("default", env),
        "kernels only": ("default", {**env, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "8"}),
        "bounded": ("bounded", env),
    }
    growth = {
        name: int(
            subprocess.run([sys.executable, "-c", GROWTH, how], env=run_env, capture_output=True, check=True).stdout
        )
        for name, (how, run_env) in runs.items()
    }
    assert growth["kernels only"] < 0.75 * growth["default"], growth
    assert growth["bounded"] < 0.25 * growth["kernels only"], growth
