"""The Triton kernels against their torch twins, run by Triton's CPU interpreter (no GPU needed).

Triton chooses between compiling and interpreting when a function is decorated with ``@triton.jit``: our
kernels when their module is imported, triton's own library (``tl.sum``, ``tl.sigmoid``) when triton is,
which in a full test run has already happened (peft imports triton). So the module runs inside
``sslalm.ops.triton_support.cpu_interpreter()``, which switches all of that to the interpreter and back.
Shapes are tiny: the interpreter runs every program of the grid in Python. The GPU code generation is
checked separately, by compiling every kernel to an sm90 cubin (last tests).
"""

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("triton")

from sslalm.ops import (  # noqa: E402
    scan_triton,  # noqa: E402
    selective_scan_ref,
    selective_state_update,
)
from sslalm.ops.conv1d import causal_conv1d_torch  # noqa: E402
from sslalm.ops.conv1d_triton import causal_conv1d_triton, causal_conv1d_update_triton  # noqa: E402
from sslalm.ops.scan_triton import selective_scan_triton, selective_state_update_triton  # noqa: E402
from sslalm.ops.triton_support import INSTALL_HINT, cpu_interpreter, require_triton  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def interpreted():
    with cpu_interpreter():
        yield


def _scan_inputs(batch, dim, length, n, groups=None, dtype=torch.float32, options=True):
    """Random mamba-like inputs; the optional tensors (D, z, delta_bias, initial_state) when ``options``."""
    shape_bc = (batch, n, length) if groups is None else (batch, groups, n, length)
    t = dict(
        u=torch.randn(batch, dim, length),
        delta=torch.rand(batch, dim, length) * 1.5 - 0.5,
        A=-(torch.rand(dim, n) * 2 + 0.1),
        B=torch.randn(shape_bc),
        C=torch.randn(shape_bc),
    )
    if options:
        t.update(D=torch.randn(dim), z=torch.randn(batch, dim, length), delta_bias=torch.randn(dim) * 0.5)
        t["initial_state"] = torch.randn(batch, dim, n)
    low = ("u", "delta", "B", "C", "z")  # activations in the low precision; parameters and state stay fp32
    return {k: (v.to(dtype) if k in low else v).requires_grad_() for k, v in t.items()}


def _run(fn, inputs, softplus, dy, dlast, use_y=True):
    """Forward with the last state, then every input's gradient of <y, dy> + <last, dlast>."""
    kw = {k: v for k, v in inputs.items() if k not in ("u", "delta", "A", "B", "C")}
    y, last = fn(
        inputs["u"], inputs["delta"], inputs["A"], inputs["B"], inputs["C"],
        delta_softplus=softplus, return_last_state=True, **kw,
    )  # fmt: skip
    loss = (last * dlast).sum() + ((y.float() * dy).sum() if use_y else 0)
    grads = torch.autograd.grad(loss, list(inputs.values()), allow_unused=True)
    return y, last, {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(inputs.items(), grads)}


def _close(got, want, tol, what):
    got, want = got.float(), want.float()
    err = (got - want).abs().max().item()
    scale = want.abs().max().item() + 1e-6
    assert err <= tol * scale, f"{what}: max error {err:.3g} vs scale {scale:.3g}"


def _check_scan(inputs, softplus=True, tol=2e-5, use_y=True):
    batch, dim, length = inputs["u"].shape
    dy = torch.randn(batch, dim, length)
    dlast = torch.randn(batch, dim, inputs["A"].shape[1])
    y, last, grads = _run(selective_scan_triton, inputs, softplus, dy, dlast, use_y)
    y_ref, last_ref, grads_ref = _run(selective_scan_ref, inputs, softplus, dy, dlast, use_y)
    assert y.dtype == inputs["u"].dtype and last.dtype == torch.float32
    _close(y, y_ref, tol, "y")
    _close(last, last_ref, tol, "last state")
    for name, g in grads.items():
        assert g.shape == inputs[name].shape and g.dtype == inputs[name].dtype, name
        _close(g, grads_ref[name], tol, f"d{name}")


