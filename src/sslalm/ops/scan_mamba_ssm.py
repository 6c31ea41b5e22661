"""Wrappers around the CUDA kernels of ``mamba_ssm`` and ``causal_conv1d``, used on CUDA when importable.

They are the field's reference kernels (users who installed them expect them used, as transformers does),
but CUDA-only: they neither build nor import without a CUDA toolchain, so they are imported here lazily, at
call time, and the dispatcher (``sslalm.ops.dispatch``) only offers them where ``import`` succeeds. The
signatures are ours (the same as ``selective_scan`` / ``selective_state_update`` / ``causal_conv1d``), so a
caller never needs to know which kernel ran.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor

_HINT = "pip install mamba-ssm causal-conv1d (CUDA only; needs nvcc and a CUDA build of torch)"


def _import(module: str, name: str):
    try:
        mod = __import__(module, fromlist=[name])
    except Exception as exc:  # ImportError, or the extension failing to load without CUDA
        raise ImportError(f"{module} is not usable here ({exc}); {_HINT}") from exc
    return getattr(mod, name)


def selective_scan_mamba_ssm(
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
    """``mamba_ssm.ops.selective_scan_interface.selective_scan_fn`` with our arguments and result.

    It has no initial state (the dispatcher picks another kernel when one is given) and wants fp32 A, D and
    delta bias; B and C are made contiguous in time as it requires. The last state comes back fp32.
    """
    if initial_state is not None:
        raise ValueError("mamba_ssm's selective scan takes no initial_state; use 'triton' or 'chunked'")
    scan = _import("mamba_ssm.ops.selective_scan_interface", "selective_scan_fn")
    out = scan(
        u.contiguous(),
        delta.contiguous(),
        A.float().contiguous(),
        B.contiguous(),
        C.contiguous(),
        None if D is None else D.float(),
        None if z is None else z.contiguous(),
        None if delta_bias is None else delta_bias.float(),
        delta_softplus,
        return_last_state,
    )
    if return_last_state:
        y, last = out
        return y, last.float()
    return out


def selective_state_update_mamba_ssm(
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
    """``mamba_ssm``'s fused decode step (a Triton kernel): state (batch, dim, N) updated in place."""
    step = _import("mamba_ssm.ops.triton.selective_state_update", "selective_state_update")
    return step(state, x, dt, A, B, C, D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus)


def causal_conv1d_cuda(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
) -> Tensor:
    """``causal_conv1d.causal_conv1d_fn``: x (batch, dim, L), weight (dim, width), initial_state (batch, dim,
    width - 1) -> (batch, dim, L)."""
    conv = _import("causal_conv1d", "causal_conv1d_fn")
    if initial_state is not None:  # its initial states must be channel-last in memory
        x = x.transpose(1, 2).contiguous().transpose(1, 2)
        initial_state = initial_state.transpose(1, 2).contiguous().transpose(1, 2)
        return conv(x, weight, bias, initial_states=initial_state, activation=activation)
    return conv(x, weight, bias, activation=activation)


def causal_conv1d_update_cuda(
    x: Tensor, conv_state: Tensor, weight: Tensor, bias: Tensor | None = None, activation: str | None = None
) -> Tensor:
    """``causal_conv1d.causal_conv1d_update``: x (batch, dim), conv_state (batch, dim, width) in place."""
    update = _import("causal_conv1d", "causal_conv1d_update")
    return update(x, conv_state, weight, bias, activation)
