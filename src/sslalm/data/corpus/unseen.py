"""An evaluation set from sources the corpus never uses: how well a model trained on it generalises.

The corpus's test split shares its sources with training (espeak-ng voices, the FluidR3 soundfont, the
same families of recordings), so it measures memorisation as much as hearing. This set is labelled with the
corpus's own labels but made only from sources kept out of it:

- speech: the Flite synthesiser's voices (Debian ``flite``: kal, awb and rms male, slt female; a different
  synthesis method from espeak-ng's) saying English words, digits and sentences -> ``male speech`` /
  ``female speech``;
- instruments: the TimGM6mb General MIDI soundfont (Debian ``timgm6mb-soundfont``, GPL-2) in place of
  FluidR3, playing the corpus's instruments and drums with the corpus's note plans -> the instrument label;
- UI sounds: the Yaru (Debian ``yaru-theme-sound``, GPL-3+) and Deepin (``deepin-sound-theme``, GPL-3+)
  sound themes -> ``notification chime``, ``camera shutter``, ``emptying the trash``.

Every clip also passes through a random room and microphone (``channel.py``) with probability one half.
Recorded animals and telephones from other sources were not available from the package registries, so the
set has none; that gap is stated in the report.

``build_unseen(out_dir, size, seed)`` writes ``audio/unseen/*.wav``, ``unseen_cla.json`` (the format of
``test_cla.json``) and ``labels.json`` (``cla.unseen``: the label set a model chooses from, the corpus's
labels) so that ``sslalm.eval.local.load_local(out_dir, "unseen")`` reads it. Sources that are missing on
the machine are skipped and named in ``build.json``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .channel import apply_channel, channel_spec
from .inventory import DIGIT_NAMES, SENTENCES, WORDS, a_or_an
from .plan import derive_seed, instrument_spec
from .resources import Resources
from .sources import SourceContext, render_instrument
from .tools import (
    SAMPLE_RATE,
    fade,
    peak_normalise,
    read_audio,
    run_tool,
    silence,
    trim_silence,
    which,
    write_wav,
)

logger = logging.getLogger(__name__)

UNSEEN_VERSION = 1
SOUNDFONT = "/usr/share/sounds/sf2/TimGM6mb.sf2"
FLITE_VOICES = {"kal": "male", "awb": "male", "rms": "male", "slt": "female"}
THEME_DIRS = {"yaru": "/usr/share/sounds/Yaru/stereo", "deepin": "/usr/share/sounds/deepin/stereo"}
THEME_LABELS = {"camera-shutter": "camera shutter", "trash-empty": "emptying the trash"}  # else: chime
THEME_SKIP = ("screen-capture", "x-deepin", "suspend-resume", "system-shutdown")  # not chimes or long
SHARES = {"speech": 0.3, "instrument": 0.45, "theme": 0.25}
LICENCES = {
    "speech": "synthesised with Flite (BSD-style, Carnegie Mellon University; Debian flite)",
    "instrument": "rendered with FluidSynth and the TimGM6mb soundfont (GPL-2, Tim Brechbill)",
    "yaru": "Yaru sound theme (GPL-3+, Canonical Ltd.; Debian yaru-theme-sound)",
    "deepin": "Deepin sound theme (GPL-3+, Deepin Technology; Debian deepin-sound-theme)",
}


@dataclass
class UnseenInfo:
    out_dir: Path
    clips: dict[str, int]
    skipped: dict[str, str] = field(default_factory=dict)
    reused: bool = False


def available_sources() -> tuple[dict[str, object], dict[str, str]]:
    """What this machine has: flite voices, the soundfont, theme files; and why the others are missing."""
    have: dict[str, object] = {}
    skipped: dict[str, str] = {}
    if which("flite"):
        have["speech"] = sorted(FLITE_VOICES)
    else:
        skipped["speech"] = "flite not installed (Debian package flite)"
    if which("fluidsynth") and Path(SOUNDFONT).is_file():
        have["instrument"] = SOUNDFONT
    else:
        skipped["instrument"] = f"fluidsynth or {SOUNDFONT} missing (Debian timgm6mb-soundfont)"
    files = []
    for theme, folder in THEME_DIRS.items():
        found = sorted(p for p in Path(folder).glob("*") if p.suffix in (".oga", ".ogg", ".wav"))
        files += [(theme, str(p)) for p in found if not p.stem.startswith(THEME_SKIP)]
    if files:
        random.Random(0).shuffle(files)  # a small set still mixes both themes and every kind of sound
        have["theme"] = files
    else:
        skipped["theme"] = "no Yaru or Deepin sound theme (Debian yaru-theme-sound, deepin-sound-theme)"
    return have, skipped


def _theme_label(path: str) -> str:
    stem = Path(path).stem
    return next((label for key, label in THEME_LABELS.items() if stem.startswith(key)), "notification chime")


def _speech(rng: random.Random, voices: list[str], slot: int, workdir: Path) -> tuple[np.ndarray, dict]:
    gender = ("female", "male")[slot % 2]  # balanced genders
    voice = rng.choice([v for v in voices if FLITE_VOICES[v] == gender] or voices)
    content = rng.choice(["word", "digits", "sentence"])
    if content == "word":
        text = rng.choice(WORDS)
    elif content == "digits":
        text = ", ".join(DIGIT_NAMES[rng.randrange(10)] for _ in range(rng.randint(2, 5)))
    else:
        text = rng.choice(SENTENCES["English"])[0]
    path = workdir / "flite.wav"
    run_tool(["flite", "-voice", voice, "-t", text, "-o", str(path)])
    audio = peak_normalise(trim_silence(read_audio(path)), rng.uniform(0.5, 0.95))
    gender = FLITE_VOICES[voice]  # the voice's own
    person = "man" if gender == "male" else "woman"
    meta = {"kind": "speech", "source": f"flite {voice}", "label": f"{gender} speech", "text": text}
    meta["captions"] = [f"A {person} speaks English.", f"{gender.capitalize()} speech in English."]
    return audio, meta


def _instrument(rng: random.Random, soundfont: str, seed: int, slot: int, workdir: Path):
    pool = {"roots": list(range(24, 108))}
    spec = instrument_spec(rng, pool, Resources(sources=[]), slot=slot)
    spec["seed"] = seed
    audio, meta = render_instrument(spec, SourceContext(soundfont=soundfont), workdir)
    what = spec.get("drum") or spec["instrument"]
    meta = {"kind": "instrument", "source": "TimGM6mb", "label": spec["instrument"], "what": what}
    meta["captions"] = [f"{a_or_an(what).capitalize()} plays.", f"The sound of {a_or_an(what)}."]
    return audio, meta


def _theme(rng: random.Random, files: list[tuple[str, str]], slot: int) -> tuple[np.ndarray, dict]:
    theme, path = files[slot % len(files)]
    audio = trim_silence(read_audio(path), threshold_db=-45.0)
    crop = int(6.0 * SAMPLE_RATE)
    if audio.size > crop:
        start = rng.randrange(0, audio.size - crop)
        audio = fade(audio[start : start + crop], 0.02)
    if audio.size < 0.8 * SAMPLE_RATE:  # a short blip is repeated, as the corpus does
        gap = silence(rng.uniform(0.15, 0.5))
        audio = np.concatenate([audio, gap] * (rng.randint(1, 3)) + [audio])
    label = _theme_label(path)
    meta = {"kind": "recording", "source": f"{theme} {Path(path).name}", "label": label}
    meta["captions"] = [f"The sound of {a_or_an(label)}.", f"{label.capitalize()}."]
    return peak_normalise(audio, rng.uniform(0.4, 0.95)), meta


def _render(kind: str, i: int, seed: int, have: dict, workdir: Path) -> tuple[np.ndarray, dict]:
    clip_seed = derive_seed(seed, "unseen", kind, i)
    rng = random.Random(clip_seed)
    if kind == "speech":
        audio, meta = _speech(rng, have["speech"], i, workdir)
    elif kind == "instrument":
        audio, meta = _instrument(rng, have["instrument"], clip_seed, i, workdir)
    else:
        audio, meta = _theme(rng, have["theme"], i)
    crng = random.Random(derive_seed(clip_seed, "channel"))
    if crng.random() < 0.5:
        meta["channel"] = channel_spec(crng)
        audio = apply_channel(audio, meta["channel"], workdir, clip_seed)
    audio = audio[: 10 * SAMPLE_RATE]
    if audio.size < SAMPLE_RATE:
        audio = np.concatenate([audio, silence(1.01 - audio.size / SAMPLE_RATE)])
    return audio.astype(np.float32), meta


def _counts(size: int, kinds: list[str]) -> dict[str, int]:
    total = sum(SHARES[k] for k in kinds)
    counts = {k: int(size * SHARES[k] / total) for k in kinds}
    for k in kinds[: size - sum(counts.values())]:
        counts[k] += 1
    return counts


def build_unseen(
    out_dir: str | Path,
    labels: list[str],
    size: int = 240,
    seed: int = 0,
    force: bool = False,
    progress: bool = True,
) -> UnseenInfo:
    """Build (or reuse) the unseen-sources set in ``out_dir``; ``labels``: the corpus's label set."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    have, skipped = available_sources()
    config = {"version": UNSEEN_VERSION, "size": size, "seed": seed, "labels": labels}
    config["sources"] = {k: v if k != "theme" else [p for _, p in v] for k, v in have.items()}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    try:
        old = json.loads((out / "build.json").read_text(encoding="utf-8"))
        if not force and old["config_hash"] == digest and (out / "unseen_cla.json").is_file():
            return UnseenInfo(out, old["clips"], old["skipped"], reused=True)
    except (OSError, ValueError, KeyError):
        pass
    if not have:
        raise RuntimeError(f"no unseen source is available: {skipped}")
    if out.exists():
        shutil.rmtree(out)
    (out / "audio" / "unseen").mkdir(parents=True)
    entries, rows = [], []
    counts = _counts(size, [k for k in SHARES if k in have])
    jobs = [(kind, i) for kind, n in counts.items() for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="sslalm-unseen-") as tmp:
        for kind, i in tqdm(jobs, desc="unseen clips", unit="clip", disable=not progress):
            audio, meta = _render(kind, i, seed, have, Path(tmp))
            audio_id = f"audio/unseen/{kind}-{i:04d}.wav"
            write_wav(out / audio_id, audio)
            entries.append(
                {
                    "audio_id": audio_id,
                    "label": meta["label"],
                    "labels": [meta["label"]],
                    "caption": meta["captions"][0],
                    "captions": meta["captions"],
                    "kind": meta["kind"],
                    "source": meta["source"],
                }
            )
            licence = LICENCES[kind] if kind != "theme" else LICENCES[meta["source"].split()[0]]
            rows.append({"file": audio_id, "licence": licence, "meta": meta})
    (out / "unseen_cla.json").write_text(json.dumps(entries, indent=1), encoding="utf-8")
    (out / "labels.json").write_text(
        json.dumps({"cla": {"unseen": sorted(labels)}}, indent=1), encoding="utf-8"
    )
    (out / "manifest.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    clips = {kind: n for kind, n in counts.items()}
    build = {"config": config, "config_hash": digest, "clips": clips, "skipped": skipped}
    (out / "build.json").write_text(json.dumps(build, indent=1), encoding="utf-8")
    return UnseenInfo(out, clips, skipped)
