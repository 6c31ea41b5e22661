"""Tag tokens: the audio encoder's own tag classifier, handed to the language model as words.

An optional part of ``SSLALM`` (``SSLALMConfig.tag_names``; off by default and not in the paper). A linear
head reads the encoder map pooled over frequency and time (``tag_pool``: the mean, or the mean then the
maximum) and, with ``tag_cepstra``, the fbank's cepstral statistics (``sslalm.models.cepstral``), as the
stage-0 classifier of ``sslalm.demo.pretrain`` does (``SSLALMConfig.tag_checkpoint`` loads its weights), and
gives one probability distribution per tag group:
the sound labels, and one per fact (``"language: Italian"`` ...). With ``tag_fact_net`` a small net on the
fbank's 10 ms frames (``sslalm.models.frame_net``) gives each fact's logits instead of the linear head.
Each group becomes one extra audio token,
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

from sslalm.models.cepstral import CepstralStatistics
from sslalm.models.frame_net import FrameConvNet


def is_fact_tag(tag: str) -> bool:
    """``"<fact>: <value>"`` (the spoken language), as opposed to a plain sound label."""
    return ": " in tag


def tag_word(tag: str) -> str:
    """The word(s) a tag stands for: ``"language: Italian"`` -> ``"Italian"``, a label as it is."""
    return tag.split(": ", 1)[1] if is_fact_tag(tag) else tag


def tag_groups(tags: Sequence[str]) -> list[int]:
    """Group index per tag: ``"<fact>: <value>"`` tags form one group per fact, plain labels group 0."""
    names = ["label"] + fact_names(tags)
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


def head_inputs(
    features: torch.Tensor,
    pool: str,
    cepstra: CepstralStatistics | None = None,
    fbank: torch.Tensor | None = None,
) -> torch.Tensor:
    """What a tag head reads: (B, C, F, T) map [, (B, T', 128) fbank] -> (B, P) pooled map, then the fbank's
    cepstral statistics when ``cepstra`` is given."""
    pooled = pooled_features(features, pool)
    if cepstra is None:
        return pooled
    if fbank is None:
        raise ValueError("a tag head with cepstral statistics needs the fbank")
    return torch.cat([pooled, cepstra(fbank).to(pooled.dtype)], dim=-1)


def head_input_size(in_channels: int, pool: str, cepstra: CepstralStatistics | None = None) -> int:
    """P of ``head_inputs``."""
    return POOLINGS[pool] * in_channels + (cepstra.dim if cepstra is not None else 0)


def head_file_state(
    head: nn.Linear, cepstra: CepstralStatistics | None = None, fact_nets: nn.ModuleDict | None = None
) -> dict[str, torch.Tensor]:
    """A tag head as its file holds it (``SSLALMConfig.tag_checkpoint``): ``weight`` and ``bias``, with
    cepstral statistics their standardisation, ``cepstra.shift`` and ``cepstra.scale``, and with fact nets
    each one's weights and buffers under ``facts.<fact>.`` (``facts.language.convs.0.weight`` ...)."""
    state = dict(head.state_dict())
    if cepstra is not None:
        state.update({f"cepstra.{k}": v for k, v in cepstra.state_dict().items()})
    if fact_nets:
        state.update(fact_nets.state_dict(prefix="facts."))
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def fact_names(tags: Sequence[str]) -> list[str]:
    """The facts of ``tags`` in group order (group 1 on): ``["speech", "language: Dutch"]`` ->
    ``["language"]``."""
    return sorted({t.split(": ", 1)[0] for t in tags if is_fact_tag(t)})


def build_fact_nets(tags: Sequence[str], width: int) -> nn.ModuleDict:
    """One ``FrameConvNet`` of ``width`` channels per fact of ``tags``, over that fact's values."""
    facts = zip(fact_names(tags), tag_group_columns(tags)[1:], strict=True)
    return nn.ModuleDict({f: FrameConvNet(len(cols), width) for f, cols in facts if len(cols) >= 2})


def with_fact_logits(
    logits: torch.Tensor,
    groups: Sequence[Sequence[int]],
    facts: Sequence[str],
    fact_nets: nn.ModuleDict,
    fbank: torch.Tensor | None,
) -> torch.Tensor:
    """(B, K) head logits with each fact group's columns replaced by its fact net's (B, k) logits on the
    (B, T, 128) fbank; ``groups`` are the column lists (labels first), ``facts`` the facts of groups 1 on."""
    if not fact_nets:
        return logits
    if fbank is None:
        raise ValueError("a tag head with fact nets needs the fbank")
    logits = logits.clone()
    for cols, fact in zip(groups[1:], facts, strict=True):
        if fact in fact_nets:
            logits[:, cols] = fact_nets[fact](fbank).to(logits.dtype)
    return logits


def scale_like(tags: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, G, d) tag tokens rescaled so that each has the mean norm of the clip's (B, N, d) projector tokens
    (``SSLALMConfig.tag_scale == "audio"``); the factor is not differentiated. Why: the projector's tokens
    are two orders of magnitude larger than word embeddings, and a language model trained for minutes learnt
    to read a fact from a word-sized token among them only once it was as large (``docs/demo.md``)."""
    target = tokens.detach().norm(dim=-1).mean(dim=1, keepdim=True)  # (B, 1)
    factor = target / tags.detach().norm(dim=-1).clamp(min=1e-6)  # (B, G)
    return tags * factor.unsqueeze(-1).to(tags.dtype)


class TagTokens(nn.Module):
    """Encoder map -> one token per tag group, a probability mixture of the tag words' LM embeddings.

    Args:
        in_channels: encoder channels C.
        tags: the head's tag names, column by column.
        word_ids: the LM tokenizer's ids of each tag's word, as it appears inside a sentence.
        pool: how the head pools the map (``pooled_features``).
        temperature: divides the head's logits before each group's softmax; below 1 the token moves toward
            the most probable word's embedding (a flat distribution mixes every word into their mean).
        cepstra: with K > 0, the head also reads the fbank's cepstral statistics of K cepstra
            (``CepstralStatistics``; its standardisation is saved with the head).
        fact_net: with a width > 0, each fact's logits come from a ``FrameConvNet`` of that width on the
            fbank (``build_fact_nets``), not from the linear head.
        fact_temperature: the temperature of the facts' groups (the labels keep ``temperature``); None:
            ``temperature`` for every group.
    """

    def __init__(
        self,
        in_channels: int,
        tags: Sequence[str],
        word_ids: Sequence[Sequence[int]],
        pool: str = "mean+max",
        temperature: float = 1.0,
        cepstra: int = 0,
        fact_net: int = 0,
        fact_temperature: float | None = None,
    ):
        super().__init__()
        if len(word_ids) != len(tags) or not all(word_ids):
            raise ValueError("every tag needs its word's token ids")
        if pool not in POOLINGS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {sorted(POOLINGS)}")
        fact_temperature = temperature if fact_temperature is None else fact_temperature
        for t in (temperature, fact_temperature):
            if not t > 0:
                raise ValueError(f"temperatures must be positive, got {t}")
        self.tags, self.pool, self.temperature = list(tags), pool, float(temperature)
        self.fact_temperature = float(fact_temperature)
        self.groups = tag_group_columns(self.tags)
        self.cepstra = CepstralStatistics(cepstra) if cepstra else None
        self.head = nn.Linear(head_input_size(in_channels, pool, self.cepstra), len(self.tags))
        self.facts = fact_names(self.tags)
        self.fact_nets = build_fact_nets(self.tags, fact_net) if fact_net else nn.ModuleDict()
        width = max(len(ids) for ids in word_ids)
        ids = torch.zeros(len(self.tags), width, dtype=torch.long)
        mask = torch.zeros(len(self.tags), width)
        for i, row in enumerate(word_ids):
            ids[i, : len(row)] = torch.as_tensor(list(row))
            mask[i, : len(row)] = 1.0
        self.register_buffer("word_ids", ids, persistent=False)  # (K, W)
        self.register_buffer("word_mask", mask / mask.sum(1, keepdim=True), persistent=False)  # (K, W)

    def train(self, mode: bool = True) -> TagTokens:
        """As ``nn.Module.train``, but the fact nets stay in eval mode: the head never trains here, and their
        batch norms and dropout belong to their own training (stage 0)."""
        super().train(mode)
        self.fact_nets.eval()
        return self

    @property
    def num_tokens(self) -> int:
        return len(self.groups)

    def load_head_state(self, state: dict[str, torch.Tensor]) -> None:
        """Load a ``head_file_state``; ValueError naming both layouts when its keys or shapes differ."""
        want = {
            k: tuple(v.shape) for k, v in head_file_state(self.head, self.cepstra, self.fact_nets).items()
        }
        got = {k: tuple(v.shape) for k, v in state.items()}
        if got != want:
            raise ValueError(f"the tag head file holds {got}, but this head needs {want}")
        self.head.load_state_dict({k: state[k] for k in ("weight", "bias")})
        if self.cepstra is not None:
            self.cepstra.load_state_dict(
                {k[len("cepstra.") :]: v for k, v in state.items() if k.startswith("cepstra.")}
            )
        if self.fact_nets:
            self.fact_nets.load_state_dict(
                {k[len("facts.") :]: v for k, v in state.items() if k.startswith("facts.")}
            )

    def probabilities(self, features: torch.Tensor, fbank: torch.Tensor | None = None) -> list[torch.Tensor]:
        """(B, C, F, T) map [, (B, T', 128) fbank: needed with cepstra] -> per group, (B, k) probabilities."""
        logits = self.head(head_inputs(features, self.pool, self.cepstra, fbank))  # (B, K)
        logits = with_fact_logits(logits, self.groups, self.facts, self.fact_nets, fbank)
        temperatures = [self.temperature] + [self.fact_temperature] * (len(self.groups) - 1)
        return [(logits[:, cols] / t).softmax(dim=-1) for cols, t in zip(self.groups, temperatures)]

    def forward(
        self, features: torch.Tensor, embeddings: nn.Module, fbank: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, C, F, T) map, the LM's input embedding layer [, (B, T', 128) fbank] -> (B, groups, d_lm)."""
        return self.mix(self.probabilities(features.detach(), fbank), embeddings)

    def mix(self, probs: Sequence[torch.Tensor], embeddings: nn.Module) -> torch.Tensor:
        """Per group (B, k) probabilities, the LM's input embedding layer -> (B, groups, d_lm) tokens."""
        words = (embeddings(self.word_ids) * self.word_mask[..., None]).sum(1)  # (K, d): mean over tokens
        return torch.stack([p @ words[cols].to(p.dtype) for p, cols in zip(probs, self.groups)], dim=1)
