"""The benchmark registry: which benchmarks exist, how each is read and scored, and how to find them.

:data:`BENCHMARKS` maps each benchmark to its Table I column, task, metric, prompt, usual folder names and
adapter function (from :mod:`sslalm.eval.adapters`, which documents every official layout); ``ALIASES``
accepts the usual short names. :func:`load_benchmark` reads one folder into a
:class:`~sslalm.eval.benchmark.Benchmark`; :func:`find_benchmarks` loads the ones present under a data root
and skips the others with a log message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from sslalm.eval import adapters
from sslalm.eval.benchmark import Benchmark, BenchmarkSpec, DatasetNotFound

logger = logging.getLogger(__name__)

CLASSIFICATION_PROMPT = "Close-ended question: Write an audio caption describing the sound."
AUDIOCAPS_PROMPT = "Close-ended question: Write an audio caption describing the sound, in AudioCaps style."
CLOTHO_PROMPT = "Close-ended question: Create a caption for audio, in Clotho style."

# --------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------

_C, _K = "classification", "captioning"
BENCHMARKS: dict[str, BenchmarkSpec] = {
    s.name: s
    for s in (
        BenchmarkSpec(
            "esc50",
            "ESC50",
            _C,
            "acc",
            CLASSIFICATION_PROMPT,
            ("ESC-50-master", "ESC-50", "esc50"),
            adapters.load_esc50,
        ),
        BenchmarkSpec(
            "dcase17",
            "DCASE",
            _C,
            "mi-f1",
            CLASSIFICATION_PROMPT,
            ("DCASE2017-task4", "dcase2017_task4", "dcase17", "DCASE2017_eval"),
            adapters.load_dcase2017,
        ),
        BenchmarkSpec(
            "vocalsound",
            "VS",
            _C,
            "acc",
            CLASSIFICATION_PROMPT,
            ("vs_release_16k", "vocalsound", "VocalSound"),
            adapters.load_vocalsound,
        ),
        BenchmarkSpec(
            "tut17",
            "TUT",
            _C,
            "acc",
            CLASSIFICATION_PROMPT,
            ("TUT-acoustic-scenes-2017-evaluation", "tut17", "TUT2017"),
            adapters.load_tut2017,
        ),
        BenchmarkSpec(
            "bjo",
            "BJO",
            _C,
            "acc",
            CLASSIFICATION_PROMPT,
            ("beijing_opera", "BeijingOpera", "Beijing-Opera", "bjo"),
            adapters.load_beijing_opera,
        ),
        BenchmarkSpec(
            "vggsound",
            "VGG",
            _C,
            "acc",
            CLASSIFICATION_PROMPT,
            ("vggsound", "VGGSound"),
            adapters.load_vggsound,
        ),
        BenchmarkSpec(
            "fsd50k", "FSD", _C, "map", CLASSIFICATION_PROMPT, ("FSD50K", "fsd50k"), adapters.load_fsd50k
        ),
        BenchmarkSpec(
            "audioset",
            "AudioSet",
            _C,
            "map",
            CLASSIFICATION_PROMPT,
            ("audioset", "AudioSet"),
            adapters.load_audioset,
        ),
        BenchmarkSpec(
            "audiocaps",
            "AudioCaps",
            _K,
            "spice",
            AUDIOCAPS_PROMPT,
            ("audiocaps", "AudioCaps"),
            adapters.load_audiocaps,
        ),
        BenchmarkSpec(
            "clotho",
            "Clotho",
            _K,
            "spice",
            CLOTHO_PROMPT,
            ("clotho", "Clotho", "clotho_v2"),
            adapters.load_clotho,
        ),
    )
}
ALIASES = {
    "dcase2017": "dcase17",
    "dcase": "dcase17",
    "vs": "vocalsound",
    "tut2017": "tut17",
    "tut": "tut17",
    "beijing_opera": "bjo",
    "vgg": "vggsound",
    "fsd": "fsd50k",
    "as": "audioset",
}


def resolve_names(names: str | Sequence[str]) -> list[str]:
    """``"esc50,audiocaps"`` or ``["all"]`` -> canonical benchmark names, in Table I order; unknown ->
    error."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out = []
    for n in (n.strip().lower() for n in names):
        if not n:
            continue
        if n == "all":
            out.extend(BENCHMARKS)
            continue
        n = ALIASES.get(n, n)
        if n not in BENCHMARKS:
            raise ValueError(f"unknown benchmark {n!r}; choose from {', '.join(BENCHMARKS)} or 'all'")
        out.append(n)
    order = list(BENCHMARKS)
    return sorted(dict.fromkeys(out), key=order.index)


def benchmark_dir(name: str, data_root: str | Path, overrides: dict[str, str] | None = None) -> Path | None:
    """The folder holding benchmark ``name``: an override, else the first of its usual folder names."""
    if overrides and name in overrides:
        return Path(overrides[name])
    for d in BENCHMARKS[name].dir_names:
        if (Path(data_root) / d).is_dir():
            return Path(data_root) / d
    return None


def load_benchmark(name: str, root: str | Path) -> Benchmark:
    """Read benchmark ``name`` from its folder ``root``. Raises :class:`DatasetNotFound` if it is not
    there."""
    spec = BENCHMARKS[ALIASES.get(name, name)]
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFound(f"{root} is not a folder")
    bench = spec.loader(root, spec)
    if bench.malformed:
        logger.warning("%s: %d malformed metadata rows ignored", name, bench.malformed)
    if bench.skipped:
        logger.warning("%s: skipped %s", name, dict(bench.skipped))
    return bench


def find_benchmarks(
    data_root: str | Path, names: str | Sequence[str] = "all", overrides: dict[str, str] | None = None
) -> list[Benchmark]:
    """Load each named benchmark found under ``data_root``; a missing one is skipped with a log message."""
    out = []
    for name in resolve_names(names):
        root = benchmark_dir(name, data_root, overrides)
        if root is None:
            logger.warning(
                "%s: not found under %s (looked for %s); skipped",
                name,
                data_root,
                ", ".join(BENCHMARKS[name].dir_names),
            )
            continue
        try:
            bench = load_benchmark(name, root)
        except DatasetNotFound as exc:
            logger.warning("%s: skipped (%s)", name, exc)
            continue
        logger.info("%s", bench.summary())
        out.append(bench)
    return out
