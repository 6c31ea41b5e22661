"""One decoding step of the selective scan in torch ops (the twin of the compiled and GPU steps).

The state (batch, dim, N) fp32 is updated in place, so a sequence's memory stays constant however long it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def selective_state_update_torch(
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
    """One decoding step of the scan in torch ops, updating ``state`` in place: the twin of the kernels.

    Args:
        state: (batch, dim, N) fp32, modified in place.
        x, dt: (batch, dim). A: (dim, N). B, C: (batch, N) or (batch, G, N).
        D: (dim,). z: (batch, dim). dt_bias: (dim,).

    Returns:
        y: (batch, dim) in x's dtype.
    """
    dtype = x.dtype
    dim = x.shape[1]
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    if B.dim() == 3:  # grouped (batch, G, N)
        B = B.repeat_interleave(dim // B.shape[1], dim=1)
        C = C.repeat_interleave(dim // C.shape[1], dim=1)
    else:
        B = B[:, None, :]
        C = C[:, None, :]
    xf = x.float()
    dA = torch.exp(dt[..., None] * A.float())  # (batch, dim, N)
    state.mul_(dA).add_((dt * xf)[..., None] * B.float())
    y = (state * C.float()).sum(-1)
    if D is not None:
        y = y + xf * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y.to(dtype)


def selective_state_update(
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
    method: str = "auto",
) -> Tensor:
    """One decoding step of the scan, updating ``state`` in place (constant memory per sequence).

    Args:
        state: (batch, dim, N) fp32, modified in place.
        x, dt: (batch, dim). A: (dim, N). B, C: (batch, N) or (batch, G, N).
        D: (dim,). z: (batch, dim). dt_bias: (dim,).
        method: ``"torch"``, ``"numba"`` (CPU), ``"triton"``, ``"mamba_ssm"`` (CUDA) or ``"auto"``
            (``sslalm.ops.dispatch.pick_step_method``).

    Returns:
        y: (batch, dim) in x's dtype.
    """
    args = (state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    if method == "auto":
        from sslalm.ops.dispatch import available_backends, pick_step_method

        device = state.device.type
        method = pick_step_method(device, state.dtype, available_backends(device))
    if method == "torch":
        return selective_state_update_torch(*args)
    if method == "numba":
        from sslalm.ops.scan_numba import selective_state_update_numba

        return selective_state_update_numba(*args)
    if method == "triton":
        from sslalm.ops.dispatch import check_triton_device

        check_triton_device(state.device)
        from sslalm.ops.scan_triton import selective_state_update_triton

        return selective_state_update_triton(*args)
    if method == "mamba_ssm":
        from sslalm.ops.scan_mamba_ssm import selective_state_update_mamba_ssm

        return selective_state_update_mamba_ssm(*args)
    raise ValueError(f"unknown selective_state_update method {method!r}")
