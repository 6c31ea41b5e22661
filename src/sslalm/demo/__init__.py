"""``sslalm demo``: build the local corpus, train a tiny ssLALM through the curriculum, evaluate it, report.

The main job of the README, end to end on a CPU:

1. the local audio question-answering corpus (``sslalm corpus``; reused when it exists);
2. a byte-level BPE tokenizer trained on the training split's text;
3. stage 0, a stand-in for the pretrained weights the paper starts from (none can be downloaded): the Mamba
   LM learns the training text, the DASS encoder the training labels (``sslalm.demo.pretrain``);
4. curriculum stages 1-4: ``configs/tiny/stage*.yaml`` read by ``sslalm.train.load_config`` (as ``sslalm
   train`` reads them) with the demo's overrides, stated in ``sslalm.demo.recipe``;
5. the test split with the paper's Table I protocol (classification accuracy by caption-embedding
   similarity, caption metrics), the same on a set made from sources the corpus never uses
   (``sslalm.data.corpus.unseen``), open-ended questions scored by the fact they state
   (``sslalm.data.corpus.facts``), baselines (chance, majority answer, linear probe), a few test questions
   answered on screen;
6. ``report.md``, ``loss.png`` and ``results.json`` in ``--out``, and the ``sslalm app`` / ``sslalm serve``
   commands for the trained model.

``--compare`` trains an LTU-style transformer LALM of about the same size (AST + LLaMA) on the same data
and schedule, and adds training time, time to first token, per-token latency and peak memory side by side.
``--quick`` runs the same pipeline at a size CI can afford.

Modules: ``recipe`` (models, schedules, the curriculum's overrides), ``pretrain`` (stage 0), ``pipeline``
(the run), ``baselines`` (chance, majority, linear probe), ``measure`` (latency and memory), ``report``
(outputs). ``docs/demo.md`` records what was tried and measured.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument(
        "--corpus", default=None, help="corpus folder, built if missing (default: runs/corpus-<size>)"
    )
    parser.add_argument("--quick", action="store_true", help="a small corpus and short schedule (CI size)")
    parser.add_argument(
        "--compare", action="store_true", help="also train a transformer LALM (AST + LLaMA) of the same size"
    )
    parser.add_argument("--size", type=int, default=None, help="corpus clips (default: 3000, quick: 600)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the corpus, training and sampling")
    parser.add_argument("--workers", type=int, default=2, help="corpus rendering processes (default: 2)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: the number of CPUs, at most 2)"
    )
    parser.add_argument("--force", action="store_true", help="retrain even if trained models exist in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_cli(args: argparse.Namespace) -> int:
    import dataclasses
    from pathlib import Path

    from sslalm.demo.pipeline import DemoOptions, run_demo
    from sslalm.demo.recipe import SCHEDULES
    from sslalm.demo.report import baseline_rows, console_table, fact_rows, model_commands

    schedule = SCHEDULES["quick" if args.quick else "full"]
    if args.size is not None:
        if args.size < 100:
            print("sslalm demo: error: --size must be at least 100 clips")
            return 2
        schedule = dataclasses.replace(schedule, corpus_size=args.size)
    threads = args.threads or max(1, min(2, os.cpu_count() or 1))
    options = DemoOptions(
        out_dir=Path(args.out),
        corpus_dir=Path(args.corpus or f"runs/corpus-{schedule.corpus_size}"),
        schedule=schedule,
        seed=args.seed,
        workers=args.workers,
        threads=threads,
        compare=args.compare,
        force=args.force,
        progress=not args.no_progress,
    )
    extra = ", with --compare" if args.compare else ""
    print(f"sslalm demo ({schedule.name} schedule{extra}) -> {options.out_dir}")
    try:
        results = run_demo(options, on_stage=lambda name: print(f"\n== {name}", flush=True))
    except (RuntimeError, ValueError, FileExistsError, OSError) as exc:
        print(f"sslalm demo: error: {exc}")
        return 1
    print("\n== a few test questions")
    for q in results["questions"]:
        print(f"\n[{q['task']}] {q['audio_id']}\n  Q: {q['question']}\n  reference: {q['reference']}")
        for key, answer in q["answers"].items():
            print(f"  {results['models'][key]['title']}: {answer}")
    print("\n== results on the test split\n")
    print(console_table(results))
    print("\n== baselines and the unseen-sources set\n")
    print(console_table(results, baseline_rows))
    print("\n== open-ended questions: share of answers that state the right fact\n")
    print(console_table(results, fact_rows))
    out = options.out_dir
    print(f"\nreport: {out / 'report.md'}\nplot:   {out / 'loss.png'}\nresults: {out / 'results.json'}")
    print(f"total time: {results['total_s'] / 60:.1f} min")
    commands = model_commands(results)
    if commands:
        print("\ntry the trained ssLALM:\n  " + "\n  ".join(commands))
    return 0
