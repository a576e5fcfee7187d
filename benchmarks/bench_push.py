"""Benchmark ``hubkit push``, and remote validation.

1. Push + verify of a folder of several shards (default ~2 GB) to the local Hub-compatible server, against plain
   ``HfApi().upload_folder`` of the same folder, in one run: the ratio (target <= 1.15x) and the bytes hashed per
   byte uploaded (target 1.0). The server has no Xet, as a Hub without Xet: hubkit (Xet on) negotiates classic
   LFS; the baseline is run as a client without Xet, since ``upload_folder`` would otherwise try Xet and fail.
2. Remote validation of the full-scale Kimi skeleton served by the local server: bytes transferred as a fraction
   of the repo size, and the wall time.

Run: ``python benchmarks/bench_push.py [--gb 2] [--shards 8]``
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def make_folder(folder: Path, gigabytes: float, shards: int) -> int:
    """Valid safetensors shards (one U8 tensor of random bytes each, as an export's shards are valid: push scans
    their headers for secrets, not the tensor data they declare) and a config; the bytes written."""
    folder.mkdir(parents=True)
    data_size = int(gigabytes * 10**9 / shards)
    header = json.dumps({"weight": {"dtype": "U8", "shape": [data_size], "data_offsets": [0, data_size]}}).encode()
    header += b" " * (-len(header) % 8)
    size = 8 + len(header) + data_size
    for index in range(shards):
        chunk = os.urandom(4 * 1024 * 1024)  # each shard its own bytes: nothing to deduplicate
        with open(folder / f"model-{index + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            written = 0
            while written < data_size:
                piece = chunk[: min(len(chunk), data_size - written)]
                handle.write(piece)
                written += len(piece)
    (folder / "config.json").write_text('{"architectures": ["Example"]}\n')
    return size * shards


def push_benchmark(work: Path, gigabytes: float, shards: int) -> None:
    from huggingface_hub import HfApi, constants

    from hubkit.hub.push import PushOptions, push
    from hubkit.hub.server import HubServer

    folder = work / "folder"
    total = make_folder(folder, gigabytes, shards)
    with HubServer(work / "store") as server:
        os.environ["HF_ENDPOINT"], os.environ["HF_TOKEN"] = server.endpoint, server.token
        api = HfApi(endpoint=server.endpoint, token=server.token)
        api.create_repo("bench/plain")
        xet, constants.HF_HUB_DISABLE_XET = (
            constants.HF_HUB_DISABLE_XET,
            True,
        )  # read at each upload: a client without Xet
        try:
            start = time.perf_counter()
            api.upload_folder(folder_path=folder, repo_id="bench/plain")
            plain = time.perf_counter() - start
        finally:
            constants.HF_HUB_DISABLE_XET = xet
        for item in (work / "store" / "objects").glob("lfs-*"):
            item.unlink()  # hubkit must upload every byte again, not find them stored
        start = time.perf_counter()
        result = push(PushOptions(folder=folder, repo="bench/hubkit", batch="4", validate=False, progress=False))
        ours = time.perf_counter() - start
    print(
        f"push + verify of {total / 1e9:.2f} GB in {shards} shards ({len(result.commits)} commits, "
        f"verified {result.verified}, Xet offered {result.xet_offered}):"
    )
    print(f"  upload_folder {plain:.1f} s, hubkit push {ours:.1f} s, ratio {ours / plain:.2f}x (target <= 1.15x)")
    print(f"  bytes hashed per byte uploaded: {result.bytes_hashed / max(result.bytes_to_upload, 1):.2f} (target 1.0)")


def remote_validation_benchmark(work: Path) -> None:
    from hubkit.hub.server import HubServer
    from hubkit.testing.kimi import KimiDims, build_nvfp4_checkpoint
    from hubkit.validate.options import ValidateOptions
    from hubkit.validate.runner import validate

    skeleton = build_nvfp4_checkpoint(work / "skeleton", KimiDims(), sparse=True)
    repo_bytes = sum(p.stat().st_size for p in skeleton.rglob("*") if p.is_file())
    with HubServer(work / "store-skeleton") as server:
        os.environ["HF_ENDPOINT"], os.environ["HF_TOKEN"] = server.endpoint, server.token
        server.store.import_folder("models", "bench/kimi-skeleton", skeleton)
        server.bytes_sent = 0
        start = time.perf_counter()
        report = validate("hf://bench/kimi-skeleton", ValidateOptions())
        wall = time.perf_counter() - start
        sent = server.bytes_sent
    print(f"remote validation of the full-scale skeleton ({repo_bytes / 1e9:,.0f} GB, passed {report.passed}):")
    print(f"  {sent / 1e6:,.1f} MB transferred = {100 * sent / repo_bytes:.4f} % of the repo, {wall:.1f} s wall")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=2.0)
    parser.add_argument("--shards", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hubkit-bench-push-") as folder:
        push_benchmark(Path(folder), args.gb, args.shards)
    with tempfile.TemporaryDirectory(prefix="hubkit-bench-remote-") as folder:
        remote_validation_benchmark(Path(folder))
