"""Selective scan ``"chunked"``: a two-level parallel scan in plain torch ops (autograd gives every gradient).

Time is cut
into nc chunks of T steps (the tail padded with delta = 0, which is decay 1 and no input). Pass 1 runs the
recurrence inside all chunks at once from a zero state (T vectorised steps, time-major layout so each step
is one contiguous slice) to get every chunk's end state e_c; the decay across a whole chunk is
P_c = exp(A * sum(delta)). A short loop chains the chunks, s_{c+1} = P_c * s_c + e_c (nc small steps).
Pass 2 reruns all chunks from their true start states s_c and reads y out per step. Without grad it works
in place, in blocks of time that bound the temporaries (any L). For N == 1 (DASS) the state axis is dropped
and everything is elementwise.

Numerics. ``chunked`` is not the log-space closed form (cumsums of delta*A, exp(-S)): that overflows fp32 once
a chunk's accumulated log-decay passes ~88 and needs a clamp (an O(e^-budget/T) error) or fp64. Ours only
multiplies decays exp(delta*A) in [0, 1] (for A <= 0, delta >= 0) and adds, so nothing can overflow for any
delta or A; decays that underflow give exactly 0, their true limit. Each output is the same sum of terms,
times the same decay factors, as in the sequential recurrence, only associated differently (plus P_c, a few
ulp from the product of its factors), and a contractive recurrence never amplifies rounding. Error bound: the
same order as the fp32 sequential recurrence, relative error ~ (T + L/T) * 6e-8 of the state's scale in
the worst case, ~1e-7 in practice (errors measured against an fp64 recurrence: docs/benchmarks.md). Tests
check extreme inputs against fp64.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sslalm.ops.scan_args import check_groups, finish, grouped, needs_grad, prepare
from sslalm.ops.scan_ref import selective_scan_ref

Tensor = torch.Tensor

# Chunk lengths, tuned on a 1-thread CPU (docs/benchmarks.md).
_CHUNK_GRAD = 8  # chunk length T with autograd, N > 1
_CHUNK_GRAD_N1 = 32  # ... N == 1 (elementwise chunks are cheap, the chunk-chaining loop is not)
_CHUNK_NOGRAD = 32  # chunk length T without grad
_STEP_BUDGET = 1 << 22  # elements of one (batch, dim, block, N) temporary of no-grad ``chunked`` (16 MB)


def _time_major(x: Tensor, T: int) -> Tensor:
    """(..., nc*T) -> contiguous (T, ..., nc), via a 2-D transpose (PyTorch copies those fast)."""
    *lead, length = x.shape
    return x.reshape(-1, T).t().contiguous().view(T, *lead, length // T)


def _chunked_block(
    du: Tensor, dl: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None, T: int, inplace: bool
) -> tuple[Tensor, Tensor]:
    """Scan one block of time with the two-level chunked algorithm.

    Args:
        du, dl: delta*u and delta, (batch, G, Dg, L) fp32. A: (G, Dg, N). B, C: (batch, G, N, L).
        h0: (batch, G, Dg, N) or None. T: chunk length. inplace: reuse buffers (only when no grad is needed).

    Returns:
        y (batch, G, Dg, L) before D and z, and the last state (batch, G, Dg, N).
    """
    batch, G, Dg, length = du.shape
    N = A.shape[-1]
    T = max(1, min(T, length))
    nc = -(-length // T)
    pad = nc * T - length
    if pad:  # padded steps have delta = 0: decay 1 and no input, so the state passes through unchanged
        du, dl, B, C = (F.pad(t, (0, pad)) for t in (du, dl, B, C))
    dsum = dl.reshape(batch, G, Dg, nc, T).sum(-1)  # (batch, G, Dg, nc): log-decay of a chunk is A * dsum
    if N == 1:  # per-step tensors are (batch, G, Dg, nc); no state axis at all
        a1 = A.reshape(G, Dg, 1)
        dA = torch.exp(_time_major(dl, T) * a1)  # (T, batch, G, Dg, nc)
        x = _time_major(du, T) * _time_major(B, T)  # B: (T, batch, G, 1, nc)
        Cs = _time_major(C, T)
        P = torch.exp(dsum * a1)  # (batch, G, Dg, nc): decay across each whole chunk
        cdim = 3
        h0 = None if h0 is None else h0.reshape(batch, G, Dg)
    else:  # per-step tensors are (batch, G, nc, Dg, N)
        a1 = A.reshape(G, 1, Dg, N)
        dlt = _time_major(dl, T).transpose(-1, -2).contiguous()  # (T, batch, G, nc, Dg): contiguous, so that
        dut = _time_major(du, T).transpose(-1, -2).contiguous()  # the products below are too
        Bt = _time_major(B, T).transpose(-1, -2).unsqueeze(-2)  # (T, batch, G, nc, 1, N)
        dA = torch.exp(dlt.unsqueeze(-1) * a1)  # (T, batch, G, nc, Dg, N)
        x = dut.unsqueeze(-1) * Bt  # (T, batch, G, nc, Dg, N)
        Cs = _time_major(C, T).transpose(-1, -2).unsqueeze(-1).contiguous()  # (T, batch, G, nc, N, 1)
        P = torch.exp(dsum.transpose(-1, -2).unsqueeze(-1) * a1)  # (batch, G, nc, Dg, N)
        cdim = 2
    xs, dAs, Cs = x.unbind(0), dA.unbind(0), Cs.unbind(0)  # unbind, not indexing: O(1) backward per slice

    # Pass 1: every chunk's end state when started from zero (all chunks at once, T steps).
    hl = xs[0].clone() if inplace else xs[0]
    for t in range(1, T):
        hl = torch.addcmul(xs[t], hl, dAs[t], out=hl) if inplace else torch.addcmul(xs[t], hl, dAs[t])

    # Chain: the true start state of every chunk (nc small steps over (batch, G, Dg[, N])).
    hls, Ps = hl.unbind(cdim), P.unbind(cdim)
    h = torch.zeros_like(hls[0]) if h0 is None else h0
    if inplace:
        starts = torch.empty_like(hl)
        for c in range(nc):
            starts.select(cdim, c).copy_(h)
            h = torch.addcmul(hls[c], Ps[c], h)
    else:
        start_list = []
        for c in range(nc):
            start_list.append(h)
            h = torch.addcmul(hls[c], Ps[c], h)
        starts = torch.stack(start_list, cdim)
    last = h

    # Pass 2: rerun every chunk from its true start state and read out y (T steps).
    h = starts
    if inplace:
        ybuf = x.new_empty(x.shape[:-1] if N > 1 else x.shape)
        for t in range(T):
            h = xs[t].addcmul_(h, dAs[t])
            if N == 1:
                torch.mul(h, Cs[t], out=ybuf[t])
            else:
                torch.matmul(h, Cs[t], out=ybuf[t].unsqueeze(-1))
        y = ybuf
    else:
        ys = []
        for t in range(T):
            h = torch.addcmul(xs[t], h, dAs[t])
            ys.append(h * Cs[t] if N == 1 else torch.matmul(h, Cs[t]).squeeze(-1))
        y = torch.stack(ys, 0)
    if N > 1:
        y = y.transpose(-1, -2)  # (T, batch, G, Dg, nc)
    y = y.reshape(T, -1).t().reshape(batch, G, Dg, nc * T)
    if pad:
        y = y[..., :length]
    return y, (last if N > 1 else last.unsqueeze(-1))


def selective_scan_chunked(
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
    chunk_size: int | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Chunked parallel scan: plain torch ops, differentiable w.r.t. every tensor input. Same arguments as
    :func:`selective_scan_ref`; ``chunk_size`` overrides the chunk length T.

    Without grad it works in place and in blocks of time, so memory stays bounded for any L.
    """
    dtype = u.dtype
    batch, dim, length = u.shape
    if length == 0:
        args = (D, z, delta_bias, delta_softplus, initial_state, return_last_state)
        return selective_scan_ref(u, delta, A, B, C, *args)
    grad = needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state)
    uf, df, Af = prepare(u, delta, A, delta_bias, delta_softplus)
    Bg, Cg = grouped(B), grouped(C)
    G, N = Bg.shape[1], Af.shape[1]
    check_groups(dim, G)
    Dg = dim // G
    T = chunk_size or (_CHUNK_NOGRAD if not grad else _CHUNK_GRAD_N1 if N == 1 else _CHUNK_GRAD)
    du = (df * uf).view(batch, G, Dg, length)
    dl = df.view(batch, G, Dg, length)
    Ag = Af.view(G, Dg, N)
    h = None if initial_state is None else initial_state.float().view(batch, G, Dg, N)
    if grad:
        y, h = _chunked_block(du, dl, Ag, Bg, Cg, h, T, inplace=False)
    else:  # blocks of time bound the temporaries to about _STEP_BUDGET elements each
        block = max(T, _STEP_BUDGET // max(1, batch * dim * N) // T * T)
        with torch.no_grad():
            ys = []
            for s in range(0, length, block):
                e = min(length, s + block)
                yb, h = _chunked_block(du[..., s:e], dl[..., s:e], Ag, Bg[..., s:e], Cg[..., s:e], h, T, True)
                ys.append(yb)
            y = ys[0] if len(ys) == 1 else torch.cat(ys, -1)
    y = finish(y.reshape(batch, dim, length), uf, D, z, dtype)
    return (y, h.reshape(batch, dim, N)) if return_last_state else y
