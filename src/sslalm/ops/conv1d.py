"""Depthwise causal conv1d (Mamba's short conv before the scan): sequence and one-step forms, one front.

Convention (``causal_conv1d``'s, so its CUDA kernels drop in): x (batch, dim, L), weight (dim, width),
bias (dim,), ``initial_state`` (batch, dim, width - 1) = the inputs just before x (zeros if None)::

    out[:, :, t] = bias + sum_j weight[:, j] * ext[:, :, t + j],   ext = cat(initial_state, x) in time

then SiLU if ``activation == "silu"``. The step form keeps the last ``width`` inputs in a (batch, dim, width)
``conv_state`` that it shifts in place. Kernels: ``torch`` (``width`` shifted multiply-adds that accept any
strides, so the Mamba LM's time-major activations need no copy; on a CPU this is memory-bound already and a
compiled kernel did not pay), ``triton`` and ``causal_conv1d`` on CUDA; ``ref`` is ``F.conv1d``, the twin.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _activate(x: Tensor, activation: str | None) -> Tensor:
    if activation is None:
        return x
    if activation in ("silu", "swish"):
        return F.silu(x)
    raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def _ext(x: Tensor, initial_state: Tensor | None, width: int) -> Tensor:
    if initial_state is None:
        initial_state = x.new_zeros(x.shape[0], x.shape[1], width - 1)
    return torch.cat([initial_state.to(x.dtype), x], dim=-1)


def causal_conv1d_ref(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
) -> Tensor:
    """``F.conv1d`` with ``groups=dim`` on the history-extended input: the obviously-correct twin."""
    width = weight.shape[-1]
    out = F.conv1d(_ext(x, initial_state, width), weight.unsqueeze(1), bias, groups=x.shape[1])
    return _activate(out, activation)


def causal_conv1d_torch(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
) -> Tensor:
    """``width`` shifted multiply-adds over time, with time-major memory (as the Mamba LM's (batch, L, dim)
    activations, which then need no copy; the result keeps that layout). 2-3x faster than ``F.conv1d`` on a
    CPU for that layout."""
    batch, dim, length = x.shape
    width = weight.shape[-1]
    if initial_state is None:
        initial_state = x.new_zeros(batch, dim, width - 1)
    ext = torch.cat([initial_state.to(x.dtype).transpose(1, 2), x.transpose(1, 2)], dim=1).transpose(1, 2)
    out = ext[..., 0:length] * weight[:, 0, None]
    for j in range(1, width):
        out = out.addcmul_(ext[..., j : j + length], weight[:, j, None])
    if bias is not None:
        out = out.add_(bias[:, None])
    return _activate(out, activation)


def _kernel(method: str, x: Tensor, step: bool) -> Callable[..., Tensor]:
    """The sequence (``step=False``) or one-step kernel called ``method``; ``"auto"`` picks one for ``x``
    (``sslalm.ops.dispatch.pick_conv_method``). CUDA-only kernels are imported only when chosen."""
    if method == "auto":
        from sslalm.ops.dispatch import available_backends, pick_conv_method

        method = pick_conv_method(x.device.type, x.dtype, available_backends(x.device.type))
    if method in ("torch", "ref") and step:
        return causal_conv1d_update_torch
    if method in ("torch", "ref"):
        return causal_conv1d_torch if method == "torch" else causal_conv1d_ref
    if method == "triton":
        from sslalm.ops import conv1d_triton
        from sslalm.ops.dispatch import check_triton_device

        check_triton_device(x.device)
        return conv1d_triton.causal_conv1d_update_triton if step else conv1d_triton.causal_conv1d_triton
    if method == "causal_conv1d":
        from sslalm.ops import scan_mamba_ssm

        return scan_mamba_ssm.causal_conv1d_update_cuda if step else scan_mamba_ssm.causal_conv1d_cuda
    name = "causal_conv1d_update" if step else "causal_conv1d"
    raise ValueError(f"unknown {name} method {method!r} (use auto, torch, ref, triton or causal_conv1d)")


def causal_conv1d(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
    method: str = "auto",
) -> Tensor:
    """Depthwise causal conv of x (batch, dim, L) -> (batch, dim, L); see the module docstring.

    ``method``: ``"ref"``, ``"torch"``, ``"triton"``, ``"causal_conv1d"`` or ``"auto"``
    (``sslalm.ops.dispatch.pick_conv_method``)."""
    return _kernel(method, x, step=False)(x, weight, bias, initial_state, activation)


def causal_conv1d_update_torch(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """One step in torch ops: shift ``conv_state`` (batch, dim, width) left in place, append x (batch, dim),
    return the conv of the window (batch, dim)."""
    conv_state.copy_(torch.roll(conv_state, shifts=-1, dims=-1))
    conv_state[:, :, -1] = x
    out = (conv_state * weight).sum(-1)
    if bias is not None:
        out = out + bias
    return _activate(out, activation)


def causal_conv1d_update(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
    method: str = "auto",
) -> Tensor:
    """One decoding step of :func:`causal_conv1d`; ``conv_state`` is updated in place. Same ``method`` names
    as :func:`causal_conv1d` (``"ref"`` is the torch step)."""
    return _kernel(method, x, step=True)(x, conv_state, weight, bias, activation)
