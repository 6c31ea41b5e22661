"""Label-balanced sampling weights for a stage's records.

Why: a corpus's sound classes are far from uniform (speech is a third of the local corpus, each of its
thirteen instruments under 2 %), and a short fine-tuning run learns the frequent classes first: the demo's
model answered every instrument with the same one while a linear probe on its own hidden state told them
apart. Drawing records with weight ``n ** -power``, where ``n`` counts the records of the same task whose
clip has the same label, evens that out (power 1: every label equally often; 0.5: a square-root compromise).

A clip's labels are the answer of its ``label_task`` record (``cla_label`` in the local corpus and LTU's
classification data: labels separated by ", ") in the same data; a clip with several labels (a mixture)
gets the mean of its labels' weights. Records of clips without a label record, and every record when no
such record exists, get weight 1. Weights are normalised per task, so each task keeps its share of draws,
unless ``task_weighted`` then scales a task's share on purpose (``StageConfig.task_weights``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def clip_balance_weights(clip_labels: Sequence[Sequence[str]], power: float) -> list[float]:
    """(N,) weights for clips given their label lists: the mean of ``count(label) ** -power`` over a clip's
    labels, scaled to sum to N (the stage-0 encoder's draws)."""
    if power < 0:
        raise ValueError(f"power must be >= 0, got {power}")
    counts = Counter(label for labels in clip_labels for label in labels)
    raw = [
        sum(counts[n] ** -power for n in labels) / len(labels) if labels else 1.0 for labels in clip_labels
    ]
    total = sum(raw)
    return [w * len(raw) / total for w in raw]


def weighted_sampler(dataset: Any, seed: int):
    """A seeded ``WeightedRandomSampler`` over ``dataset.sample_weights`` (as many draws as examples), or
    None when the dataset has no weights. Trainers return it from ``_get_train_sampler``."""
    import torch

    weights = getattr(dataset, "sample_weights", None)
    if weights is None:
        return None
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.WeightedRandomSampler(weights, len(weights), generator=generator)


def label_balance_weights(records: Sequence[Any], power: float, label_task: str = "cla_label") -> list[float]:
    """(N,) sampling weights for records with ``task``, ``audio_path`` and ``output`` attributes: per task,
    ``clip_balance_weights`` of the records' clip labels."""
    labels = {r.audio_path: r.output.split(", ") for r in records if r.task == label_task}
    by_task: dict[str, list[int]] = {}
    for i, r in enumerate(records):
        by_task.setdefault(r.task, []).append(i)
    weights = [0.0] * len(records)
    for rows in by_task.values():
        clip_labels = [labels.get(records[i].audio_path, []) for i in rows]
        for i, w in zip(rows, clip_balance_weights(clip_labels, power), strict=True):
            weights[i] = w
    return weights


def task_weighted(weights: Sequence[float], records: Sequence[Any], factors: dict[str, float]) -> list[float]:
    """(N,) ``weights`` times ``factors[record.task]`` (1 for a task not named): a rare task such as the
    spoken language's questions drawn more often. Unknown task names are logged, not refused (a data file
    may simply lack them)."""
    present = {r.task for r in records}
    missing = sorted(set(factors) - present)
    if missing:
        logger.info("task_weights name tasks no record has: %s", ", ".join(missing))
    return [w * float(factors.get(r.task, 1.0)) for w, r in zip(weights, records, strict=True)]
