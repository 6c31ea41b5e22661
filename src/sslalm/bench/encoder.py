"""``sslalm bench encoder``: DASS vs AST, CPU time and peak memory at growing audio durations.

The claim under test (DASS paper; ssLALM paper): a state-space encoder's cost grows linearly with the audio
length, while a transformer's (AST) grows quadratically through self-attention. Each case runs in a fresh
process (``run_isolated``) so its peak resident memory is its own. Inputs are random fbanks with 100 frames
per second (kaldi 10 ms shift); weights are random (cost does not depend on their values).

* DASS: :class:`sslalm.models.dass.DASSModel` ``forward_features`` (the map the LALM consumes), any length;
  with the kernels ``auto`` picks (numba on a CPU) and, as "DASS-<size> torch", with numba switched off (the
  torch scans, as before the compiled kernels), unless ``--skip-torch-kernels``.
* AST: ``transformers.ASTModel`` with its default config (patch 16, strides 10, 1024 frames). A 10 s clip is
  zero-padded to 1024 frames as AST's feature extractor does; longer inputs set ``max_length`` to the input
  length, so the positional table and the attention grow with it. The attention kernel is transformers'
  default (``sdpa``; its CPU flash kernel keeps memory linear, the time stays quadratic).

An AST case whose time, extrapolated from the largest AST case measured in the same run by its multiply-add
count, exceeds ``--ast-limit`` seconds is not run; the row says "skipped" with the estimate and what the eager
(materialised) attention matrix alone would occupy. Never a made-up measurement.
"""

from __future__ import annotations

import argparse
import os
import resource
from typing import Any

from sslalm.bench.common import format_table, peak_rss, run_isolated, timed, torch_kernels_only

FRAMES_PER_SECOND = 100
AST_LAYERS, AST_WIDTH, AST_FFN, AST_HEADS = 12, 768, 3072, 12


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--durations", type=float, nargs="+", default=[10.0, 60.0, 600.0], help="seconds")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in each case")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per case (median reported)")
    parser.add_argument("--skip-ast", action="store_true", help="only DASS")
    parser.add_argument("--skip-torch-kernels", action="store_true", help="no DASS row with numba off")
    parser.add_argument("--dass-size", choices=["small", "medium"], default="small")
    parser.add_argument(
        "--ast-limit", type=float, default=600.0, help="skip AST cases estimated to take longer (s)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="per-case limit (s)")


def _frames(duration_s: float) -> int:
    return max(1, round(duration_s * FRAMES_PER_SECOND))


def _ast_tokens(frames: int) -> int:
    """Patch tokens + CLS + distillation token for a ``frames``-long AST input (frames >= 1024)."""
    freq = (128 - 16) // 10 + 1
    time = (frames - 16) // 10 + 1
    return freq * time + 2


def _ast_macs(frames: int) -> float:
    """Multiply-adds of the 12 transformer layers: projections + MLP (linear in N) + attention (N^2)."""
    n = _ast_tokens(frames)
    per_layer = n * (4 * AST_WIDTH**2 + 2 * AST_WIDTH * AST_FFN) + 2 * n * n * AST_WIDTH
    return AST_LAYERS * per_layer


def _eager_attention_gib(frames: int) -> float:
    """fp32 attention probabilities of one layer, all heads, if materialised (eager attention)."""
    n = _ast_tokens(frames)
    return AST_HEADS * n * n * 4 / 2**30


def _maxrss_mb() -> float:
    return peak_rss()  # this process's own peak (getrusage's also counts the spawning parent's)


def _timed_with_os_split(step: Any, repeats: int) -> dict[str, float]:
    """``timed`` plus the mean user/system CPU split and minor page faults per run.

    System time is mostly the kernel zero-filling fresh pages: glibc hands buffers above its mmap threshold
    (at most 32 MB) back to the OS on free, so every large temporary faults its pages in again.
    """
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), os.times()
    timing = timed(step, repeats=repeats, warmup=0)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), os.times()
    return {
        **timing,
        "user_s": (t1.user - t0.user) / repeats,
        "sys_s": (t1.system - t0.system) / repeats,
        "minor_faults": (r1.ru_minflt - r0.ru_minflt) / repeats,
    }


def _dass_case(
    frames: int, threads: int, repeats: int, size: str, torch_kernels: bool = False
) -> dict[str, Any]:
    with torch_kernels_only(torch_kernels):
        return _dass_case_inner(frames, threads, repeats, size)


def _dass_case_inner(frames: int, threads: int, repeats: int, size: str) -> dict[str, Any]:
    import torch

    from sslalm.models.dass import DASSConfig, DASSModel

    torch.set_num_threads(threads)
    model = DASSModel(getattr(DASSConfig, size)()).eval()
    fbank = torch.randn(1, frames, 128)
    with torch.inference_mode():
        model.forward_features(torch.randn(1, 100, 128))  # warm-up on 1 s
        model_rss = _maxrss_mb()
        shape: list[int] = []

        def step() -> None:
            shape[:] = model.forward_features(fbank).shape

        timing = _timed_with_os_split(step, repeats)
    return {**timing, "model_rss_mb": model_rss, "output": shape}