@pytest.mark.parametrize(
    "batch, dim, length, n, groups",
    [
        (2, 4, 37, 16, None),  # Mamba LM: N = 16, odd length over two chunks
        (2, 8, 37, 1, 4),  # DASS: N = 1, four B/C groups
        (2, 8, 1, 4, 2),  # a single step
        (1, 6, 13, 3, 3),  # N and channels per group not powers of two
    ],
)
def test_scan_matches_ref_forward_state_and_every_gradient(batch, dim, length, n, groups):
    _check_scan(_scan_inputs(batch, dim, length, n, groups))


def test_scan_many_chunks_padded_tail(monkeypatch):
    """Short chunks: the state and its gradient are carried across five chunks, the last one padded."""
    monkeypatch.setattr(scan_triton, "_BLOCK_T", 8)
    _check_scan(_scan_inputs(2, 8, 37, 1, 4))
    _check_scan(_scan_inputs(1, 4, 19, 8), softplus=False)


def test_scan_forward_in_time_segments(monkeypatch):
    """The forward split into time segments scanned in parallel (summaries first, then each segment from
    its carried-in state), as at batch 1 on a large GPU: same y, last state, checkpoints and gradients."""
    monkeypatch.setattr(scan_triton, "_BLOCK_T", 8)
    monkeypatch.setattr(scan_triton, "_FORCE_SEGMENTS", 3)  # 5 chunks of 8 steps -> segments of 2, 2, 1
    _check_scan(_scan_inputs(1, 8, 37, 1, 4))
    _check_scan(_scan_inputs(2, 4, 33, 4), softplus=False)


def test_time_segments_policy(monkeypatch):
    monkeypatch.setattr(scan_triton, "_multiprocessors", lambda index: 132)
    gpu = torch.device("cuda", 0)
    assert scan_triton.time_segments(12, 256, gpu) == 22  # DASS stage 1 at batch 1: ~2 programs per SM
    assert scan_triton.time_segments(12, 40, gpu) == 5  # segments of at least 8 chunks
    assert scan_triton.time_segments(640, 256, gpu) == 1  # the Mamba LM's width fills the GPU alone
    assert scan_triton.time_segments(12, 256, torch.device("cpu")) == 1


def test_scan_without_optional_inputs_and_through_the_last_state_only():
    _check_scan(_scan_inputs(2, 8, 21, 4, options=False), softplus=False)
    _check_scan(_scan_inputs(2, 8, 21, 1, 4), use_y=False)  # y unused: the backward gets no dy at all


def test_scan_bf16_and_fp16_inputs():
    """16-bit activations, fp32 parameters and state: the kernel computes in fp32, as the reference does."""
    _check_scan(_scan_inputs(2, 8, 23, 1, 4, dtype=torch.bfloat16), tol=2e-2)
    _check_scan(_scan_inputs(2, 8, 7, 2, 2, dtype=torch.float16), tol=5e-3)
    _check_scan(_scan_inputs(1, 4, 9, 16, dtype=torch.bfloat16), tol=2e-2)


def test_scan_non_contiguous_inputs_and_no_grad():
    """(batch, L, dim) activations passed transposed, as the Mamba LM holds them; no copy is needed."""
    batch, dim, length, n = 2, 8, 17, 4
    u = torch.randn(batch, length, dim).transpose(1, 2)
    delta = torch.rand(batch, length, dim).transpose(1, 2)
    z = torch.randn(batch, length, dim).transpose(1, 2)
    B = torch.randn(batch, length, n).transpose(1, 2)
    C = torch.randn(batch, 2 * n, length)[:, ::2]
    A = -torch.rand(n, dim).t()
    kw = dict(D=torch.randn(dim), z=z, delta_softplus=True, return_last_state=True)
    assert not u.is_contiguous() and not C.is_contiguous()
    with torch.no_grad():
        y, last = selective_scan_triton(u, delta, A, B, C, **kw)
    y_ref, last_ref = selective_scan_ref(u, delta, A, B, C, **kw)
    _close(y, y_ref, 2e-5, "y")
    _close(last, last_ref, 2e-5, "last state")
    assert selective_scan_triton(u, delta, A, B, C).shape == (batch, dim, length)


