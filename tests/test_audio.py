"""Tests of the audio front end: decoding, resampling, validation and the kaldi fbank."""

from __future__ import annotations

import ast
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import sslalm
from oracles import kaldi_fbank_reference
from sslalm.audio import AudioError, FbankExtractor, decode, kaldi_mel_banks, load_audio

SR = 16000


def _sine(freq: float, rate: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


def _encode(x: np.ndarray, rate: int, fmt: str, subtype: str | None = None, **kw) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, rate, format=fmt, subtype=subtype, **kw)
    return buf.getvalue()


def _peak_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def _amplitude(x: np.ndarray) -> float:
    """Amplitude of a sine from its RMS, ignoring 10% at each end (codec and filter edges)."""
    cut = len(x) // 10
    return float(np.sqrt(2 * np.mean(x[cut:-cut].astype(np.float64) ** 2)))


# ----------------------------------------------------------------------------------------------- formats

FORMATS = [
    ("WAV", "PCM_16", 1e-4, True),
    ("WAV", "PCM_24", 1e-6, True),
    ("WAV", "FLOAT", 0.0, True),
    ("FLAC", "PCM_16", 1e-4, True),
    ("OGG", "VORBIS", 0.05, False),
    ("OGG", "OPUS", 0.05, False),
    ("MP3", "MPEG_LAYER_III", 0.05, False),
]


@pytest.mark.parametrize("fmt,subtype,tol,exact_length", FORMATS)
def test_every_format_from_path_bytes_and_file_object(tmp_path, fmt, subtype, tol, exact_length):
    x = _sine(1000, SR, 1.0)
    data = _encode(x, SR, fmt, subtype)
    path = tmp_path / f"tone.{fmt.lower()}"
    path.write_bytes(data)

    from_path = load_audio(path)
    assert from_path.dtype == torch.float32 and from_path.dim() == 1
    if exact_length:
        assert from_path.numel() == len(x)
        assert np.abs(from_path.numpy() - x).max() <= tol
    else:
        assert abs(from_path.numel() - len(x)) < 0.05 * len(x)
    assert _peak_hz(from_path.numpy(), SR) == pytest.approx(1000, abs=2)
    assert _amplitude(from_path.numpy()) == pytest.approx(0.5, abs=max(tol, 1e-3))

    torch.testing.assert_close(load_audio(str(path)), from_path, rtol=0, atol=0)
    torch.testing.assert_close(load_audio(data), from_path, rtol=0, atol=0)
    torch.testing.assert_close(load_audio(bytearray(data)), from_path, rtol=0, atol=0)
    with open(path, "rb") as fh:
        torch.testing.assert_close(load_audio(fh), from_path, rtol=0, atol=0)


def test_integer_pcm_is_scaled_to_unit_range():
    pcm = np.array([0, 16384, -16384, 32767, -32768] * 100, dtype=np.int16)
    got = load_audio(_encode(pcm, SR, "WAV", "PCM_16")).numpy()
    np.testing.assert_array_equal(got[:5], [0.0, 0.5, -0.5, 32767 / 32768, -1.0])
    np.testing.assert_array_equal(load_audio((pcm, SR)).numpy(), got)
    u8 = np.array([128, 192, 64, 0] * 100, dtype=np.uint8)
    np.testing.assert_array_equal(load_audio((u8, SR)).numpy()[:4], [0.0, 0.5, -0.5, -1.0])


def test_stereo_and_multichannel_are_mixed_by_channel_mean():
    left = _sine(440, SR, 0.5)
    stereo = np.stack([left, -0.5 * left], axis=1)  # (samples, channels)
    got = load_audio(_encode(stereo, SR, "WAV", "FLOAT")).numpy()
    np.testing.assert_allclose(got, 0.25 * left, atol=1e-7)
    six = np.random.default_rng(0).uniform(-1, 1, size=(800, 6)).astype(np.float32)
    np.testing.assert_allclose(load_audio(_encode(six, SR, "FLAC", "PCM_24")).numpy(), six.mean(1), atol=1e-6)


def test_in_memory_arrays_either_channel_layout():
    x = _sine(300, SR, 0.25)
    stereo = np.stack([x, x])  # (channels, samples)
    np.testing.assert_allclose(load_audio((torch.from_numpy(stereo), SR)).numpy(), x, atol=1e-7)
    np.testing.assert_allclose(load_audio((stereo.T.copy(), SR)).numpy(), x, atol=1e-7)
    np.testing.assert_allclose(load_audio((x.astype(np.float64), SR)).numpy(), x, atol=1e-7)


