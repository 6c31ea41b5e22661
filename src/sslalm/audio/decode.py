"""Decoding: any common audio file (or an in-memory array) -> a mono float32 waveform at 16 kHz.

``load_audio`` decodes with soundfile (libsndfile 1.2: WAV, FLAC, OGG Vorbis/Opus, MP3 and more), mixes the
channels down by their mean and resamples with soxr's band-limited "VHQ" filter. Bad input raises
``AudioError`` (a ``ValueError``) with a message that names the source and says what is wrong.

libsndfile decodes some damaged files without an error, losing audio silently; the walkers in
:mod:`sslalm.audio.integrity` find them and we raise: a WAV or AIFF whose sample chunk is cut short, an Ogg
stream without its end-of-stream page, an MP3 with fewer frames than its Xing header declares. For a VBR MP3
without a Xing/Info header libsndfile stops at mpg123's size-based estimate (often a third of the file); when
our frame count says it stopped early we decode with the ``ffmpeg`` program if it is installed, else raise.
"""

from __future__ import annotations

import io
import logging
import math
import os
import shutil
import subprocess
from typing import Any, BinaryIO, Union

import numpy as np
import torch

from sslalm.audio import SAMPLE_RATE
from sslalm.audio.integrity import ogg_stream_complete, scan_mpeg, wav_data_shortfall
from sslalm.errors import UserError

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
AudioSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, tuple]

_RESAMPLE_QUALITY = "VHQ"
_SF_COUNT_MAX = 2**63 - 1


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


def load_audio(
    source: AudioSource,
    sample_rate: int = SAMPLE_RATE,
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
        shortfall = wav_data_shortfall(fh)
        if shortfall is not None:
            raise AudioError(
                f"{name} is truncated: its header declares {shortfall[0]} bytes of audio data but only "
                f"{shortfall[1]} are present"
            )
    elif fmt == "OGG" and not ogg_stream_complete(fh):
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


def _check_mp3(samples: np.ndarray, data: bytes, rate: int, channels: int, name: str) -> np.ndarray:
    """Catch truncated MP3s and libsndfile stopping early on VBR files without a Xing header."""
    frames, per_frame, xing = scan_mpeg(data)
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
