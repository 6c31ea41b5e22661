"""transformers' Audio Spectrogram Transformer as an SSLALM audio encoder (the LTU-style baseline's encoder).

``encoder_config`` is an ``ASTConfig`` dict; checkpoints are transformers ``ASTModel`` folders.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.encoders.base import AudioEncoder

Tensor = torch.Tensor


class ASTEncoder(AudioEncoder):
    """transformers' AST as a feature-map encoder: (B, T, 128) fbank -> (B, C, f, t) patch map.

    AST's positional embedding fixes its input to ``max_length`` frames, so longer inputs are cut into
    windows of that size (the last one padded), encoded separately and joined along time.
    """

    name = "ast"

    @classmethod
    def check_config(cls, config: dict[str, Any], require: bool = False) -> None:
        """Keys and value types of transformers' ``ASTConfig``."""
        from sslalm.schema import check_hf_config

        check_hf_config("", config, "audio-spectrogram-transformer", [])

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from transformers import ASTConfig, ASTModel

        self.config = ASTConfig(**config)
        self.model = ASTModel(self.config)
        c = self.config
        self.freq_patches = (c.num_mel_bins - c.patch_size) // c.frequency_stride + 1
        self.time_patches = (c.max_length - c.patch_size) // c.time_stride + 1

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ASTEncoder:
        return cls(config)

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def feature_map_size(self, frames: int) -> tuple[int, int]:
        windows = max(1, math.ceil(frames / self.config.max_length))
        return self.freq_patches, windows * self.time_patches

    def load_checkpoint(self, path: str) -> None:
        """A transformers ``ASTModel`` folder (its config replaces ours)."""
        from transformers import ASTModel

        self.model = ASTModel.from_pretrained(path, local_files_only=True)

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        self.model.save_pretrained(os.fspath(path))
        return os.fspath(path)

    def set_gradient_checkpointing(self, enabled: bool, kwargs: dict | None = None) -> None:
        if enabled:
            self.model.gradient_checkpointing_enable(kwargs)
        else:
            self.model.gradient_checkpointing_disable()

    def forward_features(self, fbank: Tensor) -> Tensor:
        batch, frames, _ = fbank.shape
        window = self.config.max_length
        n = max(1, math.ceil(frames / window))
        if frames < n * window:
            fbank = nn.functional.pad(fbank, (0, 0, 0, n * window - frames))
        x = fbank.reshape(batch * n, window, -1)  # (B * n, window, 128)
        h = self.model(x).last_hidden_state[:, 2:]  # drop the cls and distillation tokens
        h = h.reshape(batch, n, self.freq_patches, self.time_patches, -1)  # freq-major patches
        return h.permute(0, 4, 2, 1, 3).reshape(batch, h.shape[-1], self.freq_patches, -1)  # (B, C, f, n*t)
