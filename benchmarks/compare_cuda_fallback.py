"""On a CUDA host: quantize the same tiny model once on CUDA (modelopt's own kernels) and once on the CPU
(hubkit's stand-ins), then compare the exported NVFP4 tensors. One short run confirms the fallback.

Run: ``python benchmarks/compare_cuda_fallback.py`` (needs CUDA and the quantize extra).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch
    from safetensors.torch import load_file

    from hubkit.quantize.pipeline import QuantizeOptions, quantize
    from hubkit.quantize.tiny_models import WORDS, tiny_deepseek, tiny_tokenizer

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA device: this compares modelopt's CUDA kernels with hubkit's CPU stand-ins")
    with tempfile.TemporaryDirectory(prefix="hubkit-compare-") as folder:
        work = Path(folder)
        base = tiny_deepseek(work / "base")
        tiny_tokenizer(base)
        calib = work / "calib.jsonl"
        calib.write_text("".join(json.dumps({"text": " ".join(WORDS * 3)}) + "\n" for _ in range(32)))
        exports = {}
        for device in ("cuda", "cpu"):
            options = QuantizeOptions(
                base=str(base), out=work / device, calib=(str(calib),), calib_size=32, calib_seq=64, device=device,
                progress=False,
            )  # fmt: skip
            result = quantize(options)
            exports[device] = load_file(result.out / "model.safetensors")
            print(
                f"{device}: validation passed {result.report.passed}, fallback {result.provenance['cpu_nvfp4_fallback']}"
            )
        cuda, cpu = exports["cuda"], exports["cpu"]
        for kind, dtype in (("weight", torch.uint8), ("weight_scale", torch.float8_e4m3fn)):
            names = [n for n, t in cuda.items() if n.endswith(f".{kind}") and t.dtype == dtype]
            same = sum(int((cuda[n].view(torch.uint8) == cpu[n].view(torch.uint8)).sum()) for n in names)
            total = sum(cuda[n].numel() for n in names)
            print(f"{kind}: {same:,} of {total:,} bytes identical ({100 * same / max(total, 1):.3f} %)")
        scalars = [n for n in cuda if n.endswith((".weight_scale_2", ".input_scale"))]
        worst = max(
            float((cuda[n].float() - cpu[n].float()).abs().max() / cuda[n].float().abs().max()) for n in scalars
        )
        print(f"global scales: largest relative difference {worst:.2e} over {len(scalars)} tensors")


if __name__ == "__main__":
    main()
