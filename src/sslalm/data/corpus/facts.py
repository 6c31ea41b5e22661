"""Score open-ended answers by the fact they state: gender, language, instrument, count, order, ...

Every open-ended reference answer of the corpus states one fact drawn from a small vocabulary (a language
name, "female" or "male", an instrument, a number, labels in order). A free-text answer is scored by the
same reading: the **first** vocabulary term it names must be the reference's (for order, the labels it names
must be the reference's labels in the same order). Reading the first term, not any, means an answer that
lists every option is wrong unless it starts with the right one. Words are matched whole and
case-insensitively, longer terms first ("female" is never read as "male", "male speech" never as "speech").

``FACTS`` maps a fact name to the corpus task it reads and its vocabulary; ``fact_of(name, text)`` reads one
text; ``score_facts`` scores answers against references.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

from .inventory import DRUMS, EVENT_LABELS, INSTRUMENT_LABELS, LANGUAGES, RECORDINGS
from .questions import NUMBERS


@dataclass(frozen=True)
class Fact:
    """A fact an answer can state: the task whose records state it, and term -> fact value."""

    task: str
    terms: tuple[tuple[str, str], ...]  # (term as written, the fact it names)
    sequence: bool = False  # order: the whole sequence of named facts is compared


_FAMILY_OF = {
    "piano": "keyboard",
    "harpsichord": "keyboard",
    "church organ": "keyboard",
    "marimba": "percussion",
    "acoustic guitar": "string",
    "electric guitar": "string",
    "violin": "string",
    "cello": "string",
    "harp": "string",
    "trumpet": "brass",
    "trombone": "brass",
    "saxophone": "woodwind",
    "clarinet": "woodwind",
    "flute": "woodwind",
}
_FAMILY_WORDS = {
    "keyboard": "keyboard",
    "string instrument": "string",
    "strings": "string",
    "brass instrument": "brass",
    "woodwind": "woodwind",
    "reed": "woodwind",
    "percussion": "percussion",
    "drums": "percussion",
    "drum": "percussion",
}
_EVENT_WORDS = {
    "sine tone": "tone",
    "tone": "tone",
    "chirp": "chirp",
    "sweep": "chirp",
    "white noise": "white noise",
    "pink noise": "pink noise",
    "brown noise": "brown noise",
    "beep": "beeps",
    "beeps": "beeps",
    "beeping": "beeps",
    "click": "clicks",
    "clicks": "clicks",
    "clicking": "clicks",
    "telephone": "telephone",
    "phone": "telephone",
}
_SOURCE_WORDS = {
    "telephone": "telephone",
    "phone": "telephone",
    "alarm clock": "alarm clock",
    "camera": "camera shutter",
    "trash": "trash",
    "rubbish": "trash",
    "chime": "chime",
    "bell": "chime",
    "blip": "chime",
    "jingle": "chime",
    "alert": "chime",
    "pop": "chime",
    "person": "speech",
    "says": "speech",
    "saying": "speech",
}


def _instrument_terms() -> tuple[tuple[str, str], ...]:
    return tuple((name, name) for name in (*INSTRUMENT_LABELS, *DRUMS))


def _family_terms() -> tuple[tuple[str, str], ...]:
    named = list(_FAMILY_OF.items()) + [(d, "percussion") for d in DRUMS] + [("drum kit", "percussion")]
    return tuple(named + list(_FAMILY_WORDS.items()))


def _source_terms() -> tuple[tuple[str, str], ...]:
    animals = sorted({r.what.split()[-1] for r in RECORDINGS if r.label == "animal"})
    return tuple([(a, a) for a in animals] + [(a + "s", a) for a in animals] + list(_SOURCE_WORDS.items()))


def _label_terms() -> tuple[tuple[str, str], ...]:
    labels = [*INSTRUMENT_LABELS, "male speech", "female speech", "speech"]
    labels += list(EVENT_LABELS.values()) + sorted({r.label for r in RECORDINGS})
    return tuple((lab, lab) for lab in sorted(set(labels)))


FACTS: dict[str, Fact] = {
    "gender": Fact(
        "open_gender", (("female", "female"), ("woman", "female"), ("male", "male"), ("man", "male"))
    ),
    "language": Fact("open_language", tuple((name, name) for name in LANGUAGES)),
    "instrument": Fact("open_instrument", _instrument_terms()),
    "instrument family": Fact("open_instrument", _family_terms()),
    "count": Fact(
        "count",
        tuple((str(n), str(n)) for n in range(40)) + tuple((w, str(n)) for n, w in enumerate(NUMBERS)),
    ),
    "order": Fact("temporal_order", _label_terms(), sequence=True),
    "event": Fact("open_event", tuple(_EVENT_WORDS.items())),
    "sound source": Fact("open_source", _source_terms()),
    "loud or soft": Fact(
        "open_playing",
        (("softly", "soft"), ("soft", "soft"), ("quiet", "soft"), ("loudly", "loud"), ("loud", "loud")),
    ),
}


@cache
def _pattern(name: str) -> tuple[re.Pattern, dict[str, str]]:
    terms = FACTS[name].terms
    lookup = {t.lower(): v for t, v in terms}
    ordered = sorted(lookup, key=len, reverse=True)  # longest first: "female" before "male"
    alternation = "|".join(re.escape(t) for t in ordered)
    return re.compile(rf"(?<![\w-])(?:{alternation})(?![\w-])", re.IGNORECASE), lookup


def facts_in(name: str, text: str) -> list[str]:
    """Every fact of ``name`` that ``text`` names, in order of appearance."""
    pattern, lookup = _pattern(name)
    return [lookup[m.group(0).lower()] for m in pattern.finditer(text)]


def fact_of(name: str, text: str) -> str | tuple[str, ...] | None:
    """The fact ``text`` states: its first term's value (a sequence fact: all named values in order,
    repeats dropped); None when it names none."""
    found = facts_in(name, text)
    if not found:
        return None
    if FACTS[name].sequence:
        return tuple(dict.fromkeys(found))
    return found[0]


def fact_records(records: Sequence[dict], per_fact: int, seed: int = 0) -> dict[str, list[dict]]:
    """Up to ``per_fact`` records (seeded choice) per fact whose reference states that fact."""
    out = {}
    for name, fact in FACTS.items():
        usable = [r for r in records if r["task"] == fact.task and fact_of(name, r["output"]) is not None]
        rng = random.Random(f"{seed}:{name}")
        out[name] = sorted(rng.sample(usable, min(per_fact, len(usable))), key=lambda r: r["audio_id"])
    return out


def score_facts(name: str, references: Sequence[str], answers: Sequence[str]) -> dict[str, float | int]:
    """How many ``answers`` state the fact of their reference: ``{"n", "correct", "accuracy"}`` (%)."""
    correct = sum(
        fact_of(name, ans) == fact_of(name, ref) for ref, ans in zip(references, answers, strict=True)
    )
    n = len(references)
    return {"n": n, "correct": correct, "accuracy": 100.0 * correct / n if n else float("nan")}
