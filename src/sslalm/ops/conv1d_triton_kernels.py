"""Triton kernels of the depthwise causal conv1d (see ``sslalm.ops.conv1d_triton`` for what and why).

Imported by the wrappers in ``conv1d_triton`` on their first launch, never directly: ``@triton.jit`` reads
``TRITON_INTERPRET`` when this module is imported (see ``sslalm.ops.triton_support``). Arithmetic is fp32.
"""

from __future__ import annotations

import triton
import triton.language as tl

from sslalm.ops.triton_support import interpret_requested

INTERPRETED = interpret_requested()


@triton.jit
def causal_conv1d_fwd_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, out_ptr, dout_ptr, g_ptr, dw_ptr, dbias_ptr,
    dim, L,
    sx_b, sx_d, sx_t, sw_d, sw_k, si_b, si_d, si_k, so_b, so_d, so_t,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    BACKWARD: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    """pre[t] = bias + sum_j w[j] ext[t + j], ext = (initial_state, x): a (BLOCK_D, BLOCK_T) tile per program.

    Forward: out = pre, or silu(pre), stored in out's dtype. BACKWARD: g = dout * act'(pre) is stored (fp32,
    contiguous) for the input-gradient kernel, and dw[d, j] += sum_t g ext[t + j], dbias += sum_t g
    (atomic adds over batch and time blocks).
    """
    b = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    t = tl.program_id(2) * BLOCK_T + tl.arange(0, BLOCK_T)
    mask_d = ch < dim
    m = mask_d[:, None] & (t < L)[None, :]
    acc = tl.zeros([BLOCK_D, BLOCK_T], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + ch, mask=mask_d, other=0.0).to(tl.float32)[:, None]
    x_rows = x_ptr + b * sx_b + ch[:, None] * sx_d
    for j in tl.static_range(W):
        src = t - (W - 1) + j  # position in x; negative ones are in the initial state
        v = tl.load(x_rows + src[None, :] * sx_t, mask=m & (src >= 0)[None, :], other=0.0).to(tl.float32)
        if HAS_INIT:
            ms = m & (src < 0)[None, :]
            i_ptrs = init_ptr + b * si_b + ch[:, None] * si_d + (src + W - 1)[None, :] * si_k
            v += tl.load(i_ptrs, mask=ms, other=0.0).to(tl.float32)
        acc += tl.load(w_ptr + ch * sw_d + j * sw_k, mask=mask_d, other=0.0).to(tl.float32)[:, None] * v
    if BACKWARD:
        go = tl.load(dout_ptr + b * so_b + ch[:, None] * so_d + t[None, :] * so_t, mask=m, other=0.0)
        go = go.to(tl.float32)
        if SILU:
            s = tl.sigmoid(acc)
            go = go * s * (1.0 + acc * (1.0 - s))
        go = tl.where(m, go, 0.0)
        tl.store(g_ptr + (b * dim + ch[:, None]) * L + t[None, :], go, mask=m)
        if HAS_BIAS:
            tl.atomic_add(dbias_ptr + ch, tl.sum(go, axis=1), mask=mask_d)
        for j in tl.static_range(W):
            src = t - (W - 1) + j
            v = tl.load(x_rows + src[None, :] * sx_t, mask=m & (src >= 0)[None, :], other=0.0).to(tl.float32)
            if HAS_INIT:
                ms = m & (src < 0)[None, :]
                i_ptrs = init_ptr + b * si_b + ch[:, None] * si_d + (src + W - 1)[None, :] * si_k
                v += tl.load(i_ptrs, mask=ms, other=0.0).to(tl.float32)
            tl.atomic_add(dw_ptr + ch * W + j, tl.sum(go * v, axis=1), mask=mask_d)
    else:
        if SILU:
            acc = acc * tl.sigmoid(acc)
        tl.store(out_ptr + (b * dim + ch[:, None]) * L + t[None, :], acc.to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def causal_conv1d_bwd_input_kernel(
    g_ptr, w_ptr, dx_ptr, dinit_ptr,
    dim, L, sw_d, sw_k,
    W: tl.constexpr, HAS_INIT: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_E: tl.constexpr,
):  # fmt: skip
    """d ext[e] = sum_j w[j] g[e - j] for e in [0, W - 1 + L): the first W - 1 go to d initial_state, the
    rest to dx. g (batch, dim, L), dx (batch, dim, L) and dinit (batch, dim, W - 1) are contiguous."""
    b = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    e = tl.program_id(2) * BLOCK_E + tl.arange(0, BLOCK_E)
    mask_d = ch < dim
    acc = tl.zeros([BLOCK_D, BLOCK_E], dtype=tl.float32)
    g_rows = g_ptr + (b * dim + ch[:, None]) * L
    for j in tl.static_range(W):
        t = e - j
        mg = mask_d[:, None] & ((t >= 0) & (t < L))[None, :]
        wj = tl.load(w_ptr + ch * sw_d + j * sw_k, mask=mask_d, other=0.0).to(tl.float32)
        acc += wj[:, None] * tl.load(g_rows + t[None, :], mask=mg, other=0.0)
    tx = e - (W - 1)
    mx = mask_d[:, None] & ((tx >= 0) & (tx < L))[None, :]
    tl.store(dx_ptr + (b * dim + ch[:, None]) * L + tx[None, :], acc.to(dx_ptr.dtype.element_ty), mask=mx)
    if HAS_INIT:
        mi = mask_d[:, None] & (e < W - 1)[None, :]
        dst = dinit_ptr + (b * dim + ch[:, None]) * (W - 1) + e[None, :]
        tl.store(dst, acc.to(dinit_ptr.dtype.element_ty), mask=mi)


@triton.jit
def causal_conv1d_update_kernel(
    x_ptr, state_ptr, w_ptr, bias_ptr, out_ptr,
    dim, sx_b, sx_d, ss_b, ss_d, ss_k, sw_d, sw_k,
    W: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """One decode step for BLOCK_D channels: state <- (state[1:], x) in place (any strides), then
    out = bias + sum_k w[k] state[k], optionally silu."""
    b = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    k = tl.arange(0, BLOCK_W)
    mask_d = ch < dim
    m = mask_d[:, None] & (k < W)[None, :]
    s_rows = state_ptr + b * ss_b + ch[:, None] * ss_d
    new = tl.load(s_rows + (k + 1)[None, :] * ss_k, mask=mask_d[:, None] & (k + 1 < W)[None, :], other=0.0)
    x = tl.load(x_ptr + b * sx_b + ch * sx_d, mask=mask_d, other=0.0)
    new = tl.where((k == W - 1)[None, :], x[:, None].to(new.dtype), new)
    w = tl.load(w_ptr + ch[:, None] * sw_d + k[None, :] * sw_k, mask=m, other=0.0).to(tl.float32)
    out = tl.sum(new.to(tl.float32) * w, axis=1)
    if HAS_BIAS:
        out += tl.load(bias_ptr + ch, mask=mask_d, other=0.0).to(tl.float32)
    if SILU:
        out = out * tl.sigmoid(out)
    tl.debug_barrier()  # every thread has read the old state before any writes the shifted one
    tl.store(s_rows + k[None, :] * ss_k, new, mask=m)
    tl.store(out_ptr + b * dim + ch, out.to(out_ptr.dtype.element_ty), mask=mask_d)
