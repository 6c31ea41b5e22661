"""A fact classifier on the fbank's 10 ms frames: the spoken language from the order of short sounds.

An optional part of the tag head (``SSLALMConfig.tag_fact_net``, ``sslalm.models.tagger``): one small net per
fact group (the spoken language) whose logits replace that group's head columns. Per clip: the type-II DCT
of every log-mel frame (its first ``num_cepstra`` coefficients), less their mean over the clip's sound
frames (cepstral mean normalisation: a fixed channel or equaliser shifts every frame's cepstra alike), the
frame-to-frame difference beside each, standardised per dimension (``fit``); then three 1-D convolutions
over time (kernel 5, dilations 1, 2, 4: each output sees 29 frames, about a syllable or two), the mean and
the maximum over the clip's sound frames, and a linear layer. Padding frames (constant over the mel bins, as
``FbankExtractor`` pads) are zeroed before every convolution and left out of both poolings.

Why: a spoken language shows in which short sounds follow which, and the encoder map is 32 times coarser
than the fbank in time. The clip-level cepstral statistics of ``sslalm.models.cepstral`` keep only
second-order statistics over a whole clip; on the demo corpus this net names the held-out splits' languages
more often than a regularised regression on those statistics (``docs/demo.md`` gives the numbers). Written
here because it is a few lines of torch: no library of the field ships a language classifier for a corpus's
own label set that trains in seconds on CPU.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn as nn

from sslalm.models.cepstral import cepstral_frames, dct_matrix

KERNEL, DILATIONS = 5, (1, 2, 4)


class FrameConvNet(nn.Module):
    """(B, T, 128) normalised log-mel fbank -> (B, V) logits of one fact's V values.

    Args:
        num_values: V, the fact's values (languages), in the order of the head's columns.
        width: channels of every convolution.
        num_cepstra: K; the net reads 2K numbers per frame (cepstra and their deltas).
        dropout: before the output layer, while training.
    """

    def __init__(
        self,
        num_values: int,
        width: int = 128,
        num_cepstra: int = 24,
        num_mel_bins: int = 128,
        dropout: float = 0.2,
    ):
        super().__init__()
        if num_values < 2 or width < 1:
            raise ValueError(f"a fact net needs two values or more and a width, got {num_values}, {width}")
        if not 1 <= num_cepstra <= num_mel_bins:
            raise ValueError(f"num_cepstra must lie in 1..{num_mel_bins}, got {num_cepstra}")
        self.num_cepstra, self.num_mel_bins = num_cepstra, num_mel_bins
        self.register_buffer("dct", dct_matrix(num_mel_bins, num_cepstra), persistent=False)  # (F, K)
        self.register_buffer("shift", torch.zeros(2 * num_cepstra))
        self.register_buffer("scale", torch.ones(2 * num_cepstra))
        sizes = [2 * num_cepstra] + [width] * len(DILATIONS)
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, KERNEL, padding=d * (KERNEL - 1) // 2, dilation=d)
            for a, b, d in zip(sizes[:-1], sizes[1:], DILATIONS, strict=True)
        )
        self.norms = nn.ModuleList(nn.BatchNorm1d(width) for _ in DILATIONS)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(2 * width, num_values)

    def raw_frames(
        self, fbank: torch.Tensor, warp: torch.Tensor | None = None, sound: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, F) fbank -> (B, T-1, 2K) mean-normalised cepstra and deltas (zero at padding), (B, T-1) mask
        of frames whose both ends are sound. Not standardised. For training: ``warp``, (B, F, F) per-clip
        linear maps of the mel axis (the cepstra of ``fbank @ warp``, ``sslalm.demo.fact_nets``), and
        ``sound``, the fbank's (B, T) ``sound_mask`` when already known."""
        dct = self.dct if warp is None else warp.float() @ self.dct  # (F, K) or (B, F, K)
        v, mask = cepstral_frames(fbank, dct, centre=True, sound=sound)
        return v * mask.unsqueeze(-1), mask

    def frames(
        self, fbank: torch.Tensor, warp: torch.Tensor | None = None, sound: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``raw_frames``, standardised with ``shift`` and ``scale`` (padding stays zero)."""
        v, mask = self.raw_frames(fbank, warp, sound)
        return (v - self.shift.float()) / self.scale.float() * mask.unsqueeze(-1), mask

    def classify(self, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, 2K) standardised frames, (B, T) mask -> (B, V) logits."""
        h, m = v.transpose(1, 2), mask.unsqueeze(1)  # (B, 2K, T), (B, 1, T)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(norm(conv(h * m)))  # (B, width, T)
        mean = (h * m).sum(dim=-1) / m.sum(dim=-1).clamp(min=1.0)
        peak = h.masked_fill(m == 0, float("-inf")).amax(dim=-1)
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))  # a clip with no sound frames
        return self.out(self.drop(torch.cat([mean, peak], dim=-1)))

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """(B, T, F) fbank -> (B, V) float32 logits, whatever the input's dtype; the frames are computed in
        float32 and the convolutions run in the net's own dtype (bfloat16 in a bfloat16 model)."""
        v, mask = self.frames(fbank.float())
        dtype = self.out.weight.dtype
        return self.classify(v.to(dtype), mask.to(dtype)).float()

    @torch.no_grad()
    def fit(self, fbanks: Iterable[torch.Tensor]) -> int:
        """Set ``shift`` and ``scale`` to the mean and standard deviation over the sound frames of ``fbanks``
        (an iterable of (B, T, F) batches); returns the number of frames read."""
        total = torch.zeros(2 * self.num_cepstra, dtype=torch.float64)
        square = torch.zeros_like(total)
        count = 0.0
        for fb in fbanks:
            v, mask = self.raw_frames(fb)
            v = v.double()
            total += v.sum(dim=(0, 1))
            square += v.pow(2).sum(dim=(0, 1))
            count += float(mask.sum())
        if count < 2:
            raise ValueError("fitting a fact net's frame standardisation needs at least two sound frames")
        mean = total / count
        self.shift.copy_(mean.float())
        self.scale.copy_((square / count - mean.pow(2)).clamp(min=1e-12).sqrt().float().clamp(min=1e-6))
        return int(count)