@pytest.mark.parametrize("rate", [44100, 8000, 22050, 48000])
def test_resampling_keeps_a_1khz_sine(rate):
    x = _sine(1000, rate, 1.0, amp=0.6)
    got = load_audio(_encode(x, rate, "WAV", "FLOAT")).numpy()
    assert abs(len(got) - SR) <= 1
    assert _peak_hz(got, SR) == pytest.approx(1000, abs=1)
    assert _amplitude(got) == pytest.approx(0.6, abs=2e-3)
    reference = _sine(1000, SR, 1.0, amp=0.6)
    middle = slice(1000, 15000)
    np.testing.assert_allclose(got[middle], reference[middle], atol=5e-3)  # same phase, no delay


def test_downsampling_removes_content_above_the_new_nyquist():
    rate = 48000
    x = _sine(1000, rate, 1.0, amp=0.3) + _sine(12000, rate, 1.0, amp=0.3)  # 12 kHz would alias to 4 kHz
    got = load_audio((x, rate)).numpy()
    spectrum = np.abs(np.fft.rfft(got[2000:-2000] * np.hanning(len(got) - 4000)))
    hz = np.fft.rfftfreq(len(got) - 4000, 1 / SR)
    tone = spectrum[np.abs(hz - 1000) < 20].max()
    alias = spectrum[np.abs(hz - 4000) < 50].max()
    assert 20 * math.log10(alias / tone) < -90


def test_sample_rate_argument_other_than_16k():
    x = _sine(1000, SR, 1.0)
    assert load_audio((x, SR), sample_rate=8000).numel() == 8000
    np.testing.assert_array_equal(load_audio((x, SR), sample_rate=SR).numpy(), x)


# ------------------------------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / "clip.wav"
    with pytest.raises(AudioError, match="not found: .*nope/clip.wav"):
        load_audio(missing)
    with pytest.raises(AudioError, match="is a directory"):
        load_audio(tmp_path)


