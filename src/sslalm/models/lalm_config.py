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

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(dataclasses.asdict(self))

    def to_json_string(self) -> str:
        """JSON text of the config (the name transformers' loggers call)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SSLALMConfig:
        data = dict(data)
        for old in _REMOVED_FIELDS.keys() & data.keys():
            logger.warning(
                "SSLALMConfig field %r is no longer used and is ignored (%s)", old, _REMOVED_FIELDS[old]
            )
            del data[old]
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown SSLALMConfig fields: {sorted(unknown)}")
        return cls(**copy.deepcopy(data))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> SSLALMConfig:
        """A named configuration; see ``PRESETS``. Keyword arguments override fields."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        config = PRESETS[name]()
        config.name = name
        for key, value in overrides.items():
            if not hasattr(config, key):
                raise ValueError(f"SSLALMConfig has no field {key!r}")
            setattr(config, key, value)
        return config


# fields older versions wrote, accepted (and dropped) when reading their configs
_REMOVED_FIELDS = {"cutoff_len": "the text cut is a training-stage setting: StageConfig.cutoff_len"}


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
