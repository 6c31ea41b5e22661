"""``sslalm eval``: answer every clip of each benchmark with a model, score the answers, print Table I.

Generation is batched and resumable: answers are appended to ``<out>/<benchmark>.jsonl`` (one JSON record per
clip: ``audio_id``, ``prompt``, ``prediction``, ``references``, ``audio_path``) and flushed as they are made,
so an interrupted run loses at most the batch in flight; a rerun skips the clips already answered and cuts off
a truncated last line before appending. A batch that raises is retried clip by clip, so one unreadable file
costs one clip (logged, left unanswered, retried on the next run), not the run; but when every one of the
first clips fails (a broken model or a bad generation argument), the run stops with that error.

The model is anything with the :class:`AudioLanguageModel` interface (``SSLALM`` implements it);
``--model DIR`` loads it with :func:`sslalm.models.loading.load_model`, the loader that ``ask`` and ``serve``
use (a wrong path names the model folders below it). Scoring and the report are in :mod:`sslalm.eval.scoring`
and :mod:`sslalm.eval.report`; they can be rerun on a finished run folder without the model or the data
(``sslalm eval --out DIR --report``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sslalm.errors import UserError
from sslalm.eval.benchmark import Benchmark
from sslalm.eval.datasets import BENCHMARKS, find_benchmarks, resolve_names
from sslalm.eval.scoring import meta_path, predictions_path, read_predictions, score_run, write_meta

if TYPE_CHECKING:
    import torch

from sslalm.generation_settings import MAX_AUDIO_SECONDS, validate_generation

logger = logging.getLogger(__name__)


class AudioLanguageModel(Protocol):
    """What the runner needs from a model: batched answers to (audio, prompt) pairs."""

    def generate(
        self, audio: list[torch.Tensor | str], prompts: list[str], /, **generation_kwargs: Any
    ) -> list[str]:
        """One answer per (audio, prompt); audio is a mono 16 kHz waveform tensor or a file path.

        Both lists are passed positionally (``SSLALM.generate`` names the first one ``audios``).
        """
        ...


@dataclass
class GenerationStats:
    """What one ``generate_predictions`` call did."""

    total: int = 0  # clips in the benchmark
    already: int = 0  # answered by an earlier run
    new: int = 0  # answered now
    failed: dict[str, str] = field(default_factory=dict)  # audio id -> error


def _repair_tail(path: Path) -> None:
    """Cut a partial last line (an interrupted write) so the next append starts on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a truncated last line (%d bytes)", path, len(data) - keep)
        f.truncate(keep)


def generate_predictions(
    model: AudioLanguageModel,
    benchmark: Benchmark,
    path: str | os.PathLike,
    batch_size: int = 8,
    generation_kwargs: dict[str, Any] | None = None,
    progress: bool = True,
) -> GenerationStats:
    """Answer every clip of ``benchmark`` not yet in ``path`` (JSONL), appending each answer as it is made."""
    from tqdm.auto import tqdm

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _repair_tail(path)
    done = read_predictions(path)
    todo = [c for c in benchmark.clips if c.audio_id not in done]
    stats = GenerationStats(total=len(benchmark.clips), already=len(benchmark.clips) - len(todo))
    if stats.already:
        logger.info(
            "%s: %d of %d clips already answered in %s", benchmark.name, stats.already, stats.total, path
        )
    kwargs = generation_kwargs or {}
    with (
        open(path, "a", encoding="utf-8") as f,
        tqdm(total=len(todo), desc=benchmark.name, unit="clip", disable=not progress) as bar,
    ):
        for start in range(0, len(todo), max(1, batch_size)):
            batch = todo[start : start + max(1, batch_size)]
            answers = _answer(model, batch, benchmark.prompt, kwargs, stats)
            for clip, answer in zip(batch, answers, strict=True):
                if answer is None:
                    continue
                rec = {
                    "audio_id": clip.audio_id,
                    "prompt": benchmark.prompt,
                    "prediction": answer,
                    "references": list(clip.references),
                    "audio_path": clip.audio_path,
                }
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                stats.new += 1
            f.flush()
            bar.update(len(batch))
            if stats.new == 0 and len(stats.failed) >= max(2, min(len(todo), batch_size)):
                first = next(iter(stats.failed.values()))
                raise RuntimeError(
                    f"{benchmark.name}: the model failed on each of the first {len(stats.failed)} clips "
                    f"({first}); stopping: this looks like a model or generation-argument problem"
                )
    if stats.failed:
        logger.warning(
            "%s: %d clips failed (first: %s)",
            benchmark.name,
            len(stats.failed),
            next(iter(stats.failed.items())),
        )
    return stats


