"""Small synthetic benchmark trees in each official layout, and a tone-reading stand-in model, for smoke runs.

``build_synthetic_benchmarks(root)`` writes, for every benchmark of Table I, a folder laid out exactly as its
official release (file names, CSV columns, delimiters, comment lines, CRLF line ends, quoting) with a few
short generated clips, plus the awkward cases the adapters must survive: a malformed metadata row, a row
whose audio is missing and (VGGSound) an unreadable audio file. Each class is a pure tone of its own
frequency, so :class:`ToneModel` can answer from the audio alone: it finds the clip's dominant frequency
and returns the text registered for the nearest tone. It is not a language model; it stands in for one so
that the whole pipeline (adapters -> runner -> scoring -> report) runs in seconds on a CPU and gives
numbers that can be worked out by hand (``SyntheticTree.expected``). A test fixture: the evaluation tests
use it; nothing in the package does.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sslalm.audio import SAMPLE_RATE


@dataclass
class SyntheticTree:
    """Where the trees are, the answer a perfect listener gives per tone, and what scoring should find."""

    root: Path
    answers: dict[float, str] = field(default_factory=dict)  # tone (Hz) -> answer text
    expected: dict[str, dict[str, Any]] = field(default_factory=dict)  # benchmark -> facts


class _Tones:
    """Hands out one distinct tone frequency per (benchmark, class) and remembers its answer text."""

    def __init__(self, tree: SyntheticTree, start: float = 300.0, step: float = 120.0):
        self.tree, self.next, self.step = tree, start, step
        self.by_key: dict[tuple[str, str], float] = {}

    def __call__(self, bench: str, key: str, answer: str | None = None) -> float:
        if (bench, key) not in self.by_key:
            f = self.next
            if f >= SAMPLE_RATE / 2 - 200:
                raise RuntimeError("out of distinct tones")
            self.next += self.step
            self.by_key[(bench, key)] = f
            self.tree.answers[f] = answer if answer is not None else key
        return self.by_key[(bench, key)]


def write_tone(path: str | os.PathLike, freq: float, seconds: float = 0.5, seed: int = 0) -> None:
    """A 16 kHz mono PCM-16 wav of a sine at ``freq`` Hz with a little white noise."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.shape)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")


def _csv(path: Path, rows: list[list[Any]], delimiter: str = ",", newline: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f, delimiter=delimiter, lineterminator=newline).writerows(rows)


