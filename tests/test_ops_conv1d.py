"""Depthwise causal conv1d: the torch kernel and the step form against F.conv1d, the twin."""

from __future__ import annotations

import pytest
import torch

from sslalm.ops import causal_conv1d, causal_conv1d_update
from sslalm.ops.conv1d import causal_conv1d_ref


def _inputs(batch=2, dim=6, length=9, width=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, dim, generator=g).transpose(1, 2)  # the LM's time-major memory
    weight, bias = torch.randn(dim, width, generator=g), torch.randn(dim, generator=g)
    history = torch.randn(batch, dim, width - 1, generator=g)
    return x, weight, bias, history


@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("with_history", [False, True])
@pytest.mark.parametrize("length", [1, 9])
def test_torch_conv_equals_conv1d(activation, with_history, length):
    x, weight, bias, history = _inputs(length=length)
    h = history if with_history else None
    want = causal_conv1d_ref(x, weight, bias, h, activation)
    got = causal_conv1d(x, weight, bias, h, activation, method="torch")
    assert torch.allclose(got, want, atol=1e-6)
    assert torch.allclose(causal_conv1d(x, weight, bias, h, activation), want, atol=1e-6)  # auto
    assert got.transpose(1, 2).is_contiguous()  # keeps the time-major layout (no copy for the LM)
    # zero history is the Conv1d module's own left padding
    conv = torch.nn.Conv1d(6, 6, 4, groups=6, padding=3)
    with torch.no_grad():
        conv.weight.copy_(weight[:, None]), conv.bias.copy_(bias)
        fresh = conv(x)[..., :length]
    if not with_history and activation is None:
        assert torch.allclose(got, fresh, atol=1e-6)


@pytest.mark.parametrize("method", ["torch", "ref", "auto"])
def test_steps_equal_the_sequence(method):
    x, weight, bias, history = _inputs(length=7)
    state = torch.cat([torch.zeros(2, 6, 1), history], -1)  # (batch, dim, width): the last width inputs
    steps = [causal_conv1d_update(x[..., t], state, weight, bias, "silu", method=method) for t in range(7)]
    assert torch.allclose(
        torch.stack(steps, -1), causal_conv1d_ref(x, weight, bias, history, "silu"), atol=1e-6
    )
    assert torch.equal(state[..., 1:], x[..., -3:])


def test_bad_arguments():
    x, weight, bias, _ = _inputs()
    with pytest.raises(ValueError, match="activation"):
        causal_conv1d(x, weight, bias, activation="relu")
    with pytest.raises(ValueError, match="unknown"):
        causal_conv1d(x, weight, bias, method="nope")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        causal_conv1d(x, weight, bias, method="triton")
