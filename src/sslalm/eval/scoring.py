"""Score a run folder: each benchmark's answers (``<name>.jsonl``) and facts (``<name>.meta.json``) ->
results.

A run folder (``sslalm eval --out DIR``) holds, per benchmark, the answers written by the generation runner
and a meta file with what scoring needs (label set, metric, Table I column, prompt, clip counts), so
scoring and the report can be redone from the folder alone, without the data or the model. ``score_run``
writes ``results.json``::

    {"model": ..., "embedder": ..., "tokenizer": ..., "spice": {"ran": bool, "reason": ...},
     "benchmarks": {name: {"column", "task", "metric", "value", "n_scored", "n_clips", "skipped",
                           "malformed", "details" | "scores" + "not_run"}}}

All values are percentages (CIDEr-D x 100 too).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sslalm.eval.benchmark import Benchmark
from sslalm.eval.datasets import BENCHMARKS

if TYPE_CHECKING:  # numpy-importing modules load on first use, so ``sslalm --help`` stays fast
    from sslalm.eval.embedders import LabelEmbeddingCache, TextEmbedder

CAPTION_METRICS = ("BLEU", "METEOR", "ROUGE-L", "CIDEr-D", "SPICE")  # = sslalm.eval.captioning.METRICS

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.json"


def predictions_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}.jsonl"


def meta_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f"{name}.meta.json"


def write_meta(bench: Benchmark, out_dir: str | os.PathLike) -> Path:
    """Record what scoring needs to know about ``bench`` beside its answers."""
    path = meta_path(out_dir, bench.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "name": bench.name,
        "column": bench.column,
        "task": bench.task,
        "metric": bench.metric,
        "prompt": bench.prompt,
        "labels": bench.labels,
        "n_clips": len(bench.clips),
        "clip_ids": [c.audio_id for c in bench.clips],
        "skipped": dict(bench.skipped),
        "malformed": bench.malformed,
        "root": bench.root,
    }
    path.write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return path


def read_predictions(path: str | os.PathLike) -> dict[str, dict]:
    """Records of a JSONL answers file by audio id; a truncated or unparsable line is ignored (with a
    warning)."""
    records: dict[str, dict] = {}
    path = Path(path)
    if not path.is_file():
        return records
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                records.setdefault(str(rec["audio_id"]), rec)
            except (json.JSONDecodeError, KeyError, TypeError):
                logger.warning("%s:%d: unreadable record ignored (an interrupted write?)", path, n)
    return records


def score_benchmark(
    meta: dict,
    records: Sequence[dict],
    embedder: TextEmbedder | None = None,
    label_cache: LabelEmbeddingCache | None = None,
    caption_metrics: Sequence[str] = CAPTION_METRICS,
    spice_corenlp_dir: str | None = None,
) -> dict:
    """One benchmark's entry of ``results.json`` from its meta and answer records."""
    from sslalm.eval.captioning import score_captions
    from sslalm.eval.classification import score_classification

    entry = {
        "column": meta["column"],
        "task": meta["task"],
        "metric": meta["metric"],
        "prompt": meta["prompt"],
        "n_clips": meta["n_clips"],
        "n_scored": len(records),
        "skipped": meta.get("skipped", {}),
        "malformed": meta.get("malformed", 0),
    }
    preds = [str(r.get("prediction") or "") for r in records]
    refs = [list(r["references"]) for r in records]
    if meta["task"] == "classification":
        if embedder is None:
            raise ValueError("classification scoring needs a text embedder")
        s = score_classification(preds, refs, meta["labels"], meta["metric"], embedder, label_cache)
        entry["value"] = None if s.n == 0 else round(s.value, 4)
        entry["details"] = s.to_dict()
        entry["n_labels"] = len(meta["labels"])
    else:
        ids = [str(r["audio_id"]) for r in records]
        cap = score_captions(
            dict(zip(ids, preds, strict=True)),
            dict(zip(ids, refs, strict=True)),
            metrics=caption_metrics,
            spice_corenlp_dir=spice_corenlp_dir,
        )
        entry["scores"] = {k: round(100 * v, 4) for k, v in cap.scores.items()}
        entry["not_run"] = cap.not_run
        entry["tokenizer"] = cap.tokenizer
        entry["value"] = entry["scores"].get("SPICE")
    return entry


def score_run(
    out_dir: str | os.PathLike,
    names: Sequence[str] | None = None,
    embedder: TextEmbedder | None = None,
    cache_dir: str | os.PathLike | None = None,
    caption_metrics: Sequence[str] = CAPTION_METRICS,
    spice_corenlp_dir: str | None = None,
    model_name: str = "",
) -> dict:
    """Score every benchmark of a run folder that has a meta file (or those in ``names``); write
    results.json."""
    from sslalm.eval.embedders import LabelEmbeddingCache

    out_dir = Path(out_dir)
    if names is None:
        names = [n for n in BENCHMARKS if meta_path(out_dir, n).is_file()]
    label_cache = LabelEmbeddingCache(embedder, cache_dir) if embedder is not None else None
    results: dict = {
        "model": model_name,
        "embedder": embedder.name if embedder is not None else None,
        "tokenizer": None,
        "spice": {"ran": None, "reason": None},
        "benchmarks": {},
    }
    for name in names:
        mp = meta_path(out_dir, name)
        if not mp.is_file():
            logger.warning("%s: no %s; not scored", name, mp)
            continue
        meta = json.loads(mp.read_text(encoding="utf-8"))
        records = read_predictions(predictions_path(out_dir, name))
        if "clip_ids" in meta:  # score only the clips of the benchmark as loaded for this run
            wanted = set(meta["clip_ids"])
            records = {k: v for k, v in records.items() if k in wanted}
        if len(records) < meta["n_clips"]:
            logger.warning("%s: %d of %d clips answered", name, len(records), meta["n_clips"])
        entry = score_benchmark(
            meta, list(records.values()), embedder, label_cache, caption_metrics, spice_corenlp_dir
        )
        results["benchmarks"][name] = entry
        if meta["task"] == "captioning":
            results["tokenizer"] = entry.get("tokenizer")
            if "SPICE" in caption_metrics and results["spice"]["ran"] is not False:  # any miss -> not run
                ran = "SPICE" in entry["scores"]
                results["spice"] = {"ran": ran, "reason": None if ran else entry["not_run"].get("SPICE")}
        logger.info("%s: %s = %s (%d clips)", name, entry["metric"], entry["value"], entry["n_scored"])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / RESULTS_FILE).write_text(json.dumps(results, indent=1), encoding="utf-8")
    return results
