"""The demo pipeline: corpus -> tokenizer -> stage 0 -> curriculum stages 1-4 -> evaluation -> report.

``run_demo(options)`` does everything and returns the ``results.json`` dict; ``sslalm.demo`` is its command
line. Each model is trained in a fresh child process (``sslalm.bench.common.run_isolated``), so its peak
resident memory is its own and the two models of ``--compare`` never share allocator state; that child
writes the Trainer's log lines to ``<model>/train.log`` and keeps progress bars and log messages on the
console. The curriculum stages are ``configs/tiny/stage*.yaml`` read by ``sslalm.train.load_config`` with the
demo's overrides (``sslalm.demo.recipe``). Evaluation (test split, unseen-sources set, open-ended facts),
the answers shown on screen and the latency measurement (another child) follow.

Reruns reuse what is already there: the corpus (``build_corpus`` checks its config), the unseen set, and a
model folder whose ``training.json`` fingerprint matches the corpus, the schedule, the recipe and the seed;
evaluation answers are resumed by the eval runner. ``force`` retrains.
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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sslalm.demo.baselines import chance_levels
from sslalm.demo.recipe import (
    ENCODER_FACTS,
    FACTS_PER_TASK,
    STAGES,
    ModelRecipe,
    Schedule,
    sslalm_recipe,
    stage_config,
    transformer_recipe,
)

logger = logging.getLogger(__name__)

TRAINING_FILE = "training.json"
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


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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


def _encoder_clips(
    train_records: list[dict], corpus: Path, facts: Sequence[str] = ENCODER_FACTS
) -> dict[str, list[str]]:
    """Audio path -> tags of every training clip: its labels (``cla_label`` record) and, for the ``facts``
    (``Schedule.encoder_facts``), ``"<fact>: <value>"`` read from its open-ended records
    (``sslalm.data.corpus.facts``) or, where the corpus has a manifest, from what the manifest states about
    the clip (``_manifest_facts``).

    The paper's DASS learnt AudioSet's 527 classes, far richer than our 31 labels; the spoken language is
    the one fact the corpus asks about that no label carries, and an encoder never told it learns no feature
    for it (the demo model named the right language in 1 answer of 10). The demo corpus's questions ask the
    language of 464 of its 792 training clips with speech, and the fact scorer reads only the test's ten
    languages from the answers (368 tagged); the manifest states it for all 792. An instrument is a label
    too, but as a fact it gets a softmax (and, with tag tokens, a token) of its own, among the instruments
    alone (the full schedule's ``encoder_facts``).
    """
    from sslalm.data.corpus.facts import FACTS, fact_of

    clips = {
        str(corpus / r["audio_id"]): r["output"].split(", ")
        for r in train_records
        if r["task"] == "cla_label"
    }
    unknown = [name for name in facts if name not in FACTS]
    if unknown:
        raise ValueError(f"unknown facts {unknown}; choose from {sorted(FACTS)}")
    found: dict[str, dict[str, str]] = {}
    for r in train_records:
        for name in facts:
            if r["task"] == FACTS[name].task and (value := fact_of(name, r["output"])) is not None:
                found.setdefault(str(corpus / r["audio_id"]), {})[name] = value
    for path, stated in _manifest_facts(corpus, facts).items():
        found.setdefault(path, {}).update(stated)
    for path, stated in found.items():
        if path in clips:
            clips[path] += [f"{name}: {value}" for name, value in stated.items()]
    return clips


def _manifest_facts(corpus: Path, facts: Sequence[str]) -> dict[str, dict[str, str]]:
    """Audio path -> the ``facts`` the local corpus's manifest states for a clip (``read_manifest``): the
    spoken language of a speech clip, or of the speech in a speech-over-noise clip; an instrument clip's
    instrument. Empty when the corpus has no manifest (an OpenAQA download, say)."""
    from sslalm.data.corpus.builder import read_manifest

    out: dict[str, dict[str, str]] = {}
    for audio_id, meta in read_manifest(corpus).items():
        speech = meta["speech"] if isinstance(meta.get("speech"), dict) else meta
        stated = {n: speech[n] for n in facts if isinstance(speech.get(n), str) and speech[n]}
        if stated:
            out[str(corpus / audio_id)] = stated
    return out


def pretrain_stage0(
    r: ModelRecipe,
    s: Schedule,
    corpus: Path,
    tokenizer_dir: str,
    model_dir: Path,
    seed: int,
    progress: bool,
    stages: list[dict],
) -> dict[str, Any]:
    """Stage 0: the LM on the training text, the encoder on the training labels (``sslalm.demo.pretrain``).

    Appends each part's timing and losses to ``stages``; returns the ``model_overrides`` that make stage 1
    start from them (the recipe's architecture, the two checkpoints, the tokenizer, the crop length).
    """
    from sslalm.demo.pretrain import TAG_HEAD_FILE, pretrain_encoder, pretrain_language_model
    from sslalm.models.lalm import SSLALMConfig, build_encoder
    from sslalm.tokenizer import load_tokenizer

    train_records = json.loads((corpus / "train.json").read_text(encoding="utf-8"))
    tok = load_tokenizer(tokenizer_dir)
    clips = _encoder_clips(train_records, corpus, s.encoder_facts) if s.encoder_steps > 0 else {}
    labels = sorted({lab for names in clips.values() for lab in names})
    prefix: dict[str, Any] = {}
    if s.lm_tag_prefix and s.tag_tokens and clips:  # the LM learns to read the tag tokens
        by_id = {r["audio_id"]: clips.get(str(corpus / r["audio_id"]), []) for r in train_records}
        prefix = {"clip_tags": by_id, "tag_names": labels}
    logger.info("%s: stage 0, language model on the training text", r.title)
    lm_dir = model_dir / "stage0_lm"
    stages.append(
        _timed_stage(
            "0: LM text",
            s.lm_steps,
            pretrain_language_model,
            r.lm_type,
            r.lm_config,
            tok,
            train_records,
            lm_dir,
            s.lm_steps,
            batch_size=s.lm_batch,
            learning_rate=s.lm_lr,
            seed=seed,
            progress=progress,
            **prefix,
        )
    )
    overrides: dict[str, Any] = {
        "encoder_config": r.encoder_config,
        "lm_type": r.lm_type,
        "lm_config": r.lm_config,
        "lm_checkpoint": str(lm_dir.resolve()),
        "tokenizer": str(Path(tokenizer_dir).resolve()),
        "train_frames": s.frames,
        "min_inference_frames": s.frames,
    }
    if s.encoder_steps > 0:
        logger.info("%s: stage 0, audio encoder on the training labels", r.title)
        encoder = build_encoder(SSLALMConfig(encoder_type=r.encoder_type, encoder_config=r.encoder_config))
        enc_dir = model_dir / "stage0_encoder"
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
                enc_dir,
                s.encoder_steps,
                batch_size=s.encoder_batch,
                learning_rate=s.encoder_lr,
                seed=seed,
                progress=progress,
                augment=s.encoder_augment,
                balance=s.encoder_balance,
                group_tags=s.encoder_tag_groups,
                spec_masks=s.encoder_spec_masks,
                mixup=s.encoder_mixup,
                noise=s.encoder_noise,
                eq=s.encoder_eq,
                speed=s.encoder_speed,
                pool=s.encoder_pool,
                fact_draws=s.encoder_fact_draws,
                cepstra=s.encoder_cepstra,
                cepstra_labels=s.encoder_cepstra_labels,
                fact_probe=s.encoder_fact_probe,
                fact_net=s.encoder_fact_net,
                fact_net_epochs=s.encoder_fact_net_epochs,
                fact_net_warp=s.encoder_fact_net_warp,
            )
        )
        overrides["encoder_checkpoint"] = str(enc_dir.resolve())
        if s.tag_tokens:
            overrides["tag_names"] = labels
            overrides["tag_pool"] = s.encoder_pool
            overrides["tag_cepstra"] = s.encoder_cepstra
            overrides["tag_fact_net"] = s.encoder_fact_net
            if s.tag_fact_temperature is not None:
                overrides["tag_fact_temperature"] = s.tag_fact_temperature
            overrides["tag_scale"] = s.tag_scale
            overrides["tag_checkpoint"] = str((enc_dir / TAG_HEAD_FILE).resolve())
    return overrides


def run_curriculum(
    r: ModelRecipe,
    s: Schedule,
    corpus: Path,
    model_dir: Path,
    model_overrides: dict[str, Any],
    seed: int,
    progress: bool,
    stages: list[dict],
) -> tuple[str, list[str]]:
    """Stages 1-4 from ``configs/tiny`` with the demo's overrides; returns the last stage's folder and every
    part that trained."""
    from sslalm.train import train

    previous: str | None = None
    trained: set[str] = set()
    for number in STAGES:
        cfg = stage_config(
            number,
            s,
            output_dir=str(model_dir / f"stage{number}"),
            train_file=str(corpus / "train.json"),
            init_from=previous,
            seed=seed,
            progress=progress,
            model_overrides=model_overrides,
            preset=r.preset,
        )
        data = "every task" if cfg.tasks is None else ", ".join(cfg.tasks)
        title = f"{' + '.join(cfg.trainable)} on {data}"
        logger.info("%s: stage %d, %s (%d steps)", r.title, number, title, cfg.max_steps)
        stages.append(_timed_stage(f"{number}: {title}", cfg.max_steps, train, cfg))
        trained.update(cfg.trainable)
        previous = cfg.output_dir
    assert previous is not None
    return previous, sorted(trained)


def warm_up_kernels() -> float:
    """Compile the CPU scan kernels before the timed stages (``sslalm.ops.scan_numba.warm_up``); returns
    the seconds it took (0 where training does not run them: a GPU, or no numba). The compile is paid once
    per install, so the report shows it apart from the training time. It does not touch the global RNG."""
    import torch

    from sslalm.ops.scan_numba import numba_available, warm_up

    if torch.cuda.is_available() or not numba_available():
        return 0.0
    return warm_up()


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
    """Stage 0 then curriculum stages 1-4; the model ends in ``model_dir/stage4``.

    Plain arguments (dicts and paths) so that it can run in a spawned child process.
    """
    import torch

    from sslalm.demo.measure import peak_rss, reset_peak_rss
    from sslalm.models.lalm import SSLALM

    logging.basicConfig(
        level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("transformers", "peft", "sslalm.data.openaqa"):
        logging.getLogger(noisy).setLevel(max(log_level, logging.WARNING))
    torch.set_num_threads(threads)
    r, s = ModelRecipe(**recipe), Schedule(**schedule)
    out = Path(model_dir)
    out.mkdir(parents=True, exist_ok=True)
    stages: list[dict] = []
    start_rss = reset_peak_rss()
    compile_s = warm_up_kernels()  # every model: the registries, not this code, know which ones scan
    # the Trainer prints its log dicts to stdout: into train.log; progress bars and logging stay on stderr
    with open(out / "train.log", "a", encoding="utf-8") as log_file, contextlib.redirect_stdout(log_file):
        overrides = pretrain_stage0(r, s, Path(corpus_dir), tokenizer_dir, out, seed, progress, stages)
        final_dir, trained = run_curriculum(r, s, Path(corpus_dir), out, overrides, seed, progress, stages)
        final = SSLALM.from_pretrained(final_dir)
        groups = {k: sum(p.numel() for _, p in v) for k, v in final.parameter_groups().items()}
    return {
        "stages": stages,
        "wall_s": sum(st["wall_s"] for st in stages),
        "cpu_s": sum(st["cpu_s"] for st in stages),
        "num_parameters": sum(groups.values()),
        "parameters": groups,
        "trainable_parts": trained,
        "final_dir": final_dir,
        "threads": threads,
        "kernel_compile_s": compile_s,
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss(),
    }


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate_split(
    model: Any,
    root: Path,
    split: str,
    eval_dir: Path,
    schedule: Schedule,
    embedder: Any,
    seed: int,
    model_name: str,
    progress: bool = True,
    captions: bool = True,
) -> dict[str, Any]:
    """One split with the Table I protocol (``sslalm.eval.local``); returns the headline numbers."""
    from sslalm.eval.local import load_local, share_answers
    from sslalm.eval.runner import evaluate, generate_predictions
    from sslalm.eval.scoring import predictions_path

    benches = load_local(root, split, kinds=("cla", "cap", "label") if captions else ("cla", "label"))
    cla = benches[0]
    gen = {"max_new_tokens": schedule.max_new_tokens, "seed": seed}  # the paper's sampling otherwise
    # one caption per clip answers the classification prompt and is scored as a caption too
    generate_predictions(
        model, cla, predictions_path(eval_dir, cla.name), schedule.eval_batch, gen, progress=progress
    )
    if captions:
        cap = benches[1]
        share_answers(
            predictions_path(eval_dir, cla.name),
            predictions_path(eval_dir, cap.name),
            {c.audio_id: c.references for c in cap.clips},
        )
    results = evaluate(
        model,
        benches,
        eval_dir,
        batch_size=schedule.eval_batch,
        generation_kwargs=gen,
        embedder=embedder,
        model_name=model_name,
        progress=progress,
    )
    return summarize_eval(results)


def summarize_eval(results: dict) -> dict[str, Any]:
    """The headline numbers from the runner's results (percentages)."""
    b = results["benchmarks"]
    cla = next(v for k, v in b.items() if k.startswith("local_cla"))
    label = next(v for k, v in b.items() if k.startswith("local_label"))
    cap = next((v for k, v in b.items() if k.startswith("local_cap")), {})
    return {
        "accuracy": cla["value"],
        "label_accuracy": label["value"],
        "captions": cap.get("scores", {}),
        "captions_not_run": cap.get("not_run", {}),
        "n_clips": cla["n_scored"],
        "embedder": results.get("embedder"),
    }


def answer_records(
    model: Any, corpus_dir: Path, records: list[dict], schedule: Schedule, seed: int
) -> list[str]:
    """The model's answers to corpus records (their own questions; the paper's sampling, seeded)."""
    answers: list[str] = []
    b = schedule.eval_batch
    for i in range(0, len(records), b):
        chunk = records[i : i + b]
        answers += model.generate(
            [str(corpus_dir / q["audio_id"]) for q in chunk],
            [q["instruction"] for q in chunk],
            max_new_tokens=schedule.max_new_tokens,
            seed=seed,
        )
    return answers


def evaluate_facts(
    model: Any, corpus_dir: Path, by_fact: dict[str, list[dict]], schedule: Schedule, seed: int
) -> dict[str, Any]:
    """Open-ended test questions scored by the fact the answer states (``sslalm.data.corpus.facts``)."""
    from sslalm.data.corpus.facts import score_facts

    unique: dict[tuple[str, str], dict] = {}
    for recs in by_fact.values():
        for r in recs:
            unique.setdefault((r["audio_id"], r["instruction"]), r)
    keys = list(unique)
    answers = dict(zip(keys, answer_records(model, corpus_dir, [unique[k] for k in keys], schedule, seed)))
    out = {}
    for name, recs in by_fact.items():
        refs = [r["output"] for r in recs]
        out[name] = score_facts(name, refs, [answers[(r["audio_id"], r["instruction"])] for r in recs])
    return out


# ---------------------------------------------------------------------------------------------- the demo


def prepare_tokenizer(corpus_dir: Path, out: Path, vocab_size: int, force: bool) -> Path:
    """A byte-level BPE trained on the training split's text (questions and answers), in ``out``."""
    from sslalm.demo.pretrain import record_texts
    from sslalm.tokenizer import build_byte_tokenizer

    if out.is_dir() and not force:
        return out
    records = json.loads((corpus_dir / "train.json").read_text(encoding="utf-8"))
    build_byte_tokenizer(record_texts(records), vocab_size=vocab_size, path=out)
    return out


@dataclass
class DemoData:
    """What every model of a run is evaluated on."""

    corpus: Any  # CorpusInfo
    corpus_s: float
    unseen_dir: Path | None
    unseen: Any  # UnseenInfo or None
    test_cla: list[dict]
    labels: list[str]
    unseen_cla: list[dict]
    unseen_labels: list[str]
    questions: list[dict]
    facts: dict[str, list[dict]]


def prepare_data(options: DemoOptions, say) -> DemoData:
    """The corpus, the unseen-sources set, the questions shown on screen and the fact-scored records."""
    from sslalm.data.corpus import build_corpus
    from sslalm.data.corpus.facts import fact_records
    from sslalm.data.corpus.unseen import build_unseen

    s = options.schedule
    say(f"corpus ({s.corpus_size} clips) in {options.corpus_dir}")
    t0 = time.perf_counter()
    corpus = build_corpus(
        options.corpus_dir,
        size=s.corpus_size,
        held_out_size=s.corpus_held_out,
        seed=options.seed,
        workers=options.workers,
        progress=options.progress,
    )
    corpus_s = time.perf_counter() - t0
    root = Path(corpus.out_dir)
    all_labels = json.loads((root / "labels.json").read_text(encoding="utf-8"))
    unseen_dir, unseen, unseen_cla, unseen_labels = None, None, [], []
    if s.unseen_size > 0:
        unseen_dir = root.parent / f"{root.name}-unseen"
        say(f"unseen-sources set ({s.unseen_size} clips) in {unseen_dir}")
        try:
            unseen = build_unseen(
                unseen_dir, all_labels["all"], s.unseen_size, options.seed, progress=options.progress
            )
        except RuntimeError as exc:  # none of its sources is installed: the demo runs without it
            logger.warning("no unseen-sources set: %s (scripts/setup-system.sh installs them)", exc)
            unseen_dir = None
    if unseen_dir is not None:
        unseen_cla = json.loads((unseen_dir / "unseen_cla.json").read_text(encoding="utf-8"))
        unseen_labels = json.loads((unseen_dir / "labels.json").read_text(encoding="utf-8"))["cla"]["unseen"]
    test_records = json.loads((root / "test.json").read_text(encoding="utf-8"))
    return DemoData(
        corpus=corpus,
        corpus_s=corpus_s,
        unseen_dir=unseen_dir,
        unseen=unseen,
        test_cla=json.loads((root / "test_cla.json").read_text(encoding="utf-8")),
        labels=all_labels["cla"]["test"],
        unseen_cla=unseen_cla,
        unseen_labels=unseen_labels,
        questions=pick_questions(test_records, s.qa_examples, options.seed),
        facts=fact_records(test_records, FACTS_PER_TASK, options.seed),
    )


def baselines(data: DemoData, seed: int, embedder: Any) -> dict[str, Any]:
    """Uniform chance, the majority answer and the linear probe on the test split and the unseen set, and the
    test split's reference captions through the paper-prompt protocol (scored with ``embedder``)."""
    from sslalm.demo.baselines import linear_probe, reference_caption_accuracy

    root = Path(data.corpus.out_dir)
    sets = {"test": (root, data.test_cla, data.labels)}
    out = {"test": chance_levels(data.test_cla, data.labels)}
    if data.unseen_dir is not None:
        sets["unseen"] = (data.unseen_dir, data.unseen_cla, data.unseen_labels)
        out["unseen"] = chance_levels(data.unseen_cla, data.unseen_labels)
    train_records = json.loads((root / "train.json").read_text(encoding="utf-8"))
    for name, acc in linear_probe(root, train_records, sets, seed).items():
        out[name]["linear_probe"] = acc
    out["test"]["reference_captions"] = reference_caption_accuracy(root, "test", data.labels, embedder)
    return out


def train_or_reuse(
    recipe: ModelRecipe, options: DemoOptions, stamp: str, tokenizer_dir: Path, force: bool, say
):
    """The model's ``training.json``: trained in a child process, or reused when its fingerprint matches."""
    from sslalm.bench.common import run_isolated

    model_dir = Path(options.out_dir) / recipe.key
    model_stamp = fingerprint(stamp, recipe.to_dict())
    training = _load_json(model_dir / TRAINING_FILE)
    if not force and training is not None and training.get("fingerprint") == model_stamp:
        say(f"reusing the trained {recipe.title} in {model_dir}")
        return training
    if model_dir.exists():
        shutil.rmtree(model_dir)
    say(f"training {recipe.title}")
    training = run_isolated(
        train_model,
        recipe.to_dict(),
        options.schedule.to_dict(),
        str(options.corpus_dir),
        str(tokenizer_dir),
        str(model_dir),
        options.seed,
        options.threads,
        options.progress,
        logging.getLogger().getEffectiveLevel(),
    )
    training["fingerprint"] = model_stamp
    (model_dir / TRAINING_FILE).write_text(json.dumps(training, indent=1), encoding="utf-8")
    return training


def evaluate_model(
    recipe: ModelRecipe, training: dict, data: DemoData, options: DemoOptions, embedder: Any, say
) -> dict[str, Any]:
    """Test split, unseen set, open-ended facts, the on-screen answers and latency of one trained model."""
    from sslalm.demo.measure import measure_isolated
    from sslalm.eval.datasets import CLASSIFICATION_PROMPT
    from sslalm.models.lalm import SSLALM

    s = options.schedule
    root = Path(data.corpus.out_dir)
    model_dir = Path(options.out_dir) / recipe.key
    final_dir = Path(training["final_dir"])
    say(f"evaluating {recipe.title}")
    model = SSLALM.from_pretrained(final_dir)
    common = dict(schedule=s, embedder=embedder, seed=options.seed, model_name=recipe.title)
    ev = evaluate_split(model, root, "test", model_dir / "eval", progress=options.progress, **common)
    if data.unseen_dir is not None:
        ev["unseen"] = evaluate_split(
            model,
            data.unseen_dir,
            "unseen",
            model_dir / "eval_unseen",
            progress=options.progress,
            captions=False,
            **common,
        )
    ev["facts"] = evaluate_facts(model, root, data.facts, s, options.seed)
    answers = answer_records(model, root, data.questions, s, options.seed)
    del model
    say(f"timing {recipe.title}")
    latency_clips = [str(root / e["audio_id"]) for e in data.test_cla[: s.latency_clips]]
    latency = measure_isolated(
        str(final_dir), latency_clips, CLASSIFICATION_PROMPT, s.latency_tokens, options.threads
    )
    return {
        "title": recipe.title,
        "recipe": recipe.to_dict(),
        "training": training,
        "eval": ev,
        "answers": answers,
        "latency": latency,
    }


def run_demo(options: DemoOptions, on_stage=None) -> dict[str, Any]:
    """Run the whole demo; returns (and writes) ``results.json``; also ``report.md`` and ``loss.png``.

    ``on_stage(name)`` is called when a phase starts (the command line prints it).
    """
    import torch

    from sslalm.demo.report import write_outputs
    from sslalm.eval.embedders import make_embedder

    say = on_stage or (lambda name: logger.info("%s", name))
    s = options.schedule
    out = Path(options.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    load_before = os.getloadavg()
    data = prepare_data(options, say)
    stamp = fingerprint(data.corpus.config_hash, s.to_dict(), options.seed)
    old = _load_json(out / "fingerprint.json")
    force = options.force or (old or {}).get("fingerprint") != stamp
    tokenizer_dir = prepare_tokenizer(Path(data.corpus.out_dir), out / "tokenizer", s.vocab_size, force)
    (out / "fingerprint.json").write_text(json.dumps({"fingerprint": stamp}), encoding="utf-8")
    torch.set_num_threads(options.threads)
    embedder = make_embedder("minilm")
    say("baselines: chance, majority answer, linear probe on fbank statistics, reference captions")
    chance = baselines(data, options.seed, embedder)
    recipes = [sslalm_recipe(s.model_size, s.encoder_drop)] + (
        [transformer_recipe(s.frames, s.model_size, s.encoder_drop)] if options.compare else []
    )
    models = {}
    for recipe in recipes:
        training = train_or_reuse(recipe, options, stamp, tokenizer_dir, force, say)
        models[recipe.key] = evaluate_model(recipe, training, data, options, embedder, say)
    results = {
        "settings": {
            **s.to_dict(),
            "seed": options.seed,
            "threads": options.threads,
            "workers": options.workers,
            "compare": options.compare,
        },
        "corpus": {
            "dir": str(data.corpus.out_dir),
            "clips": data.corpus.clips,
            "records": data.corpus.records,
            "tasks": data.corpus.tasks,
            "sources": data.corpus.sources,
            "skipped_sources": data.corpus.skipped,
            "reused": data.corpus.reused,
            "seconds": data.corpus_s,
        },
        "unseen": None
        if data.unseen is None
        else {"dir": str(data.unseen_dir), "clips": data.unseen.clips, "skipped": data.unseen.skipped},
        "chance": chance["test"],
        "baselines": chance,
        "questions": [
            {
                "audio_id": q["audio_id"],
                "task": q["task"],
                "question": q["instruction"],
                "reference": q["output"],
                "answers": {k: m["answers"][i] for k, m in models.items()},
            }
            for i, q in enumerate(data.questions)
        ],
        "models": models,
        "final_model": models["sslalm"]["training"]["final_dir"],
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
