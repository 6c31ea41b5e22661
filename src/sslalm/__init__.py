"""sslalm: state-space large audio language models.

A DASS (Mamba-based) audio encoder feeds a Mamba language model through a small projector; LoRA adapters
make the language model trainable at a fraction of its size. ``docs/architecture.md`` has the data flow.

The public names below are imported lazily so that ``import sslalm`` stays fast (no transformers import).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_audio": "sslalm.audio",
    "AudioError": "sslalm.audio",
    "FbankExtractor": "sslalm.audio",
    "selective_scan": "sslalm.ops",
    "DASSConfig": "sslalm.models.dass",
    "DASSModel": "sslalm.models.dass",
    "MambaConfig": "sslalm.models.mamba",
    "MambaLM": "sslalm.models.mamba",
    "SSLALMConfig": "sslalm.models.lalm",
    "SSLALM": "sslalm.models.lalm",
    "SSLALMProcessor": "sslalm.models.processor",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sslalm' has no attribute {name!r}")
