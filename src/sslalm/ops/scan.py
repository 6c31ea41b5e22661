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
transformers' fallback loop has an O(L^2) backward (``docs/mamba.md``, "Scans"). Methods:

* ``"ref"``: the sequential loop above, in fp32, autograd-friendly. Obviously correct; the twin every fast
  path is tested against.
* ``"chunked"``: a two-level parallel scan in plain torch ops (so autograd gives every gradient). Time is cut
  into nc chunks of T steps (the tail padded with delta = 0, which is decay 1 and no input). Pass 1 runs the
  recurrence inside all chunks at once from a zero state (T vectorised steps, time-major layout so each step
  is one contiguous slice) to get every chunk's end state e_c; the decay across a whole chunk is
  P_c = exp(A * sum(delta)). A short loop chains the chunks, s_{c+1} = P_c * s_c + e_c (nc small steps).
  Pass 2 reruns all chunks from their true start states s_c and reads y out per step. Without grad it works
  in place, in blocks of time that bound the temporaries (any L). For N == 1 (DASS) the state axis is dropped
  and everything is elementwise.
* ``"loop"``: a fused time-major sequential loop for inference only (raises if a gradient is needed): per
  block of steps it discretises once into reused buffers, then does one in-place ``addcmul_`` per step on the
  fp32 state (batch, dim, N) and reads y out with one matmul per block; (batch, dim, L, N) is never
  materialised.
* ``"recurrent"`` (in ``sslalm.ops.scan_recurrent``): the training path. A ``torch.autograd.Function`` whose
  forward steps the recurrence without an autograd graph (one in-place ``addcmul_`` per step, as ``loop``) in
  a (batch, L, dim[, N]) layout, which the Mamba LM's transposed (batch, L, dim) activations already have (no
  copy), and keeps every state h_t and decay a_t = exp(delta_t A) for the backward (two (batch, dim, L, N)
  fp32 buffers; the backward adds two more). The backward is hand-written: one reverse-time loop for the state
  gradient g_t = C_t dy_t + a_{t+1} g_{t+1}, then vectorised reductions: d(delta*u)_t = B_t.g_t, dB_t / dC_t =
  channel sums (per group) of delta_t u_t g_t / dy_t h_t, w_t = g_t a_t h_{t-1} gives d delta_t = sum_n w_t A
  and dA = sum over batch and time of w_t delta_t, d h0 = a_1 g_1. The softplus, delta bias, delta*u, D skip
  and z gate stay plain autograd ops around it. Peak memory is about chunked's or less (143 vs 280 MB at
  lm-train (4, 512, 256, 16), 495 vs 486 MB at (4, 384, 8192, 1)).
* ``"auto"``: with grad, ``recurrent`` when N > 1 or batch*dim >= 1024, else ``chunked``; without,
  ``loop`` when the per-step state batch*dim*N is at least 512 (N > 1) or 768 (N == 1) or L < 8, else
  ``chunked``. Those crossovers were measured on this project's CPU with 1 thread (``sslalm bench scan``
  and a sweep of widths; the two tie within ~15% near them). Below them the loop's per-step Python overhead
  dominates. So a Mamba layer's prefill uses the loop and DASS's long N=1 scans at batch 1 (384 channels)
  use chunked. Forward + backward, medians in ms, chunked / recurrent (batch, dim, L, N):
  (32, 128, 60, 16) 104 / 40; (16, 128, 120, 16) 97 / 37; (4, 256, 512, 16) 281 / 97;
  (4, 512, 256, 16) 288 / 99; (1, 256, 4096, 16) 563 / 216; (1, 32, 1024, 16) 12.8 / 7.5;
  (2, 8, 64, 2) 1.0 / 0.6. N = 1, G = 4 (DASS stages): (4, 32, 8192) 38 / 72; (1, 256, 1024) 7.1 / 8.6;
  (16, 32, 2048) 30 / 37; (2, 384, 512) 10.0 / 9.0; (16, 64, 512) 14.1 / 12.3; (2, 512, 1024) 29.5 / 30.3;
  (4, 384, 8192) 784 / 622; (4, 768, 2048) 229 / 230; (16, 128, 128) 7.7 / 5.1; (16, 384, 2048) 797 / 610;
  (4, 1536, 512) 120 / 98; (4, 3072, 128) 58 / 45. A whole AdamW step of the 2-layer 64-wide Mamba LM on
  (32, 60) tokens: 296 ms with chunked, 121 ms with recurrent. With N == 1 both do elementwise work and
  small per-step slices favour chunked's fewer steps.

Numerics. ``chunked`` is not the log-space closed form (cumsums of delta*A, exp(-S)): that overflows fp32 once
a chunk's accumulated log-decay passes ~88 and needs a clamp (an O(e^-budget/T) error) or fp64. Ours only
multiplies decays exp(delta*A) in [0, 1] (for A <= 0, delta >= 0) and adds, so nothing can overflow for any
delta or A; decays that underflow give exactly 0, their true limit. Each output is the same sum of terms,
times the same decay factors, as in the sequential recurrence, only associated differently (plus P_c, a few
ulp from the product of its factors), and a contractive recurrence never amplifies rounding. Error bound: the
same order as the fp32 sequential recurrence, relative error ~ (T + L/T) * 6e-8 of the state's scale in
the worst case, ~1e-7 in practice. Measured against an fp64 recurrence: 1.2e-7 at mamba-like inputs,
4.6e-8 with delta in [1e-4, 1e4] and |A| in [1e-3, 1e3], and 3.3e-7 over L = 50000 with decays near 1
(where ``ref`` and ``loop``, one long sum, reach 5.5e-6 and 7.7e-6). Tests check extreme inputs vs fp64.
Computation is fp32 whatever the input dtype; y is returned in u's dtype and the last state in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor

