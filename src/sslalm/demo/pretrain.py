"""Stage 0 of the demo: stand-ins for the pretrained weights the paper starts from.

The paper's ssLALM starts from an AudioSet-pretrained DASS and a Pile-pretrained Mamba-2.8B; LTU-style
baselines from an AudioSet-pretrained encoder and Vicuna. No weights can be downloaded here, and a random
language model that stays frozen (only rank-8 LoRA trains, as in the paper) never learns to write English.
So the demo pretrains its tiny parts on the corpus's training split first, then runs the paper's four
curriculum stages (with the departures ``sslalm.demo.recipe`` explains):

- ``pretrain_language_model``: the LM (Mamba or LLaMA) learns the text of the training records (question
  template + answer, no audio) as a causal LM: what "Pile pretraining" gives the paper's LM, scaled down
  to the corpus's vocabulary. It never sees audio, so it can only learn the answers' marginal distribution.
- ``pretrain_encoder``: the audio encoder (DASS or AST) learns the training clips' tags: sound-class labels
  (cross-entropy; a mixture's labels share the target mass), as DASS and AST learn AudioSet's 527 classes
  before the paper uses them, and facts such as the spoken language (with ``group_tags`` in a softmax of
  their own, else in the labels'); with mixup (``mix_batch``) and, through its config, the encoder's own
  drop path or dropout, as both are trained on AudioSet, so that it learns sounds rather than its sources.

Both run on Hugging Face's ``Trainer`` (the same loop, scheduler and logging as the curriculum stages). The
language model is built by ``sslalm.models.lalm.build_language_model`` and saved with its own
``save_pretrained``; the DASS encoder is saved here (it is not a transformers ``PreTrainedModel``), its
classifier head beside it (``save_tag_head``): with ``SSLALMConfig.tag_names`` the model reads that head's
tags as words (``sslalm.models.tagger``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.cepstral import CepstralStatistics
from sslalm.models.tagger import (
    POOLINGS,
    columns_by_group,
    head_file_state,
    head_input_size,
    head_inputs,
    is_fact_tag,
    pooled_features,
    tag_groups,
)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- the LM


def record_texts(records: Sequence[dict]) -> list[str]:
    """Training text of OpenAQA records: the alpaca-short prompt followed by the answer."""
    from sslalm.prompt import build_prompt

    return [build_prompt(r["instruction"], r.get("input", "")) + r["output"] for r in records]


class TextDataset(torch.utils.data.Dataset):
    """OpenAQA records as text-only causal-LM examples (``input_ids``, ``attention_mask``, ``labels``)."""

    def __init__(self, records: Sequence[dict], tokenizer: Any, cutoff_len: int = 108):
        from sslalm.prompt import tokenize_example

        self.examples = [
            tokenize_example(tokenizer, r["instruction"], r.get("input", ""), r["output"], cutoff_len)
            for r in records
        ]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]


def tag_targets(tags: Sequence[str], tag_names: Sequence[str]) -> torch.Tensor:
    """(K,) what a perfect tag head would say of a clip with ``tags``: per group of ``tag_names``
    (``tag_groups``), the clip's tags in it sharing the mass, or a uniform distribution where it has none."""
    out = torch.zeros(len(tag_names))
    index = {t: i for i, t in enumerate(tag_names)}
    for cols in columns_by_group(tag_groups(tag_names)):
        mine = [index[t] for t in tags if t in index and index[t] in cols]
        for c in mine or cols:
            out[c] = 1.0 / len(mine or cols)
    return out


class TagPrefixedText(torch.utils.data.Dataset):
    """``TextDataset`` examples with ``tag_probs`` (K,): the ``tag_targets`` of each record's clip."""

    def __init__(self, text: TextDataset, targets: Sequence[torch.Tensor]):
        if len(text) != len(targets):
            raise ValueError("one tag target per example")
        self.text, self.targets = text, list(targets)

    def __len__(self) -> int:
        return len(self.text)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.text[i], "tag_probs": self.targets[i]}


