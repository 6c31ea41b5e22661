#!/usr/bin/env bash
# Every GPU benchmark row of sslalm on one GPU, one JSON line per row (docs/benchmarks.md lists the rows):
# Mamba-2.8B shape bf16 prefill / decode (eager and CUDA graph) / 2-layer training slice, DASS-small at
# 10 / 60 / 600 s beside AST, and a LLaMA-7B shape (transformers + SDPA) beside.
#
#   scripts/bench-gpu.sh                       # on a CUDA machine
#   scripts/bench-gpu.sh --tiny --device cpu   # tiny shapes on a CPU: checks the script, measures nothing
#
# Extra arguments go to `sslalm bench gpu` (see --help). PYTHON selects the interpreter.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
export PYTHONPATH="$root/src${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m sslalm.cli bench gpu "$@"
