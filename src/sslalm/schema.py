"""Checking configuration values: types, ranges, unknown and missing keys, with messages that name the field.

Each config class (``SSLALMConfig``, ``DASSConfig``, ``MambaConfig``, the training ``StageConfig``) keeps a
table of ``Spec`` entries next to its fields and calls ``check_fields`` from ``__post_init__``, so the Python
constructors, ``from_dict`` and every command validate alike. A bad value raises ``ConfigError`` (a
``UserError``): ``lora_r must be an integer >= 1, got 'eight' (text)``; nested mappings report their path
(``lm_config: unknown field 'n_layerr' (did you mean 'n_layer'?)``). Values are not coerced, except that an
integer is accepted where a float is expected and an integral float (``8.0``) where an integer is.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sslalm.errors import UserError


class ConfigError(UserError):
    """A config value of the wrong type or range, or an unknown or missing key; ``field``: its dotted path."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def within(self, prefix: str) -> ConfigError:
        """The same error with ``prefix`` (a file, or an enclosing field) in front of the message."""
        field = f"{prefix}.{self.field}" if self.field else prefix
        return ConfigError(f"{prefix}: {self}", field)


_KIND_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "text",
    "int_list": "a list of integers",
    "str_list": "a list of strings",
    "mapping": "a mapping",
    "int_or_auto": "an integer or 'auto'",
}


@dataclass(frozen=True)
class Spec:
    """One field: ``kind`` (a key of ``_KIND_NAMES``), an inclusive ``low``/``high`` range (``low_open``
    makes the lower bound exclusive; for lists it applies to each item), allowed ``choices``, ``optional``
    (None allowed) and ``nonempty`` (lists)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[Any, ...] | None = None
    optional: bool = False
    nonempty: bool = False

    def describe(self) -> str:
        text = _KIND_NAMES[self.kind]
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        bounds = []
        if self.low is not None:
            bounds.append(f"{'>' if self.low_open else '>='} {_num(self.low)}")
        if self.high is not None:
            bounds.append(f"<= {_num(self.high)}")
        if bounds:
            text += (" with items " if self.kind.endswith("_list") else " ") + " and ".join(bounds)
        if self.nonempty:
            text = "a non-empty " + text.removeprefix("a ")
        return text + (" (or null)" if self.optional else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _type_name(value: Any) -> str:
    names = {
        str: "text",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a mapping",
    }
    return names.get(type(value), type(value).__name__)


def _number(value: Any, integer: bool) -> int | float | None:
    """``value`` as an int (``integer``; an integral float converts) or a finite number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if integer and isinstance(value, float):
        return int(value) if value.is_integer() else None
    return value  # an int stays an int where a number is expected (it is written back as it came)


def _in_range(number: float, spec: Spec) -> bool:
    if spec.low is not None and (number < spec.low or (spec.low_open and number == spec.low)):
        return False
    return spec.high is None or number <= spec.high


def check_value(name: str, value: Any, spec: Spec) -> Any:
    """``value`` checked against ``spec`` (integral floats become ints); ``ConfigError`` naming ``name``."""

    def fail() -> ConfigError:
        return ConfigError(f"{name} must be {spec.describe()}, got {value!r} ({_type_name(value)})", name)

    if value is None:
        if spec.optional:
            return None
        raise fail()
    kind = spec.kind
    if spec.choices is not None and kind == "str":
        if value not in spec.choices:
            raise fail()
        return value
    if kind in ("int", "float"):
        number = _number(value, kind == "int")
        if number is None or not _in_range(number, spec):
            raise fail()
        return number
    if kind == "int_or_auto":
        if value == "auto":
            return value
        number = _number(value, True)
        if number is None or not _in_range(number, spec):
            raise fail()
        return number
    if kind == "bool":
        if not isinstance(value, bool):
            raise fail()
        return value
    if kind == "str":
        if not isinstance(value, str) or (spec.nonempty and not value.strip()):
            raise fail()
        return value
    if kind == "mapping":
        if not isinstance(value, Mapping):
            raise fail()
        return value
    if kind in ("int_list", "str_list"):
        if not isinstance(value, (list, tuple)) or (spec.nonempty and not value):
            raise fail()
        out = []
        for item in value:
            if kind == "str_list":
                if not isinstance(item, str) or not item:
                    raise fail()
                out.append(item)
            else:
                number = _number(item, True)
                if number is None or not _in_range(number, spec):
                    raise fail()
                out.append(number)
        return out
    raise ValueError(f"unknown spec kind {kind!r}")  # a bug in a table, not a user error


def check_keys(
    where: str, data: Any, known: Iterable[str], required: Iterable[str] = (), what: str = "field"
) -> None:
    """``data`` must be a mapping whose keys are all ``known`` and include every ``required`` one.

    ``where`` names the mapping in messages (``lm_config``); empty for a top-level config.
    """
    label = where or "the config"
    if not isinstance(data, Mapping):
        raise ConfigError(f"{label} must be a mapping, got {data!r} ({_type_name(data)})", where or None)
    known = list(known)
    prefix = f"{where}: " if where else ""
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "known: " + ", ".join(sorted(known))
            raise ConfigError(f"{prefix}unknown {what} {key!r} ({hint})", f"{where}.{key}" if where else key)
    missing = [k for k in required if k not in data]
    if missing:
        raise ConfigError(f"{prefix}missing required {what}(s): {', '.join(missing)}", where or None)


def check_fields(values: Mapping[str, Any], specs: Mapping[str, Spec], where: str = "") -> dict[str, Any]:
    """Check every entry of ``values`` that has a spec; returns the checked (normalised) values."""
    out = {}
    for name, value in values.items():
        if name in specs:
            label = f"{where}.{name}" if where else name
            out[name] = check_value(label, value, specs[name])
    return out


def check_hf_config(where: str, data: Mapping[str, Any], model_type: str, required: Iterable[str]) -> None:
    """Check a transformers config dict against its config class: known keys, and each value of the type
    of that key's default (an integer where the default is one, ...). ``vocab_size`` may be ``"auto"``."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        field = f"{where}.model_type" if where else "model_type"
        raise ConfigError(f"{field}: unknown transformers model type {model_type!r}", field)
    defaults = CONFIG_MAPPING[model_type]().to_dict()
    check_keys(where, data, list(defaults), list(required))
    for key, value in data.items():
        default = defaults.get(key)
        if key == "vocab_size" and value == "auto":
            continue
        sized = key.endswith(("_size", "_layers", "_heads", "_length", "_stride", "_embeddings", "_bins"))
        if isinstance(default, bool):
            spec = Spec("bool")
        elif isinstance(default, int):
            spec = Spec("int", 1 if sized else None)
        elif isinstance(default, float):
            spec = Spec("float", 0 if key.endswith(("eps", "dropout", "_prob")) else None)
        else:
            continue
        check_fields({key: value}, {key: spec}, where)
