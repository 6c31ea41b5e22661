"""Baselines that a reader needs to judge the demo's accuracy, on the same clips and label set.

- uniform chance: one label drawn at random, 100 / (number of labels) %;
- the majority answer: always the label that is right on the most clips (a clip may have two labels,
  speech over noise; a guess is right when it is one of them, as in the classification protocol);
- a linear probe: scikit-learn's logistic regression on per-clip statistics of the same log-mel fbank the
  models read (mean, standard deviation and maximum over time of each of the 128 bins: 384 numbers),
  standardised, trained on the training split's single-label clips. It shows how separable the audio is
  without any sequence model: an audio language model that scores below it has lost what its input holds;
- the reference captions: each test clip's canonical caption (the answer the corpus teaches for the caption
  prompt) scored through the paper-prompt protocol. It is the ceiling of that protocol on this corpus: a
  model that captions every clip exactly right scores this, and a low value shows captions the protocol
  cannot read (LTU's scoring keeps only the text after a caption's last colon, for instance).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


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


def fbank_statistics(fbank: np.ndarray) -> np.ndarray:
    """(T, F) log-mel frames -> (3F,) mean, standard deviation and maximum over time."""
    return np.concatenate([fbank.mean(0), fbank.std(0), fbank.max(0)]).astype(np.float32)


def clip_features(paths: Sequence[str | Path]) -> np.ndarray:
    """(N, 384) fbank statistics of whole clips (the models' 128-bin Kaldi fbank, not cropped)."""
    import torch

    from sslalm.audio import FbankExtractor, load_audio

    extractor = FbankExtractor(target_length=None)
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one small FFT per clip: more threads only wait on each other
    try:
        for p in paths:
            fb = extractor(load_audio(str(p)))  # (T, 128)
            rows.append(fbank_statistics(fb.numpy()))
    finally:
        torch.set_num_threads(threads)
    return np.stack(rows)


def training_clips(train_records: list[dict], root: Path) -> list[tuple[str, str]]:
    """(audio path, label) of the training split's single-label clips, from its ``cla_label`` records."""
    seen, out = set(), []
    for r in train_records:
        if r["task"] != "cla_label" or ", " in r["output"] or r["audio_id"] in seen:
            continue
        seen.add(r["audio_id"])
        out.append((str(root / r["audio_id"]), r["output"]))
    return out


def fit_probe(train_x: np.ndarray, train_y: Sequence[str], seed: int = 0):
    """Standardised logistic regression on (N, D) features and their labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0, random_state=seed))
    with threadpool_limits(1):  # BLAS threads spin-wait on a busy machine; this problem is small
        clf.fit(train_x, list(train_y))
    return clf


def probe_accuracy(
    clf, test_x: np.ndarray, test_labels: Sequence[Sequence[str]], label_set: Sequence[str]
) -> float:
    """Accuracy (%) of a fitted probe, its guesses restricted to ``label_set``; a test clip counts as right
    when the guess is one of its labels."""
    allowed = np.array([c in set(label_set) for c in clf.classes_])
    proba = clf.predict_proba(test_x)  # (N, classes)
    proba[:, ~allowed] = -1.0
    guesses = clf.classes_[proba.argmax(1)]
    hits = [g in set(labels) for g, labels in zip(guesses, test_labels, strict=True)]
    return 100.0 * float(np.mean(hits)) if hits else 0.0


def linear_probe(
    corpus_dir: str | Path,
    train_records: list[dict],
    eval_sets: dict[str, tuple[Path, list[dict], list[str]]],
    seed: int = 0,
) -> dict[str, float]:
    """The probe's accuracy (%) on each evaluation set: name -> (root folder, ``*_cla.json`` entries, labels).

    Fitted once on the training split (about 10 CPU seconds for 2,400 clips).
    """
    root = Path(corpus_dir)
    clips = training_clips(train_records, root)
    clf = fit_probe(clip_features([p for p, _ in clips]), [y for _, y in clips], seed)
    out = {}
    for name, (set_root, entries, labels) in eval_sets.items():
        test_x = clip_features([Path(set_root) / e["audio_id"] for e in entries])
        out[name] = probe_accuracy(clf, test_x, [e["labels"] for e in entries], labels)
        logger.info("linear probe on %s: %.1f %%", name, out[name])
    return out


def reference_caption_accuracy(root: str | Path, split: str, labels: Sequence[str], embedder: Any) -> float:
    """Accuracy (%) of each clip's first reference caption as the paper-prompt answer (``split``'s clips of
    the local caption benchmark, scored as ``sslalm.eval.classification`` scores a model's captions)."""
    from sslalm.eval.classification import score_classification
    from sslalm.eval.local import load_local

    cla, cap = load_local(Path(root), split, kinds=("cla", "cap"))
    captions = {c.audio_id: c.references[0] for c in cap.clips if c.references}
    clips = [c for c in cla.clips if c.audio_id in captions]
    if not clips:
        return float("nan")
    score = score_classification(
        [captions[c.audio_id] for c in clips], [c.references for c in clips], labels, "acc", embedder
    )
    return score.accuracy
