"""Mamba-1 language model (state-spaces/mamba-2.8b and its smaller siblings) in pure PyTorch.

Why our own: transformers' ``MambaForCausalLM`` runs a materialising Python loop when the CUDA kernels of
``mamba-ssm`` are missing (always, here), which makes CPU prefill and training far too slow, and its
multi-token calls ignore a cached state. ``mamba-ssm`` itself does not install without a CUDA toolchain and
bypasses LoRA wrappers in its fused path. This module builds the same network on our own scans
(``sslalm.ops``), keeps transformers' module and parameter names (so checkpoints, peft adapters and the
parity tests line up one to one), and adds what the LALM needs: ``inputs_embeds``, right-padded batches,
prefill from a given state, and a constant-size recurrent state for decoding.

Layout per block (docs/mamba.md): RMSNorm → ``in_proj`` (d_model → 2·d_inner: x, gate z) → causal
depthwise conv on x → SiLU → ``x_proj`` (→ dt, B, C) → ``dt_proj`` + softplus → selective scan with
A = -exp(A_log) and skip D, gated by SiLU(z) → ``out_proj`` → residual add (fp32). A final RMSNorm and a head
tied to the embedding give the logits; the vocabulary is padded to a multiple of 8.

Padding: a pad position gets Δ = 0 (so exp(ΔA) = 1 and ΔBx = 0: the scan state passes through unchanged) and a
zero pre-conv input. With right padding (what training and batched generation use) every sequence therefore
ends in exactly the state it would have alone, and the conv state is gathered at each sequence's own end.
Left padding is exact too when starting from the zero state. ``in_proj`` is always called as a module, so a
peft LoRA wrapper applies in training, prefill and decoding alike.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from sslalm.models.mamba_config import (  # noqa: F401  (re-exported: the public names live here too)
    MambaConfig,
    load_weight_files,
    lora_config,
    lora_parameter_count,
)
from sslalm.ops import causal_conv1d, causal_conv1d_update, selective_scan, selective_state_update

logger = logging.getLogger(__name__)
Tensor = torch.Tensor

# Parameters that stay fp32 whatever the compute dtype: SSMs are sensitive to their precision.
FP32_PARAMS = ("A_log", "D", "dt_proj.bias")


@dataclass
class MambaState:
    """Constant-size recurrent state: per layer the last ``d_conv`` pre-conv inputs and the SSM state.

    conv: (n_layer, B, d_inner, d_conv) in the compute dtype; ssm: (n_layer, B, d_inner, d_state) fp32.
    Its size never depends on how many tokens were seen; decoding updates it in place.
    """

    conv: Tensor
    ssm: Tensor

    @classmethod
    def zeros(cls, config: MambaConfig, batch: int, device=None, dtype=torch.float32) -> MambaState:
        conv = torch.zeros(config.n_layer, batch, config.d_inner, config.d_conv, device=device, dtype=dtype)
        ssm = torch.zeros(config.n_layer, batch, config.d_inner, config.d_state, device=device)
        return cls(conv, ssm)

    @property
    def batch_size(self) -> int:
        return self.conv.shape[1]

    def clone(self) -> MambaState:
        return MambaState(self.conv.clone(), self.ssm.clone())

    def select(self, index: Tensor | list[int] | slice) -> MambaState:
        """The state of some sequences of the batch (a copy): continuous batching drops finished rows."""
        return MambaState(self.conv[:, index].clone(), self.ssm[:, index].clone())

    def copy_(self, other: MambaState) -> MambaState:
        self.conv.copy_(other.conv)
        self.ssm.copy_(other.ssm)
        return self

    def nbytes(self) -> int:
        return self.conv.nbytes + self.ssm.nbytes


@dataclass
class MambaLMOutput(ModelOutput):
    """``loss`` (scalar, when labels are given), ``logits`` (B, L', V) fp32, ``state`` (when asked for)."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    state: MambaState | None = None


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in fp32 (transformers' ``MambaRMSNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class MambaMixer(nn.Module):
    """The selective-SSM mixer of one block; parameter names match mamba_ssm and transformers.

    The conv, the scan and the decode step go through ``sslalm.ops``' dispatchers, which pick the kernel per
    device (numba on CPU, mamba_ssm or Triton on CUDA, torch elsewhere). ``scan_method`` / ``step_method``
    (default ``"auto"``) force one, for comparisons and tests.
    """

    scan_method: str = "auto"
    step_method: str = "auto"

    def __init__(self, config: MambaConfig):
        super().__init__()
        d, di, n, r = config.d_model, config.d_inner, config.d_state, config.time_step_rank
        self.d_inner, self.d_state, self.d_conv, self.dt_rank = di, n, config.d_conv, r
        self.in_proj = nn.Linear(d, 2 * di, bias=config.bias)
        k = config.d_conv
        self.conv1d = nn.Conv1d(di, di, k, groups=di, padding=k - 1, bias=config.conv_bias)
        self.x_proj = nn.Linear(di, r + 2 * n, bias=False)
        self.dt_proj = nn.Linear(r, di, bias=True)
        self.A_log = nn.Parameter(torch.empty(di, n))
        self.D = nn.Parameter(torch.empty(di))
        self.out_proj = nn.Linear(di, d, bias=config.bias)

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """mamba_ssm's initialisation: S4D-real A, D = 1, dt bias = softplus⁻¹ of a log-uniform step."""
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=self.A_log.device)
        self.A_log.copy_(torch.log(a).expand(self.d_inner, -1))
        self.D.fill_(1.0)
        std = self.dt_rank**-0.5
        nn.init.uniform_(self.dt_proj.weight, -std, std)
        u = torch.rand(self.d_inner, device=self.A_log.device)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))

    def _ssm_inputs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., d_inner) after conv → Δ (..., d_inner) fp32 post-softplus, B and C (..., d_state)."""
        dt, B, C = torch.split(self.x_proj(x), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        # weight and bias applied separately so the bias can stay fp32 under bf16 weights (as mamba_ssm does)
        delta = F.softplus(F.linear(dt, self.dt_proj.weight).float() + self.dt_proj.bias.float())
        return delta, B, C

    def forward(
        self,
        h: Tensor,
        mask: Tensor | None = None,
        conv_state: Tensor | None = None,
        ssm_state: Tensor | None = None,
        ends: Tensor | None = None,
        return_state: bool = False,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Mix a sequence. h (B, L, d_model); mask (B, L) with 1 = real token.

        ``conv_state`` (B, d_inner, d_conv) and ``ssm_state`` (B, d_inner, d_state) are the state before the
        first token (zeros if None). With ``return_state`` the state after position ``ends[b] - 1`` (default
        L - 1) is returned (new tensors). Returns (out (B, L, d_model), conv_state, ssm_state).
        """
        batch, length, _ = h.shape
        k = self.d_conv
        # Everything stays time-major (B, L, channels): matmuls need no copies and, transposed to (B, D, L)
        # for the scan, these are exactly the strides the scan's time-major loop wants.
        x, z = self.in_proj(h).chunk(2, dim=-1)  # (B, L, d_inner) each
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        weight = self.conv1d.weight[:, 0, :]  # (d_inner, k)
        history = None if conv_state is None else conv_state[..., 1:].to(x.dtype)  # (B, d_inner, k - 1)
        xc = causal_conv1d(x.transpose(1, 2), weight, self.conv1d.bias, history, activation="silu")
        xc = xc.transpose(1, 2)  # (B, L, d_inner)
        delta, B, C = self._ssm_inputs(xc)  # (B, L, d_inner) fp32, (B, L, N), (B, L, N)
        if mask is not None:
            delta = delta * mask[..., None]
        A = -torch.exp(self.A_log.float())
        res = selective_scan(
            xc.transpose(1, 2),
            delta.transpose(1, 2),
            A,
            B.transpose(1, 2),
            C.transpose(1, 2),
            D=self.D,
            z=z.transpose(1, 2),
            initial_state=ssm_state,
            return_last_state=return_state,
            method=self.scan_method,
        )
        y, last = res if return_state else (res, None)
        out = self.out_proj(y.transpose(1, 2).to(h.dtype))  # (B, L, d_model)
        new_conv = None
        if return_state:  # the last k pre-conv inputs before each sequence's end
            if conv_state is None:
                prefix = x.new_zeros(batch, k, self.d_inner)
            else:
                prefix = conv_state.transpose(1, 2).to(x.dtype)  # (B, k, d_inner)
            ext = torch.cat([prefix, x], dim=1)  # (B, k + L, d_inner)
            ends = torch.full((batch,), length, device=h.device) if ends is None else ends
            idx = (ends[:, None] + torch.arange(k, device=h.device))[..., None].expand(-1, -1, self.d_inner)
            new_conv = torch.gather(ext, 1, idx).transpose(1, 2)  # (B, d_inner, k)
        return out, new_conv, last

    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        """One decoding step. h (B, d_model); states are updated in place. Returns (B, d_model)."""
        x, z = self.in_proj(h).chunk(2, dim=-1)  # (B, d_inner)
        weight = self.conv1d.weight[:, 0, :]
        xc = causal_conv1d_update(x, conv_state, weight, self.conv1d.bias, activation="silu")
        dt, B, C = torch.split(self.x_proj(xc), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight)  # bias and softplus are fused into the step (fp32 bias)
        A = -torch.exp(self.A_log.float())
        y = selective_state_update(
            ssm_state, xc, dt, A, B, C, D=self.D, z=z, dt_bias=self.dt_proj.bias, dt_softplus=True,
            method=self.step_method,
        )  # fmt: skip
        return self.out_proj(y.to(h.dtype))