def _answer(model, batch, prompt: str, kwargs: dict, stats: GenerationStats) -> list[str | None]:
    """Answers for a batch; on an error, clip by clip (a failing clip gives None and is recorded)."""
    try:
        out = model.generate([c.audio_path for c in batch], [prompt] * len(batch), **kwargs)
        if len(out) != len(batch):
            raise RuntimeError(f"model returned {len(out)} answers for {len(batch)} clips")
        return [str(a) for a in out]
    except Exception as exc:
        if len(batch) == 1:
            stats.failed[batch[0].audio_id] = f"{type(exc).__name__}: {exc}"
            return [None]
        logger.warning("batch failed (%s); retrying clip by clip", exc)
        return [_answer(model, [c], prompt, kwargs, stats)[0] for c in batch]


def evaluate(
    model: AudioLanguageModel | None,
    benchmarks: Sequence[Benchmark],
    out_dir: str | os.PathLike,
    batch_size: int = 8,
    generation_kwargs: dict[str, Any] | None = None,
    embedder: Any = None,
    cache_dir: str | os.PathLike | None = None,
    caption_metrics: Sequence[str] | None = None,
    spice_corenlp_dir: str | None = None,
    model_name: str = "",
    report: bool = False,
    progress: bool = True,
) -> dict:
    """Generate (when ``model`` is given), score and optionally report; returns the ``results.json`` dict.

    ``embedder`` is a :class:`~sslalm.eval.embedders.TextEmbedder` (default: the offline MiniLM), needed only
    when a classification benchmark is scored.
    """
    from sslalm.eval.captioning import METRICS
    from sslalm.eval.embedders import default_cache_dir, make_embedder
    from sslalm.eval.report import write_report

    out_dir = Path(out_dir)
    for bench in benchmarks:
        write_meta(bench, out_dir)
        if model is not None:
            stats = generate_predictions(
                model, bench, predictions_path(out_dir, bench.name), batch_size, generation_kwargs, progress
            )
            logger.info(
                "%s: %d new answers, %d earlier, %d failed",
                bench.name,
                stats.new,
                stats.already,
                len(stats.failed),
            )
    if embedder is None and any(b.task == "classification" for b in benchmarks):
        embedder = make_embedder("minilm")
    results = score_run(
        out_dir,
        [b.name for b in benchmarks],
        embedder=embedder,
        cache_dir=default_cache_dir() if cache_dir is None else cache_dir,
        caption_metrics=METRICS if caption_metrics is None else caption_metrics,
        spice_corenlp_dir=spice_corenlp_dir,
        model_name=model_name,
    )
    if report:
        write_report(results, out_dir)
    return results


