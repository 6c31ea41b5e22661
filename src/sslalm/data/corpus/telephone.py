"""Synthesised telephone signals: ring, ringback, busy and dial tones of several national plans.

Why: the corpus's only telephones are three freedesktop recordings, one per split (an incoming-call ring in
train, a busy signal in test), so a model learns one ring, not what telephones sound like. The call
progress tones of the public telephone networks are published standards (ITU-T E.180 lists them per
country): a few frequencies and an on/off cadence each. Rendering them, with seeded variation of level,
detuning and cadence, gives the ``telephone`` label many sources. They go to the training split only
(``plan.TRAIN_ONLY_EVENTS``): the test's telephone stays a real recording the model never heard.

Patterns: ``(what, frequencies in Hz, cadence of (on, off) seconds, or () for a steady tone)``. Two more
kinds are rings of the handset itself: an electronic trill (two tones alternating 10-25 times a second) and
a bell (inharmonic partials struck 20 times a second), in bursts.
"""

from __future__ import annotations

import numpy as np

from .tools import SAMPLE_RATE

TonePattern = tuple[str, tuple[float, ...], tuple[tuple[float, float], ...]]

PATTERNS: dict[str, TonePattern] = {
    "ringback-us": ("ringback", (440.0, 480.0), ((2.0, 4.0),)),
    "ringback-uk": ("ringback", (400.0, 450.0), ((0.4, 0.2), (0.4, 2.0))),
    "ringback-eu": ("ringback", (425.0,), ((1.0, 4.0),)),
    "ringback-jp": ("ringback", (400.0,), ((1.0, 2.0),)),
    "busy-us": ("busy", (480.0, 620.0), ((0.5, 0.5),)),
    "busy-eu": ("busy", (425.0,), ((0.5, 0.5),)),
    "busy-uk": ("busy", (400.0,), ((0.375, 0.375),)),
    "busy-jp": ("busy", (400.0,), ((0.5, 0.5),)),
    "congestion-us": ("busy", (480.0, 620.0), ((0.25, 0.25),)),
    "congestion-eu": ("busy", (425.0,), ((0.2, 0.3),)),
    "dial-us": ("dial", (350.0, 440.0), ()),
    "dial-eu": ("dial", (425.0,), ()),
    "dial-uk": ("dial", (350.0, 450.0), ()),
}
RING_KINDS = ("trill", "bell")
KINDS = tuple(PATTERNS) + RING_KINDS

# what the corpus's texts call each kind of signal: (caption noun phrase, short phrase)
DESCRIPTIONS = {
    "ringback": ("a telephone ringback tone", "a telephone call rings out"),
    "busy": ("a telephone busy signal", "a telephone line gives a busy signal"),
    "dial": ("a telephone dial tone", "a telephone line hums with a dial tone"),
    "trill": ("an electronic telephone ringer trilling", "a telephone rings"),
    "bell": ("a ringing telephone bell", "a telephone rings"),
}


def signal_type(kind: str) -> str:
    """``ringback``, ``busy``, ``dial``, ``trill`` or ``bell`` for one of ``KINDS``."""
    return PATTERNS[kind][0] if kind in PATTERNS else kind


def phrase(kind: str) -> str:
    """The short phrase the corpus's texts use for one of ``KINDS`` ("a telephone rings")."""
    return DESCRIPTIONS[signal_type(kind)][1]


def _gate(n: int, cadence: tuple[tuple[float, float], ...], start: float) -> np.ndarray:
    """(n,) 0/1 envelope of a repeating on/off cadence, entered ``start`` seconds into its cycle."""
    if not cadence:
        return np.ones(n, dtype=np.float32)
    period = sum(on + off for on, off in cadence)
    t = (np.arange(n) / SAMPLE_RATE + start) % period
    gate = np.zeros(n, dtype=np.float32)
    t0 = 0.0
    for on, off in cadence:
        gate[(t >= t0) & (t < t0 + on)] = 1.0
        t0 += on + off
    return gate


def _smooth(gate: np.ndarray, seconds: float = 0.004) -> np.ndarray:
    """Soften the gate's edges (a few ms), as real tone generators do; avoids clicks."""
    k = max(1, int(seconds * SAMPLE_RATE))
    return np.convolve(gate, np.ones(k, dtype=np.float32) / k, mode="same").astype(np.float32)


def render(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """(N,) float32 signal of ``kind`` lasting ``seconds`` at 16 kHz, peak about 1.

    Seeded variation: frequencies detuned by up to 2 %, cadence stretched by up to 10 %, a random point of
    the first burst to start from, and for rings the trill or bell pitch and burst lengths.
    """
    n = max(int(round(seconds * SAMPLE_RATE)), 2)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    if kind in PATTERNS:
        _, freqs, cadence = PATTERNS[kind]
        stretch = rng.uniform(0.9, 1.1)
        cadence = tuple((on * stretch, off * stretch) for on, off in cadence)
        detune = rng.uniform(0.98, 1.02)
        tone = sum(np.sin(2 * np.pi * f * detune * t + rng.uniform(0, 2 * np.pi)) for f in freqs)
        start = rng.uniform(0, 0.8 * cadence[0][0]) if cadence else 0.0  # the clip starts in a tone burst
        out = tone * _smooth(_gate(n, cadence, start))
    elif kind == "trill":
        f1 = rng.uniform(600, 1500)
        f2 = f1 * rng.uniform(1.15, 1.4)
        rate = rng.uniform(10, 25)
        high = (np.floor(t * rate * 2) % 2).astype(bool)
        phase = 2 * np.pi * np.cumsum(np.where(high, f2, f1)) / SAMPLE_RATE
        on, off = rng.uniform(0.8, 2.0), rng.uniform(0.4, 1.5)
        out = np.sin(phase) * _smooth(_gate(n, ((on, off),), 0.0))
    elif kind == "bell":
        f0 = rng.uniform(700, 1600)
        partials = sum(a * np.sin(2 * np.pi * f0 * r * t) for r, a in ((1, 1.0), (2.76, 0.6), (5.4, 0.35)))
        strikes = rng.uniform(16, 24)
        decay = np.exp(-((t * strikes) % 1.0) * rng.uniform(2, 5))  # each strike of the clapper decays
        on, off = rng.uniform(1.0, 2.0), rng.uniform(0.4, 1.5)
        out = partials * decay * _smooth(_gate(n, ((on, off),), 0.0))
    else:
        raise ValueError(f"unknown telephone signal {kind!r}; one of {KINDS}")
    peak = float(np.max(np.abs(out)))
    return (out / peak if peak > 0 else out).astype(np.float32)