class MambaBlock(nn.Module):
    """Pre-norm residual block: h + mixer(norm(h)), residual kept in fp32."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.residual_in_fp32 = config.residual_in_fp32
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.mixer = MambaMixer(config)

    def _residual(self, h: Tensor) -> Tensor:
        return h.float() if self.residual_in_fp32 else h

    def forward(self, h: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor | None, Tensor | None]:
        out, conv, ssm = self.mixer(self.norm(h.to(self.norm.weight.dtype)), *args, **kwargs)
        return self._residual(h) + out, conv, ssm

    def step(self, h: Tensor, conv_state: Tensor, ssm_state: Tensor) -> Tensor:
        out = self.mixer.step(self.norm(h.to(self.norm.weight.dtype)), conv_state, ssm_state)
        return self._residual(h) + out


class MambaBackbone(nn.Module):
    """Embedding, blocks and final norm (``backbone.*`` in both checkpoint layouts)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.embeddings = nn.Embedding(config.padded_vocab_size, config.d_model)
        self.layers = nn.ModuleList(MambaBlock(config) for _ in range(config.n_layer))
        self.norm_f = RMSNorm(config.d_model, config.norm_eps)


def _mask_and_ends(
    attention_mask: Tensor | None, lengths: Tensor | None, batch: int, length: int, device, has_state: bool
):
    """(mask (B, L) or None, ends (B,) = one past each sequence's last real position).

    Real tokens must form one run per row: right padding, or left padding when starting from the zero state
    (a leading pad would otherwise sit inside the conv window of a given state's history).
    """
    if lengths is not None:
        lengths = torch.as_tensor(lengths, device=device).long()
        if lengths.shape != (batch,) or (lengths < 1).any() or (lengths > length).any():
            raise ValueError(f"lengths must be (B,) in [1, {length}], got {lengths.tolist()}")
        attention_mask = torch.arange(length, device=device)[None, :] < lengths[:, None]
    if attention_mask is None:
        return None, torch.full((batch,), length, device=device, dtype=torch.long)
    mask = attention_mask.to(device=device, dtype=torch.bool)
    if mask.shape != (batch, length):
        raise ValueError(f"attention_mask must be {(batch, length)}, got {tuple(mask.shape)}")
    if not mask.any(-1).all():
        raise ValueError("every sequence needs at least one real token")
    m = mask.int()
    if ((m[:, 1:] > m[:, :-1]).sum(-1) + m[:, 0] > 1).any():
        raise ValueError("attention_mask: real tokens must be contiguous (left or right padding only)")
    if has_state and not bool(mask[:, 0].all()):
        raise ValueError("attention_mask: left padding is only exact from the zero state; pad on the right")
    ends = length - mask.flip(-1).int().argmax(-1)
    if bool(mask.all()):
        return None, ends
    return mask.float(), ends


