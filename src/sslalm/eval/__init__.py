"""Evaluation with the paper's Table I protocol (``docs/paper.md``, ``docs/ltu.md`` "Evaluation protocol").

- :mod:`~sslalm.eval.benchmark`: the records (:class:`Benchmark`, :class:`EvalClip`, :class:`BenchmarkSpec`).
- :mod:`~sslalm.eval.datasets`: the registry of the ten benchmarks, finding them under a data root.
- :mod:`~sslalm.eval.adapters`: one adapter per benchmark, reading its official on-disk layout.
- :mod:`~sslalm.eval.runner`: batched, resumable answer generation; the ``sslalm eval`` command.
- :mod:`~sslalm.eval.classification`: classification by captioning + text-embedding similarity.
- :mod:`~sslalm.eval.captioning`: caption metrics through pycocoevalcap (SPICE when its jars are present).
- :mod:`~sslalm.eval.embedders`: text embedders (offline MiniLM, OpenAI ada-002, hashing) and the label cache.
- :mod:`~sslalm.eval.scoring`: a run folder's answers -> ``results.json``.
- :mod:`~sslalm.eval.report`: ``report.md`` / ``report.csv`` beside the paper's rows
  (:mod:`~sslalm.eval.paper_table`).

Names are imported lazily so ``import sslalm.eval`` (and ``sslalm --help``) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AudioLanguageModel": "sslalm.eval.runner",
    "generate_predictions": "sslalm.eval.runner",
    "evaluate": "sslalm.eval.runner",
    "Benchmark": "sslalm.eval.benchmark",
    "EvalClip": "sslalm.eval.benchmark",
    "BENCHMARKS": "sslalm.eval.datasets",
    "find_benchmarks": "sslalm.eval.datasets",
    "load_benchmark": "sslalm.eval.datasets",
    "score_classification": "sslalm.eval.classification",
    "score_captions": "sslalm.eval.captioning",
    "TextEmbedder": "sslalm.eval.embedders",
    "make_embedder": "sslalm.eval.embedders",
    "score_run": "sslalm.eval.scoring",
    "write_report": "sslalm.eval.report",
    "render_markdown": "sslalm.eval.report",
    "PAPER_ROWS": "sslalm.eval.paper_table",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sslalm.eval' has no attribute {name!r}")
