"""Any transformers causal LM as an SSLALM language model (LLaMA for Hybrid-LALM and the LTU-style baseline).

Decoding uses transformers' KV cache: batched ``generate`` gets left-padded prompt embeddings with an
attention mask that hides the padding; the benchmark-style ``prefill``/``step`` pass the ``cache`` along.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.backends.base import LanguageModelBackend

Tensor = torch.Tensor


class HFBackend(LanguageModelBackend):
    """``lm_config``: a transformers config dict with ``model_type``; checkpoints: transformers folders."""

    name = "hf"
    lora_target_modules = ("q_proj", "v_proj")  # LTU's; Hybrid-LALM's preset names q_proj and k_proj
    required_config_fields = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")

    def check_config(self, lm_config: dict[str, Any], require: bool = False) -> None:
        """Keys and value types of the transformers config class its ``model_type`` names."""
        from sslalm.schema import check_hf_config, check_keys

        check_keys("", lm_config, list(lm_config), self.required_config_fields if require else ())
        check_hf_config("", lm_config, lm_config.get("model_type", "llama"), [])

    def build(self, lm_config: dict[str, Any], checkpoint: str | None) -> nn.Module:
        from transformers import AutoConfig, AutoModelForCausalLM

        if checkpoint is not None:
            return AutoModelForCausalLM.from_pretrained(checkpoint, local_files_only=True)
        return AutoModelForCausalLM.from_config(AutoConfig.for_model(**lm_config))

    def save_base(
        self, base: nn.Module, state: dict[str, Tensor], path: Path, lm_config: dict[str, Any]
    ) -> None:
        base.save_pretrained(str(path), state_dict=state)

    def prefill(
        self, lm: nn.Module, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        out = lm(input_ids=input_ids, inputs_embeds=inputs_embeds, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1], out.cache

    def step(self, lm: nn.Module, token: Tensor, cache: Any) -> tuple[Tensor, Any]:
        out = lm(input_ids=token[:, None], cache=cache, use_cache=True)
        return out.logits[:, -1], out.cache

    def generate(self, lm: nn.Module, prompts: list[Tensor], config: Any) -> list[list[int]]:
        if config.seed is not None:
            if not config.greedy and len(prompts) > 1:  # transformers samples from one global RNG: row by row
                return [self.generate(lm, [p], config)[0] for p in prompts]
            torch.manual_seed(config.seed)
        longest = max(p.shape[0] for p in prompts)
        embeds = prompts[0].new_zeros(len(prompts), longest, prompts[0].shape[1])  # (B, L, d)
        mask = torch.zeros(len(prompts), longest, dtype=torch.long, device=embeds.device)
        for i, p in enumerate(prompts):  # left padding: the attention mask hides it
            embeds[i, longest - p.shape[0] :] = p
            mask[i, longest - p.shape[0] :] = 1
        out = lm.generate(inputs_embeds=embeds, attention_mask=mask, **config.hf_kwargs())
        rows = []
        for row in out.tolist():
            if config.eos_token_id in row:
                row = row[: row.index(config.eos_token_id)]
            rows.append(row)
        return rows
