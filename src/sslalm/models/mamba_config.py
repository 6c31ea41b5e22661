"""Mamba-1 configuration and checkpoint files: our config, its state-spaces and transformers JSON forms,
reading weight files safely, and the paper's LoRA settings. The network itself is in ``sslalm.models.mamba``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sslalm.errors import UserError
from sslalm.schema import ConfigError, Spec, check_fields, check_keys

Tensor = torch.Tensor


@dataclass
class MambaConfig:
    """Hyper-parameters of a Mamba-1 LM, named as in state-spaces' ``config.json`` (HF names in comments).

    ``vocab_size`` is the tokenizer's size (50277 for GPT-NeoX); the embedding has ``padded_vocab_size`` rows.
    """

    d_model: int = 2560  # hidden_size
    n_layer: int = 64  # num_hidden_layers
    vocab_size: int = 50277
    d_state: int = 16  # state_size
    d_conv: int = 4  # conv_kernel
    expand: int = 2
    dt_rank: int | str = "auto"  # time_step_rank; "auto" = ceil(d_model / 16)
    norm_eps: float = 1e-5  # layer_norm_epsilon
    pad_vocab_size_multiple: int = 8
    conv_bias: bool = True  # use_conv_bias
    bias: bool = False  # use_bias (in_proj / out_proj)
    residual_in_fp32: bool = True
    tie_embeddings: bool = True  # tie_word_embeddings
    bos_token_id: int = 0
    eos_token_id: int = 0
    pad_token_id: int | None = None

    # peft reads ``model.config.model_type``: "mamba" makes it treat us exactly like transformers' Mamba
    # (same module names, adapters interchangeable; out_proj/conv1d targets refused as for HF).
    model_type = "mamba"

    def __post_init__(self) -> None:
        for name, value in check_fields(self.__dict__, _SPECS).items():
            setattr(self, name, value)

    @classmethod
    def check_dict(cls, d: Any, required: list[str] | tuple[str, ...] = ()) -> None:
        """Validate an ``lm_config`` mapping as SSLALM stores it: our field names (``vocab_size`` may be
        "auto"), strictly (a typo such as ``n_layerr`` is refused), or a transformers Mamba dict (with
        ``hidden_size``), whose keys map onto ours. ``required`` names fields that must be present."""
        if isinstance(d, dict) and "hidden_size" in d and "d_model" not in d:
            hf_required = [_HF_NAMES.get(k, k) for k in required]
            check_keys("", d, [*_HF_NAMES.values(), *_HF_EXTRA_KEYS], hf_required)
            values = {ours: d[hf] for ours, hf in _HF_NAMES.items() if hf in d}
        else:
            names = [f.name for f in dataclasses.fields(cls)]
            check_keys("", d, [*names, "model_type"], required)
            values = dict(d)
            if d.get("model_type", "mamba") != "mamba":
                raise ConfigError(f"model_type must be 'mamba', got {d['model_type']!r}", "model_type")
        if values.get("vocab_size") == "auto":
            values["vocab_size"] = 8  # stands for the tokenizer's size, known when the model is built
        values.pop("model_type", None)
        cls(**values)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def time_step_rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def padded_vocab_size(self) -> int:
        m = self.pad_vocab_size_multiple
        return self.vocab_size if m <= 1 else -(-self.vocab_size // m) * m

    @property
    def tie_word_embeddings(self) -> bool:  # the name transformers and peft look for
        return self.tie_embeddings

    # ------------------------------------------------------------------ presets
    @classmethod
    def mamba_2_8b(cls) -> MambaConfig:
        """state-spaces/mamba-2.8b: 2,768,345,600 parameters (tied)."""
        return cls(d_model=2560, n_layer=64)

    @classmethod
    def mamba_130m(cls) -> MambaConfig:
        """state-spaces/mamba-130m shape (d_model 768, 24 layers): the benchmark's default."""
        return cls(d_model=768, n_layer=24)

    @classmethod
    def tiny(cls, vocab_size: int = 1000) -> MambaConfig:
        """A model that runs in milliseconds, for tests and the demo."""
        return cls(d_model=64, n_layer=2, vocab_size=vocab_size)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Our own field names (a state-spaces-compatible superset); ``from_dict`` reads it back."""
        return {**dataclasses.asdict(self), "model_type": self.model_type}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MambaConfig:
        """Read our dict, a state-spaces ``config.json`` (``d_model``) or an HF one (``hidden_size``)."""
        if "hidden_size" in d and "d_model" not in d:
            return cls.from_hf_dict(d)
        return cls.from_state_spaces_dict(d)

    @classmethod
    def from_state_spaces_dict(cls, d: dict[str, Any]) -> MambaConfig:
        """state-spaces ``config.json``: d_model, n_layer, vocab_size, ssm_cfg, ... (unknown keys ignored)."""
        ssm = d.get("ssm_cfg") or {}
        if ssm.get("layer", "Mamba1") != "Mamba1" or d.get("attn_layer_idx") or d.get("d_intermediate", 0):
            raise ValueError(f"only pure Mamba-1 checkpoints are supported, got {d}")
        if d.get("rms_norm", True) is False:
            raise ValueError("only rms_norm=True checkpoints are supported")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**d, **ssm}.items() if k in names})

    @classmethod
    def from_hf_dict(cls, d: dict[str, Any]) -> MambaConfig:
        """transformers ``MambaConfig`` json (``model_type`` "mamba")."""
        if d.get("model_type", "mamba") != "mamba" or d.get("hidden_act", "silu") != "silu":
            raise ValueError(f"not a Mamba-1 config with SiLU: {d}")
        missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if k not in d]
        if missing:
            raise ValueError(f"transformers Mamba config lacks {missing}")
        d_inner = d.get("expand", 2) * d["hidden_size"]
        if d.get("intermediate_size", d_inner) != d_inner:
            raise ValueError("intermediate_size must equal expand * hidden_size")
        return cls(**{ours: d[hf] for ours, hf in _HF_NAMES.items() if hf in d})

    def to_hf_dict(self) -> dict[str, Any]:
        """The transformers ``MambaConfig`` kwargs of this model (vocab already padded)."""
        out = {hf: getattr(self, ours) for ours, hf in _HF_NAMES.items()}
        out.update(vocab_size=self.padded_vocab_size, time_step_rank=self.time_step_rank)
        out.update(model_type="mamba", architectures=["MambaForCausalLM"], hidden_act="silu")
        return {**out, "intermediate_size": self.d_inner}

    def to_state_spaces_dict(self) -> dict[str, Any]:
        """The original state-spaces ``config.json`` fields."""
        ssm_keys = ("d_state", "d_conv", "expand", "dt_rank", "conv_bias", "bias")
        d = {k: v for k, v in self.to_dict().items() if k not in ssm_keys and k != "model_type"}
        d.update(ssm_cfg={k: getattr(self, k) for k in ssm_keys}, rms_norm=True, fused_add_norm=True)
        return d


# our field -> transformers' MambaConfig field
_HF_NAMES = {
    "d_model": "hidden_size",
    "n_layer": "num_hidden_layers",
    "vocab_size": "vocab_size",
    "d_state": "state_size",
    "d_conv": "conv_kernel",
    "expand": "expand",
    "dt_rank": "time_step_rank",
    "norm_eps": "layer_norm_epsilon",
    "pad_vocab_size_multiple": "pad_vocab_size_multiple",
    "conv_bias": "use_conv_bias",
    "bias": "use_bias",
    "residual_in_fp32": "residual_in_fp32",
    "tie_embeddings": "tie_word_embeddings",
    "bos_token_id": "bos_token_id",
    "eos_token_id": "eos_token_id",
    "pad_token_id": "pad_token_id",
}


_SPECS = {
    "d_model": Spec("int", 1, 1 << 17),
    "n_layer": Spec("int", 1, 4096),
    "vocab_size": Spec("int", 1, 1 << 24),
    "d_state": Spec("int", 1, 4096),
    "d_conv": Spec("int", 1, 64),
    "expand": Spec("int", 1, 64),
    "dt_rank": Spec("int_or_auto", 1, 1 << 17),
    "norm_eps": Spec("float", 0, 1, low_open=True),
    "pad_vocab_size_multiple": Spec("int", 1, 1 << 16),
    "conv_bias": Spec("bool"),
    "bias": Spec("bool"),
    "residual_in_fp32": Spec("bool"),
    "tie_embeddings": Spec("bool"),
    "bos_token_id": Spec("int", 0),
    "eos_token_id": Spec("int", 0),
    "pad_token_id": Spec("int", 0, optional=True),
}
# keys of a transformers MambaConfig dict that have no counterpart in ours (accepted, not used)
_HF_EXTRA_KEYS = (
    "model_type",
    "architectures",
    "hidden_act",
    "intermediate_size",
    "initializer_range",
    "torch_dtype",
    "dtype",
    "transformers_version",
    "use_cache",
    "use_mambapy",
    "rescale_prenorm_residual",
    "time_step_scale",
    "time_step_min",
    "time_step_max",
    "time_step_init_scheme",
    "time_step_floor",
    "n_layer",
    "layer_norm_epsilon",
)


def _load_safetensors(file: Path, device: str | torch.device) -> dict[str, Tensor]:
    """``safetensors.torch.load_file`` with its errors (truncated, corrupt, unreadable) named by file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if file.is_file() and not os.access(file, os.R_OK):  # safetensors reports this as "No such file"
        raise UserError(f"cannot read {file}: permission denied (check the file's owner and mode)")
    try:
        return load_file(file, device=str(device))
    except PermissionError as err:
        raise UserError(f"cannot read {file}: permission denied (check the file's owner and mode)") from err
    except FileNotFoundError as err:
        raise UserError(f"weights file {file} is missing") from err
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(
            f"{file} is not a readable safetensors file ({err}); it is truncated or corrupt: "
            "copy or save it again"
        ) from err


