"""Selective scan ``"numba"``: the CPU scan compiled to native code: forward, backward and decode step.

Why: the torch loops (``loop``, ``recurrent``) pay Python and dispatch overhead per time step and several
passes over memory per step; here one compiled loop does a whole step per channel block while the state stays
in cache. The work is split over (batch, group, block of channels) among threads, sequential in time.
Layout is time-major, (batch, L, dim) and (batch, L, G, N), so one step of a channel block is a contiguous
slice: the Mamba LM's activations already are (no copy), DASS's (batch, dim, L) inputs are copied once.
Inside a block the state is kept (N, width) so the innermost loops run over contiguous channels and LLVM
vectorises them.

The exponential. ``math.exp`` is a scalar libm call that LLVM cannot vectorise (numba's SVML path needs
Intel's runtime and a patched LLVM), and with one exp per state element per step it dominates. ``_exp`` is
Cephes' single-precision exp (range reduction by ln 2 in two parts, a degree-5 polynomial, the power of two
built in the exponent bits): plain float arithmetic, so it vectorises with the rest of the loop. Relative
error ~2 ulp; arguments below -87 give exactly 0 (the true value is below fp32's normal range), above 88 are
clamped (never reached by decays exp(delta*A) <= 1; only by the z gate's sigmoid, where it is harmless).

Training (:class:`_NumbaScan`, an autograd Function): the forward keeps the state only at every ``_CHUNK``-th
step (the "checkpoints"); the backward walks the chunks in reverse, recomputes each chunk's states and decays
from its checkpoint into a small buffer, and runs the reverse-time recurrence of the state gradient
g_t = C_t ds_t + a_{t+1} g_{t+1} with every gradient accumulated on the way (same math as
``sslalm.ops.scan_recurrent``, whose docstring derives it; here the D skip and the z gate are inside too).
Gradients summed over channels (B, C) are accumulated per channel block and summed afterwards, gradients
summed over batch and time (A, D) per batch item: no two threads ever write the same element.

Everything computes in fp32; fp16/bf16 inputs are upcast and y is returned in u's dtype. fp64 inputs are not
supported here (the dispatcher routes them to the torch methods). Kernels are compiled on first use and
cached on disk (``cache=True``); the cost of the first call is in the benchmark docs.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch

from sslalm.ops.scan_args import grouped, prepare

Tensor = torch.Tensor

_CHUNK = 32  # steps between the forward's saved states (the backward recomputes one chunk at a time)
_STATE_CACHE = 8192  # fp32 elements of one block's state: (N, width) stays in L1/L2 while it is stepped
_BWD_STATE = 2048  # ... in the backward, where (_CHUNK + 1) such states and decays are buffered
_JOBS_PER_THREAD = 4  # enough blocks to balance the threads
_PARALLEL_MIN_WORK = 1 << 18  # state updates (batch*L*dim*N) below which one thread does it all

_kernels = None


def _threads() -> int:
    return max(1, torch.get_num_threads())


def kernels() -> dict:
    """The compiled kernels (imports numba; raises ImportError with an install hint if it is missing)."""
    global _kernels
    try:
        import numba  # noqa: F401
    except ImportError as exc:
        raise ImportError("selective_scan method 'numba' needs numba: pip install numba") from exc
    if _kernels is None:
        from sslalm.ops import scan_numba_kernels as k

        _kernels = {"fwd": k.scan_fwd, "bwd": k.scan_bwd, "step": k.state_step}
    return _kernels


def _np(x: Tensor):
    return x.detach().numpy()


def _tm(x: Tensor) -> Tensor:
    """(batch, dim, L) -> contiguous fp32 (batch, L, dim); no copy for the LM's transposed activations.

    Channel-major inputs (DASS) are copied: reading them through strides instead kept the kernel from
    vectorising and made DASS training 1.8-2x slower than copying (docs/benchmarks.md)."""
    return x.float().transpose(1, 2).contiguous()


def _tm_bc(BC: Tensor) -> Tensor:
    """(batch, G, N, L) -> contiguous fp32 (batch, L, G, N)."""
    return BC.float().permute(0, 3, 1, 2).contiguous()


def _like(x: Tensor) -> Tensor:
    """An empty fp32 tensor with x's shape and strides (x dense)."""
    return torch.empty_strided(x.shape, x.stride())


_pools: dict[int, ThreadPoolExecutor] = {}


