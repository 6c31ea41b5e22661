"""Text generation for the Mamba LM with a constant-size recurrent state.

A prompt batch (token ids or embeddings, e.g. audio tokens followed by the question, right-padded with
per-sequence lengths) is read in one ``prefill`` call that returns each sequence's state at its own last real
token. Decoding then feeds one token per sequence through ``step``, which updates that state in place: the
memory per sequence never grows, unlike a transformer's KV cache. Rows never interact, so a batch returns
exactly what one-by-one generation returns (up to floating-point summation order in the matrix products);
with a seed, every sequence draws from its own generator seeded alike, so seeded sampling batches too.

Sampling follows the paper (temperature 0.1, top-k 500, top-p 0.95, repetition penalty 1.1; LTU's 400 new
tokens). Temperature, top-k and top-p are transformers' own logits warpers; the repetition penalty is applied
with a per-sequence "seen" mask of constant size (the same rule as transformers'
``RepetitionPenaltyLogitsProcessor``, which the tests check against). Each sequence stops at its EOS; a
seed makes sampling reproducible. On CUDA the decode step is captured once as a CUDA graph (default).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

logger = logging.getLogger(__name__)
Tensor = torch.Tensor


@dataclass
class GenerationConfig:
    """Decoding settings; defaults are the paper's (temperature 0.1, top-k 500, top-p 0.95, penalty 1.1)."""

    max_new_tokens: int = 400
    temperature: float = 0.1
    top_k: int = 500
    top_p: float = 0.95
    repetition_penalty: float = 1.1
    do_sample: bool = True  # False (or temperature 0) = greedy
    eos_token_id: int | None = 0
    pad_token_id: int | None = None  # fills positions after EOS; defaults to eos_token_id (or 0)
    seed: int | None = None

    def __post_init__(self) -> None:
        """Validate through ``sslalm.generation_settings`` (the one table every entry point uses): a bad
        value raises ``GenerationSettingsError`` naming it; a temperature under ``GREEDY_BELOW`` is greedy."""
        from sslalm.generation_settings import GENERATION_FIELDS, GenerationSettingsError, validate_generation

        given = {name: getattr(self, name) for name in GENERATION_FIELDS if hasattr(self, name)}
        for name, value in validate_generation(given).items():
            setattr(self, name, value)
        for name in ("eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise GenerationSettingsError(
                    name, f"{name} must be a token id (an integer >= 0), got {value!r}"
                )

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature <= 0

    def hf_kwargs(self) -> dict[str, Any]:
        """The same settings as keyword arguments for transformers' ``generate`` (for non-Mamba LMs)."""
        kw = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": not self.greedy,
            "repetition_penalty": self.repetition_penalty,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_id,
        }
        if not self.greedy:
            kw.update(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)
        return kw

    @property
    def pad_id(self) -> int:
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id if self.eos_token_id is not None else 0


@dataclass
class GenerationOutput:
    """``sequences`` (B, T): new tokens, EOS included, pad after it; ``lengths`` (B,): tokens up to EOS."""

    sequences: Tensor
    lengths: Tensor
    eos_token_id: int | None = None

    def tolist(self, strip_eos: bool = True) -> list[list[int]]:
        """Per-sequence token lists, without the final EOS when ``strip_eos``."""
        out = []
        for row, n in zip(self.sequences.tolist(), self.lengths.tolist(), strict=True):
            row = row[:n]
            if strip_eos and row and row[-1] == self.eos_token_id:
                row = row[:-1]
            out.append(row)
        return out


