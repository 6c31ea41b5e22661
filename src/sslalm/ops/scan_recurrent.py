"""Selective scan ``"recurrent"``: the sequential recurrence with a hand-written backward (CPU training).

The forward steps h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t without an autograd graph; the backward
is written out: one reverse-time loop for the state gradient g_t = C_t dy_t + a_{t+1} g_{t+1}, then
vectorised reductions: d(delta*u)_t = B_t.g_t, dB_t / dC_t = channel sums (per group) of delta_t u_t g_t /
dy_t h_t, w_t = g_t a_t h_{t-1} gives d delta_t = sum_n w_t A and dA = sum over batch and time of w_t delta_t,
d h0 = a_1 g_1. The softplus, delta bias, delta*u, D skip and z gate stay plain autograd ops around it.

Why: ``chunked`` builds an autograd graph of a few ops per step; here the forward is one in-place
``addcmul_`` per step with no graph, in a (batch, L, dim[, N]) layout that the Mamba LM's transposed
(batch, L, dim) activations already have (no copy). It keeps every state h_t and decay a_t = exp(delta_t A)
for the backward (two (batch, dim, L, N) fp32 buffers; the backward adds two more), about chunked's peak
memory or less. It is the torch training path when numba is missing, the compiled scan's torch twin, and the
only path besides ``ref`` that computes in fp64 (``gradcheck``). Timings: docs/benchmarks.md. Tested against
``selective_scan_ref`` (every gradient, grouped and ungrouped B/C, N = 1 and N > 1) and with ``gradcheck``.
"""

from __future__ import annotations

import torch

from sslalm.ops.scan_args import check_groups, finish, grouped, prepare
from sslalm.ops.scan_ref import selective_scan_ref

Tensor = torch.Tensor

_SWAP_BATCHED_MAX = 1 << 18  # layout changes of smaller tensors go in one 3-D copy


def _swap_last_two(x: Tensor) -> Tensor:
    """(batch, P, Q) -> contiguous (batch, Q, P). Large ones go one batch item at a time: PyTorch copies a
    2-D transpose blockwise, ~3x faster than the same permuted copy in 3-D (measured at 12M elements)."""
    if x.numel() < _SWAP_BATCHED_MAX:
        return x.transpose(1, 2).contiguous()
    out = x.new_empty(x.shape[0], x.shape[2], x.shape[1])
    for i in range(x.shape[0]):
        out[i].copy_(x[i].t())
    return out


def _batch_time(x: Tensor) -> Tensor:
    """(batch, ..., L) -> contiguous (batch, L, ...); no copy when the memory is already laid out so (the
    Mamba LM passes (batch, L, dim) activations transposed)."""
    moved = x.movedim(-1, 1)
    if moved.is_contiguous():
        return moved
    batch, length = x.shape[0], x.shape[-1]
    return _swap_last_two(x.reshape(batch, -1, length)).view(moved.shape)


def _time_inner(x: Tensor) -> bool:
    return x.stride(-1) == 1 and x.shape[-1] > 1


def _time_last(x: Tensor, time_inner: bool) -> Tensor:
    """Contiguous (batch, L, ...) -> (batch, ..., L): a view, or a copy with time innermost when the
    corresponding input was laid out so (then the elementwise ops around the scan see matching strides)."""
    if not time_inner:
        return x.movedim(1, -1)
    batch, length = x.shape[:2]
    return _swap_last_two(x.view(batch, length, -1)).view(*x.movedim(1, -1).shape)