class MambaLM(nn.Module):
    """Mamba-1 causal LM with transformers-compatible parameter names (``backbone.*``, ``lm_head``).

    Call it like a transformers causal LM (``input_ids`` or ``inputs_embeds``, ``attention_mask``, ``labels``
    → output with ``loss`` and ``logits``); ``prefill`` / ``step`` drive generation with a ``MambaState``.
    """

    _known_kwargs = ("output_attentions", "output_hidden_states", "return_dict", "use_cache")

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.backbone = MambaBackbone(config)
        self.lm_head = nn.Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.gradient_checkpointing = False
        if self.lm_head.weight.device.type != "meta":
            self.reset_parameters()
        self.tie_weights()

    # ------------------------------------------------------------------ parameters
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Random initialisation as in mamba_ssm (used for tests and benchmarks; checkpoints overwrite it)."""
        nn.init.normal_(self.backbone.embeddings.weight, std=0.02)
        for layer in self.backbone.layers:
            layer.mixer.reset_ssm_parameters()
            layer.mixer.out_proj.weight.div_(math.sqrt(self.config.n_layer))

    def tie_weights(self) -> None:
        if self.config.tie_embeddings:
            self.lm_head.weight = self.backbone.embeddings.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.backbone.embeddings

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token ids (B, L) → embeddings (B, L, d_model), what the LALM concatenates audio tokens with."""
        return self.backbone.embeddings(input_ids)

    def to_compute_dtype(self, dtype: torch.dtype) -> MambaLM:
        """Cast weights to ``dtype`` (e.g. bf16) but keep A_log, D and the dt bias in fp32."""
        for name, p in self.named_parameters():
            p.data = p.data.to(torch.float32 if name.endswith(FP32_PARAMS) else dtype)
        return self

    @property
    def dtype(self) -> torch.dtype:
        return self.backbone.embeddings.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.backbone.embeddings.weight.device

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None) -> None:
        """Recompute each block in the backward pass (the name HF Trainer calls)."""
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------ sequence forward
    def _inputs(self, input_ids: Tensor | None, inputs_embeds: Tensor | None) -> Tensor:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        return self.embed(input_ids) if inputs_embeds is None else inputs_embeds

    def _run(
        self, h: Tensor, mask: Tensor | None, ends: Tensor, state: MambaState | None, return_state: bool
    ) -> tuple[Tensor, MambaState | None]:
        """All blocks and the final norm: h (B, L, d_model) → (B, L, d_model), plus the state at ``ends``."""
        convs, ssms = [], []
        for i, layer in enumerate(self.backbone.layers):
            cs = None if state is None else state.conv[i]
            ss = None if state is None else state.ssm[i]
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                h, conv, ssm = torch.utils.checkpoint.checkpoint(
                    layer, h, mask, cs, ss, ends, return_state, use_reentrant=False
                )
            else:
                h, conv, ssm = layer(h, mask, cs, ss, ends, return_state)
            if return_state:
                convs.append(conv)
                ssms.append(ssm)
        new_state = MambaState(torch.stack(convs), torch.stack(ssms)) if return_state else None
        return self.backbone.norm_f(h), new_state

    def _logits(self, h: Tensor) -> Tensor:
        return self.lm_head(h.to(self.lm_head.weight.dtype)).float()

    def forward(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        state: MambaState | None = None,
        return_state: bool = False,
        logits_to_keep: int = 0,
        num_items_in_batch: int | Tensor | None = None,
        **kwargs: Any,
    ) -> MambaLMOutput:
        """Logits for every position (or the last ``logits_to_keep``) and, with ``labels``, the LM loss.

        Args:
            input_ids: (B, L) or inputs_embeds: (B, L, d_model).
            attention_mask: (B, L), 1 = real; pads may only trail (or lead, from a zero state).
            labels: (B, L) next-token targets (shifted inside, -100 ignored), as in transformers.
            state: the state before the first position (not modified); zeros if None.
            return_state: also return the state after each sequence's last real token.
        """
        unknown = [k for k, v in kwargs.items() if v is not None and k not in self._known_kwargs]
        if unknown:
            raise TypeError(f"MambaLM.forward got unexpected arguments {unknown}")
        h = self._inputs(input_ids, inputs_embeds)
        mask, ends = _mask_and_ends(attention_mask, None, h.shape[0], h.shape[1], h.device, state is not None)
        h, new_state = self._run(h, mask, ends, state, return_state or state is not None)
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self._logits(h)
        loss = None
        if labels is not None:
            flat_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
            flat_labels = labels[:, 1:].reshape(-1).to(logits.device)
            # transformers' Trainer passes num_items_in_batch when it trains a bare MambaLM (demo stage 0)
            if num_items_in_batch is None:
                loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100)
            else:
                loss = F.cross_entropy(flat_logits, flat_labels, ignore_index=-100, reduction="sum")
                loss = loss / num_items_in_batch
        return MambaLMOutput(loss=loss, logits=logits, state=new_state)

    # ------------------------------------------------------------------ generation primitives
    def prefill(
        self,
        input_ids: Tensor | None = None,
        inputs_embeds: Tensor | None = None,
        lengths: Tensor | list[int] | None = None,
        state: MambaState | None = None,
    ) -> tuple[Tensor, MambaState]:
        """Read right-padded prompts; return next-token logits (B, V) at each prompt's end and the state.

        ``lengths`` (B,) gives each prompt's real length (all of L if None). ``state`` (not modified) is the
        state before the prompts, so a long prompt can be fed in chunks.
        """
        h = self._inputs(input_ids, inputs_embeds)
        batch, length = h.shape[:2]
        mask, ends = _mask_and_ends(None, lengths, batch, length, h.device, state is not None)
        h, new_state = self._run(h, mask, ends, state, True)
        last = h[torch.arange(batch, device=h.device), ends - 1]  # (B, d_model)
        return self._logits(last), new_state

    def step(
        self, input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None, *, state: MambaState
    ) -> Tensor:
        """One token per sequence: input_ids (B,) or inputs_embeds (B, d_model) → logits (B, V).

        ``state`` is updated in place, so the memory of a sequence stays constant however long it gets.
        """
        h = self._inputs(input_ids, inputs_embeds)
        for i, layer in enumerate(self.backbone.layers):
            h = layer.step(h, state.conv[i], state.ssm[i])
        return self._logits(self.backbone.norm_f(h))

    def generate(self, *args: Any, **kwargs: Any):
        """``sslalm.generate.generate(self, ...)``: sampling with the constant-size state."""
        from sslalm.generate import generate

        return generate(self, *args, **kwargs)

    # ------------------------------------------------------------------ checkpoints
    @classmethod
    def from_pretrained(
        cls, path: str | Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> MambaLM:
        """Load a local Mamba-1 folder, state-spaces original or transformers ``-hf`` layout."""
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no config.json (not a Mamba checkpoint folder)")
        config = MambaConfig.from_dict(json.loads(config_file.read_text()))
        state_dict = load_weight_files(path, device=device)
        if "backbone.embedding.weight" in state_dict:  # original state-spaces name
            state_dict["backbone.embeddings.weight"] = state_dict.pop("backbone.embedding.weight")
        head = state_dict.pop("lm_head.weight", None) if config.tie_embeddings else None
        if head is not None and not torch.equal(head, state_dict.get("backbone.embeddings.weight", head)):
            logger.warning("%s: lm_head.weight differs from the embedding but the config ties them", path)
        with torch.device("meta"):
            model = cls(config)
        result = model.load_state_dict(state_dict, strict=False, assign=True)
        missing = [k for k in result.missing_keys if not (config.tie_embeddings and k == "lm_head.weight")]
        if missing or result.unexpected_keys:
            raise ValueError(
                f"{path}: checkpoint does not match {config}: missing {missing}, "
                f"unexpected {result.unexpected_keys}"
            )
        model.tie_weights()
        if dtype is not None:
            model.to_compute_dtype(dtype)
        logger.info("loaded Mamba LM from %s (%.1fM parameters)", path, model.num_parameters() / 1e6)
        return model.eval()

    def save_pretrained(self, path: str | Path) -> None:
        """Write the transformers ``-hf`` layout (config.json + model.safetensors), readable by both."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {**self.config.to_hf_dict(), "pad_vocab_size_multiple": self.config.pad_vocab_size_multiple}
        (path / "config.json").write_text(json.dumps(config, indent=2))
        tensors = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_embeddings:
            tensors.pop("lm_head.weight")
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)
