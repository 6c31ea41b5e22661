"""Slow, obviously-correct twins of the package's fast paths: the tests compare them on random inputs.

They share no code with what they check: loops in float64 that follow each recipe step by step.

- ``kaldi_fbank_reference``: the kaldi log-mel fbank (twin of ``sslalm.audio.FbankExtractor.log_mel``);
- ``cosine_similarity_reference``, ``micro_f1_reference``, ``average_precision_reference``,
  ``mean_average_precision_reference``: twins of the classification scores in ``sslalm.eval.classification``;
- ``cepstra_reference``: each frame's type-II DCT, by the formula (twin of
  ``sslalm.models.cepstral.dct_matrix``, which the cepstral statistics and the frame nets read).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

KALDI_LOG_FLOOR = float(np.finfo(np.float32).eps)  # kaldi's std::numeric_limits<float>::epsilon()


def kaldi_fbank_reference(
    waveform: np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    low_freq: float = 20.0,
    preemphasis: float = 0.97,
) -> np.ndarray:
    """Slow, obviously-correct twin of ``FbankExtractor.log_mel`` in float64: loops over frames and filters.

    Follows the kaldi recipe step by step (waveform mean removed first, as AST does) with no shared code.
    Returns (num_frames, num_mel_bins).
    """
    x = np.asarray(waveform, dtype=np.float64)
    x = x - x.mean()
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    if len(x) < size:
        x = np.concatenate([x, np.zeros(size - len(x))])
    n_fft = 1
    while n_fft < size:
        n_fft *= 2
    window = [0.5 - 0.5 * math.cos(2 * math.pi * i / (size - 1)) for i in range(size)]

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(low_freq), mel(sample_rate / 2)
    step = (hi - lo) / (num_mel_bins + 1)
    filters = np.zeros((num_mel_bins, n_fft // 2 + 1))
    for m in range(num_mel_bins):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        for k in range(n_fft // 2):  # the Nyquist bin gets no weight in kaldi
            f = mel(k * sample_rate / n_fft)
            if left < f <= centre:
                filters[m, k] = (f - left) / (centre - left)
            elif centre < f < right:
                filters[m, k] = (right - f) / (right - centre)
    out = []
    for t in range(1 + (len(x) - size) // shift):
        frame = x[t * shift : t * shift + size].copy()
        frame -= frame.mean()
        emphasised = [frame[i] - preemphasis * frame[max(i - 1, 0)] for i in range(size)]
        windowed = np.array(emphasised) * np.array(window)
        power = np.abs(np.fft.rfft(windowed, n=n_fft)) ** 2
        out.append([math.log(max(float(filters[m] @ power), KALDI_LOG_FLOOR)) for m in range(num_mel_bins)])
    return np.array(out).reshape(-1, num_mel_bins)


def cosine_similarity_reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Loop twin of :func:`cosine_similarity`."""
    out = np.zeros((len(a), len(b)))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            nx, ny = float(np.sqrt(np.dot(x, x))), float(np.sqrt(np.dot(y, y)))
            out[i, j] = 0.0 if nx == 0 or ny == 0 else float(np.dot(x, y)) / (nx * ny)
    return out


def micro_f1_reference(scores: np.ndarray, truth: np.ndarray) -> float:
    """Counting twin of :func:`micro_f1`."""
    tp = fp = fn = 0
    for s, t in zip(scores, truth, strict=True):
        top = int(np.argmax(s))
        for j in range(len(t)):
            predicted, true = j == top, bool(t[j])
            tp += int(predicted and true)
            fp += int(predicted and not true)
            fn += int(true and not predicted)
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def average_precision_reference(y_true: Sequence[int], y_score: Sequence[float]) -> float:
    """AP = sum over distinct thresholds (descending) of (recall gain) x precision, counted by hand."""
    y_true = [int(t) for t in y_true]
    n_pos = sum(y_true)
    ap, prev_recall = 0.0, 0.0
    for thr in sorted(set(float(s) for s in y_score), reverse=True):
        tp = sum(1 for t, s in zip(y_true, y_score, strict=True) if s >= thr and t)
        fp = sum(1 for t, s in zip(y_true, y_score, strict=True) if s >= thr and not t)
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / (tp + fp))
        prev_recall = recall
    return ap


def mean_average_precision_reference(scores: np.ndarray, truth: np.ndarray) -> float:
    """Loop twin of :func:`mean_average_precision`."""
    aps = [
        average_precision_reference(truth[:, c], scores[:, c])
        for c in range(truth.shape[1])
        if truth[:, c].any()
    ]
    return float(np.mean(aps)) if aps else float("nan")


def cepstra_reference(frames: np.ndarray, k: int) -> np.ndarray:
    """(T, F) log-mel frames -> (T, K) first K orthonormal type-II DCT coefficients of each frame."""
    f = frames.shape[1]
    n = np.arange(f)
    basis = np.stack([np.cos(np.pi / f * (n + 0.5) * j) for j in range(k)], 1) * np.sqrt(2 / f)
    basis[:, 0] /= np.sqrt(2)
    return frames @ basis
