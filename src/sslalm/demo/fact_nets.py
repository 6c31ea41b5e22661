"""Stage 0, after the encoder: train the tag head's fact nets (``sslalm.models.frame_net``) on the clips.

One ``FrameConvNet`` per fact of the labels (the spoken language), trained with cross-entropy on the
training clips that have exactly one value of that fact, one unaugmented crop of the model's input length
each (the augmentation the corpus gave them stays: its speech already comes through random rooms, equalisers
and noise). Every draw reads a random window of ``WINDOW`` frames of the clip's sound and hides one random
run of up to ``TIME_MASK`` frames and one band of up to ``BAND_MASK`` cepstra (and their deltas), as
SpecAugment does. With ``warp``, every draw's mel axis is first stretched by a random factor
(``warp_mel``; training folds it into the DCT, ``warp_matrices``): a longer or shorter vocal tract moves
every formant by about one factor, so the nets learn languages rather than the training split's few voices
(the held-out splits' voices are others). AdamW with a one-cycle learning rate, label smoothing 0.1. The
global RNG is left as it was: everything random draws from generators seeded with ``seed``.

Why a loop of our own and not ``transformers.Trainer``: the whole training is about a thousand steps of a
0.2 M-parameter net on tensors already in memory (38 s for the language on two cores in the demo); the
Trainer's set-up and its per-step bookkeeping would cost more than the net.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from sslalm.models.cepstral import sound_mask
from sslalm.models.tagger import build_fact_nets, fact_names, tag_group_columns

logger = logging.getLogger(__name__)

WINDOW, TIME_MASK, BAND_MASK = 120, 20, 5  # frames of 10 ms; cepstra


def augment_frames(
    v: torch.Tensor, mask: torch.Tensor, gen: torch.Generator, window: int = WINDOW
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, 2K) standardised frames, (B, T) sound mask -> (B, W, 2K), (B, W): per clip a random window of
    ``window`` frames within its sound (its start when shorter), one run of up to ``TIME_MASK`` frames and one
    band of up to ``BAND_MASK`` cepstra set to zero (the training mean), deltas alike."""
    b, t, width = v.shape
    k = width // 2
    w = min(window, t)
    last = (mask * torch.arange(1, t + 1)).amax(dim=1)  # (B,) frames up to the last sound frame
    out_v, out_m = torch.empty(b, w, width), torch.empty(b, w)
    for i in range(b):
        start = int(torch.randint(0, max(1, int(last[i]) - w + 1), (1,), generator=gen))
        x = v[i, start : start + w].clone()
        run = int(torch.randint(0, TIME_MASK + 1, (1,), generator=gen))
        at = int(torch.randint(0, max(1, w - run + 1), (1,), generator=gen))
        x[at : at + run] = 0.0
        band = int(torch.randint(0, min(BAND_MASK, k - 1) + 1, (1,), generator=gen))
        low = int(torch.randint(0, k - band + 1, (1,), generator=gen))
        x[:, low : low + band] = 0.0
        x[:, k + low : k + low + band] = 0.0
        out_v[i], out_m[i] = x, mask[i, start : start + w]
    return out_v, out_m


def warp_factors(batch: int, gen: torch.Generator, amount: float) -> torch.Tensor:
    """(B,) random stretch factors of the mel axis, uniform in 1 +- ``amount``."""
    return 1.0 + (torch.rand(batch, generator=gen) * 2.0 - 1.0) * amount


def warp_sources(factors: torch.Tensor, bins: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B,) factors -> where each clip's warped bin d reads: (B, F) lower and upper source bins and the upper
    one's weight (bin d reads d * factor, linearly interpolated, the top bin past the end)."""
    source = (torch.arange(bins, dtype=torch.float32)[None] * factors[:, None]).clamp(0, bins - 1)  # (B, F)
    low = source.floor().long()
    return low, (low + 1).clamp(max=bins - 1), source - low


def warp_matrices(factors: torch.Tensor, bins: int) -> torch.Tensor:
    """(B,) factors -> (B, F, F) maps with ``fbank @ maps[b]`` = clip b's ``warp_mel``: the fast path of
    training, which folds the warp into the DCT (``FrameConvNet.frames(..., warp=)``) instead of building
    every warped fbank."""
    low, high, weight = warp_sources(factors, bins)
    maps = torch.zeros(len(factors), bins, bins)
    maps.scatter_add_(1, low.unsqueeze(1), (1.0 - weight).unsqueeze(1))  # maps[b, low[b, d], d] += 1 - w
    maps.scatter_add_(1, high.unsqueeze(1), weight.unsqueeze(1))
    return maps


