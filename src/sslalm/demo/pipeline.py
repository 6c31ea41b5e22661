"""The demo pipeline: corpus -> tokenizer -> stage 0 -> curriculum stages 1-4 -> evaluation -> report.

``run_demo(options)`` does everything and returns the ``results.json`` dict; ``sslalm.demo`` is its command
line. Each model is trained in a fresh child process (``sslalm.bench.common.run_isolated``), so its peak
resident memory is its own and the two models of ``--compare`` never share allocator state; that child
writes the Trainer's log lines to ``<model>/train.log`` and keeps progress bars and log messages on the
console. Evaluation, the answers shown on screen and the latency measurement (another child) follow.

Reruns reuse what is already there: the corpus (``build_corpus`` checks its config), and a model folder whose
``training.json`` fingerprint matches the corpus, the schedule, the recipe and the seed; evaluation answers
are resumed by the eval runner. ``force`` retrains.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslalm.demo.recipe import (
    ModelRecipe,
    Schedule,
    curriculum,
    sslalm_recipe,
    stage_parts,
    transformer_recipe,
)

logger = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
FINAL_STAGE = "stage4"
QA_TASKS = (
    "cla_label",
    "caption",
    "count",
    "temporal_order",
    "open_gender",
    "open_instrument",
    "open_language",
    "open_event",
    "open_source",
    "open_playing",
)


@dataclass
class DemoOptions:
    """Where and how the demo runs (the command line's options)."""

    out_dir: Path
    corpus_dir: Path
    schedule: Schedule
    seed: int = 0
    workers: int = 2
    threads: int = 2
    compare: bool = False
    force: bool = False
    progress: bool = True


# ---------------------------------------------------------------------------------------------- helpers


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-serialisable parts (what a reusable output depends on)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chance_levels(entries: list[dict], labels: list[str]) -> dict[str, Any]:
    """Accuracy of guessing: uniform over the label set, and the best constant answer (majority label)."""
    counts = Counter(label for e in entries for label in set(e["labels"]))
    best, hits = max(counts.items(), key=lambda kv: (kv[1], kv[0])) if counts else ("", 0)
    return {
        "num_labels": len(labels),
        "uniform": 100.0 / max(1, len(labels)),
        "majority": 100.0 * hits / max(1, len(entries)),
        "majority_label": best,
        "num_clips": len(entries),
    }


def pick_questions(records: list[dict], n: int, seed: int) -> list[dict]:
    """``n`` test records of different tasks (in ``QA_TASKS`` order), one random record per task."""
    rng = random.Random(seed)
    by_task: dict[str, list[dict]] = {}
    for r in records:
        by_task.setdefault(r["task"], []).append(r)
    chosen = []
    for task in (*QA_TASKS, *sorted(set(by_task) - set(QA_TASKS))):
        if task in by_task and len(chosen) < n:
            chosen.append(rng.choice(by_task[task]))
    return chosen


def loss_log():
    """A ``TrainerCallback`` that keeps every logged training loss with its step in ``.points``."""
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        def __init__(self):
            self.points: list[tuple[int, float]] = []

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.points.append((int(state.global_step), float(logs["loss"])))

    return LossLog()


# ---------------------------------------------------------------------------------------------- training


def _timed_stage(name: str, steps: int, fn, *args, **kwargs) -> dict[str, Any]:
    log = loss_log()
    kwargs["callbacks"] = [log]
    wall, cpu = time.perf_counter(), time.process_time()
    metrics = fn(*args, **kwargs)
    return {
        "stage": name,
        "steps": steps,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu,
        "losses": log.points,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float, str))},
    }


