"""OpenAQA-format datasets: file formats, paths, skipping and counting bad data, strict mode, crops."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile as sf
import torch

from sslalm.audio import FbankExtractor
from sslalm.data.openaqa import DatasetError, OpenAQADataset, load_records
from sslalm.prompt import Collator, tokenize_example
from test_prompt import tiny_tokenizer

SR = 16000


def _wav(path, seconds: float, freq: float = 440.0):
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


def _rec(audio_id: str, task: str = "cla", output: str = "A dog barks.", **kw):
    rec = {
        "instruction": "What is the sound?",
        "input": "",
        "audio_id": audio_id,
        "dataset": "toy",
        "task": task,
        "output": output,
    }
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture
def clips(tmp_path):
    (tmp_path / "audio").mkdir()
    return {
        "short": _wav(tmp_path / "audio" / "short.wav", 1.0),
        "long": _wav(tmp_path / "audio" / "long.wav", 12.5, 880.0),
        "corrupt": tmp_path / "audio" / "corrupt.wav",
    }


def test_json_list_and_jsonl_relative_and_absolute_paths(tmp_path, clips, tok):
    (tmp_path / "data.json").write_text(json.dumps([_rec("audio/short.wav"), _rec(str(clips["long"]))]))
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "more.jsonl").write_text(json.dumps(_rec("../audio/long.wav", task="caption")) + "\n\n")
    records = load_records([tmp_path / "data.json", sub / "more.jsonl"])
    assert [r.audio_path for r in records] == [str(clips["short"]), str(clips["long"]), str(clips["long"])]
    assert records[2].where.endswith("more.jsonl: record 0 (line 1)")
    assert [r.task for r in load_records(sub / "more.jsonl", tasks=["caption"])] == ["caption"]

    ds = OpenAQADataset([tmp_path / "data.json"], FbankExtractor(target_length=1024), tok)
    ex = ds[0]
    assert ex["fbank"].shape == (1024, 128) and ex["fbank"].dtype == torch.float32
    want = tokenize_example(tok, "What is the sound?", "", "A dog barks.")
    assert ex["input_ids"].tolist() == want["input_ids"] and ex["labels"].tolist() == want["labels"]
    batch = Collator(tok.pad_token_id)([ds[0], ds[1]])
    assert batch["fbank"].shape == (2, 1024, 128)
    assert set(batch) == {"fbank", "input_ids", "attention_mask", "labels"}


def test_bad_records_are_skipped_counted_and_logged(tmp_path, clips, tok, caplog):
    clips["corrupt"].write_bytes(b"RIFF not really a wave file")
    lines = [
        json.dumps(_rec("audio/short.wav")),
        "{not json",
        json.dumps({"instruction": "q", "audio_id": "audio/short.wav"}),  # missing fields
        json.dumps(_rec("audio/short.wav", output="")),  # empty answer
        json.dumps(_rec("audio/short.wav", input=None)),  # not a string
        json.dumps(["a", "list"]),
        json.dumps(_rec("audio/nowhere.wav")),  # missing clip
        json.dumps(_rec("audio/corrupt.wav")),  # exists, does not decode
        json.dumps(_rec("audio/long.wav")),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with caplog.at_level(logging.WARNING, logger="sslalm.data.openaqa"):
        ds = OpenAQADataset(path, FbankExtractor(target_length=1024), tok)
    assert len(ds) == 3  # the corrupt clip is only found when it is loaded
    assert ds.skips.counts == {"malformed": 5, "missing audio": 1}
    text = caplog.text
    assert "skipped 6 record(s)" in text and "kept 3" in text
    assert "record 1 (line 2): not valid JSON" in text
    assert "missing field(s)" in text and "empty field(s) ['output']" in text
    assert text.count("data.jsonl: record") == 5  # only the first few reasons

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="sslalm.data.openaqa"):
        ex = ds[1]  # the corrupt clip: replaced by the next record
    assert ds.load_failures == 1 and "corrupt.wav" in caplog.text
    assert ex["fbank"].shape == (1024, 128)

    decoded = OpenAQADataset(path, FbankExtractor(target_length=1024), tok, check_audio="decode")
    assert len(decoded) == 2 and decoded.skips.counts["unreadable audio"] == 1


def test_strict_mode_names_the_record(tmp_path, clips, tok):
    clips["corrupt"].write_bytes(b"garbage")
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_rec("audio/short.wav"), _rec("audio/gone.wav")]))
    with pytest.raises(DatasetError, match=r"data.json: record 1: audio file .*gone.wav does not exist"):
        OpenAQADataset(path, FbankExtractor(), tok, strict=True)
    path.write_text(json.dumps([_rec("audio/short.wav"), {"instruction": "q"}]))
    with pytest.raises(DatasetError, match=r"record 1: missing field"):
        load_records(path, strict=True)
    path.write_text(json.dumps([_rec("audio/short.wav"), _rec("audio/corrupt.wav")]))
    ds = OpenAQADataset(path, FbankExtractor(), tok, strict=True)
    with pytest.raises(DatasetError, match=r"data.json: record 1: cannot load audio .*corrupt.wav"):
        ds[1]
    with pytest.raises(DatasetError, match=r"data.json: record 1: cannot decode"):
        load_records(path, strict=True, check_audio="decode")


def test_unusable_files(tmp_path, tok):
    bad = tmp_path / "bad.json"
    bad.write_text("[{]")
    with pytest.raises(DatasetError, match="not valid JSON"):
        load_records(bad)
    with pytest.raises(DatasetError, match="cannot read data file"):
        load_records(tmp_path / "absent.json")
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(DatasetError, match="no usable records"):
        OpenAQADataset(empty, FbankExtractor(), tok)


def test_crops_are_seeded_and_centred_for_eval(tmp_path, clips, tok):
    (tmp_path / "d.json").write_text(json.dumps([_rec("audio/long.wav"), _rec("audio/short.wav")]))
    ds = OpenAQADataset(tmp_path / "d.json", FbankExtractor(), tok, seed=3)
    wave = torch.arange(int(12.5 * SR), dtype=torch.float32)
    n = round(10.24 * SR)
    a = ds.crop(wave, 0)
    assert a.shape == (n,) and torch.equal(a, ds.crop(wave, 0))
    starts = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        starts.add(int(ds.crop(wave, 0)[0]))
    assert len(starts) > 1  # a new crop each epoch
    short = torch.ones(SR)
    assert torch.equal(ds.crop(short, 1), short)
    ds.train = False
    assert int(ds.crop(wave, 0)[0]) == (wave.numel() - n) // 2
    ds.crop_samples = None
    assert ds.crop(wave, 0).numel() == wave.numel()


def test_waveform_cache_returns_what_load_audio_returns_within_its_limit(tmp_path, clips):
    from sslalm.audio import AudioError, WaveformCache, load_audio

    short, long = clips["short"], clips["long"]
    one_clip = load_audio(long).numel() * 4
    cache = WaveformCache(max_bytes=one_clip)  # room for the long clip or the short one, not both
    first = cache.load(long)
    torch.testing.assert_close(first, load_audio(long), rtol=0, atol=0)
    first.zero_()  # the caller's copy: the cached clip is not changed
    torch.testing.assert_close(cache.load(long), load_audio(long), rtol=0, atol=0)
    assert (cache.hits, cache.misses, len(cache)) == (1, 1, 1)
    cache.load(short)  # evicts the long clip
    assert len(cache) == 1 and cache.bytes == load_audio(short).numel() * 4
    cache.load(long)
    assert (cache.hits, cache.misses) == (1, 3) and cache.bytes <= cache.max_bytes

    clips["corrupt"].write_bytes(b"garbage")
    for _ in range(2):  # errors are not cached
        with pytest.raises(AudioError):
            cache.load(clips["corrupt"])
    assert cache.misses == 5
    off = WaveformCache(max_bytes=0)
    torch.testing.assert_close(off.load(short), load_audio(short), rtol=0, atol=0)
    assert len(off) == 0 and off.bytes == 0
    with pytest.raises(ValueError, match="max_bytes"):
        WaveformCache(-1)


def test_cached_and_uncached_datasets_give_the_same_examples(tmp_path, clips, tok):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([_rec("audio/long.wav"), _rec("audio/short.wav"), _rec("audio/long.wav")]))
    cached = OpenAQADataset(path, FbankExtractor(target_length=256), tok, crop_seconds=2.56)
    plain = OpenAQADataset(
        path, FbankExtractor(target_length=256), tok, crop_seconds=2.56, audio_cache_bytes=0
    )
    for epoch in range(2):
        for ds in (cached, plain):
            ds.set_epoch(epoch)
        for i in range(len(plain)):
            a, b = cached[i], plain[i]
            assert a.keys() == b.keys()
            for k in a:
                torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert cached.audio.hits == 4 and cached.audio.misses == 2 and len(plain.audio) == 0