def warp_mel(fbank: torch.Tensor, gen: torch.Generator, amount: float) -> torch.Tensor:
    """(B, T, F) fbank -> the same with each clip's mel axis stretched by its own random factor in
    1 +- ``amount`` (``warp_factors``, read as ``warp_sources`` says): vocal tract length perturbation. A
    frame constant over the bins (padding) stays as it is. The slow, plain twin of ``warp_matrices``."""
    b, t, f = fbank.shape
    low, high, weight = warp_sources(warp_factors(b, gen, amount), f)  # (B, F) each
    weight = weight.unsqueeze(1).to(fbank.dtype)  # (B, 1, F)

    def read(index: torch.Tensor) -> torch.Tensor:
        return torch.gather(fbank, 2, index.unsqueeze(1).expand(b, t, f))

    return read(low) * (1.0 - weight) + read(high) * weight


def train_fact_nets(
    fbanks: torch.Tensor,
    clip_tags: Sequence[Sequence[str]],
    labels: Sequence[str],
    width: int,
    epochs: int,
    seed: int = 0,
    batch_size: int = 32,
    learning_rate: float = 3e-3,
    warp: float = 0.0,
    progress: bool = True,
) -> tuple[nn.ModuleDict, dict[str, Any]]:
    """Train one net per fact of ``labels`` on (N, T, 128) ``fbanks`` of the clips whose tags are
    ``clip_tags`` (``warp``: ``warp_mel``'s amount on every draw, 0 for none); returns the nets
    (``build_fact_nets``, in eval mode) and per fact the number of clips, of
    values and of steps, the final epoch's training loss and the seconds it took."""
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")
    if not 0.0 <= warp < 1.0:
        raise ValueError(f"warp must lie in [0, 1), got {warp}")
    if len(clip_tags) != fbanks.shape[0]:
        raise ValueError(f"{fbanks.shape[0]} fbanks for {len(clip_tags)} clips")
    groups = tag_group_columns(labels)
    metrics: dict[str, Any] = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        nets = build_fact_nets(labels, width)
        for fact, cols in zip(fact_names(labels), groups[1:], strict=True):
            if fact not in nets:
                continue
            values = {labels[c]: j for j, c in enumerate(cols)}
            rows = [(i, [values[t] for t in tags if t in values]) for i, tags in enumerate(clip_tags)]
            rows = [(i, found[0]) for i, found in rows if len(found) == 1]
            if len({y for _, y in rows}) < 2:
                logger.warning("stage 0 (facts): %s has fewer than two values among the clips; no net", fact)
                del nets[fact]
                continue
            start = time.perf_counter()
            net = nets[fact]
            x = fbanks[[i for i, _ in rows]]
            y = torch.tensor([v for _, v in rows])
            metrics[fact] = _train_one(net, x, y, epochs, batch_size, learning_rate, seed, warp, progress)
            metrics[fact].update(clips=len(rows), values=len(cols), seconds=time.perf_counter() - start)
            logger.info(
                "stage 0 (facts): %s net on %d clips, %d steps, %.1f s",
                fact,
                len(rows),
                metrics[fact]["steps"],
                metrics[fact]["seconds"],
            )
    return nets.eval(), metrics


def _train_one(
    net: nn.Module,
    fbanks: torch.Tensor,
    y: torch.Tensor,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    warp: float,
    progress: bool,
) -> dict[str, Any]:
    """Fit ``net``'s standardisation on (N, T, 128) ``fbanks``, then train it on them for ``epochs`` (with
    ``warp``, each batch's frames are computed again through its clips' ``warp_matrices``)."""
    from tqdm.auto import tqdm

    chunks = [fbanks[i : i + 64] for i in range(0, len(fbanks), 64)]
    net.fit(chunks)
    if warp == 0:
        with torch.no_grad():
            parts = [net.frames(fb) for fb in chunks]
        v, mask = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])  # (N, T-1, 2K), (N, T-1)
    else:
        sound = torch.cat([sound_mask(fb) for fb in chunks])  # (N, T): a warp keeps padding frames constant
    per_epoch = max(1, len(y) // batch_size)
    steps = epochs * per_epoch
    opt = torch.optim.AdamW(net.parameters(), lr=learning_rate / 1.5, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    losses: list[float] = []
    for _ in tqdm(range(epochs), desc="stage 0 (facts)", disable=not progress, leave=False):
        order = torch.randperm(len(y), generator=gen)
        losses = []
        for b in range(per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            if warp > 0:
                maps = warp_matrices(warp_factors(len(idx), gen, warp), fbanks.shape[-1])
                with torch.no_grad():
                    xv, xm = augment_frames(*net.frames(fbanks[idx], maps, sound[idx]), gen)
            else:
                xv, xm = augment_frames(v[idx], mask[idx], gen)
            loss = nn.functional.cross_entropy(net.classify(xv, xm), y[idx], label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    net.eval()
    return {"steps": steps, "loss": sum(losses) / len(losses)}