# Tuning constants, measured on a 1-thread CPU (see the module docstring and ``sslalm bench scan``).
_CHUNK_GRAD = 8  # chunk length T with autograd, N > 1
_CHUNK_GRAD_N1 = 32  # ... N == 1 (elementwise chunks are cheap, the chunk-chaining loop is not)
_CHUNK_NOGRAD = 32  # chunk length T without grad
_LOOP_MIN_STEP = 512  # "auto" without grad: the loop wins once batch*dim*N reaches this (N > 1) ...
_LOOP_MIN_STEP_N1 = 768  # ... or this (N == 1)
_LOOP_MAX_SHORT = 8  # ... and always for sequences shorter than this
_RECURRENT_MIN_STEP_N1 = 1024  # "auto" with grad: "recurrent" for N > 1, and for N == 1 from this batch*dim


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


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None, dtype: torch.dtype) -> Tensor:
    """D skip and z gate in u's (already upcast) precision, then the cast to the output dtype."""
    if D is not None:
        y = y + u * D.to(u.dtype)[None, :, None]
    if z is not None:
        y = y * F.silu(z.to(u.dtype))
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


# ----------------------------------------------------------------------------------------------------------
# Chunked two-level scan (training and long no-grad sequences)
# ----------------------------------------------------------------------------------------------------------

_STEP_BUDGET = 1 << 22  # elements of one (batch, dim, block, N) temporary of no-grad ``chunked`` (16 MB)
_LOOP_BLOCK = 1 << 16  # elements of each ``loop`` buffer: 256 KB, so they stay in L2 while being stepped


def _needs_grad(*tensors: Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _grouped(BC: Tensor, work: torch.dtype = torch.float32) -> Tensor:
    """(batch, N, L) -> (batch, 1, N, L); grouped (batch, G, N, L) unchanged. Upcast to ``work`` (fp32)."""
    BC = BC.to(work)
    return BC.unsqueeze(1) if BC.dim() == 3 else BC


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
    grad = _needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state)
    uf, df, Af = _prepare(u, delta, A, delta_bias, delta_softplus)
    Bg, Cg = _grouped(B), _grouped(C)
    G, N = Bg.shape[1], Af.shape[1]
    if dim % G:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {G}")
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
    y = _finish(y.reshape(batch, dim, length), uf, D, z, dtype)
    return (y, h.reshape(batch, dim, N)) if return_last_state else y


# ----------------------------------------------------------------------------------------------------------
# Fused sequential loop (no-grad prefill on CPU)
# ----------------------------------------------------------------------------------------------------------


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
    if _needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        raise RuntimeError("selective_scan 'loop' is inference-only; use 'chunked' when a gradient is needed")
    if u.shape[-1] == 0:
        args = (D, z, delta_bias, delta_softplus, initial_state, return_last_state)
        return selective_scan_ref(u, delta, A, B, C, *args)
    with torch.no_grad():
        return _loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state)


def _loop(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, return_last_state):
    dtype = u.dtype
    batch, dim, length = u.shape
    uf, df, Af = _prepare(u, delta, A, delta_bias, delta_softplus)
    Bg, Cg = _grouped(B), _grouped(C)
    G, N = Bg.shape[1], Af.shape[1]
    if dim % G:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {G}")
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
    y = _finish(y, uf, D, z, dtype)
    return (y, state.view(batch, dim, N)) if return_last_state else y


def _pick_method(u: Tensor, A: Tensor, grad: bool) -> str:
    """The ``"auto"`` rule (measured on a 1-thread CPU; see the module docstring)."""
    batch, dim, length = u.shape
    n = A.shape[1]
    if grad:
        return "recurrent" if n > 1 or batch * dim >= _RECURRENT_MIN_STEP_N1 else "chunked"
    if batch * dim * n >= (_LOOP_MIN_STEP_N1 if n == 1 else _LOOP_MIN_STEP) or length < _LOOP_MAX_SHORT:
        return "loop"
    return "chunked"


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

    ``method`` picks the algorithm: ``"ref"``, ``"chunked"``, ``"recurrent"``, ``"loop"`` or ``"auto"``
    (module docstring).
    """
    kwargs = dict(
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        initial_state=initial_state,
        return_last_state=return_last_state,
    )
    if method == "auto":
        method = _pick_method(u, A, _needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state))
    if method == "ref":
        return selective_scan_ref(u, delta, A, B, C, **kwargs)
    if method == "chunked":
        return selective_scan_chunked(u, delta, A, B, C, **kwargs)
    if method == "loop":
        return selective_scan_loop(u, delta, A, B, C, **kwargs)
    if method == "recurrent":
        from sslalm.ops.scan_recurrent import selective_scan_recurrent

        return selective_scan_recurrent(u, delta, A, B, C, **kwargs)
    raise ValueError(f"unknown selective_scan method {method!r}")
