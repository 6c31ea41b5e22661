"""``selective_scan``: the selective scan (the S6 recurrence of Mamba), one front for every kernel.

For every batch b, channel d and state index n::

    h[t] = exp(delta[t] * A[d, n]) * h[t-1] + delta[t] * B[n, t] * u[t]
    y[t] = sum_n C[n, t] * h[t, n] + D[d] * u[t]          (then * silu(z[t]) if z is given)

The argument convention is mamba_ssm's ``selective_scan_fn`` so that code written against it ports over:
``u, delta`` are (batch, dim, L); ``A`` is (dim, N); ``B, C`` are (batch, N, L) or grouped
(batch, G, N, L) with ``dim`` divisible by ``G`` (each group of dim/G channels shares its B and C; VMamba's
SS2D uses one group per scan direction). Unlike mamba_ssm we also accept an ``initial_state`` (batch, dim, N),
which chunked prefill and streaming need. Every method computes in fp32 whatever the input dtype (``ref`` and
``recurrent`` in fp64 for fp64 inputs); y is returned in u's dtype and the last state in fp32.

Methods, one module each (each docstring says what it does and why):

* ``"ref"`` (``scan_ref``): sequential loop, autograd-friendly: the twin all fast paths are tested against.
* ``"chunked"`` (``scan_chunked``): exact two-level parallel scan in torch ops, any device, autograd.
* ``"loop"`` (``scan_loop``): fused time-major torch loop, inference only.
* ``"recurrent"`` (``scan_recurrent``): torch loop with a hand-written backward (torch training path).
* ``"numba"`` (``scan_numba``): compiled CPU kernels, forward and backward.
* ``"triton"`` (``scan_triton``): Triton GPU kernels, forward and backward (CPU: TRITON_INTERPRET=1 only).
* ``"mamba_ssm"`` (``scan_mamba_ssm``): mamba_ssm's CUDA kernel, when installed.
* ``"auto"``: ``sslalm.ops.dispatch.pick_scan_method`` of the device, dtype, grad, shape and available
  backends (its docstring has the rule; measurements in docs/benchmarks.md).
"""

from __future__ import annotations

import torch

from sslalm.ops.scan_args import needs_grad
from sslalm.ops.scan_chunked import selective_scan_chunked
from sslalm.ops.scan_loop import selective_scan_loop
from sslalm.ops.scan_recurrent import selective_scan_recurrent
from sslalm.ops.scan_ref import selective_scan_ref

Tensor = torch.Tensor


def pick_method(
    u: Tensor, A: Tensor, grad: bool, initial_state: bool = False, backends: frozenset[str] | None = None
) -> str:
    """The method ``"auto"`` runs for these inputs on this machine (``backends``: the available ones, probed
    if None)."""
    from sslalm.ops.dispatch import available_backends, pick_scan_method

    device = u.device.type
    if backends is None:
        backends = available_backends(device)
    shape = (*u.shape, A.shape[1])
    return pick_scan_method(device, u.dtype, grad, shape, backends, initial_state)


def _method_fn(method: str):
    if method == "ref":
        return selective_scan_ref
    if method == "chunked":
        return selective_scan_chunked
    if method == "loop":
        return selective_scan_loop
    if method == "recurrent":
        return selective_scan_recurrent
    if method == "numba":
        from sslalm.ops.scan_numba import selective_scan_numba

        return selective_scan_numba
    if method == "triton":
        from sslalm.ops.scan_triton import selective_scan_triton

        return selective_scan_triton
    if method == "mamba_ssm":
        from sslalm.ops.scan_mamba_ssm import selective_scan_mamba_ssm

        return selective_scan_mamba_ssm
    raise ValueError(f"unknown selective_scan method {method!r}")


def selective_scan(
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
    method: str = "auto",
) -> Tensor | tuple[Tensor, Tensor]:
    """Selective scan with mamba_ssm's argument convention; see the module docstring.

    Args:
        u, delta: (batch, dim, L).
        A: (dim, N), real (negative for a stable system).
        B, C: (batch, N, L) or (batch, G, N, L).
        D: (dim,) skip connection. z: (batch, dim, L) gate. delta_bias: (dim,).
        initial_state: (batch, dim, N) state before the first step (zeros if None).
        method: ``"ref"``, ``"chunked"``, ``"loop"``, ``"recurrent"``, ``"numba"``, ``"triton"``,
            ``"mamba_ssm"`` or ``"auto"``.

    Returns:
        y (batch, dim, L) in u's dtype, and the last state (batch, dim, N) in fp32 if ``return_last_state``.
    """
    if method == "auto":
        grad = needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state)
        method = pick_method(u, A, grad, initial_state is not None)
    elif method == "triton":
        from sslalm.ops.dispatch import check_triton_device

        check_triton_device(u.device)
    fn = _method_fn(method)
    return fn(
        u,
        delta,
        A,
        B,
        C,
        D=D,
        z=z,
        delta_bias=delta_bias,
        delta_softplus=delta_softplus,
        initial_state=initial_state,
        return_last_state=return_last_state,
    )
