"""Which clips to make, and which split each source unit belongs to.

Split scheme (train / val / test share no source recording, voice, note or seed):
- **voices** (speech): espeak-ng voice variants are shuffled per gender with the build seed; about 15 % of
  each gender's variants go to val, 15 % to test, the rest to train. Languages and texts are shared (the
  language is what a question asks about; the voice is the speaker to generalise over). Festival's voices
  of recorded speakers (``inventory.FESTIVAL_VOICES``) speak ``FESTIVAL_SHARE`` of the training split's
  speech where installed, so that gender is learnt from more than one synthesiser.
- **notes** (instruments): every clip is rendered with one of the installed General MIDI soundfonts, drawn at
  random in every split (the unseen-sources set keeps another one apart); within every octave, 2 of the 12
  pitches are val roots and 2 are test roots (shuffled with the seed), the other 8 train roots. A clip is
  built on one root; its chord, arpeggio or scale notes follow from that root. Drum clips have no pitch and
  are split by seed only.
- **events** (sox / numpy): split by seed; synthesised telephone signals (``telephone.py``) are made for the
  training split only, so the held-out telephones stay real recordings.
- **recordings**: each real recording (or a whole speaker, for the eight ALSA words spoken by one person)
  is a group that lives in exactly one split. The classification label of a recording is a category
  (``animal``, ``notification chime``, ``telephone``) wherever single sounds have too few recordings; a
  category with at least 3 groups gets about 20 % of them in val and in test (at least one each), smaller
  ones (alarm clock, camera shutter, emptying the trash, the ALSA speaker) are train-only. So the test
  labels of recordings are always labels seen in training, while the recordings themselves are new; the
  specific sound (which animal) is asked in open-ended questions and is then a true generalisation test.
  Recordings of ``TRAIN_ONLY_RECORDING_SOURCES`` (GCompris's farm animals) join the training split only,
  leaving val and test exactly as without them.
  Training clips are augmented (crop, pitch shift, speed, reverb, added noise, level, repetition).
- **channels**: in every split, ``channel.CHANNEL_SHARE`` of the clips pass through a random room and
  microphone (equaliser, reverberation, small pitch or tempo change, background noise), drawn from the
  clip's seed, so that a model learns sounds rather than the few sources that made them.
- **seeds**: every clip's seed is a hash of (build seed, split, kind, index); a test checks they differ.
Mixtures take all their parts from their own split's pools.

The plan is a list of plain-dict clip specs (JSON-serialisable, machine-independent), deterministic from
the seed and the usable sources.
"""

from __future__ import annotations

import hashlib
import random
from collections import defaultdict

from .channel import CHANNEL_SHARE, channel_spec
from .inventory import (
    DIGIT_NAMES,
    DRUM_KIT,
    DRUMS,
    EVENT_LABELS,
    FESTIVAL_SHARE,
    FESTIVAL_VOICES,
    INSTRUMENT_LABELS,
    INSTRUMENTS,
    RECORDINGS,
    SENTENCES,
    WORDS,
)
from .resources import Resources

SPLITS = ("train", "val", "test")
HELD_OUT = 0.1  # fraction of clips of each kind in val and in test
KIND_WEIGHTS = {
    "speech": 0.27,
    "instrument": 0.24,
    "event": 0.14,
    "recording": 0.17,
    "sequence": 0.12,
    "speech_noise": 0.06,
}
SINGLE_KINDS = ("speech", "instrument", "event", "recording")
RECORDING_SOURCES = ("animals", "gcompris", "freedesktop", "alsa")
TRAIN_ONLY_RECORDING_SOURCES = ("gcompris",)  # more recordings of known labels, for training only
TRAIN_ONLY_EVENTS = ("phone",)  # synthesised telephone signals: the held-out splits keep real telephones
EVENTS = tuple(e for e in EVENT_LABELS if e not in TRAIN_ONLY_EVENTS)  # events of every split
REC_BY_ID = {r.id: r for r in RECORDINGS}
INSTRUMENT_BY_LABEL = {i.label: i for i in INSTRUMENTS}


