"""``sslalm bench``: efficiency benchmarks.

Each benchmark prints a human-readable table and, as the very last stdout line, one JSON object with every
number in it. Ratios are only meaningful between rows of the same run on the same machine.

Subcommands live in their own modules (``sslalm.bench.encoder``, ``sslalm.bench.lm``, ...); each exposes
``add_arguments(parser)`` and ``run(args) -> dict``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json

BENCHMARKS: dict[str, tuple[str, str]] = {
    "gpu": ("sslalm.bench.gpu", "every GPU row (Mamba-2.8B, DASS, LLaMA-7B shapes), one JSON line per row"),
    "encoder": ("sslalm.bench.encoder", "DASS vs AST: CPU time and peak memory at 10 s, 60 s, 600 s"),
    "encoder-train": (
        "sslalm.bench.encoder_train",
        "the demo's DASS training step with time-major vs channel-major scan inputs, side by side",
    ),
    "lm": ("sslalm.bench.lm", "our Mamba LM vs transformers' Mamba and LLaMA: prefill and decode"),
    "scan": (
        "sslalm.bench.scan",
        "selective-scan methods (ref, chunked, recurrent, loop, numba, transformers) side by side",
    ),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for name, (module, help_text) in BENCHMARKS.items():
        if importlib.util.find_spec(module) is None:
            continue
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module).add_arguments(p)
        p.set_defaults(_bench_module=module)


def run_cli(args: argparse.Namespace) -> int:
    result = importlib.import_module(args._bench_module).run(args)
    print(json.dumps(result, sort_keys=True))
    return 0
