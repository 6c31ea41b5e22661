"""Classification by captioning, scored as in LTU and the paper (``docs/ltu.md``, ``docs/paper.md``).

The model answers every clip with free text. Each answer and each label is embedded as
``"sound of " + text.lower()``; the cosine similarities of an answer to all labels form that clip's score
vector. Then:

- accuracy (ESC-50, VocalSound, TUT2017, Beijing Opera, VGGSound): the top-scoring label is right when it is
  one of the clip's labels;
- micro-F1 (DCASE2017 task 4): the one-hot top label against the multi-hot truth (``sklearn f1_score``,
  ``average="micro"``); on single-label rows it equals accuracy;
- mAP (FSD50K, AudioSet): mean over classes of ``sklearn average_precision_score`` of the similarity column
  against the truth column. Classes with no positive clip are left out (AP is undefined there); the full
  AudioSet and FSD50K evaluation sets have positives for every class.

All values are returned in percent. The matrix code has slow, loop-based twins (``*_reference`` in the test
suite's ``tests/oracles.py``) that the tests compare on random inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from sslalm.eval.embedders import LabelEmbeddingCache, TextEmbedder

logger = logging.getLogger(__name__)

METRICS = ("acc", "mi-f1", "map")


def clean_prediction(text: str) -> str:
    """The answer text LTU scores: the part after the last ``:`` (drops ``Label:`` / ``Audio caption:``
    prefixes), without double quotes, surrounding single quotes, spaces and a final full stop."""
    text = text.rsplit(":", 1)[-1] if ":" in text else text
    return text.replace('"', "").strip().rstrip(".").strip().strip("'").strip()


def label_sentence(text: str) -> str:
    """The string that gets embedded for a label or an answer."""
    return "sound of " + text.lower()


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, D) x (C, D) -> (N, C) cosine similarities; a zero row gives zeros."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    an = np.linalg.norm(a, axis=1, keepdims=True)  # (N, 1)
    bn = np.linalg.norm(b, axis=1, keepdims=True)  # (C, 1)
    a = a / np.where(an == 0, 1.0, an)
    b = b / np.where(bn == 0, 1.0, bn)
    return a @ b.T  # (N, C)


def truth_matrix(references: Sequence[Sequence[str]], labels: Sequence[str]) -> np.ndarray:
    """Multi-hot (N, C) truth from each clip's label names. A name outside ``labels`` is an error."""
    pos = {lab: j for j, lab in enumerate(labels)}
    out = np.zeros((len(references), len(labels)), dtype=np.int64)
    for i, refs in enumerate(references):
        for r in refs:
            if r not in pos:
                raise ValueError(f"reference label {r!r} is not in the label set")
            out[i, pos[r]] = 1
    return out


def accuracy(scores: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of rows whose top-scoring class is a true class (ties: the first class wins)."""
    top = np.argmax(scores, axis=1)
    return float(truth[np.arange(len(truth)), top].mean()) if len(truth) else float("nan")


def micro_f1(scores: np.ndarray, truth: np.ndarray) -> float:
    """Micro-F1 of the one-hot top class against the multi-hot truth (sklearn)."""
    from sklearn.metrics import f1_score

    pred = np.zeros_like(truth)
    pred[np.arange(len(truth)), np.argmax(scores, axis=1)] = 1
    return float(f1_score(truth, pred, average="micro", zero_division=0))


def mean_average_precision(scores: np.ndarray, truth: np.ndarray) -> float:
    """Mean over classes with at least one positive of sklearn's ``average_precision_score``."""
    from sklearn.metrics import average_precision_score

    cols = np.flatnonzero(truth.sum(axis=0) > 0)
    if len(cols) == 0:
        return float("nan")
    return float(np.mean([average_precision_score(truth[:, c], scores[:, c]) for c in cols]))


_METRIC_FNS = {"acc": accuracy, "mi-f1": micro_f1, "map": mean_average_precision}


@dataclass
class ClassificationScore:
    """Scores in percent; ``value`` is the benchmark's own metric (``metric``)."""

    metric: str
    value: float
    n: int
    accuracy: float
    micro_f1: float
    map: float
    top_labels: list[str] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "value": self.value,
            "n": self.n,
            "accuracy": self.accuracy,
            "micro_f1": self.micro_f1,
            "map": self.map,
        }


def similarity_scores(
    predictions: Sequence[str],
    labels: Sequence[str],
    embedder: TextEmbedder,
    label_cache: LabelEmbeddingCache | None = None,
) -> np.ndarray:
    """(N, C) cosine similarities between each cleaned answer and each label, both as ``"sound of ..."``."""
    cache = label_cache if label_cache is not None else LabelEmbeddingCache(embedder)
    lab = cache.encode_labels([label_sentence(x) for x in labels])  # (C, D)
    texts = [label_sentence(clean_prediction(p)) for p in predictions]
    unique = list(dict.fromkeys(texts))
    emb = np.asarray(embedder.encode(unique)) if unique else np.zeros((0, lab.shape[1]))  # (U, D)
    row = {t: i for i, t in enumerate(unique)}
    return cosine_similarity(emb, lab)[[row[t] for t in texts]] if texts else np.zeros((0, len(labels)))


def score_classification(
    predictions: Sequence[str],
    references: Sequence[Sequence[str]],
    labels: Sequence[str],
    metric: str,
    embedder: TextEmbedder,
    label_cache: LabelEmbeddingCache | None = None,
) -> ClassificationScore:
    """Score free-text answers against a label set with ``metric`` in ``acc`` | ``mi-f1`` | ``map``."""
    if metric not in _METRIC_FNS:
        raise ValueError(f"unknown classification metric {metric!r}; choose from {METRICS}")
    truth = truth_matrix(references, labels)  # (N, C)
    scores = similarity_scores(predictions, labels, embedder, label_cache)  # (N, C)
    if len(truth) == 0:
        nan = float("nan")
        return ClassificationScore(metric, nan, 0, nan, nan, nan)
    acc, mf1, mAP = accuracy(scores, truth), micro_f1(scores, truth), mean_average_precision(scores, truth)
    value = {"acc": acc, "mi-f1": mf1, "map": mAP}[metric]
    top = [labels[j] for j in np.argmax(scores, axis=1)]
    return ClassificationScore(metric, 100 * value, len(truth), 100 * acc, 100 * mf1, 100 * mAP, top)
