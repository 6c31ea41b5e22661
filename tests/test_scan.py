"""Selective scan: every fast method agrees with the sequential reference (forward, last state, gradients),
on random shapes including L = 1, L not divisible by the chunk, grouped B/C and every optional input."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import sslalm.ops.scan_chunked as chunked_mod
import sslalm.ops.scan_loop as loop_mod
from sslalm.ops import (
    selective_scan,
    selective_scan_chunked,
    selective_scan_loop,
    selective_scan_ref,
    selective_state_update,
)
from sslalm.ops.dispatch import torch_scan_method
from sslalm.ops.scan_numba import selective_scan_numba
from sslalm.ops.scan_recurrent import selective_scan_recurrent

SETTINGS = settings(max_examples=25, deadline=None)
FAST = {
    "chunked": selective_scan_chunked,
    "recurrent": selective_scan_recurrent,
    "loop": selective_scan_loop,
    "numba": selective_scan_numba,
    "auto": selective_scan,
}
HAND_WRITTEN_BACKWARD = {"recurrent": selective_scan_recurrent, "numba": selective_scan_numba}


@st.composite
def cases(draw, max_len: int = 40):
    """Random problem: shapes, which optional inputs are present, a seed and a chunk length."""
    groups = draw(st.sampled_from([0, 1, 2, 3]))  # 0: ungrouped B/C (batch, N, L)
    per_group = draw(st.integers(1, 4))
    return dict(
        batch=draw(st.integers(1, 3)),
        dim=max(groups, 1) * per_group,
        groups=groups,
        n=draw(st.sampled_from([1, 2, 4])),
        length=draw(st.integers(1, max_len)),
        use_D=draw(st.booleans()),
        use_z=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        softplus=draw(st.booleans()),
        use_h0=draw(st.booleans()),
        chunk=draw(st.sampled_from([None, 1, 3, 8])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_inputs(c: dict, dtype: torch.dtype = torch.float32, delta_scale: float = 1.0) -> tuple[list, dict]:
    """Positional (u, delta, A, B, C) and keyword inputs for one case."""
    g = torch.Generator().manual_seed(c["seed"])
    b, d, n, L = c["batch"], c["dim"], c["n"], c["length"]

    def r(*shape):
        return torch.randn(*shape, generator=g)

    bc_shape = (b, n, L) if c["groups"] == 0 else (b, c["groups"], n, L)
    delta = r(b, d, L) if c["softplus"] else torch.rand(b, d, L, generator=g) * 0.5
    A = -torch.rand(d, n, generator=g) * 4 - 0.05
    args = [r(b, d, L), delta * delta_scale, A, r(*bc_shape), r(*bc_shape)]
    kwargs = dict(
        D=r(d) if c["use_D"] else None,
        z=r(b, d, L) if c["use_z"] else None,
        # delta must stay >= 0 (a stable system): a signed bias only goes through softplus
        delta_bias=(r(d) * 0.5 if c["softplus"] else torch.rand(d, generator=g) * 0.1)
        if c["use_bias"]
        else None,
        delta_softplus=c["softplus"],
        initial_state=r(b, d, n) if c["use_h0"] else None,
    )
    args = [a.to(dtype) for a in args]
    for k in ("D", "z", "delta_bias"):
        if kwargs[k] is not None:
            kwargs[k] = kwargs[k].to(dtype)
    return args, kwargs


def close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 2e-5) -> None:
    """Max error relative to the largest expected magnitude (the scale of the output)."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    assert torch.isfinite(actual).all()
    scale = expected.abs().max().clamp_min(1e-6)
    err = (actual.float() - expected.float()).abs().max() / scale
    assert err <= rtol, f"relative error {err:.3g} > {rtol}"


def run_method(method: str, args: list, kwargs: dict, chunk: int | None = None, **extra):
    if method == "chunked" and chunk is not None:
        extra["chunk_size"] = chunk
    return FAST[method](*args, **kwargs, **extra)


