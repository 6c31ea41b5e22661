"""SSLALM configuration and presets: the paper's systems (ssLALM, Hybrid-LALM, LTU-style) at full size,
and the same topologies at CPU-test size. ``sslalm.models.lalm`` builds models from these.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from sslalm.schema import ConfigError, Spec, check_fields, check_keys

logger = logging.getLogger(__name__)

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
    ``encoder_type`` and ``lm_type`` name entries of the registries ``sslalm.models.encoders.ENCODERS`` and
    ``sslalm.models.backends.LM_BACKENDS``; ``lora_target_modules=None`` takes the LM backend's default.
    """

    encoder_type: str = "dass"  # "dass" | "ast"
    encoder_config: dict[str, Any] = field(default_factory=dict)
    encoder_checkpoint: str | None = None
    projector_type: str = "conv"  # "conv" (paper) | "pool" (LTU)
    projector_kernel: int = 3
    projector_stride: int = 2
    projector_padding: int = 1
    projector_time_pool: int = 3
    tag_names: list[str] | None = None  # tag tokens (sslalm.models.tagger): the encoder head's tags, or off
    tag_pool: str = "mean+max"  # how the tag head pools the encoder map: "mean" | "mean+max"
    tag_checkpoint: str | None = None  # the tag head's weights (safetensors "weight", "bias"), e.g. stage 0's
    tag_temperature: float = 1.0  # the tag head's softmax temperature (below 1: nearer the likeliest word)
    tag_fact_temperature: float | None = None  # the facts' groups' temperature; None: tag_temperature
    tag_cepstra: int = 0  # the tag head also reads the fbank's statistics of K cepstra (models.cepstral)
    tag_fact_net: int = 0  # width of the facts' own nets on the fbank frames (models.frame_net); 0: none
    tag_scale: str = "word"  # tag token norms: "word" (the words' embeddings) | "audio" (the projector's)
    lm_type: str = "mamba"  # "mamba" | "hf"
    lm_config: dict[str, Any] = field(default_factory=dict)
    lm_checkpoint: str | None = None
    tokenizer: str | None = None
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    train_lm: bool = False  # the base LM was fine-tuned (part "lm"): its weights are in the model's file
    train_frames: int = 1024  # 10.24 s crops for training
    min_inference_frames: int = 1024  # shorter clips are padded as in training; longer ones kept whole
    byte_tokenizer: bool = False  # no tokenizer folder: a fresh 258-id byte-level tokenizer (tiny presets)
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
        from sslalm.models.backends import LM_BACKENDS, lm_backend
        from sslalm.models.encoders import ENCODERS, encoder_class

        for field_name, registry in (("encoder_type", ENCODERS), ("lm_type", LM_BACKENDS)):
            value = getattr(self, field_name)
            if value not in registry:
                names = ", ".join(repr(n) for n in sorted(registry))
                raise ConfigError(f"{field_name} must be one of {names}, got {value!r}", field_name)
        encoder = encoder_class(self.encoder_type)
        backend = lm_backend(self.lm_type)
        try:
            encoder.check_config(self.encoder_config, require)
        except ConfigError as err:
            raise err.within("encoder_config") from None
        if self.lm_checkpoint is None or self.lm_config:
            try:
                backend.check_config(self.lm_config, require and self.lm_checkpoint is None)
            except ConfigError as err:
                raise err.within("lm_config") from None
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
        if isinstance(data, dict) and _REMOVED_FIELDS.keys() & data.keys():
            data = dict(data)
            for old in sorted(_REMOVED_FIELDS.keys() & data.keys()):
                logger.warning(
                    "config field %r is no longer used and is ignored (%s)", old, _REMOVED_FIELDS[old]
                )
                del data[old]
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


# fields older versions wrote, accepted (and dropped) when reading their configs
_REMOVED_FIELDS = {"cutoff_len": "the text cut is a training-stage setting: StageConfig.cutoff_len"}

# types and ranges of the fields; encoder_type / lm_type are checked against the registries
SPECS: dict[str, Spec] = {
    "encoder_type": Spec("str"),
    "encoder_config": Spec("mapping"),
    "encoder_checkpoint": Spec("str", optional=True, nonempty=True),
    "projector_type": Spec("str", choices=("conv", "pool")),
    "projector_kernel": Spec("int", 1, 64),
    "projector_stride": Spec("int", 1, 64),
    "projector_padding": Spec("int", 0, 64),
    "projector_time_pool": Spec("int", 1, 1024),
    "tag_names": Spec("str_list", optional=True, nonempty=True),
    "tag_pool": Spec("str", choices=("mean", "mean+max")),
    "tag_checkpoint": Spec("str", optional=True, nonempty=True),
    "tag_temperature": Spec("float", 0, 100, low_open=True),
    "tag_fact_temperature": Spec("float", 0, 100, low_open=True, optional=True),
    "tag_cepstra": Spec("int", 0, 128),
    "tag_fact_net": Spec("int", 0, 4096),
    "tag_scale": Spec("str", choices=("word", "audio")),
    "lm_type": Spec("str"),
    "lm_config": Spec("mapping"),
    "lm_checkpoint": Spec("str", optional=True, nonempty=True),
    "tokenizer": Spec("str", optional=True, nonempty=True),
    "lora_r": Spec("int", 1, 4096),
    "lora_alpha": Spec("float", 0, low_open=True),
    "lora_dropout": Spec("float", 0, 0.99),
    "lora_target_modules": Spec("str_list", optional=True, nonempty=True),
    "train_lm": Spec("bool"),
    "train_frames": Spec("int", 32, 1_000_000),
    "min_inference_frames": Spec("int", 32, 1_000_000),
    "byte_tokenizer": Spec("bool"),
    "name": Spec("str"),
}


def _dass(kind: str) -> dict[str, Any]:
    from sslalm.models.dass import DASSConfig

    return getattr(DASSConfig, kind)().to_dict()


def _mamba(kind: str) -> dict[str, Any]:
    from sslalm.models.mamba import MambaConfig

    if kind == "tiny":
        return {**MambaConfig(d_model=64, n_layer=2, vocab_size=8).to_dict(), "vocab_size": "auto"}
    return MambaConfig.mamba_2_8b().to_dict()


def _ssl(encoder: str, lm: str) -> SSLALMConfig:
    return SSLALMConfig(encoder_config=_dass(encoder), lm_config=_mamba(lm), lora_target_modules=["in_proj"])


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


def _tiny(config: SSLALMConfig) -> SSLALMConfig:
    config.byte_tokenizer = True  # CPU-test size: no tokenizer folder needed
    return config


PRESETS = {
    "sslalm-small": lambda: _ssl("small", "2.8b"),
    "sslalm-medium": lambda: _ssl("medium", "2.8b"),
    "hybrid-small": lambda: _hybrid("small", LLAMA_7B),
    "hybrid-medium": lambda: _hybrid("medium", LLAMA_7B),
    "ltu": lambda: _ltu({}, LLAMA_7B),
    "tiny-sslalm": lambda: _tiny(_ssl("tiny", "tiny")),
    "tiny-hybrid": lambda: _tiny(_hybrid("tiny", TINY_LLAMA)),
    "tiny-ltu": lambda: _tiny(_ltu(TINY_AST, TINY_LLAMA)),
}
