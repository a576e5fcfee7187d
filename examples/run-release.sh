#!/usr/bin/env bash
# The main job on a fresh clone: install hubkit, build a tiny Kimi-shaped INT4 base, and run the whole release
# (quantize on CPU -> card -> validate -> push to a local Hub-compatible server -> verify -> tag).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/hubkit ]; then
  python3 -m venv .venv
  # torch first (on a machine without CUDA from PyTorch's CPU index: TORCH_INDEX_URL, see the README's Install)
  .venv/bin/python -m pip install --quiet "$(grep '^torch==' constraints/release.txt)" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
  .venv/bin/python -m pip install --quiet -c constraints/release.txt -c constraints/dev.txt -e '.[dev,quantize]'
fi
export HF_HUB_DISABLE_TELEMETRY=1
.venv/bin/python examples/tiny-release/build_base.py examples/tiny-release
.venv/bin/hubkit release examples/tiny-release/hubkit.toml "$@"
echo
echo "look at: examples/tiny-release/Kimi-Tiny-NVFP4 (export, README.md card, .hubkit/ records)"
echo "         examples/tiny-release/.hubkit/local-hub (the local Hub's store); rerun: a no-op"
