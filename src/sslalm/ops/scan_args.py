"""Argument preparation shared by every selective-scan method: upcasts, delta bias/softplus, B/C groups,
the D skip and z gate, and whether autograd needs a gradient.

The convention (mamba_ssm's ``selective_scan_fn``): ``u, delta`` are (batch, dim, L); ``A`` is (dim, N);
``B, C`` are (batch, N, L) or grouped (batch, G, N, L) with ``dim`` divisible by ``G``; ``initial_state`` is
(batch, dim, N). Computation is fp32 whatever the input dtype; y is returned in u's dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def expand_groups(BC: Tensor, dim: int) -> Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, dim, N, L) view/expansion."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(BC.shape[0], dim, BC.shape[1], BC.shape[2])
    batch, groups, n, length = BC.shape
    if dim % groups:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {groups}")
    return BC.repeat_interleave(dim // groups, dim=1)


def prepare(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    work: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor, Tensor]:
    """Upcast to ``work`` (fp32) and apply the delta bias/softplus.

    Returns u, delta (batch, dim, L) and A (dim, N)."""
    u = u.to(work)
    delta = delta.to(work)
    if delta_bias is not None:
        delta = delta + delta_bias.to(work)[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A.to(work)


def finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    """D skip and z gate in u's (already upcast) precision, then the cast to the output dtype."""
    if D is not None:
        y = y + u * D.to(u.dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
    return y.to(dtype)


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will want a gradient of any of ``tensors``."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def grouped(BC: Tensor, work: torch.dtype = torch.float32) -> Tensor:
    """(batch, N, L) -> (batch, 1, N, L); grouped (batch, G, N, L) unchanged. Upcast to ``work`` (fp32)."""
    BC = BC.to(work)
    return BC.unsqueeze(1) if BC.dim() == 3 else BC


def check_groups(dim: int, groups: int) -> None:
    if dim % groups:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {groups}")