@pytest.mark.parametrize("method", ["chunked", "recurrent", "loop", "numba", "auto"])
@SETTINGS
@given(c=cases())
def test_forward_and_last_state_match_ref(method, c):
    args, kwargs = make_inputs(c)
    y_ref, h_ref = selective_scan_ref(*args, **kwargs, return_last_state=True)
    with torch.no_grad():
        y, h = run_method(method, args, kwargs, c["chunk"], return_last_state=True)
    close(y, y_ref)
    close(h, h_ref)
    assert h.dtype == torch.float32
    y_only = run_method(method, args, kwargs, c["chunk"])
    close(y_only, y_ref)


@SETTINGS
@given(c=cases(max_len=24))
def test_chunked_gradients_match_ref(c):
    args, kwargs = make_inputs(c)
    tensors = args + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    for t in tensors:
        t.requires_grad_(True)
    weights = None

    def loss(fn, **extra):
        nonlocal weights
        y, h = fn(*args, **kwargs, return_last_state=True, **extra)
        if weights is None:  # fixed random weights so every output position matters differently
            g = torch.Generator().manual_seed(c["seed"] + 1)
            weights = (torch.randn(y.shape, generator=g), torch.randn(h.shape, generator=g))
        return (y * weights[0]).sum() + (h * weights[1]).sum()

    grads_ref = torch.autograd.grad(loss(selective_scan_ref), tensors)
    extra = {} if c["chunk"] is None else {"chunk_size": c["chunk"]}
    for fn in (selective_scan_chunked, selective_scan):
        grads = torch.autograd.grad(loss(fn, **extra if fn is selective_scan_chunked else {}), tensors)
        for got, want in zip(grads, grads_ref, strict=True):
            close(got, want, rtol=5e-5)


def grads_vs_ref(fn, c: dict, outputs: str = "both", dtype: torch.dtype = torch.float32, rtol: float = 5e-5):
    """Every input's gradient of fixed random weights . (y, last state) through ``fn`` equals ``ref``'s;
    ``outputs`` = "y" or "state" puts the loss on one output only (the other gets no gradient)."""
    args, kwargs = make_inputs(c, dtype=dtype)
    tensors = args + [v for v in kwargs.values() if isinstance(v, torch.Tensor)]
    for t in tensors:
        t.requires_grad_(True)
    g = torch.Generator().manual_seed(c["seed"] + 1)
    wy = torch.randn(c["batch"], c["dim"], c["length"], generator=g)
    wh = torch.randn(c["batch"], c["dim"], c["n"], generator=g)

    def loss(scan):
        y, h = scan(*args, **kwargs, return_last_state=True)
        ly, lh = (y.float() * wy).sum(), (h * wh).sum()
        return ly if outputs == "y" else lh if outputs == "state" else ly + lh

    opts = dict(allow_unused=True, materialize_grads=True)  # a loss on the state only leaves C, D, z unused
    grads = torch.autograd.grad(loss(fn), tensors, **opts)
    grads_ref = torch.autograd.grad(loss(selective_scan_ref), tensors, **opts)
    for got, want in zip(grads, grads_ref, strict=True):
        close(got, want, rtol=rtol)


@pytest.mark.parametrize("method", list(HAND_WRITTEN_BACKWARD))
@SETTINGS
@given(c=cases(max_len=24), outputs=st.sampled_from(["both", "y", "state"]))
def test_hand_written_gradients_match_ref(method, c, outputs):
    grads_vs_ref(HAND_WRITTEN_BACKWARD[method], c, outputs)


@pytest.mark.parametrize("method", list(HAND_WRITTEN_BACKWARD))
@pytest.mark.parametrize("groups", [0, 4])
@pytest.mark.parametrize("n", [1, 16])
@pytest.mark.parametrize("length", [1, 37, 70])
@pytest.mark.parametrize("full", [False, True])
def test_hand_written_gradients_model_shapes(method, groups, n, length, full):
    """The two real configurations (Mamba LM: N=16 ungrouped; DASS: N=1, G=4), bare or with every option;
    70 steps cross the compiled backward's recomputation chunks (32) twice, with a ragged last one."""
    c = dict(batch=2, dim=8, groups=groups, n=n, length=length, use_D=full, use_z=full, use_bias=full)
    c.update(softplus=full, use_h0=full, chunk=None, seed=13 + n + length)
    grads_vs_ref(HAND_WRITTEN_BACKWARD[method], c)