def _run(kernel, args: tuple, n_jobs: int, work: int) -> None:
    """Run jobs 0..n_jobs of ``kernel`` (compiled without the GIL) on up to ``torch.get_num_threads()``
    threads: the calling one plus a sleeping pool. Small work (< 2^18 state updates) stays on one thread.
    numba's own OpenMP ``prange`` is not used: its pool spins between calls and fought torch's OpenMP
    threads for the cores (2-thread decoding after a parallel prefill ran 16x slower)."""
    threads = min(_threads(), n_jobs)
    if threads <= 1 or work < _PARALLEL_MIN_WORK:
        kernel(*args, 0, n_jobs)
        return
    pool = _pools.get(threads)
    if pool is None:
        pool = _pools[threads] = ThreadPoolExecutor(threads - 1, thread_name_prefix="sslalm-scan")
    bounds = [n_jobs * i // threads for i in range(threads + 1)]
    futures = [pool.submit(kernel, *args, bounds[i], bounds[i + 1]) for i in range(1, threads)]
    kernel(*args, bounds[0], bounds[1])
    for f in futures:
        f.result()


def _parts(batch: int, groups: int, dg: int, n: int, budget: int) -> int:
    """Blocks of channels per group: enough jobs for the threads, each block's state within ``budget``."""
    threads = _threads()
    need = -(-_JOBS_PER_THREAD * threads // (batch * groups)) if threads > 1 else 1
    parts = max(1, min(dg, max(need, -(-dg * n // budget))))
    return -(-dg // -(-dg // parts))  # no empty block (the backward's per-block gradients are all written)


def _empty(ndim: int) -> Tensor:
    return torch.zeros((1,) * ndim)


class _NumbaScan(torch.autograd.Function):
    """y, last = scan(u, dl, A, B, C, D, z, h0) in the time-major layout; see the module docstring.

    u, dl, z: (batch, L, dim) fp32 contiguous; A (dim, N); B, C (batch, L, G, N); D (dim,) or None; h0 (batch,
    dim, N) or None. Returns y (batch, L, dim) with D and z applied, and the last state (batch, dim, N).
    """

    @staticmethod
    def forward(ctx, u, dl, A, B, C, D, z, h0):
        k = kernels()
        batch, length, dim = u.shape
        G, N = B.shape[2], A.shape[1]
        At = A.t().contiguous()
        h0t = torch.zeros(batch, N, dim) if h0 is None else h0.transpose(1, 2).contiguous()
        n_chunks = -(-length // _CHUNK)
        training = any(ctx.needs_input_grad)
        ck = torch.empty(batch, n_chunks, N, dim) if training else _empty(4)
        y = _like(u)
        hlast = torch.empty(batch, N, dim)
        Dv = _empty(1) if D is None else D
        zv = _empty(3) if z is None else z
        parts = _parts(batch, G, dim // G, N, _STATE_CACHE)
        args = (*map(_np, (u, dl, At, B, C, Dv, zv, h0t, y, hlast, ck)), D is not None, z is not None,
                _CHUNK if training else 0, parts)  # fmt: skip
        _run(k["fwd"], args, batch * G * parts, u.numel() * N)
        if training:
            ctx.save_for_backward(u, dl, At, B, C, D, z, ck)
            ctx.has_h0 = h0 is not None
        ctx.set_materialize_grads(False)
        return y, hlast.transpose(1, 2)

    @staticmethod
    def backward(ctx, dy, dlast):
        k = kernels()
        u, dl, At, B, C, D, z, ck = ctx.saved_tensors
        batch, length, dim = u.shape
        G, N = B.shape[2], At.shape[0]
        parts = _parts(batch, G, dim // G, N, _BWD_STATE)
        if dy is None:
            dy = torch.zeros_like(u)
        elif dy.stride() != u.stride():
            dy = _like(u).copy_(dy)
        dlast = torch.zeros(batch, N, dim) if dlast is None else dlast.float().transpose(1, 2).contiguous()
        du, ddl = _like(u), _like(u)
        dz = _like(u) if z is not None else _empty(3)
        dA = torch.empty(batch, N, dim)
        dB = torch.empty(parts, batch, length, G, N)
        dC = torch.empty(parts, batch, length, G, N)
        dD = torch.empty(batch, dim)
        dh0 = torch.empty(batch, N, dim)
        Dv = _empty(1) if D is None else D
        zv = _empty(3) if z is None else z
        args = (u, dl, At, B, C, Dv, zv, ck, dy, dlast, du, ddl, dA, dB, dC, dD, dz, dh0)
        args = (*map(_np, args), D is not None, z is not None, _CHUNK, parts)
        _run(k["bwd"], args, batch * G * parts, u.numel() * N)
        need = ctx.needs_input_grad
        return (
            du if need[0] else None,
            ddl if need[1] else None,
            dA.sum(0).t() if need[2] else None,
            dB.sum(0) if need[3] else None,
            dC.sum(0) if need[4] else None,
            dD.sum(0) if need[5] else None,
            dz if need[6] else None,
            dh0.transpose(1, 2) if need[7] and ctx.has_h0 else None,
        )


def selective_scan_numba(
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
    """Compiled CPU scan (forward, and backward through an autograd Function). Same arguments and result as
    :func:`sslalm.ops.scan_ref.selective_scan_ref`; differentiable w.r.t. every tensor input.

    The delta bias and softplus stay plain autograd ops around the kernel; delta*u, the state recurrence, the
    D skip and the z gate are inside it. CPU tensors only; fp64 is not supported (use ``recurrent``).
    """
    if u.device.type != "cpu":
        raise ValueError(f"selective_scan method 'numba' runs on CPU tensors, got {u.device}")
    if u.dtype == torch.float64:
        raise TypeError("selective_scan method 'numba' computes in fp32; use 'recurrent' or 'ref' for fp64")
    dtype = u.dtype
    batch, dim, length = u.shape
    _, df, Af = prepare(u, delta, A, delta_bias, delta_softplus)
    Bg, Cg = grouped(B), grouped(C)
    if dim % Bg.shape[1]:
        raise ValueError(f"dim={dim} is not divisible by the number of B/C groups {Bg.shape[1]}")
    N = Af.shape[1]
    if length == 0:
        y = u.new_zeros(batch, dim, 0)
        h = torch.zeros(batch, dim, N) if initial_state is None else initial_state.float().clone()
        return (y, h) if return_last_state else y
    h0 = None if initial_state is None else initial_state.float()
    Dv = None if D is None else D.float()
    zt = None if z is None else _tm(z)
    y, last = _NumbaScan.apply(_tm(u), _tm(df), Af.contiguous(), _tm_bc(Bg), _tm_bc(Cg), Dv, zt, h0)
    y = y.transpose(1, 2).to(dtype)
    return (y, last) if return_last_state else y


def selective_state_update_numba(
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
    """One decode step, compiled: same arguments and result as
    :func:`sslalm.ops.state_update.selective_state_update` (state (batch, dim, N) fp32, updated in place).
    Inference only (no autograd)."""
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise TypeError("selective_state_update 'numba' needs a contiguous fp32 CPU state")
    k = kernels()
    dtype = x.dtype
    Bg = B.float().unsqueeze(1) if B.dim() == 2 else B.float()
    Cg = C.float().unsqueeze(1) if C.dim() == 2 else C.float()
    args = (
        state,
        x.float().contiguous(),
        dt.float().contiguous(),
        A.float().contiguous(),
        Bg.contiguous(),
        Cg.contiguous(),
        _empty(1) if D is None else D.float().contiguous(),
        _empty(2) if z is None else z.float().contiguous(),
        _empty(1) if dt_bias is None else dt_bias.float().contiguous(),
    )
    with torch.no_grad():
        y = k["step"](*map(_np, args), D is not None, z is not None, dt_bias is not None, bool(dt_softplus))
    return torch.from_numpy(y).to(dtype)


def numba_available() -> bool:
    """True when numba imports (and ``SSLALM_DISABLE_NUMBA`` is not set)."""
    if os.environ.get("SSLALM_DISABLE_NUMBA"):
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def warm_up() -> float:
    """Compile the training kernels (forward and backward) now, or load them from numba's disk cache, with
    a tiny scan; returns the seconds it took.

    Why: the first scan of a fresh install compiles them (about 10 s on a 2-core CPU, 0.6 s to load them
    from the cache afterwards). A caller that times its training (``sslalm demo``) warms up first and
    reports the compile apart from the training it pays once per install."""
    import time

    start = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    batch, dim, length, n = 1, 4, 3, 2
    u, dl, z = (torch.randn(batch, dim, length, generator=gen, requires_grad=True) for _ in range(3))
    A = -torch.rand(dim, n, generator=gen).requires_grad_()
    B, C = (torch.randn(batch, n, length, generator=gen, requires_grad=True) for _ in range(2))
    D = torch.randn(dim, generator=gen, requires_grad=True)
    selective_scan_numba(u, dl, A, B, C, D, z).sum().backward()
    return time.perf_counter() - start
