"""Question-answer pairs in OpenAQA format, written from each clip's generating metadata.

Two kinds, as in LTU's OpenAQA (``docs/ltu.md``, "OpenAQA records"):
- closed-ended (``CLOSED_TASKS``): ``cla_label`` (the answer is exactly the label string, which the
  evaluation embeds as "sound of <label>"), ``caption``, ``temporal_order`` (mixtures) and ``count``
  (digits, notes, hits, beeps, clicks, repetitions, events). About half carry the prefix
  ``Closed-ended question: ``, as LTU's mixing script does;
- open-ended (``OPEN_TASKS``, all named ``open_*``): language, gender, pitch, speaking rate and content of
  speech; instrument, how it is played, note; what an event is; what made a recording and how it sounds;
  background noise; which sound comes first and why; what the events are.
Every answer is a statement about what the spec put into the audio, never a guess. The question wording is
drawn from small paraphrase lists with the clip's own seed, so records are deterministic.
"""

from __future__ import annotations

import math
import random

from . import telephone
from .inventory import ACCENTS, DRUM_KIT, INSTRUMENTS, NOTE_NAMES, a_or_an

CLOSED_PREFIX = "Closed-ended question: "
CLOSED_TASKS = ("cla_label", "caption", "temporal_order", "count")
OPEN_TASKS = (
    "open_language",
    "open_gender",
    "open_pitch",
    "open_speed",
    "open_content",
    "open_instrument",
    "open_playing",
    "open_note",
    "open_event",
    "open_source",
    "open_acoustics",
    "open_noise",
    "open_temporal",
    "open_events",
)
DATASET = "sslalm-local"
NOISE_SOUND = {
    "white": "a bright steady hiss",
    "pink": "a steady rushing sound",
    "brown": "a deep steady rumble",
}
MAX_OPEN_PER_CLIP = 3
FAMILY = {i.label: i.family for i in INSTRUMENTS}
NUMBERS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
)

CLA_QUESTIONS = (
    "Classify the sound.",
    "What is the sound?",
    "Identify the sound in this audio clip.",
    "What sound class does this audio belong to?",
    "Give the label of the sound.",
    "Produce an audio label for this clip.",
)
CAPTION_QUESTIONS = (
    "Write an audio caption describing the sound.",
    "Describe the audio in one sentence.",
    "Caption this audio clip.",
    "Write a short description of what you hear.",
)


