"""Prompt template, tokenisation, loss masking and batch collation for training (LTU's recipe).

The text side follows LTU (``docs/ltu.md``, "Prompt template") with the changes a state-space LM needs:

- Template: Alpaca "short" (``### Instruction:`` / ``### Response:``; an ``### Input:`` block only when the
  record has an input, e.g. a transcript). The answer follows the response header directly.
- The prompt and the answer are tokenised as one string, cut at ``cutoff_len`` (108) tokens. EOS is appended
  only when the cut left room for it, exactly as LTU does: a truncated example keeps no EOS.
- Loss on every text token by default (LTU's ``train_on_inputs=True``); ``train_on_inputs=False`` masks the
  prompt (instruction + template) with -100 so only the answer (and EOS) is learnt.
- Audio tokens are prepended by the model, not here; text is **right**-padded, because Mamba has no attention
  mask and pads between the audio and the text would leak into the recurrent state (``docs/mamba.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
PROMPT_TEMPLATE_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
RESPONSE_SPLIT = "### Response:"
IGNORE_INDEX = -100
CUTOFF_LEN = 108


def build_prompt(instruction: str, input: str = "") -> str:
    """The alpaca-short prompt for one question; the answer is appended directly after it.

    ``input`` is empty for audio-only data (LTU); a non-empty input (e.g. a speech transcript, LTU-AS) adds an
    ``### Input:`` block between the instruction and the response header.
    """
    if input:
        return PROMPT_TEMPLATE_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT_TEMPLATE.format(instruction=instruction)


def extract_response(text: str) -> str:
    """The answer part of a decoded ``prompt + answer`` string (everything after the response header)."""
    return text.split(RESPONSE_SPLIT, 1)[-1].strip()


def tokenize_example(
    tokenizer: Any,
    instruction: str,
    input: str,
    output: str,
    cutoff_len: int = CUTOFF_LEN,
    train_on_inputs: bool = True,
) -> dict[str, list[int]]:
    """Token ids, attention mask and labels of one training example.

    Args:
        tokenizer: a Hugging Face tokenizer with ``eos_token_id`` set. Its own special tokens (a BOS for
            LLaMA, none for GPT-NeoX/Mamba) are added as the tokenizer does by default.
        instruction, input, output: the record's fields; the text is
            ``build_prompt(instruction, input) + output``.
        cutoff_len: maximum number of text tokens (LTU: 108; the audio tokens come on top).
        train_on_inputs: True: loss on every text token (LTU). False: prompt tokens get ``IGNORE_INDEX``.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``, lists of equal length ``<= cutoff_len``.
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("the tokenizer has no eos_token_id; set one before tokenising training data")
    prompt = build_prompt(instruction, input)
    ids = list(tokenizer(prompt + output, truncation=True, max_length=cutoff_len)["input_ids"])
    if len(ids) < cutoff_len and (not ids or ids[-1] != eos):
        ids.append(eos)
    labels = list(ids)
    if not train_on_inputs:
        n_prompt = len(tokenizer(prompt, truncation=True, max_length=cutoff_len)["input_ids"])
        labels[:n_prompt] = [IGNORE_INDEX] * min(n_prompt, len(labels))
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def collate(
    batch: Sequence[dict[str, Any]], pad_id: int, pad_to_multiple_of: int | None = None
) -> dict[str, torch.Tensor]:
    """Stack examples into a right-padded batch.

    Each example has ``input_ids``, ``attention_mask`` and ``labels`` (lists or 1-D tensors) and optionally
    ``fbank`` (a ``(T, 128)`` tensor, the same T for every example). Text is padded on the right with
    ``pad_id`` (mask 0, label ``IGNORE_INDEX``) to the longest example, rounded up to ``pad_to_multiple_of``.

    Returns:
        ``input_ids``, ``attention_mask``, ``labels``: ``(B, L)`` int64;
        ``fbank``: ``(B, T, 128)`` when the examples have one.
    """
    if not batch:
        raise ValueError("cannot collate an empty batch")
    length = max(len(ex["input_ids"]) for ex in batch)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    n = len(batch)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros((n, length), dtype=torch.long)  # (B, L)
    labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)  # (B, L)
    for i, ex in enumerate(batch):
        k = len(ex["input_ids"])
        input_ids[i, :k] = torch.as_tensor(ex["input_ids"], dtype=torch.long)
        attention_mask[i, :k] = torch.as_tensor(ex["attention_mask"], dtype=torch.long)
        labels[i, :k] = torch.as_tensor(ex["labels"], dtype=torch.long)
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    if "fbank" in batch[0]:
        out["fbank"] = torch.stack([torch.as_tensor(ex["fbank"]) for ex in batch])  # (B, T, 128)
    return out


class Collator:
    """Picklable ``collate`` with a fixed pad id, for ``DataLoader(collate_fn=...)`` and HF ``Trainer``."""

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return collate(batch, self.pad_id, self.pad_to_multiple_of)