def apply_repetition_penalty(scores: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty: a seen token's logit is divided by ``penalty`` if positive, multiplied if negative.

    scores (B, V) fp32; seen (B, V) bool. Constant memory however long the history.
    """
    if penalty == 1.0:
        return scores
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


class Sampler:
    """Next-token logits → tokens: repetition penalty, then greedy or temperature/top-k/top-p sampling."""

    def __init__(self, config: GenerationConfig, vocab_size: int, device: torch.device | str, batch: int = 1):
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.config = config
        self.warpers = LogitsProcessorList()
        if not config.greedy:
            if config.temperature != 1.0:
                self.warpers.append(TemperatureLogitsWarper(config.temperature))
            if config.top_k and config.top_k < vocab_size:
                self.warpers.append(TopKLogitsWarper(config.top_k))
            if config.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(config.top_p))
        # one generator per sequence, each seeded alike: a seeded batch samples exactly what each of its
        # sequences samples alone
        self.generators = None
        if config.seed is not None:
            self.generators = [torch.Generator(device=device).manual_seed(config.seed) for _ in range(batch)]

    def __call__(self, logits: Tensor, seen: Tensor) -> Tensor:
        """logits (B, V), seen (B, V) bool → tokens (B,)."""
        scores = apply_repetition_penalty(logits.float(), seen, self.config.repetition_penalty)
        if self.config.greedy:
            return scores.argmax(-1)
        scores = self.warpers(None, scores)
        probs = torch.softmax(scores, dim=-1)
        if self.generators is None:
            return torch.multinomial(probs, 1)[:, 0]
        rows = [torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(self.generators)]
        return torch.cat(rows)[:, 0]


class StaticStep:
    """``model.step`` on fixed buffers: the token ids are copied into ``self.ids``, the step updates ``state``
    in place and leaves the logits in ``self.logits``. This is exactly the work ``CUDAGraphStep`` captures;
    run eagerly it is the graph's twin, so a CPU exercises everything but the capture itself.
    """

    def __init__(self, model: Any, state: Any, batch: int, device: torch.device | str | None = None):
        self.model, self.state = model, state
        device = state.ssm.device if device is None else device
        self.ids = torch.zeros(batch, dtype=torch.long, device=device)
        self.logits: Tensor | None = None

    def run(self) -> Tensor:
        """One step from ``self.ids`` (the captured function)."""
        self.logits = self.model.step(self.ids, state=self.state)
        return self.logits

    def __call__(self, ids: Tensor) -> Tensor:
        self.ids.copy_(ids)
        return self.run()


class CUDAGraphStep(StaticStep):
    """:class:`StaticStep` captured once as a CUDA graph for a fixed batch and state (no launch overhead).

    The state tensors are the graph's static buffers: they keep being updated in place at every replay.
    """

    def __init__(self, model: Any, state: Any, batch: int):
        super().__init__(model, state, batch)
        device = state.ssm.device
        saved = state.clone()
        stream = torch.cuda.Stream(device=device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (allocator, lazy init, kernel compilation)
                self.run()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.run()
        state.copy_(saved)  # undo the warm-up and capture steps

    def __call__(self, ids: Tensor) -> Tensor:
        self.ids.copy_(ids)
        self.graph.replay()
        return self.logits


def make_decode_step(
    model: Any,
    state: Any,
    batch: int,
    cuda_graph: bool | None = None,
    device: torch.device | str | None = None,
) -> StaticStep:
    """The decode step ``generate`` uses: a captured CUDA graph on CUDA (``cuda_graph`` None or True), else
    the same step run eagerly. ``device``: where the token ids live (default: the state's)."""
    ssm = getattr(state, "ssm", None)  # a MambaState; other steppers (the backends' fallback) run eagerly
    on_cuda = isinstance(ssm, torch.Tensor) and ssm.device.type == "cuda"
    if cuda_graph and not on_cuda:
        raise ValueError("cuda_graph=True needs the model and state on a CUDA device")
    if on_cuda and cuda_graph is not False:
        return CUDAGraphStep(model, state, batch)
    return StaticStep(model, state, batch, device)


@torch.inference_mode()
def generate(
    model: Any,
    input_ids: Tensor | None = None,
    inputs_embeds: Tensor | None = None,
    lengths: Tensor | list[int] | None = None,
    config: GenerationConfig | None = None,
    state: Any = None,
    cuda_graph: bool | None = None,
    **overrides: Any,
) -> GenerationOutput:
    """Generate continuations of a batch of prompts with a Mamba LM (``MambaLM`` or a peft wrapper of it).

    Args:
        input_ids: (B, L) prompt ids, right-padded; or inputs_embeds: (B, L, d_model) prompt embeddings.
        lengths: (B,) real prompt lengths (all L if None).
        config: a ``GenerationConfig``; keyword ``overrides`` replace its fields (e.g. ``max_new_tokens=20``).
        state: the state before the prompts (e.g. a cached audio prefix); not modified.
        cuda_graph: decode through a captured CUDA graph; None (default) = on CUDA devices only.

    The repetition penalty covers the prompt ids (when given as ids) and every generated token.
    """
    config = dataclasses.replace(config or GenerationConfig(), **overrides)
    logits, state = model.prefill(
        input_ids=input_ids, inputs_embeds=inputs_embeds, lengths=lengths, state=state
    )
    batch, vocab = logits.shape
    device = logits.device
    sampler = Sampler(config, vocab, device, batch)
    seen = torch.zeros(batch, vocab, dtype=torch.bool, device=device)
    if input_ids is not None:
        n = input_ids.shape[1] if lengths is None else torch.as_tensor(lengths, device=device)[:, None]
        real = torch.arange(input_ids.shape[1], device=device)[None, :] < n
        seen.scatter_(1, torch.where(real, input_ids, input_ids[:, :1]), True)  # pads repeat the first id
    out = torch.full((batch, config.max_new_tokens), config.pad_id, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    n_new = torch.full((batch,), config.max_new_tokens, dtype=torch.long, device=device)
    step = make_decode_step(model, state, batch, cuda_graph, device)
    for t in range(config.max_new_tokens):
        token = torch.where(done, config.pad_id, sampler(logits, seen))  # (B,)
        out[:, t] = token
        seen[torch.arange(batch, device=device), token] = True
        if config.eos_token_id is not None:
            ended = ~done & (token == config.eos_token_id)
            n_new[ended] = t + 1
            done |= ended
            if bool(done.all()):
                break
        if t + 1 < config.max_new_tokens:
            logits = step(token)
    used = int(n_new.max()) if batch else 0
    return GenerationOutput(out[:, :used], n_new, config.eos_token_id)
