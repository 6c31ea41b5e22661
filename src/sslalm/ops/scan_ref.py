"""Selective scan ``"ref"``: the sequential loop of the recurrence in fp32, autograd-friendly.

For every batch b, channel d and state index n::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t, n] + D[d] * u[t]          (then * silu(z[t]) if z is given)

Obviously correct and slow: the twin every fast method is tested against.
"""

from __future__ import annotations

import torch

from sslalm.ops.scan_args import expand_groups, finish, prepare

Tensor = torch.Tensor


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
    u, delta, A = prepare(u, delta, A, delta_bias, delta_softplus)
    Bx = expand_groups(B.float(), dim)  # (batch, dim, N, L)
    Cx = expand_groups(C.float(), dim)
    h = u.new_zeros(batch, dim, A.shape[1]) if initial_state is None else initial_state.float()
    ys = []
    for t in range(length):
        dA = torch.exp(delta[:, :, t, None] * A)  # (batch, dim, N)
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bx[..., t]
        ys.append((h * Cx[..., t]).sum(-1))  # (batch, dim)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, dim, 0)
    y = finish(y, u, D, z, dtype)
    return (y, h) if return_last_state else y
