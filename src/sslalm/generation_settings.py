"""The generation settings a user may give, in one table: types, defaults, ranges and help.

Every entry point (``SSLALM.ask``/``generate``, ``sslalm ask``, ``sslalm eval``, the HTTP API, the OpenAI
route, the Gradio page) reads its defaults and validates through this module, so they accept the same
values and start from the same defaults. The HTTP schema and the page's controls are derived from
``GENERATION_FIELDS``.

Ranges are chosen so that no accepted value can produce NaN or a crash: a temperature below
``GREEDY_BELOW`` means greedy decoding (dividing logits by a vanishing temperature overflows), and the
repetition penalty is kept within [0.01, 100] (a penalty near 0 turns a logit into inf).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sslalm.errors import UserError

GREEDY_BELOW = 1e-3  # temperatures under this decode greedily
MAX_QUESTION_CHARS = 2000
MAX_NEW_TOKENS = 100_000  # the answer buffer is allocated up front: an absurd length must not reach it
MAX_AUDIO_SECONDS = 600.0  # the default duration limit of sslalm ask, eval, serve and app


@dataclass(frozen=True)
class Field:
    """One setting: its type, default, inclusive range (None = unbounded) and help text."""

    kind: type
    default: Any
    low: float | None = None
    high: float | None = None
    low_inclusive: bool = True
    help: str = ""


GENERATION_FIELDS: dict[str, Field] = {
    "max_new_tokens": Field(int, 400, 1, MAX_NEW_TOKENS, help="most new tokens to generate"),
    "temperature": Field(
        float, 0.1, 0.0, 100.0, help=f"sampling temperature; 0 (or below {GREEDY_BELOW}) = greedy"
    ),
    "top_k": Field(int, 500, 0, None, help="sample from the k most likely tokens; 0 = off"),
    "top_p": Field(float, 0.95, 0.0, 1.0, low_inclusive=False, help="nucleus sampling mass, in (0, 1]"),
    "repetition_penalty": Field(float, 1.1, 0.01, 100.0, help="CTRL repetition penalty; 1 = off"),
    "do_sample": Field(bool, True, help="false = greedy decoding"),
    "seed": Field(int, None, 0, 2**63 - 1, help="seed for reproducible sampling; empty = random"),
}

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class GenerationSettingsError(UserError):
    """An invalid generation setting; ``field`` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def generation_defaults() -> dict[str, Any]:
    """The default of every field (the paper's sampling: temperature 0.1, top-k 500, top-p 0.95, 1.1)."""
    return {name: spec.default for name, spec in GENERATION_FIELDS.items()}


def _describe_range(spec: Field) -> str:
    if spec.low is None and spec.high is None:
        return ""
    low = f"{'>=' if spec.low_inclusive else '>'} {spec.low}" if spec.low is not None else ""
    high = f"<= {spec.high}" if spec.high is not None else ""
    return " and ".join(p for p in (low, high) if p)


def parse_field(name: str, value: Any, high: float | None = None) -> Any:
    """``value`` for field ``name`` as its type, range-checked; ``high`` tightens the upper bound.

    Accepts numbers, numeric strings (form fields) and, for booleans, true/false/1/0/yes/no/on/off.
    Raises ``GenerationSettingsError`` naming the field, the expected type or range, and the value.
    """
    if name not in GENERATION_FIELDS:
        raise GenerationSettingsError(
            name, f"unknown generation setting {name!r}; known: {', '.join(GENERATION_FIELDS)}"
        )
    spec = GENERATION_FIELDS[name]
    if value is None and spec.default is None:
        return None
    kind_name = "a boolean" if spec.kind is bool else ("an integer" if spec.kind is int else "a number")
    try:
        if spec.kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError
            return text in _TRUE
        if isinstance(value, bool):
            raise ValueError
        if spec.kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float):
                if not number.is_integer():
                    raise ValueError
                number = int(number)
            if not isinstance(number, int):
                raise ValueError
        else:
            if not isinstance(value, (int, float, str)):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise GenerationSettingsError(name, f"{name} must be {kind_name}, got {value!r}") from None
    upper = spec.high if high is None else (high if spec.high is None else min(high, spec.high))
    bounded = Field(spec.kind, spec.default, spec.low, upper, spec.low_inclusive)
    too_low = spec.low is not None and (number < spec.low or (number == spec.low and not spec.low_inclusive))
    if too_low or (upper is not None and number > upper):
        raise GenerationSettingsError(name, f"{name} must be {_describe_range(bounded)}, got {number}")
    return number


def validate_generation(
    settings: Mapping[str, Any], max_new_tokens_limit: int | None = None
) -> dict[str, Any]:
    """Check and normalise user generation settings; returns only the fields given (None values dropped,
    except ``seed=None``, which means random).

    A temperature under ``GREEDY_BELOW`` becomes greedy decoding (``temperature=0``, ``do_sample=False``).
    Unknown names raise ``GenerationSettingsError`` listing the known ones.
    """
    out: dict[str, Any] = {}
    for name, value in settings.items():
        if value is None and name != "seed":
            if name not in GENERATION_FIELDS:
                parse_field(name, value)  # raises: unknown name
            continue
        high = max_new_tokens_limit if name == "max_new_tokens" else None
        out[name] = parse_field(name, value, high=high)
    if "temperature" in out and out["temperature"] < GREEDY_BELOW:
        out["temperature"] = 0.0
        out["do_sample"] = False
    return out


def validate_question(question: Any, max_chars: int = MAX_QUESTION_CHARS) -> str:
    """The question, stripped; an empty, non-text or over-long question raises a ``UserError``."""
    if not isinstance(question, str):
        raise GenerationSettingsError("question", f"the question must be text, got {type(question).__name__}")
    text = question.strip()
    if not text:
        raise GenerationSettingsError("question", "the question is empty: ask something about the audio")
    if len(text) > max_chars:
        raise GenerationSettingsError(
            "question", f"the question has {len(text)} characters; the limit is {max_chars}"
        )
    return text
