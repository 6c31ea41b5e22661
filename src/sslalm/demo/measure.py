"""Efficiency numbers of a trained demo model: time to first token, per-token latency, peak memory.

- Time to first token: wall time of ``model.generate(audio, prompt, max_new_tokens=1)`` (greedy) from an
  in-memory waveform: fbank, audio encoder, projector, prompt prefill and the first token, as a user sees it.
- Per-token latency: the language model's decode step alone, one new token at a time after that prefill
  (Mamba: ``step`` on the constant-size state; transformers: a forward pass with the KV cache), greedy,
  never stopping at EOS, so both models decode the same number of tokens.
- Peak memory: in a fresh child process (``sslalm.bench.common.run_isolated``) that loads the model and runs
  the latency measurement, the resident set size after its imports and the peak from there on (Linux:
  the high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs`` once the imports are done, so the
  peak is the model's and the measurement's, not the imports'). For tiny models most of the memory is
  Python, PyTorch and transformers themselves.

Medians over the clips; ``threads`` sets ``torch.set_num_threads`` in the child.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from typing import Any

import torch

logger = logging.getLogger(__name__)


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> float:
    """Start peak-memory tracking here; returns the current RSS in MB.

    On Linux the process's high-water mark is reset; elsewhere ``peak_rss`` reports the whole process's
    peak (``getrusage``), imports included.
    """
    import resource

    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    now = _status_mb("VmRSS")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss() -> float:
    """Peak RSS in MB since the last ``reset_peak_rss`` (Linux), else since the process started."""
    import resource

    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.inference_mode()
def decode_latency(model: Any, audio: torch.Tensor, prompt: str, new_tokens: int) -> tuple[float, list[int]]:
    """Seconds per decoded token of ``model``'s LM after prefilling (audio tokens + prompt), and the greedy
    tokens (the prefill's first token, then ``new_tokens`` decoded ones)."""
    seqs, _ = model._prompt_embeddings([audio], [prompt])  # the exact embeddings generate() builds
    embeds = seqs[0][None]  # (1, L, d)
    lm = model.lm
    if model.config.lm_type == "mamba":
        logits, state = lm.prefill(inputs_embeds=embeds)  # (1, V)
        token = logits.argmax(-1)  # (1,)
        tokens = [int(token)]
        start = time.perf_counter()
        for _ in range(new_tokens):
            token = lm.step(token, state=state).argmax(-1)
            tokens.append(int(token))
        return (time.perf_counter() - start) / new_tokens, tokens
    out = lm(inputs_embeds=embeds, use_cache=True)
    cache = out.past_key_values
    token = out.logits[:, -1].argmax(-1, keepdim=True)  # (1, 1)
    tokens = [int(token)]
    start = time.perf_counter()
    for _ in range(new_tokens):
        out = lm(input_ids=token, past_key_values=cache, use_cache=True)
        cache = out.past_key_values
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        tokens.append(int(token))
    return (time.perf_counter() - start) / new_tokens, tokens


@torch.inference_mode()
def time_to_first_token(model: Any, audio: torch.Tensor, prompt: str) -> float:
    start = time.perf_counter()
    model.generate([audio], [prompt], max_new_tokens=1, do_sample=False)
    return time.perf_counter() - start


def measure_model(
    model_dir: str, audio_paths: Sequence[str], prompt: str, new_tokens: int = 32, threads: int = 1
) -> dict[str, Any]:
    """Load ``model_dir`` and time it on each clip (one warm-up clip first); run in a child process."""
    from sslalm.audio import load_audio
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
        "audio_seconds": [round(w.numel() / 16000, 2) for w in waves],
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
    from sslalm.bench.common import run_isolated

    return run_isolated(measure_model, model_dir, list(audio_paths), prompt, new_tokens, threads)
