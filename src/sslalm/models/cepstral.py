"""Cepstral statistics: the covariance of a clip's cepstra and their deltas, for the tag head.

An optional input of the tag head (``SSLALMConfig.tag_cepstra``, ``sslalm.models.tagger``), beside the
pooled encoder map. Per clip: the type-II DCT of every log-mel frame (its first ``num_cepstra``
coefficients), the frame-to-frame difference (delta) beside each, then the mean and the covariance over the
clip's frames of those ``2K`` numbers, standardised per dimension with statistics of the training clips
(``fit``). Padding frames (constant over the mel bins, as ``FbankExtractor`` pads) are left out, so a short
clip padded to the model's input length has the statistics of its own frames.

Why: these second-order statistics of short-time spectral change are the classic features of spoken
language recognition (the covariance is what a Gaussian back-end reads). The encoder map is 32 times
coarser than the fbank in time and its pooled mean and maximum carry little of it: on the demo corpus a
linear classifier on this vector names the test split's spoken language far more often than one on the
stage-0 encoder's pooled map (``docs/demo.md`` gives the numbers). Its cost is one small matrix product per
clip. Written here because no library of the field computes it on batched, padded torch tensors.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn as nn

PAD_STD = 1e-4  # a frame whose mel bins vary less than this is padding (or digital silence), not sound


def dct_matrix(num_bins: int, num_coeffs: int) -> torch.Tensor:
    """(F, K) orthonormal type-II DCT: ``frames @ dct_matrix(F, K)`` gives each frame's first K cepstra."""
    k = torch.arange(num_coeffs, dtype=torch.float64)[None, :]
    i = torch.arange(num_bins, dtype=torch.float64)[:, None]
    m = torch.cos(math.pi / num_bins * (i + 0.5) * k) * math.sqrt(2.0 / num_bins)
    m[:, 0] /= math.sqrt(2.0)
    return m.float()


def sound_mask(fbank: torch.Tensor) -> torch.Tensor:
    """(B, T, F) fbank -> (B, T): 1.0 for sound frames, 0.0 for padding (bins varying less than PAD_STD)."""
    return (fbank.float().std(dim=-1) > PAD_STD).float()


def cepstral_frames(
    fbank: torch.Tensor, dct: torch.Tensor, centre: bool = False, sound: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, F) fbank, (F, K) ``dct_matrix`` -> (B, T-1, 2K) each frame's cepstra and their deltas (the
    difference from the frame before), float32 whatever the input's dtype, and (B, T-1) 1.0 where both frames
    of a delta are sound, 0.0 where either is padding (``PAD_STD``). ``centre``: the cepstra less their mean
    over the clip's sound frames (cepstral mean normalisation; the deltas do not change). ``dct`` may also be
    (B, F, K), one map per clip (a warp of its mel axis before the DCT), and ``sound`` the (B, T)
    ``sound_mask`` when it is known. Shared by the clip statistics here and the frame nets of
    ``sslalm.models.frame_net``."""
    if fbank.dim() != 3 or fbank.shape[-1] != dct.shape[-2]:
        raise ValueError(f"expected a (batch, frames, {dct.shape[-2]}) fbank, got {tuple(fbank.shape)}")
    x = fbank.float()
    sound = sound_mask(x) if sound is None else sound.float()  # (B, T)
    c = x @ dct.float()  # (B, T, K); float32 even in a half-precision model
    if centre:
        s = sound.unsqueeze(-1)
        c = c - (c * s).sum(dim=1, keepdim=True) / s.sum(dim=1, keepdim=True).clamp(min=1.0)
    v = torch.cat([c[:, 1:], c[:, 1:] - c[:, :-1]], dim=-1)  # (B, T-1, 2K)
    return v, sound[:, 1:] * sound[:, :-1]


class CepstralStatistics(nn.Module):
    """(B, T, F) normalised log-mel fbank -> (B, D) standardised mean and covariance of [cepstra, deltas].

    ``D = 2K + 2K (2K + 1) / 2`` for ``K = num_cepstra`` (1224 for 24). ``shift`` and ``scale`` (saved with
    the head) standardise each dimension; ``fit`` sets them from training clips.
    """

    def __init__(self, num_cepstra: int = 24, num_mel_bins: int = 128):
        super().__init__()
        if not 1 <= num_cepstra <= num_mel_bins:
            raise ValueError(f"num_cepstra must lie in 1..{num_mel_bins}, got {num_cepstra}")
        self.num_cepstra, self.num_mel_bins = num_cepstra, num_mel_bins
        self.register_buffer("dct", dct_matrix(num_mel_bins, num_cepstra), persistent=False)  # (F, K)
        width = 2 * num_cepstra
        rows, cols = torch.triu_indices(width, width)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("shift", torch.zeros(self.dim))
        self.register_buffer("scale", torch.ones(self.dim))

    @property
    def dim(self) -> int:
        width = 2 * self.num_cepstra
        return width + width * (width + 1) // 2

    def raw(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, D) statistics before standardisation (float32, whatever the input's dtype)."""
        v, both = cepstral_frames(fbank, self.dct)  # (B, T-1, 2K), (B, T-1)
        w = both.unsqueeze(-1)  # (B, T-1, 1)
        n = w.sum(dim=1, keepdim=True).clamp(min=1.0)  # (B, 1, 1)
        mean = (w * v).sum(dim=1, keepdim=True) / n  # (B, 1, 2K)
        z = (v - mean) * w
        cov = z.transpose(1, 2) @ z / n  # (B, 2K, 2K)
        return torch.cat([mean[:, 0], cov[:, self.rows, self.cols]], dim=-1)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, F) -> (B, D) standardised statistics."""
        return (self.raw(fbank) - self.shift.float()) / self.scale.float()

    @torch.no_grad()
    def fit(self, fbanks: Iterable[torch.Tensor]) -> int:
        """Set ``shift`` and ``scale`` to the mean and standard deviation of the statistics of ``fbanks``
        (an iterable of (B, T, F) batches); returns the number of clips read."""
        rows = torch.cat([self.raw(fb) for fb in fbanks])
        if rows.shape[0] < 2:
            raise ValueError("fitting the cepstral statistics needs at least two clips")
        self.shift.copy_(rows.mean(dim=0))
        self.scale.copy_(rows.std(dim=0).clamp(min=1e-6))
        return rows.shape[0]
