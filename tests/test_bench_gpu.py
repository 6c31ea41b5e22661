"""``scripts/bench-gpu.sh`` in its tiny CPU mode: every row runs and prints one JSON line (no GPU in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_script_tiny_cpu_mode():
    env = dict(os.environ, PYTHON=sys.executable, HF_HUB_OFFLINE="1")
    cmd = [str(ROOT / "scripts" / "bench-gpu.sh"), "--tiny", "--device", "cpu", "--repeats", "1"]
    proc = subprocess.run(
        [*cmd, "--decode-tokens", "2"], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]
    summary, rows = lines[-1], lines[:-1]
    assert summary["benchmark"] == "gpu" and summary["rows"] == rows
    seen = {(r["row"], r.get("model")) for r in rows}
    assert seen == {
        ("mamba-prefill", "ours"), ("mamba-prefill", "transformers-mamba"), ("mamba-decode", "ours"),
        ("mamba-train", None), ("dass", "DASS-tiny"), ("dass", "AST"),
        ("llama-prefill", "transformers-llama-sdpa"), ("llama-decode", "transformers-llama-sdpa"),
    }  # fmt: skip
    decode = [r for r in rows if r["row"] == "mamba-decode"]
    assert {(r["context"], r["graph"]) for r in decode} == {(8, False), (8, True), (24, False), (24, True)}
    assert all(r["status"].startswith("skipped") for r in decode if r["graph"])  # CUDA graphs need CUDA
    assert all(r["kernel"] == "numba" for r in rows if r.get("model") == "ours")
    timed = [r for r in rows if "status" not in r]
    assert all((r.get("ms") or r.get("ms_per_token")) > 0 for r in timed)
    assert {r["method"] for r in rows if r["row"] == "mamba-train"} == {"auto", "chunked"}
