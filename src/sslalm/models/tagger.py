"""Tag tokens: the audio encoder's own tag classifier, handed to the language model as words.

An optional part of ``SSLALM`` (``SSLALMConfig.tag_names``; off by default and not in the paper). A linear
head reads the encoder map pooled over frequency and time (``tag_pool``: the mean, or the mean then the
maximum), as the stage-0 classifier of ``sslalm.demo.pretrain`` does (``SSLALMConfig.tag_checkpoint`` loads
its weights), and gives one probability distribution per tag group:
the sound labels, and one per fact (``"language: Italian"`` ...). Each group becomes one extra audio token,
the probability-weighted mean of the LM's own input embeddings of the tag words. The tokens follow the
projector's tokens, right before the question.

Why: a language model trained for minutes reads rare facts (a clip's spoken language: about 35 training
questions per language in the demo) from the projector's tokens far less well than the encoder's head does
(docs/demo.md). As word
embeddings, every tag is read by one skill the LM learns from all its label and caption answers: saying the
word it is shown. Audio captioning systems have long fed predicted tags to their decoder as keywords.
The head stays as stage 0 trained it (its weights never train: part ``tagger`` is not in ``PARTS``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn


def is_fact_tag(tag: str) -> bool:
    """``"<fact>: <value>"`` (the spoken language), as opposed to a plain sound label."""
    return ": " in tag


def tag_word(tag: str) -> str:
    """The word(s) a tag stands for: ``"language: Italian"`` -> ``"Italian"``, a label as it is."""
    return tag.split(": ", 1)[1] if is_fact_tag(tag) else tag


def tag_groups(tags: Sequence[str]) -> list[int]:
    """Group index per tag: ``"<fact>: <value>"`` tags form one group per fact, plain labels group 0."""
    names = ["label"] + sorted({t.split(": ", 1)[0] for t in tags if is_fact_tag(t)})
    return [names.index(t.split(": ", 1)[0]) if is_fact_tag(t) else 0 for t in tags]


def columns_by_group(groups: Sequence[int]) -> list[list[int]]:
    """Column indices of each group, in group order: ``[0, 1, 1, 0]`` -> ``[[0, 3], [1, 2]]``."""
    return [[i for i, k in enumerate(groups) if k == g] for g in sorted(set(groups))]


def tag_group_columns(tags: Sequence[str]) -> list[list[int]]:
    """Head columns per group (``tag_groups``), the labels first."""
    return columns_by_group(tag_groups(tags))


POOLINGS = {"mean": 1, "mean+max": 2}  # pooling -> the pooled width, in encoder channels


def pooled_features(features: torch.Tensor, pool: str = "mean+max") -> torch.Tensor:
    """(B, C, F, T) encoder map -> (B, C) mean over frequency and time, or (B, 2C) mean then maximum."""
    mean = features.mean(dim=(2, 3))
    if pool == "mean":
        return mean
    return torch.cat([mean, features.amax(dim=(2, 3))], dim=-1)


class TagTokens(nn.Module):
    """Encoder map -> one token per tag group, a probability mixture of the tag words' LM embeddings.

    Args:
        in_channels: encoder channels C.
        tags: the head's tag names, column by column.
        word_ids: the LM tokenizer's ids of each tag's word, as it appears inside a sentence.
        pool: how the head pools the map (``pooled_features``).
        temperature: divides the head's logits before each group's softmax; below 1 the token moves toward
            the most probable word's embedding (a flat distribution mixes every word into their mean).
    """

    def __init__(
        self,
        in_channels: int,
        tags: Sequence[str],
        word_ids: Sequence[Sequence[int]],
        pool: str = "mean+max",
        temperature: float = 1.0,
    ):
        super().__init__()
        if len(word_ids) != len(tags) or not all(word_ids):
            raise ValueError("every tag needs its word's token ids")
        if pool not in POOLINGS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {sorted(POOLINGS)}")
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.tags, self.pool, self.temperature = list(tags), pool, float(temperature)
        self.groups = tag_group_columns(self.tags)
        self.head = nn.Linear(POOLINGS[pool] * in_channels, len(self.tags))
        width = max(len(ids) for ids in word_ids)
        ids = torch.zeros(len(self.tags), width, dtype=torch.long)
        mask = torch.zeros(len(self.tags), width)
        for i, row in enumerate(word_ids):
            ids[i, : len(row)] = torch.as_tensor(list(row))
            mask[i, : len(row)] = 1.0
        self.register_buffer("word_ids", ids, persistent=False)  # (K, W)
        self.register_buffer("word_mask", mask / mask.sum(1, keepdim=True), persistent=False)  # (K, W)

    @property
    def num_tokens(self) -> int:
        return len(self.groups)

    def probabilities(self, features: torch.Tensor) -> list[torch.Tensor]:
        """(B, C, F, T) map -> per group, (B, k) probabilities over its tags."""
        logits = self.head(pooled_features(features, self.pool)) / self.temperature  # (B, K)
        return [logits[:, cols].softmax(dim=-1) for cols in self.groups]

    def forward(self, features: torch.Tensor, embeddings: nn.Module) -> torch.Tensor:
        """(B, C, F, T) map, the LM's input embedding layer -> (B, groups, d_lm)."""
        words = (embeddings(self.word_ids) * self.word_mask[..., None]).sum(1)  # (K, d): mean over tokens
        probs = self.probabilities(features.detach())
        return torch.stack([p @ words[cols].to(p.dtype) for p, cols in zip(probs, self.groups)], dim=1)
