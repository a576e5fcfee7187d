"""Build the wheelhouse ``benchmarks/gpu_check.sh`` installs on a GPU host that has no network (``.gpu-wheels/``).

A lent GPU host has Python 3.12 with torch and CUDA preinstalled but lacks most of what hubkit's quantize path
imports. This downloads, for CPython 3.12 on manylinux x86_64 and without dependencies, the exact versions
installed in *this* environment of: hubkit's core dependencies, the ``quantize`` extra and pytest, with
everything they require in turn, except torch and the CUDA/compiler libraries torch brings (the host's own are
used). antlr4-python3-runtime 4.9.3 (omegaconf's) exists only as an sdist and is built into a wheel here.

Run: ``python benchmarks/gpu_wheels.py [--dest .gpu-wheels]``; the folder is git-ignored, never committed.
Equivalent by hand: ``pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d .gpu-wheels NAME==VERSION ...``.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: What the GPU host provides (torch with its CUDA libraries and the scientific stack it was installed with, as
#: a lent GPU host was found to have), never carried: scipy alone would nearly fill the 64 MiB carry limit.
PROVIDED = re.compile(
    r"^(torch|triton|nvidia-(?!modelopt).*|cuda-.*|sympy|mpmath|networkx|numpy|scipy|ninja|setuptools|pip|wheel)$"
)
ROOTS = ["huggingface-hub", "safetensors", "click", "jinja2", "tqdm", "detect-secrets", "msgspec", "pydantic",
         "pyyaml", "picklescan", "transformers", "nvidia-modelopt", "compressed-tensors", "accelerate", "requests",
         "pytest"]  # fmt: skip
SDIST_ONLY = {"antlr4-python3-runtime"}


def _name(requirement: str) -> str:
    return re.split(r"[ ;<>=!~\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def closure() -> dict[str, str]:
    """Installed distributions reachable from ROOTS (markers for this interpreter), minus what the host has."""
    found: dict[str, str] = {}
    todo = list(ROOTS)
    while todo:
        name = _name(todo.pop())
        if name in found or PROVIDED.match(name):
            continue
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed here
        for requirement in metadata.requires(name) or []:
            if "extra ==" not in requirement:
                todo.append(requirement)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=ROOT / ".gpu-wheels")
    parser.add_argument("--list", action="store_true", help="print what would be carried; download nothing")
    args = parser.parse_args()
    pins = closure()
    if args.list:
        print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))
        return
    args.dest.mkdir(exist_ok=True)
    binary = [f"{n}=={v}" for n, v in sorted(pins.items()) if n not in SDIST_ONLY]
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
         "--implementation", "cp", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
         "--platform", "manylinux_2_17_x86_64", "-d", str(args.dest), *binary],
        check=True,
    )  # fmt: skip
    for name in sorted(SDIST_ONLY & pins.keys()):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(args.dest), f"{name}=={pins[name]}"],
            check=True,
        )
    size = sum(p.stat().st_size for p in args.dest.glob("*.whl"))
    print(f"{len(list(args.dest.glob('*.whl')))} wheels, {size / 1024**2:.1f} MiB in {args.dest}")


if __name__ == "__main__":
    main()
