"""DASS, the Distilled Audio State Space model: the ssLALM audio encoder.

DASS (Bhati et al., arXiv 2407.04082) is VMamba-v2 (``VSSM`` with ``forward_type="v05_noz"``) on a 1-channel
log-mel spectrogram: a two-conv stem (stride 4), four stages of VSS blocks (SS2D + MLP, pre-norm) separated by
strided 3x3 convs, and a 527-way AudioSet head on a globally mean-pooled map, H = frequency, W = time. The
SS2D mixer scans the map in four directions (time-major rows, frequency-major columns and both reversed)
with a d_state=1 selective scan; ``docs/dass.md`` has the full description. DASS runs VMamba
channel-first; we keep the blocks channel-last (B, H, W, C) inside (VMamba's other layout, same parameters,
faster on CPU) and return the channel-first (B, C, H, W) map.

We write it ourselves because the original code needs CUDA (Triton cross-scan, a compiled selective-scan
kernel) and the transformers port is remote code that is not in ``transformers``. Here cross-scan and merge
are plain tensor ops and the scan is :func:`sslalm.ops.selective_scan` (pure PyTorch, any device).

Module and parameter names mirror the original ``VSSM`` (``patch_embed.0``, ``layers.2.blocks.5.op.A_logs``,
``classifier.head``...), so our ``state_dict`` is the original release's minus its ``module.v.`` prefix; the
Hugging Face port's layout is translated on load (:func:`convert_hf_state_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sslalm.ops import selective_scan

logger = logging.getLogger(__name__)

Tensor = torch.Tensor
K_DIRECTIONS = 4
SCAN_LAYOUTS = ("auto", "time", "channel")


@dataclasses.dataclass
class DASSConfig:
    """Hyperparameters of a DASS encoder. Serialisable with :meth:`to_dict` / :meth:`from_dict` (JSON-safe).

    ``dt_rank="auto"`` means ``ceil(dim / 16)`` per stage. ``scan_method`` is passed to
    :func:`sslalm.ops.selective_scan` (``"ref"`` gives the slow sequential twin). Maps larger than
    ``grouped_scan_max_elements`` (B*C*H*W) are scanned one direction at a time: 40% of the peak memory
    on long audio (6.8 -> 2.7 GB for a 600 s first stage) at the same CPU speed; small maps keep the single
    grouped scan (fewer ops, better on GPU). ``scan_layout`` lays either scan's inputs out
    ``"time"``-major (what the CPU scan reads without a copy) or ``"channel"``-major (rows along time, what
    the GPU scans read); ``"auto"``: time-major on CPU. Neither changes the result beyond rounding.
    """

    depths: list[int] = dataclasses.field(default_factory=lambda: [2, 2, 8, 2])
    dims: list[int] = dataclasses.field(default_factory=lambda: [96, 192, 384, 768])
    d_state: int = 1
    ssm_ratio: float = 1.0
    dt_rank: int | str = "auto"
    d_conv: int = 3
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.2
    num_classes: int = 527
    in_chans: int = 1
    num_mel_bins: int = 128
    layer_norm_eps: float = 1e-5
    scan_method: str = "auto"
    grouped_scan_max_elements: int = 1 << 22
    scan_layout: str = "auto"

    model_type = "dass"

    def __post_init__(self) -> None:
        from sslalm.schema import ConfigError, Spec, check_fields

        specs = {
            "depths": Spec("int_list", 1, 1000, nonempty=True),
            "dims": Spec("int_list", 1, 1 << 16, nonempty=True),
            "d_state": Spec("int", 1, 1024),
            "ssm_ratio": Spec("float", 0, 64, low_open=True),
            "dt_rank": Spec("int_or_auto", 1, 1 << 16),
            "d_conv": Spec("int", 1, 64),
            "mlp_ratio": Spec("float", 0, 64),
            "drop_path_rate": Spec("float", 0, 0.99),
            "num_classes": Spec("int", 1, 1 << 20),
            "in_chans": Spec("int", 1, 64),
            "num_mel_bins": Spec("int", 1, 1024),
            "layer_norm_eps": Spec("float", 0, 1, low_open=True),
            "scan_method": Spec("str", nonempty=True),
            "grouped_scan_max_elements": Spec("int", 0),
            "scan_layout": Spec("str", choices=SCAN_LAYOUTS),
        }
        for name, value in check_fields(self.__dict__, specs).items():
            setattr(self, name, value)
        if len(self.depths) != len(self.dims):
            raise ConfigError(
                f"depths {self.depths} and dims {self.dims} must have the same length", "depths"
            )

    @classmethod
    def small(cls, **overrides: Any) -> DASSConfig:
        """DASS-small: VMamba-T layout, depths 2-2-8-2, 29,884,463 parameters with the AudioSet head."""
        return cls(**{"depths": [2, 2, 8, 2], "drop_path_rate": 0.2, **overrides})

    @classmethod
    def medium(cls, **overrides: Any) -> DASSConfig:
        """DASS-medium: VMamba-S layout, depths 2-2-20-2, 48,648,239 parameters with the AudioSet head."""
        return cls(**{"depths": [2, 2, 20, 2], "drop_path_rate": 0.3, **overrides})

    @classmethod
    def tiny(cls, **overrides: Any) -> DASSConfig:
        """A CPU-test-sized model with the real topology (4 stages, 4 scan directions, stride 32)."""
        return cls(**{"depths": [1, 1, 2, 1], "dims": [8, 16, 32, 64], "num_classes": 10, **overrides})

    @property
    def hidden_size(self) -> int:
        """Channels of the feature map that :meth:`DASSModel.forward_features` returns."""
        return self.dims[-1]

    def stage_dt_rank(self, dim: int) -> int:
        return math.ceil(dim / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DASSConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        from sslalm.schema import check_keys

        check_keys("", data, [*names, "model_type"])
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str | Path) -> DASSConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


# ----------------------------------------------------------------------------------------------------------
# layers


class Permute(nn.Module):
    """``x.permute(*dims)`` as a module (it sits at fixed indices of the original Sequentials)."""

    def __init__(self, *dims: int):
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(*self.dims)


class DropPath(nn.Module):
    """Stochastic depth: in training, zero a whole residual branch per sample with probability ``p``."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def cross_scan(x: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, 4, D, H*W): row-major, column-major, and both reversed.

    With H = frequency and W = time, direction 0 walks time within a frequency row and direction 1 walks all
    frequency bins of one time step before the next.
    """
    b, d, h, w = x.shape
    xs = x.new_empty(b, 4, d, h * w)
    xs[:, 0].view(b, d, h, w).copy_(x)  # index h*W + w
    xs[:, 1].view(b, d, w, h).copy_(x.transpose(2, 3))  # index w*H + h
    xs[:, 2:].copy_(xs[:, :2].flip(-1))
    return xs


def cross_scan_time_major(x: Tensor) -> Tensor:
    """(B, D, H, W) -> (B, H*W, 4, D): the four directions of :func:`cross_scan`, time-major in memory.

    The CPU scan (``"numba"``) steps through (batch, L, channels) memory; handing it this layout (as a
    transposed view) spares it copying every direction's input, step size and output gradient (the demo's
    DASS training step: 0.77-0.95x the time, ``sslalm bench encoder-train``). DASS's maps are channel-last
    already, so direction 0 is a plain copy.
    """
    b, d, h, w = x.shape
    xs = x.new_empty(b, h * w, 4, d)
    xs[:, :, 0].view(b, h, w, d).copy_(x.permute(0, 2, 3, 1))  # index h*W + w
    xs[:, :, 1].view(b, w, h, d).copy_(x.permute(0, 3, 2, 1))  # index w*H + h
    xs[:, :, 2:].copy_(xs[:, :, :2].flip(1))
    return xs


def cross_merge(ys: Tensor, height: int, width: int) -> Tensor:
    """(B, 4, D, H*W) -> (B, H, W, D), channel-last: undo each direction's ordering and sum the four."""
    b, _, d, length = ys.shape
    pairs = ys[:, :2] + ys[:, 2:].flip(-1)  # (B, 2, D, L): row-major, column-major
    rows = pairs[:, 0].view(b, d, height, width).permute(0, 2, 3, 1)  # (B, H, W, D) views
    cols = pairs[:, 1].view(b, d, width, height).permute(0, 3, 2, 1)
    return rows.contiguous().add_(cols)


