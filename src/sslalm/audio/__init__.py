"""Audio front end: decoding (:mod:`~sslalm.audio.decode`, with the damaged-file checks of
:mod:`~sslalm.audio.integrity`; :mod:`~sslalm.audio.cache` keeps decoded training clips in memory) and the
DASS/AST fbank features (:mod:`~sslalm.audio.features`).

``SAMPLE_RATE`` (16 kHz, the rate the encoders were trained at) is defined here, once, for the whole package.
The other names are imported lazily so that ``from sslalm.audio import SAMPLE_RATE`` costs no torch import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: The one sample rate the model reads (DASS and AST were trained on 16 kHz AudioSet audio).
SAMPLE_RATE = 16000

_EXPORTS = {
    "AudioError": "sslalm.audio.decode",
    "AudioSource": "sslalm.audio.decode",
    "load_audio": "sslalm.audio.decode",
    "resample": "sslalm.audio.decode",
    "WaveformCache": "sslalm.audio.cache",
    "AUDIOSET_MEAN": "sslalm.audio.features",
    "AUDIOSET_STD": "sslalm.audio.features",
    "FbankExtractor": "sslalm.audio.features",
    "kaldi_mel_banks": "sslalm.audio.features",
}

__all__ = [
    "AUDIOSET_MEAN",
    "AUDIOSET_STD",
    "AudioError",
    "AudioSource",
    "FbankExtractor",
    "SAMPLE_RATE",
    "WaveformCache",
    "kaldi_mel_banks",
    "load_audio",
    "resample",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from sslalm.audio.cache import WaveformCache
    from sslalm.audio.decode import AudioError, AudioSource, load_audio, resample
    from sslalm.audio.features import AUDIOSET_MEAN, AUDIOSET_STD, FbankExtractor, kaldi_mel_banks


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sslalm.audio' has no attribute {name!r}")