class TagPrefixCollator:
    """``Collator`` for ``TagPrefixedText``: the text right-padded, ``tag_probs`` stacked (B, K)."""

    def __init__(self, pad_id: int):
        from sslalm.prompt import Collator

        self.text = Collator(pad_id)

    def __call__(self, batch: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = self.text([{k: v for k, v in ex.items() if k != "tag_probs"} for ex in batch])
        out["tag_probs"] = torch.stack([ex["tag_probs"] for ex in batch])
        return out


class TagPrefixedLM(nn.Module):
    """A causal LM that reads one tag token per group before each text, as ``SSLALM``'s tag tokens reach it.

    The tokens are ``TagTokens.mix`` of the example's ``tag_probs`` (the truth, not a head's guess) over the
    LM's own word embeddings; they get no loss. So stage 0 teaches the LM what stages 1-4 need from it: the
    answer's fact is the word in front of the question. (B, L) ids, (B, K) tag_probs -> the LM's output.
    """

    def __init__(self, lm: nn.Module, tagger: nn.Module):
        super().__init__()
        self.lm, self.tagger = lm, tagger

    def forward(
        self,
        input_ids: torch.Tensor,
        tag_probs: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        emb = self.lm.get_input_embeddings()
        tags = self.tagger.mix([tag_probs[:, cols] for cols in self.tagger.groups], emb)  # (B, G, d)
        text = emb(input_ids)  # (B, L, d)
        b, g = tags.shape[:2]
        embeds = torch.cat([tags.to(text.dtype), text], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        mask = torch.cat([attention_mask.new_ones(b, g), attention_mask], dim=1)
        if labels is not None:
            labels = torch.cat([labels.new_full((b, g), -100), labels], dim=1)
        return self.lm(inputs_embeds=embeds, attention_mask=mask, labels=labels)


def pretrain_language_model(
    lm_type: str,
    lm_config: dict[str, Any],
    tokenizer: Any,
    records: Sequence[dict],
    out_dir: str | os.PathLike,
    max_steps: int,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    seed: int = 0,
    callbacks: list | None = None,
    cutoff_len: int = 108,
    progress: bool = True,
    clip_tags: dict[str, Sequence[str]] | None = None,
    tag_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train a random LM on the records' text and save it to ``out_dir``; returns the Trainer's metrics.

    With ``tag_names`` and ``clip_tags`` (a record's ``audio_id`` -> its clip's tags), every text follows
    the clip's tag tokens (``TagPrefixedLM``), as the model's tag tokens will precede its questions."""
    from transformers import set_seed

    from sslalm.models.lalm import SSLALMConfig, build_language_model
    from sslalm.prompt import Collator

    set_seed(seed)
    config = SSLALMConfig(lm_type=lm_type, lm_config={**lm_config, "vocab_size": "auto"})
    model = build_language_model(config, len(tokenizer), None)
    dataset = TextDataset(records, tokenizer, cutoff_len)
    trained: nn.Module = model
    collator: Any = Collator(tokenizer.pad_token_id)
    if tag_names:
        from sslalm.models.tagger import TagTokens, tag_word

        tags = clip_tags or {}
        word_ids = [tokenizer.encode(" " + tag_word(t), add_special_tokens=False) for t in tag_names]
        trained = TagPrefixedLM(model, TagTokens(1, tag_names, word_ids, pool="mean"))
        targets = [tag_targets(tags.get(r["audio_id"], ()), tag_names) for r in records]
        dataset = TagPrefixedText(dataset, targets)
        collator = TagPrefixCollator(tokenizer.pad_token_id)
    logger.info(
        "stage 0 (LM): %s with %.3f M parameters on %d text examples, %d steps of %d",
        lm_type,
        sum(p.numel() for p in model.parameters()) / 1e6,
        len(dataset),
        max_steps,
        batch_size,
    )
    metrics = _fit(
        trained,
        dataset,
        collator,
        out_dir,
        max_steps,
        batch_size,
        learning_rate,
        seed,
        callbacks,
        progress=progress,
    )
    model.save_pretrained(os.fspath(out_dir))  # a folder SSLALMConfig.lm_checkpoint can name
    return metrics


# ---------------------------------------------------------------------------------------------- the encoder


def augment_waveform(wav: torch.Tensor, generator: torch.Generator, noise: bool = True) -> torch.Tensor:
    """Random level (+-6 dB) and, with ``noise``, half the time white or pink-ish noise at 10-40 dB SNR.
    (N,) -> (N,)"""
    u = torch.rand(4, generator=generator)
    out = wav * 10 ** ((u[0] * 12 - 6) / 20)
    if noise and u[1] < 0.5:
        hiss = torch.randn(wav.shape, generator=generator)
        if u[2] < 0.5:  # a first-order low-pass tilts white noise towards pink
            hiss = torch.cumsum(hiss, 0)
            hiss = hiss - torch.linspace(0, 1, hiss.numel()) * hiss[-1]
        snr_db = 10 + 30 * u[3]
        p_sig, p_hiss = out.pow(2).mean(), hiss.pow(2).mean().clamp(min=1e-12)
        out = out + hiss * torch.sqrt(p_sig / (p_hiss * 10 ** (snr_db / 10)))
    return out


def change_speed(wav: torch.Tensor, factor: float) -> torch.Tensor:
    """Play ``wav`` ``factor`` times faster: pitch and tempo both scale by ``factor`` (Kaldi's speed
    perturbation), band-limited by soxr, so that a voice becomes a new voice a little higher or lower.
    (N,) -> (about N / factor,)"""
    import soxr

    from sslalm.audio import SAMPLE_RATE

    if factor == 1.0:
        return wav
    out = soxr.resample(wav.numpy().astype("float32"), SAMPLE_RATE * factor, SAMPLE_RATE, quality="HQ")
    return torch.from_numpy(out)


def augment_fbank(fbank: torch.Tensor, generator: torch.Generator, std: float) -> torch.Tensor:
    """A random equaliser on normalised log-mel frames: a tilt and a bump of up to +-8 dB. (T, F) -> (T, F)"""
    f = fbank.shape[1]
    u = torch.rand(4, generator=generator)
    x = torch.linspace(-1, 1, f)
    db = (u[0] * 2 - 1) * 6 * x + (u[1] * 16 - 8) * torch.exp(
        -(((x - (u[2] * 2 - 1)) / (0.1 + 0.3 * u[3])) ** 2)
    )
    return fbank + db * (math.log(10) / 10) / (2 * std)  # dB of power -> the extractor's normalised units


def mask_fbank(
    fbank: torch.Tensor, generator: torch.Generator, max_bins: int = 24, max_frames: int = 48
) -> torch.Tensor:
    """SpecAugment: two frequency bands of up to ``max_bins`` bins and two time spans of up to ``max_frames``
    frames set to the mean (0 in normalised units), as AST and DASS are trained. (T, F) -> (T, F)"""
    out = fbank.clone()
    for size, axis in ((max_bins, 1), (max_bins, 1), (max_frames, 0), (max_frames, 0)):
        n = out.shape[axis]
        width = int(torch.randint(0, min(size, n) + 1, (1,), generator=generator))
        start = int(torch.randint(0, n - width + 1, (1,), generator=generator))
        if axis == 1:
            out[:, start : start + width] = 0.0
        else:
            out[start : start + width] = 0.0
    return out


class ClipLabelDataset(torch.utils.data.Dataset):
    """Clips with multi-hot label targets: ``{"fbank": (T, 128), "targets": (C,)}`` (random crops; with
    ``augment``, a random level, seeded per draw, with noise if ``noise``, an equaliser if ``eq``,
    SpecAugment if ``spec_masks`` and a speed change by a factor in ``1 +- speed`` (``change_speed``))."""

    def __init__(
        self,
        clips: Sequence[tuple[str, Sequence[str]]],
        labels: Sequence[str],
        frames: int,
        seed: int = 0,
        augment: bool = False,
        spec_masks: bool = False,
        noise: bool = True,
        eq: bool = True,
        speed: float = 0.0,
    ):
        from sslalm.audio import FbankExtractor, WaveformCache

        if not 0.0 <= speed < 0.5:
            raise ValueError(f"speed must lie in [0, 0.5), got {speed}")
        self.clips = list(clips)
        self.index = {lab: i for i, lab in enumerate(labels)}
        self.extractor = FbankExtractor(target_length=frames)
        self.frames = frames
        self.seed = seed
        self.augment = augment
        self.spec_masks = spec_masks
        self.noise = noise
        self.eq = eq
        self.speed = speed
        self.calls = 0
        self.audio = WaveformCache()  # each clip is drawn ~8 times in the full schedule

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        from sslalm.data.openaqa import crop_window

        path, names = self.clips[i]
        wav = self.audio.load(path)  # (N,)
        self.calls += 1  # a new window and augmentation each time the clip is drawn
        factor = 1.0
        if self.augment:
            gen = torch.Generator().manual_seed(hash((self.seed, i, self.calls)) & 0x7FFFFFFF)
            if self.speed > 0:  # no draw at speed 0: the other draws stay as they were without speed
                factor = 1.0 + self.speed * (2.0 * float(torch.rand(1, generator=gen)) - 1.0)
        n = math.ceil(self.frames * 160 * factor)  # the window that fills the crop after the speed change
        if wav.numel() > n:
            wav = crop_window(wav, n, [self.seed, i, self.calls])
        targets = torch.zeros(len(self.index))
        for name in names:
            targets[self.index[name]] = 1.0
        if not self.augment:
            return {"fbank": self.extractor(wav), "targets": targets}
        fbank = self.extractor(augment_waveform(change_speed(wav, factor), gen, self.noise))
        if self.eq:
            fbank = augment_fbank(fbank, gen, self.extractor.std)
        if self.spec_masks:
            fbank = mask_fbank(fbank, gen)
        return {"fbank": fbank, "targets": targets}


class EncoderClassifier(nn.Module):
    """An LALM's audio encoder with a pooled linear head: (B, T, 128) fbank -> (B, C) logits.

    ``pool``: ``"mean"`` (the encoder map's mean over frequency and time, as AST and DASS classify) or
    ``"mean+max"`` (the mean and the maximum side by side, so that a short event or a note's attack counts
    as much as a long one). With ``cepstra`` K > 0 the head also reads the fbank's cepstral statistics of K
    cepstra (``sslalm.models.cepstral``; ``cepstra.fit`` must set their standardisation before training):
    the facts' columns always, the label columns as ``cepstra_labels`` says (True: all, False: none, or the
    indices of those that do; the others' weights on the statistics stay zero).

    ``groups`` (one index per column, ``tag_groups``) splits the columns into separate softmaxes: sound
    labels in one, each fact (the spoken language) in its own, so that a speech clip's language does not take
    target mass from its label. A clip without a tag in a group adds nothing for that group.

    A clip's labels share its target mass (a two-label mixture: half each). A fact has one value per clip,
    and its loss keeps the mass mixup left it: a speech clip mixed under another at weight 0.3 teaches its
    language at 0.3, not as if the speech were all there (measured: normalising that mass back to 1 cost the
    stage-0 encoder 11 points of language accuracy on the test split, ``docs/demo.md``).
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_labels: int,
        groups: Sequence[int] | None = None,
        mixup: float = 0.0,
        pool: str = "mean",
        cepstra: int = 0,
        cepstra_labels: bool | Sequence[int] = True,
    ):
        super().__init__()
        if pool not in POOLINGS:
            raise ValueError(f"pool must be one of {tuple(POOLINGS)}, got {pool!r}")
        self.encoder = encoder
        self.mixup = mixup
        self.pool = pool
        self.cepstra = CepstralStatistics(cepstra) if cepstra else None
        self.head = nn.Linear(head_input_size(encoder.hidden_size, pool, self.cepstra), num_labels)
        groups = [0] * num_labels if groups is None else list(groups)
        self.group_ids = sorted(set(groups))
        self.group_cols = columns_by_group(groups)
        reading = set(range(num_labels)) if cepstra_labels is True else set(cepstra_labels or ())
        blind = [i for i, g in enumerate(groups) if g == 0 and i not in reading]
        if self.cepstra is not None and blind:  # these label columns do not read the statistics
            mask = torch.ones_like(self.head.weight)
            mask[blind, -self.cepstra.dim :] = 0.0
            with torch.no_grad():
                self.head.weight.mul_(mask)
            self.head.weight.register_hook(lambda grad: grad * mask)  # zero, no gradient: they stay zero

    def pooled(self, feats: torch.Tensor) -> torch.Tensor:
        """What the head reads: (B, C, f, t) encoder map -> (B, C) mean, or (B, 2C) mean then maximum."""
        return pooled_features(feats, self.pool)

    def forward(self, fbank: torch.Tensor, targets: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if self.training and self.mixup > 0 and targets is not None and fbank.shape[0] > 1:
            fbank, targets = mix_batch(fbank, targets, self.mixup)
        inputs = head_inputs(self.encoder.forward_features(fbank), self.pool, self.cepstra, fbank)
        logits = self.head(inputs)  # (B, num_labels)
        out = {"logits": logits}
        if targets is not None:  # soft-target cross-entropy per group
            loss = logits.new_zeros(())
            for g, cols in zip(self.group_ids, self.group_cols, strict=True):  # group 0: the labels
                t = targets[:, cols]  # (B, Cg)
                has = t.sum(dim=1) > 0
                if has.any():
                    dist = t[has] / t[has].sum(dim=1, keepdim=True) if g == 0 else t[has]
                    ce = nn.functional.cross_entropy(logits[has][:, cols], dist, reduction="sum")
                    loss = loss + ce / logits.shape[0]
            out["loss"] = loss
        return out


def mix_batch(fbank: torch.Tensor, targets: torch.Tensor, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (as AST and DASS are trained on AudioSet): every clip mixed with another of the batch by one
    weight drawn from Beta(alpha, alpha) (torch's seeded generator), the targets mixed alike.
    fbank (B, T, F), targets (B, C) -> the same shapes."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1.0 - lam)  # the clip keeps the larger share
    perm = torch.randperm(fbank.shape[0], device=fbank.device)
    return lam * fbank + (1 - lam) * fbank[perm], lam * targets + (1 - lam) * targets[perm]


def collate_clips(batch: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([ex[k] for ex in batch]) for k in batch[0]}


def save_encoder(encoder: nn.Module, encoder_type: str, path: str | os.PathLike) -> str:
    """Write the encoder where ``SSLALMConfig.encoder_checkpoint`` can load it; returns that path."""
    return encoder.save_checkpoint(path)  # the encoder's own format (sslalm.models.encoders)


def encoder_draw_weights(
    clip_tags: Sequence[Sequence[str]], balance: float, fact_draws: float
) -> list[float]:
    """(N,) stage-0 draw weights: label balance (``clip_balance_weights`` with power ``balance``), times
    ``fact_draws`` for the clips with a fact tag (``"<fact>: <value>"``), scaled to sum to N. The language is
    learnt from speech clips alone, a third of the corpus's training clips."""
    from sslalm.data.balance import clip_balance_weights

    if fact_draws <= 0:
        raise ValueError(f"fact_draws must be positive, got {fact_draws}")
    weights = clip_balance_weights(clip_tags, balance)
    raw = [w * (fact_draws if any(map(is_fact_tag, tags)) else 1.0) for w, tags in zip(weights, clip_tags)]
    total = sum(raw)
    return [w * len(raw) / total for w in raw]


def pretrain_encoder(
    encoder: nn.Module,
    encoder_type: str,
    clips: Sequence[tuple[str, Sequence[str]]],
    labels: Sequence[str],
    frames: int,
    out_dir: str | os.PathLike,
    max_steps: int,
    batch_size: int = 16,
    learning_rate: float = 1e-3,
    seed: int = 0,
    callbacks: list | None = None,
    progress: bool = True,
    augment: bool = False,
    balance: float = 0.0,
    group_tags: bool = False,
    spec_masks: bool = False,
    mixup: float = 0.0,
    noise: bool = True,
    eq: bool = True,
    speed: float = 0.0,
    pool: str = "mean",
    fact_draws: float = 1.0,
    cepstra: int = 0,
    cepstra_labels: bool | Sequence[str] = True,
    fact_probe: bool = False,
    fact_net: int = 0,
    fact_net_epochs: int = 30,
    fact_net_warp: float = 0.0,
) -> dict[str, Any]:
    """Train ``encoder`` to tag the clips with their labels and save it to ``out_dir``; ``augment``: a random
    level on every draw, with noise if ``noise``, an equaliser if ``eq`` and a speed change within
    ``1 +- speed`` (``ClipLabelDataset``);
    ``balance``: draw clips with weight (clips of their label)^-balance (``sslalm.data.balance``);
    ``group_tags``: a softmax per tag group (``tag_groups``) instead of one over all tags; ``spec_masks``:
    SpecAugment masks (``mask_fbank``) on the augmented draws; ``mixup``: the Beta parameter of
    ``mix_batch`` (0: no mixup); ``pool``: how the classifier head pools the map (``EncoderClassifier``; the
    head is saved beside the encoder, ``save_tag_head``, for the model's tag tokens); ``fact_draws``: clips
    with a fact tag (``"<fact>: <value>"``, the spoken language) are drawn this many times as often as
    their labels' balance says; ``cepstra``: the head also reads the fbank's statistics of this many cepstra
    (``EncoderClassifier``), standardised with those of the training clips (``fit_cepstra``), and with
    ``cepstra_labels=False`` only the facts' columns read them (a list of labels: the facts' and those
    labels' columns); ``fact_probe``: after training, the facts'
    columns are refit as a logistic regression on those statistics (``fit_fact_columns``); ``fact_net``: with
    a width > 0, after training, one net of that width per fact on the fbank's frames
    (``sslalm.demo.fact_nets``, ``fact_net_epochs`` passes over the clips with that fact, their mel axes
    stretched by up to ``fact_net_warp``) gives the facts' logits instead of their columns, saved in the
    head's file."""
    from transformers import set_seed

    set_seed(seed)
    reading = cepstra_labels if isinstance(cepstra_labels, bool) else _columns(labels, cepstra_labels)
    model = EncoderClassifier(
        encoder,
        len(labels),
        tag_groups(labels) if group_tags else None,
        mixup=mixup,
        pool=pool,
        cepstra=cepstra,
        cepstra_labels=reading,
    )
    if model.cepstra is not None:
        fit_cepstra(model.cepstra, clips, labels, frames, seed)
    dataset = ClipLabelDataset(
        clips, labels, frames, seed, augment=augment, spec_masks=spec_masks, noise=noise, eq=eq, speed=speed
    )
    if balance > 0 or fact_draws != 1.0:
        dataset.sample_weights = encoder_draw_weights([names for _, names in clips], balance, fact_draws)
    logger.info(
        "stage 0 (encoder): %s with %.3f M parameters on %d clips x %d labels, %d steps of %d",
        encoder_type,
        sum(p.numel() for p in encoder.parameters()) / 1e6,
        len(dataset),
        len(labels),
        max_steps,
        batch_size,
    )
    metrics = _fit(
        model,
        dataset,
        collate_clips,
        out_dir,
        max_steps,
        batch_size,
        learning_rate,
        seed,
        callbacks,
        label_names=["targets"],
        progress=progress,
    )
    if fact_probe:
        metrics["fact_probe"] = fit_fact_columns(model, clips, labels, frames, seed)
    nets = None
    if fact_net > 0:
        from sslalm.demo.fact_nets import train_fact_nets

        with_fact = [(path, names) for path, names in clips if any(map(is_fact_tag, names))]
        fbanks = torch.cat(list(clip_fbanks(with_fact, labels, frames, seed)))
        nets, metrics["fact_nets"] = train_fact_nets(
            fbanks,
            [names for _, names in with_fact],
            labels,
            fact_net,
            fact_net_epochs,
            seed,
            warp=fact_net_warp,
            progress=progress,
        )
    save_encoder(encoder, encoder_type, out_dir)
    save_tag_head(model.head, out_dir, model.cepstra, nets)
    return metrics


def _columns(labels: Sequence[str], names: Sequence[str]) -> list[int]:
    """The columns of ``labels`` named in ``names`` (names the head does not have are ignored)."""
    wanted = set(names)
    return [i for i, lab in enumerate(labels) if lab in wanted]


def clip_fbanks(
    clips: Sequence[tuple[str, Sequence[str]]], labels: Sequence[str], frames: int, seed: int, batch: int = 64
) -> Iterator[torch.Tensor]:
    """(B, frames, 128) batches of the clips' fbanks, one unaugmented crop each (``ClipLabelDataset``)."""
    data = ClipLabelDataset(clips, labels, frames, seed)
    for i in range(0, len(data), batch):
        yield torch.stack([data[j]["fbank"] for j in range(i, min(i + batch, len(data)))])


FACT_PROBE_CS = (0.01, 0.03, 0.1, 0.3)  # inverse L2 strengths tried by the probe's cross-validation


def fit_fact_columns(
    model: EncoderClassifier,
    clips: Sequence[tuple[str, Sequence[str]]],
    labels: Sequence[str],
    frames: int,
    seed: int,
) -> dict[str, Any]:
    """Refit each fact group's head columns (the spoken language) as a logistic regression on the cepstral
    statistics alone: scikit-learn's ``LogisticRegressionCV`` (multinomial, the L2 strength of
    ``FACT_PROBE_CS`` with the best 3-fold cross-validated log-loss on the training clips, which keeps the
    probabilities the tag token mixes calibrated), one unaugmented crop per clip with that fact. The
    columns' weights on the pooled map become zero, so each group's softmax is the regression's.

    Why: trained jointly over many augmented, mixed draws the columns fit their few hundred clips (98 % of
    the training clips' languages, 65 % of the test split's in the demo); the regularised regression on the
    same statistics generalises better (``docs/demo.md``). Returns per fact the chosen C and the number of
    clips. Requires ``model.cepstra`` (fitted)."""
    import warnings

    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV

    if model.cepstra is None:
        raise ValueError("refitting the fact columns needs a head with cepstral statistics")
    index = {lab: i for i, lab in enumerate(labels)}
    dim = model.cepstra.dim
    out: dict[str, Any] = {}
    for g, cols in zip(model.group_ids, model.group_cols, strict=True):
        if g == 0:
            continue
        fact = labels[cols[0]].split(": ", 1)[0]
        rows = [(path, [n for n in names if index[n] in cols]) for path, names in clips]
        rows = [(path, names) for path, names in rows if len(names) == 1]
        y = [index[names[0]] for _, names in rows]
        if len(set(y)) < 2:
            logger.warning(
                "stage 0 (encoder): %s has fewer than two values; its columns stay as trained", fact
            )
            continue
        with torch.no_grad():
            x = torch.cat([model.cepstra(fb) for fb in clip_fbanks(rows, labels, frames, seed)]).numpy()
        folds = max(2, min(3, min(y.count(c) for c in set(y))))
        with warnings.catch_warnings():  # scikit-learn announces new defaults; the ones used are set here
            warnings.simplefilter("ignore", FutureWarning)
            probe = LogisticRegressionCV(
                Cs=list(FACT_PROBE_CS), cv=folds, scoring="neg_log_loss", max_iter=3000, random_state=seed
            ).fit(x, y)
        coef, bias = torch.as_tensor(probe.coef_).float(), torch.as_tensor(probe.intercept_).float()
        if coef.shape[0] == 1:  # two values: sklearn gives the second's logit against the first's
            coef, bias = torch.cat([torch.zeros_like(coef), coef]), torch.cat([torch.zeros(1), bias])
        with torch.no_grad():
            model.head.weight[cols] = 0.0
            model.head.bias[cols] = -30.0  # a value no training clip has: never the likeliest
            for k, c in enumerate(probe.classes_):
                model.head.weight[int(c), -dim:] = coef[k]
                model.head.bias[int(c)] = bias[k]
        chosen = float(np.ravel(probe.C_)[0])
        out[fact] = {"C": chosen, "clips": len(y), "values": len(probe.classes_)}
        logger.info("stage 0 (encoder): %s refit on %d clips (C %g)", fact, len(y), chosen)
    return out


def fit_cepstra(
    cepstra: CepstralStatistics,
    clips: Sequence[tuple[str, Sequence[str]]],
    labels: Sequence[str],
    frames: int,
    seed: int,
    max_clips: int = 1024,
) -> None:
    """Standardise ``cepstra`` with the statistics of up to ``max_clips`` training clips (evenly spaced, one
    unaugmented crop each, as the head's inputs have no running statistics to learn them from)."""
    step = max(1, math.ceil(len(clips) / max_clips))
    n = cepstra.fit(clip_fbanks(clips[::step], labels, frames, seed))
    logger.info(
        "stage 0 (encoder): cepstral statistics (%d numbers) standardised on %d clips", cepstra.dim, n
    )


TAG_HEAD_FILE = "tag_head.safetensors"  # beside the stage-0 encoder: SSLALMConfig.tag_checkpoint reads it


def save_tag_head(
    head: nn.Linear,
    out_dir: str | os.PathLike,
    cepstra: CepstralStatistics | None = None,
    fact_nets: nn.ModuleDict | None = None,
) -> str:
    """Write the stage-0 classifier head (``weight``, ``bias``, the standardisation of its cepstral
    statistics when it reads them and its fact nets when it has them: ``head_file_state``) where
    ``SSLALMConfig.tag_checkpoint`` can load it for the model's tag tokens (``sslalm.models.tagger``); returns
    its path."""
    from safetensors.torch import save_file

    path = os.path.join(out_dir, TAG_HEAD_FILE)
    save_file(head_file_state(head, cepstra, fact_nets), path)
    return path


# ---------------------------------------------------------------------------------------------- shared loop


def _fit(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    collator: Any,
    out_dir: str | os.PathLike,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    callbacks: list | None,
    label_names: Sequence[str] = ("labels",),
    progress: bool = True,
) -> dict[str, Any]:
    from transformers import Trainer, TrainingArguments

    args = TrainingArguments(
        output_dir=os.fspath(out_dir),
        per_device_train_batch_size=batch_size,
        max_steps=max_steps,
        learning_rate=learning_rate,
        warmup_steps=max(1, max_steps // 20),
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        logging_steps=max(1, max_steps // 50),
        save_strategy="no",
        report_to="none",
        seed=seed,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        label_names=list(label_names),
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not progress,
    )

    class PlainTrainer(Trainer):
        def floating_point_ops(self, inputs) -> int:  # transformers' count assumes a PreTrainedModel
            return 0

        def _get_train_sampler(self, train_dataset=None):  # label-balanced draws when the data has weights
            from sslalm.data.balance import weighted_sampler

            data = train_dataset if train_dataset is not None else self.train_dataset
            sampler = weighted_sampler(data, self.args.seed)
            return sampler if sampler is not None else super()._get_train_sampler(train_dataset)

    trainer = PlainTrainer(
        model=model, args=args, train_dataset=dataset, data_collator=collator, callbacks=callbacks
    )
    result = trainer.train()
    return dict(result.metrics)
