"""Our Mamba LM (``sslalm.models.mamba``) as an SSLALM language model: the paper's ssLALM.

Decoding runs on the constant-size recurrent state: ``MambaLM.prefill`` reads the prompts (right-padded,
with per-row lengths: a recurrent LM has no attention mask, so pads after a prompt never reach its state)
and ``MambaLM.step`` updates the state in place, through ``sslalm.generate.generate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.backends.base import LanguageModelBackend

Tensor = torch.Tensor


class MambaBackend(LanguageModelBackend):
    """``lm_config`` is a ``MambaConfig`` dict; checkpoints are Mamba-1 folders (state-spaces or ``-hf``)."""

    name = "mamba"
    lora_target_modules = ("in_proj",)
    required_config_fields = ("d_model", "n_layer", "vocab_size")

    def check_config(self, lm_config: dict[str, Any], require: bool = False) -> None:
        """Our field names or transformers' Mamba names, strictly (``MambaConfig.check_dict``)."""
        from sslalm.models.mamba_config import MambaConfig

        MambaConfig.check_dict(lm_config, required=self.required_config_fields if require else ())

    def check_base_weights(self, base: nn.Module, source: str) -> None:
        """Nothing to do: ``MambaLM.from_pretrained`` already refuses non-finite tensors, by name."""

    def build(self, lm_config: dict[str, Any], checkpoint: str | None) -> nn.Module:
        from sslalm.models.mamba import MambaConfig, MambaLM

        if checkpoint is not None:
            return MambaLM.from_pretrained(checkpoint)
        return MambaLM(MambaConfig.from_dict(lm_config))

    def save_base(
        self, base: nn.Module, state: dict[str, Tensor], path: Path, lm_config: dict[str, Any]
    ) -> None:
        from sslalm.models.mamba import MambaLM

        with torch.device("meta"):
            clean = MambaLM(base.config)
        clean.load_state_dict(state, strict=True, assign=True)
        clean.tie_weights()
        clean.save_pretrained(path)

    def prefill(
        self, lm: nn.Module, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        return lm.prefill(input_ids=input_ids, inputs_embeds=inputs_embeds)

    def step(self, lm: nn.Module, token: Tensor, cache: Any) -> tuple[Tensor, Any]:
        return lm.step(token, state=cache), cache  # the state is updated in place

    def generate(self, lm: nn.Module, prompts: list[Tensor], config: Any) -> list[list[int]]:
        from sslalm.generate import generate

        embeds = nn.utils.rnn.pad_sequence(prompts, batch_first=True)  # right-padded (B, L, d)
        lengths = torch.tensor([p.shape[0] for p in prompts])
        return generate(lm, inputs_embeds=embeds, lengths=lengths, config=config).tolist()