def cross_merge_time_major(ys: Tensor, height: int, width: int) -> Tensor:
    """(B, H*W, 4, D) time-major -> (B, H, W, D): :func:`cross_merge` for :func:`cross_scan_time_major`'s
    layout (its gradient reaches the scan time-major too, so the scan's backward copies nothing)."""
    b, _, _, d = ys.shape
    pairs = ys[:, :, :2] + ys[:, :, 2:].flip(1)  # (B, L, 2, D): row-major, column-major
    rows = pairs[:, :, 0].view(b, height, width, d)
    cols = pairs[:, :, 1].view(b, width, height, d).transpose(1, 2)
    return rows + cols


class SS2D(nn.Module):
    """VMamba's 2-D selective-scan mixer, ``v05_noz`` variant (no gate branch, d_inner = ssm_ratio * dim).

    in_proj -> depthwise 3x3 conv -> SiLU -> four-direction selective scan -> LayerNorm -> out_proj.
    Works on channel-last (B, H, W, C) maps, like VMamba's ``channel_first=False`` path (same parameters):
    on CPU the 1x1 projections are GEMMs and LayerNorm runs over contiguous channels.
    """

    def __init__(self, dim: int, config: DASSConfig):
        super().__init__()
        d_inner = int(config.ssm_ratio * dim)
        self.d_inner, self.d_state, self.dt_rank = d_inner, config.d_state, config.stage_dt_rank(dim)
        self.scan_method = config.scan_method
        self.grouped_scan_max = config.grouped_scan_max_elements
        self.scan_layout = config.scan_layout
        k, n, r = K_DIRECTIONS, self.d_state, self.dt_rank
        self.in_proj = nn.Linear(dim, d_inner, bias=False)
        self.conv2d = nn.Conv2d(
            d_inner, d_inner, config.d_conv, padding=(config.d_conv - 1) // 2, groups=d_inner, bias=False
        )
        self.x_proj_weight = nn.Parameter(torch.empty(k, r + 2 * n, d_inner))  # (K, R+2N, D)
        self.dt_projs_weight = nn.Parameter(torch.empty(k, d_inner, r))  # (K, D, R)
        self.dt_projs_bias = nn.Parameter(torch.empty(k, d_inner))  # (K, D)
        self.A_logs = nn.Parameter(torch.empty(k * d_inner, n))  # (K*D, N)
        self.Ds = nn.Parameter(torch.empty(k * d_inner))  # (K*D,)
        self.out_norm = nn.LayerNorm(d_inner, eps=config.layer_norm_eps)
        self.out_proj = nn.Linear(d_inner, dim, bias=False)
        self.reset_ssm_parameters()

    @torch.no_grad()
    def reset_ssm_parameters(self, dt_min: float = 1e-3, dt_max: float = 0.1, dt_floor: float = 1e-4) -> None:
        """Mamba's "v0" init: dt log-uniform in [dt_min, dt_max] via an inverse-softplus bias; A = -(1..N)."""
        bound = self.d_inner**-0.5  # nn.Linear's default for the per-direction x projections
        self.x_proj_weight.uniform_(-bound, bound)
        self.dt_projs_weight.uniform_(-(self.dt_rank**-0.5), self.dt_rank**-0.5)
        dev = self.dt_projs_bias.device
        u = torch.rand(self.dt_projs_bias.shape, device=dev)
        dt = torch.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_floor)
        self.dt_projs_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        a = torch.arange(1, self.d_state + 1, dtype=torch.float32, device=dev)
        self.A_logs.copy_(torch.log(a).expand_as(self.A_logs))
        self.Ds.fill_(1.0)

    def scan_2d(self, x: Tensor) -> Tensor:
        """Four-direction selective scan of a (B, D, H, W) map, merged to channel-last (B, H, W, D), fp32.

        Small maps go through one grouped scan over all four directions (B/C as (B, 4, N, L)); maps of more
        than ``config.grouped_scan_max_elements`` elements scan one direction at a time, which gives the same
        result with a quarter of the temporaries (long audio). Either way the scan's inputs are laid out as
        ``config.scan_layout`` says (here ``_scan_inputs_time_major`` or ``_scan_inputs_channel_major``).
        """
        if x.numel() > self.grouped_scan_max:
            return self._scan_2d_by_direction(x)
        b, d, h, w = x.shape
        time_major = self._time_major(x)
        inputs = self._scan_inputs_time_major if time_major else self._scan_inputs_channel_major
        xs, dts, Bs, Cs = inputs(x)  # (B, K*D, L) twice, (B, K, N, L) twice: one group per direction
        ys = selective_scan(
            xs,
            dts,
            -torch.exp(self.A_logs.float()),  # (K*D, N)
            Bs,
            Cs,
            D=self.Ds.float(),
            delta_bias=self.dt_projs_bias.reshape(-1).float(),
            delta_softplus=True,
            method=self.scan_method,
        )  # (B, K*D, L) fp32
        if time_major:
            return cross_merge_time_major(ys.transpose(1, 2).reshape(b, h * w, K_DIRECTIONS, d), h, w)
        return cross_merge(ys.view(b, K_DIRECTIONS, d, h * w), h, w)

    def _scan_inputs_channel_major(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(B, D, H, W) -> u, delta (B, K*D, L) contiguous, B, C (B, K, N, L): per-direction projections."""
        b, d, h, w = x.shape
        length, k, n = h * w, K_DIRECTIONS, self.d_state
        xs = cross_scan(x)  # (B, K, D, L)
        x_dbl = torch.matmul(self.x_proj_weight, xs)  # (B, K, R+2N, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, n, n], dim=2)
        dts = torch.matmul(self.dt_projs_weight, dts)  # (B, K, D, L)
        return xs.view(b, k * d, length), dts.view(b, k * d, length), Bs.contiguous(), Cs.contiguous()

    def _scan_inputs_time_major(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The same inputs as ``_scan_inputs_channel_major``, as views of time-major (B, L, K, ...) memory.

        Each direction's projection is one block of a block-diagonal matrix, so that all four are one GEMM
        over time-major rows (the zero blocks cost a few small multiplies; the sums differ from per-direction
        products by rounding only, 1e-6 on the demo's features).
        """
        b, d, h, w = x.shape
        length, k, n, r = h * w, K_DIRECTIONS, self.d_state, self.dt_rank
        xs = cross_scan_time_major(x).view(b * length, k * d)  # (B*L, K*D)
        x_proj = torch.block_diag(*self.x_proj_weight.transpose(1, 2))  # (K*D, K*(R+2N))
        x_dbl = torch.matmul(xs, x_proj).view(b, length, k, r + 2 * n)
        dts, Bs, Cs = torch.split(x_dbl, [r, n, n], dim=3)  # (B, L, K, R), (B, L, K, N) twice
        dt_proj = torch.block_diag(*self.dt_projs_weight.transpose(1, 2))  # (K*R, K*D)
        dts = torch.matmul(dts.reshape(b * length, k * r), dt_proj)  # (B*L, K*D)

        def channels(t: Tensor) -> Tensor:  # (B*L, K*D) -> (B, K*D, L) view
            return t.view(b, length, k * d).transpose(1, 2)

        return channels(xs), channels(dts), Bs.permute(0, 2, 3, 1), Cs.permute(0, 2, 3, 1)

    def _scan_2d_by_direction(self, x: Tensor) -> Tensor:
        """``scan_2d`` one direction at a time (long audio), in the layout ``config.scan_layout`` says."""
        b, d, h, w = x.shape
        n, r = self.d_state, self.dt_rank
        time_major = self._time_major(x)
        A = -torch.exp(self.A_logs.float()).view(K_DIRECTIONS, d, n)
        Ds, bias = self.Ds.float().view(K_DIRECTIONS, d), self.dt_projs_bias.float()
        if time_major:  # (B, L, D): row-major (a view of the channel-last map), column-major
            flat = (x.permute(0, 2, 3, 1).reshape(b, h * w, d), x.permute(0, 3, 2, 1).reshape(b, w * h, d))
        else:  # (B, D, L)
            flat = (x.flatten(2), x.transpose(2, 3).flatten(2))
        merged = [None, None]
        for k in range(K_DIRECTIONS):
            reverse = k >= 2
            u = flat[k % 2].flip(1 if time_major else 2) if reverse else flat[k % 2]
            if time_major:  # (B, L, D) @ (D, R+2N): one GEMM over all rows, then (B, *, L) views
                dt, B, C = torch.split(torch.matmul(u, self.x_proj_weight[k].t()), [r, n, n], dim=2)
                dt = torch.matmul(dt, self.dt_projs_weight[k].t())  # (B, L, D)
                u, dt, B, C = (t.transpose(1, 2) for t in (u, dt, B, C))
            else:  # (1, out, in) @ (B, in, L): a 2-D parameter here takes matmul's path that is ~9x slower
                dt, B, C = torch.split(torch.matmul(self.x_proj_weight[k, None], u), [r, n, n], dim=1)
                dt = torch.matmul(self.dt_projs_weight[k, None], dt)  # (B, D, L)
            y = selective_scan(
                u, dt, A[k], B.contiguous(), C.contiguous(), D=Ds[k], delta_bias=bias[k],
                delta_softplus=True, method=self.scan_method,
            )  # fmt: skip
            del u, dt, B, C
            y = y.flip(-1) if reverse else y
            merged[k % 2] = y if merged[k % 2] is None else merged[k % 2].add_(y)
        rows = merged[0].reshape(b, d, h, w).permute(0, 2, 3, 1)  # (B, H, W, D) views when they can be
        cols = merged[1].reshape(b, d, w, h).permute(0, 3, 2, 1)
        return rows.contiguous().add_(cols)

    def _time_major(self, x: Tensor) -> bool:
        """Whether the scan's inputs are laid out time-major (``config.scan_layout``; ``auto``: on CPU)."""
        return self.scan_layout == "time" or (self.scan_layout == "auto" and x.device.type == "cpu")

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, H, W, C)."""
        x = self.in_proj(x).permute(0, 3, 1, 2)  # (B, D, H, W), channels-last memory
        x = F.silu(self.conv2d(x))
        y = self.out_norm(self.scan_2d(x)).to(x.dtype)  # (B, H, W, D)
        return self.out_proj(y)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VSSBlock(nn.Module):
    """Pre-norm residual block on (B, H, W, C): x + DropPath(SS2D(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, dim: int, drop_path: float, config: DASSConfig):
        super().__init__()
        eps = config.layer_norm_eps
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.op = SS2D(dim, config)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.op(self.norm(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _conv3x3_s2(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=3, stride=2, padding=1)


class Classifier(nn.Module):
    """LayerNorm -> global mean pool over (H, W) -> Linear; keys ``classifier.norm/head``."""

    def __init__(self, dim: int, num_classes: int, eps: float):
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """(B, H, W, C) -> (B, num_classes)."""
        return self.head(self.norm(x).mean(dim=(1, 2)))


# ----------------------------------------------------------------------------------------------------------
# the model


class DASSModel(nn.Module):
    """DASS encoder + AudioSet head.

    Input: normalised kaldi fbank (B, T, num_mel_bins), any T (no positional embedding). It becomes a
    (B, 1, F, T) image; each of the five stride-2 convs maps n -> floor((n-1)/2)+1, so the output is
    (B, dims[-1], ceil(F/32), ceil(T/32)): (B, 768, 4, 32) for a 1024-frame clip. Between the convs the
    blocks hold the map channel-last, (B, H, W, C), as VMamba's ``channel_first=False`` layout does with the
    same parameters; the ``Permute`` modules sit where that layout puts them.
    """

    def __init__(self, config: DASSConfig | None = None):
        super().__init__()
        self.config = config = config or DASSConfig.small()
        eps, dims = config.layer_norm_eps, config.dims
        self.gradient_checkpointing = False
        # nn.Sequential indices match the original's checkpoint keys (patch_embed.{0,2,5,7})
        self.patch_embed = nn.Sequential(
            _conv3x3_s2(config.in_chans, dims[0] // 2),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(dims[0] // 2, eps=eps),
            Permute(0, 3, 1, 2),
            nn.GELU(),
            _conv3x3_s2(dims[0] // 2, dims[0]),
            Permute(0, 2, 3, 1),
            nn.LayerNorm(dims[0], eps=eps),
        )  # (B, 1, F, T) -> (B, F/4, T/4, dims[0])
        rates = torch.linspace(0, config.drop_path_rate, sum(config.depths), device="cpu").tolist()
        self.layers = nn.ModuleList()
        start = 0
        for i, (depth, dim) in enumerate(zip(config.depths, dims, strict=True)):
            blocks = nn.Sequential(*(VSSBlock(dim, rates[start + j], config) for j in range(depth)))
            start += depth
            if i < len(dims) - 1:
                out = dims[i + 1]
                conv, norm = _conv3x3_s2(dim, out), nn.LayerNorm(out, eps=eps)
                down = nn.Sequential(Permute(0, 3, 1, 2), conv, Permute(0, 2, 3, 1), norm)
            else:
                down = nn.Identity()
            self.layers.append(nn.Sequential(OrderedDict(blocks=blocks, downsample=down)))
        self.classifier = Classifier(dims[-1], config.num_classes, eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        # as VSSM: trunc-normal linears, unit LayerNorms; convs keep PyTorch's default
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def output_size(n: int) -> int:
        """Length of an input axis of ``n`` bins/frames after the five stride-2 convs (= ceil(n / 32))."""
        for _ in range(5):
            n = (n - 1) // 2 + 1
        return n

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward_features(self, fbank: Tensor, apply_norm: bool = True) -> Tensor:
        """(B, T, F) fbank -> (B, dims[-1], ceil(F/32), ceil(T/32)) feature map (channel, freq, time).

        ``apply_norm`` applies the trained ``classifier.norm`` LayerNorm, the last op before DASS pools: the
        map the head was trained on, and what the LALM projector consumes by default.
        """
        x = self._encode(fbank)  # (B, F', T', C)
        if apply_norm:
            x = self.classifier.norm(x)
        return x.permute(0, 3, 1, 2).contiguous()  # (B, C, F', T')

    def forward(self, fbank: Tensor) -> Tensor:
        """(B, T, F) fbank -> (B, num_classes) logits (multi-label: use sigmoid/BCE)."""
        return self.classifier(self._encode(fbank))

    def _encode(self, fbank: Tensor) -> Tensor:
        """(B, T, F) -> channel-last (B, F', T', C), before ``classifier.norm``."""
        if fbank.dim() != 3 or fbank.shape[-1] != self.config.num_mel_bins:
            raise ValueError(
                f"DASS expects an fbank of shape (batch, frames, {self.config.num_mel_bins}), "
                f"got {tuple(fbank.shape)}"
            )
        x = fbank.unsqueeze(1).transpose(2, 3)  # (B, 1, F, T)
        x = self.patch_embed(x)  # (B, F/4, T/4, dims[0])
        for layer in self.layers:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                for block in layer.blocks:
                    x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
                x = layer.downsample(x)
            else:
                x = layer(x)
        return x

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, config: DASSConfig | None = None, strict: bool = True
    ) -> DASSModel:
        """Load a DASS checkpoint in the original or the Hugging Face port's layout.

        ``path``: an original release ``.pth``/``.pt`` (raw state_dict, keys ``module.v.*``), or a port file
        (``.safetensors`` or ``pytorch_model.bin``, keys ``dass.*``/``head.*``), or a folder holding one. With
        ``config=None`` the architecture (small, medium, or any other) is inferred from the keys and shapes.
        Raises :class:`DASSCheckpointError` naming missing/unexpected/mis-shaped keys; ``strict=False`` only
        tolerates a missing classifier head (encoder-only files), which keeps its random init. The model is
        returned in eval mode, as transformers' ``from_pretrained`` does.
        """
        state = convert_to_native(load_state_dict(path))
        config = config or infer_config(state)
        with torch.device("meta"):
            model = cls(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        _check_keys(state, expected, strict, path)
        model = cls(config)  # real tensors; init only matters for keys a non-strict load leaves out
        model.load_state_dict(state, strict=False)
        return model.eval()


# ----------------------------------------------------------------------------------------------------------
# checkpoints


class DASSCheckpointError(ValueError):
    """A checkpoint whose keys or shapes do not fit the DASS configuration."""


def load_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state_dict safely (safetensors, or torch.load with ``weights_only=True``); searches folders."""
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            found = sorted(p.name for p in path.iterdir())
            raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin in {path} (found {found})")
    if not path.is_file():
        raise FileNotFoundError(f"no DASS checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model"):  # training-script wrappers, if any
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise DASSCheckpointError(f"{path} does not hold a state_dict of tensors")
    return obj


_HF_RULES = [  # (pattern, replacement) applied to port keys with their "dass." prefix removed
    (r"^patch_embeddings\.projection\.0\.", "patch_embed.0."),
    (r"^patch_embeddings\.projection\.1\.", "patch_embed.2."),
    (r"^patch_embeddings\.projection\.3\.", "patch_embed.5."),
    (r"^patch_embeddings\.projection\.4\.", "patch_embed.7."),
    (r"\.downsample\.down\.", ".downsample.1."),
    (r"\.downsample\.norm\.", ".downsample.3."),
    (r"^norm\.", "classifier.norm."),
    (r"^head\.", "classifier.head."),
    (r"\.op\.x_proj\.weight$", ".op.x_proj_weight"),
    (r"\.op\.dt_projs\.weight$", ".op.dt_projs_weight"),
]


def convert_hf_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Hugging Face port layout -> our (original) layout, reshaping the grouped x/dt projections.

    The port stores ``x_proj.weight`` as (K*(R+2N), D) and ``dt_projs.weight`` as (K*D, R); we keep the
    original (K, R+2N, D) and (K, D, R).
    """
    out = {}
    for key, value in state.items():
        new = key[len("dass.") :] if key.startswith("dass.") else key
        for pattern, repl in _HF_RULES:
            new = re.sub(pattern, repl, new)
        if new.endswith((".op.x_proj_weight", ".op.dt_projs_weight")) and value.dim() == 2:
            value = value.reshape(K_DIRECTIONS, value.shape[0] // K_DIRECTIONS, value.shape[1])
        out[new] = value
    return out


def convert_to_native(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Any known layout (original ``module.v.``/``v.``, HF port ``dass.``/``head.``, ours) -> ours."""
    if any(k.startswith(("dass.", "patch_embeddings.")) for k in state):
        return convert_hf_state_dict(state)
    for prefix in ("module.v.", "module.", "v."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items()}
    return dict(state)


def infer_config(state: dict[str, Tensor]) -> DASSConfig:
    """Architecture from a native-layout state_dict; returns the small/medium preset when it is one."""
    try:
        n_stages = 1 + max(int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.", k)))
        depths = [
            len({m.group(1) for k in state if (m := re.match(rf"layers\.{i}\.blocks\.(\d+)\.", k))})
            for i in range(n_stages)
        ]
        dims = [state[f"layers.{i}.blocks.0.norm.weight"].shape[0] for i in range(n_stages)]
        op = "layers.0.blocks.0.op."
        d_inner = state[op + "in_proj.weight"].shape[0]
        ranks = [state[f"layers.{i}.blocks.0.op.dt_projs_weight"].shape[-1] for i in range(n_stages)]
        fields = dict(
            depths=depths,
            dims=dims,
            d_state=state[op + "A_logs"].shape[1],
            ssm_ratio=d_inner / dims[0],
            dt_rank="auto" if ranks == [math.ceil(d / 16) for d in dims] else ranks[0],
            d_conv=state[op + "conv2d.weight"].shape[-1],
            mlp_ratio=state["layers.0.blocks.0.mlp.fc1.weight"].shape[0] / dims[0],
            in_chans=state["patch_embed.0.weight"].shape[1],
        )
    except (KeyError, ValueError, IndexError) as exc:
        sample = sorted(state)[:8]
        raise DASSCheckpointError(
            f"cannot infer a DASS architecture from these keys ({exc!r}); first keys: {sample}"
        ) from exc
    if "classifier.head.weight" in state:
        fields["num_classes"] = state["classifier.head.weight"].shape[0]
    for preset in (DASSConfig.small, DASSConfig.medium):
        candidate = preset()
        if all(getattr(candidate, k) == v for k, v in fields.items()):
            return candidate
    return DASSConfig(**fields)


def _check_keys(state: dict[str, Tensor], expected: dict[str, tuple], strict: bool, path: Any) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {expected[k]}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != expected[k]
    ]
    if not strict:
        head = [k for k in missing if k.startswith("classifier.head.")]
        if head:
            logger.warning("%s has no classifier head; keeping a random one", path)
        missing = [k for k in missing if k not in head]
    if missing or unexpected or shapes:

        def show(items: list[str]) -> str:
            return ", ".join(items[:20]) + (f", ... ({len(items)} in all)" if len(items) > 20 else "")

        parts = [f"missing keys: {show(missing)}"] if missing else []
        parts += [f"unexpected keys: {show(unexpected)}"] if unexpected else []
        parts += [f"shape mismatches: {show(shapes)}"] if shapes else []
        raise DASSCheckpointError(f"{path} does not match the DASS config; " + "; ".join(parts))


__all__ = [
    "DASSCheckpointError",
    "DASSConfig",
    "DASSModel",
    "convert_hf_state_dict",
    "convert_to_native",
    "infer_config",
    "load_state_dict",
]
