"""SSLALM configuration and presets: the paper's systems (ssLALM, Hybrid-LALM, LTU-style) at full size,
and the same topologies at CPU-test size. ``sslalm.models.lalm`` builds models from these.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from sslalm.schema import ConfigError, Spec, check_fields, check_keys

# trainable parts: the paper trains the first three (the LM stays frozen under LoRA); "lm" fine-tunes the
# base LM's own weights too, for small LMs trained from scratch (the demo's stand-in), never at paper scale
PARTS = ("projector", "encoder", "lora", "lm")
ADAPTER_PARTS = ("projector", "encoder", "lora")

# LLaMA-7B / Vicuna-7B shape (Hybrid-LALM and LTU language model)
LLAMA_7B = dict(
    model_type="llama",
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    vocab_size=32000,
    max_position_embeddings=2048,
    rms_norm_eps=1e-6,
    tie_word_embeddings=False,
)
TINY_LLAMA = dict(
    model_type="llama",
    hidden_size=64,
    intermediate_size=172,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=4,
    vocab_size="auto",
    max_position_embeddings=4096,
    tie_word_embeddings=True,
)
TINY_AST = dict(
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_length=1024,
    frequency_stride=10,
    time_stride=10,
)


@dataclass
class SSLALMConfig:
    """Everything needed to rebuild an SSLALM. JSON-serialisable (``to_dict`` / ``from_dict``).

    Paths (``encoder_checkpoint``, ``lm_checkpoint``, ``tokenizer``) may be relative to the model folder.
    ``lm_config["vocab_size"] == "auto"`` takes the tokenizer's size (rounded up to a multiple of 8).
    """

    encoder_type: str = "dass"  # "dass" | "ast"
    encoder_config: dict[str, Any] = field(default_factory=dict)
    encoder_checkpoint: str | None = None
    projector_type: str = "conv"  # "conv" (paper) | "pool" (LTU)
    projector_kernel: int = 3
    projector_stride: int = 2
    projector_padding: int = 1
    projector_time_pool: int = 3
    lm_type: str = "mamba"  # "mamba" | "hf"
    lm_config: dict[str, Any] = field(default_factory=dict)
    lm_checkpoint: str | None = None
    tokenizer: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(default_factory=lambda: ["in_proj"])
    train_lm: bool = False  # the base LM was fine-tuned (part "lm"): its weights are in the model's file
    train_frames: int = 1024  # 10.24 s crops for training
    min_inference_frames: int = 1024  # shorter clips are padded as in training; longer ones kept whole
    cutoff_len: int = 108
    name: str = "custom"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, require: bool = False) -> SSLALMConfig:
        """Check every field and the nested encoder/LM configs (types, ranges, unknown keys); returns self.

        ``require``: the fields that decide the model's size must be given (``from_dict``: a ``config.json``
        of ``{}`` must not silently become a default 2.8B model). Raises ``ConfigError`` naming the field.
        """
        checked = check_fields(self.__dict__, SPECS)
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        self.encoder_config = dict(self.encoder_config)
        self.lm_config = dict(self.lm_config)
        _check_encoder_config(self.encoder_type, self.encoder_config, require)
        if self.lm_checkpoint is None or self.lm_config:
            _check_lm_config(self.lm_type, self.lm_config, require and self.lm_checkpoint is None)
        return self

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))

    def to_json_string(self) -> str:
        """JSON text of the config (the name transformers' loggers call)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSLALMConfig:
        """A config from its ``to_dict`` form (a model folder's ``config.json``), fully validated.

        The fields that decide the model (``encoder_type``, ``encoder_config``, ``lm_type``, and
        ``lm_config`` unless ``lm_checkpoint`` names the LM) are required, and so are the size fields inside
        them; a missing one is named rather than filled with a default.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        required = ["encoder_type", "encoder_config", "lm_type"]
        if not (isinstance(data, dict) and data.get("lm_checkpoint")):
            required.append("lm_config")
        check_keys("", data, names, required)
        config = cls.__new__(cls)  # fields set one by one, then validated once with ``require``
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = copy.deepcopy(data[f.name])
            else:
                value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            object.__setattr__(config, f.name, value)
        return config.validate(require=True)

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SSLALMConfig:
        """A named configuration; see ``PRESETS``. Keyword arguments override fields."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}", "model")
        config = PRESETS[name]()
        config.name = name
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise ConfigError(f"SSLALMConfig has no field {key!r}", key)
            setattr(config, key, value)
        return config.validate()


