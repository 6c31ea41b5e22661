"""What a loaded benchmark is: :class:`EvalClip`, :class:`Benchmark`, :class:`BenchmarkSpec` and the error
for a benchmark that is not on disk.

:class:`Benchmark` holds the clips to answer (:class:`EvalClip`: audio id, audio path, references), the label
set (classification), the prompt and metric of Table I, and the counts of metadata rows that could not be used
(``malformed``) and of clips left out with a reason (``skipped``, e.g. audio not on disk); neither stops a
run. :class:`BenchmarkSpec` holds a benchmark's static facts and its adapter.

These records are shared by the adapters (:mod:`sslalm.eval.adapters`, which build them) and the registry
(:mod:`sslalm.eval.datasets`, which names every benchmark and its adapter); keeping them apart from both lets
the registry import the adapters without the adapters importing the registry back.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

MISSING_AUDIO = "audio file not found"


class DatasetNotFound(FileNotFoundError):
    """The benchmark's metadata is not under the given folder."""


@dataclass(frozen=True)
class EvalClip:
    """One clip to answer: its id (unique in the benchmark), audio path, and references.

    References are label display names for classification (several for multi-label sets) and the reference
    captions for captioning.
    """

    audio_id: str
    audio_path: str
    references: tuple[str, ...]


@dataclass
class Benchmark:
    """A loaded benchmark: what to ask, about which clips, and how to score the answers."""

    name: str
    column: str  # Table I column
    task: str  # "classification" | "captioning"
    metric: str  # "acc" | "mi-f1" | "map" | "spice"
    prompt: str
    clips: list[EvalClip]
    labels: list[str] = field(default_factory=list)  # label set (classification)
    skipped: Counter = field(default_factory=Counter)  # reason -> clips not used
    malformed: int = 0  # metadata rows that could not be parsed
    root: str = ""

    def summary(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items())) or "none"
        return (
            f"{self.name}: {len(self.clips)} clips, {len(self.labels)} labels, "
            f"{self.malformed} malformed rows, skipped: {skipped} ({self.root})"
        )


@dataclass(frozen=True)
class BenchmarkSpec:
    """Static facts about a benchmark: Table I column, task, metric, prompt, folder names, loader."""

    name: str
    column: str
    task: str
    metric: str
    prompt: str
    dir_names: tuple[str, ...]
    loader: Callable[[Path, BenchmarkSpec], Benchmark]  # reads the official layout (sslalm.eval.adapters)

    def new(self, root: Path, clips: list[EvalClip], labels: Sequence[str] = (), **kw) -> Benchmark:
        """A loaded benchmark with this spec's facts; ``kw``: ``skipped``, ``malformed``."""
        facts = {name: getattr(self, name) for name in ("name", "column", "task", "metric", "prompt")}
        return Benchmark(**facts, clips=clips, labels=list(labels), root=str(root), **kw)
