"""Renderers: turn one clip specification (a plain dict from ``plan.py``) into audio and metadata.

One renderer per kind of clip:
- ``speech``: espeak-ng speaks a word, a digit sequence or a sentence with a voice variant, pitch and speed;
- ``instrument``: a tiny MIDI file (``midi.py``) rendered by FluidSynth with a General MIDI soundfont;
  a single note, a chord, an arpeggio or a scale, staccato or legato, soft or loud; or drums on channel 10;
- ``event``: sox tones, chirps, beeps and clicks, numpy coloured noise and telephone signals;
- ``recording``: a real recording (animals, UI sounds, ALSA speech) cropped and augmented with sox
  (pitch shift, speed, reverb) and numpy (added noise, level), repeated when it is very short;
- ``sequence``: two to four of the above, one after another, with their onsets;
- ``speech_noise``: speech over coloured noise at a chosen signal-to-noise ratio.

Each renderer returns ``(audio, meta)``: mono float32 at 16 kHz and the generating facts the questions are
written from (``label``, ``phrase`` and everything the spec chose). The spec's ``seed`` seeds all
randomness, so a clip depends only on its spec. ``SourceContext`` carries the machine-specific paths
(soundfont, decoded recordings) that must not enter the specs or the records.
"""

from __future__ import annotations

import functools
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import telephone
from .channel import apply_channel
from .inventory import (
    DRUM_KIT,
    EVENT_LABELS,
    FESTIVAL_TEXT_ENCODING,
    INSTRUMENTS,
    RECORDINGS,
    a_or_an,
)
from .midi import DRUM_CHANNEL, Note, write_midi
from .tools import (
    SAMPLE_RATE,
    ToolError,
    coloured_noise,
    fade,
    mix_at_snr,
    peak_normalise,
    read_audio,
    run_tool,
    silence,
    sox_effects,
    sox_synth,
    trim_silence,
)

logger = logging.getLogger(__name__)

MIN_SECONDS = 1.0
MAX_SECONDS = 10.0
INSTRUMENTS_BY_LABEL = {i.label: i for i in INSTRUMENTS}
RECORDINGS_BY_ID = {r.id: r for r in RECORDINGS}


@dataclass
class SourceContext:
    """Machine-specific inputs for the renderers: soundfont path and local paths of the recordings."""

    soundfont: str = ""  # the default soundfont
    soundfonts: dict[str, str] = field(default_factory=dict)  # name -> file, for specs that name one
    recording_paths: dict[str, str] = field(default_factory=dict)


def _rng(spec: dict) -> random.Random:
    return random.Random(spec["seed"])


def _np_rng(spec: dict) -> np.random.Generator:
    return np.random.default_rng(spec["seed"])


# ---------------------------------------------------------------- speech


