#!/usr/bin/env bash
# The main job on a fresh clone: install hubkit, build a tiny Kimi-shaped NVFP4 export, validate it.
set -euo pipefail
cd "$(dirname "$0")/.."

[ -x .venv/bin/hubkit ] || { python3 -m venv .venv && .venv/bin/python -m pip install --quiet -e '.[dev]'; }
out="$(mktemp -d)/tiny-kimi-nvfp4"
.venv/bin/python examples/build_tiny_export.py "$out"
.venv/bin/hubkit validate "$out" --deep
echo "now break it and look again, e.g.: rm $out/generation_config.json && .venv/bin/hubkit validate $out"