def _esc50(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "ESC-50-master"
    classes = [(0, "dog"), (1, "rooster"), (10, "rain"), (20, "crying_baby")]
    rows: list[list[Any]] = [["filename", "fold", "target", "category", "esc10", "src_file", "take"]]
    n = 0
    for target, cat in classes:
        for take in "AB":
            fname = f"1-{100 + n}-{take}-{target}.wav"
            write_tone(d / "audio" / fname, tone("esc50", cat, cat.replace("_", " ")), seed=n)
            rows.append([fname, 1, target, cat, "True", 100 + n, take])
            n += 1
    # labelled rain, sounds like a dog: the one clip a tone-reader gets wrong
    write_tone(d / "audio" / "2-900-A-10.wav", tone("esc50", "dog"), seed=99)
    rows.append(["2-900-A-10.wav", 2, 10, "rain", "True", 900, "A"])
    rows.append(["3-901-A-0.wav", 3, 0, "dog", "True", 901, "A"])  # audio missing
    rows.append(["bad-row.wav", 3, "not-a-number", "dog", "True", 1, "A"])  # malformed
    _csv(d / "meta" / "esc50.csv", rows)
    tree.expected["esc50"] = {"clips": 9, "malformed": 1, "missing": 1, "value": 100 * 8 / 9}


def _dcase17(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "DCASE2017-task4"
    clips = {
        "-JMT0mK0Dbg_30.000_40.000.wav": ["Train horn"],
        "PNaLTW50fxM_60.000_70.000.wav": ["Car", "Car passing by"],  # answers "Car": one miss
        "3FWHjjZGT9U_80.000_90.000.wav": ["Screaming"],
    }
    rows = []
    for i, (fname, labels) in enumerate(clips.items()):
        write_tone(
            d / "evaluation_set_formatted_audio_segments" / f"Y{fname}", tone("dcase17", labels[0]), seed=i
        )
        start, end = fname[:-4].split("_")[-2:]
        rows += [[fname, start, end, lab] for lab in labels]
    rows.append(["zzzMissing01_0.000_10.000.wav", "0.000", "10.000", "Bus"])  # audio missing
    rows.append(["zzzBadLabel1_0.000_10.000.wav", "0.000", "10.000", "Flying saucer"])  # malformed
    _csv(d / "groundtruth_weak_label_evaluation_set.csv", rows, delimiter="\t", newline="\r\n")
    # micro-F1: tp 3, fp 0, fn 1 -> 6 / 7
    tree.expected["dcase17"] = {"clips": 3, "malformed": 1, "missing": 1, "value": 100 * 6 / 7}


def _vocalsound(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    from sslalm.eval.adapters import VOCALSOUND_CLASSES

    d = root / "vocalsound"
    _csv(
        d / "class_labels_indices_vs.csv",
        [["index", "mid", "display_name"]]
        + [[i, m, n] for i, (m, n) in enumerate(VOCALSOUND_CLASSES.values())],
    )
    data = []
    for i, (spk, lab) in enumerate(
        [("f0001", "cough"), ("f0001", "laughter"), ("m0002", "throatclearing"), ("m0002", "sniff")]
    ):
        fname = f"{spk}_0_{lab}.wav"
        mid, name = VOCALSOUND_CLASSES[lab]
        write_tone(d / "audio_16k" / fname, tone("vocalsound", name), seed=i)
        data.append({"wav": f"/data/sls/scratch/vocalsound/audio_16k/{fname}", "labels": mid})
    data.append({"wav": "/data/sls/scratch/vocalsound/audio_16k/f0009_0_sigh.wav", "labels": "/m/07plz5l"})
    data.append({"labels": "/m/01b_21"})  # malformed: no wav
    (d / "datafiles").mkdir(parents=True, exist_ok=True)
    (d / "datafiles" / "te.json").write_text(json.dumps({"data": data}, indent=1), encoding="utf-8")
    _csv(d / "meta" / "te_meta.csv", [["spk_id", "gender", "age"], ["f0001", "f", 30], ["m0002", "m", 41]])
    tree.expected["vocalsound"] = {"clips": 4, "malformed": 1, "missing": 1, "value": 100.0}


def _tut17(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "TUT-acoustic-scenes-2017-evaluation"
    rows = []
    for i, scene in enumerate(["beach", "bus", "office", "city_center"], 1):
        write_tone(d / "audio" / f"{i}.wav", tone("tut17", scene, scene.replace("_", " ")), seed=i)
        rows.append([f"audio/{i}.wav", scene])
    rows.append(["audio/8.wav", "home"])  # audio missing
    rows.append(["audio/9.wav", "spaceship"])  # malformed: unknown scene
    _csv(d / "evaluation_setup" / "evaluate.txt", rows, delimiter="\t")
    _csv(d / "meta.txt", [r + ["x"] for r in rows], delimiter="\t")
    tree.expected["tut17"] = {"clips": 4, "malformed": 1, "missing": 1, "value": 100.0}


def _bjo(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "beijing_opera" / "BeijingOpera-Instrument"
    n = 0
    for lab, count in [("bangu", 2), ("naobo", 2), ("daluo", 1), ("xiaoluo", 1)]:
        for k in range(count):
            write_tone(d / lab / f"{lab}_{k + 1}.wav", tone("bjo", lab), seed=n)
            n += 1
    (d / "README.txt").write_text(
        "Beijing Opera percussion instrument dataset (synthetic)\n", encoding="utf-8"
    )
    tree.expected["bjo"] = {"clips": 6, "malformed": 0, "missing": 0, "value": 100.0}


def _vggsound(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "vggsound"
    rows: list[list[Any]] = []
    for i, (ytid, start, lab) in enumerate(
        [
            ("abcDEF12345", 30, "dog barking"),
            ("xyz_-987654", 0, "playing piano"),
            ("qqqRRRsss00", 10, "engine accelerating, revving, vroom"),
        ]
    ):
        write_tone(d / "audio" / f"{ytid}_{start:06d}.wav", tone("vggsound", lab), seed=i)
        rows.append([ytid, start, lab, "test"])
    rows.append(["trainOnly01", 5, "people marching", "train"])  # label set only
    rows.append(["missingAud1", 20, "dog barking", "test"])  # audio missing
    rows.append(["badStart001", "soon", "dog barking", "test"])  # malformed
    (d / "audio").mkdir(parents=True, exist_ok=True)
    (d / "audio" / "corruptClip_000040.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    rows.append(["corruptClip", 40, "playing piano", "test"])  # on disk but unreadable: the model fails on it
    _csv(d / "vggsound.csv", rows)
    tree.expected["vggsound"] = {"clips": 4, "malformed": 1, "missing": 1, "answered": 3, "value": 100.0}


def _fsd50k(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "FSD50K"
    vocab = [
        ("Bark", "/m/05tny_"),
        ("Dog", "/m/0bt9lr"),
        ("Piano", "/m/05r5c"),
        ("Music", "/m/04rlf"),
        ("Rain", "/m/06mb1"),
        ("Acoustic_guitar", "/m/042v_gx"),
    ]
    _csv(d / "FSD50K.ground_truth" / "vocabulary.csv", [[i, n, m] for i, (n, m) in enumerate(vocab)])
    mids = dict(vocab)
    rows: list[list[Any]] = [["fname", "labels", "mids"]]
    for i, (fname, labels) in enumerate(
        [
            (1001, ["Bark", "Dog"]),
            (1002, ["Piano", "Music"]),
            (1003, ["Rain"]),
            (1004, ["Acoustic_guitar", "Music"]),
        ]
    ):
        write_tone(
            d / "FSD50K.eval_audio" / f"{fname}.wav",
            tone("fsd50k", labels[0], labels[0].replace("_", " ")),
            seed=i,
        )
        rows.append([fname, ",".join(labels), ",".join(mids[x] for x in labels)])
    rows.append([1005, "Rain", "/m/06mb1"])  # audio missing
    rows.append([1006, "Not_a_label", "/m/000"])  # malformed
    _csv(d / "FSD50K.ground_truth" / "eval.csv", rows)
    tree.expected["fsd50k"] = {"clips": 4, "malformed": 1, "missing": 1}


def _audioset(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "audioset"
    classes = [
        ("/m/09x0r", "Speech"),
        ("/m/0bt9lr", "Dog"),
        ("/m/05tny_", "Bark"),
        ("/m/06mb1", "Rain"),
        ("/m/04rlf", "Music"),
        ("/m/0l15bq", "Clarinet"),
    ]
    _csv(
        d / "class_labels_indices.csv",
        [["index", "mid", "display_name"]] + [[i, m, n] for i, (m, n) in enumerate(classes)],
    )
    name = dict(classes)
    lines = [
        "# Segments csv created Sun Mar  5 10:54:25 2017",
        "# num_ytids=4, num_segs=4, num_unique_labels=6, num_positive_labels=7",
        "# YTID, start_seconds, end_seconds, positive_labels",
    ]
    segs = [
        ("--4gqARaEJE", 0.0, 10.0, ["/m/0bt9lr", "/m/05tny_"], "Y--4gqARaEJE"),
        ("-0Gj8-vB1q4", 30.0, 40.0, ["/m/09x0r"], "Y-0Gj8-vB1q4"),
        ("-1nilez17Dg", 30.0, 40.0, ["/m/06mb1", "/m/04rlf"], "-1nilez17Dg_30.000_40.000"),
    ]
    for i, (ytid, s, e, m, stem) in enumerate(segs):
        write_tone(d / "audio" / "eval" / f"{stem}.wav", tone("audioset", name[m[0]]), seed=i)
        lines.append(f'{ytid}, {s:.3f}, {e:.3f}, "{",".join(m)}"')
    lines.append('-missing0001, 0.000, 10.000, "/m/09x0r"')  # audio missing
    lines.append('-badmid00001, 0.000, 10.000, "/m/not_a_mid"')  # malformed
    d.mkdir(parents=True, exist_ok=True)
    (d / "eval_segments.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tree.expected["audioset"] = {"clips": 3, "malformed": 1, "missing": 1}


CAPTIONS = {
    "dog": [
        "a dog barks repeatedly",
        "a dog is barking loudly",
        "a small dog barks",
        "dog barking outside",
        "a dog barks several times",
    ],
    "rain": [
        "rain falls on a roof",
        "heavy rain is falling",
        "rain pours down steadily",
        "rain falls on a tin roof",
        "steady rain falling",
    ],
    "engine": [
        "a car engine revs",
        "an engine idles and then revs up",
        "a vehicle engine running",
        "a motor revs loudly",
        "an engine is running",
    ],
    "birds": [
        "birds chirp in the morning",
        "several birds are singing",
        "birds chirping in the trees",
        "many birds sing",
        "birds tweet outside",
    ],
}


def _audiocaps(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "audiocaps"
    rows: list[list[Any]] = [["audiocap_id", "youtube_id", "start_time", "caption"]]
    cap_id = 100
    for i, (ytid, start, topic, stem) in enumerate(
        [
            ("ytAAAAAAAAA", 30, "dog", "ytAAAAAAAAA"),
            ("ytBBBBBBBBB", 0, "rain", "YytBBBBBBBBB"),
            ("ytCCCCCCCCC", 60, "engine", "ytCCCCCCCCC_60"),
        ]
    ):
        write_tone(d / "audio" / "test" / f"{stem}.wav", tone("audiocaps", topic, CAPTIONS[topic][0]), seed=i)
        for cap in CAPTIONS[topic]:
            rows.append([cap_id, ytid, start, cap])
            cap_id += 1
    rows.append([cap_id, "ytDDDDDDDDD", 10, "birds chirp"])  # audio missing
    rows.append([cap_id + 1, "ytEEEEEEEEE", "later", "a bad row"])  # malformed
    _csv(d / "test.csv", rows)
    tree.expected["audiocaps"] = {"clips": 3, "malformed": 1, "missing": 1}


def _clotho(root: Path, tone: _Tones, tree: SyntheticTree) -> None:
    d = root / "clotho"
    rows: list[list[Any]] = [["file_name", *(f"caption_{k}" for k in range(1, 6))]]
    for i, (fname, topic) in enumerate(
        [("Santa Motor.wav", "engine"), ("rain, on roof.wav", "rain"), ("birds_morning.wav", "birds")]
    ):
        write_tone(d / "evaluation" / fname, tone("clotho", topic, CAPTIONS[topic][1]), seed=i)
        rows.append([fname, *(c.capitalize() + "." for c in CAPTIONS[topic])])
    rows.append(["not here.wav", *CAPTIONS["dog"]])  # audio missing
    rows.append(["short row.wav", "only one caption"])  # malformed
    _csv(d / "clotho_captions_evaluation.csv", rows)
    tree.expected["clotho"] = {"clips": 3, "malformed": 1, "missing": 1}


_BUILDERS = {
    "esc50": _esc50,
    "dcase17": _dcase17,
    "vocalsound": _vocalsound,
    "tut17": _tut17,
    "bjo": _bjo,
    "vggsound": _vggsound,
    "fsd50k": _fsd50k,
    "audioset": _audioset,
    "audiocaps": _audiocaps,
    "clotho": _clotho,
}


def build_synthetic_benchmarks(root: str | os.PathLike, names: list[str] | None = None) -> SyntheticTree:
    """Write synthetic trees for ``names`` (default: all ten benchmarks) under ``root``."""
    tree = SyntheticTree(root=Path(root))
    tone = _Tones(tree)
    for name in names or list(_BUILDERS):
        _BUILDERS[name](tree.root, tone, tree)
    return tree


def dominant_frequency(wave: np.ndarray, sample_rate: int) -> float:
    """Frequency (Hz) of the largest peak of the Hann-windowed magnitude spectrum of a mono signal."""
    wave = np.asarray(wave, dtype=np.float64)
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))  # (n // 2 + 1,)
    return float(np.argmax(spec) * sample_rate / len(wave))


class ToneModel:
    """Answers each clip with the text of the registered tone nearest to the clip's dominant frequency.

    Implements the runner's ``AudioLanguageModel`` interface (``generate(audio, prompts) -> list[str]``);
    audio is a file path (read with soundfile) or a 16 kHz waveform tensor/array. An unreadable file raises.
    """

    def __init__(self, answers: dict[float, str]):
        if not answers:
            raise ValueError("ToneModel needs at least one (frequency, answer) pair")
        self.freqs = np.array(sorted(answers))
        self.texts = [answers[f] for f in self.freqs]
        self.calls = 0

    def _wave(self, item) -> tuple[np.ndarray, int]:
        if isinstance(item, (str, os.PathLike)):
            import soundfile as sf

            x, sr = sf.read(str(item), dtype="float32", always_2d=True)
            return x.mean(axis=1), sr
        x = item.detach().cpu().numpy() if hasattr(item, "detach") else np.asarray(item)
        return x.reshape(-1), SAMPLE_RATE

    def generate(self, audio: list, prompts: list[str], **generation_kwargs: Any) -> list[str]:
        if len(audio) != len(prompts):
            raise ValueError("one prompt per audio clip")
        self.calls += 1
        out = []
        for item in audio:
            f = dominant_frequency(*self._wave(item))
            out.append(self.texts[int(np.argmin(np.abs(self.freqs - f)))])
        return out