def render_speech(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """espeak-ng speech, or Festival's with ``engine: festival``. Spec: voice, variant, gender, pitch (0-99),
    speed (words/min), text (a Festival voice speaks at its own pitch and pace)."""
    path = workdir / "speech.wav"
    if spec.get("engine") == "festival":
        text_file = workdir / "speech.txt"
        encoding = FESTIVAL_TEXT_ENCODING.get(spec["language"], "latin-1")
        text_file.write_text(spec["text"] + "\n", encoding=encoding)
        voice = f"(voice_{spec['voice']})"
        run_tool(["text2wave", "-eval", voice, "-F", "16000", str(text_file), "-o", str(path)])
        if not path.is_file() or path.stat().st_size <= 44:  # text2wave exits 0 on text it cannot read
            raise ToolError(f"text2wave wrote no audio for {spec['text']!r} with {spec['voice']}")
    else:
        voice = spec["voice"] if spec["variant"] == "default" else f"{spec['voice']}+{spec['variant']}"
        pitch, speed = str(spec["pitch"]), str(spec["speed"])
        run_tool(["espeak-ng", "-v", voice, "-p", pitch, "-s", speed, "-w", str(path), spec["text"]])
    audio = peak_normalise(trim_silence(read_audio(path)), 0.9)
    gender = spec["gender"]
    meta = dict(spec, label=f"{gender} speech", phrase=f"a {'man' if gender == 'male' else 'woman'} speaks")
    return audio, meta


# ---------------------------------------------------------------- instruments


def instrument_notes(spec: dict) -> list[Note]:
    """The notes a spec plays (pitches already chosen by the plan); times follow tempo and articulation."""
    beat = 60.0 / spec["tempo"]
    hold = beat * (0.3 if spec["articulation"] == "staccato" else 1.0)
    vel = spec["velocity"]
    pitches = spec["pitches"]
    if spec["texture"] in ("single note", "chord"):
        length = 0.35 if spec["articulation"] == "staccato" else spec.get("sustain", 1.5)
        return [Note(0.05, length, p, vel) for p in pitches]
    if spec["texture"] == "drum beat":
        return [Note(0.05 + t * beat, 0.1, p, vel) for t, p in spec["hits"]]
    return [Note(0.05 + k * beat, hold, p, vel) for k, p in enumerate(pitches)]


def render_instrument(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """FluidSynth renders the spec's notes with its General MIDI program (drums on channel 10), with the
    soundfont the spec names (``ctx.soundfont`` when it names none or one this machine lacks)."""
    mid, wav = workdir / "clip.mid", workdir / "clip.wav"
    drums = spec["instrument"] == DRUM_KIT
    channel = DRUM_CHANNEL if drums else 0
    program = 0 if drums else INSTRUMENTS_BY_LABEL[spec["instrument"]].program
    write_midi(mid, instrument_notes(spec), program=program, channel=channel)
    run_tool(
        [
            "fluidsynth",
            "-ni",
            "-q",
            "-o",
            "synth.dynamic-sample-loading=1",
            "-F",
            str(wav),
            "-r",
            str(SAMPLE_RATE),
            ctx.soundfonts.get(spec.get("soundfont", ""), ctx.soundfont),
            str(mid),
        ]
    )
    audio = trim_silence(read_audio(wav), threshold_db=-45.0)
    audio = peak_normalise(fade(audio[: int(MAX_SECONDS * SAMPLE_RATE)]), spec["peak"])
    what = spec.get("drum") or spec["instrument"]
    phrase = f"{a_or_an(what)} is played" if drums else f"{a_or_an(spec['instrument'])} plays"
    return audio, dict(spec, label=spec["instrument"], phrase=phrase)


# ---------------------------------------------------------------- sound events


def render_event(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """Tones, chirps, beeps and clicks from sox; white, pink and brown noise and telephone signals from
    numpy (seeded)."""
    ev, dur = spec["event"], spec["duration"]
    tmp = workdir / "event.wav"
    if ev == "tone":
        audio = sox_synth(dur, ["sine", f"{spec['freq']:.1f}"], tmp)
    elif ev == "chirp":
        audio = sox_synth(dur, ["sine", f"{spec['f_start']:.1f}:{spec['f_end']:.1f}"], tmp)
    elif ev in ("white", "pink", "brown"):
        audio = coloured_noise(ev, dur, _np_rng(spec))
    elif ev == "phone":
        audio = telephone.render(spec["signal"], dur, _np_rng(spec))
    elif ev in ("beeps", "clicks"):
        if ev == "beeps":
            unit = fade(sox_synth(spec["unit"], [spec["wave"], f"{spec['freq']:.1f}"], tmp), 0.005)
        else:
            unit = sox_synth(
                spec["unit"],
                [
                    "square",
                    f"{spec['freq']:.1f}",
                    "fade",
                    "q",
                    "0",
                    f"{spec['unit']}",
                    f"{spec['unit'] * 0.9:.4f}",
                ],
                tmp,
            )
        gap = silence(spec["gap"])
        pieces = []
        for k in range(spec["count"]):
            pieces += [unit, gap] if k < spec["count"] - 1 else [unit]
        audio = np.concatenate(pieces)
    else:
        raise ValueError(f"unknown event {ev!r}")
    audio = peak_normalise(fade(audio, 0.01), spec["peak"])
    if ev == "phone":
        return audio, dict(spec, label=EVENT_LABELS[ev], phrase=telephone.phrase(spec["signal"]))
    phrase = {
        "tone": "a steady tone sounds",
        "chirp": f"a chirp sweeps {'up' if spec.get('f_end', 0) > spec.get('f_start', 0) else 'down'}",
        "white": "white noise hisses",
        "pink": "pink noise rushes",
        "brown": "brown noise rumbles",
        "beeps": "an electronic beep repeats",
        "clicks": "a sharp click repeats",
    }[ev]
    return audio, dict(spec, label=EVENT_LABELS[ev], phrase=phrase)


# ---------------------------------------------------------------- real recordings


@functools.lru_cache(maxsize=64)
def _decoded(path: str) -> np.ndarray:
    return trim_silence(read_audio(path), threshold_db=-45.0)


def render_recording(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """A crop of a real recording, augmented (sox pitch / speed / reverb, added noise), maybe repeated."""
    rec = RECORDINGS_BY_ID[spec["recording"]]
    src = _decoded(ctx.recording_paths[rec.id])
    rng = _rng(spec)
    crop = int(spec["max_len"] * SAMPLE_RATE)
    start = 0
    if src.size > crop:  # prefer a crop that is not mostly silence
        for _ in range(8):
            start = rng.randrange(0, src.size - crop)
            if np.sqrt(np.mean(src[start : start + crop] ** 2)) > 0.1 * np.max(np.abs(src)):
                break
    piece = fade(src[start : start + crop], 0.02)
    aug = spec["augment"]
    effects = {
        "pitch": ["pitch", str(aug.get("cents", 0))],
        "speed": ["speed", f"{aug.get('factor', 1.0):.3f}"],
        "reverb": ["reverb", str(aug.get("reverberance", 50))],
        "none": [],
    }[aug["type"]]
    piece = sox_effects(piece, effects, workdir)
    if aug["type"] == "reverb":
        piece = trim_silence(piece, threshold_db=-45.0)
    # a very short sound (a UI blip) is repeated so the clip has some substance; the count is then a question
    repeats = spec["repeat_if_short"] if piece.size < 0.8 * SAMPLE_RATE else 1
    pieces = []
    for k in range(repeats):
        pieces.append(piece)
        if k < repeats - 1:
            pieces.append(silence(spec["gap"]))
    audio = np.concatenate(pieces)
    if spec["noise_snr"] is not None:
        noise = coloured_noise(spec["noise_colour"], audio.size / SAMPLE_RATE, _np_rng(spec))
        audio = mix_at_snr(audio, noise, spec["noise_snr"])
    audio = peak_normalise(audio[: int(MAX_SECONDS * SAMPLE_RATE)], spec["peak"])
    meta = dict(
        spec,
        label=rec.label,
        what=rec.what,
        phrase=rec.phrase,
        source=rec.source,
        licence=rec.licence,
        author=rec.author,
        group=rec.group,
        repeats=repeats,
        crop_start_s=round(start / SAMPLE_RATE, 3),
    )
    return audio, meta


# ---------------------------------------------------------------- mixtures


def render_sequence(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """Parts one after another with gaps; records each part's onset and offset in seconds."""
    pos = spec["lead"]
    pieces, events = [silence(spec["lead"])], []
    for part, gap in zip(spec["parts"], spec["gaps"], strict=True):
        audio, meta = render_any(part, ctx, workdir)
        audio = peak_normalise(audio, part.get("peak", 0.9))
        if events and (pos + audio.size / SAMPLE_RATE) > MAX_SECONDS:
            break  # the plan keeps parts short; this guard keeps the clip within range regardless
        onset = pos
        pos += audio.size / SAMPLE_RATE
        events.append(dict(meta, onset=round(onset, 2), offset=round(pos, 2)))
        pieces.append(audio)
        if pos + gap < MAX_SECONDS:
            pieces.append(silence(gap))
            pos += gap
    audio = peak_normalise(np.concatenate(pieces)[: int(MAX_SECONDS * SAMPLE_RATE)], 0.9)
    meta = {k: v for k, v in spec.items() if k != "parts"}
    meta.update(events=events, count=len(events), label="; ".join(e["label"] for e in events))
    return audio, meta


def render_speech_noise(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """Speech placed after a short lead-in over coloured noise, mixed at ``snr`` dB (speech vs noise)."""
    speech, smeta = render_speech(spec["speech"], ctx, workdir)
    lead = silence(spec["lead"])
    clean = np.concatenate([lead, speech, lead])
    noise = coloured_noise(spec["noise_colour"], clean.size / SAMPLE_RATE, _np_rng(spec))
    # SNR is defined over the speech segment only, so silence in the lead-in does not dilute it
    seg = slice(lead.size, lead.size + speech.size)
    scale = np.sqrt(np.mean(speech**2) / (np.mean(noise[seg] ** 2) * 10 ** (spec["snr"] / 10)))
    audio = peak_normalise(clean + scale * noise, 0.9)
    meta = {k: v for k, v in spec.items() if k != "speech"}
    meta.update(
        speech=smeta,
        label=smeta["label"],
        phrase=smeta["phrase"],
        noise_label=EVENT_LABELS[spec["noise_colour"]],
    )
    return audio, meta


RENDERERS = {
    "speech": render_speech,
    "instrument": render_instrument,
    "event": render_event,
    "recording": render_recording,
    "sequence": render_sequence,
    "speech_noise": render_speech_noise,
}


def render_any(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    return RENDERERS[spec["kind"]](spec, ctx, workdir)


def render_clip(spec: dict, ctx: SourceContext, workdir: Path) -> tuple[np.ndarray, dict]:
    """A finished corpus clip: rendered, through its channel (if any), cut to at most 10 s, padded with
    silence to at least 1 s."""
    audio, meta = render_any(spec, ctx, workdir)
    if spec.get("channel"):
        audio = apply_channel(audio, spec["channel"], workdir, (spec["seed"] * 31 + 7) % 2**63)
    audio = audio[: int(MAX_SECONDS * SAMPLE_RATE)]
    if audio.size < MIN_SECONDS * SAMPLE_RATE:
        audio = np.concatenate([audio, silence(MIN_SECONDS - audio.size / SAMPLE_RATE + 0.01)])
    meta["duration"] = round(audio.size / SAMPLE_RATE, 3)
    return audio.astype(np.float32), meta
