"""The compiled CPU kernels (``sslalm.ops.scan_numba``): their exponential, extreme inputs, thread counts,
both memory layouts, and the on-disk cache that spares a new process the compile."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from sslalm.ops import selective_scan_recurrent, selective_scan_ref
from sslalm.ops.scan_numba import selective_scan_numba, selective_state_update_numba
from sslalm.ops.state_update import selective_state_update_torch

numba = pytest.importorskip("numba")


def test_vectorisable_exp_matches_libm():
    from sslalm.ops.scan_numba_kernels import _exp

    @numba.njit
    def apply(x):
        out = np.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = _exp(x[i])
        return out

    x = np.concatenate([np.linspace(-87, 88, 200001), -np.logspace(-8, 1, 1000)]).astype(np.float32)
    want = np.exp(x.astype(np.float64))
    rel = np.abs(apply(x).astype(np.float64) - want) / want
    assert rel.max() < 5e-7  # a few ulp of fp32
    assert apply(np.array([-87.5, -1e4, -np.inf], np.float32)).tolist() == [0.0, 0.0, 0.0]  # underflow: 0
    assert apply(np.array([0.0], np.float32))[0] == 1.0


def _case(batch=2, dim=8, length=45, n=16, groups=None, seed=0, delta_scale=1.0, a_scale=1.0):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    u = torch.randn(batch, dim, length, generator=g)
    delta = torch.rand(batch, dim, length, generator=g) * delta_scale
    A = -(torch.rand(dim, n, generator=g) + 0.01) * a_scale
    B, C = torch.randn(bc, generator=g), torch.randn(bc, generator=g)
    h0 = torch.randn(batch, dim, n, generator=g)
    return u, delta, A, B, C, h0


def test_extreme_decays_match_fp64():
    """Decays that underflow (delta*A down to -1e6), and decays near 1 (delta*A ~ -1e-6) over 3000 steps,
    where any fp32 recurrence drifts: the kernel stays as close to fp64 as the fp32 reference does."""
    for delta_scale, a_scale, length in ((1e3, 1e3, 50), (1e-3, 1e-3, 3000)):
        *args, h0 = _case(length=length, delta_scale=delta_scale, a_scale=a_scale, n=4)
        args64 = [t.double() for t in args]  # ``recurrent`` computes fp64 inputs in fp64
        y64, h64 = selective_scan_recurrent(*args64, initial_state=h0.double(), return_last_state=True)
        errors = []
        for fn in (selective_scan_numba, selective_scan_ref):
            y, h = fn(*args, initial_state=h0, return_last_state=True)
            assert torch.isfinite(y).all()
            ey = (y.double() - y64).abs().max() / y64.abs().max()
            errors.append(max(ey, (h.double() - h64).abs().max() / h64.abs().max()))
        assert errors[0] <= 2 * errors[1] + 1e-6


@pytest.mark.parametrize("groups,n,dim,length", [(None, 16, 64, 300), (4, 1, 256, 1100)])
def test_thread_count_changes_nothing_but_rounding(groups, n, dim, length):
    """With 2 threads the jobs (more, smaller channel blocks: work >= 2^18 state updates) are shared by two
    threads: y and the state are computed per channel either way (bitwise equal); B/C gradients are summed
    over blocks in another order (equal to rounding)."""
    args = _case(batch=1, dim=dim, length=length, n=n, groups=groups)
    before = torch.get_num_threads()
    outs = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            ins = [t.clone().requires_grad_() for t in args]
            y, h = selective_scan_numba(*ins[:5], initial_state=ins[5], return_last_state=True)
            grads = torch.autograd.grad((y * y).sum() + h.sum(), ins)
            outs.append((y.detach(), h.detach(), grads))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(outs[0][0], outs[1][0]) and torch.equal(outs[0][1], outs[1][1])
    for a, b in zip(outs[0][2], outs[1][2], strict=True):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())


def test_both_layouts_give_the_same_result():
    """Time-major memory (the LM's, used as is) and channel-major memory (DASS's, copied) agree exactly."""
    u, delta, A, B, C, h0 = _case(groups=2, n=4)
    tm = [t.transpose(1, 2).contiguous().transpose(1, 2) for t in (u, delta)]
    y1, h1 = selective_scan_numba(u, delta, A, B, C, initial_state=h0, return_last_state=True)
    y2, h2 = selective_scan_numba(*tm, A, B, C, initial_state=h0, return_last_state=True)
    assert torch.equal(y1, y2) and torch.equal(h1, h2)
    assert y1.transpose(1, 2).is_contiguous() and y2.transpose(1, 2).is_contiguous()  # time-major results


def test_decode_step_grouped_bf16():
    g = torch.Generator().manual_seed(3)
    state = torch.randn(3, 8, 1, generator=g)
    x, dt, z = (torch.randn(3, 8, generator=g).bfloat16() for _ in range(3))
    A, B, C = (
        -torch.rand(8, 1, generator=g),
        torch.randn(3, 4, 1, generator=g),
        torch.randn(3, 4, 1, generator=g),
    )
    D, bias = torch.randn(8, generator=g), torch.randn(8, generator=g)
    s1, s2 = state.clone(), state.clone()
    y1 = selective_state_update_numba(s1, x, dt, A, B, C, D, z, bias, True)
    y2 = selective_state_update_torch(s2, x, dt, A, B, C, D, z, bias, True)
    assert y1.dtype == torch.bfloat16
    assert torch.allclose(s1, s2, atol=1e-5) and torch.allclose(y1.float(), y2.float(), atol=1e-2)
    with pytest.raises(TypeError, match="fp32"):
        selective_state_update_numba(state.double(), x, dt, A, B, C)


def test_bad_inputs():
    u, delta, A, B, C, _ = _case()
    with pytest.raises(TypeError, match="fp64"):
        selective_scan_numba(u.double(), delta, A, B, C)
    with pytest.raises(ValueError, match="divisible"):
        selective_scan_numba(u, delta, A, torch.randn(2, 3, 16, 45), torch.randn(2, 3, 16, 45))


_CACHE_PROBE = """
import json, torch
from sslalm.ops import scan_numba_kernels as k
from sslalm.ops.scan_numba import selective_scan_numba
u = torch.randn(1, 4, 5, requires_grad=True)
bc = torch.randn(1, 2, 5)
selective_scan_numba(u, torch.rand(1, 4, 5), -torch.rand(4, 2), bc, bc).sum().backward()
stats = {f: getattr(k, f).stats for f in ("scan_fwd", "scan_bwd")}
print(json.dumps({f: [sum(s.cache_hits.values()), sum(s.cache_misses.values())] for f, s in stats.items()}))
"""


def test_kernels_are_cached_on_disk():
    """A new process loads the machine code from numba's on-disk cache instead of compiling: the first run
    here may compile (if nothing in this checkout did yet), the second must only load."""
    runs = [
        subprocess.run([sys.executable, "-c", _CACHE_PROBE], capture_output=True, text=True, check=True)
        for _ in range(2)
    ]
    second = json.loads(runs[1].stdout.strip().splitlines()[-1])
    assert all(hits > 0 and misses == 0 for hits, misses in second.values()), second


def test_torch_thread_count_is_left_alone():
    """Starting numba's OpenMP pool resets the process-wide OpenMP thread count; the kernels must not leave
    torch running with more threads than it was given (that made 1-thread decoding several times slower)."""
    before = torch.get_num_threads()
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            args = _case(batch=2, dim=512, length=300, n=16)  # large enough for the parallel kernel
            selective_scan_numba(*args[:5], initial_state=args[5])
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)


_WARM_UP_PROBE = """
import json, torch
from sslalm.ops import scan_numba_kernels as k
from sslalm.ops.scan_numba import selective_scan_numba, warm_up
sigs = lambda: {f: len(getattr(k, f).signatures) for f in ("scan_fwd", "scan_bwd")}
rng = torch.get_rng_state()
seconds = warm_up()
out = {"seconds": seconds, "rng_kept": torch.equal(torch.get_rng_state(), rng), "warm": sigs()}
u = torch.randn(2, 8, 40, requires_grad=True)  # channel-major, as DASS passes it
lm = selective_scan_numba(  # the LM: D, z gate, delta bias and softplus, B/C per example
    u, torch.rand(2, 8, 40), -torch.rand(8, 4), torch.randn(2, 4, 40), torch.randn(2, 4, 40),
    torch.randn(8), torch.randn(2, 8, 40), torch.randn(8), True,
)
dass = selective_scan_numba(  # DASS: B/C per group of channels, no gate
    u, torch.rand(2, 8, 40), -torch.rand(8, 1), torch.randn(2, 2, 1, 40), torch.randn(2, 2, 1, 40),
    torch.randn(8), None, torch.randn(8), True,
)
(lm.sum() + dass.sum()).backward()
out["after_training"] = sigs()
print(json.dumps(out))
"""


def test_warm_up_compiles_what_training_runs():
    """``warm_up`` (called before the demo's timed training) readies, in a fresh process, the very kernels
    that the LM's and DASS's training scans then run (neither adds a compiled signature afterwards), and
    leaves the global RNG as it was, so the training that follows draws what it drew without it."""
    run = subprocess.run([sys.executable, "-c", _WARM_UP_PROBE], capture_output=True, text=True, check=True)
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["seconds"] >= 0.0 and out["rng_kept"]
    assert out["warm"] == {"scan_fwd": 1, "scan_bwd": 1}, out
    assert out["after_training"] == out["warm"], out
