"""Which kernel runs a selective scan, a decode step or a causal conv: plain functions of the case.

The decision is a pure function of (device type, dtype, whether a gradient is needed, shape, which optional
backends are available, whether an initial state is given), so the whole table is unit-tested without the
hardware or the packages (``tests/test_ops_dispatch.py``). What is available on this machine is probed
separately and lazily by :func:`available_backends` (a CPU process never imports the CUDA-only packages).

Per device:

* CUDA: ``mamba_ssm`` (the field's reference CUDA kernels; users who installed them expect them used, as
  transformers does) unless an initial state is given (its ``selective_scan_fn`` has none), else ``triton``
  (our Triton kernels), else ``chunked`` (torch ops, a few per chunk step rather than per time step).
* CPU with numba: ``numba`` for every fp32/fp16/bf16 scan of two or more steps: it beat the torch methods at
  every such shape measured, with and without grad (docs/benchmarks.md). A one-step scan stays on the torch
  rule (its fixed call overhead loses to ``loop`` there: 0.30 vs 0.23 ms at (1, 5120, 1, 16)).
* CPU without numba, and every other device: the torch rule measured before the compiled kernels: with grad
  ``recurrent`` when N > 1 or batch*dim >= 1024, else ``chunked``; without, ``loop`` when batch*dim*N is at
  least 512 (N > 1) or 768 (N == 1) or L < 8, else ``chunked`` (below those, the loop's per-step Python
  overhead dominates).
* fp64 never goes to a compiled kernel (they compute in fp32): ``recurrent`` with grad (gradcheck), else
  ``loop``/``chunked`` by the torch rule.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os

import torch

SCAN_METHODS = ("ref", "chunked", "loop", "recurrent", "numba", "triton", "mamba_ssm")
STEP_METHODS = ("torch", "numba", "triton", "mamba_ssm")
CONV_METHODS = ("torch", "triton", "causal_conv1d")
BACKENDS = ("numba", "triton", "mamba_ssm", "causal_conv1d")

# The torch rule's crossovers (1-thread CPU, docs/benchmarks.md).
_LOOP_MIN_STEP = 512  # no grad: the loop wins once batch*dim*N reaches this (N > 1) ...
_LOOP_MIN_STEP_N1 = 768  # ... or this (N == 1)
_LOOP_MAX_SHORT = 8  # ... and always for sequences shorter than this
_RECURRENT_MIN_STEP_N1 = 1024  # grad: "recurrent" for N > 1, and for N == 1 from this batch*dim

_NUMBA_MIN_LENGTH = 2  # CPU: compiled scan from this many steps (one step: the torch loop costs less)
_COMPILED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def torch_scan_method(grad: bool, shape: tuple[int, int, int, int]) -> str:
    """The torch-only rule (no compiled kernels): ``recurrent``/``chunked`` with grad, ``loop``/``chunked``
    without. shape = (batch, dim, L, N)."""
    batch, dim, length, n = shape
    if grad:
        return "recurrent" if n > 1 or batch * dim >= _RECURRENT_MIN_STEP_N1 else "chunked"
    if batch * dim * n >= (_LOOP_MIN_STEP_N1 if n == 1 else _LOOP_MIN_STEP) or length < _LOOP_MAX_SHORT:
        return "loop"
    return "chunked"


def pick_scan_method(
    device_type: str,
    dtype: torch.dtype,
    grad: bool,
    shape: tuple[int, int, int, int],
    backends: frozenset[str] | set[str],
    initial_state: bool = False,
) -> str:
    """The ``"auto"`` method for a scan of ``shape`` = (batch, dim, L, N) on ``device_type`` ("cpu", "cuda",
    ...), given the ``backends`` that are available (a subset of :data:`BACKENDS`)."""
    compiled = dtype in _COMPILED_DTYPES
    if device_type == "cuda" and compiled:
        if "mamba_ssm" in backends and not initial_state:
            return "mamba_ssm"
        if "triton" in backends:
            return "triton"
        return "chunked"
    if device_type == "cpu" and compiled and "numba" in backends and shape[2] >= _NUMBA_MIN_LENGTH:
        return "numba"
    if dtype == torch.float64 and grad:
        return "recurrent"
    return torch_scan_method(grad, shape)


def pick_step_method(device_type: str, dtype: torch.dtype, backends: frozenset[str] | set[str]) -> str:
    """The decode step's kernel (``selective_state_update``): CUDA mamba_ssm > triton > torch; torch on a CPU.

    One token is (batch, dim, N) of work, a few microseconds: on a CPU the torch ops (~50 us per mamba-130m
    layer) beat the compiled step, whose call overhead and per-channel softplus cost more (measured in
    docs/benchmarks.md), so ``"numba"`` is only used when asked for. ``dtype`` is the state's (fp32 for the
    compiled kernels)."""
    if dtype != torch.float32:
        return "torch"
    if device_type == "cuda":
        for name in ("mamba_ssm", "triton"):
            if name in backends:
                return name
    return "torch"


def pick_conv_method(device_type: str, dtype: torch.dtype, backends: frozenset[str] | set[str]) -> str:
    """The depthwise causal conv's kernel: CUDA causal_conv1d > triton > torch; torch everywhere else (on a
    CPU the torch version is a few shifted multiply-adds, already memory-bound)."""
    if device_type == "cuda" and dtype in _COMPILED_DTYPES:
        for name in ("causal_conv1d", "triton"):
            if name in backends:
                return name
    return "torch"


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except Exception:  # missing, or a CUDA-only package failing to load its extension
        return False
    return True


@functools.cache
def backend_available(name: str) -> bool:
    """Whether the optional backend ``name`` can be used in this process (probed once, by importing it).

    ``SSLALM_DISABLE_<NAME>=1`` (e.g. ``SSLALM_DISABLE_NUMBA``) switches one off, for comparisons."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; known: {BACKENDS}")
    if os.environ.get(f"SSLALM_DISABLE_{name.upper()}"):
        return False
    if name == "numba":
        return _importable("numba")
    if name == "triton":
        return importlib.util.find_spec("triton") is not None and _importable("sslalm.ops.scan_triton")
    if name == "mamba_ssm":
        return _importable("mamba_ssm.ops.selective_scan_interface")
    return _importable("causal_conv1d")


def available_backends(device_type: str) -> frozenset[str]:
    """The optional backends usable for tensors on ``device_type``. Only the ones that can run there are
    probed: a CPU process imports numba (when asked for) and never the CUDA packages."""
    names = ("numba",) if device_type == "cpu" else ("mamba_ssm", "causal_conv1d", "triton")
    if device_type not in ("cpu", "cuda"):
        names = ()
    return frozenset(n for n in names if backend_available(n))


def check_triton_device(device: torch.device) -> None:
    """Triton kernels need a GPU, or the interpreter (``TRITON_INTERPRET=1``) for CPU tensors."""
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        raise RuntimeError(
            "method 'triton' needs CUDA tensors; on a CPU it runs only under the Triton interpreter "
            "(set TRITON_INTERPRET=1 before importing triton; slow, for tests)"
        )
