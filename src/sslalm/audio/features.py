"""The DASS/AST log-mel filterbank: a mono 16 kHz waveform -> (frames, 128) normalised features.

``FbankExtractor`` is our own pure-torch implementation of the kaldi formulas behind
``torchaudio.compliance.kaldi.fbank`` with the options AST and DASS use (``docs/dass.md``, "Input features").
We write it rather than call torchaudio because torchaudio's PyPI wheels do not import beside our CPU torch,
and the known alternatives differ (lhotse's defaults; kaldi-native-fbank refuses 128 bins at 16 kHz). It is
vectorised (frames by ``unfold``, ``rfft``, one cached mel matrix) and works through long audio in chunks of
frames, so memory stays bounded. Measured against torchaudio 2.11.0's ``kaldi.fbank`` its output is
bit-identical (10 signals and 600 s of noise). Its slow twin, ``kaldi_fbank_reference`` in the test suite's
``tests/oracles.py``, loops over frames and mel bins in float64; the tests check that they agree and pin
filterbank values measured with torchaudio.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from sslalm.audio import SAMPLE_RATE
from sslalm.audio.decode import AudioError, resample

Tensor = torch.Tensor

#: AudioSet statistics of the un-normalised fbank used by AST and DASS (the std is doubled when applied).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
#: kaldi's log floor, ``std::numeric_limits<float>::epsilon()``.
FLOAT_EPS = float(torch.finfo(torch.float32).eps)


def kaldi_mel_banks(
    num_bins: int, n_fft: int, sample_rate: float, low_freq: float = 20.0, high_freq: float = 0.0
) -> Tensor:
    """Kaldi's triangular mel filters, float32 (num_bins, n_fft // 2 + 1); the Nyquist column is zero.

    Mel scale ``1127 ln(1 + f / 700)``; the filters are equally spaced in mel between ``low_freq`` and
    ``high_freq`` (<= 0 means Nyquist minus its magnitude) and are triangles in mel, not in Hz. The band edges
    are computed in float64 and everything per FFT bin in float32, as kaldi (``BaseFloat``) and torchaudio do
    (float64 weights differ by up to 1.4e-5, which moves the log-mel of a pure tone on a filter's tail by up
    to 4e-4). Each bin's float32 logarithm is a float64 one rounded once, so it does not depend on the CPU's
    float32 ``log`` (one unit in the last place off for 21 of the 256 bins on an AMD EPYC); the weights then
    match torchaudio's values pinned in ``tests/test_audio.py`` to their six decimals.
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
    mel = (1127.0 * (1.0 + freqs / 700.0).double().log().float())[None, :]  # (1, n_fft / 2)
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
        sample_rate: int = SAMPLE_RATE,
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
            out[start : start + chunk.shape[0]] = (power @ mel_t).clamp_min(FLOAT_EPS).log()
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
