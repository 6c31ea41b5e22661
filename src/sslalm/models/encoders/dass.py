"""DASS (``sslalm.models.dass``) as an SSLALM audio encoder: the paper's state-space encoder.

``DASSEncoder`` *is* a ``DASSModel`` (same parameter names, so saved models and DASS checkpoints load
unchanged) without the AudioSet head: the LALM reads the map before pooling. A 1024-frame clip gives a
(B, 768, 4, 32) map for the small and medium sizes.
"""

from __future__ import annotations

import logging
from typing import Any

import torch.nn as nn

from sslalm.models.dass import DASSConfig, DASSModel
from sslalm.models.encoders.base import AudioEncoder

logger = logging.getLogger(__name__)


class DASSEncoder(DASSModel, AudioEncoder):
    """DASS feature maps for the LALM; ``encoder_config`` is a ``DASSConfig`` dict."""

    name = "dass"

    def __init__(self, config: DASSConfig):
        super().__init__(config)
        self.classifier.head = nn.Identity()  # the AudioSet head is unused (and not saved)

    required_config_fields = ("depths", "dims")

    @classmethod
    def check_config(cls, config: dict[str, Any], require: bool = False) -> None:
        """Unknown keys, missing size fields and every value, through ``DASSConfig``'s own checks."""
        import dataclasses

        from sslalm.schema import check_keys

        names = [f.name for f in dataclasses.fields(DASSConfig)] + ["model_type"]
        check_keys("", config, names, list(cls.required_config_fields) if require else [])
        DASSConfig.from_dict(config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DASSEncoder:
        return cls(DASSConfig.from_dict(config))

    def feature_map_size(self, frames: int) -> tuple[int, int]:
        return self.output_size(self.config.num_mel_bins), self.output_size(frames)

    def load_checkpoint(self, path: str) -> None:
        """An original DASS release or the Hugging Face port (file or folder); the head is dropped."""
        loaded = DASSModel.from_checkpoint(path, strict=False)
        state = {k: v for k, v in loaded.state_dict().items() if not k.startswith("classifier.head")}
        self.load_state_dict(state, strict=True)
