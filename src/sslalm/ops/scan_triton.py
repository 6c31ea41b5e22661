"""Selective scan and its one-step decode update as Triton kernels (the GPU fast path).

Same mathematics, arguments and returns as ``sslalm.ops.scan.selective_scan_ref`` and
``selective_state_update`` (mamba_ssm's convention): for batch b, channel d, state n::

    h[t] = exp(delta[t] A[d, n]) h[t-1] + delta[t] B[n, t] u[t]
    y[t] = (sum_n C[n, t] h[t, n] + D[d] u[t]) * silu(z[t])

with ``delta = softplus(delta + delta_bias)`` when asked. Everything is fused into the kernels (bias,
softplus, D skip and z gate too): one launch per layer for the forward, one for the backward, one per decode
step. The triton package is only needed when a kernel runs (``sslalm.ops.triton_support``); on CPU tensors the
kernels run under Triton's interpreter (``TRITON_INTERPRET=1``), which is how CI tests them against
``selective_scan_ref``.

Forward (``selective_scan_fwd_kernel``). Grid (batch * G, ceil(Dg / BLOCK_D)), Dg = dim / G channels per
B/C group, so a program's channels share one B and C row. Each program keeps its (BLOCK_D, N) fp32 state in
registers and walks time in chunks of BLOCK_T steps: it loads (BLOCK_D, BLOCK_T) tiles of u, delta, z and
(N, BLOCK_T) tiles of B, C (coalesced along time, the contiguous axis of (batch, dim, L) activations; any
strides are accepted, so transposed inputs are never copied), forms the decays exp(delta A) and inputs
delta u B as (BLOCK_D, N, BLOCK_T) tiles and runs ``tl.associative_scan`` over time with the composition of
affine maps (a1, x1) . (a2, x2) = (a1 a2, a2 x1 + x2). The chunk's state is then scan + cumulative decay *
carried state, y is a reduction over N. Like the ``chunked`` torch method this only multiplies decays in
[0, 1] and adds: nothing can overflow (no log-space cumsum). Padded steps past L get delta = 0 (decay 1, no
input), so the chunk's last column is the carried state.

Time segments (forward only). At batch 1 with few channels per group (DASS's N = 1 stages) batch x channel
blocks give a few dozen programs, each walking hundreds of chunks while most of a ~100-SM GPU idles. Then
(``time_segments``: fewer programs than SMs) time is also cut into S segments of at least 8 chunks, grid
(batch * G, ceil(Dg / BLOCK_D), S), and the kernel runs twice: a summary pass scans every segment from a
zero state and keeps only its end state E and total decay P (batch, S, 2, dim, N); the second pass starts
each segment from h0 carried over the earlier segments (h <- P h + E, at most S - 1 small steps) and writes
y, checkpoints and, in the last segment, the last state. Twice the scan work in S-fold parallel time; the
same products of decays in [0, 1], so the same accuracy. S is chosen for about two programs per SM.

Backward (``selective_scan_bwd_kernel``): the same grid layout, chunks in reverse order. Memory kept
between forward and backward: only the inputs and the state at the start of every chunk, ``ckpt``
(batch, ceil(L / BLOCK_T), dim, N) fp32, 1/BLOCK_T = 1/32 of all the states; no (batch, dim, L, N) tensor ever
exists. Per chunk the kernel recomputes the states from the checkpoint (a forward scan of the steps shifted
by one gives h[t-1] for every t without division), runs the state-gradient recurrence
g[t] = C[t] dy[t] + a[t+1] g[t+1] as a reverse ``associative_scan`` (carrying a[t0] g[t0] to the previous
chunk), and derives every gradient as ``scan_recurrent`` does: d(delta u) = B . g, w = g a h[t-1] gives
d delta = sum_n w A and dA = sum_t w delta, dB / dC = channel sums of delta u g / dy h, dh0 = a[0] g[0], plus
the softplus, bias, D and z terms. Per-time gradients (du, ddelta, dz) are written in the inputs' dtype;
dB, dC (summed over the group's channel blocks) and dA, dD, d delta_bias (summed over batch too) are
accumulated in fp32 with atomic adds, so they are not bitwise deterministic on a GPU.

Decode (``selective_state_update_kernel``): grid (batch, ceil(dim / BLOCK_D)); each program updates its
(BLOCK_D, N) state slice in place (any strides, e.g. a slice of a larger cache) and writes y.

Blocks: BLOCK_N = next power of two >= N (padded states have A = 0 and B = C = 0, so they stay zero);
BLOCK_T = 32 steps (a warp's width along the scan axis; at least 16, shorter sequences are padded); BLOCK_D
channels, at most 32 and a tile of at most 4096 elements in the forward (8 for N = 16), fewer in the
backward, which holds more tiles at once (16 for N = 1, 4 for N = 16). All are 4 warps. These are the
largest blocks that compile for sm90 without register spills, checked without a GPU by compiling to a cubin
(``sslalm.ops.triton_compile``, also run by the tests); N up to 32 stays spill-free. Written for sm80+
(A100/A6000/H100/H200) but not yet timed on one (CI has no GPU): the interpreter checks the arithmetic and
the cubin compile the code generation, not the speed.

Limits. The backward is parallel over batch x channels only (its chunks run in reverse order, one after the
other): small-batch training with few channels leaves SMs idle, as the forward would without segments. The
segment policy is untimed (no GPU here). Arithmetic is fp32 for any input dtype (fp64 inputs get fp32
accuracy). Offsets inside one batch item are int32 (dim * L < 2^31 elements). Backward checkpoints: 4 * dim *
N * ceil(L / 32) bytes per sequence, e.g. 21 MB per layer at the Mamba-2.8B width (dim 5120, N 16) and L =
2048. A Triton launch costs tens of microseconds of Python, so decoding token by token wants the CUDA-graph
path (Triton launches can be captured; untested here, no GPU).
"""

