"""The kernel dispatcher: its whole decision table, fallbacks when a backend is missing, and the wrappers of
the CUDA-only packages (exercised here with stand-in modules, since they cannot be installed on a CPU)."""

from __future__ import annotations

import itertools
import sys
import types

import pytest
import torch

from sslalm.ops import causal_conv1d, causal_conv1d_update, dispatch, selective_scan, selective_scan_ref
from sslalm.ops.conv1d import causal_conv1d_ref
from sslalm.ops.dispatch import (
    BACKENDS,
    SCAN_METHODS,
    available_backends,
    backend_available,
    pick_conv_method,
    pick_scan_method,
    pick_step_method,
    torch_scan_method,
)
from sslalm.ops.state_update import selective_state_update, selective_state_update_torch

DEVICES = ("cpu", "cuda", "mps")
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
SHAPES = (
    (1, 5120, 256, 16),
    (32, 128, 60, 16),
    (1, 8, 1, 16),
    (4, 384, 8192, 1),
    (1, 384, 8192, 1),
    (2, 8, 64, 1),
)
BACKEND_SETS = [frozenset(c) for r in range(len(BACKENDS) + 1) for c in itertools.combinations(BACKENDS, r)]


@pytest.fixture(autouse=True)
def _fresh_backend_probe():
    backend_available.cache_clear()
    yield
    backend_available.cache_clear()


def _expected(device, dtype, grad, shape, backends, initial_state):
    """The rule as the dispatch docstring states it."""
    if dtype != torch.float64 and device == "cuda":
        if "mamba_ssm" in backends and not initial_state:
            return "mamba_ssm"
        return "triton" if "triton" in backends else "chunked"
    if dtype != torch.float64 and device == "cpu" and "numba" in backends and shape[2] > 1:
        return "numba"
    if dtype == torch.float64 and grad:
        return "recurrent"
    return torch_scan_method(grad, shape)


def test_scan_table():
    rows = 0
    for device, dtype, grad, shape, backends, init in itertools.product(
        DEVICES, DTYPES, (False, True), SHAPES, BACKEND_SETS, (False, True)
    ):
        got = pick_scan_method(device, dtype, grad, shape, backends, init)
        assert got == _expected(device, dtype, grad, shape, backends, init), (
            device,
            dtype,
            grad,
            shape,
            backends,
        )
        assert got in SCAN_METHODS
        assert got not in BACKENDS or got in backends  # never a backend that is missing
        assert not (grad and got == "loop")  # the loop is inference-only
        assert not (init and got == "mamba_ssm")  # mamba_ssm's scan takes no initial state
        assert not (dtype == torch.float64 and got in BACKENDS)  # compiled kernels are fp32 inside
        assert not (device != "cpu" and got == "numba")
        rows += 1
    assert rows == len(DEVICES) * len(DTYPES) * 2 * len(SHAPES) * len(BACKEND_SETS) * 2


def test_step_and_conv_tables():
    for device, dtype, backends in itertools.product(DEVICES, DTYPES, BACKEND_SETS):
        step = pick_step_method(device, dtype, backends)
        conv = pick_conv_method(device, dtype, backends)
        if dtype != torch.float32:  # the state is fp32 for every compiled step
            assert step == "torch"
        elif device == "cuda":
            assert step == (
                "mamba_ssm" if "mamba_ssm" in backends else "triton" if "triton" in backends else "torch"
            )
        else:
            assert step == "torch"  # the compiled CPU step is slower than torch's (docs/benchmarks.md)
        if device == "cuda" and dtype != torch.float64:
            want = (
                "causal_conv1d"
                if "causal_conv1d" in backends
                else "triton"
                if "triton" in backends
                else "torch"
            )
            assert conv == want
        else:
            assert conv == "torch"


def _inputs(seed=0, batch=2, dim=8, length=13, n=4, groups=None):
    g = torch.Generator().manual_seed(seed)
    bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    u, delta, z = (torch.randn(batch, dim, length, generator=g) for _ in range(3))
    A = -torch.rand(dim, n, generator=g) - 0.1
    B, C = torch.randn(bc, generator=g), torch.randn(bc, generator=g)
    kw = dict(
        D=torch.randn(dim, generator=g), z=z, delta_bias=torch.randn(dim, generator=g), delta_softplus=True
    )
    return (u, delta, A, B, C), kw