def test_empty_inputs(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        load_audio(tmp_path / "empty.wav")
    with pytest.raises(AudioError, match="empty"):
        load_audio(b"")


def test_non_audio_bytes():
    with pytest.raises(AudioError, match="cannot decode .* as audio .*not recognised"):
        load_audio(b"this is a text file, not a sound " * 20)
    with pytest.raises(AudioError, match="cannot decode"):
        load_audio(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")


def test_truncated_wav_is_rejected(tmp_path):
    data = _encode(_sine(440, SR, 1.0), SR, "WAV", "PCM_16")  # 44-byte header + 32000 bytes
    with pytest.raises(AudioError, match="truncated: its header declares 32000 bytes .* only 15978"):
        load_audio(data[: len(data) // 2])
    (tmp_path / "cut.wav").write_bytes(data[:-1])
    with pytest.raises(AudioError, match="cut.wav is truncated"):
        load_audio(tmp_path / "cut.wav")
    with pytest.raises(AudioError, match="truncated"):  # header only, data promised
        load_audio(data[:44])


def test_unknown_length_is_read_block_by_block(monkeypatch):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 70000).astype(np.float32)  # more than one 65536 block
    data = _encode(x, SR, "FLAC", "PCM_24")
    monkeypatch.setattr(decode, "_SF_COUNT_MAX", len(x))  # as if libsndfile reported an unknown length
    np.testing.assert_allclose(load_audio(data).numpy(), x, atol=1e-6)


def test_header_only_wav_with_no_data_has_no_samples():
    data = _encode(np.zeros(0, dtype=np.float32), SR, "WAV", "PCM_16")
    assert len(data) == 44
    with pytest.raises(AudioError, match="contains no audio samples"):
        load_audio(data)


def test_streamed_wav_with_unknown_length_is_accepted():
    data = bytearray(_encode(_sine(440, SR, 0.1), SR, "WAV", "PCM_16"))
    data[4:8] = data[40:44] = b"\xff\xff\xff\xff"  # RIFF and data sizes unknown, as ffmpeg writes to a pipe
    assert load_audio(bytes(data)).numel() == 1600


@pytest.mark.parametrize(
    "fmt,subtype,message",
    [
        ("FLAC", "PCM_16", "truncated or corrupt"),
        ("MP3", None, "truncated: its Xing header declares"),
        ("OGG", "VORBIS", "truncated"),
        ("OGG", "OPUS", "truncated"),
        ("AIFF", "PCM_16", "truncated: its header declares"),
    ],
)
def test_truncated_files_of_other_formats_are_rejected(fmt, subtype, message):
    x = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * SR).astype(np.float32)
    data = _encode(x, SR, fmt, subtype)
    assert load_audio(data).numel() == pytest.approx(len(x), abs=100)
    assert load_audio(data + b"\0" * 64).numel() == pytest.approx(len(x), abs=100)  # trailing junk is fine
    for fraction in (0.3, 0.6, 0.9):
        with pytest.raises(AudioError, match=message):
            load_audio(data[: int(len(data) * fraction)])


def test_ogg_cut_at_a_page_boundary_is_truncated():
    data = _encode(_sine(440, SR, 3.0), SR, "OGG", "VORBIS")
    last_page = data.rfind(b"OggS")
    assert data[last_page + 5] & 0x04  # the end-of-stream flag
    with pytest.raises(AudioError, match="ends without its end-of-stream page"):
        load_audio(data[:last_page])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    x = _sine(440, SR, 0.1)
    x[7] = bad
    with pytest.raises(AudioError, match="1 non-finite samples"):
        load_audio(_encode(x, SR, "WAV", "FLOAT"))
    with pytest.raises(AudioError, match="non-finite"):
        load_audio((x, SR))


def test_wrong_types_and_arguments(tmp_path):
    x = _sine(440, SR, 0.1)
    cases = [
        (lambda: load_audio(123), "got int"),
        (lambda: load_audio(None), "got NoneType"),
        (lambda: load_audio(x), r"pass \(samples, sample_rate\)"),
        (lambda: load_audio(torch.from_numpy(x)), r"pass \(samples, sample_rate\)"),
        (lambda: load_audio((x, -5)), "positive integer"),
        (lambda: load_audio((x, 16000.5)), "positive integer"),
        (lambda: load_audio((x, True)), "positive integer"),
        (lambda: load_audio((x, SR, 2)), "tuple of 3"),
        (lambda: load_audio(([0.1, 0.2], SR)), "numpy array or torch tensor"),
        (lambda: load_audio((x.astype(np.complex64), SR)), "integer or floating"),
        (lambda: load_audio((np.zeros((2, 2, 100), np.float32), SR)), "1-D or 2-D"),
        (lambda: load_audio((np.zeros(0, np.float32), SR)), "no audio samples"),
        (lambda: load_audio((x[:1], 48000)), "too short to resample"),
        (lambda: load_audio((x, SR), sample_rate=0), "sample_rate must be a positive integer"),
        (lambda: load_audio((x, SR), sample_rate=16000.0), "sample_rate must be a positive integer"),
        (lambda: load_audio(io.StringIO("RIFF")), "not bytes"),
    ]
    for call, message in cases:
        with pytest.raises(AudioError, match=message):
            call()
    assert issubclass(AudioError, ValueError)


def _xingless_vbr_mp3() -> tuple[bytes, float]:
    """A VBR MP3 without its first frame (the Xing header); loud first, so libsndfile's estimate is short."""
    rng = np.random.default_rng(0)
    x = np.concatenate([0.5 * rng.standard_normal(SR // 2), np.zeros(SR * 5 // 2)]).astype(np.float32)
    data = _encode(x, SR, "MP3", bitrate_mode="VARIABLE")
    assert data[:3] == b"\xff\xf3\x88" and b"Xing" in data[:64]  # MPEG-2 layer III, 64 kbit/s, 16 kHz
    first_frame = 72 * 64000 // SR + ((data[2] >> 1) & 1)  # 288 bytes
    return data[first_frame:], len(x) / SR


def test_vbr_mp3_without_xing_header_is_decoded_fully_with_ffmpeg():
    if shutil.which("ffmpeg") is None:
        pytest.skip(
            "ffmpeg is not installed (apt-get install ffmpeg); libsndfile alone cannot decode this file"
        )
    data, seconds = _xingless_vbr_mp3()
    got = load_audio(data)
    assert got.numel() / SR == pytest.approx(seconds, abs=0.1)


def test_vbr_mp3_without_xing_header_and_no_ffmpeg_raises(monkeypatch):
    data, seconds = _xingless_vbr_mp3()
    with sf.SoundFile(io.BytesIO(data)) as f:
        decoded = len(f.read())
    if decoded / SR > seconds - 0.2:
        pytest.skip("this libsndfile decodes Xing-less VBR MP3 fully; nothing to guard against")
    monkeypatch.setattr(decode.shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match=r"without a Xing/Info header\)\. Install ffmpeg"):
        load_audio(data)


def test_public_names_are_exported():
    assert sslalm.load_audio is load_audio
    assert sslalm.AudioError is AudioError
    assert sslalm.FbankExtractor is FbankExtractor


def test_sample_rate_is_defined_once_and_imports_without_torch():
    """``SAMPLE_RATE`` has one definition (``sslalm.audio``); numpy-only modules import it without torch."""
    root = Path(sslalm.__file__).parent
    defining = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if any(isinstance(t, ast.Name) and t.id == "SAMPLE_RATE" for t in targets):
                defining.append(path.relative_to(root).as_posix())
    assert defining == ["audio/__init__.py"]
    code = "import sys; from sslalm.audio import SAMPLE_RATE; print(SAMPLE_RATE, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["16000", "False"]


# -------------------------------------------------------------------------------------------------- fbank


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 160000, 163840])
def test_frame_count_follows_kaldi_snip_edges(n):
    ex = FbankExtractor(target_length=None)
    feats = ex(torch.randn(n))
    assert feats.shape == (1 + (n - 400) // 160, 128) == (ex.num_frames(n), 128)


def test_short_waveform_is_padded_to_one_frame_and_empty_is_an_error():
    ex = FbankExtractor(target_length=None, do_normalize=False)
    x = torch.randn(250)
    got = ex(x)
    assert got.shape == (1, 128) and ex.num_frames(250) == 1
    torch.testing.assert_close(got, ex(torch.cat([x - x.mean(), torch.zeros(150)])))
    with pytest.raises(AudioError, match="empty"):
        ex(torch.zeros(0))


def test_pad_and_crop_to_target_length_then_normalise():
    raw = FbankExtractor(target_length=None, do_normalize=False)
    ex = FbankExtractor()  # target_length 1024, AudioSet normalisation
    ten_s = torch.randn(160000) * 0.1
    feats = ex(ten_s)
    assert feats.shape == (1024, 128)
    expected = (raw(ten_s) + 4.2677393) / (2 * 4.5689974)
    torch.testing.assert_close(feats[:998], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(feats[998:], torch.full((26, 128), 4.2677393 / (2 * 4.5689974)))
    assert ex.padding_value == pytest.approx(0.467033, abs=1e-6)

    twelve_s = torch.randn(192000) * 0.1
    assert raw(twelve_s).shape == (1198, 128)
    torch.testing.assert_close(ex(twelve_s), ex.normalize(raw(twelve_s)[:1024]), rtol=0, atol=0)


def test_mel_filterbank_matches_values_measured_with_torchaudio():
    # torchaudio 2.11.0 compliance/kaldi.py get_mel_banks(128, 512, 16000, 20, 0, 100, -500, 1.0)
    banks = kaldi_mel_banks(128, 512, 16000)
    assert banks.shape == (128, 257) and banks.dtype == torch.float32
    pinned = {
        0: {1: 0.802637},
        10: {6: 0.827913},
        64: {57: 0.052356, 58: 0.700281, 59: 0.65979, 60: 0.027678},
        127: {246: 0.106259, 247: 0.298781, 248: 0.490585, 249: 0.681683, 250: 0.872086, 251: 0.938218,
              252: 0.749218, 253: 0.56089, 254: 0.373258, 255: 0.186287},
    }  # fmt: skip
    for m, weights in pinned.items():
        assert torch.nonzero(banks[m]).flatten().tolist() == sorted(weights)
        for k, w in weights.items():
            assert banks[m, k].item() == pytest.approx(w, abs=1e-6)
    assert banks[:, 256].abs().sum() == 0  # kaldi gives the Nyquist bin no weight


def test_mel_filterbank_against_the_kaldi_formula_by_hand():
    banks = kaldi_mel_banks(128, 512, 16000).double()

    def mel(f):
        return 1127.0 * math.log(1 + f / 700)

    lo, step = mel(20), (mel(8000) - mel(20)) / 129
    for m, k in [(5, 3), (40, 19), (64, 58), (100, 140), (127, 250)]:
        left, centre, right, f = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step, mel(k * 31.25)
        expected = max(0.0, min((f - left) / (centre - left), (right - f) / (right - centre)))
        assert banks[m, k].item() == pytest.approx(expected, abs=2e-5)
    # neighbouring triangles add up to one between the first and last centre
    inside = [k for k in range(257) if mel(34.05) < mel(k * 31.25) < mel(7833.5)]
    torch.testing.assert_close(
        banks[:, inside].sum(0), torch.ones(len(inside), dtype=torch.float64), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("n", [300, 400, 1000, 4321, 16000])
def test_fast_fbank_agrees_with_the_slow_reference(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.2
    fast = FbankExtractor(target_length=None, do_normalize=False).log_mel(torch.from_numpy(x))
    slow = kaldi_fbank_reference(x)
    assert fast.shape == slow.shape
    np.testing.assert_allclose(fast.numpy(), slow, atol=2e-3, rtol=0)


def test_chunking_does_not_change_the_result():
    x = torch.randn(SR * 3) * 0.1
    whole = FbankExtractor(target_length=None, do_normalize=False, chunk_frames=100000).log_mel(x)
    chunked = FbankExtractor(target_length=None, do_normalize=False, chunk_frames=7).log_mel(x)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-6)


def test_dc_offset_does_not_change_the_fbank():
    ex = FbankExtractor(target_length=None, do_normalize=False)
    x = torch.randn(SR) * 0.1
    torch.testing.assert_close(ex(x + 0.3), ex(x), rtol=0, atol=2e-3)
    torch.testing.assert_close(ex(x - 1.0), ex(x), rtol=0, atol=2e-3)


@pytest.mark.parametrize("freq", [250.0, 1000.0, 3000.0, 6500.0])
def test_a_pure_tone_peaks_in_the_mel_bin_centred_nearest_to_it(freq):
    ex = FbankExtractor(target_length=None, do_normalize=False)
    feats = ex(torch.from_numpy(_sine(freq, SR, 0.5)))

    def mel(f):
        return 1127.0 * math.log(1 + f / 700)

    step = (mel(8000) - mel(20)) / 129
    centres = [mel(20) + (m + 1) * step for m in range(128)]
    nearest = min(range(128), key=lambda m: abs(centres[m] - mel(freq)))
    peaks = feats.argmax(dim=1)
    assert (peaks == nearest).all(), (freq, nearest, peaks.unique())


def test_other_sample_rates_are_resampled_first():
    ex = FbankExtractor(target_length=None)
    x = _sine(1000, 44100, 1.0)
    expected = ex(decode.resample(torch.from_numpy(x), 44100, SR))
    torch.testing.assert_close(ex(x, sample_rate=44100), expected, rtol=0, atol=0)
    assert expected.shape == (98, 128)
    torch.testing.assert_close(ex(x[:16000], sample_rate=SR), ex(x[:16000]), rtol=0, atol=0)
    eight_k = FbankExtractor(target_length=None, sample_rate=8000)
    assert eight_k(torch.randn(8000)).shape == (98, 128)  # None: already at the extractor's rate
    with pytest.raises(AudioError, match="too short to resample"):
        ex(torch.randn(1), sample_rate=48000)


def test_input_validation():
    ex = FbankExtractor()
    assert ex(torch.randn(1, 1600)).shape == (1024, 128)  # (1, N) is accepted
    assert ex(np.random.default_rng(0).standard_normal(1600)).shape == (1024, 128)
    for bad, message in [
        (torch.randn(2, 1600), "mono 1-D"),
        (torch.ones(1600, dtype=torch.int16), "float waveform"),
        (torch.tensor([0.1, float("nan")] * 500), "NaN"),
        ([0.1] * 1600, "torch tensor or numpy"),
    ]:
        with pytest.raises(AudioError, match=message):
            ex(bad)


def test_config_round_trip():
    ex = FbankExtractor(target_length=512, mean=-5.081, std=4.4849 / 2)
    again = FbankExtractor.from_dict(json.loads(json.dumps(ex.to_dict())))
    x = torch.randn(8000)
    torch.testing.assert_close(again(x), ex(x), rtol=0, atol=0)
    assert again(x).shape == (512, 128)


def test_extract_batch_pads_like_single_calls():
    waves = [torch.randn(n) * 0.1 for n in (16000, 5000, 300)]
    ex = FbankExtractor(target_length=None)
    batch, lengths = ex.extract_batch(waves)
    assert batch.shape == (3, 98, 128) and lengths.tolist() == [98, 29, 1]
    for i, w in enumerate(waves):
        torch.testing.assert_close(batch[i, : lengths[i]], ex(w), rtol=0, atol=0)
        assert torch.allclose(batch[i, lengths[i] :], torch.tensor(ex.padding_value))
    fixed = FbankExtractor(target_length=64)
    batch, lengths = fixed.extract_batch(waves)
    assert batch.shape == (3, 64, 128) and lengths.tolist() == [64, 29, 1]
    torch.testing.assert_close(batch[1], fixed(waves[1]), rtol=0, atol=0)
