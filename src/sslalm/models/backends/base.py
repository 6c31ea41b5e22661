"""The interface every language-model backend of an SSLALM implements (``LanguageModelBackend``).

A backend is a small stateless object that knows one kind of causal LM: how to build it (random, or from a
checkpoint folder), which modules LoRA adapts by default, how to write a randomly initialised base LM as a
checkpoint it can read back, how to switch gradient checkpointing, and how to decode:

* ``prefill(lm, input_ids | inputs_embeds)`` -> (next-token logits (B, V), cache) and
  ``step(lm, token (B,), cache)`` -> (logits (B, V), cache): the decode loop, used by the benchmarks and
  the demo's latency measurement;
* ``generate(lm, prompts, config)``: batched generation from per-example prompt embeddings (L_i, d) with a
  ``sslalm.generate.GenerationConfig``; every row returns what it would return alone.

The module the backend builds must behave like a transformers causal LM: ``get_input_embeddings()`` and
``forward(input_ids=None, inputs_embeds=None, attention_mask=None, labels=None)`` returning an output with
``logits`` (B, L, V) and, given labels, the shifted next-token ``loss`` (-100 ignored). ``lm`` passed to the
methods may be that module or its peft wrapper.

The defaults here are the slow, obviously correct twins: a plain PyTorch module saved as ``config.json``
(its ``lm_config``) + ``model.safetensors``, and decoding that re-runs the whole sequence at every step. A
backend with a cache (Mamba's state, transformers' KV cache) overrides them; the tests check that both give
the same tokens.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn as nn

Tensor = torch.Tensor


class LanguageModelBackend:
    """Base class of the backends in ``sslalm.models.backends.LM_BACKENDS``. See the module docstring.

    A backend for a plain PyTorch LM only sets ``name``, ``module_class`` (built as
    ``module_class(**lm_config)``) and ``lora_target_modules``.
    """

    #: the name under which the backend is registered (``SSLALMConfig.lm_type``)
    name: ClassVar[str] = ""
    #: module names LoRA adapts when ``SSLALMConfig.lora_target_modules`` is None
    lora_target_modules: ClassVar[tuple[str, ...]] = ()
    #: the module class the default ``build`` constructs from ``lm_config``
    module_class: ClassVar[type[nn.Module] | None] = None

    #: fields of ``lm_config`` that decide the LM's size: required in a saved ``config.json``
    required_config_fields: ClassVar[tuple[str, ...]] = ()

    def check_config(self, lm_config: dict[str, Any], require: bool = False) -> None:
        """Validate an ``lm_config`` mapping (keys, types, ranges) without building anything; raise
        ``sslalm.schema.ConfigError`` naming the field. ``require``: ``required_config_fields`` must be
        present. The default accepts any mapping ``build`` takes."""
        from sslalm.schema import check_keys

        if require:
            check_keys("", lm_config, list(lm_config), list(self.required_config_fields))

    def check_base_weights(self, base: nn.Module, source: str) -> None:
        """Refuse a loaded base LM holding NaN or infinity, naming the tensor and ``source``."""
        from sslalm.models.mamba_config import check_finite

        check_finite(dict(base.named_parameters()), source)

    # ------------------------------------------------------------------ building and saving
    def build(self, lm_config: dict[str, Any], checkpoint: str | None) -> nn.Module:
        """The base LM: loaded from ``checkpoint`` (a folder) if given, else random from ``lm_config``."""
        from safetensors.torch import load_model

        if self.module_class is None:
            raise NotImplementedError(f"{type(self).__name__} sets no module_class and overrides no build")
        if checkpoint is None:
            return self.module_class(**lm_config)
        config = json.loads((Path(checkpoint) / "config.json").read_text())
        model = self.module_class(**config)
        load_model(model, os.path.join(checkpoint, "model.safetensors"), strict=True)
        return model

    def save_base(
        self, base: nn.Module, state: dict[str, Tensor], path: Path, lm_config: dict[str, Any]
    ) -> None:
        """Write ``base`` with the weights ``state`` (LoRA-free names) as a folder ``build`` reads back.

        ``lm_config`` is the config it was built from (vocabulary size resolved).
        """
        from safetensors.torch import save_model

        path.mkdir(parents=True, exist_ok=True)
        with torch.device("meta"):
            clean = type(base)(**lm_config)
        clean.load_state_dict(state, strict=True, assign=True)
        save_model(clean, str(path / "model.safetensors"), metadata={"format": "pt"})
        (path / "config.json").write_text(json.dumps(lm_config, indent=2, sort_keys=True))

    def set_gradient_checkpointing(self, base: nn.Module, enabled: bool, kwargs: dict | None = None) -> None:
        """Recompute the LM's blocks in the backward pass, through its transformers-style methods if any."""
        if enabled and hasattr(base, "gradient_checkpointing_enable"):
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        elif not enabled and hasattr(base, "gradient_checkpointing_disable"):
            base.gradient_checkpointing_disable()

    # ------------------------------------------------------------------ decoding
    def prefill(
        self, lm: nn.Module, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None
    ) -> tuple[Tensor, Any]:
        """Read prompts (B, L) ids or (B, L, d) embeddings of equal length: next-token logits (B, V), cache.

        Default: the cache is the embedded sequence itself and every step re-runs it whole.
        """
        if inputs_embeds is None:
            inputs_embeds = lm.get_input_embeddings()(input_ids)
        return lm(inputs_embeds=inputs_embeds).logits[:, -1], inputs_embeds

    def step(self, lm: nn.Module, token: Tensor, cache: Any) -> tuple[Tensor, Any]:
        """Feed one token per sequence (B,) after ``cache``: logits (B, V) and the updated cache."""
        new = lm.get_input_embeddings()(token)[:, None].to(cache.dtype)  # (B, 1, d)
        cache = torch.cat([cache, new], dim=1)
        return lm(inputs_embeds=cache).logits[:, -1], cache

    def generate(self, lm: nn.Module, prompts: list[Tensor], config: Any) -> list[list[int]]:
        """Token ids (EOS stripped) answering each prompt (L_i, d), by ``sslalm.generate.generate`` over this
        backend's ``prefill``/``step``, one prompt at a time (no padding to get wrong)."""
        from sslalm.generate import generate

        stepper = _Stepper(self, lm)
        return [generate(stepper, inputs_embeds=p[None], config=config).tolist()[0] for p in prompts]


class _Stepper:
    """A backend's ``prefill``/``step`` in the calling convention of ``sslalm.generate.generate``."""

    def __init__(self, backend: LanguageModelBackend, lm: nn.Module):
        self.backend, self.lm = backend, lm

    def prefill(self, input_ids=None, inputs_embeds=None, lengths=None, state=None) -> tuple[Tensor, list]:
        if lengths is not None or state is not None:
            raise ValueError("the stepwise fallback takes one unpadded prompt and no initial state")
        logits, cache = self.backend.prefill(self.lm, input_ids=input_ids, inputs_embeds=inputs_embeds)
        return logits, [cache]

    def step(self, token: Tensor, state: list) -> Tensor:
        logits, state[0] = self.backend.step(self.lm, token, state[0])
        return logits
