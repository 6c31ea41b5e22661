"""Audio front end: decode any common audio file to mono 16 kHz, then the DASS/AST kaldi fbank.

``load_audio`` decodes with soundfile (libsndfile 1.2: WAV, FLAC, OGG Vorbis/Opus, MP3 and more), mixes the
channels down by their mean and resamples with soxr's band-limited "VHQ" filter. Bad input raises
``AudioError`` (a ``ValueError``) with a message that names the source and says what is wrong.

libsndfile decodes some damaged files without an error, losing audio silently, so we check:

* a WAV or AIFF whose sample data chunk is cut short still opens (libsndfile shortens it); we compare the
  declared chunk size with the bytes that are there and raise;
* an Ogg file cut anywhere decodes up to the cut (or to nothing); we walk its pages and raise when the last
  complete page does not carry the end-of-stream flag;
* for a VBR MP3 without a Xing/Info header, libsndfile's sample count is mpg123's estimate from the file size,
  and reading stops there (often at a third of the file). We count the MPEG frames ourselves and, when
  libsndfile stopped early, decode with the ``ffmpeg`` program if it is installed, else raise.

``FbankExtractor`` is our own pure-torch implementation of the kaldi formulas behind
``torchaudio.compliance.kaldi.fbank`` with the options AST and DASS use (``reference/dass.md`` §2). We write
it rather than call torchaudio because torchaudio's PyPI wheels do not import beside our CPU torch, and the
known alternatives differ (lhotse's defaults; kaldi-native-fbank refuses 128 bins at 16 kHz). It is vectorised
(frames by ``unfold``, ``rfft``, one cached mel matrix) and works through long audio in chunks of frames, so
memory stays bounded. Measured against torchaudio 2.11.0's ``kaldi.fbank`` its output is bit-identical (10
signals and 600 s of noise). Its slow twin, ``kaldi_fbank_reference``, loops over frames and mel bins in
float64; the tests check that they agree and pin filterbank values measured with torchaudio.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import struct
import subprocess
from collections.abc import Sequence
from typing import Any, BinaryIO, Union

import numpy as np
import torch

from sslalm.errors import UserError

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, tuple]

#: AudioSet statistics of the un-normalised fbank used by AST and DASS (the std is doubled when applied).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974

_RESAMPLE_QUALITY = "VHQ"
_SF_COUNT_MAX = 2**63 - 1
_WAV_UNKNOWN_SIZE = 0x7FFF0000  # data sizes at or above this are "length unknown" placeholders (streamed WAV)
_FLOAT_EPS = float(torch.finfo(torch.float32).eps)  # kaldi's log floor, std::numeric_limits<float>::epsilon()


class AudioError(UserError):
    """Audio input that cannot be used: missing, unreadable, truncated, empty, non-finite, wrongly typed,
    too long or with an absurd sample rate. A ``UserError`` (so a ``ValueError``)."""


#: sample rates a real recording can have; a header claiming 1 Hz would turn 2 kB into 1,000 s of audio
MIN_SOURCE_RATE = 1000
MAX_SOURCE_RATE = 384000


def _check_source(name: str, frames: int, rate: int, max_seconds: float | None, hint: str | None) -> None:
    """Refuse an absurd sample rate, or more than ``max_seconds`` of audio (``hint`` names the setting)."""
    if not MIN_SOURCE_RATE <= rate <= MAX_SOURCE_RATE:
        raise AudioError(
            f"{name} claims a sample rate of {rate} Hz; real audio is {MIN_SOURCE_RATE}-{MAX_SOURCE_RATE} "
            "Hz, so its header is damaged or forged"
        )
    if max_seconds is not None and frames / rate > max_seconds:
        how = f" (raise it with {hint})" if hint else ""
        raise AudioError(
            f"{name} is {frames / rate:.1f} s long; the limit is {max_seconds:g} s{how}, or cut it into "
            "shorter clips"
        )


# --------------------------------------------------------------------------------------------------- loading


def load_audio(
    source: AudioSource,
    sample_rate: int = 16000,
    max_seconds: float | None = None,
    limit_hint: str | None = None,
) -> Tensor:
    """Decode ``source`` to a mono float32 waveform at ``sample_rate``. Returns (num_samples,).

    ``source`` is a path (``str`` or ``os.PathLike``), the encoded bytes of a file (``bytes``, ``bytearray``,
    ``memoryview``), a binary file object, or an in-memory ``(samples, source_rate)`` pair where
    ``samples`` is a numpy array or torch tensor of shape (num_samples,) or 2-D with channels on the shorter
    axis (both (channels, samples) and (samples, channels) work). Integer samples are scaled to [-1, 1) by
    their type's range; float samples are kept as they are. Channels are averaged; soxr converts the rate.

    A source rate outside ``MIN_SOURCE_RATE``..``MAX_SOURCE_RATE`` is refused, and so is audio longer than
    ``max_seconds`` (checked from the header before decoding where the format declares its length);
    ``limit_hint`` names the setting that raises the limit, for the message.
    """
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    samples, rate, name = _decode_any(source, (max_seconds, limit_hint))  # (num_samples, channels)
    _check_source(name, samples.shape[0], rate, max_seconds, limit_hint)
    return _finish(samples, rate, sample_rate, name)


def resample(waveform: Tensor | np.ndarray, orig_rate: int, target_rate: int) -> Tensor:
    """Band-limited resampling of a 1-D (num_samples,) or (num_samples, channels) signal with soxr "VHQ".

    Returns a float32 CPU tensor; the input is returned unchanged (as float32) when the rates are equal.
    """
    if orig_rate <= 0 or target_rate <= 0:
        raise AudioError(f"sample rates must be positive, got {orig_rate} -> {target_rate}")
    x = waveform.detach().cpu().float().numpy() if isinstance(waveform, Tensor) else np.asarray(waveform)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if orig_rate != target_rate:
        soxr = _import_soxr()
        x = soxr.resample(x, int(orig_rate), int(target_rate), quality=_RESAMPLE_QUALITY)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _finish(samples: np.ndarray, rate: int, target_rate: int, name: str) -> Tensor:
    """Validate (num_samples, channels) samples, mix to mono and resample. Returns (num_samples',)."""
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise AudioError(f"{name} contains no audio samples")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = int(samples.size - np.count_nonzero(finite))
        raise AudioError(f"{name} contains {bad} non-finite samples (NaN or infinity); the file is corrupt")
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)  # (num_samples,)
    out = resample(mono, rate, target_rate)
    if out.numel() == 0:
        raise AudioError(f"{name} has {samples.shape[0]} samples at {rate} Hz: too short to resample")
    return out


