"""Audio encoders of an SSLALM, chosen by name (``SSLALMConfig.encoder_type``).

* ``"dass"``: our DASS (:mod:`sslalm.models.encoders.dass`), the paper's state-space encoder;
* ``"ast"``: transformers' AST (:mod:`sslalm.models.encoders.ast`), the LTU-style baseline's.

Every encoder implements :class:`~sslalm.models.encoders.base.AudioEncoder`. To add one, write a subclass
in its own module and register it: ``register_encoder(MyEncoder)`` (or add it to ``ENCODERS`` here);
``SSLALMConfig(encoder_type=MyEncoder.name, encoder_config={...})`` then builds, trains, saves and loads
with it. Nothing else in the package looks at ``encoder_type``.
"""

from __future__ import annotations

from typing import Any

from sslalm.models.encoders.ast import ASTEncoder
from sslalm.models.encoders.base import AudioEncoder
from sslalm.models.encoders.dass import DASSEncoder

ENCODERS: dict[str, type[AudioEncoder]] = {"dass": DASSEncoder, "ast": ASTEncoder}

__all__ = ["ENCODERS", "ASTEncoder", "AudioEncoder", "DASSEncoder", "encoder_class", "register_encoder"]


def register_encoder(cls: type[AudioEncoder], name: str | None = None) -> type[AudioEncoder]:
    """Make ``cls`` available as ``encoder_type=name`` (default ``cls.name``); usable as a decorator."""
    name = name or cls.name
    if not name:
        raise ValueError(f"{cls.__name__} has no name to register under")
    ENCODERS[name] = cls
    return cls


def encoder_class(encoder_type: str) -> type[AudioEncoder]:
    """The encoder class registered as ``encoder_type``."""
    if encoder_type not in ENCODERS:
        raise ValueError(f"unknown encoder_type {encoder_type!r} (use one of {sorted(ENCODERS)})")
    return ENCODERS[encoder_type]


def build_encoder(encoder_type: str, encoder_config: dict[str, Any]) -> AudioEncoder:
    """A randomly initialised encoder of the registered type."""
    return encoder_class(encoder_type).from_config(encoder_config)