def _ast_case(frames: int, threads: int, repeats: int) -> dict[str, Any]:
    import torch
    from transformers import ASTConfig, ASTModel

    torch.set_num_threads(threads)
    length = max(1024, frames)  # AST's extractor pads short clips to 1024 frames
    model = ASTModel(ASTConfig(max_length=length)).eval()
    fbank = torch.zeros(1, length, 128)
    fbank[:, :frames] = torch.randn(1, frames, 128)
    with torch.inference_mode():
        warm = torch.randn(1, 64, AST_WIDTH)
        for layer in model.layers:  # warm-up the layers on a short sequence
            warm = layer(warm)
        model_rss = _maxrss_mb()
        shape: list[int] = []

        def step() -> None:
            shape[:] = model(fbank).last_hidden_state.shape

        timing = _timed_with_os_split(step, repeats)
    return {
        **timing,
        "model_rss_mb": model_rss,
        "output": shape,
        "attn_implementation": model.config._attn_implementation,
    }


def _row(model: str, duration: float, frames: int, result: dict[str, Any]) -> dict[str, Any]:
    row = {"model": model, "audio_s": duration, "frames": frames, **result}
    if "wall_s" in result:
        row["status"] = "ok"
        row["cpu_per_audio_s"] = result["cpu_s"] / duration
        row["wall_per_audio_s"] = result["wall_s"] / duration
        row["activations_mb"] = result["peak_rss_mb"] - result["model_rss_mb"]
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    durations = sorted(args.durations)
    load_before = os.getloadavg()
    rows: list[dict[str, Any]] = []
    variants = [("", False)] + ([] if args.skip_torch_kernels else [(" torch", True)])
    for duration in durations:
        frames = _frames(duration)
        for suffix, torch_kernels in variants:
            name = f"DASS-{args.dass_size}{suffix}"
            print(f"{name}: {duration:g} s ({frames} frames) ...", flush=True)
            try:
                result = run_isolated(_dass_case, frames, args.threads, args.repeats, args.dass_size,
                                      torch_kernels, timeout=args.timeout)  # fmt: skip
                rows.append(_row(name, duration, frames, result))
            except RuntimeError as exc:
                rows.append(
                    {"model": name, "audio_s": duration, "frames": frames, "status": f"failed: {exc}"}
                )
    if not args.skip_ast:
        measured: dict[str, Any] | None = None
        for duration in durations:
            frames = _frames(duration)
            base = {
                "model": "AST",
                "audio_s": duration,
                "frames": frames,
                "tokens": _ast_tokens(max(1024, frames)),
            }
            base["eager_attention_gib"] = _eager_attention_gib(max(1024, frames))
            if measured is not None:
                scale = _ast_macs(max(1024, frames)) / _ast_macs(max(1024, measured["frames"]))
                estimate = measured["wall_s"] * scale
                if estimate > args.ast_limit:
                    status = f"skipped: estimated {estimate:.0f} s > --ast-limit {args.ast_limit:g}"
                    rows.append({**base, "estimated_wall_s": estimate, "status": status})
                    continue
            print(f"AST: {duration:g} s ({frames} frames, {base['tokens']} tokens) ...", flush=True)
            try:
                result = run_isolated(_ast_case, frames, args.threads, args.repeats, timeout=args.timeout)
            except RuntimeError as exc:
                rows.append({**base, "status": f"failed: {exc}"})
                continue
            row = {**_row("AST", duration, frames, result), **base}
            row["status"] = "ok"
            rows.append(row)
            measured = row
    _add_linearity(rows)
    load_after = os.getloadavg()
    columns = ["model", "audio_s", "frames", "wall_s", "cpu_s", "sys_s", "cpu_per_audio_s", "rel_cost_per_s",
               "peak_rss_mb", "activations_mb", "status"]  # fmt: skip
    print()
    print(format_table(rows, columns))
    print(
        f"\nthreads={args.threads} repeats={args.repeats}; load average before {load_before[0]:.2f}, "
        f"after {load_after[0]:.2f}. A shared CPU inflates wall time and, with several threads, cpu_s too "
        "(OpenMP threads spin while they wait); --threads 1 gives the steadiest cpu_s. sys_s: kernel time, "
        "mostly page faults of large temporaries. rel_cost_per_s: CPU seconds per audio second relative to "
        "the shortest measured case of the model (1.0 = linear)."
    )
    return {
        "benchmark": "encoder",
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "cases": rows,
    }


def _add_linearity(rows: list[dict[str, Any]]) -> None:
    """Per model: CPU cost per audio second divided by that of its shortest measured case."""
    first: dict[str, float] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        ref = first.setdefault(row["model"], row["cpu_per_audio_s"])
        row["rel_cost_per_s"] = row["cpu_per_audio_s"] / ref