@pytest.mark.parametrize("method", list(HAND_WRITTEN_BACKWARD))
def test_hand_written_bf16_gradients(method):
    """bf16 inputs compute in fp32: the gradients are ref's (same bf16 inputs) up to the final bf16 cast."""
    c = dict(batch=2, dim=6, groups=2, n=4, length=19, use_D=True, use_z=True, use_bias=True)
    c.update(softplus=True, use_h0=True, chunk=None, seed=17)
    grads_vs_ref(HAND_WRITTEN_BACKWARD[method], c, dtype=torch.bfloat16, rtol=1e-2)


@pytest.mark.parametrize("groups", [0, 2])
def test_recurrent_gradcheck_float64(groups):
    """fp64 inputs compute in fp64, so finite differences check the hand-written backward directly."""
    c = dict(batch=2, dim=4, groups=groups, n=3, length=5, use_D=True, use_z=True, use_bias=True)
    c.update(softplus=True, use_h0=True, chunk=None, seed=19)
    args, kwargs = make_inputs(c, dtype=torch.float64)
    kwargs["initial_state"] = kwargs["initial_state"].double()
    names = [k for k, v in kwargs.items() if isinstance(v, torch.Tensor)]
    inputs = [t.requires_grad_(True) for t in args + [kwargs[k] for k in names]]

    def fn(*xs):
        kw = dict(kwargs, **dict(zip(names, xs[5:], strict=True)))
        return selective_scan_recurrent(*xs[:5], **kw, return_last_state=True)

    assert fn(*inputs)[0].dtype == torch.float64
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("method", list(HAND_WRITTEN_BACKWARD))
def test_backward_twice_with_retained_graph(method):
    """The backward never writes into what the forward saved, so a retained graph gives the same gradients."""
    c = dict(batch=2, dim=4, groups=0, n=4, length=9, use_D=False, use_z=False, use_bias=False)
    c.update(softplus=False, use_h0=True, chunk=None, seed=23)
    args, kwargs = make_inputs(c)
    inputs = [t.requires_grad_(True) for t in args + [kwargs["initial_state"]]]
    y, h = HAND_WRITTEN_BACKWARD[method](*args, initial_state=inputs[-1], return_last_state=True)
    loss = (y * y).sum() + h.sum()
    first = torch.autograd.grad(loss, inputs, retain_graph=True)
    second = torch.autograd.grad(loss, inputs)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("method", list(HAND_WRITTEN_BACKWARD))
def test_empty_sequence(method):
    c = dict(batch=2, dim=4, groups=2, n=3, length=0, use_D=True, use_z=True, use_bias=False)
    c.update(softplus=False, use_h0=True, chunk=None, seed=29)
    args, kwargs = make_inputs(c)
    y, h = HAND_WRITTEN_BACKWARD[method](*args, **kwargs, return_last_state=True)
    assert y.shape == (2, 4, 0)
    close(h, kwargs["initial_state"])


@pytest.mark.parametrize("method", ["chunked", "recurrent", "loop", "numba"])
@SETTINGS
@given(c=cases(), split=st.floats(0.0, 1.0))
def test_prefill_in_two_pieces_equals_one_pass(method, c, split):
    args, kwargs = make_inputs(c)
    k = int(split * c["length"])
    with torch.no_grad():
        y_full, h_full = run_method(method, args, kwargs, c["chunk"], return_last_state=True)

        def piece(lo, hi, h0):
            a = [t[..., lo:hi] for t in args[:2]] + [args[2]] + [t[..., lo:hi] for t in args[3:]]
            kw = dict(kwargs, initial_state=h0, z=None if kwargs["z"] is None else kwargs["z"][..., lo:hi])
            return run_method(method, a, kw, c["chunk"], return_last_state=True)

        y1, h1 = piece(0, k, kwargs["initial_state"])
        y2, h2 = piece(k, c["length"], h1)
    close(torch.cat([y1, y2], -1), y_full)
    close(h2, h_full)


