"""The facts' frame nets (sslalm.models.frame_net), their training (sslalm.demo.fact_nets) and the tag head
that reads them (sslalm.models.tagger, SSLALMConfig.tag_fact_net)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch

from oracles import cepstra_reference
from sslalm.demo import fact_nets
from sslalm.demo.fact_nets import augment_frames, train_fact_nets, warp_factors, warp_matrices, warp_mel
from sslalm.models.cepstral import sound_mask
from sslalm.models.frame_net import FrameConvNet
from sslalm.models.tagger import TagTokens, build_fact_nets, fact_names, head_file_state

PAD = 0.467  # FbankExtractor's padding frame: the same value in every bin
TAGS = ["dog", "female speech", "piano", "language: Italian", "language: Polish"]


def _numpy_frames(frames: np.ndarray, k: int) -> np.ndarray:
    """(T, F) frames of sound only -> (T-1, 2K) mean-normalised cepstra and deltas, by the book."""
    c = cepstra_reference(frames, k)
    c = c - c.mean(0)
    return np.concatenate([c[1:], np.diff(c, axis=0)], 1)


def _two_languages(n: int, t: int = 90, seed: int = 0, bins: int = 16) -> tuple[torch.Tensor, list[int]]:
    """(n, t + 30, bins) fbanks of two "languages" with the same long-term spectrum: one changes its
    spectrum every 3 frames, the other every 12; then padding."""
    g = torch.Generator().manual_seed(seed)
    out, ys = [], []
    for i in range(n):
        y = i % 2
        hold = 3 if y == 0 else 12
        steps = torch.randn(t // hold + 1, bins, generator=g).repeat_interleave(hold, 0)[:t]
        fb = torch.full((t + 30, bins), PAD)
        fb[:t] = steps + 0.1 * torch.randn(t, bins, generator=g)
        out.append(fb)
        ys.append(y)
    return torch.stack(out), ys


def test_frames_match_numpy_ignore_padding_and_a_fixed_equaliser():
    torch.manual_seed(0)
    net = FrameConvNet(3, width=8, num_cepstra=5, num_mel_bins=16).eval()
    clip = torch.randn(37, 16)
    padded = torch.cat([clip, torch.full((20, 16), PAD)])[None]
    v, mask = net.raw_frames(padded)
    assert v.shape == (1, 56, 10) and mask.sum() == 36
    np.testing.assert_allclose(
        v[0, :36].numpy(), _numpy_frames(clip.numpy().astype(np.float64), 5), atol=1e-5
    )
    assert torch.equal(v[0, 36:], torch.zeros(20, 10))
    with torch.no_grad():  # padding changes nothing, nor does a fixed gain per mel bin (an equaliser)
        alone = net(clip[None])
        torch.testing.assert_close(net(padded), alone, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(net(clip[None] + torch.randn(16)), alone, rtol=1e-4, atol=1e-4)
        batch = torch.stack([padded[0], torch.randn(57, 16)])  # a batch reads each clip alone
        torch.testing.assert_close(net(batch)[:1], alone, rtol=1e-4, atol=1e-5)
    half = FrameConvNet(3, width=8, num_cepstra=5, num_mel_bins=16).eval()
    half.load_state_dict(net.state_dict())
    half.to(torch.bfloat16)  # a bfloat16 model: float32 logits, close to the float32 net's
    with torch.no_grad():
        out = half(padded.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, alone, rtol=0.1, atol=0.1)
    with pytest.raises(ValueError, match="fbank"):
        net(torch.randn(2, 10, 12))
    with pytest.raises(ValueError, match="two values"):
        FrameConvNet(1)


def test_fit_standardises_over_sound_frames_only():
    torch.manual_seed(0)
    net = FrameConvNet(2, width=4, num_cepstra=3, num_mel_bins=16)
    fbanks = [torch.cat([torch.randn(2, 40, 16) * 3 + 1, torch.full((2, 10, 16), PAD)], 1)]
    assert net.fit(fbanks) == 2 * 39
    v, mask = net.raw_frames(fbanks[0])
    rows = v[mask > 0]
    torch.testing.assert_close(net.shift, rows.mean(0), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(net.scale, rows.std(0, unbiased=False), rtol=1e-4, atol=1e-5)
    z, _ = net.frames(fbanks[0])
    assert torch.equal(z[0, 39:], torch.zeros(10, 6))  # padding stays zero
    with pytest.raises(ValueError, match="two sound frames"):
        net.fit([torch.full((1, 10, 16), PAD)])


def test_augment_frames_takes_windows_of_sound_and_masks_runs_and_bands():
    g = torch.Generator().manual_seed(0)
    v = torch.arange(1, 301, dtype=torch.float32)[None, :, None].repeat(3, 1, 6)  # frame index + 1 everywhere
    mask = torch.ones(3, 300)
    mask[1, 30:] = 0.0  # shorter than the window: it starts at 0
    mask[2, 100:] = 0.0  # the window stays within the sound
    for _ in range(20):
        out, m = augment_frames(v, mask, g, window=40)
        assert out.shape == (3, 40, 6) and m.shape == (3, 40)
        first = out[0].amax(dim=1)
        kept = first[first > 0]
        assert kept.min() >= 1 and kept.max() <= 300  # a window of the clip, in order
        assert torch.equal(m[1], torch.cat([torch.ones(30), torch.zeros(10)])) and out[1].amax() <= 40
        assert out[2].amax() <= 100 and torch.equal(m[2], torch.ones(40))
        masked = (out[0] == 0).all(dim=1).sum()
        assert masked <= 20  # one run of at most TIME_MASK frames
        bands = (out[0] == 0).all(dim=0)
        assert torch.equal(bands[:3], bands[3:])  # a band hides cepstra and their deltas alike


def test_warp_mel_stretches_each_clips_mel_axis_and_keeps_padding():
    g = torch.Generator().manual_seed(0)
    ramp = torch.arange(128, dtype=torch.float32)[None, None].repeat(4, 3, 1)  # bin f holds f
    ramp[:, 2] = -1.5  # a padding frame: constant over the bins
    assert torch.equal(warp_mel(ramp, g, 0.0), ramp)
    out = warp_mel(ramp, torch.Generator().manual_seed(1), 0.1)
    assert out.shape == ramp.shape and torch.equal(out[:, 2], ramp[:, 2])
    factors = out[:, 0, 1:60] / ramp[:, 0, 1:60]  # below the top bin, bin f reads f * factor
    assert torch.allclose(factors, factors[:, :1].expand_as(factors), atol=1e-5)
    assert ((factors[:, 0] - 1).abs() <= 0.1).all() and factors[:, 0].unique().numel() == 4
    assert (out[:, :2] <= 127).all()  # past the top bin it repeats the top bin
    again = warp_mel(ramp, torch.Generator().manual_seed(1), 0.1)  # deterministic for a generator
    assert torch.equal(again, out)


def test_warp_maps_fold_the_warp_into_the_dct_as_warp_mel_warps_the_fbank():
    """The training's fast path (the warp as a per-clip map before the DCT, the mask of the unwarped fbank)
    gives the frames of the warped fbank."""
    torch.manual_seed(0)
    fb = torch.randn(5, 60, 128)
    fb[1, 40:] = PAD  # padding stays padding under a warp
    fb[3, :7] = PAD
    net = FrameConvNet(3, 8)
    net.fit([torch.randn(4, 60, 128)])
    for amount in (0.0, 0.1, 0.3):
        slow_v, slow_m = net.frames(warp_mel(fb, torch.Generator().manual_seed(7), amount))
        maps = warp_matrices(warp_factors(5, torch.Generator().manual_seed(7), amount), 128)
        fast_v, fast_m = net.frames(fb, maps, sound_mask(fb))
        assert torch.equal(slow_m, fast_m)
        torch.testing.assert_close(fast_v, slow_v, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(warp_matrices(torch.ones(2), 128), torch.eye(128).expand(2, 128, 128))
    torch.testing.assert_close(fb @ maps, warp_mel(fb, torch.Generator().manual_seed(7), 0.3))


def test_training_tells_fast_from_slow_spectral_change_and_leaves_the_global_rng_alone(monkeypatch):
    torch.set_num_threads(1)
    fb, ys = _two_languages(48)
    tags = [["speech", "language: A" if y == 0 else "language: B"] for y in ys] + [["dog"]]
    fb = torch.cat([fb, torch.randn(1, 120, 16)])
    labels = ["dog", "language: A", "language: B", "speech"]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    small = dict(width=16, epochs=6, seed=0, batch_size=8, progress=False)
    nets, metrics = train_fact_nets(_as_128(fb), tags, labels, **small)
    assert torch.equal(torch.get_rng_state(), before)
    assert list(nets) == ["language"] and not nets.training
    assert metrics["language"]["clips"] == 48 and metrics["language"]["values"] == 2
    assert metrics["language"]["steps"] == 6 * 6
    test, ty = _two_languages(20, seed=1)
    with torch.no_grad():
        pred = nets["language"](_as_128(test)).argmax(1)
    assert (pred == torch.tensor(ty)).float().mean() >= 0.9
    again, _ = train_fact_nets(_as_128(fb), tags, labels, **small)  # deterministic for a seed
    for (name, a), b in zip(nets.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    # warped draws, on 128 bins of their own (the 8-fold repetition leaves cepstra at zero that the warp's
    # interpolation would fill)
    fine, ys = _two_languages(48, bins=128)
    tags = [["speech", "language: A" if y == 0 else "language: B"] for y in ys]
    drawn = []  # every batch goes through its own warp, within 1 +- 0.1
    monkeypatch.setattr(fact_nets, "warp_matrices", lambda f, n: drawn.append(f) or warp_matrices(f, n))
    warped, _ = train_fact_nets(fine, tags, labels, **small, warp=0.1)
    factors = torch.cat(drawn)
    assert len(drawn) == 36 and ((factors - 1).abs() <= 0.1).all() and factors.std() > 0.03
    test, ty = _two_languages(20, seed=1, bins=128)
    with torch.no_grad():
        pred = warped["language"](test).argmax(1)
    assert (pred == torch.tensor(ty)).float().mean() >= 0.9
    with pytest.raises(ValueError, match="warp"):
        train_fact_nets(_as_128(fb), tags, labels, **small, warp=1.0)
    with pytest.raises(ValueError, match="fbanks for"):
        train_fact_nets(_as_128(fb[:3]), tags, labels, **small)
    none, out = train_fact_nets(_as_128(fb[-1:]), tags[-1:], labels, **small)  # no clip has the fact
    assert len(none) == 0 and out == {}


def _as_128(fb: torch.Tensor) -> torch.Tensor:
    """(B, T, 16) -> (B, T, 128): each of 16 bins spread over 8 mel bins (the nets read 128)."""
    return fb.repeat_interleave(8, dim=-1)


def test_tag_head_file_round_trip_and_fact_logits_replace_the_columns():
    torch.manual_seed(0)
    words = [[i + 1] for i in range(len(TAGS))]
    tagger = TagTokens(6, TAGS, words, pool="mean", fact_net=8).eval()
    assert fact_names(TAGS) == ["language"] and list(tagger.fact_nets) == ["language"]
    state = head_file_state(tagger.head, tagger.cepstra, tagger.fact_nets)
    assert "facts.language.convs.0.weight" in state and "facts.language.norms.2.running_var" in state
    with torch.no_grad():
        for v in state.values():
            if v.is_floating_point():
                v.copy_(torch.randn_like(v).abs() + 0.1)
    other = TagTokens(6, TAGS, words, pool="mean", fact_net=8)
    other.load_head_state(state)
    other.train()  # the model's training mode leaves the nets' batch norms and dropout off
    assert not other.fact_nets.training
    features, fbank = torch.randn(2, 6, 2, 3), torch.randn(2, 50, 128)
    with torch.no_grad():
        probs = other.probabilities(features, fbank)
        logits = features.mean((2, 3)) @ state["weight"].T + state["bias"]
        torch.testing.assert_close(probs[0], logits[:, :3].softmax(-1))
        torch.testing.assert_close(probs[1], other.fact_nets["language"](fbank).softmax(-1))
    with pytest.raises(ValueError, match="needs the fbank"):
        other.probabilities(features)
    with pytest.raises(ValueError, match="this head needs"):
        TagTokens(6, TAGS, words, pool="mean").load_head_state(state)
    assert len(build_fact_nets(["dog", "language: A"], 4)) == 0  # one value: nothing to tell apart


def test_pretrained_fact_net_is_what_the_lalm_reads(tmp_path):
    from sslalm.demo.pretrain import pretrain_encoder
    from sslalm.demo.recipe import sslalm_recipe
    from sslalm.errors import UserError
    from sslalm.models.lalm import SSLALM, SSLALMConfig, build_encoder

    torch.set_num_threads(1)
    recipe = sslalm_recipe()
    rng = np.random.default_rng(0)
    clips = []
    for i in range(8):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, rng.normal(0, 0.1, 8000).astype(np.float32), 16000)
        clips.append((str(path), ["female speech", "language: Italian" if i % 2 else "language: Polish"]))
    clips.append((str(tmp_path / "c0.wav"), ["dog"]))
    base = SSLALMConfig(encoder_type=recipe.encoder_type, encoder_config=recipe.encoder_config)
    labels = ["dog", "female speech", "language: Italian", "language: Polish"]
    metrics = pretrain_encoder(
        build_encoder(base),
        "dass",
        clips,
        labels,
        64,
        tmp_path / "enc",
        max_steps=1,
        batch_size=2,
        group_tags=True,
        progress=False,
        fact_net=4,
        fact_net_epochs=2,
    )
    assert metrics["fact_nets"]["language"]["clips"] == 8
    config = SSLALMConfig.preset(
        recipe.preset,
        encoder_config=recipe.encoder_config,
        encoder_checkpoint=str(tmp_path / "enc"),
        train_frames=64,
        tag_names=labels,
        tag_pool="mean",
        tag_fact_net=4,
        tag_checkpoint=str(tmp_path / "enc" / "tag_head.safetensors"),
    )
    model = SSLALM(config).eval()
    assert "tagger.fact_nets.language.out.weight" in model.trainable_state_dict()
    with pytest.raises(UserError, match="tag_fact_net 0"):  # the config forgot the head's nets
        SSLALM(dataclasses.replace(config, tag_fact_net=0))
    model.save_pretrained(tmp_path / "m")
    loaded = SSLALM.from_pretrained(tmp_path / "m").eval()
    fbank = torch.randn(1, 64, 128)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.tagger.fact_nets["language"](fbank), model.tagger.fact_nets["language"](fbank)
        )