def train_model(
    recipe: dict,
    schedule: dict,
    corpus_dir: str,
    tokenizer_dir: str,
    model_dir: str,
    seed: int,
    threads: int,
    progress: bool = True,
    log_level: int = logging.INFO,
) -> dict[str, Any]:
    """Stage 0 (LM text, encoder labels) then curriculum stages 1-4; the model ends in ``model_dir/stage4``.

    Plain arguments (dicts and paths) so that it can run in a spawned child process.
    """
    import torch

    from sslalm.demo.measure import peak_rss, reset_peak_rss
    from sslalm.demo.pretrain import pretrain_encoder, pretrain_language_model
    from sslalm.models.lalm import SSLALM, SSLALMConfig, build_encoder
    from sslalm.tokenizer import load_tokenizer
    from sslalm.train import StageConfig, train

    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("transformers", "peft", "sslalm.data.openaqa"):
        logging.getLogger(noisy).setLevel(max(log_level, logging.WARNING))
    torch.set_num_threads(threads)
    r = ModelRecipe(**recipe)
    s = Schedule(**schedule)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    corpus = Path(corpus_dir)
    train_records = json.loads((corpus / "train.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(tokenizer_dir)
    stages = []
    start_rss = reset_peak_rss()
    # the Trainer prints its log dicts to stdout: into train.log; progress bars and logging stay on stderr
    with (
        open(model_dir / "train.log", "a", encoding="utf-8") as log_file,
        contextlib.redirect_stdout(log_file),
    ):
        logger.info("%s: stage 0, language model on the training text", r.title)
        stages.append(
            _timed_stage(
                "0: LM text",
                s.lm_steps,
                pretrain_language_model,
                r.lm_type,
                r.lm_config,
                tok,
                train_records,
                model_dir / "stage0_lm",
                s.lm_steps,
                batch_size=s.lm_batch,
                learning_rate=s.lm_lr,
                seed=seed,
                progress=progress,
            )
        )
        encoder_checkpoint = None
        if s.encoder_steps > 0:
            logger.info("%s: stage 0, audio encoder on the training labels", r.title)
            clips = {}
            for rec in train_records:
                if rec["task"] == "cla_label":
                    clips[str(corpus / rec["audio_id"])] = rec["output"].split(", ")
            labels = sorted({lab for names in clips.values() for lab in names})
            encoder = build_encoder(
                SSLALMConfig(encoder_type=r.encoder_type, encoder_config=r.encoder_config)
            )
            stages.append(
                _timed_stage(
                    "0: encoder labels",
                    s.encoder_steps,
                    pretrain_encoder,
                    encoder,
                    r.encoder_type,
                    list(clips.items()),
                    labels,
                    s.frames,
                    model_dir / "stage0_encoder",
                    s.encoder_steps,
                    batch_size=s.encoder_batch,
                    learning_rate=s.encoder_lr,
                    seed=seed,
                    progress=progress,
                )
            )
            encoder_checkpoint = str((model_dir / "stage0_encoder").resolve())
        config = SSLALMConfig.preset(
            r.preset,
            encoder_config=r.encoder_config,
            lm_type=r.lm_type,
            lm_config=r.lm_config,
            lm_checkpoint=str((model_dir / "stage0_lm").resolve()),
            encoder_checkpoint=encoder_checkpoint,
            tokenizer=str(Path(tokenizer_dir).resolve()),
            train_frames=s.frames,
            min_inference_frames=s.frames,
        )
        torch.manual_seed(seed)
        model = SSLALM(config)
        previous = None
        for spec, steps in zip(curriculum(), s.stage_steps, strict=True):
            out = model_dir / f"stage{spec.number}"
            parts = stage_parts(spec, s)
            title = f"{' + '.join(parts)} on {spec.title}"
            logger.info("%s: stage %d, %s (%d steps)", r.title, spec.number, title, steps)
            cfg = StageConfig(
                output_dir=str(out),
                train_files=[str(corpus / "train.json")],
                init_from=previous,
                trainable=list(parts),
                tasks=list(spec.tasks) if spec.tasks else None,
                learning_rate=s.learning_rate * spec.lr_factor,
                max_steps=steps,
                warmup_steps=max(1, steps // 10),
                per_device_train_batch_size=s.batch_size,
                effective_batch_size=s.batch_size,
                crop_seconds=s.frames / 100,
                train_on_inputs=s.train_on_inputs,
                seed=seed,
                save_steps=10**9,  # no intermediate checkpoints: the stage's model is saved at its end
                logging_steps=max(1, steps // 25),
                report_to=[],
                dataloader_num_workers=0,
                overwrite_output_dir=True,
                training_args={"disable_tqdm": not progress},
            )
            stages.append(
                _timed_stage(
                    f"{spec.number}: {title}",
                    steps,
                    train,
                    cfg,
                    model=model if previous is None else None,
                )
            )
            previous = str(out)
        trained_parts = sorted({p for spec in curriculum() for p in stage_parts(spec, s)})
        final = SSLALM.from_pretrained(previous)
        groups = {k: sum(p.numel() for _, p in v) for k, v in final.parameter_groups().items()}
    return {
        "stages": stages,
        "wall_s": sum(st["wall_s"] for st in stages),
        "cpu_s": sum(st["cpu_s"] for st in stages),
        "num_parameters": sum(groups.values()),
        "parameters": groups,
        "trainable_parts": trained_parts,
        "final_dir": previous,
        "threads": threads,
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss(),
    }


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_model(
    model: Any,
    corpus_dir: Path,
    eval_dir: Path,
    schedule: Schedule,
    embedder: Any,
    seed: int,
    model_name: str,
    progress: bool = True,
) -> dict[str, Any]:
    """The test split with the Table I protocol (``sslalm.eval.local``); returns the runner's results."""
    from sslalm.eval.local import load_local, share_answers
    from sslalm.eval.runner import evaluate, generate_predictions
    from sslalm.eval.scoring import predictions_path

    cla, cap, label = load_local(corpus_dir, "test")
    gen = {"max_new_tokens": schedule.max_new_tokens, "seed": seed}  # the paper's sampling otherwise
    # one caption per clip answers the classification prompt and is scored as a caption too
    generate_predictions(
        model, cla, predictions_path(eval_dir, cla.name), schedule.eval_batch, gen, progress=progress
    )
    share_answers(
        predictions_path(eval_dir, cla.name),
        predictions_path(eval_dir, cap.name),
        {c.audio_id: c.references for c in cap.clips},
    )
    return evaluate(
        model,
        [cla, cap, label],
        eval_dir,
        batch_size=schedule.eval_batch,
        generation_kwargs=gen,
        embedder=embedder,
        model_name=model_name,
        progress=progress,
    )


def summarize_eval(results: dict) -> dict[str, Any]:
    """The demo's headline numbers from the runner's results (percentages)."""
    b = results["benchmarks"]
    cla = next(v for k, v in b.items() if k.startswith("local_cla"))
    cap = next(v for k, v in b.items() if k.startswith("local_cap"))
    label = next(v for k, v in b.items() if k.startswith("local_label"))
    return {
        "accuracy": cla["value"],
        "label_accuracy": label["value"],
        "captions": cap.get("scores", {}),
        "captions_not_run": cap.get("not_run", {}),
        "n_clips": cla["n_scored"],
        "embedder": results.get("embedder"),
    }


def answer_questions(
    model: Any, corpus_dir: Path, questions: list[dict], schedule: Schedule, seed: int
) -> list[str]:
    """The model's answers to the chosen test questions (the paper's sampling, seeded)."""
    audio = [str(corpus_dir / q["audio_id"]) for q in questions]
    return model.generate(
        audio, [q["instruction"] for q in questions], max_new_tokens=schedule.max_new_tokens, seed=seed
    )


# ---------------------------------------------------------------------------------------------- the demo


def _load_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_tokenizer(corpus_dir: Path, out: Path, vocab_size: int, force: bool) -> Path:
    """A byte-level BPE trained on the training split's text (questions and answers), in ``out``."""
    from sslalm.demo.pretrain import record_texts
    from sslalm.tokenizer import build_byte_tokenizer

    if out.is_dir() and not force:
        return out
    records = json.loads((corpus_dir / "train.json").read_text(encoding="utf-8"))
    build_byte_tokenizer(record_texts(records), vocab_size=vocab_size, path=out)
    return out


def run_demo(options: DemoOptions, on_stage=None) -> dict[str, Any]:
    """Run the whole demo; returns (and writes) ``results.json``; also ``report.md`` and ``loss.png``.

    ``on_stage(name)`` is called when a phase starts (the command line prints it).
    """
    import torch

    from sslalm.bench.common import run_isolated
    from sslalm.data.corpus import build_corpus
    from sslalm.demo.measure import measure_isolated
    from sslalm.demo.report import write_outputs
    from sslalm.eval.datasets import CLASSIFICATION_PROMPT
    from sslalm.eval.embedders import make_embedder
    from sslalm.models.lalm import SSLALM

    say = on_stage or (lambda name: logger.info("%s", name))
    s = options.schedule
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()

    say(f"corpus ({s.corpus_size} clips) in {options.corpus_dir}")
    t0 = time.perf_counter()
    corpus = build_corpus(
        options.corpus_dir,
        size=s.corpus_size,
        seed=options.seed,
        workers=options.workers,
        progress=options.progress,
    )
    corpus_s = time.perf_counter() - t0
    corpus_dir = Path(corpus.out_dir)

    recipes = [sslalm_recipe()] + ([transformer_recipe(s.frames)] if options.compare else [])
    stamp = fingerprint(corpus.config_hash, s.to_dict(), options.seed)
    old = _load_json(out / "fingerprint.json")
    force = options.force or (old or {}).get("fingerprint") != stamp
    tokenizer_dir = prepare_tokenizer(corpus_dir, out / "tokenizer", s.vocab_size, force)
    (out / "fingerprint.json").write_text(json.dumps({"fingerprint": stamp}), encoding="utf-8")

    test_cla = json.loads((corpus_dir / "test_cla.json").read_text(encoding="utf-8"))
    labels = json.loads((corpus_dir / "labels.json").read_text(encoding="utf-8"))["cla"]["test"]
    test_records = json.loads((corpus_dir / "test.json").read_text(encoding="utf-8"))
    questions = pick_questions(test_records, s.qa_examples, options.seed)
    latency_clips = [str(corpus_dir / e["audio_id"]) for e in test_cla[: s.latency_clips]]
    torch.set_num_threads(options.threads)
    embedder = make_embedder("minilm")

    models: dict[str, Any] = {}
    for recipe in recipes:
        model_dir = out / recipe.key
        model_stamp = fingerprint(stamp, recipe.to_dict())
        training = _load_json(model_dir / TRAINING_FILE)
        if force or training is None or training.get("fingerprint") != model_stamp:
            if model_dir.exists():
                shutil.rmtree(model_dir)
            say(f"training {recipe.title}")
            training = run_isolated(
                train_model,
                recipe.to_dict(),
                s.to_dict(),
                str(corpus_dir),
                str(tokenizer_dir),
                str(model_dir),
                options.seed,
                options.threads,
                options.progress,
                logging.getLogger().getEffectiveLevel(),
            )
            training["fingerprint"] = model_stamp
            (model_dir / TRAINING_FILE).write_text(json.dumps(training, indent=1), encoding="utf-8")
        else:
            say(f"reusing the trained {recipe.title} in {model_dir}")
        final_dir = Path(training["final_dir"])
        say(f"evaluating {recipe.title} on the test split")
        model = SSLALM.from_pretrained(final_dir)
        results = evaluate_model(
            model, corpus_dir, model_dir / "eval", s, embedder, options.seed, recipe.title, options.progress
        )
        answers = answer_questions(model, corpus_dir, questions, s, options.seed)
        del model
        say(f"timing {recipe.title}")
        latency = measure_isolated(
            str(final_dir), latency_clips, CLASSIFICATION_PROMPT, s.latency_tokens, options.threads
        )
        models[recipe.key] = {
            "title": recipe.title,
            "recipe": recipe.to_dict(),
            "training": training,
            "eval": summarize_eval(results),
            "answers": answers,
            "latency": latency,
        }

    results = {
        "settings": {
            **s.to_dict(),
            "seed": options.seed,
            "threads": options.threads,
            "workers": options.workers,
            "compare": options.compare,
        },
        "corpus": {
            "dir": str(corpus_dir),
            "clips": corpus.clips,
            "records": corpus.records,
            "tasks": corpus.tasks,
            "sources": corpus.sources,
            "skipped_sources": corpus.skipped,
            "reused": corpus.reused,
            "seconds": corpus_s,
        },
        "chance": chance_levels(test_cla, labels),
        "questions": [
            {
                "audio_id": q["audio_id"],
                "task": q["task"],
                "question": q["instruction"],
                "reference": q["output"],
                "answers": {k: m["answers"][i] for k, m in models.items()},
            }
            for i, q in enumerate(questions)
        ],
        "models": models,
        "machine": {
            "cpus": os.cpu_count(),
            "threads": options.threads,
            "load_before": load_before,
            "load_after": os.getloadavg(),
            "torch": torch.__version__,
        },
        "total_s": time.perf_counter() - started,
    }
    write_outputs(results, out)
    return results