def test_scan_rejects_groups_that_do_not_divide_dim():
    u = torch.randn(1, 6, 4)
    with pytest.raises(ValueError, match="divisible"):
        selective_scan_triton(u, u, -torch.ones(6, 1), torch.randn(1, 4, 1, 4), torch.randn(1, 4, 1, 4))


@pytest.mark.parametrize("n, groups", [(16, None), (1, 4)])
def test_state_update_matches_torch_step(n, groups):
    batch, dim = 2, 8
    cache = torch.randn(batch, dim, n + 3)
    state = cache[..., :n]  # a strided view, updated in place
    state_ref = state.clone()
    x, dt, z = torch.randn(batch, dim), torch.randn(batch, dim), torch.randn(batch, dim)
    A = -torch.rand(dim, n)
    B = torch.randn(batch, n) if groups is None else torch.randn(batch, groups, n)
    C = torch.randn_like(B)
    D, bias = torch.randn(dim), torch.randn(dim)
    y = selective_state_update_triton(state, x, dt, A, B, C, D, z, dt_bias=bias, dt_softplus=True)
    y_ref = selective_state_update(state_ref, x, dt, A, B, C, D, z, dt_bias=bias, dt_softplus=True)
    _close(y, y_ref, 1e-5, "y")
    _close(cache[..., :n], state_ref, 1e-5, "state")
    # bf16 activations, no optional inputs
    y = selective_state_update_triton(state, x.bfloat16(), dt.bfloat16(), A, B, C)
    y_ref = selective_state_update(state_ref, x.bfloat16(), dt.bfloat16(), A, B, C)
    assert y.dtype == torch.bfloat16
    _close(y, y_ref, 1e-2, "y bf16")
    _close(state, state_ref, 1e-5, "state bf16")


def test_state_update_steps_reproduce_the_scan():
    batch, dim, length, n = 1, 8, 6, 4
    inputs = {k: v.detach() for k, v in _scan_inputs(batch, dim, length, n, 2).items()}
    y_scan, last = selective_scan_ref(**inputs, delta_softplus=True, return_last_state=True)
    state = inputs["initial_state"].clone()
    for t in range(length):
        y = selective_state_update_triton(
            state, inputs["u"][..., t], inputs["delta"][..., t], inputs["A"], inputs["B"][..., t],
            inputs["C"][..., t], inputs["D"], inputs["z"][..., t], inputs["delta_bias"], dt_softplus=True,
        )  # fmt: skip
        _close(y, y_scan[..., t], 1e-5, f"y[{t}]")
    _close(state, last, 1e-5, "state")


def _conv_ref(x, weight, bias, initial_state, activation):
    width = weight.shape[-1]
    if initial_state is None:
        out = F.conv1d(x, weight[:, None], bias, padding=width - 1, groups=x.shape[1])[..., : x.shape[-1]]
    else:
        out = F.conv1d(torch.cat([initial_state, x], -1), weight[:, None], bias, groups=x.shape[1])
    return F.silu(out) if activation == "silu" else out


