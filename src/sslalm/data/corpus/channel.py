"""Random rooms and microphones: what happens to a sound between its source and a recording.

A corpus made from a handful of synthesisers and recordings teaches a model those sources, not their sounds:
scored on other voices, soundfonts and recordings it falls to the majority answer (``docs/demo.md``). So a
share of every split's clips passes through a random channel before it is written: an equaliser (one or two
peaking bands, bass or treble shelves, sometimes a telephone-like band limit), reverberation of a random
room, a small pitch shift (within 30 cents, so no note changes its name) or tempo change (within 6 %, pitch
kept), and background noise at a random signal-to-noise ratio. The clip's peak is restored afterwards,
because the corpus encodes loudness (soft or loud playing) in it.

``channel_spec(rng)`` draws a channel (a plain dict in the clip's spec, so the manifest records it);
``apply_channel(audio, channel, workdir)`` renders it with sox and numpy.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from .tools import coloured_noise, mix_at_snr, peak_normalise, sox_effects, trim_silence

CHANNEL_SHARE = 0.6  # fraction of clips (every split) that pass through a random channel


def channel_spec(rng: random.Random) -> dict:
    """A random room and microphone (JSON-serialisable)."""
    eq = []
    for _ in range(rng.randint(0, 2)):
        eq.append(["equalizer", round(200 * 30 ** rng.random()), f"{rng.uniform(0.5, 2):.2f}q"])
        eq[-1].append(round(rng.choice([-1, 1]) * rng.uniform(3, 10), 1))
    if rng.random() < 0.3:
        eq.append([rng.choice(["bass", "treble"]), round(rng.uniform(-8, 8), 1)])
    if rng.random() < 0.15:  # a narrow-band microphone or loudspeaker
        eq.append(["highpass", rng.randint(150, 400)])
        eq.append(["lowpass", rng.randint(3400, 6000)])
    spec: dict = {"eq": eq, "reverb": None, "pitch_cents": 0, "tempo": 1.0, "noise": None}
    if rng.random() < 0.4:
        spec["reverb"] = [rng.randint(20, 90), rng.randint(20, 80), rng.randint(20, 100)]
    if rng.random() < 0.3:
        spec["pitch_cents"] = rng.randint(-30, 30)
    if rng.random() < 0.3:
        spec["tempo"] = round(rng.uniform(0.94, 1.06), 3)
    if rng.random() < 0.5:
        spec["noise"] = {"colour": rng.choice(["white", "pink", "brown"]), "snr": rng.randint(15, 40)}
    return spec


def channel_effects(channel: dict) -> list[str]:
    """The sox effects chain of a channel (without the added noise)."""
    effects: list[str] = []
    for band in channel["eq"]:
        effects += [str(x) for x in band]
    if channel["pitch_cents"]:
        effects += ["pitch", str(channel["pitch_cents"])]
    if channel["tempo"] != 1.0:
        effects += ["tempo", f"{channel['tempo']:.3f}"]
    if channel["reverb"]:
        reverberance, damping, room = channel["reverb"]
        effects += ["reverb", str(reverberance), str(damping), str(room)]
    return effects


def apply_channel(audio: np.ndarray, channel: dict, workdir: Path, seed: int) -> np.ndarray:
    """``audio`` (N,) through the channel; same peak as the input. ``seed`` seeds the noise."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak < 1e-9:
        return audio
    out = sox_effects(audio, channel_effects(channel), workdir)
    if channel["reverb"]:
        out = trim_silence(out, threshold_db=-50.0)
    if channel["noise"]:
        noise = coloured_noise(channel["noise"]["colour"], out.size / 16000, np.random.default_rng(seed))
        out = mix_at_snr(out, noise, channel["noise"]["snr"])
    return peak_normalise(out, peak)
