"""Selective scan (the S6 recurrence of Mamba) in pure PyTorch.

For every batch b, channel d and state index n::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t, n] + D[d] * u[t]          (then * silu(z[t]) if z is given)

The argument convention is mamba_ssm's ``selective_scan_fn`` so that code written against it ports over:
``u, delta`` are (batch, dim, L); ``A`` is (dim, N); ``B, C`` are (batch, N, L) or grouped
(batch, G, N, L) with ``dim`` divisible by ``G`` (each group of dim/G channels shares its B and C; VMamba's
SS2D uses one group per scan direction). Unlike mamba_ssm we also accept an ``initial_state`` (batch, dim, N),
which chunked prefill and streaming need.

We write our own rather than depend on mamba_ssm: its kernels are CUDA-only and do not import on CPU, and
transformers' fallback loop has an O(L^2) backward (see reference/mamba.md). Methods:

* ``"ref"``: the sequential loop above, in fp32, autograd-friendly. Obviously correct; the twin every fast path
  is tested against.
* ``"auto"``: the fastest correct method for the inputs (see ``_pick_method``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _expand_groups(BC: Tensor, dim: int) -> Tensor:
    """(batch, N, L) or (batch, G, N, L) -> (batch, dim, N, L) view/expansion."""
    if BC.dim() == 3:
        return BC.unsqueeze(1).expand(BC.shape[0], dim, BC.shape[1], BC.shape[2])
    batch, groups, n, length = BC.shape
    if dim % groups:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {groups}")
    return BC.repeat_interleave(dim // groups, dim=1)


def _prepare(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    delta_bias: Tensor | None,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Upcast to fp32 and apply the delta bias/softplus. Returns u, delta (batch, dim, L) and A (dim, N)."""
    u = u.float()
    delta = delta.float()
    if delta_bias is not None:
        delta = delta + delta_bias.float()[None, :, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A.float()


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    if D is not None:
        y = y + u * D.float()[None, :, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan_ref(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sequential reference scan: one step at a time in fp32. Slow, simple, differentiable.

    Args:
        u, delta: (batch, dim, L).
        A: (dim, N), real (negative for a stable system).
        B, C: (batch, N, L) or (batch, G, N, L).
        D: (dim,) skip connection. z: (batch, dim, L) gate. delta_bias: (dim,).
        initial_state: (batch, dim, N) state before the first step (zeros if None).

    Returns:
        y (batch, dim, L) in u's dtype, and the last state (batch, dim, N) in fp32 if ``return_last_state``.
    """
    dtype = u.dtype
    batch, dim, length = u.shape
    u, delta, A = _prepare(u, delta, A, delta_bias, delta_softplus)
    Bx = _expand_groups(B.float(), dim)  # (batch, dim, N, L)
    Cx = _expand_groups(C.float(), dim)
    h = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.float()
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)  # (batch, dim, N)
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    y = _finish(y, u, D, z, dtype)
    return (y, h) if return_last_state else y


def selective_state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
) -> Tensor:
    """One decoding step of the scan, updating ``state`` in place (constant memory per sequence).

    Args:
        state: (batch, dim, N) fp32, modified in place.
        x, dt: (batch, dim). A: (dim, N). B, C: (batch, N) or (batch, G, N).
        D: (dim,). z: (batch, dim). dt_bias: (dim,).

    Returns:
        y: (batch, dim) in x's dtype.
    """
    dtype = x.dtype
    dim = x.shape[1]
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    if B.dim() == 3:  # grouped (batch, G, N)
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B = B[:, None, :]
        C = C[:, None, :]
    xf = x.float()
    dA = torch.exp(dt[..., None] * A.float())  # (batch, dim, N)
    state.mul_(dA).add_((dt * xf)[..., None] * B.float())
    y = (state * C.float()).sum(-1)
    if D is not None:
        y = y + xf * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    initial_state: Tensor | None = None,
    return_last_state: bool = False,
    method: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm's argument convention; see the module docstring.

    ``method`` picks the algorithm: ``"ref"`` (sequential, differentiable) or ``"auto"``.
    """
    kwargs = dict(
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        initial_state=initial_state,
        return_last_state=return_last_state,
    )
    if method in ("auto", "ref"):
        return selective_scan_ref(u, delta, A, B, C, **kwargs)
    raise ValueError(f"unknown selective_scan method {method!r}")