SPECS: dict[str, Spec] = {
    "encoder_type": Spec("str", choices=("dass", "ast")),
    "encoder_config": Spec("mapping"),
    "encoder_checkpoint": Spec("str", optional=True, nonempty=True),
    "projector_type": Spec("str", choices=("conv", "pool")),
    "projector_kernel": Spec("int", 1, 64),
    "projector_stride": Spec("int", 1, 64),
    "projector_padding": Spec("int", 0, 64),
    "projector_time_pool": Spec("int", 1, 1024),
    "lm_type": Spec("str", choices=("mamba", "hf")),
    "lm_config": Spec("mapping"),
    "lm_checkpoint": Spec("str", optional=True, nonempty=True),
    "tokenizer": Spec("str", optional=True, nonempty=True),
    "lora_r": Spec("int", 1, 4096),
    "lora_alpha": Spec("float", 0, low_open=True),
    "lora_dropout": Spec("float", 0, 0.99),
    "lora_target_modules": Spec("str_list", nonempty=True),
    "train_lm": Spec("bool"),
    "train_frames": Spec("int", 32, 1_000_000),
    "min_inference_frames": Spec("int", 32, 1_000_000),
    "cutoff_len": Spec("int", 1, 1_000_000),
    "name": Spec("str"),
}

# the fields inside encoder_config / lm_config that decide the model's size: required in a config.json
_REQUIRED_NESTED = {
    ("encoder", "dass"): ["depths", "dims"],
    ("encoder", "ast"): [],
    ("lm", "mamba"): ["d_model", "n_layer", "vocab_size"],
    ("lm", "hf"): ["model_type", "hidden_size", "num_hidden_layers", "vocab_size"],
}


def _check_encoder_config(encoder_type: str, data: dict[str, Any], require: bool) -> None:
    required = _REQUIRED_NESTED[("encoder", encoder_type)] if require else []
    if encoder_type == "dass":
        from sslalm.models.dass import DASSConfig

        names = [f.name for f in dataclasses.fields(DASSConfig)] + ["model_type"]
        check_keys("encoder_config", data, names, required)
        try:
            DASSConfig.from_dict(data)
        except ConfigError as err:
            raise err.within("encoder_config") from None
    else:
        check_hf_config("encoder_config", data, "audio-spectrogram-transformer", required)


def _check_lm_config(lm_type: str, data: dict[str, Any], require: bool) -> None:
    required = _REQUIRED_NESTED[("lm", lm_type)] if require else []
    if lm_type == "mamba":
        from sslalm.models.mamba_config import MambaConfig

        try:
            MambaConfig.check_dict(data, required=required)
        except ConfigError as err:
            raise err.within("lm_config") from None
    else:
        check_keys("lm_config", data, list(data), required)
        check_hf_config("lm_config", data, data.get("model_type", "llama"), [])


def check_hf_config(where: str, data: dict[str, Any], model_type: str, required: list[str]) -> None:
    """Check a transformers config dict against its config class: known keys, and each value of the type
    of that key's default (an integer where the default is one, ...). ``vocab_size`` may be ``"auto"``."""
    from transformers import CONFIG_MAPPING

    if model_type not in CONFIG_MAPPING:
        raise ConfigError(f"{where}.model_type: unknown transformers model type {model_type!r}", where)
    defaults = CONFIG_MAPPING[model_type]().to_dict()
    check_keys(where, data, list(defaults), required)
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


def _dass(kind: str) -> dict[str, Any]:
    from sslalm.models.dass import DASSConfig

    return getattr(DASSConfig, kind)().to_dict()


def _mamba(kind: str) -> dict[str, Any]:
    from sslalm.models.mamba import MambaConfig

    if kind == "tiny":
        return {**MambaConfig(d_model=64, n_layer=2, vocab_size=8).to_dict(), "vocab_size": "auto"}
    return MambaConfig.mamba_2_8b().to_dict()


def _ssl(encoder: str, lm: str) -> SSLALMConfig:
    return SSLALMConfig(encoder_config=_dass(encoder), lm_config=_mamba(lm))


def _hybrid(encoder: str, llama: dict) -> SSLALMConfig:
    return SSLALMConfig(
        encoder_config=_dass(encoder),
        lm_type="hf",
        lm_config=dict(llama),
        lora_target_modules=["q_proj", "k_proj"],
    )


def _ltu(ast: dict, llama: dict) -> SSLALMConfig:
    return SSLALMConfig(
        encoder_type="ast",
        encoder_config=dict(ast),
        projector_type="pool",
        lm_type="hf",
        lm_config=dict(llama),
        lora_target_modules=["q_proj", "v_proj"],
    )


PRESETS = {
    "sslalm-small": lambda: _ssl("small", "2.8b"),
    "sslalm-medium": lambda: _ssl("medium", "2.8b"),
    "hybrid-small": lambda: _hybrid("small", LLAMA_7B),
    "hybrid-medium": lambda: _hybrid("medium", LLAMA_7B),
    "ltu": lambda: _ltu({}, LLAMA_7B),
    "tiny-sslalm": lambda: _ssl("tiny", "tiny"),
    "tiny-hybrid": lambda: _hybrid("tiny", TINY_LLAMA),
    "tiny-ltu": lambda: _ltu(TINY_AST, TINY_LLAMA),
}
