"""Audio projectors: encoder feature map -> a sequence of language-model input embeddings.

Two kinds, both producing tokens in **time-major** order (every frequency position of time step t before any
of time step t+1), which keeps the audio sequence causal in time for a recurrent language model:

* ``ConvProjector`` (the paper's): Conv2d(C -> C, kernel 3, stride 2, padding 1) on the (B, C, F, T) map,
  then Linear(C -> d_lm). DASS gives (B, 768, 4, 32) per 10.24 s, so this yields 2 x 16 = 32 tokens.
* ``PoolProjector`` (LTU's, for the AST/LTU-style baseline): mean over frequency, average-pool time by
  ``time_pool``, a non-affine LayerNorm, then Linear(C -> d_lm). It gives one token per ``time_pool``
  encoder time steps.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv_out_size(n: int, kernel: int = 3, stride: int = 2, padding: int = 1) -> int:
    """Output length of a strided convolution along one axis."""
    return (n + 2 * padding - kernel) // stride + 1


class ConvProjector(nn.Module):
    """Conv2d downsampling + time-major flattening + Linear to the LM width.

    Args:
        in_channels: encoder channels C (768 for DASS).
        out_features: language-model width d_lm.
        kernel_size, stride, padding: of the Conv2d (3, 2, 1 in the paper).
    """

    def __init__(
        self, in_channels: int, out_features: int, kernel_size: int = 3, stride: int = 2, padding: int = 1
    ):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding
        self.conv = nn.Conv2d(in_channels, in_channels, kernel_size, stride=stride, padding=padding)
        self.linear = nn.Linear(in_channels, out_features)

    def num_tokens(self, freq: int, time: int) -> int:
        """Number of audio tokens for an encoder map of size (freq, time)."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return conv_out_size(freq, k, s, p) * conv_out_size(time, k, s, p)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, F, T) encoder map -> (B, F' * T', d_lm) tokens, time-major."""
        x = self.conv(features)  # (B, C, F', T')
        x = x.permute(0, 3, 2, 1).flatten(1, 2)  # (B, T' * F', C): time-major
        return self.linear(x)


class PoolProjector(nn.Module):
    """LTU-style: frequency mean, time average-pool, non-affine LayerNorm, Linear.

    Args:
        in_channels: encoder channels C.
        out_features: language-model width d_lm.
        time_pool: encoder time steps per audio token.
    """

    def __init__(self, in_channels: int, out_features: int, time_pool: int = 2):
        super().__init__()
        self.time_pool = time_pool
        self.norm = nn.LayerNorm(in_channels, elementwise_affine=False)
        self.linear = nn.Linear(in_channels, out_features)

    def num_tokens(self, freq: int, time: int) -> int:
        return max(1, -(-time // self.time_pool))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, F, T) encoder map -> (B, ceil(T / time_pool), d_lm)."""
        x = features.mean(dim=2)  # (B, C, T)
        x = F.avg_pool1d(x, self.time_pool, self.time_pool, ceil_mode=True)  # (B, C, T')
        return self.linear(self.norm(x.transpose(1, 2)))


def build_projector(config: Any, in_channels: int, out_features: int) -> nn.Module:
    """The projector an ``SSLALMConfig`` names (``projector_type`` "conv" or "pool") between widths."""
    if config.projector_type == "conv":
        k, s, p = config.projector_kernel, config.projector_stride, config.projector_padding
        return ConvProjector(in_channels, out_features, k, s, p)
    if config.projector_type == "pool":
        return PoolProjector(in_channels, out_features, config.projector_time_pool)
    raise ValueError(f"unknown projector_type {config.projector_type!r} (use 'conv' or 'pool')")