# --------------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help="model folder (SSLALM.from_pretrained); omit to rescore an --out folder"
    )
    parser.add_argument("--data-root", help="folder holding the benchmarks in their official layouts")
    parser.add_argument(
        "--benchmarks",
        default="all",
        help=f"comma-separated, from: {', '.join(BENCHMARKS)}, or 'all' (default)",
    )
    parser.add_argument(
        "--dataset-dir",
        action="append",
        default=[],
        metavar="NAME=DIR",
        help="where one benchmark lives (repeatable)",
    )
    parser.add_argument("--out", required=True, help="run folder: answers (JSONL), results.json, report")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--limit", type=int, help="answer only the first N clips of each benchmark (smoke runs)"
    )
    parser.add_argument("--device", help="e.g. cuda or cpu (default: the model's)")
    parser.add_argument("--max-new-tokens", type=int, help="generation length limit")
    parser.add_argument("--temperature", type=float, help="sampling temperature")
    parser.add_argument(
        "--max-audio-seconds",
        type=float,
        default=MAX_AUDIO_SECONDS,
        help=f"a longer clip fails (recorded, not answered); default {MAX_AUDIO_SECONDS:g} s, as ask and "
        "serve; 0 = no limit",
    )
    parser.add_argument(
        "--gen",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another generation argument (JSON value)",
    )
    parser.add_argument(
        "--embedder",
        default="minilm",
        help="text embedder for classification: minilm (offline, default), openai (text-embedding-ada-002, "
        "the paper's; needs OPENAI_API_KEY), hashing (lexical, tests only), or a sentence-transformers dir",
    )
    parser.add_argument("--embedding-cache", help="label-embedding cache folder (default ~/.cache/sslalm)")
    parser.add_argument(
        "--caption-metrics",
        default="BLEU,METEOR,ROUGE-L,CIDEr-D,SPICE",
        help="comma-separated caption metrics",
    )
    parser.add_argument(
        "--spice-corenlp",
        default=os.environ.get("SPICE_CORENLP_DIR"),
        metavar="DIR",
        help="folder with stanford-corenlp-3.6.0.jar and -models.jar, for SPICE (env SPICE_CORENLP_DIR)",
    )
    parser.add_argument("--name", help="our row's name in the report (default: the model folder's name)")
    parser.add_argument("--report", action="store_true", help="write report.md and report.csv into --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _earlier_name(out: Path) -> str | None:
    """The model name an earlier run wrote into ``results.json`` (kept when rescoring)."""
    try:
        return json.loads((out / "results.json").read_text(encoding="utf-8")).get("model") or None
    except (OSError, ValueError):
        return None


def _parse_gen(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if args.max_new_tokens is not None:
        kw["max_new_tokens"] = args.max_new_tokens
    if args.temperature is not None:
        kw["temperature"] = args.temperature
    for item in args.gen:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--gen expects KEY=VALUE, got {item!r}")
        try:
            kw[key] = json.loads(value)
        except json.JSONDecodeError:
            kw[key] = value
    return kw


@dataclass
class _Plan:
    """What one ``sslalm eval`` call will do, checked before any model is loaded."""

    names: list[str]  # canonical benchmark names
    generation: dict[str, Any]  # generation arguments
    caption_metrics: list[str]
    benchmarks: list[Benchmark] | None  # None: rescore the answers already in --out
    tasks: set[str]  # "classification" and/or "captioning"


def _dataset_dirs(items: Sequence[str]) -> dict[str, str]:
    """``--dataset-dir NAME=DIR`` items -> {canonical name: DIR}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UserError(f"--dataset-dir expects NAME=DIR, got {item!r}")
        out[resolve_names(key)[0]] = value
    return out


def _caption_metrics(text: str) -> list[str]:
    from sslalm.eval.captioning import METRICS

    metrics = [m.strip() for m in text.split(",") if m.strip()]
    if unknown := set(metrics) - set(METRICS):
        raise UserError(f"unknown caption metrics {sorted(unknown)}; choose from {', '.join(METRICS)}")
    return metrics


def _plan(args: argparse.Namespace, out: Path) -> _Plan:
    """Check the options and find the benchmarks (to answer) or the run folder's answers (to rescore).

    Raises ``ValueError`` (a ``UserError`` for our own checks) with a one-line message.
    """
    names = resolve_names(args.benchmarks)
    overrides = _dataset_dirs(args.dataset_dir)
    plan = _Plan(
        names, validate_generation(_parse_gen(args)), _caption_metrics(args.caption_metrics), None, set()
    )
    if args.data_root or overrides:
        plan.benchmarks = find_benchmarks(args.data_root or ".", names, overrides)
        if not plan.benchmarks:
            raise UserError(f"none of {', '.join(names)} found under {args.data_root} (see the log above)")
        if args.limit is not None:
            for b in plan.benchmarks:
                b.clips = b.clips[: args.limit]
        plan.tasks = {b.task for b in plan.benchmarks}
        return plan
    if args.model:
        raise UserError("--model needs --data-root (or --dataset-dir) to know which clips to answer")
    plan.names = [n for n in names if meta_path(out, n).is_file()]
    if not plan.names:
        raise UserError(f"no answers to score in {out} (give --data-root to generate them)")
    plan.tasks = {json.loads(meta_path(out, n).read_text(encoding="utf-8"))["task"] for n in plan.names}
    return plan


def run_cli(args: argparse.Namespace, model: AudioLanguageModel | None = None) -> int:
    """Entry point of ``sslalm eval``. ``model`` lets Python callers (tests, the demo) pass a model object."""
    from sslalm.eval.embedders import default_cache_dir, make_embedder
    from sslalm.eval.report import render_markdown, write_report
    from sslalm.models.loading import load_model

    out = Path(args.out)
    try:
        plan = _plan(args, out)
        embedder = make_embedder(args.embedder) if "classification" in plan.tasks else None
        if plan.benchmarks is not None and model is None and args.model:
            model = load_model(args.model, args.device)
            if args.max_audio_seconds and args.max_audio_seconds > 0:
                from sslalm.inference import DurationLimited

                model = DurationLimited(model, args.max_audio_seconds)
    except (ValueError, ImportError) as exc:  # a bad option, a missing benchmark or model folder
        print(f"error: {exc}")
        return 2
    row_name = args.name or (Path(args.model).name if args.model else _earlier_name(out) or out.name)
    scoring = dict(
        embedder=embedder,
        cache_dir=args.embedding_cache or default_cache_dir(),
        caption_metrics=plan.caption_metrics,
        spice_corenlp_dir=args.spice_corenlp,
        model_name=row_name,
    )
    if plan.benchmarks is not None:
        if model is None:
            print("no --model given: scoring the answers already in --out")
        results = evaluate(
            model,
            plan.benchmarks,
            out,
            batch_size=args.batch_size,
            generation_kwargs=plan.generation,
            report=args.report,
            progress=not args.no_progress,
            **scoring,
        )
    else:
        results = score_run(out, plan.names, **scoring)
        if args.report:
            write_report(results, out)
    print(render_markdown([results]))
    if args.report:
        print(f"wrote {out / 'report.md'} and {out / 'report.csv'}")
    return 0
