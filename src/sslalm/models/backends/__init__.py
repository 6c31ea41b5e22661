"""Language-model backends of an SSLALM, chosen by name (``SSLALMConfig.lm_type``).

* ``"mamba"``: our Mamba LM (:mod:`sslalm.models.backends.mamba`), decoding on its recurrent state;
* ``"hf"``: any transformers causal LM (:mod:`sslalm.models.backends.hf`), decoding with its KV cache.

Every backend implements :class:`~sslalm.models.backends.base.LanguageModelBackend`. To add one, write a
subclass in its own module and register it: ``register_lm_backend(MyBackend)`` (or add it to
``LM_BACKENDS`` here); ``SSLALMConfig(lm_type=MyBackend.name, lm_config={...})`` then builds, trains,
generates, saves and loads with it. Nothing else in the package looks at ``lm_type``.
"""

from __future__ import annotations

from sslalm.models.backends.base import LanguageModelBackend
from sslalm.models.backends.hf import HFBackend
from sslalm.models.backends.mamba import MambaBackend

LM_BACKENDS: dict[str, type[LanguageModelBackend]] = {"mamba": MambaBackend, "hf": HFBackend}

__all__ = [
    "LM_BACKENDS",
    "HFBackend",
    "LanguageModelBackend",
    "MambaBackend",
    "lm_backend",
    "register_lm_backend",
]


def register_lm_backend(
    cls: type[LanguageModelBackend], name: str | None = None
) -> type[LanguageModelBackend]:
    """Make ``cls`` available as ``lm_type=name`` (default ``cls.name``); usable as a decorator."""
    name = name or cls.name
    if not name:
        raise ValueError(f"{cls.__name__} has no name to register under")
    LM_BACKENDS[name] = cls
    return cls


def lm_backend(lm_type: str) -> LanguageModelBackend:
    """The backend registered as ``lm_type``."""
    if lm_type not in LM_BACKENDS:
        raise ValueError(f"unknown lm_type {lm_type!r} (use one of {sorted(LM_BACKENDS)})")
    return LM_BACKENDS[lm_type]()
