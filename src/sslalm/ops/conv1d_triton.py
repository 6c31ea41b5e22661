"""Depthwise causal conv1d (Mamba's short convolution before the scan) as Triton kernels.

For channel d with kernel width W and ext = (initial_state, x) along time (W - 1 earlier inputs, zeros when
none are given, then the L new ones)::

    out[t] = act(bias[d] + sum_j weight[d, j] * ext[t + j])        t = 0 .. L - 1, act = identity or silu

i.e. ``F.conv1d(x, weight[:, None], bias, padding=W - 1, groups=dim)[..., :L]`` from the zero state (the
twin it is tested against, with ``sslalm.models.mamba.causal_conv``), and ``MambaMixer.step``'s update.

Kernels (``conv1d_triton_kernels``):

* forward: grid (batch, ceil(dim / BLOCK_D), ceil(L / BLOCK_T)); each program computes a (BLOCK_D, BLOCK_T)
  output tile as W shifted multiply-adds of input tiles loaded along time (the contiguous axis; any strides
  accepted), in fp32, with the optional silu fused, and stores it in x's dtype.
* backward (autograd): the same kernel in its BACKWARD mode recomputes the pre-activation and writes
  g = dout * act'(pre) (fp32), summing dweight = sum g ext[t + j] and dbias = sum g with atomic adds (fp32,
  not bitwise deterministic on a GPU); a second kernel forms d ext[e] = sum_j weight[j] g[e - j] over
  e in [0, W - 1 + L) and splits it into d initial_state and dx. Memory kept for the backward: the inputs
  only (the activation is recomputed).
* update: grid (batch, ceil(dim / BLOCK_D)); shifts the (batch, dim, W) conv state left in place (any
  strides), appends x and returns the (optionally silu'd) dot product with the weight.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from sslalm.ops.triton_support import load_kernels, require_triton

__all__ = ["causal_conv1d_triton", "causal_conv1d_update_triton", "require_triton"]

Tensor = torch.Tensor

_KERNELS = "sslalm.ops.conv1d_triton_kernels"
_BLOCK_D = 16  # channels per program of the forward and backward
_BLOCK_T = 64  # time steps per program
_UPDATE_BLOCK_D = 128  # channels per program of the decode step


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _activation(activation: str | None) -> bool:
    if activation in (None, "silu", "swish"):
        return activation is not None
    raise ValueError(f"activation must be None or 'silu', got {activation!r}")


def _weight2d(weight: Tensor) -> Tensor:
    """Accept nn.Conv1d's (dim, 1, W) weight as well as (dim, W)."""
    return weight[:, 0] if weight.dim() == 3 else weight


