"""The interface every audio encoder of an SSLALM implements (``AudioEncoder``).

An encoder is an ``nn.Module`` that turns a normalised fbank into a feature map the projector reads:

    forward_features(fbank (B, T, 128)) -> (B, C, F', T')        C = hidden_size, time-major tokens follow

and says, without running, how large that map is for ``frames`` input frames (``feature_map_size``), so the
model can count audio tokens. Its weights are the module's own (``state_dict`` keys are what
``SSLALM.save_pretrained`` stores under ``encoder.``); ``load_checkpoint`` reads a pretrained checkpoint in
the encoder's native format and ``save_checkpoint`` writes one that ``load_checkpoint`` reads back.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import torch
import torch.nn as nn

Tensor = torch.Tensor


class AudioEncoder(nn.Module):
    """Base class of the encoders in ``sslalm.models.encoders.ENCODERS``.

    Subclasses implement ``from_config``, ``forward_features``, ``feature_map_size`` and ``hidden_size``;
    the checkpoint and gradient-checkpointing methods have working defaults (a safetensors file of the
    module's ``state_dict``; a ``gradient_checkpointing`` flag the subclass's forward reads).
    """

    #: the name under which the encoder is registered (``SSLALMConfig.encoder_type``)
    name: ClassVar[str] = ""

    #: fields of ``encoder_config`` that decide the encoder's size: required in a saved ``config.json``
    required_config_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def check_config(cls, config: dict[str, Any], require: bool = False) -> None:
        """Validate an ``encoder_config`` mapping (keys, types, ranges) without building anything; raise
        ``sslalm.schema.ConfigError`` naming the field. ``require``: ``required_config_fields`` must be
        present. The default accepts any mapping that ``from_config`` takes."""
        from sslalm.schema import check_keys

        if require:
            check_keys("", config, list(config), list(cls.required_config_fields))

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> AudioEncoder:
        """A randomly initialised encoder from ``SSLALMConfig.encoder_config``."""
        raise NotImplementedError

    @property
    def hidden_size(self) -> int:
        """Channels C of the feature map (the projector's input width)."""
        raise NotImplementedError

    def forward_features(self, fbank: Tensor) -> Tensor:
        """(B, T, 128) normalised fbank -> (B, C, F', T') feature map (channel, frequency, time)."""
        raise NotImplementedError

    def feature_map_size(self, frames: int) -> tuple[int, int]:
        """(F', T') of ``forward_features`` for an input of ``frames`` frames."""
        raise NotImplementedError

    def load_checkpoint(self, path: str) -> None:
        """Replace the weights with a pretrained checkpoint's (default: ``model.safetensors`` in ``path``)."""
        from safetensors.torch import load_file

        file = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
        self.load_state_dict(load_file(file), strict=True)

    def save_checkpoint(self, path: str | os.PathLike) -> str:
        """Write the weights where ``load_checkpoint`` reads them (``path/model.safetensors``); -> path."""
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
        return os.fspath(path)

    def set_gradient_checkpointing(self, enabled: bool, kwargs: dict | None = None) -> None:
        """Recompute blocks in the backward pass (less activation memory) or not."""
        self.gradient_checkpointing = enabled
