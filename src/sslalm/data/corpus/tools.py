"""Audio helpers and thin wrappers around the command-line tools that make the corpus's sounds.

Everything here works on mono float32 numpy arrays at ``SAMPLE_RATE`` (16 kHz), the rate the model reads.
The tools (espeak-ng, sox, fluidsynth) write wav files into a temporary folder; ``read_audio`` decodes them
(or a packaged mp3/oga) with soundfile, mixes down to mono and resamples with soxr. Every function is
deterministic: the same input gives the same bytes, which the corpus's determinism test relies on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from sslalm.audio import SAMPLE_RATE


class ToolError(RuntimeError):
    """A command-line tool failed; the message carries its stderr."""


def which(tool: str) -> str | None:
    """Path of ``tool`` on the current PATH (read at call time, so tests can hide a tool)."""
    return shutil.which(tool, path=os.environ.get("PATH"))


def run_tool(args: list[str], timeout: float = 60.0) -> None:
    """Run a tool, raising ``ToolError`` with its stderr when it fails."""
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ToolError(f"{args[0]} failed to run: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise ToolError(f"{' '.join(args[:3])} ... exited with {proc.returncode}: {err}")


def read_audio(path: str | Path) -> np.ndarray:
    """Decode any soundfile-readable file (wav, flac, ogg/oga, mp3) to mono float32 at 16 kHz. (N,)"""
    import soundfile as sf
    import soxr

    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # (N, C)
    mono = data.mean(axis=1)
    if sr != SAMPLE_RATE:
        mono = soxr.resample(mono, sr, SAMPLE_RATE, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def write_wav(path: str | Path, audio: np.ndarray) -> None:
    """Write mono 16 kHz 16-bit PCM wav (the corpus format). Values are clipped to [-1, 1]."""
    import soundfile as sf

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.clip(audio, -1.0, 1.0), SAMPLE_RATE, subtype="PCM_16")


def write_float_wav(path: str | Path, audio: np.ndarray) -> None:
    """Write a 32-bit float wav for handing audio to sox without dithering or clipping."""
    import soundfile as sf

    sf.write(str(path), audio.astype(np.float32), SAMPLE_RATE, subtype="FLOAT")


def peak_normalise(audio: np.ndarray, peak: float = 0.9) -> np.ndarray:
    """Scale so that max |x| == peak. Silence stays silence. The peak can encode loudness (soft/loud)."""
    m = float(np.max(np.abs(audio))) if audio.size else 0.0
    if m < 1e-9:
        return audio.astype(np.float32)
    return (audio * (peak / m)).astype(np.float32)


def trim_silence(audio: np.ndarray, threshold_db: float = -50.0, keep_s: float = 0.05) -> np.ndarray:
    """Cut leading and trailing samples quieter than ``threshold_db`` below the peak, keeping a margin."""
    if audio.size == 0:
        return audio
    peak = float(np.max(np.abs(audio)))
    if peak < 1e-9:
        return audio
    loud = np.flatnonzero(np.abs(audio) > peak * 10 ** (threshold_db / 20))
    keep = int(keep_s * SAMPLE_RATE)
    start = max(0, int(loud[0]) - keep)
    end = min(audio.size, int(loud[-1]) + keep + 1)
    return audio[start:end]


def fade(audio: np.ndarray, seconds: float = 0.01) -> np.ndarray:
    """Linear fade in and out, so that cropped or concatenated pieces do not click."""
    n = min(int(seconds * SAMPLE_RATE), audio.size // 2)
    if n <= 0:
        return audio
    out = audio.copy()
    ramp = np.linspace(0.0, 1.0, n, dtype=np.float32)
    out[:n] *= ramp
    out[-n:] *= ramp[::-1]
    return out


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Add ``noise`` (tiled or cut to the signal's length) so that 10*log10(P_signal / P_noise) == snr_db."""
    if noise.size < signal.size:
        noise = np.tile(noise, int(np.ceil(signal.size / max(noise.size, 1))))
    noise = noise[: signal.size]
    ps, pn = rms(signal) ** 2, rms(noise) ** 2
    if pn < 1e-20:
        return signal.copy()
    gain = np.sqrt(ps / (pn * 10 ** (snr_db / 10)))
    return (signal + gain * noise).astype(np.float32)


def coloured_noise(colour: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """White, pink (power ~ 1/f) or brown (power ~ 1/f^2) Gaussian noise, shaped in the frequency domain.

    Made with numpy rather than ``sox synth``: sox's noise generator cannot be seeded (only fixed with
    ``-R``), and each clip needs its own seed so that the splits share none.
    """
    n = max(int(round(seconds * SAMPLE_RATE)), 2)
    white = rng.standard_normal(n)
    if colour == "white":
        out = white
    else:
        spec = np.fft.rfft(white)
        f = np.fft.rfftfreq(n, d=1.0 / SAMPLE_RATE)
        f[0] = f[1]
        exponent = {"pink": 0.5, "brown": 1.0}[colour]  # amplitude ~ f^-exponent
        spec = spec / f**exponent
        spec[0] = 0.0
        out = np.fft.irfft(spec, n=n)
    return peak_normalise(out.astype(np.float32), 0.9)


def sox_synth(seconds: float, spec: list[str], path: Path) -> np.ndarray:
    """Render ``sox -n ... synth <seconds> <spec...>`` (repeatable mode, float output) and read it back."""
    run_tool(
        ["sox", "-R", "-n", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "32", "-e", "floating-point", str(path)]
        + ["synth", f"{seconds:.4f}"]
        + spec
    )
    return read_audio(path)


def sox_effects(audio: np.ndarray, effects: list[str], workdir: Path) -> np.ndarray:
    """Apply a sox effects chain (e.g. ``["pitch", "200", "reverb", "50"]``) to mono 16 kHz audio."""
    if not effects:
        return audio
    src, dst = workdir / "fx_in.wav", workdir / "fx_out.wav"
    write_float_wav(src, audio)
    run_tool(
        ["sox", "-R", str(src), "-b", "32", "-e", "floating-point", str(dst)]
        + effects
        + ["rate", str(SAMPLE_RATE)]
    )
    return read_audio(dst)


def tool_version(args: list[str]) -> str:
    """First line of a tool's version output, or '' when it is missing (recorded in the build config)."""
    try:
        proc = subprocess.run(args, capture_output=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (proc.stdout or proc.stderr).decode("utf-8", "replace").strip()
    return text.splitlines()[0] if text else ""
