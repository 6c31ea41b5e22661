"""Efficiency numbers of a trained demo model: time to first token, per-token latency, peak memory.

- Time to first token: wall time of ``model.generate(audio, prompt, max_new_tokens=1)`` (greedy) from an
  in-memory waveform: fbank, audio encoder, projector, prompt prefill and the first token, as a user sees it.
- Per-token latency: the language model's decode step alone, one new token at a time after prefilling the
  model's ``prompt_embeddings`` (the exact sequence ``generate`` decodes from), through the LM backend's
  ``prefill``/``step`` (Mamba: the constant-size state; transformers: the KV cache) in the shared loop
  ``sslalm.bench.common.greedy_decode``: greedy, never stopping at EOS, so both models decode the same
  number of tokens.
- Peak memory: in a fresh child process (``sslalm.bench.common.run_isolated``) that loads the model and runs
  the latency measurement, the resident set size after its imports and the peak from there on
  (``sslalm.bench.common.reset_peak_rss`` / ``peak_rss``: the peak is the model's and the measurement's, not
  the imports'). For tiny models most of the memory is Python, PyTorch and transformers themselves.

Medians over the clips; ``threads`` sets ``torch.set_num_threads`` in the child.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

from sslalm.bench.common import greedy_decode, peak_rss, reset_peak_rss, run_isolated

__all__ = [
    "decode_latency",
    "measure_isolated",
    "measure_model",
    "peak_rss",
    "reset_peak_rss",
    "time_to_first_token",
]

logger = logging.getLogger(__name__)


@torch.inference_mode()
def decode_latency(model: Any, audio: torch.Tensor, prompt: str, new_tokens: int) -> tuple[float, list[int]]:
    """Seconds per decoded token of ``model``'s LM after prefilling (audio tokens + prompt), and the greedy
    tokens (the prefill's first token, then ``new_tokens`` decoded ones)."""
    embeds = model.prompt_embeddings([audio], [prompt])[0][None]  # (1, L, d)
    logits, cache = model.lm_backend.prefill(model.lm, inputs_embeds=embeds)  # (1, V)
    seconds, tokens = greedy_decode(model.lm_backend, model.lm, logits, cache, new_tokens)
    return seconds, tokens[0]


@torch.inference_mode()
def time_to_first_token(model: Any, audio: torch.Tensor, prompt: str) -> float:
    start = time.perf_counter()
    model.generate([audio], [prompt], max_new_tokens=1, do_sample=False)
    return time.perf_counter() - start


def measure_model(
    model_dir: str, audio_paths: Sequence[str], prompt: str, new_tokens: int = 32, threads: int = 1
) -> dict[str, Any]:
    """Load ``model_dir`` and time it on each clip (one warm-up clip first); run in a child process."""
    from sslalm.audio import SAMPLE_RATE, load_audio
    from sslalm.models.lalm import SSLALM

    torch.set_num_threads(threads)
    start_rss = reset_peak_rss()
    model = SSLALM.from_pretrained(model_dir).eval()
    waves = [load_audio(p) for p in audio_paths]
    time_to_first_token(model, waves[0], prompt)  # warm-up: lazy inits, allocator
    decode_latency(model, waves[0], prompt, 2)
    ttft = [time_to_first_token(model, w, prompt) for w in waves]
    per_token = [decode_latency(model, w, prompt, new_tokens)[0] for w in waves]
    return {
        "clips": len(waves),
        "audio_seconds": [round(w.numel() / SAMPLE_RATE, 2) for w in waves],
        "new_tokens": new_tokens,
        "threads": threads,
        "ttft_ms": 1000 * statistics.median(ttft),
        "per_token_ms": 1000 * statistics.median(per_token),
        "num_parameters": model.num_parameters(),
        "start_rss_mb": start_rss,
        "peak_rss_mb": peak_rss(),
    }


def measure_isolated(
    model_dir: str, audio_paths: Sequence[str], prompt: str, new_tokens: int = 32, threads: int = 1
) -> dict[str, Any]:
    """``measure_model`` in a fresh process (its own memory peak)."""
    return run_isolated(measure_model, model_dir, list(audio_paths), prompt, new_tokens, threads)
