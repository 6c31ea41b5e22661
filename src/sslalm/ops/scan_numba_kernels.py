"""numba kernels of the ``"numba"`` selective scan (imported only by ``sslalm.ops.scan_numba``, lazily).

Module-level ``@njit(cache=True)`` functions, so numba caches their machine code on disk (next to this file in
``__pycache__``, or in the user cache directory when that is read-only) and a new process loads it instead of
compiling. The layout, the vectorisable exponential and the backward are explained in ``scan_numba``.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def _bits_to_f32(typingctx, i):
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_f32 = np.float32
_LOG2E, _LN2_HI, _LN2_LO = _f32(1.4426950408889634), _f32(0.693359375), _f32(-2.12194440e-4)
_P0, _P1, _P2 = _f32(1.9875691500e-4), _f32(1.3981999507e-3), _f32(8.3334519073e-3)
_P3, _P4, _P5 = _f32(4.1665795894e-2), _f32(1.6666665459e-1), _f32(5.0000001201e-1)
_LO, _HI, _ZERO, _ONE, _HALF = _f32(-87.0), _f32(88.0), _f32(0.0), _f32(1.0), _f32(0.5)
_BIAS, _SHIFT = np.int32(127), np.int32(23)


@njit(inline="always", fastmath=True)
def _exp(x):
    xc = min(max(x, _LO), _HI)
    k = np.floor(xc * _LOG2E + _HALF)
    r = xc - k * _LN2_HI - k * _LN2_LO
    p = ((((_P0 * r + _P1) * r + _P2) * r + _P3) * r + _P4) * r + _P5
    e = (p * r * r + r + _ONE) * _bits_to_f32((np.int32(k) + _BIAS) << _SHIFT)
    return e if x >= _LO else _ZERO


@njit(inline="always", fastmath=True)
def _sigmoid(x):
    return _ONE / (_ONE + _exp(-x))


@njit(inline="always")
def _block(job, G, parts, Dg):
    """(batch item, group, first channel, end channel) of job number ``job``."""
    b = job // (G * parts)
    g = (job // parts) % G
    per = (Dg + parts - 1) // parts
    d0 = g * Dg + (job % parts) * per
    return b, g, d0, min(g * Dg + Dg, d0 + per)


@njit(fastmath=True)
def _scan_fwd_job(job, u, dl, At, B, C, Dv, z, h0, y, hlast, ck, has_D, has_z, chunk, parts):
    """Job ``job`` of :func:`scan_fwd`."""
    batch, length, dim = u.shape
    N = At.shape[0]
    G = B.shape[2]
    Dg = dim // G
    b, g, d0, d1 = _block(job, G, parts, Dg)
    if d0 >= d1:
        return
    w = d1 - d0
    h = h0[b, :, d0:d1].copy()  # (N, w)
    x = np.empty(w, np.float32)
    acc = np.empty(w, np.float32)
    for t in range(length):
        if chunk > 0 and t % chunk == 0:
            ck[b, t // chunk, :, d0:d1] = h
        dlt = dl[b, t, d0:d1]
        ut = u[b, t, d0:d1]
        for i in range(w):
            x[i] = dlt[i] * ut[i]
            acc[i] = _ZERO
        for n in range(N):
            bn = B[b, t, g, n]
            cn = C[b, t, g, n]
            an = At[n, d0:d1]
            hn = h[n]
            for i in range(w):
                hv = _exp(dlt[i] * an[i]) * hn[i] + x[i] * bn
                hn[i] = hv
                acc[i] += hv * cn
        yt = y[b, t, d0:d1]
        if has_D:
            dv = Dv[d0:d1]
            for i in range(w):
                acc[i] += dv[i] * ut[i]
        if has_z:
            zt = z[b, t, d0:d1]
            for i in range(w):
                yt[i] = acc[i] * zt[i] * _sigmoid(zt[i])
        else:
            for i in range(w):
                yt[i] = acc[i]
    hlast[b, :, d0:d1] = h


@njit(fastmath=True, cache=True, nogil=True)
def scan_fwd(u, dl, At, B, C, Dv, z, h0, y, hlast, ck, has_D, has_z, chunk, parts, j0, j1):
    """Jobs j0..j1 of the forward (all jobs: batch * G * parts), without the GIL so that threads can share
    them. u, dl, z, y (batch, L, dim); At (N, dim); B, C (batch, L, G, N); Dv (dim,); h0, hlast (batch, N,
    dim); ck (batch, n_chunks, N, dim) receives the state before every chunk of ``chunk`` steps
    (when chunk > 0)."""
    for job in range(j0, j1):
        _scan_fwd_job(job, u, dl, At, B, C, Dv, z, h0, y, hlast, ck, has_D, has_z, chunk, parts)


@njit(fastmath=True)
def _scan_bwd_job(job, u, dl, At, B, C, Dv, z, ck, dy, dlast, du, ddl, dA, dB, dC, dD, dz, dh0, has_D, has_z,
             chunk, parts):  # fmt: skip
    """Job ``job`` of :func:`scan_bwd`."""
    batch, length, dim = u.shape
    N = At.shape[0]
    G = B.shape[2]
    Dg = dim // G
    n_chunks = (length + chunk - 1) // chunk
    b, g, d0, d1 = _block(job, G, parts, Dg)
    if d0 >= d1:
        return
    p = job % parts
    w = d1 - d0
    gs = dlast[b, :, d0:d1].copy()  # (N, w): dL/dh_t, carried backwards as a_{t+1} g_{t+1}
    hbuf = np.empty((chunk + 1, N, w), np.float32)  # states of one chunk (hbuf[0] = before it)
    abuf = np.empty((chunk, N, w), np.float32)  # decays of one chunk
    ga = dA[b, :, d0:d1]
    ga[:] = _ZERO
    gD = np.zeros(w, np.float32)
    ds = np.empty(w, np.float32)
    x = np.empty(w, np.float32)
    sB = np.empty(w, np.float32)
    sdl = np.empty(w, np.float32)
    for c in range(n_chunks - 1, -1, -1):
        t0 = c * chunk
        t1 = min(length, t0 + chunk)
        hbuf[0] = ck[b, c, :, d0:d1]
        for t in range(t0, t1):  # recompute the chunk's decays and states
            j = t - t0
            dlt = dl[b, t, d0:d1]
            ut = u[b, t, d0:d1]
            for i in range(w):
                x[i] = dlt[i] * ut[i]
            for n in range(N):
                bn = B[b, t, g, n]
                an = At[n, d0:d1]
                for i in range(w):
                    a = _exp(dlt[i] * an[i])
                    abuf[j, n, i] = a
                    hbuf[j + 1, n, i] = a * hbuf[j, n, i] + x[i] * bn
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            dlt = dl[b, t, d0:d1]
            ut = u[b, t, d0:d1]
            dyt = dy[b, t, d0:d1]
            if has_z:  # y = s * silu(z), s = C.h + D u
                zt = z[b, t, d0:d1]
                dzt = dz[b, t, d0:d1]
                for i in range(w):
                    sB[i] = Dv[d0 + i] * ut[i] if has_D else _ZERO  # s = C.h + D u, in sB for now
                for n in range(N):
                    cn = C[b, t, g, n]
                    hn = hbuf[j + 1, n]
                    for i in range(w):
                        sB[i] += cn * hn[i]
                for i in range(w):
                    sg = _sigmoid(zt[i])
                    ds[i] = dyt[i] * zt[i] * sg
                    dzt[i] = dyt[i] * sB[i] * sg * (_ONE + zt[i] * (_ONE - sg))
            else:
                for i in range(w):
                    ds[i] = dyt[i]
            for i in range(w):
                x[i] = dlt[i] * ut[i]
                sB[i] = _ZERO
                sdl[i] = _ZERO
            for n in range(N):
                bn = B[b, t, g, n]
                cn = C[b, t, g, n]
                an = At[n, d0:d1]
                gn = gs[n]
                hn = hbuf[j + 1, n]
                hp = hbuf[j, n]
                av = abuf[j, n]
                gan = ga[n]
                accC = _ZERO
                accB = _ZERO
                for i in range(w):
                    accC += ds[i] * hn[i]
                    gv = gn[i] + cn * ds[i]  # g_t
                    accB += x[i] * gv
                    sB[i] += bn * gv
                    wv = gv * av[i] * hp[i]  # dL/d(dl_t A)
                    sdl[i] += wv * an[i]
                    gan[i] += wv * dlt[i]
                    gn[i] = gv * av[i]  # a_t g_t, carried to step t - 1
                dC[p, b, t, g, n] = accC
                dB[p, b, t, g, n] = accB
            dut = du[b, t, d0:d1]
            ddlt = ddl[b, t, d0:d1]
            for i in range(w):
                dut[i] = dlt[i] * sB[i]
                ddlt[i] = ut[i] * sB[i] + sdl[i]
            if has_D:
                for i in range(w):
                    dut[i] += Dv[d0 + i] * ds[i]
                    gD[i] += ds[i] * ut[i]
    dh0[b, :, d0:d1] = gs
    dD[b, d0:d1] = gD


@njit(fastmath=True, cache=True, nogil=True)
def scan_bwd(u, dl, At, B, C, Dv, z, ck, dy, dlast, du, ddl, dA, dB, dC, dD, dz, dh0, has_D, has_z,
             chunk, parts, j0, j1):  # fmt: skip
    """Jobs j0..j1 of the gradients of scan_fwd. dy (batch, L, dim); dlast (batch, N, dim). Outputs: du, ddl,
    dz (batch, L, dim); dA (batch, N, dim) and dD (batch, dim) per batch item; dB, dC (parts, batch, L, G, N)
    per block of channels; dh0 (batch, N, dim). The caller sums the per-item and per-block partials."""
    for job in range(j0, j1):
        _scan_bwd_job(
            job,
            u,
            dl,
            At,
            B,
            C,
            Dv,
            z,
            ck,
            dy,
            dlast,
            du,
            ddl,
            dA,
            dB,
            dC,
            dD,
            dz,
            dh0,
            has_D,
            has_z,
            chunk,
            parts,
        )


@njit(fastmath=True, cache=True)
def state_step(state, x, dt, A, B, C, Dv, z, dt_bias, has_D, has_z, has_bias, softplus):
    """One decode step in place: state (batch, dim, N); x, dt, z (batch, dim); A (dim, N); B, C (batch,
    G, N); returns y (batch, dim)."""
    batch, dim, N = state.shape
    G = B.shape[1]
    Dg = dim // G
    y = np.empty((batch, dim), np.float32)
    for job in range(batch * G):  # serial: one token's work is too small to share
        b = job // G
        g = job % G
        for d in range(g * Dg, g * Dg + Dg):
            delta = dt[b, d]
            if has_bias:
                delta += dt_bias[d]
            if softplus:
                delta = delta if delta > np.float32(20.0) else np.float32(math.log1p(math.exp(delta)))
            xv = delta * x[b, d]
            acc = _ZERO
            for n in range(N):
                hv = _exp(delta * A[d, n]) * state[b, d, n] + xv * B[b, g, n]
                state[b, d, n] = hv
                acc += hv * C[b, g, n]
            if has_D:
                acc += Dv[d] * x[b, d]
            if has_z:
                acc *= z[b, d] * _sigmoid(z[b, d])
            y[b, d] = acc
    return y