def _num(n: int) -> str:
    return NUMBERS[n] if 0 <= n < len(NUMBERS) else str(n)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def join_and(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"`` (the report's sentences use it too)."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _person(meta: dict) -> str:
    return "man" if meta["gender"] == "male" else "woman"


def _note_name(pitch: int) -> str:
    return NOTE_NAMES[pitch % 12]


def _register(pitches: list[int]) -> str:
    mean = sum(pitches) / len(pitches)
    return "low" if mean < 52 else "middle" if mean < 72 else "high"


def _end(text: str) -> str:
    """Finish a sentence with a full stop unless it already ends with one (possibly inside a quote)."""
    return text if text.rstrip('"').endswith((".", "?", "!")) else text + "."


def _hz(pitch: int) -> int:
    return round(440.0 * 2 ** ((pitch - 69) / 12))


# ---------------------------------------------------------------- descriptions per kind


def _speech_bits(m: dict) -> dict:
    accent = ""
    if m["voice"] in ACCENTS:
        name = ACCENTS[m["voice"]]
        accent = f" with {'an' if name == 'American' else 'a'} {name} accent"
    if m["gender"] == "male":
        pitch = "low and deep" if m["pitch"] < 35 else "low to medium"
    else:
        pitch = "high" if m["pitch"] >= 65 else "medium to high"
    speed = "slowly" if m["speed"] < 140 else "quickly" if m["speed"] > 170 else "at a normal pace"
    if m["content"] == "word":
        said, what = f'the word "{m["text"]}"', f'says the word "{m["text"]}"'
    elif m["content"] == "digits":
        said, what = (
            f"the digits {', '.join(m['digits'])}",
            f"speaks, counting out {_num(m['count'])} digits,",
        )
    else:
        said, what = f'"{m["text"]}"', "says a short sentence"
    return {"accent": accent, "pitch": pitch, "speed": speed, "said": said, "what": what}


def _playing(m: dict) -> str:
    """How an instrument clip is played, in words."""
    dyn = "softly" if m["dynamics"] == "soft" else "loudly"
    if m["texture"] == "drum beat":
        bars = f"{_num(m['bars'])} bar{'s' if m['bars'] > 1 else ''}"
        return (
            f"a steady rock beat at {m['tempo']} beats per minute, {dyn}, bass drum and snare drum "
            f"alternating under an eighth-note hi-hat, for {bars}"
        )
    if m["texture"] == "drum hits":
        return f"the {m['drum']} is hit {_num(m['count'])} times at an even pace, {dyn}"
    art = (
        "staccato, each note short and detached"
        if m["articulation"] == "staccato"
        else "legato, each note held into the next"
    )
    key = f"{_note_name(m['root'])} {m['mode']}"
    if m["texture"] == "single note":
        art = "short and detached (staccato)" if m["articulation"] == "staccato" else "held (legato)"
        return f"a single {_note_name(m['root'])} is played, {art}, {dyn}"
    if m["texture"] == "chord":
        art = "short and detached (staccato)" if m["articulation"] == "staccato" else "held (legato)"
        return f"{a_or_an(key)} chord of {_num(m['count'])} notes is played together, {art}, {dyn}"
    shape = "scale" if m["texture"] == "scale" else "arpeggio (a broken chord)"
    return f"{a_or_an(m['direction'])} {key} {shape} of {_num(m['count'])} notes, {art}, {dyn}"


def _event_text(m: dict) -> str:
    ev = m["event"]
    dur = f"{m['duration']:.1f} seconds"
    if ev == "tone":
        reg = "low" if m["freq"] < 400 else "high" if m["freq"] > 1200 else "medium"
        return f"a pure sine tone at about {round(m['freq'])} Hz, a {reg} pitch, held steadily for {dur}"
    if ev == "chirp":
        way = "rising" if m["f_end"] > m["f_start"] else "falling"
        f0, f1 = round(m["f_start"]), round(m["f_end"])
        return f"a {way} chirp, sweeping from about {f0} Hz to {f1} Hz over {dur}"
    if ev == "white":
        return f"white noise, a steady bright hiss with equal energy at all frequencies, for {dur}"
    if ev == "pink":
        return f"pink noise, a steady rushing sound with less treble than a plain hiss, for {dur}"
    if ev == "brown":
        return f"brown noise, a deep steady rumble with most energy at low frequencies, for {dur}"
    if ev == "phone":
        kind = telephone.signal_type(m["signal"])
        what = telephone.DESCRIPTIONS[kind][0]
        if kind in ("trill", "bell"):
            return f"{what}, in bursts, for {dur}"
        freqs = " and ".join(f"{round(f)}" for f in telephone.PATTERNS[m["signal"]][1])
        beat = "steady" if kind == "dial" else "pulsing on and off"
        return f"{what}, a {beat} tone of {freqs} Hz, for {dur}"
    if ev == "beeps":
        return (
            f"{_num(m['count'])} short {m['wave']}-wave beeps at about {round(m['freq'])} Hz, evenly spaced "
            f"{m['gap']:.2f} seconds apart"
        )
    return f"{_num(m['count'])} sharp clicks, evenly spaced about {m['gap'] + m['unit']:.2f} seconds apart"


def _acoustics(m: dict) -> str | None:
    """What the augmentation added (reverberation, background hiss); None when it added neither, since the
    original recording's own room and noise are not annotated."""
    said = []
    if m["augment"]["type"] == "reverb":
        said.append("it sounds reverberant, as if recorded in a large echoing room")
    if m.get("noise_snr") is not None:
        level = "faint" if m["noise_snr"] >= 20 else "clearly audible"
        said.append(f"a {level} {m['noise_colour']}-noise hiss runs underneath the sound")
    return _cap(" and ".join(said)) + "." if said else None


def _noise_level(snr: int) -> tuple[str, str]:
    if snr >= 12:
        return "faint", "the speech is clear and easy to understand"
    if snr >= 3:
        return "moderate", "the speech is still understandable but partly covered"
    return "loud", "the speech is largely masked by the noise and hard to understand"


def captions(m: dict) -> list[str]:
    """Two or three captions of a clip (the first is canonical); every fact in them comes from ``m``."""
    kind = m["kind"]
    if kind == "speech":
        b = _speech_bits(m)
        return [
            f"A {_person(m)} {b['what']} in {m['language']}.",
            f"A {_person(m)} speaks {m['language']}{b['accent']}.",
            f"{_cap(m['gender'])} speech in {m['language']}, {b['pitch']} in pitch, spoken {b['speed']}.",
        ]
    if kind == "speech_noise":
        s = m["speech"]
        level = _noise_level(m["snr"])[0]
        return [
            f"A {_person(s)} speaks {s['language']} over {level} {m['noise_colour']} noise.",
            f"{_cap(s['gender'])} speech in {s['language']}, "
            f"with {level} {m['noise_colour']} noise in the background.",
        ]
    if kind == "instrument":
        if m["instrument"] == DRUM_KIT:
            first = (
                "A drum kit plays a steady rock beat."
                if m["texture"] == "drum beat"
                else (f"{_cap(a_or_an(m['drum']))} is hit {_num(m['count'])} times.")
            )
            return [first, f"On the drums, {_playing(m)}."]
        dyn = "softly" if m["dynamics"] == "soft" else "loudly"
        what = {
            "single note": "a single note",
            "chord": "a chord",
            "arpeggio": "an arpeggio",
            "scale": "a scale",
        }
        return [
            f"{_cap(a_or_an(m['instrument']))} plays {what[m['texture']]} {dyn}.",
            f"{_cap(_playing(m))} on the {m['instrument']}.",
            f"Someone plays the {m['instrument']} {m['articulation']} and {dyn}.",
        ]
    if kind == "event":
        return [_cap(_event_text(m)) + ".", f"{_cap(m['phrase'])}."]
    if kind == "recording":
        times = f" {_num(m['repeats'])} times" if m["repeats"] > 1 else ""
        room = " in a reverberant room" if m["augment"]["type"] == "reverb" else ""
        noise = " over a background hiss" if m.get("noise_snr") is not None else ""
        return [f"{_cap(m['phrase'])}{times}{room}{noise}.", f"The sound of {m['what']}{times}."]
    if kind == "sequence":
        ph = [e["phrase"] for e in m["events"]]
        first = _cap(", then ".join(ph)) + "."
        steps = [f"first {ph[0]}"] + [f"then {p}" for p in ph[1:-1]] + [f"finally {ph[-1]}"]
        return [first, _cap("; ".join(steps)) + "."]
    raise ValueError(kind)


# ---------------------------------------------------------------- questions


def closed_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    out = [
        ("cla_label", rng.choice(CLA_QUESTIONS), cla_answer(m)),
        ("caption", rng.choice(CAPTION_QUESTIONS), captions(m)[0]),
    ]
    kind = m["kind"]
    count = None
    if kind == "speech" and m["content"] == "digits":
        count = ("How many digits are spoken?", m["count"])
    elif kind == "instrument" and m["texture"] == "chord":
        count = ("How many notes are in the chord?", m["count"])
    elif kind == "instrument" and m["texture"] == "drum hits":
        count = (f"How many times is the {m['drum']} hit?", m["count"])
    elif kind == "instrument" and m["texture"] in ("single note", "arpeggio", "scale"):
        count = ("How many notes are played?", m["count"])
    elif kind == "event" and m["event"] in ("beeps", "clicks"):
        count = (f"How many {'beeps' if m['event'] == 'beeps' else 'clicks'} are there?", m["count"])
    elif kind == "recording" and m["repeats"] > 1:
        count = ("How many times is the sound heard?", m["repeats"])
    elif kind == "sequence":
        count = (
            rng.choice(["How many sound events are there?", "How many different sounds are heard?"]),
            m["count"],
        )
    if count:
        out.append(("count", count[0], str(count[1])))
    if kind == "sequence":
        labels = [e["label"] for e in m["events"]]
        out.append(
            (
                "temporal_order",
                rng.choice(
                    ["In what order do the sounds occur?", "List the sounds in the order they are heard."]
                ),
                ", then ".join(labels),
            )
        )
        if rng.random() < 0.5:
            out.append(("temporal_order", "What sound is heard first?", labels[0]))
        else:
            out.append(("temporal_order", "What sound is heard last?", labels[-1]))
    return out


def _speech_questions(s: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Language, gender, pitch, speaking rate and content of a speech clip (``s``: the speech's metadata)."""
    b = _speech_bits(s)
    qs = [
        (
            "open_language",
            rng.choice(["What language is the speaker using?", "Which language is spoken?"]),
            f"The speaker is speaking {s['language']}{b['accent']}.",
        ),
        (
            "open_gender",
            rng.choice(["Is the speaker a man or a woman?", "Is this a male or a female voice?"]),
            f"It is a {s['gender']} voice: a {_person(s)} is speaking.",
        ),
        (
            "open_pitch",
            rng.choice(["Is the voice high or low?", "How high is the speaker's voice?"]),
            f"The voice is {b['pitch']} in pitch, a {s['gender']} voice.",
        ),
        ("open_speed", "Is the speaker talking fast or slowly?", f"The speaker talks {b['speed']}."),
    ]
    if s["content"] == "sentence" and s.get("meaning"):
        said = f'The speaker says {b["said"]} in {s["language"]}, which means "{s["meaning"]}"'
    else:
        said = f"The speaker says {b['said']}" + (
            " in " + s["language"] if s["language"] != "English" else ""
        )
    qs.append(("open_content", rng.choice(["What does the speaker say?", "What is being said?"]), _end(said)))
    return qs


def _noise_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """The background noise of speech over noise, and how it affects understanding."""
    level, effect = _noise_level(m["snr"])
    colour = m["noise_colour"]
    return [
        (
            "open_noise",
            rng.choice(["What is in the background?", "Describe the background noise."]),
            f"Behind the voice there is {level} {colour} noise, {NOISE_SOUND[colour]}.",
        ),
        (
            "open_noise",
            "Is the speech easy to understand?",
            f"The noise is {level} (signal-to-noise ratio about {m['snr']} dB), so {effect}.",
        ),
    ]


def _instrument_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Which instrument, how it is played (dynamics, articulation), its register and note."""
    drums = m["instrument"] == DRUM_KIT
    fam = "a set of drums and cymbals struck with sticks" if drums else FAMILY[m["instrument"]]
    qs = [
        (
            "open_instrument",
            rng.choice(
                [
                    "What instrument is playing?",
                    "Which instrument do you hear?",
                    "What kind of instrument makes this sound?",
                ]
            ),
            f"It is {a_or_an(m.get('drum') or m['instrument'])}, {fam}.",
        ),
        (
            "open_playing",
            rng.choice(["How is the instrument played?", "Describe how the music is played."]),
            _cap(_playing(m)) + ".",
        ),
        (
            "open_playing",
            "Is it played loudly or softly?",
            "Softly: the notes are quiet and gentle."
            if m["dynamics"] == "soft"
            else "Loudly: the notes are strong and forceful.",
        ),
    ]
    if drums:
        return qs
    if m["texture"] in ("arpeggio", "scale", "single note"):
        qs.append(
            (
                "open_playing",
                "Are the notes short and detached or smooth and connected?",
                "Short and detached: it is played staccato."
                if m["articulation"] == "staccato"
                else "Smooth and connected: it is played legato.",
            )
        )
    lo, hi = min(m["pitches"]), max(m["pitches"])
    span = (
        f"the note is {_note_name(lo)} (MIDI note {lo}, about {_hz(lo)} Hz)"
        if lo == hi
        else f"the notes range from {_note_name(lo)} (MIDI note {lo}, about {_hz(lo)} Hz) to "
        f"{_note_name(hi)} (MIDI note {hi}, about {_hz(hi)} Hz)"
    )
    qs.append(
        (
            "open_pitch",
            "Is the music high or low in pitch?",
            f"It is in the {_register(m['pitches'])} register: {span}.",
        )
    )
    if m["texture"] == "single note":
        qs.append(
            (
                "open_note",
                "What note is played?",
                f"The note is {_note_name(m['root'])}, MIDI note {m['root']}, about {_hz(m['root'])} Hz.",
            )
        )
    return qs


def _event_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """What a sound event is; the pitch of a tone or the direction of a chirp."""
    qs = [
        (
            "open_event",
            rng.choice(["Describe the sound.", "What kind of sound is this?"]),
            _cap(_event_text(m)) + ".",
        )
    ]
    if m["event"] == "tone":
        reg = "low" if m["freq"] < 400 else "high" if m["freq"] > 1200 else "medium"
        octaves = math.log2(m["freq"] / 440.0)
        rel = "above" if octaves > 0 else "below"
        qs.append(
            (
                "open_pitch",
                "Is the tone high or low?",
                f"It is a {reg} tone at about {round(m['freq'])} Hz, {abs(octaves):.1f} octaves {rel} "
                f"concert A (440 Hz).",
            )
        )
    if m["event"] == "chirp":
        up = m["f_end"] > m["f_start"]
        qs.append(
            (
                "open_pitch",
                "Does the pitch rise or fall?",
                f"It {'rises' if up else 'falls'}, sweeping from about {round(m['f_start'])} Hz to "
                f"{round(m['f_end'])} Hz.",
            )
        )
    return qs


def _recording_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """What made a recording, and the acoustics its augmentation added."""
    what = "What animal makes this sound?" if m["label"] == "animal" else "What is making this sound?"
    qs = [("open_source", what, f"It is {m['what']}: {m['phrase']}.")]
    if (acoustics := _acoustics(m)) is not None:
        question = rng.choice(
            ["What can you tell about the recording conditions?", "Describe the acoustics."]
        )
        qs.append(("open_acoustics", question, acoustics))
    return qs


def _sequence_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Which sound of a mixture comes first (with its timing), and what the sounds are."""
    ev = m["events"]
    first, rest = ev[0], ev[1:]
    later = "; ".join(f"{e['label']} begins at {e['onset']:.1f} s" for e in rest)
    return [
        (
            "open_temporal",
            rng.choice(
                [
                    "Which sound comes first and why do you think so?",
                    "What happens first in this recording, and how can you tell?",
                ]
            ),
            f"The {first['label']} comes first: {first['phrase']} from {first['onset']:.1f} s to "
            f"{first['offset']:.1f} s, before any other sound starts ({later}).",
        ),
        (
            "open_events",
            "What sounds can you hear?",
            f"{_cap(_num(len(ev)))} sounds, one after another: " + join_and([e["phrase"] for e in ev]) + ".",
        ),
    ]


def open_questions(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """Every open-ended (task, question, answer) that applies to a clip, in a fixed order."""
    kind = m["kind"]
    qs: list[tuple[str, str, str]] = []
    if kind in ("speech", "speech_noise"):
        qs += _speech_questions(m if kind == "speech" else m["speech"], rng)
    if kind == "speech_noise":
        qs += _noise_questions(m, rng)
    if kind == "instrument":
        qs += _instrument_questions(m, rng)
    if kind == "event":
        qs += _event_questions(m, rng)
    if kind == "recording":
        qs += _recording_questions(m, rng)
    if kind == "sequence":
        qs += _sequence_questions(m, rng)
    return qs


def cla_answer(m: dict) -> str:
    """The classification answer: the label; a mixture's labels are listed alphabetically."""
    if m["kind"] == "sequence":
        return ", ".join(sorted(e["label"] for e in m["events"]))
    return m["label"]


def qa_pairs(m: dict, rng: random.Random) -> list[tuple[str, str, str]]:
    """(task, question, answer) for a clip: every closed-ended question that applies and up to three
    open-ended ones; about half of the closed-ended questions get the ``Closed-ended question:`` prefix."""
    closed = [
        (t, (CLOSED_PREFIX + q) if rng.random() < 0.5 else q, a) for t, q, a in closed_questions(m, rng)
    ]
    opens = open_questions(m, rng)
    if len(opens) > MAX_OPEN_PER_CLIP:
        opens = rng.sample(opens, MAX_OPEN_PER_CLIP)
    return closed + opens


def records(m: dict, audio_id: str, rng: random.Random) -> list[dict]:
    """OpenAQA records (all six keys) for one clip."""
    return [
        {"instruction": q, "input": "", "audio_id": audio_id, "dataset": DATASET, "task": t, "output": a}
        for t, q, a in qa_pairs(m, rng)
    ]
