"""Selective scan ``"loop"``: a fused time-major sequential loop in torch ops, inference only.

Raises if a gradient is needed. Per
block of steps it discretises once into reused buffers, then does one in-place ``addcmul_`` per step on the
fp32 state (batch, dim, N) and reads y out with one matmul per block; (batch, dim, L, N) is never
materialised.

It is the torch fallback for no-grad CPU prefill when numba is missing, and the compiled scan's torch twin.
"""

from __future__ import annotations

import torch

from sslalm.ops.scan_args import check_groups, finish, grouped, needs_grad, prepare
from sslalm.ops.scan_ref import selective_scan_ref

Tensor = torch.Tensor

_LOOP_BLOCK = 1 << 16  # elements of each ``loop`` buffer: 256 KB, so they stay in L2 while being stepped


def selective_scan_loop(
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
    """Fused time-major sequential loop, inference only (raises if a gradient is required).

    Same arguments as :func:`selective_scan_ref`. Per block of time steps it discretises once
    (exp(delta*A) and delta*u*B into reused buffers), then runs one in-place ``addcmul_`` per step on the
    fp32 state (batch, dim, N) and reads y out of the block with one matmul. (batch, dim, L, N) is never
    materialised; each of its two buffers holds about ``_LOOP_BLOCK`` elements (at least one step).
    """
    if needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        raise RuntimeError("selective_scan 'loop' is inference-only; use 'chunked' when a gradient is needed")
    if u.shape[-1] == 0:
        args = (D, z, delta_bias, delta_softplus, initial_state, return_last_state)
        return selective_scan_ref(u, delta, A, B, C, *args)
    with torch.no_grad():
        return _loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)


def _loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state):
    dtype = u.dtype
    batch, dim, length = u.shape
    uf, df, Af = prepare(u, delta, A, delta_bias, delta_softplus)
    Bg, Cg = grouped(B), grouped(C)
    G, N = Bg.shape[1], Af.shape[1]
    check_groups(dim, G)
    Dg = dim // G
    dt = df.reshape(-1, length).t().contiguous().view(length, batch, G, Dg)  # time-major (L, batch, G, Dg)
    dut = (df * uf).reshape(-1, length).t().contiguous().view(length, batch, G, Dg)
    Bt = Bg.reshape(-1, length).t().contiguous().view(length, batch, G, 1, N)
    Ct = Cg.reshape(-1, length).t().contiguous().view(length, batch, G, N, 1)
    Ag = Af.view(G, Dg, N)
    state = uf.new_zeros(batch, G, Dg, N)
    if initial_state is not None:
        state.copy_(initial_state.view(batch, G, Dg, N))
    block = max(1, min(length, _LOOP_BLOCK // max(1, batch * dim * N)))
    dA = uf.new_empty(block, batch, G, Dg, N)
    x = uf.new_empty(block, batch, G, Dg, N)
    y = uf.new_empty(length, batch, G, Dg)
    h = state
    for s in range(0, length, block):
        n = min(length, s + block) - s
        torch.mul(dt[s : s + n, ..., None], Ag, out=dA[:n])
        dA[:n].exp_()
        torch.mul(dut[s : s + n, ..., None], Bt[s : s + n], out=x[:n])
        for t in range(n):
            h = x[t].addcmul_(h, dA[t])  # h_t = x_t + exp(delta_t A) h_{t-1}, written over x_t
        if N == 1:
            torch.mul(x[:n, ..., 0], Ct[s : s + n, ..., 0, 0, None], out=y[s : s + n])
        else:
            torch.matmul(x[:n], Ct[s : s + n], out=y[s : s + n].unsqueeze(-1))
        h = state.copy_(h)  # x is overwritten by the next block
    y = y.view(length, -1).t().reshape(batch, dim, length)
    y = finish(y, uf, D, z, dtype)
    return (y, state.view(batch, dim, N)) if return_last_state else y