def _decode_any(source: Any, limit: tuple = (None, None)) -> tuple[np.ndarray, int, str]:
    """Dispatch on the source type. Returns samples (num_samples, channels), their rate and a display name.
    ``limit``: (max_seconds, hint), checked before decoding where the header tells the length."""
    if isinstance(source, tuple):
        return _from_array(source)
    if isinstance(source, (str, os.PathLike)):
        return _decode_path(os.fspath(source), limit)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return _decode_bytes(data, f"<{len(data)} bytes of audio>", limit)
    if hasattr(source, "read"):
        name = str(getattr(source, "name", "<file object>"))
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            kind = type(data).__name__
            raise AudioError(f"file object {name} returned {kind}, not bytes; open it in 'rb' mode")
        return _decode_bytes(bytes(data), name, limit)
    if isinstance(source, (Tensor, np.ndarray)):
        raise AudioError("an array needs its sample rate: pass (samples, sample_rate) to load_audio")
    raise AudioError(
        "load_audio expects a path, encoded bytes, a binary file object or a (samples, sample_rate) pair, "
        f"got {type(source).__name__}"
    )


def _from_array(pair: tuple) -> tuple[np.ndarray, int, str]:
    if len(pair) != 2:
        raise AudioError(f"an in-memory source must be (samples, sample_rate), got a tuple of {len(pair)}")
    array, rate = pair
    name = "<array>"
    valid = isinstance(rate, (int, np.integer, float)) and not isinstance(rate, bool) and math.isfinite(rate)
    if not valid or rate <= 0 or rate != int(rate):
        raise AudioError(f"the sample rate of {name} must be a positive integer, got {rate!r}")
    if isinstance(array, Tensor):
        array = array.detach().cpu()
        array = array.float().numpy() if array.is_floating_point() else array.numpy()
    if not isinstance(array, np.ndarray):
        raise AudioError(f"samples must be a numpy array or torch tensor, got {type(array).__name__}")
    if array.dtype.kind in "iu":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        offset = half if array.dtype.kind == "u" else 0.0
        array = (array.astype(np.float64) - offset) / half
    elif array.dtype.kind != "f":
        raise AudioError(f"samples must be integer or floating point, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 2:
        if array.shape[0] < array.shape[1]:  # (channels, samples) -> (samples, channels)
            array = array.T
    else:
        raise AudioError(f"samples must be 1-D or 2-D (channels and samples), got shape {tuple(array.shape)}")
    return array, int(rate), name


def _decode_path(path: str, limit: tuple = (None, None)) -> tuple[np.ndarray, int, str]:
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    if os.path.isdir(path):
        raise AudioError(f"expected an audio file but {path} is a directory")
    try:
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size == 0:
                raise AudioError(f"{path} is empty (0 bytes)")
            return _decode_file(fh, path, path, limit)
    except OSError as err:
        raise AudioError(f"cannot read {path}: {err.strerror or err}") from err


def _decode_bytes(data: bytes, name: str, limit: tuple = (None, None)) -> tuple[np.ndarray, int, str]:
    if not data:
        raise AudioError(f"{name} is empty (0 bytes)")
    return _decode_file(io.BytesIO(data), data, name, limit)


def _decode_file(
    fh: BinaryIO, origin: str | bytes, name: str, limit: tuple = (None, None)
) -> tuple[np.ndarray, int, str]:
    """Decode with soundfile; ``origin`` is the path (decoded natively) or the bytes behind ``fh``."""
    sf = _import_soundfile()
    max_seconds, hint = limit
    try:
        with sf.SoundFile(origin if isinstance(origin, str) else fh) as f:
            fmt, rate, channels, declared = f.format, f.samplerate, f.channels, f.frames
            if declared == _SF_COUNT_MAX:  # length unknown to libsndfile: read blocks until the end
                _check_source(name, 0, rate, max_seconds, hint)
                parts, total = [np.zeros((0, channels), np.float32)], 0
                while len(block := f.read(1 << 16, dtype="float32", always_2d=True)):
                    parts.append(block)
                    total += len(block)
                    _check_source(name, total, rate, max_seconds, hint)
                samples = np.concatenate(parts)
            else:
                _check_source(name, declared, rate, max_seconds, hint)
                samples = f.read(dtype="float32", always_2d=True)  # (num_samples, channels)
    except sf.LibsndfileError as err:
        reason = err.error_string.rstrip(".")
        if "does not exist" in reason:
            # libsndfile's "File does not exist or is not a regular file" is its answer to bytes that no
            # decoder (mpg123 included) accepts, for a file that is there
            raise AudioError(
                f"cannot decode {name} as audio: its contents are not decodable audio (no decoder "
                "recognises them; use WAV, FLAC, OGG or MP3)"
            ) from err
        if "not recognised" in reason:
            raise AudioError(
                f"cannot decode {name} as audio (libsndfile: {reason}): it is not decodable audio "
                "(use WAV, FLAC, OGG or MP3)"
            ) from err
        raise AudioError(
            f"cannot decode {name} as audio (libsndfile: {reason}); the file may be truncated or corrupt"
        ) from err
    except AudioError:
        raise
    except (RuntimeError, ValueError, TypeError) as err:  # soundfile raises these for unusable file objects
        raise AudioError(f"cannot decode {name} as audio: {err}") from err
    if fmt in ("WAV", "WAVEX", "AIFF"):
        shortfall = _chunk_data_shortfall(fh)
        if shortfall is not None:
            raise AudioError(
                f"{name} is truncated: its header declares {shortfall[0]} bytes of audio data but only "
                f"{shortfall[1]} are present"
            )
    elif fmt == "OGG" and not _ogg_stream_complete(fh):
        raise AudioError(f"{name} is truncated: the Ogg stream ends without its end-of-stream page")
    elif fmt == "MP3":
        data = origin if isinstance(origin, bytes) else _read_all(fh)
        samples = _check_mp3(samples, data, rate, channels, name)
    elif declared != _SF_COUNT_MAX and samples.shape[0] < declared:
        raise AudioError(f"{name} is truncated: decoded {samples.shape[0]} of {declared} samples")
    return samples, rate, name


def _read_all(fh: BinaryIO) -> bytes:
    fh.seek(0)
    return fh.read()


def _chunk_data_shortfall(fh: BinaryIO) -> tuple[int, int] | None:
    """(declared, present) byte counts when the sample chunk of a WAVE or AIFF file is cut short, else None.

    Walks the RIFF (little-endian ``data``), RIFX or IFF ``FORM``/AIFF (big-endian ``SSND``) chunks.
    """
    size = fh.seek(0, io.SEEK_END)
    fh.seek(0)
    head = fh.read(12)
    if len(head) == 12 and head[:4] in (b"RIFF", b"RIFX") and head[8:12] == b"WAVE":
        endian, data_id = ("<" if head[:4] == b"RIFF" else ">"), b"data"
    elif len(head) == 12 and head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, data_id = ">", b"SSND"
    else:
        return None
    pos = 12
    while pos + 8 <= size:
        fh.seek(pos)
        chunk_id, chunk_size = struct.unpack(endian + "4sI", fh.read(8))
        if chunk_id == data_id:
            present = size - pos - 8
            if present < chunk_size < _WAV_UNKNOWN_SIZE:
                return chunk_size, present
            return None
        pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _ogg_stream_complete(fh: BinaryIO) -> bool:
    """True when the last complete Ogg page carries the end-of-stream flag (bytes after it are ignored)."""
    size = fh.seek(0, io.SEEK_END)
    pos, last_flags = 0, 0
    while pos + 27 <= size:
        fh.seek(pos)
        header = fh.read(27)  # "OggS", version, flags, granule, serial, sequence, crc, segment count
        if header[:4] != b"OggS":
            break
        table = fh.read(header[26])
        end = pos + 27 + len(table) + sum(table)
        if len(table) < header[26] or end > size:
            break
        last_flags, pos = header[5], end
    return bool(last_flags & 0x04)


# ------------------------------------------------------------------------------------------------------- MP3

# kbit/s by bitrate index 1..14, for (MPEG-1, layer) and (MPEG-2/2.5, layer); layer 2 and 3 share in MPEG-2.
_MPEG1_KBPS = {
    1: (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    2: (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    3: (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
}
_MPEG2_KBPS = {
    1: (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    2: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    3: (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}  # by version


def _mpeg_frame(data: bytes, pos: int) -> tuple[int, int] | None:
    """(frame length in bytes, samples per frame) of an MPEG audio frame header at ``pos``, or None."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    b1, b2 = data[pos + 1], data[pos + 2]
    version, layer_bits, bitrate_idx, rate_idx = (b1 >> 3) & 3, (b1 >> 1) & 3, b2 >> 4, (b2 >> 2) & 3
    if version == 1 or layer_bits == 0 or bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    layer = 4 - layer_bits
    kbps = (_MPEG1_KBPS if version == 3 else _MPEG2_KBPS)[layer][bitrate_idx - 1]
    rate, padding = _MPEG_RATES[version][rate_idx], (b2 >> 1) & 1
    if layer == 1:
        return (12 * kbps * 1000 // rate + padding) * 4, 384
    per_frame = 1152 if layer == 2 or version == 3 else 576
    return per_frame // 8 * kbps * 1000 // rate + padding, per_frame


def _scan_mpeg(data: bytes) -> tuple[int, int, int | None]:
    """Walk the MPEG frames of an MP3 file. Returns (audio frames, samples per frame, Xing/Info frame count).

    The Xing/Info frame (if any) is not counted as audio. A last frame cut short is not counted.
    """
    pos = 0
    if data[:3] == b"ID3" and len(data) >= 10:  # ID3v2 tag: syncsafe size, optional footer
        pos = 10 + ((data[6] & 0x7F) << 21 | (data[7] & 0x7F) << 14 | (data[8] & 0x7F) << 7 | data[9] & 0x7F)
        pos += 10 if data[5] & 0x10 else 0
    frames, per_frame, xing, first = 0, 1152, None, True
    while pos < len(data):
        frame = _mpeg_frame(data, pos)
        if frame is None:  # resync on the next header that is followed by another header
            nxt = data.find(b"\xff", pos + 1)
            while nxt != -1:
                f = _mpeg_frame(data, nxt)
                if f is not None and (nxt + f[0] >= len(data) or _mpeg_frame(data, nxt + f[0]) is not None):
                    break
                nxt = data.find(b"\xff", nxt + 1)
            if nxt == -1:
                break
            pos = nxt
            continue
        length, per_frame = frame
        if pos + length > len(data):
            break
        if first:
            first = False
            body = data[pos : pos + length]
            tag = max(body.find(b"Xing", 4, 48), body.find(b"Info", 4, 48))
            if tag != -1 and len(body) >= tag + 12 and body[tag + 7] & 1:
                xing = struct.unpack(">I", body[tag + 8 : tag + 12])[0]
                pos += length
                continue
        frames += 1
        pos += length
    return frames, per_frame, xing


def _check_mp3(samples: np.ndarray, data: bytes, rate: int, channels: int, name: str) -> np.ndarray:
    """Catch truncated MP3s and libsndfile stopping early on VBR files without a Xing header."""
    frames, per_frame, xing = _scan_mpeg(data)
    if xing is not None and frames < xing - 1:  # slack of one: encoders differ on counting the Xing frame
        raise AudioError(f"{name} is truncated: its Xing header declares {xing} MPEG frames, it has {frames}")
    expected = frames * per_frame
    slack = 4 * per_frame  # encoder delay and padding that a gapless decoder drops
    if samples.shape[0] + slack >= expected:
        return samples
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioError(
            f"{name}: libsndfile decoded only {samples.shape[0] / rate:.2f} s of about "
            f"{expected / rate:.2f} s (a VBR MP3 without a Xing/Info header). Install ffmpeg "
            "(apt-get install ffmpeg) to decode it, or re-encode the file"
        )
    logger.warning("%s: VBR MP3 without a Xing header; decoding with ffmpeg instead of libsndfile", name)
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-f", "mp3", "-i", "pipe:0"]
    cmd += ["-f", "f32le", "-ac", str(channels), "-ar", str(rate), "pipe:1"]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    if proc.returncode != 0:
        raise AudioError(f"ffmpeg could not decode {name}: {proc.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(proc.stdout, dtype="<f4").reshape(-1, channels)


def _import_soundfile():
    try:
        import soundfile
    except ImportError as err:  # pragma: no cover - pinned dependency
        raise ImportError("decoding audio files needs soundfile: pip install soundfile==0.14.0") from err
    return soundfile


def _import_soxr():
    try:
        import soxr
    except ImportError as err:  # pragma: no cover - pinned dependency
        raise ImportError("resampling needs soxr: pip install soxr==1.1.0") from err
    return soxr


# ------------------------------------------------------------------------------------------------- fbank


def kaldi_mel_banks(
    num_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> Tensor:
    """Kaldi's triangular mel filters, float32 (num_bins, n_fft // 2 + 1); the Nyquist column is zero.

    Mel scale ``1127 ln(1 + f / 700)``; the filters are equally spaced in mel between ``low_freq`` and
    ``high_freq`` (<= 0 means Nyquist minus its magnitude) and are triangles in mel, not in Hz. The band edges
    are computed in float64 and everything per FFT bin in float32, as kaldi (``BaseFloat``) and torchaudio do:
    the weights then equal torchaudio's bit for bit (float64 weights differ by up to 1.4e-5, which moves the
    log-mel of a pure tone on a filter's tail by up to 4e-4).
    """
    nyquist = sample_rate / 2
    high = high_freq + nyquist if high_freq <= 0 else high_freq
    if not (0 <= low_freq < high <= nyquist) or num_bins < 3:
        raise ValueError(f"bad mel range: {num_bins} bins over {low_freq}..{high} Hz (Nyquist {nyquist} Hz)")
    mel_lo, mel_hi = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_hi - mel_lo) / (num_bins + 1)
    index = torch.arange(num_bins, dtype=torch.float32)[:, None]  # (num_bins, 1)
    left, centre, right = mel_lo + index * delta, mel_lo + (index + 1) * delta, mel_lo + (index + 2) * delta
    freqs = (sample_rate / n_fft) * torch.arange(n_fft // 2, dtype=torch.float32)  # (n_fft / 2,) Hz
    mel = (1127.0 * (1.0 + freqs / 700.0).log())[None, :]  # (1, n_fft / 2)
    weights = torch.minimum((mel - left) / (centre - left), (right - mel) / (right - centre)).clamp_min(0)
    return torch.nn.functional.pad(weights, (0, 1))  # (num_bins, n_fft // 2 + 1)


class FbankExtractor:
    """Normalised DASS/AST log-mel filterbank: a 1-D waveform -> (target_length, num_mel_bins) features.

    Equal to ``torchaudio.compliance.kaldi.fbank(waveform - waveform.mean(), htk_compat=True,
    use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0, frame_shift=10)`` (kaldi defaults
    otherwise: 25 ms frames, snip_edges, DC removal per frame, preemphasis 0.97, power spectrum zero-padded to
    a 512-point FFT, 20 Hz .. Nyquist), then zero-padded at the end or cropped to ``target_length`` frames and
    normalised as ``(x - mean) / (2 * std)`` (AudioSet statistics; padding comes before normalisation, as in
    AST). ``target_length=None`` keeps every frame; ``do_normalize=False`` returns the raw log-mel values.

    A waveform at another ``sample_rate`` is resampled to the extractor's rate first. A waveform shorter than
    one frame (400 samples) is zero-padded to one frame rather than rejected; an empty one raises AudioError.
    """

    def __init__(
        self,
        target_length: int | None = 1024,
        num_mel_bins: int = 128,
        sample_rate: int = 16000,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        low_freq: float = 20.0,
        high_freq: float = 0.0,
        preemphasis: float = 0.97,
        mean: float = AUDIOSET_MEAN,
        std: float = AUDIOSET_STD,
        do_normalize: bool = True,
        chunk_frames: int = 4096,
    ) -> None:
        if target_length is not None and target_length <= 0:
            raise ValueError(f"target_length must be positive or None, got {target_length}")
        self.target_length = target_length
        self.num_mel_bins = num_mel_bins
        self.sample_rate = sample_rate
        self.frame_length = int(sample_rate * frame_length_ms / 1000)  # 400 samples at 16 kHz
        self.frame_shift = int(sample_rate * frame_shift_ms / 1000)  # 160
        self.n_fft = 1 << (self.frame_length - 1).bit_length()  # 512
        self.low_freq, self.high_freq = low_freq, high_freq
        self.preemphasis = preemphasis
        self.mean, self.std, self.do_normalize = mean, std, do_normalize
        self.chunk_frames = chunk_frames
        self._config = {
            "target_length": target_length,
            "num_mel_bins": num_mel_bins,
            "sample_rate": sample_rate,
            "frame_length_ms": frame_length_ms,
            "frame_shift_ms": frame_shift_ms,
            "low_freq": low_freq,
            "high_freq": high_freq,
            "preemphasis": preemphasis,
            "mean": mean,
            "std": std,
            "do_normalize": do_normalize,
        }
        self._mel_t = kaldi_mel_banks(num_mel_bins, self.n_fft, sample_rate, low_freq, high_freq).T
        self._window = torch.hann_window(self.frame_length, periodic=False, dtype=torch.float32)
        self._on_device: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def to_dict(self) -> dict[str, Any]:
        """The constructor arguments, JSON-serialisable; ``FbankExtractor(**d)`` rebuilds the extractor."""
        return dict(self._config)

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> FbankExtractor:
        return cls(**config)

    def num_frames(self, num_samples: int) -> int:
        """Frames the kaldi framing gives for ``num_samples`` (before padding/cropping); 1 below one frame."""
        if num_samples <= self.frame_length:
            return 1 if num_samples > 0 else 0
        return 1 + (num_samples - self.frame_length) // self.frame_shift

    @property
    def padding_value(self) -> float:
        """The value a padded frame has after normalisation (a zero log-mel normalised)."""
        return (0.0 - self.mean) / (2 * self.std) if self.do_normalize else 0.0

    def __call__(self, waveform: Tensor | np.ndarray, sample_rate: int | None = None) -> Tensor:
        """(num_samples,) waveform -> (target_length or frames, num_mel_bins) float32 features.

        ``sample_rate`` is the waveform's rate; None means the extractor's own (16 kHz by default).
        """
        return self._finish(self.log_mel(waveform, sample_rate))

    def log_mel(self, waveform: Tensor | np.ndarray, sample_rate: int | None = None) -> Tensor:
        """Un-normalised kaldi log-mel fbank of every frame: (num_frames, num_mel_bins) float32."""
        wav = self._prepare(waveform, sample_rate)  # (N,) mean removed, >= one frame long
        mel_t, window = self._constants(wav.device)
        frames = wav.unfold(0, self.frame_length, self.frame_shift)  # (T, 400) view, no copy
        out = torch.empty(frames.shape[0], self.num_mel_bins, dtype=torch.float32, device=wav.device)
        for start in range(0, frames.shape[0], self.chunk_frames):
            chunk = frames[start : start + self.chunk_frames]
            chunk = chunk - chunk.mean(dim=1, keepdim=True)  # DC offset per frame
            previous = torch.cat([chunk[:, :1], chunk[:, :-1]], dim=1)  # x[-1] := x[0], as kaldi
            chunk = (chunk - self.preemphasis * previous) * window
            power = torch.fft.rfft(chunk, n=self.n_fft).abs().pow(2)  # (t, n_fft/2 + 1)
            out[start : start + chunk.shape[0]] = (power @ mel_t).clamp_min(_FLOAT_EPS).log()
        return out

    def extract_batch(
        self, waveforms: Sequence[Tensor | np.ndarray], sample_rate: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Features of several waveforms: (B, T, num_mel_bins) and the real frame counts (B,) int64.

        T is ``target_length``, or the longest item's frame count when ``target_length`` is None; shorter
        items are padded exactly as ``__call__`` pads (``padding_value`` after normalisation).
        """
        raw = [self.log_mel(w, sample_rate) for w in waveforms]
        lengths = torch.tensor([r.shape[0] for r in raw], dtype=torch.long)
        longest = int(lengths.max()) if raw else 0
        width = self.target_length if self.target_length is not None else longest
        batch = torch.zeros(len(raw), width, self.num_mel_bins)
        for i, r in enumerate(raw):
            batch[i, : min(width, r.shape[0])] = r[:width]
        if self.do_normalize:
            batch = self.normalize(batch)
        return batch, lengths.clamp(max=width)

    def normalize(self, log_mel: Tensor) -> Tensor:
        """``(x - mean) / (2 * std)`` with the extractor's statistics."""
        return (log_mel - self.mean) / (2 * self.std)

    def _finish(self, log_mel: Tensor) -> Tensor:
        if self.target_length is not None:
            n = log_mel.shape[0]
            if n < self.target_length:
                log_mel = torch.nn.functional.pad(log_mel, (0, 0, 0, self.target_length - n))
            else:
                log_mel = log_mel[: self.target_length]
        return self.normalize(log_mel) if self.do_normalize else log_mel

    def _prepare(self, waveform: Tensor | np.ndarray, sample_rate: int | None) -> Tensor:
        if isinstance(waveform, np.ndarray):
            waveform = torch.from_numpy(np.ascontiguousarray(waveform))
        if not isinstance(waveform, Tensor):
            raise AudioError(f"waveform must be a torch tensor or numpy array, got {type(waveform).__name__}")
        if waveform.dim() == 2 and waveform.shape[0] == 1:
            waveform = waveform[0]
        if waveform.dim() != 1:
            shape = tuple(waveform.shape)
            raise AudioError(f"expected a mono 1-D waveform, got shape {shape}; load_audio mixes down")
        if not waveform.is_floating_point():
            raise AudioError(f"expected a float waveform, got dtype {waveform.dtype}; load_audio converts")
        if waveform.numel() == 0:
            raise AudioError("the waveform is empty")
        if not bool(torch.isfinite(waveform).all()):
            raise AudioError("the waveform contains NaN or infinite samples")
        wav = waveform.float()
        if sample_rate is not None and sample_rate != self.sample_rate:
            wav = resample(wav, sample_rate, self.sample_rate).to(waveform.device)
            if wav.numel() == 0:
                raise AudioError(f"{waveform.numel()} samples at {sample_rate} Hz are too short to resample")
        wav = wav - wav.mean()
        if wav.numel() < self.frame_length:
            wav = torch.nn.functional.pad(wav, (0, self.frame_length - wav.numel()))
        return wav

    def _constants(self, device: torch.device) -> tuple[Tensor, Tensor]:
        if device not in self._on_device:
            self._on_device[device] = (self._mel_t.to(device), self._window.to(device))
        return self._on_device[device]

    def __repr__(self) -> str:
        return (
            f"FbankExtractor(target_length={self.target_length}, num_mel_bins={self.num_mel_bins}, "
            f"sample_rate={self.sample_rate}, do_normalize={self.do_normalize})"
        )


def kaldi_fbank_reference(
    waveform: np.ndarray,
    sample_rate: int = 16000,
    num_mel_bins: int = 128,
    low_freq: float = 20.0,
    preemphasis: float = 0.97,
) -> np.ndarray:
    """Slow, obviously-correct twin of ``FbankExtractor.log_mel`` in float64: loops over frames and filters.

    Follows the kaldi recipe step by step (waveform mean removed first, as AST does) with no shared code.
    Returns (num_frames, num_mel_bins).
    """
    x = np.asarray(waveform, dtype=np.float64)
    x = x - x.mean()
    size, shift = int(sample_rate * 0.025), int(sample_rate * 0.010)
    if len(x) < size:
        x = np.concatenate([x, np.zeros(size - len(x))])
    n_fft = 1
    while n_fft < size:
        n_fft *= 2
    window = [0.5 - 0.5 * math.cos(2 * math.pi * i / (size - 1)) for i in range(size)]

    def mel(f: float) -> float:
        return 1127.0 * math.log(1.0 + f / 700.0)

    lo, hi = mel(low_freq), mel(sample_rate / 2)
    step = (hi - lo) / (num_mel_bins + 1)
    filters = np.zeros((num_mel_bins, n_fft // 2 + 1))
    for m in range(num_mel_bins):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        for k in range(n_fft // 2):  # the Nyquist bin gets no weight in kaldi
            f = mel(k * sample_rate / n_fft)
            if left < f <= centre:
                filters[m, k] = (f - left) / (centre - left)
            elif centre < f < right:
                filters[m, k] = (right - f) / (right - centre)
    out = []
    for t in range(1 + (len(x) - size) // shift):
        frame = x[t * shift : t * shift + size].copy()
        frame -= frame.mean()
        emphasised = [frame[i] - preemphasis * frame[max(i - 1, 0)] for i in range(size)]
        windowed = np.array(emphasised) * np.array(window)
        power = np.abs(np.fft.rfft(windowed, n=n_fft)) ** 2
        out.append([math.log(max(float(filters[m] @ power), _FLOAT_EPS)) for m in range(num_mel_bins)])
    return np.array(out).reshape(-1, num_mel_bins)
