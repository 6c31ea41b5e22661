"""Cepstral statistics of the tag head (sslalm.models.cepstral) against a plain numpy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracles import cepstra_reference
from sslalm.models.cepstral import CepstralStatistics, dct_matrix

PAD = 0.467  # FbankExtractor's padding frame: zeros before normalisation, the same value in every bin


def _numpy_statistics(frames: np.ndarray, k: int) -> np.ndarray:
    """(T, F) frames of sound only -> mean and upper-triangle covariance of [cepstra, deltas], by the book."""
    c = cepstra_reference(frames, k)
    v = np.concatenate([c[1:], np.diff(c, axis=0)], 1)
    cov = np.cov(v.T, bias=True)
    return np.concatenate([v.mean(0), cov[np.triu_indices(2 * k)]])


def test_statistics_match_numpy_and_ignore_padding():
    torch.manual_seed(0)
    stats = CepstralStatistics(num_cepstra=5, num_mel_bins=16)
    assert stats.dim == 10 + 55
    clip = torch.randn(37, 16)
    short = torch.cat([clip, torch.full((27, 16), PAD)])  # padded to 64 frames
    longer = torch.cat([clip, torch.full((91, 16), PAD)])  # padded to 128
    expected = _numpy_statistics(clip.double().numpy(), 5)
    out = stats.raw(short[None])[0]
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.raw(longer[None])[0], out, rtol=1e-4, atol=1e-5)
    batch = torch.stack([short, torch.randn(64, 16)])  # a batch computes each clip alone
    torch.testing.assert_close(stats.raw(batch)[0], out, rtol=1e-4, atol=1e-5)
    silent = torch.full((1, 64, 16), PAD)  # nothing but padding: finite zeros, not NaN
    assert torch.equal(stats.raw(silent), torch.zeros(1, stats.dim))


def test_dct_matrix_is_orthonormal():
    d = dct_matrix(12, 12)
    torch.testing.assert_close(d.T @ d, torch.eye(12), atol=1e-5, rtol=0)
    assert dct_matrix(128, 24).shape == (128, 24)


def test_fit_standardises_the_statistics_of_its_clips():
    torch.manual_seed(1)
    stats = CepstralStatistics(num_cepstra=3, num_mel_bins=8)
    clips = torch.randn(40, 20, 8) * torch.linspace(0.5, 3, 8) + torch.linspace(-2, 2, 8)
    assert stats.fit([clips[:25], clips[25:]]) == 40
    z = stats(clips)
    torch.testing.assert_close(z.mean(0), torch.zeros(stats.dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(stats.dim), atol=1e-4, rtol=0)
    assert set(stats.state_dict()) == {"shift", "scale"}  # the DCT is rebuilt, not saved
    with pytest.raises(ValueError, match="two clips"):
        stats.fit([clips[:1]])
    with pytest.raises(ValueError, match="fbank"):
        stats(torch.randn(2, 20, 9))
    with pytest.raises(ValueError, match="num_cepstra"):
        CepstralStatistics(num_cepstra=0)


def test_a_half_precision_copy_reads_in_float32():
    torch.manual_seed(2)
    stats = CepstralStatistics(num_cepstra=4, num_mel_bins=16)
    clips = torch.randn(6, 30, 16)
    stats.fit([clips])
    half = CepstralStatistics(num_cepstra=4, num_mel_bins=16)
    half.load_state_dict(stats.state_dict())
    half = half.to(torch.bfloat16)
    out = half(clips.to(torch.bfloat16))
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, stats(clips), atol=0.1, rtol=0.05)