def derive_seed(*parts: object) -> int:
    """A 60-bit seed from any parts (stable across runs and machines, unlike ``hash``)."""
    return int(hashlib.sha256(":".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def assign_splits(res: Resources, seed: int) -> dict[str, dict]:
    """Per split: the voices (by gender), instrument root pitches and recording ids it may use."""
    pools: dict[str, dict] = {
        s: {"voices": {}, "festival": {}, "roots": [], "recordings": [], "events": list(EVENTS)}
        for s in SPLITS
    }
    pools["train"]["events"] += TRAIN_ONLY_EVENTS
    pools["train"]["festival"] = {g: list(v) for g, v in sorted(res.festival.items())}
    for gender, variants in sorted(res.voices.items()):
        order = sorted(variants)
        random.Random(derive_seed(seed, "voices", gender)).shuffle(order)
        k = max(1, round(0.15 * len(order))) if len(order) >= 3 else 0
        parts = {"val": order[:k], "test": order[k : 2 * k], "train": order[2 * k :]}
        for s in SPLITS:
            pools[s]["voices"][gender] = sorted(parts[s])
    for octave_start in range(24, 108, 12):
        pitches = list(range(octave_start, octave_start + 12))
        random.Random(derive_seed(seed, "roots", octave_start)).shuffle(pitches)
        pools["val"]["roots"] += pitches[:2]
        pools["test"]["roots"] += pitches[2:4]
        pools["train"]["roots"] += pitches[4:]
    by_label: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for rid in sorted(res.recording_paths):
        rec = REC_BY_ID[rid]
        if rec.source in TRAIN_ONLY_RECORDING_SOURCES:
            pools["train"]["recordings"].append(rid)
        else:
            by_label[rec.label][rec.group].append(rid)
    for label in sorted(by_label):
        groups = sorted(by_label[label])
        random.Random(derive_seed(seed, "recordings", label)).shuffle(groups)
        k = max(1, round(0.2 * len(groups))) if len(groups) >= 3 else 0
        parts = {"val": groups[:k], "test": groups[k : 2 * k], "train": groups[2 * k :]}
        for s in SPLITS:
            pools[s]["recordings"] += [rid for g in parts[s] for rid in by_label[label][g]]
    for s in SPLITS:
        pools[s]["roots"].sort()
        pools[s]["recordings"].sort()
    return pools


def available_kinds(res: Resources) -> list[str]:
    kinds = []
    if "speech" in res.sources:
        kinds.append("speech")
    if "instruments" in res.sources:
        kinds.append("instrument")
    if "events" in res.sources:
        kinds.append("event")
    if any(s in res.sources for s in RECORDING_SOURCES):
        kinds.append("recording")
    if kinds:
        kinds.append("sequence")
    if "speech" in res.sources:
        kinds.append("speech_noise")
    return kinds


# ---------------------------------------------------------------- specs per kind


def spec_label(spec: dict) -> str:
    """The classification label a spec will get (known before rendering; mixtures keep parts distinct)."""
    kind = spec["kind"]
    if kind == "speech":
        return f"{spec['gender']} speech"
    if kind == "instrument":
        return spec["instrument"]
    if kind == "event":
        return EVENT_LABELS[spec["event"]]
    if kind == "recording":
        return REC_BY_ID[spec["recording"]].label
    raise ValueError(kind)


def _pick(rng: random.Random, options: list, slot: int | None):
    """The class of a clip: round-robin over ``options`` when a slot is given (balanced classes in every
    split, even a small test split), else a random choice (parts of mixtures)."""
    return options[slot % len(options)] if slot is not None else rng.choice(options)


def speech_spec(
    rng: random.Random, pool: dict, res: Resources, short: bool = False, slot: int | None = None
) -> dict:
    genders = [g for g in ("male", "female") if pool["voices"].get(g)]
    gender = _pick(rng, genders, slot)
    variant = rng.choice(pool["voices"][gender])
    language = rng.choice(sorted(res.languages))
    voice = rng.choice(res.languages[language])
    contents = ["word", "digits"] if language == "English" else ["digits"]
    if not short:
        contents += ["sentence", "sentence"]
    content = rng.choice(contents)
    spec = {
        "kind": "speech",
        "language": language,
        "voice": voice,
        "variant": variant,
        "gender": gender,
        "pitch": rng.randint(15, 60) if gender == "male" else rng.randint(40, 90),
        "speed": rng.randint(120, 190),
        "content": content,
    }
    spec.update(_speech_text(rng, content, language, short))
    festival = pool["festival"].get(gender)
    if festival and rng.random() < FESTIVAL_SHARE:  # drawn last: the espeak-ng draws stay as they were
        spec = _festival_speech(rng, spec, rng.choice(festival), short)
    return spec


def _festival_speech(rng: random.Random, spec: dict, voice: str, short: bool) -> dict:
    """``spec`` spoken by a Festival voice in its own language: the same content where the corpus has it in
    that language (sentences, English words), else digits. Festival speaks at its voice's natural pitch and
    pace, which the nominal ``pitch`` and ``speed`` describe ("low to medium" / "medium to high", normal)."""
    gender, language, _ = FESTIVAL_VOICES[voice]
    content = spec["content"]
    if (content == "word" and language != "English") or (content == "sentence" and language not in SENTENCES):
        content = "digits"
    out = {
        k: v for k, v in spec.items() if k not in ("text", "meaning", "digits", "count", "content", "voice")
    }
    out.update(
        engine="festival",
        voice=voice,
        variant=voice,
        language=language,
        pitch=40 if gender == "male" else 55,
        speed=160,
        content=content,
    )
    if content == spec["content"] and language == spec["language"]:
        out.update({k: spec[k] for k in ("text", "meaning", "digits", "count") if k in spec})
    else:
        out.update(_speech_text(rng, content, language, short))
    return out


def _speech_text(rng: random.Random, content: str, language: str, short: bool) -> dict:
    """What a speech clip says: an English word, 1-6 digits, or one of the language's sentences."""
    if content == "word":
        return {"text": rng.choice(WORDS)}
    if content == "digits":
        digits = [rng.randrange(10) for _ in range(rng.randint(1, 3) if short else rng.randint(2, 6))]
        return {
            "text": ", ".join(map(str, digits)),
            "digits": [DIGIT_NAMES[d] for d in digits],
            "count": len(digits),
        }
    text, meaning = rng.choice(SENTENCES[language])
    return {"text": text, "meaning": meaning}


def _tones(texture: str, mode: str, n: int) -> list[int]:
    major, minor = (0, 2, 4, 5, 7, 9, 11), (0, 2, 3, 5, 7, 8, 10)
    if texture == "scale":
        steps = major if mode == "major" else minor
        return [12 * (k // 7) + steps[k % 7] for k in range(n)]
    triad = (0, 4, 7) if mode == "major" else (0, 3, 7)
    return [12 * (k // 3) + triad[k % 3] for k in range(n)]


def instrument_spec(
    rng: random.Random, pool: dict, res: Resources, short: bool = False, slot: int | None = None
) -> dict:
    """An instrument clip; with several soundfonts available (``Resources.soundfonts``), one drawn at random
    after the notes (a single clip's notes do not depend on which soundfonts a machine has)."""
    spec = _instrument_notes_spec(rng, pool, short, slot)
    if len(res.soundfonts) > 1:
        spec["soundfont"] = rng.choice(sorted(res.soundfonts))
    return spec


def _instrument_notes_spec(rng: random.Random, pool: dict, short: bool, slot: int | None) -> dict:
    choices = list(INSTRUMENT_LABELS)
    name = _pick(rng, choices, slot)
    dynamics = rng.choice(["soft", "loud"])
    spec = {
        "kind": "instrument",
        "instrument": name,
        "dynamics": dynamics,
        "velocity": rng.randint(30, 55) if dynamics == "soft" else rng.randint(95, 120),
        "peak": round(rng.uniform(0.2, 0.35) if dynamics == "soft" else rng.uniform(0.8, 0.95), 3),
        "tempo": rng.randint(70, 160),
        "articulation": rng.choice(["staccato", "legato"]),
    }
    if name == DRUM_KIT:
        if short or rng.random() < 0.5:
            drum = rng.choice(sorted(DRUMS))
            count = rng.randint(2, 4 if short else 6)
            spec.update(
                texture="drum hits",
                drum=drum,
                count=count,
                pitches=[DRUMS[drum]] * count,
                articulation="staccato",
            )
        else:
            bars = rng.randint(1, 2)
            hits = []
            for b in range(4 * bars):  # kick on 1 and 3, snare on 2 and 4, closed hi-hat on every eighth
                hits.append((b, DRUMS["bass drum"] if b % 2 == 0 else DRUMS["snare drum"]))
                hits += [(b, 42), (b + 0.5, 42)]
            spec.update(texture="drum beat", bars=bars, hits=hits, pitches=[], articulation="staccato")
        return spec
    inst = INSTRUMENT_BY_LABEL[name]
    spec["root"] = root = rng.choice([p for p in pool["roots"] if inst.lo <= p <= inst.hi])
    textures = ["single note", "arpeggio", "scale"] + (["chord"] if inst.polyphonic else [])
    texture = "single note" if short and rng.random() < 0.5 else rng.choice(textures)
    mode = rng.choice(["major", "minor"])
    spec.update(texture=texture, mode=mode)
    if texture == "single note":
        spec.update(pitches=[root], count=1, sustain=round(rng.uniform(0.6, 1.2 if short else 2.5), 2))
    elif texture == "chord":
        n = rng.choice([3, 4])
        spec.update(
            pitches=[root + t for t in _tones("chord", mode, n)],
            count=n,
            sustain=round(rng.uniform(1.0, 2.5), 2),
        )
    else:
        n = rng.randint(3, 4) if short else rng.randint(3 if texture == "arpeggio" else 5, 8)
        direction = rng.choice(["ascending", "descending"])
        offs = _tones(texture, mode, n)
        pitches = (
            [root + o for o in offs]
            if direction == "ascending"
            else [root - offs[-1] + o for o in offs][::-1]
        )
        spec.update(pitches=pitches, count=n, direction=direction)
    return spec


def event_spec(
    rng: random.Random, pool: dict, res: Resources, short: bool = False, slot: int | None = None
) -> dict:
    ev = _pick(rng, pool.get("events", list(EVENTS)), slot)
    dur = round(rng.uniform(0.5, 1.5) if short else rng.uniform(0.8, 3.5), 2)
    spec = {"kind": "event", "event": ev, "duration": dur, "peak": round(rng.uniform(0.5, 0.95), 3)}
    if ev == "phone":
        from .telephone import KINDS

        spec.update(
            signal=rng.choice(KINDS),
            duration=round(rng.uniform(1.0, 2.0) if short else rng.uniform(2.0, 5.0), 2),
        )
    elif ev == "tone":
        spec["freq"] = round(150 * 20 ** rng.random(), 1)
    elif ev == "chirp":
        lo = 200 * 2.5 ** rng.random()
        hi = lo * (2 + 4 * rng.random())
        up = rng.random() < 0.5
        spec.update(f_start=round(lo if up else hi, 1), f_end=round(hi if up else lo, 1))
    elif ev == "beeps":
        spec.update(
            count=rng.randint(2, 4 if short else 8),
            unit=round(rng.uniform(0.08, 0.25), 3),
            gap=round(rng.uniform(0.1, 0.35), 3),
            freq=round(rng.uniform(400, 2500), 1),
            wave=rng.choice(["sine", "square"]),
        )
    elif ev == "clicks":
        spec.update(
            count=rng.randint(3, 5 if short else 12),
            unit=0.006,
            gap=round(rng.uniform(0.08, 0.4), 3),
            freq=round(rng.uniform(800, 3000), 1),
        )
    return spec


def recording_spec(
    rng: random.Random, pool: dict, res: Resources, short: bool = False, slot: int | None = None
) -> dict:
    labels = sorted({REC_BY_ID[r].label for r in pool["recordings"]})
    label = _pick(rng, labels, slot)
    rid = rng.choice([r for r in pool["recordings"] if REC_BY_ID[r].label == label])
    aug = rng.choice(["none", "pitch", "speed", "reverb"])
    augment: dict = {"type": aug}
    if aug == "pitch":
        augment["cents"] = rng.choice([-1, 1]) * rng.randint(100, 400)
    elif aug == "speed":
        augment["factor"] = round(rng.uniform(0.85, 1.15), 3)
    elif aug == "reverb":
        augment["reverberance"] = rng.randint(30, 90)
    noisy = rng.random() < 0.3
    return {
        "kind": "recording",
        "recording": rid,
        "max_len": 2.0 if short else 6.0,
        "augment": augment,
        "repeat_if_short": rng.randint(1, 2 if short else 4),
        "gap": round(rng.uniform(0.15, 0.5), 3),
        "noise_colour": rng.choice(["white", "pink"]) if noisy else None,
        "noise_snr": rng.randint(10, 30) if noisy else None,
        "peak": round(rng.uniform(0.4, 0.95), 3),
    }


SINGLE_SPECS = {
    "speech": speech_spec,
    "instrument": instrument_spec,
    "event": event_spec,
    "recording": recording_spec,
}


def sequence_spec(rng: random.Random, pool: dict, res: Resources, kinds: list[str], seed: int) -> dict:
    n = rng.randint(2, 4)
    parts, labels = [], set()
    for j in range(40):
        if len(parts) == n:
            break
        kind = rng.choice(kinds)
        part = dict(SINGLE_SPECS[kind](rng, pool, res, short=True), seed=derive_seed(seed, "part", j))
        part["kind"] = kind
        family = "speech" if "speech" in spec_label(part) else spec_label(part)  # one speaker per mixture
        if family not in labels:
            labels.add(family)
            parts.append(part)
    return {
        "kind": "sequence",
        "parts": parts,
        "lead": round(rng.uniform(0.1, 0.5), 2),
        "gaps": [round(rng.uniform(0.2, 0.9), 2) for _ in parts],
    }


def speech_noise_spec(rng: random.Random, pool: dict, res: Resources, seed: int) -> dict:
    speech = dict(speech_spec(rng, pool, res), seed=derive_seed(seed, "speech"))
    return {
        "kind": "speech_noise",
        "speech": speech,
        "noise_colour": rng.choice(["white", "pink", "brown"]),
        "snr": rng.randint(-5, 20),
        "lead": round(rng.uniform(0.2, 0.6), 2),
    }


def _channel(clip_seed: int) -> dict | None:
    """A random room and microphone for ``CHANNEL_SHARE`` of the clips (own RNG: the clip is unchanged)."""
    rng = random.Random(derive_seed(clip_seed, "channel"))
    return channel_spec(rng) if rng.random() < CHANNEL_SHARE else None


def _pool_has(kind: str, pool: dict) -> bool:
    if kind in ("speech", "speech_noise"):
        return any(pool["voices"].values())
    if kind == "recording":
        return bool(pool["recordings"])
    return True


def _kind_counts(kinds: list[str], size: int) -> dict[str, int]:
    """``size`` clips shared among ``kinds`` by ``KIND_WEIGHTS`` (largest remainders get the rest)."""
    weights = {k: KIND_WEIGHTS[k] for k in kinds}
    total = sum(weights.values())
    raw = {k: size * w / total for k, w in weights.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: (counts[k] - raw[k], k))[: size - sum(counts.values())]:
        counts[k] += 1
    return counts


def make_plan(res: Resources, size: int, seed: int, held_out_size: int | None = None) -> list[dict]:
    """``size`` clip specs over the usable kinds, each with ``id``, ``split`` and ``seed``.

    val and test get ``HELD_OUT`` of each kind's clips of a corpus of ``held_out_size`` clips (default:
    ``size``) and train the rest, so a larger corpus with the same ``held_out_size`` keeps val and test clip
    for clip (a clip's spec depends on its split, kind and index only) and adds training clips.
    """
    if held_out_size is not None and not 0 < held_out_size <= size:
        raise ValueError(f"held_out_size must be in 1..size ({size}), got {held_out_size}")
    pools = assign_splits(res, seed)
    kinds = available_kinds(res)
    counts = _kind_counts(kinds, size)
    held = _kind_counts(kinds, held_out_size or size)
    specs = []
    for kind in kinds:
        n = counts[kind]
        per_split = {"val": round(HELD_OUT * held[kind]), "test": round(HELD_OUT * held[kind])}
        per_split["train"] = n - per_split["val"] - per_split["test"]
        for s in ("val", "test"):  # a split without this kind's sources gives its clips to train
            if not _pool_has(kind, pools[s]):
                per_split["train"] += per_split[s]
                per_split[s] = 0
        for split in SPLITS:
            pool = pools[split]
            offset = derive_seed(seed, split, kind, "slot") % 997
            single = [k for k in SINGLE_KINDS if k in kinds and _pool_has(k, pool)]
            for i in range(per_split[split]):
                clip_seed = derive_seed(seed, split, kind, i)
                rng = random.Random(clip_seed)
                if kind in SINGLE_SPECS:
                    spec = SINGLE_SPECS[kind](rng, pool, res, slot=i + offset)
                elif kind == "sequence":
                    spec = sequence_spec(rng, pool, res, single, clip_seed)
                else:
                    spec = speech_noise_spec(rng, pool, res, clip_seed)
                spec.update(kind=kind, seed=clip_seed, split=split, id=f"{split}-{kind}-{i:05d}")
                spec["channel"] = _channel(clip_seed)
                specs.append(spec)
    return specs


def source_units(spec: dict) -> dict[str, list]:
    """The split units a clip uses (for the manifest and the disjointness test): voices, roots, recordings,
    seeds; a mixture reports its parts' units too."""
    units: dict[str, list] = {"voice": [], "note": [], "recording": [], "seed": [spec["seed"]]}
    parts = spec.get("parts", []) + ([spec["speech"]] if "speech" in spec else [])
    for part in [spec, *parts]:
        if part["kind"] == "speech":
            units["voice"].append(part["variant"])
        elif part["kind"] == "instrument" and "root" in part:
            units["note"].append(part["root"])
        elif part["kind"] == "recording":
            units["recording"].append(REC_BY_ID[part["recording"]].group)
        if part is not spec:
            units["seed"].append(part["seed"])
    return units