def check_finite(state: dict[str, Tensor], source: str | Path) -> None:
    """Raise a ``UserError`` naming the first tensor of ``state`` that holds NaN or infinity."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise UserError(
                f"{source}: tensor {name!r} holds {bad} NaN or infinite value(s); the weights are corrupt "
                "(training diverged, or the file was damaged): use an earlier checkpoint"
            )


def load_weight_files(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Every tensor of a checkpoint folder: safetensors (single or sharded) first, else pytorch_model.bin(s).

    Pickles are read with ``torch.load(weights_only=True)`` so a checkpoint cannot run code.
    """
    path = Path(path)

    def load_file(f: Path, device: str) -> dict[str, Tensor]:
        state = _load_safetensors(Path(f), device)
        check_finite(state, f)
        return state

    def load_bin(f: Path) -> dict[str, Tensor]:
        try:
            return torch.load(f, map_location=device, weights_only=True, mmap=True)
        except RuntimeError:  # legacy (non-zip) pickles cannot be memory-mapped
            return torch.load(f, map_location=device, weights_only=True)

    for index_name, loader in (
        ("model.safetensors.index.json", lambda f: load_file(f, device=str(device))),
        ("pytorch_model.bin.index.json", load_bin),
    ):
        index = path / index_name
        if index.is_file():
            try:
                files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                raise UserError(f"{index} is not a readable weight index ({err})") from err
            out: dict[str, Tensor] = {}
            for name in files:
                out.update(loader(path / name))
            return out
    if (path / "model.safetensors").is_file():
        return load_file(path / "model.safetensors", device=str(device))
    if (path / "pytorch_model.bin").is_file():
        return load_bin(path / "pytorch_model.bin")
    raise UserError(
        f"no weights in {path}: expected model.safetensors(.index.json) or pytorch_model.bin(.index.json)"
    )


def lora_config(
    r: int = 8, alpha: int = 16, dropout: float = 0.05, target_modules: tuple[str, ...] = ("in_proj",)
):
    """The paper's LoRA (rank 8, α 16, dropout 0.05 on every ``in_proj``) as a peft ``LoraConfig``."""
    try:
        from peft import LoraConfig
    except ImportError as exc:  # pragma: no cover - peft is a core dependency
        raise ImportError("LoRA needs peft: pip install peft") from exc
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules))


def lora_parameter_count(config: MambaConfig, r: int = 8) -> int:
    """LoRA parameters on every in_proj: r·(d_model + 2·d_inner) per layer (6,553,600 for the 2.8B)."""
    return config.n_layer * r * (config.d_model + 2 * config.d_inner)