def test_cpu_auto_uses_numba_when_available():
    assert "numba" in available_backends("cpu")
    u = torch.zeros(1, 8, 5)
    from sslalm.ops.scan import pick_method

    assert pick_method(u, torch.zeros(8, 16), grad=True) == "numba"
    assert pick_method(u.double(), torch.zeros(8, 16), grad=True) == "recurrent"


def test_missing_numba_falls_back_cleanly(monkeypatch):
    """With numba not importable, auto takes the torch methods and an explicit 'numba' says how to install."""
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` raise ImportError
    assert "numba" not in available_backends("cpu")
    args, kw = _inputs()
    want, want_h = selective_scan_ref(*args, **kw, return_last_state=True)
    for grad in (False, True):
        ins = [t.clone().requires_grad_(grad) for t in args]
        y, h = selective_scan(*ins, **kw, return_last_state=True)
        assert torch.allclose(y, want, atol=1e-5) and torch.allclose(h, want_h, atol=1e-5)
        if grad:
            y.sum().backward()
    state = torch.zeros(2, 8, 4)
    u, delta, A, B, C = args
    selective_state_update(state, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0])  # auto: torch
    with pytest.raises(ImportError, match="pip install numba"):
        selective_scan(*args, method="numba")
    with pytest.raises(ImportError, match="pip install numba"):
        selective_state_update(state, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0], method="numba")


def test_environment_switch_disables_a_backend(monkeypatch):
    monkeypatch.setenv("SSLALM_DISABLE_NUMBA", "1")
    assert "numba" not in available_backends("cpu")
    with pytest.raises(ValueError, match="unknown backend"):
        backend_available("cuda-magic")


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    args, kw = _inputs()
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan(*args, **kw, method="triton")
    state = torch.zeros(2, 8, 4)
    u, delta, A, B, C = args
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_state_update(state, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0], method="triton")


def _fake_module(monkeypatch, name: str, **attrs) -> None:
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        sub = ".".join(parts[:i])
        if sub not in sys.modules or not isinstance(sys.modules[sub], types.ModuleType):
            monkeypatch.setitem(sys.modules, sub, types.ModuleType(sub))
    for key, value in attrs.items():
        monkeypatch.setattr(sys.modules[name], key, value, raising=False)


def test_mamba_ssm_wrappers_pass_our_arguments_through(monkeypatch):
    """Stand-ins with the real packages' signatures, computing with our twins: the wrappers must hand over
    every argument in the right place, and the dispatcher must offer them on CUDA once they import."""
    calls = []

    def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                          return_last_state=False):  # fmt: skip
        calls.append("scan")
        assert B.stride(-1) == 1 and C.stride(-1) == 1 and A.dtype == torch.float32
        return selective_scan_ref(
            u, delta, A, B, C, D, z, delta_bias, delta_softplus, None, return_last_state
        )

    def state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
        calls.append("step")
        return selective_state_update_torch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)

    def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None, return_final_states=False,
                         activation=None):  # fmt: skip
        calls.append("conv")
        return causal_conv1d_ref(x, weight, bias, initial_states, activation)

    def conv_update(x, conv_state, weight, bias=None, activation=None):
        calls.append("conv_step")
        from sslalm.ops.conv1d import causal_conv1d_update_torch

        return causal_conv1d_update_torch(x, conv_state, weight, bias, activation)

    _fake_module(monkeypatch, "mamba_ssm.ops.selective_scan_interface", selective_scan_fn=selective_scan_fn)
    _fake_module(
        monkeypatch, "mamba_ssm.ops.triton.selective_state_update", selective_state_update=state_update
    )
    _fake_module(
        monkeypatch, "causal_conv1d", causal_conv1d_fn=causal_conv1d_fn, causal_conv1d_update=conv_update
    )
    assert {"mamba_ssm", "causal_conv1d"} <= available_backends("cuda")
    assert (
        pick_scan_method("cuda", torch.bfloat16, True, (1, 8, 13, 4), available_backends("cuda"))
        == "mamba_ssm"
    )

    for groups in (None, 2):
        args, kw = _inputs(groups=groups)
        y, h = selective_scan(*args, **kw, return_last_state=True, method="mamba_ssm")
        y_ref, h_ref = selective_scan_ref(*args, **kw, return_last_state=True)
        assert torch.allclose(y, y_ref) and torch.allclose(h, h_ref)
    with pytest.raises(ValueError, match="initial_state"):
        selective_scan(*args, **kw, initial_state=h_ref, method="mamba_ssm")
    u, delta, A, B, C = args
    s1, s2 = torch.zeros(2, 8, 4), torch.zeros(2, 8, 4)
    step_args = (
        u[..., 0],
        delta[..., 0],
        A,
        B[..., 0],
        C[..., 0],
        kw["D"],
        kw["z"][..., 0],
        kw["delta_bias"],
        True,
    )
    a = selective_state_update(s1, *step_args, method="mamba_ssm")
    assert torch.equal(a, selective_state_update_torch(s2, *step_args)) and torch.equal(s1, s2)
    w, b = torch.randn(8, 4), torch.randn(8)
    hist = torch.randn(2, 8, 3)
    got = causal_conv1d(u, w, b, hist, "silu", method="causal_conv1d")
    assert torch.allclose(got, causal_conv1d_ref(u, w, b, hist, "silu"), atol=1e-6)
    cs1, cs2 = torch.randn(2, 8, 4), None
    cs2 = cs1.clone()
    one = causal_conv1d_update(u[..., 0], cs1, w, b, "silu", method="causal_conv1d")
    assert torch.equal(one, causal_conv1d_update(u[..., 0], cs2, w, b, "silu", method="torch"))
    assert calls == ["scan", "scan", "step", "conv", "conv_step"]


def test_cuda_packages_report_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)
    monkeypatch.setitem(sys.modules, "causal_conv1d", None)
    assert available_backends("cuda") <= {"triton"}
    args, kw = _inputs()
    with pytest.raises(ImportError, match="pip install mamba-ssm"):
        selective_scan(*args, **kw, method="mamba_ssm")
    with pytest.raises(ImportError, match="causal-conv1d"):
        causal_conv1d(args[0], torch.randn(8, 4), method="causal_conv1d")


def test_other_devices_probe_nothing():
    assert available_backends("mps") == frozenset()
    assert dispatch.pick_scan_method("mps", torch.float32, False, (1, 5120, 256, 16), frozenset()) == "loop"


_TRITON_PROBE = """
import torch
from sslalm.ops import causal_conv1d, selective_scan, selective_scan_ref, selective_state_update
from sslalm.ops.conv1d import causal_conv1d_ref
g = torch.Generator().manual_seed(0)
u, delta = torch.randn(2, 8, 13, generator=g), torch.rand(2, 8, 13, generator=g)
A = -torch.rand(8, 4, generator=g)
B, C = torch.randn(2, 2, 4, 13, generator=g), torch.randn(2, 2, 4, 13, generator=g)
y, h = selective_scan(u, delta, A, B, C, return_last_state=True, method="triton")
y0, h0 = selective_scan_ref(u, delta, A, B, C, return_last_state=True)
assert torch.allclose(y, y0, atol=1e-4) and torch.allclose(h, h0, atol=1e-4)
s1, s2 = torch.zeros(2, 8, 4), torch.zeros(2, 8, 4)
a = selective_state_update(s1, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0], method="triton")
b = selective_state_update(s2, u[..., 0], delta[..., 0], A, B[..., 0], C[..., 0], method="torch")
assert torch.allclose(a, b, atol=1e-4) and torch.allclose(s1, s2, atol=1e-4)
w = torch.randn(8, 4, generator=g)
assert torch.allclose(causal_conv1d(u, w, method="triton"), causal_conv1d_ref(u, w), atol=1e-4)
print("ok")
"""


def test_triton_method_through_the_front_under_the_interpreter():
    """method="triton" reaches the Triton kernels by their contract names (run on CPU tensors by the
    interpreter, in a child process because TRITON_INTERPRET must be set before triton is imported)."""
    pytest.importorskip("sslalm.ops.scan_triton")
    pytest.importorskip("sslalm.ops.conv1d_triton")
    import os
    import subprocess

    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", _TRITON_PROBE], env=env, capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]
