"""``sslalm bench encoder-train``: one DASS training step per scan layout, side by side.

What it measures: the demo's stage-0 encoder step (``sslalm demo``'s DASS at a ``MODEL_SIZES`` width, a batch
of random fbank crops, forward, backward and an AdamW update) with the grouped scan's inputs laid out
time-major and channel-major (``DASSConfig.scan_layout``). The layouts run in one process with the same
weights and inputs, interleaved over ``--rounds`` so that a change in the machine's load falls on both; each
round times ``--repeats`` steps per layout with ``bench.common.timed`` (median wall and CPU seconds), and the
median of the rounds is reported beside the fastest round. The features of both layouts are
compared on the same input first, so a speed-up that changed the result would show.
"""

from __future__ import annotations

import argparse
import os
import statistics
from typing import Any

from sslalm.bench.common import format_table, timed

LAYOUTS = ("channel", "time")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--size", choices=["base", "small"], default="base", help="the demo's model width")
    parser.add_argument("--batch", type=int, default=16, help="clips per step (the demo's stage 0: 16)")
    parser.add_argument("--frames", type=int, default=256, help="fbank frames per clip (the demo's crop)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per layout and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the layouts")


def _models(size: str) -> dict[str, Any]:
    """One DASS per layout with the same weights (the demo's ``sslalm_recipe`` config, drop path off)."""
    import torch

    from sslalm.demo.recipe import sslalm_recipe
    from sslalm.models.dass import DASSConfig, DASSModel

    config = dict(sslalm_recipe(size).encoder_config, drop_path_rate=0.0)

    def build(layout: str) -> DASSModel:
        return DASSModel(DASSConfig.from_dict({**config, "scan_layout": layout})).train()

    torch.manual_seed(0)
    models = {layout: build(layout) for layout in LAYOUTS}
    for layout in LAYOUTS[1:]:
        models[layout].load_state_dict(models[LAYOUTS[0]].state_dict())
    return models


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    for name in ("batch", "frames", "threads", "repeats", "rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1")
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    models = _models(args.size)
    fbank = torch.randn(args.batch, args.frames, 128)
    with torch.no_grad():
        feats = {k: m.forward_features(fbank) for k, m in models.items()}
    max_diff = max((feats[k] - feats[LAYOUTS[0]]).abs().max().item() for k in LAYOUTS)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-4) for k, m in models.items()}

    def step(layout: str) -> None:
        loss = models[layout].forward_features(fbank).square().mean()
        loss.backward()
        optimizers[layout].step()
        optimizers[layout].zero_grad()

    for layout in LAYOUTS:  # warm-up: kernel compilation and allocator
        step(layout)
    rounds: dict[str, list[dict[str, float]]] = {k: [] for k in LAYOUTS}
    for _ in range(args.rounds):
        for layout in LAYOUTS:
            rounds[layout].append(timed(lambda: step(layout), repeats=args.repeats, warmup=0))  # noqa: B023

    def median(layout: str, key: str) -> float:
        return statistics.median(r[key] for r in rounds[layout])

    rows = [
        {
            "layout": layout,
            "step_s": median(layout, "wall_s"),
            "min_step_s": min(r["wall_s"] for r in rounds[layout]),
            "cpu_s": median(layout, "cpu_s"),
            "relative": median(layout, "wall_s") / median(LAYOUTS[0], "wall_s"),
        }
        for layout in LAYOUTS
    ]
    load_after = os.getloadavg()
    print(format_table(rows, ["layout", "step_s", "min_step_s", "cpu_s", "relative"]))
    print(
        f"\nDASS-{args.size} training step (batch {args.batch} x {args.frames} frames, forward + backward + "
        f"AdamW), threads={args.threads}, {args.rounds} rounds x {args.repeats} steps per layout: median of "
        f"the rounds' medians (min_step_s: the fastest round's); "
        f"features of the two layouts differ by at most {max_diff:.2e}; load average before "
        f"{load_before[0]:.2f}, after {load_after[0]:.2f}."
    )
    return {
        "benchmark": "encoder-train",
        "size": args.size,
        "batch": args.batch,
        "frames": args.frames,
        "threads": args.threads,
        "repeats": args.repeats,
        "rounds": args.rounds,
        "max_feature_diff": max_diff,
        "load_average_before": load_before[0],
        "load_average_after": load_after[0],
        "cases": rows,
    }
