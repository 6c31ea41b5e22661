"""``sslalm bench scan``: the selective-scan methods side by side on one machine, in one run.

Cases (batch, dim, L, N):

* ``layer-fwd``: (1, 5120, 256, 16), forward without grad: one mamba-2.8b layer's prefill scan.
* ``lm-train``: (4, 512, 256, 16), forward + backward: a small LM (d_model 256 -> d_inner 512) training step.
* ``lm-demo-train``: (32, 128, 60, 16), forward + backward: the tiny demo LM (d_model 64) at batch 32.
* ``dass-train``: (4, 384, 8192, 1) with G=4 groups, forward + backward: DASS-small stage 0, 4 x 1024 frames.
* ``dass-fwd``: (1, 384, 8192, 1) with G=4 groups, forward without grad: DASS stage 0 (4 directions x 96).
* ``lm130m-prefill``: (1, 1536, 1024, 16), forward without grad: one mamba-130m layer reading 1,024 tokens.
* ``decode-step``: (1, 5120, 1, 16), forward without grad: one token through a mamba-2.8b layer's scan.

Rows: our ``ref`` twin, ``chunked``, ``recurrent`` (hand-written backward), ``loop`` (inference only), the
compiled ``numba`` kernels, what ``auto`` picks, and transformers' pure-PyTorch fallback
(``mamba_selective_scan``) as the outside baseline (ungrouped cases only). Fast methods are timed after
``--warmup`` untimed calls; ``first_call_s`` is the first call (numba's compile or cache load is in it).
``rel_err`` is the max error of the output against ``ref`` relative to the output's largest magnitude.
LM cases pass u, delta, B, C as the Mamba LM does: (batch, L, dim) memory, transposed.
"""

from __future__ import annotations

import argparse
import platform
import time
from typing import Any

CASES = {
    "layer-fwd": dict(shape=(1, 5120, 256, 16), groups=None, grad=False),
    "lm-train": dict(shape=(4, 512, 256, 16), groups=None, grad=True),
    "lm-demo-train": dict(shape=(32, 128, 60, 16), groups=None, grad=True),
    "dass-train": dict(shape=(4, 384, 8192, 1), groups=4, grad=True),
    "dass-fwd": dict(shape=(1, 384, 8192, 1), groups=4, grad=False),
    "lm130m-prefill": dict(shape=(1, 1536, 1024, 16), groups=None, grad=False),
    "decode-step": dict(shape=(1, 5120, 1, 16), groups=None, grad=False),
}
METHODS = ("ref", "chunked", "recurrent", "loop", "numba", "auto", "transformers")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row (median reported)")
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed repeats of ref and transformers")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every L by this (quick runs)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing the fast methods")


def _inputs(shape: tuple[int, int, int, int], groups: int | None, seed: int = 0) -> tuple:
    """Random inputs at realistic magnitudes: softplus-like delta in (0, ~1], S4D-real A in [-16, -1]."""
    import torch

    g = torch.Generator().manual_seed(seed)
    b, d, L, n = shape
    bc = (b, n, L) if groups is None else (b, groups, n, L)
    u = torch.randn(b, d, L, generator=g)
    delta = torch.nn.functional.softplus(torch.randn(b, d, L, generator=g) - 2.0)
    A = -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1)
    B, C = torch.randn(bc, generator=g), torch.randn(bc, generator=g)
    if groups is None:  # the Mamba LM's layout: (batch, L, channels) activations, transposed
        u, delta, B, C = (t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta, B, C))
    return u, delta, A, B, C, torch.randn(d)


def _runner(method: str, args: tuple, grad: bool):
    """A zero-argument callable doing one forward (and backward if ``grad``), returning the output."""
    import torch

    from sslalm.ops import selective_scan

    u, delta, A, B, C, D = args
    if method == "transformers":
        from transformers.models.mamba.modeling_mamba import mamba_selective_scan

        def scan(*a, **k):
            return mamba_selective_scan(*a, **k)
    else:

        def scan(*a, **k):
            return selective_scan(*a, **k, method=method)

    inputs = [t.clone().requires_grad_(grad) for t in (u, delta, A, B, C, D)]  # clone keeps the strides

    def once():
        with torch.set_grad_enabled(grad):
            y = scan(*inputs[:5], D=inputs[5])
            if grad:
                torch.autograd.grad(y.sum(), inputs)
        return y.detach()

    return once


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from sslalm.bench.common import format_table, timed
    from sslalm.ops.scan import pick_method

    torch.set_num_threads(args.threads)
    rows = []
    for name in args.cases:
        case = CASES[name]
        b, d, L, n = case["shape"]
        shape = (b, d, max(1, round(L * args.scale)), n)
        inputs = _inputs(shape, case["groups"])
        y_ref = None
        for method in args.methods:
            row = dict(case=name, shape="x".join(map(str, shape)), groups=case["groups"] or 1, method=method)
            row["mode"] = "fwd+bwd" if case["grad"] else "fwd"
            if method == "loop" and case["grad"]:
                continue  # inference only
            if method == "transformers" and case["groups"] is not None:
                continue  # no grouped B/C there
            if method == "auto":
                row["picks"] = pick_method(inputs[0], inputs[2], case["grad"])
            fn = _runner(method, inputs, case["grad"])
            slow = method in ("ref", "transformers")
            try:
                t0 = time.perf_counter()
                y = fn()
                row["first_call_s"] = time.perf_counter() - t0
                reps = args.ref_repeats if slow else args.repeats
                row.update(timed(fn, repeats=reps, warmup=0 if slow else args.warmup))
            except ImportError as exc:  # transformers missing or without the fallback function
                row["error"] = str(exc)
                rows.append(row)
                continue
            if method == "ref":
                y_ref = y
            if y_ref is not None:
                row["rel_err"] = float((y - y_ref).abs().max() / y_ref.abs().max())
            rows.append(row)
            print(f"  {name} {method}: {row.get('wall_s', float('nan')):.3f} s", flush=True)
    for name in args.cases:
        base = next((r for r in rows if r["case"] == name and r["method"] == "ref" and "cpu_s" in r), None)
        for r in rows:
            if base and r["case"] == name and "cpu_s" in r:
                r["speedup_vs_ref"] = base["cpu_s"] / r["cpu_s"]
    cols = [
        "case",
        "shape",
        "groups",
        "mode",
        "method",
        "picks",
        "wall_s",
        "cpu_s",
        "first_call_s",
        "speedup_vs_ref",
    ]
    print(format_table(rows, [*cols, "rel_err"]))
    return {
        "benchmark": "scan",
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
    }