from __future__ import annotations

import functools

import torch
from torch.autograd.function import once_differentiable

from sslalm.ops.triton_support import load_kernels, require_triton

__all__ = ["require_triton", "selective_scan_triton", "selective_state_update_triton"]

Tensor = torch.Tensor

_KERNELS = "sslalm.ops.scan_triton_kernels"
# Block sizes: the largest that compile without register spills for sm90 (``python -m
# sslalm.ops.triton_compile`` reports registers and spills per kernel, no GPU needed).
_BLOCK_T = 32  # time steps per chunk: the scan axis, one warp wide
_MIN_BLOCK_T = 16  # shorter sequences are padded to this many steps
_FWD_TILE = 4096  # forward: elements of one (BLOCK_D, BLOCK_N, BLOCK_T) tile ...
_FWD_MAX_BLOCK_D = 32  # ... and at most this many channels
_BWD_BLOCK_D = {1: 16, 2: 8, 4: 8, 8: 8, 16: 4, 32: 2}  # backward: channels per program for each BLOCK_N
_UPDATE_BLOCK_D = 64  # channels per program of the decode step
_MIN_SEGMENT_CHUNKS = 8  # chunks per time segment at least: the summary pass doubles the scan work
_FORCE_SEGMENTS = 0  # tests set this to run the forward in that many time segments


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def fwd_blocks(Dg: int, N: int, L: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, BLOCK_T) of the forward for Dg channels per group, N states and L steps. The
    backward must use the same BLOCK_T (its checkpoints are per chunk) and ``bwd_block_d`` channels."""
    block_n = _pow2(N)
    block_t = min(_BLOCK_T, max(_MIN_BLOCK_T, _pow2(L)))
    block_d = max(1, min(_pow2(Dg), _FWD_MAX_BLOCK_D, _FWD_TILE // (block_n * block_t)))
    return block_d, block_n, block_t


def time_segments(programs: int, n_chunks: int, device: torch.device) -> int:
    """How many time segments the forward scans in parallel (module docstring): 1 unless the batch x channel
    blocks alone (``programs``) would leave most of the GPU idle; then enough segments for about two
    programs per SM, each at least ``_MIN_SEGMENT_CHUNKS`` chunks long."""
    if _FORCE_SEGMENTS:
        return max(1, min(_FORCE_SEGMENTS, n_chunks))
    if device.type != "cuda":
        return 1
    wanted = 2 * _multiprocessors(device.index if device.index is not None else torch.cuda.current_device())
    if programs * 2 > wanted:
        return 1
    return max(1, min(_cdiv(wanted, programs), n_chunks // _MIN_SEGMENT_CHUNKS))


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def bwd_block_d(Dg: int, block_n: int) -> int:
    return min(_pow2(Dg), _BWD_BLOCK_D.get(block_n, 1))


def update_block_d(dim: int, block_n: int) -> int:
    return max(1, min(_pow2(dim), _UPDATE_BLOCK_D * 16 // max(16, block_n)))


def _grouped_view(BC: Tensor) -> Tensor:
    """(batch, N, L) -> (batch, 1, N, L) view; grouped (batch, G, N, L) as is."""
    return BC.unsqueeze(1) if BC.dim() == 3 else BC


def _strides(x: Tensor | None, n: int) -> tuple[int, ...]:
    return tuple(x.stride()) if x is not None else (0,) * n


class _SelectiveScanTriton(torch.autograd.Function):
    """The fused forward kernel, and the backward kernel from the chunk checkpoints (module docstring)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, delta_bias, h0, softplus: bool, need_grad: bool):
        kernels = load_kernels(_KERNELS, u, delta, A, B, C, D, z, delta_bias, h0)
        batch, dim, L = u.shape
        N = A.shape[1]
        Bg, Cg = _grouped_view(B), _grouped_view(C)
        G = Bg.shape[1]
        Dg = dim // G
        block_d, block_n, block_t = fwd_blocks(Dg, N, L)
        n_chunks = -(-L // block_t)
        h0c = None if h0 is None else h0.to(torch.float32).contiguous()
        out = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
        last = torch.empty(batch, dim, N, device=u.device, dtype=torch.float32)
        ckpt = u.new_empty((batch, n_chunks, dim, N) if need_grad else (1,), dtype=torch.float32)
        programs = batch * G * _cdiv(Dg, block_d)
        n_seg = time_segments(programs, n_chunks, u.device)
        seg_chunks = _cdiv(n_chunks, n_seg)
        n_seg = _cdiv(n_chunks, seg_chunks)
        seg = u.new_empty((batch, n_seg, 2, dim, N), dtype=torch.float32) if n_seg > 1 else None
        for summary in (True, False) if n_seg > 1 else (False,):
            kernels.selective_scan_fwd_kernel[(batch * G, _cdiv(Dg, block_d), n_seg)](
                u, delta, A, Bg, Cg, D, z, delta_bias, h0c, out, last, ckpt, seg,
                dim, L, G, Dg, N, n_chunks, seg_chunks,
                *u.stride(), *delta.stride(), *A.stride(), *Bg.stride(), *Cg.stride(), *_strides(z, 3),
                HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=softplus,
                HAS_H0=h0 is not None, SAVE_CKPT=need_grad, SEGMENTED=n_seg > 1, SUMMARY=summary,
                BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=4,
            )  # fmt: skip
        ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, h0, ckpt)
        ctx.softplus = softplus
        ctx.set_materialize_grads(False)
        return out, last

    @staticmethod
    @once_differentiable
    def backward(ctx, dout, dlast):
        u, delta, A, B, C, D, z, delta_bias, h0, ckpt = ctx.saved_tensors
        kernels = load_kernels(_KERNELS, u)
        batch, dim, L = u.shape
        N = A.shape[1]
        Bg, Cg = _grouped_view(B), _grouped_view(C)
        G = Bg.shape[1]
        Dg = dim // G
        _, block_n, block_t = fwd_blocks(Dg, N, L)
        block_d = bwd_block_d(Dg, block_n)
        n_chunks = ckpt.shape[1]
        f32 = dict(device=u.device, dtype=torch.float32)
        du = torch.empty(batch, dim, L, device=u.device, dtype=u.dtype)
        ddelta = torch.empty(batch, dim, L, device=u.device, dtype=delta.dtype)
        dz = None if z is None else torch.empty(batch, dim, L, device=u.device, dtype=z.dtype)
        dA = torch.zeros(dim, N, **f32)
        dB = torch.zeros(batch, G, N, L, **f32)
        dC = torch.zeros(batch, G, N, L, **f32)
        dD = None if D is None else torch.zeros(dim, **f32)
        dbias = None if delta_bias is None else torch.zeros(dim, **f32)
        dh0 = torch.empty(batch, dim, N, **f32)
        dlast = None if dlast is None else dlast.to(torch.float32).contiguous()
        grid = (batch * G, _cdiv(Dg, block_d))
        kernels.selective_scan_bwd_kernel[grid](
            u, delta, A, Bg, Cg, D, z, delta_bias, ckpt, dout, dlast,
            du, ddelta, dA, dB, dC, dD, dz, dbias, dh0,
            dim, L, G, Dg, N, n_chunks,
            *u.stride(), *delta.stride(), *A.stride(), *Bg.stride(), *Cg.stride(), *_strides(z, 3),
            *_strides(dout, 3),
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None, SOFTPLUS=ctx.softplus,
            HAS_DOUT=dout is not None, HAS_DLAST=dlast is not None,
            BLOCK_D=block_d, BLOCK_N=block_n, BLOCK_T=block_t, num_warps=4,
        )  # fmt: skip
        if B.dim() == 3:
            dB, dC = dB.squeeze(1), dC.squeeze(1)
        return (
            du,
            ddelta,
            dA.to(A.dtype),
            dB.to(B.dtype),
            dC.to(C.dtype),
            None if dD is None else dD.to(D.dtype),
            dz,
            None if dbias is None else dbias.to(delta_bias.dtype),
            None if h0 is None else dh0.to(h0.dtype),
            None,
            None,
        )


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def selective_scan_triton(
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
    """Selective scan in Triton; arguments and returns as :func:`sslalm.ops.scan.selective_scan_ref`.

    u, delta, z (batch, dim, L); A (dim, N); B, C (batch, N, L) or (batch, G, N, L); D, delta_bias (dim,);
    initial_state (batch, dim, N). Any dtypes (computed in fp32), any strides. Differentiable w.r.t. every
    tensor: the backward is the Triton kernel described in the module docstring. Returns y (batch, dim, L) in
    u's dtype, and the last state (batch, dim, N) fp32 when ``return_last_state``.
    """
    batch, dim, length = u.shape
    G = 1 if B.dim() == 3 else B.shape[1]
    if dim % G:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {G}")
    if length == 0:
        from sslalm.ops.scan_ref import selective_scan_ref

        args = (D, z, delta_bias, delta_softplus, initial_state, return_last_state)
        return selective_scan_ref(u, delta, A, B, C, *args)
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
    y, last = _SelectiveScanTriton.apply(*tensors, bool(delta_softplus), need_grad)
    return (y, last) if return_last_state else y


def selective_state_update_triton(
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
    """One fused decode step; as :func:`sslalm.ops.scan.selective_state_update` (no autograd).

    state (batch, dim, N), normally fp32, updated in place whatever its strides; x, dt, z (batch, dim);
    A (dim, N); B, C (batch, N) or (batch, G, N); D, dt_bias (dim,). Returns y (batch, dim) in x's dtype.
    """
    kernels = load_kernels(_KERNELS, state, x, dt, A, B, C, D, z, dt_bias)
    batch, dim = x.shape
    N = A.shape[1]
    if B.dim() == 2:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    G = B.shape[1]
    if dim % G:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {G}")
    block_n = _pow2(N)
    block_d = update_block_d(dim, block_n)
    out = torch.empty(batch, dim, device=x.device, dtype=x.dtype)
    grid = (batch, _cdiv(dim, block_d))
    kernels.selective_state_update_kernel[grid](
        state, x, dt, A, B, C, D, z, dt_bias, out,
        dim, dim // G, N,
        *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(), *_strides(z, 2),
        HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
        BLOCK_D=block_d, BLOCK_N=block_n, num_warps=4,
    )  # fmt: skip
    return out
