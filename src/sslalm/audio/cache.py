"""A bounded in-memory cache of decoded clips, for training datasets that draw the same clip many times.

Training draws every clip again and again: OpenAQA-style data asks several questions about each clip, and a
stage of a few thousand steps revisits each one. Decoding a 16-bit WAV (and resampling anything else) on
every draw repeats the same work; on the demo's corpus it was about half of the data path's time per example
(the other half is the fbank, which depends on the random crop and level, so it is not cached). The cache
keeps decoded waveforms up to a memory limit, evicting the least recently used, and hands out copies, so a
caller may change what it gets. What it returns is exactly what ``load_audio`` returns.

Each process (and each DataLoader worker) holds its own cache; a file changed on disk during training is
not noticed.
"""

from __future__ import annotations

import os
from collections import OrderedDict

from torch import Tensor

from sslalm.audio.decode import load_audio


class WaveformCache:
    """``load_audio`` with the last ``max_bytes`` of decoded waveforms kept in memory (least recently used
    out first). ``max_bytes=0`` caches nothing. Decoding errors are not cached: they raise on every call."""

    def __init__(self, max_bytes: int = 1 << 30):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._clips: OrderedDict[str, Tensor] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clips)

    def load(self, path: str | os.PathLike) -> Tensor:
        """The decoded clip at ``path`` (mono float32 at 16 kHz, (N,)), a copy the caller owns."""
        key = os.fspath(path)
        wav = self._clips.get(key)
        if wav is not None:
            self.hits += 1
            self._clips.move_to_end(key)
            return wav.clone()
        self.misses += 1
        wav = load_audio(key)
        size = wav.numel() * wav.element_size()
        if size <= self.max_bytes:
            while self.bytes + size > self.max_bytes:
                _, old = self._clips.popitem(last=False)
                self.bytes -= old.numel() * old.element_size()
            self._clips[key] = wav
            self.bytes += size
            return wav.clone()
        return wav