@pytest.mark.parametrize("method", ["torch", "numba", "auto"])
@SETTINGS
@given(c=cases(max_len=16))
def test_step_function_repeated_equals_scan(method, c):
    args, kwargs = make_inputs(c)
    u, delta, A, B, C = args
    y_ref, h_ref = selective_scan_ref(*args, **kwargs, return_last_state=True)
    h0 = kwargs["initial_state"]
    state = torch.zeros(c["batch"], c["dim"], c["n"]) if h0 is None else h0.clone()
    ys = []
    for t in range(c["length"]):
        z = kwargs["z"]
        ys.append(
            selective_state_update(
                state, u[..., t], delta[..., t], A, B[..., t], C[..., t], kwargs["D"],
                None if z is None else z[..., t], kwargs["delta_bias"], kwargs["delta_softplus"], method,
            )
        )  # fmt: skip
    close(torch.stack(ys, -1), y_ref)
    close(state, h_ref)


def recurrence_fp64(u, delta, A, B, C, h0):
    """The recurrence written out in fp64, grouped B/C (batch, G, N, L): ground truth for extreme inputs."""
    u, delta, A, B, C, h = (t.double() for t in (u, delta, A, B, C, h0))
    B, C = (t.repeat_interleave(u.shape[1] // t.shape[1], dim=1) for t in (B, C))
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(delta[..., t, None] * A) * h + (delta[..., t] * u[..., t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    return torch.stack(ys, -1), h


@pytest.mark.parametrize("method", ["chunked", "loop"])
@pytest.mark.parametrize("n", [1, 4])
def test_extreme_inputs_stay_finite_and_exact(method, n):
    """Huge delta*|A| (log-decays down to -1e4 per step) and long sequences: a log-space cumsum overflows
    fp32 here; our methods only ever multiply decays <= 1 and must match the fp64 reference."""
    g = torch.Generator().manual_seed(1)
    b, d, L = 2, 6, 300
    u = torch.randn(b, d, L, generator=g)
    delta = torch.exp(torch.randn(b, d, L, generator=g) * 3)  # 1e-4 .. 1e4
    A = -torch.exp(torch.randn(d, n, generator=g) * 2)  # |A| 1e-3 .. 1e3
    B, C = torch.randn(b, 2, n, L, generator=g), torch.randn(b, 2, n, L, generator=g)
    h0 = torch.randn(b, d, n, generator=g) * 100
    y_ref, h_ref = recurrence_fp64(u, delta, A, B, C, h0)
    with torch.no_grad():
        y, h = run_method(method, [u, delta, A, B, C], {"initial_state": h0}, 8, return_last_state=True)
    close(y.double(), y_ref, rtol=1e-5)
    close(h.double(), h_ref, rtol=1e-5)
    close(selective_scan_ref(u, delta, A, B, C, initial_state=h0).double(), y_ref, rtol=1e-5)  # the twin too
    if method == "chunked":  # and through autograd
        ins = [t.clone().requires_grad_() for t in (u, delta, A, B, C, h0)]
        y = selective_scan_chunked(*ins[:5], initial_state=ins[5])
        grads = torch.autograd.grad(y.square().sum(), ins)
        assert all(torch.isfinite(gr).all() for gr in grads)


@pytest.mark.parametrize("method", ["chunked", "loop", "auto"])
def test_long_sequence_in_bounded_blocks(method, monkeypatch):
    """No-grad paths split time into blocks; force many small blocks; nothing may be lost at the seams."""
    monkeypatch.setattr(chunked_mod, "_STEP_BUDGET", 64)
    monkeypatch.setattr(loop_mod, "_LOOP_BLOCK", 64)
    c = dict(batch=1, dim=8, groups=4, n=1, length=1000, use_D=True, use_z=False, use_bias=True)
    c.update(softplus=True, use_h0=True, chunk=None, seed=3)
    args, kwargs = make_inputs(c)
    y_ref, h_ref = selective_scan_ref(*args, **kwargs, return_last_state=True)
    with torch.no_grad():
        y, h = run_method(method, args, kwargs, return_last_state=True)
    close(y, y_ref)
    close(h, h_ref)


@pytest.mark.parametrize("method", ["ref", "chunked", "recurrent", "loop", "numba", "auto"])
def test_bf16_inputs_compute_in_fp32(method):
    c = dict(batch=2, dim=6, groups=2, n=4, length=19, use_D=True, use_z=True, use_bias=True)
    c.update(softplus=True, use_h0=True, chunk=None, seed=5)
    args, kwargs = make_inputs(c, dtype=torch.bfloat16)
    y_ref, h_ref = selective_scan_ref(*(a.float() for a in args), **kwargs, return_last_state=True)
    with torch.no_grad():
        y, h = selective_scan(*args, **kwargs, return_last_state=True, method=method)
    assert y.dtype == torch.bfloat16 and h.dtype == torch.float32
    close(y.float(), y_ref, rtol=1e-2)  # only the final cast to bf16 differs
    close(h, h_ref)


def test_loop_refuses_autograd_and_auto_differentiates():
    c = dict(batch=1, dim=4, groups=0, n=2, length=12, use_D=False, use_z=False, use_bias=False)
    c.update(softplus=False, use_h0=False, chunk=None, seed=7)
    args, kwargs = make_inputs(c)
    args[0].requires_grad_(True)
    with pytest.raises(RuntimeError, match="inference-only"):
        selective_scan_loop(*args, **kwargs)
    y = selective_scan(*args, **kwargs)
    assert y.requires_grad
    (gu,) = torch.autograd.grad(y.sum(), args[0])
    (gu_ref,) = torch.autograd.grad(selective_scan_ref(*args, **kwargs).sum(), args[0])
    close(gu, gu_ref)
    with pytest.raises(ValueError, match="unknown"):
        selective_scan(*args, method="nope")


def test_torch_rule():
    """Without compiled kernels (no numba, or a device other than CPU/CUDA): the measured torch rule."""
    assert torch_scan_method(True, (1, 384, 8192, 1)) == "chunked"  # N == 1, small batch*dim
    assert torch_scan_method(True, (4, 384, 8192, 1)) == "recurrent"  # N == 1, large
    assert torch_scan_method(True, (32, 128, 60, 16)) == "recurrent"
    assert torch_scan_method(True, (1, 8, 64, 2)) == "recurrent"
    assert torch_scan_method(False, (1, 384, 8192, 1)) == "chunked"  # small state per step, long L
    assert torch_scan_method(False, (1, 5120, 256, 16)) == "loop"
    assert torch_scan_method(False, (1, 8, 1, 1)) == "loop"  # decode-size


@pytest.mark.parametrize("method", ["chunked", "recurrent", "loop", "numba"])
def test_non_contiguous_inputs(method):
    """Models pass (batch, L, dim) activations transposed to (batch, dim, L): strided views must work."""
    g = torch.Generator().manual_seed(11)
    b, d, L, n = 2, 6, 21, 4
    u, delta, z = (torch.randn(b, L, d, generator=g).transpose(1, 2) for _ in range(3))
    B, C = (torch.randn(b, L, 2, n, generator=g).permute(0, 2, 3, 1) for _ in range(2))
    A = -torch.rand(n, d, generator=g).t() - 0.1
    kwargs = dict(D=torch.randn(d, generator=g), z=z, delta_softplus=True, return_last_state=True)
    y_ref, h_ref = selective_scan_ref(u, delta, A, B, C, **kwargs)
    with torch.no_grad():
        y, h = FAST[method](u, delta, A, B, C, **kwargs)
    close(y, y_ref)
    close(h, h_ref)

    if method != "loop":  # gradients too, including the strided layouts handed back
        ins = [t.detach().requires_grad_(True) for t in (u, delta, A, B, C, z)]
        kw = dict(kwargs, z=ins[5])
        weights = torch.randn(y.shape, generator=g), torch.randn(h.shape, generator=g)

        def loss(fn):
            y, h = fn(*ins[:5], **kw)
            return (y * weights[0]).sum() + (h * weights[1]).sum()

        grads_ref = torch.autograd.grad(loss(selective_scan_ref), ins)
        for got, want in zip(torch.autograd.grad(loss(FAST[method]), ins), grads_ref, strict=True):
            close(got, want, rtol=5e-5)
