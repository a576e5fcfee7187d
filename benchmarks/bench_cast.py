"""Benchmark the MXFP4 -> NVFP4 cast of ``hubkit quantize`` against a plain copy of the same shards, in one run.

Three timings over the same synthetic MXFP4 base (Kimi-K3 expert shapes, default ~1 GB in 4 shards):

1. a plain copy of the shards (``shutil.copyfile``, ``--jobs`` at once): the I/O floor;
2. ``hubkit.quantize.cast.run_cast`` with ``--jobs``;
3. the streaming converter NVIDIA ships for Kimi-K3 (modelopt's ``examples/kimi/kimi_k3/quantize_to_nvfp4.py``),
   reproduced here from its documented per-tensor recipe with modelopt's own functions (dequantize to BF16,
   ``mxfp4_to_nvfp4_per_block_amax``, ``NVFP4QTensor.quantize``, ``save_file`` per shard; same ``--jobs``, in
   processes as it runs them). Its expert bytes are compared with hubkit's.

Prints throughput (GB/s of base read) and the ratios. Run: ``python benchmarks/bench_cast.py [--gb 1] [--shards 4]
[--jobs 2]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PREFIX = "language_model.model.layers.{layer}.block_sparse_moe.experts.{expert}"
SHAPES = {"w1": (2048, 3584), "w3": (2048, 3584), "w2": (7168, 1024)}  # packed bytes: [out, in/2]


def make_base(folder: Path, gigabytes: float, shards: int) -> int:
    """MXFP4 experts (random nibbles, E8M0 exponents spread over 12 values) plus a BF16 tensor per shard."""
    folder.mkdir(parents=True)
    per_expert = sum(o * i * 17 // 16 for o, i in SHAPES.values())
    experts = max(1, int(gigabytes * 10**9 / per_expert / shards))
    generator = torch.Generator().manual_seed(0)
    weight_map = {}
    for shard in range(shards):
        tensors = {f"language_model.model.layers.{shard}.self_attn.o_proj.weight": torch.randn(512, 512).bfloat16()}
        for expert in range(experts):
            for proj, (out, half) in SHAPES.items():
                name = PREFIX.format(layer=shard, expert=expert) + f".{proj}"
                tensors[name + ".weight_packed"] = torch.randint(
                    0, 256, (out, half), dtype=torch.uint8, generator=generator
                )
                tensors[name + ".weight_scale"] = torch.randint(
                    115, 127, (out, half // 16), dtype=torch.uint8, generator=generator
                )
        file = f"model-{shard + 1:05d}-of-{shards:05d}.safetensors"
        save_file(tensors, folder / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    block = {"format": "mxfp4-pack-quantized", "quant_method": "compressed-tensors"}
    (folder / "config.json").write_text(
        json.dumps({"model_type": "kimi_k3", "text_config": {"quantization_config": block}})
    )
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def reference_shard(job: tuple[str, str]) -> None:
    """NVIDIA's converter for one shard, per its documented recipe: w1/w3 paired within the shard."""
    from modelopt.torch.quantization.qtensor import MXFP4QTensor, NVFP4QTensor
    from modelopt.torch.quantization.utils.numeric_utils import mxfp4_to_nvfp4_per_block_amax

    torch.set_num_threads(1)
    source, target = job
    out: dict[str, torch.Tensor] = {}
    with safe_open(source, framework="pt") as handle:
        keys = list(handle.keys())
        kmax = {
            k[: -len(".weight_scale")]: int(handle.get_tensor(k).max()) - 127
            for k in keys
            if k.endswith(".weight_scale")
        }
        for key in keys:
            if key.endswith(".weight_scale"):
                continue
            if not key.endswith(".weight_packed"):
                out[key] = handle.get_tensor(key)
                continue
            module = key[: -len(".weight_packed")]
            packed, e8m0 = handle.get_tensor(key), handle.get_tensor(module + ".weight_scale")
            parent, proj = module.rsplit(".", 1)
            k = max(kmax[f"{parent}.w1"], kmax[f"{parent}.w3"]) if proj in ("w1", "w3") else kmax[module]
            shape = torch.Size((packed.shape[0], packed.shape[1] * 2))
            bf16 = MXFP4QTensor(shape, torch.bfloat16, packed).dequantize(
                dtype=torch.bfloat16, scale=e8m0, block_sizes=[32]
            )
            amax = mxfp4_to_nvfp4_per_block_amax(packed.view(*e8m0.shape, 16), e8m0)
            scale_2 = torch.tensor(2.0 ** (k - 8), dtype=torch.float32)
            scale = (amax / (6.0 * scale_2)).clamp(min=2.0**-9, max=448.0).to(torch.float8_e4m3fn)
            q, weight_scale, _ = NVFP4QTensor.quantize(bf16, 16, scale, scale_2, try_tensorrt=False)
            out[module + ".weight"] = q._quantized_data
            out[module + ".weight_scale"] = weight_scale
            out[module + ".weight_scale_2"] = scale_2
            out[module + ".input_scale"] = torch.tensor(1.0)
    save_file(out, target)


def timed(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()

    # imported once before any timing (it takes seconds)
    import modelopt.torch.export.convert_hf_config
    import modelopt.torch.quantization.qtensor  # noqa: F401

    from hubkit.quantize.cast import CastRecipe, run_cast

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        size = make_base(root / "base", args.gb, args.shards)
        shards = sorted((root / "base").glob("*.safetensors"))
        for name in ("copy", "hubkit", "reference"):
            (root / name).mkdir()

        def copy() -> None:
            with ThreadPoolExecutor(args.jobs) as pool:
                list(pool.map(lambda p: shutil.copyfile(p, root / "copy" / p.name), shards))

        def reference() -> None:
            jobs = [(str(p), str(root / "reference" / p.name)) for p in shards]
            with ProcessPoolExecutor(args.jobs) as pool:
                list(pool.map(reference_shard, jobs))

        copy_s = timed(copy)
        hubkit_s = timed(lambda: run_cast(root / "base", root / "hubkit", CastRecipe("bench"), args.jobs))
        reference_s = timed(reference)
        same = True
        for shard in shards:
            with (
                safe_open(str(root / "hubkit" / shard.name), "pt") as ours,
                safe_open(str(root / "reference" / shard.name), "pt") as theirs,
            ):
                for key in theirs.keys():  # noqa: SIM118
                    same &= torch.equal(
                        ours.get_tensor(key).reshape(-1).view(torch.uint8),
                        theirs.get_tensor(key).reshape(-1).view(torch.uint8),
                    )
        gb = size / 1e9
        print(f"base: {gb:.2f} GB in {args.shards} shards, {args.jobs} jobs")
        print(f"plain copy:          {copy_s:7.2f} s  {gb / copy_s:6.2f} GB/s")
        print(f"hubkit cast:         {hubkit_s:7.2f} s  {gb / hubkit_s:6.2f} GB/s  ({hubkit_s / copy_s:.2f}x the copy)")
        print(
            f"NVIDIA's recipe:     {reference_s:7.2f} s  {gb / reference_s:6.2f} GB/s  ({reference_s / copy_s:.2f}x the copy)"
        )
        print(f"hubkit / NVIDIA:     {hubkit_s / reference_s:.2f}x the time; expert bytes identical: {same}")


if __name__ == "__main__":
    main()