@pytest.mark.parametrize("length, width", [(1, 4), (5, 4), (37, 4), (9, 3), (4, 2)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_state", [False, True])
def test_conv1d_matches_torch_forward_and_gradients(length, width, activation, with_state):
    batch, dim = 2, 8
    x = torch.randn(batch, dim, length, requires_grad=True)
    weight = torch.randn(dim, width, requires_grad=True)
    bias = torch.randn(dim, requires_grad=True)
    init = torch.randn(batch, dim, width - 1, requires_grad=True) if with_state else None
    leaves = [x, weight, bias] + ([init] if with_state else [])
    out = causal_conv1d_triton(x, weight, bias, init, activation)
    ref = _conv_ref(x, weight, bias, init, activation)
    _close(out, ref, 1e-5, "out")
    dout = torch.randn_like(out)
    for g, g_ref, name in zip(
        torch.autograd.grad((out * dout).sum(), leaves),
        torch.autograd.grad((ref * dout).sum(), leaves),
        "xwbi",
    ):
        _close(g, g_ref, 1e-5, f"d{name}")


def test_conv1d_matches_the_models_causal_conv_bf16_and_strided():
    """The Mamba mixer's time-major torch conv (``ops.conv1d``, its own tested twin), on a (batch, L, dim)
    tensor passed transposed; bf16 input, without bias."""
    batch, dim, length, width = 2, 8, 11, 4
    weight = torch.randn(dim, 1, width)  # nn.Conv1d's layout
    ext = torch.randn(batch, width + length, dim)  # history then the new inputs, time-major
    init = ext[:, 1:width].transpose(1, 2)
    want = causal_conv1d_torch(ext[:, width:].transpose(1, 2), weight[:, 0], None, init)
    got = causal_conv1d_triton(ext[:, width:].transpose(1, 2), weight, None, init)
    _close(got, want, 1e-5, "out")
    got = causal_conv1d_triton(ext[:, width:].transpose(1, 2).bfloat16(), weight, None, init)
    assert got.dtype == torch.bfloat16
    _close(got, want, 2e-2, "out bf16")


@pytest.mark.parametrize("width", [4, 3])
def test_conv1d_update_matches_mixer_step(width):
    batch, dim = 2, 8
    state = torch.randn(batch, dim, width)
    state_ref = state.clone()
    weight, bias = torch.randn(dim, width), torch.randn(dim)
    for _ in range(3):
        x = torch.randn(batch, dim)
        out = causal_conv1d_update_triton(x, state, weight, bias, activation="silu")
        state_ref = torch.cat([state_ref[..., 1:], x[..., None]], -1)  # MambaMixer.step's roll and append
        _close(state, state_ref, 0, "state")
        _close(out, F.silu((state_ref * weight).sum(-1) + bias), 1e-5, "out")
    out = causal_conv1d_update_triton(x.bfloat16(), state, weight)
    assert out.dtype == torch.bfloat16
    _close(out, (state * weight).sum(-1), 1e-2, "out bf16")


def test_conv1d_checks_shapes_and_activation():
    x, weight = torch.randn(1, 4, 3), torch.randn(4, 3)
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d_triton(x, weight, activation="relu")
    with pytest.raises(ValueError, match="initial_state"):
        causal_conv1d_triton(x, weight, initial_state=torch.randn(1, 4, 3))


def test_cpu_tensors_without_interpreter_fail_clearly(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        selective_scan_triton(*(torch.randn(1, 2, 3),) * 2, -torch.ones(2, 1), *(torch.randn(1, 1, 3),) * 2)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        causal_conv1d_update_triton(torch.randn(1, 2), torch.randn(1, 2, 4), torch.randn(2, 4))


def test_missing_triton_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` raise ImportError
    with pytest.raises(ImportError, match="pip install triton"):
        require_triton()
    with pytest.raises(ImportError) as err:
        state, x, A, B = torch.zeros(1, 2, 1), torch.randn(1, 2), -torch.ones(2, 1), torch.randn(1, 1)
        selective_state_update_triton(state, x, x, A, B, B)
    assert str(err.value) == INSTALL_HINT
    # importing the public modules never needs triton
    code = (
        "import sys; sys.modules['triton'] = None\nimport sslalm.ops.scan_triton, sslalm.ops.conv1d_triton\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_kernels_compile_for_sm90_without_register_spills():
    """The interpreter does not generate GPU code: compile every kernel to an sm90 cubin (the backend ships
    ptxas; no GPU needed) at the block sizes the wrappers launch, and require no spills to local memory."""
    import triton

    nvidia_bin = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    if not all(os.path.exists(os.path.join(nvidia_bin, tool)) for tool in ("ptxas", "cuobjdump")):
        pytest.skip("triton's NVIDIA backend tools (ptxas, cuobjdump) are not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    cmd = [sys.executable, "-m", "sslalm.ops.triton_compile", "--arch", "90"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["kernel"] for r in rows} == {
        "selective_scan_fwd_kernel",
        "selective_scan_bwd_kernel",
        "selective_state_update_kernel",
        "causal_conv1d_fwd_kernel",
        "causal_conv1d_bwd_input_kernel",
        "causal_conv1d_update_kernel",
    }
    for r in rows:
        assert r["stack_bytes"] == 0 and r["local_bytes"] == 0, f"register spills: {r}"


def test_kernels_reproduce_a_mamba_mixer_prefill_and_decode_step():
    """The kernels in the Mamba mixer's own conventions: prefill from a given conv/ssm state (its last k
    conv inputs and fp32 state), then one decode step, against ``MambaMixer.forward`` and ``.step``."""
    from sslalm.models.mamba import MambaMixer
    from sslalm.models.mamba_config import MambaConfig

    mixer = MambaMixer(MambaConfig(d_model=8, d_state=4, dt_rank=2)).eval()  # d_inner 16, d_conv 4
    mixer.reset_ssm_parameters()
    batch, length, k = 2, 9, mixer.d_conv
    h = torch.randn(batch, length, 8)
    conv0, ssm0 = torch.randn(batch, mixer.d_inner, k), torch.randn(batch, mixer.d_inner, mixer.d_state)
    with torch.no_grad():
        want, want_conv, want_ssm = mixer(h, conv_state=conv0, ssm_state=ssm0.clone(), return_state=True)
        x, z = mixer.in_proj(h).chunk(2, dim=-1)  # (batch, L, d_inner): passed transposed, no copies
        weight, bias = mixer.conv1d.weight, mixer.conv1d.bias
        xc = causal_conv1d_triton(x.transpose(1, 2), weight, bias, conv0[..., 1:], activation="silu")
        delta, B, C = mixer._ssm_inputs(xc.transpose(1, 2))
        A = -torch.exp(mixer.A_log.float())
        y, ssm = selective_scan_triton(
            xc, delta.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=mixer.D,
            z=z.transpose(1, 2), initial_state=ssm0, return_last_state=True,
        )  # fmt: skip
        _close(mixer.out_proj(y.transpose(1, 2)), want, 1e-5, "prefill output")
        _close(ssm, want_ssm, 1e-5, "ssm state")
        conv = torch.cat([conv0, x.transpose(1, 2)], -1)[..., -k:].contiguous()
        _close(conv, want_conv, 0, "conv state")

        step_in = torch.randn(batch, 8)
        want_step = mixer.step(step_in, want_conv, want_ssm)
        x, z = mixer.in_proj(step_in).chunk(2, dim=-1)
        xc = causal_conv1d_update_triton(x, conv, weight, bias, activation="silu")
        delta, B, C = mixer._ssm_inputs(xc)
        y = selective_state_update_triton(ssm, xc, delta, A, B, C, D=mixer.D, z=z)
        _close(mixer.out_proj(y), want_step, 1e-5, "decode step output")
        _close(ssm, want_ssm, 1e-5, "ssm state after the step")
        _close(conv, want_conv, 0, "conv state after the step")


def test_cpu_interpreter_switches_a_process_where_triton_was_imported_first():
    """What the fixture relies on, in a fresh process: triton imported without TRITON_INTERPRET (as peft
    does), kernels run inside ``cpu_interpreter()``, and afterwards everything is as before."""
    code = """
import os, torch, triton, triton.language as tl
from triton.runtime.jit import JITFunction
from sslalm.ops.triton_support import cpu_interpreter
from sslalm.ops.conv1d_triton import causal_conv1d_update_triton as update
assert "TRITON_INTERPRET" not in os.environ
state, x, w = torch.zeros(1, 2, 4), torch.ones(1, 2), torch.ones(2, 4)
try:
    update(x, state, w)
    raise SystemExit("CPU tensors ran without the interpreter")
except RuntimeError as err:
    assert "TRITON_INTERPRET=1" in str(err)
with cpu_interpreter():
    assert update(x, state, w).tolist() == [[1.0, 1.0]]
assert isinstance(tl.sum, JITFunction) and "TRITON_INTERPRET" not in os.environ
os.environ["TRITON_INTERPRET"] = "1"  # set too late: triton's library is compiled, and we say so
try:
    update(x, state, w)
    raise SystemExit("ran with triton's library compiled for the GPU")
except RuntimeError as err:
    assert "before the process starts" in str(err), err
"""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