class _Recurrence(torch.autograd.Function):
    """h_t = exp(dl_t A) h_{t-1} + du_t B_t, y_t = C_t . h_t stepped over time; hand-written backward.

    Inputs (fp32, or fp64 for gradcheck): du = delta*u and dl = delta, (batch, G, Dg, L); A (G, Dg, N);
    B, C (batch, G, N, L); h0 (batch, G, Dg, N) or None. Outputs y (batch, G, Dg, L) and the last state
    (batch, G, Dg, N). Internally everything is (batch, L, G, Dg[, N]) (the N axis dropped when N == 1), so
    one time step is one strided slice and the Mamba LM's (batch, L, dim) activations need no copy.

    The forward keeps two (batch, L, dim, N) buffers for the backward: the decays a_t = exp(dl_t A) and
    every state h_t. The backward allocates two more of that size (the state gradient g_t, then
    w_t = g_t a_t h_{t-1} in its place, and one temporary) and never writes into the saved ones.
    """

    @staticmethod
    def forward(ctx, du: Tensor, dl: Tensor, A: Tensor, B: Tensor, C: Tensor, h0: Tensor | None):
        G, Dg, N = A.shape
        dlt, dut = _batch_time(dl), _batch_time(du)  # (batch, L, G, Dg)
        Bt, Ct = _batch_time(B), _batch_time(C)  # (batch, L, G, N)
        if N == 1:
            a = torch.mul(dlt, A.view(G, Dg)).exp_()  # (batch, L, G, Dg): decay of each step
            h = torch.mul(dut, Bt)  # input of each step, then (in place) the state
            h0 = None if h0 is None else h0.squeeze(-1)
        else:
            a = torch.mul(dlt.unsqueeze(-1), A).exp_()  # (batch, L, G, Dg, N)
            h = torch.mul(dut.unsqueeze(-1), Bt.unsqueeze(-2))
        hs, as_ = h.unbind(1), a.unbind(1)
        if h0 is not None:
            hs[0].addcmul_(h0, as_[0])
        for t in range(1, len(hs)):
            hs[t].addcmul_(hs[t - 1], as_[t])
        # y_t = C_t . h_t: (batch, L, G, Dg)
        y = h * Ct if N == 1 else torch.matmul(h, Ct.unsqueeze(-1)).squeeze(-1)
        last = hs[-1].unsqueeze(-1) if N == 1 else hs[-1]
        ctx.save_for_backward(a, h, dlt, dut, Bt, Ct, A, h0)
        ctx.set_materialize_grads(False)
        ctx.layouts = tuple(_time_inner(x) for x in (du, dl, B, C))  # for the gradients' memory layouts
        return _time_last(y, ctx.layouts[0]), last.clone()

    @staticmethod
    def backward(ctx, dy: Tensor | None, dlast: Tensor | None):
        a, h, dlt, dut, Bt, Ct, A, h0 = ctx.saved_tensors
        need_du, need_dl, need_A, need_B, need_C, need_h0 = ctx.needs_input_grad
        G, Dg, N = A.shape
        # g_t = dL/dh_t = C_t dy_t + a_{t+1} g_{t+1} (+ dlast at the end), stepped backwards in place
        dyt = None if dy is None else _batch_time(dy.to(h.dtype))  # (batch, L, G, Dg)
        if dyt is None:
            g = torch.zeros_like(h)
        else:
            g = dyt * Ct if N == 1 else torch.mul(dyt.unsqueeze(-1), Ct.unsqueeze(-2))
        gs, as_ = g.unbind(1), a.unbind(1)
        if dlast is not None:
            gs[-1].add_(dlast.squeeze(-1) if N == 1 else dlast)
        for t in range(len(gs) - 2, -1, -1):
            gs[t].addcmul_(gs[t + 1], as_[t + 1])
        dh0 = None
        if need_h0:
            dh0 = as_[0] * gs[0]
            dh0 = dh0.unsqueeze(-1) if N == 1 else dh0
        dC = ddu = dB = ddl = dA = None
        # N == 1: h, g (batch, L, G, Dg) get a unit state axis so the channel sums below are matmuls
        # (batched dot products: ~2.5x faster than a product and a sum, which also allocates a temporary)
        hN, gN = (h.unsqueeze(-1), g.unsqueeze(-1)) if N == 1 else (h, g)
        if need_C:  # sum over the group's channels of dy_t h_t: (batch, L, G, N)
            dC = torch.zeros_like(Ct) if dyt is None else torch.matmul(dyt.unsqueeze(-2), hN).squeeze(-2)
        if need_du:  # B_t . g_t: (batch, L, G, Dg)
            ddu = g * Bt if N == 1 else torch.matmul(g, Bt.unsqueeze(-1)).squeeze(-1)
        if need_B:  # sum over the group's channels of du_t g_t: (batch, L, G, N)
            dB = torch.matmul(dut.unsqueeze(-2), gN).squeeze(-2)
        if need_dl or need_A:
            w = g.mul_(a)  # w_t = g_t a_t h_{t-1} = dL/d(dl_t A), in g's buffer (g is not needed any more)
            w[:, 1:].mul_(h[:, :-1])
            if h0 is None:
                w[:, 0].zero_()
            else:
                w[:, 0].mul_(h0)
            if need_dl:  # sum over the states of w_t A: (batch, L, G, Dg)
                ddl = w * A.view(G, Dg) if N == 1 else torch.mul(w, A).sum(-1)
            if need_A:  # sum over batch and time of w_t dl_t, in w's buffer
                dA = w.mul_(dlt if N == 1 else dlt.unsqueeze(-1)).sum((0, 1)).view(G, Dg, N)
        du, dl, B, C = ctx.layouts
        return (
            None if ddu is None else _time_last(ddu, du),
            None if ddl is None else _time_last(ddl, dl),
            dA,
            None if dB is None else _time_last(dB, B),
            None if dC is None else _time_last(dC, C),
            dh0,
        )


def selective_scan_recurrent(
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
    """Sequential recurrence with a hand-written backward: the CPU training path. Same arguments as
    :func:`selective_scan_ref`; differentiable w.r.t. every tensor input (last state included).

    Only the core recurrence is a custom autograd Function (see the module docstring); the delta
    bias/softplus, delta*u, the D skip and the z gate stay plain autograd ops. Computes in fp32, or in fp64
    when ``u`` is fp64 (so ``torch.autograd.gradcheck`` applies).
    """
    dtype = u.dtype
    batch, dim, length = u.shape
    if length == 0:
        args = (D, z, delta_bias, delta_softplus, initial_state, return_last_state)
        return selective_scan_ref(u, delta, A, B, C, *args)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    uf, df, Af = prepare(u, delta, A, delta_bias, delta_softplus, work)
    Bg, Cg = grouped(B, work), grouped(C, work)
    G, N = Bg.shape[1], Af.shape[1]
    check_groups(dim, G)
    Dg = dim // G
    h0 = None if initial_state is None else initial_state.to(work).reshape(batch, G, Dg, N)
    du = (df * uf).view(batch, G, Dg, length)
    y, last = _Recurrence.apply(du, df.view(batch, G, Dg, length), Af.view(G, Dg, N), Bg, Cg, h0)
    y = finish(y.reshape(batch, dim, length), uf, D, z, dtype)
    return (y, last.reshape(batch, dim, N)) if return_last_state else y