class _CausalConv1dTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, init, silu: bool):
        kernels = load_kernels(_KERNELS, x, weight, bias, init)
        batch, dim, L = x.shape
        W = weight.shape[1]
        out = torch.empty(batch, dim, L, device=x.device, dtype=x.dtype)
        block_d, block_t = min(_BLOCK_D, _pow2(dim)), min(_BLOCK_T, _pow2(L))
        grid = (batch, _cdiv(dim, block_d), _cdiv(L, block_t))
        istr = init.stride() if init is not None else (0, 0, 0)
        kernels.causal_conv1d_fwd_kernel[grid](
            x, weight, bias, init, out, None, None, None, None,
            dim, L, *x.stride(), *weight.stride(), *istr, 0, 0, 0,
            W=W, HAS_BIAS=bias is not None, HAS_INIT=init is not None, SILU=silu, BACKWARD=False,
            BLOCK_D=block_d, BLOCK_T=block_t, num_warps=4,
        )  # fmt: skip
        ctx.save_for_backward(x, weight, bias, init)
        ctx.silu = silu
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, dout):
        x, weight, bias, init = ctx.saved_tensors
        kernels = load_kernels(_KERNELS, x)
        batch, dim, L = x.shape
        W = weight.shape[1]
        f32 = dict(device=x.device, dtype=torch.float32)
        g = torch.empty(batch, dim, L, **f32)
        dw = torch.zeros(dim, W, **f32)
        dbias = None if bias is None else torch.zeros(dim, **f32)
        block_d, block_t = min(_BLOCK_D, _pow2(dim)), min(_BLOCK_T, _pow2(L))
        istr = init.stride() if init is not None else (0, 0, 0)
        grid = (batch, _cdiv(dim, block_d), _cdiv(L, block_t))
        kernels.causal_conv1d_fwd_kernel[grid](
            x, weight, bias, init, None, dout, g, dw, dbias,
            dim, L, *x.stride(), *weight.stride(), *istr, *dout.stride(),
            W=W, HAS_BIAS=bias is not None, HAS_INIT=init is not None, SILU=ctx.silu, BACKWARD=True,
            BLOCK_D=block_d, BLOCK_T=block_t, num_warps=4,
        )  # fmt: skip
        dx = torch.empty(batch, dim, L, device=x.device, dtype=x.dtype)
        dinit = None if init is None else torch.empty(batch, dim, W - 1, device=x.device, dtype=init.dtype)
        block_e = min(_BLOCK_T, _pow2(L + W - 1))
        grid = (batch, _cdiv(dim, block_d), _cdiv(L + W - 1, block_e))
        kernels.causal_conv1d_bwd_input_kernel[grid](
            g, weight, dx, dinit, dim, L, *weight.stride(),
            W=W, HAS_INIT=init is not None, BLOCK_D=block_d, BLOCK_E=block_e, num_warps=4,
        )  # fmt: skip
        return dx, dw.to(weight.dtype), None if dbias is None else dbias.to(bias.dtype), dinit, None


def causal_conv1d_triton(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    initial_state: Tensor | None = None,
    activation: str | None = None,
) -> Tensor:
    """Depthwise causal conv1d in Triton (module docstring); differentiable w.r.t. every tensor.

    Args:
        x: (batch, dim, L), any strides. weight: (dim, W) (or nn.Conv1d's (dim, 1, W)). bias: (dim,).
        initial_state: (batch, dim, W - 1), the inputs before x (zeros if None).
        activation: None or "silu".

    Returns:
        (batch, dim, L) in x's dtype.
    """
    silu = _activation(activation)
    weight = _weight2d(weight)
    batch, dim, L = x.shape
    W = weight.shape[1]
    if weight.shape[0] != dim:
        raise ValueError(f"weight is {tuple(weight.shape)}, expected ({dim}, W)")
    if initial_state is not None and tuple(initial_state.shape) != (batch, dim, W - 1):
        raise ValueError(f"initial_state is {tuple(initial_state.shape)}, expected {(batch, dim, W - 1)}")
    if L == 0:
        return x.new_empty(batch, dim, 0)
    if W == 1:
        initial_state = None  # nothing earlier is read
    return _CausalConv1dTriton.apply(x, weight, bias, initial_state, silu)


def causal_conv1d_update_triton(
    x: Tensor,
    conv_state: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    activation: str | None = None,
) -> Tensor:
    """One decode step: shift ``conv_state`` (batch, dim, W) left in place, append x (batch, dim), and return
    act(bias + sum_k weight[:, k] conv_state[:, :, k]) as (batch, dim) in x's dtype (no autograd)."""
    silu = _activation(activation)
    weight = _weight2d(weight)
    kernels = load_kernels(_KERNELS, x, conv_state, weight, bias)
    batch, dim = x.shape
    W = weight.shape[1]
    if tuple(conv_state.shape) != (batch, dim, W):
        raise ValueError(f"conv_state is {tuple(conv_state.shape)}, expected {(batch, dim, W)}")
    out = torch.empty(batch, dim, device=x.device, dtype=x.dtype)
    block_d = min(_UPDATE_BLOCK_D, _pow2(dim))
    kernels.causal_conv1d_update_kernel[(batch, _cdiv(dim, block_d))](
        x, conv_state, weight, bias, out,
        dim, *x.stride(), *conv_state.stride(), *weight.stride(),
        W=W, HAS_BIAS=bias is not None, SILU=silu, BLOCK_D=block_d, BLOCK_W=_pow2(W), num_warps=4,
    )  # fmt: skip
    return out
