"""What every Triton kernel of ``sslalm.ops`` checks before it launches: that triton is installed, and that
the tensors are on a CUDA device or Triton's CPU interpreter is switched on.

Triton decides at the moment a kernel is decorated (``@triton.jit``) whether it compiles for the GPU or
runs in the interpreter (``TRITON_INTERPRET=1``: every program of the grid executed one after the other
on CPU tensors, with numpy). So the kernels live in their own modules (``scan_triton_kernels``,
``conv1d_triton_kernels``) that the public wrappers import on their first launch, after these checks:
importing ``sslalm.ops.scan_triton`` never needs triton, and setting ``TRITON_INTERPRET=1`` any time before
the first kernel call is enough for our kernels. Triton's own library functions (``tl.sum``, ``tl.sigmoid``)
are decorated when triton itself is imported, though, and other packages import it early (peft does): so
the variable must be set before anything imports triton, i.e. at process start. ``load_kernels`` checks and
says so instead of failing inside the interpreter. Within a running process (tests, a notebook),
``cpu_interpreter()`` switches everything over for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterator
from types import ModuleType

import torch

KERNEL_MODULES = ("sslalm.ops.scan_triton_kernels", "sslalm.ops.conv1d_triton_kernels")
INSTALL_HINT = (
    "the Triton kernels need the 'triton' package: `pip install triton` (PyTorch's CUDA wheels already "
    "ship it; for CPU tests under TRITON_INTERPRET=1 install it beside the CPU wheel, as "
    "`pip install sslalm[test]` does)"
)


def interpret_requested() -> bool:
    """True when ``TRITON_INTERPRET`` asks for Triton's CPU interpreter (read as triton reads it)."""
    try:
        from triton import knobs
    except ImportError:  # triton < 3.4
        return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes", "y")
    return bool(knobs.runtime.interpret)


def require_triton() -> ModuleType:
    """Import triton, or raise an ImportError that says how to install it."""
    try:
        import triton
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return triton


def stdlib_interpreted() -> bool:
    """Whether ``tl.sum`` and ``tl.sigmoid``, which the kernels call, run under the interpreter."""
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(tl.sum, InterpretedFunction) and isinstance(tl.sigmoid, InterpretedFunction)


def load_kernels(module: str, *tensors: torch.Tensor | None) -> ModuleType:
    """Check that ``tensors`` can be handed to a Triton kernel, then import the kernel module ``module``.

    CUDA tensors need a compiled kernel, CPU tensors the interpreter; anything else raises a RuntimeError
    that says why. A kernel module imported in one mode stays in it (Triton's choice is made at decoration),
    so mixing CUDA and interpreted launches in one process is refused rather than run wrongly.
    """
    require_triton()
    devices = {t.device.type for t in tensors if t is not None}
    if devices - {"cuda", "cpu"} or len(devices) > 1:
        raise RuntimeError(f"Triton kernels need all tensors on one CUDA device (or CPU), got {devices}")
    on_cpu = devices == {"cpu"}
    if on_cpu and not interpret_requested():
        raise RuntimeError(
            "the Triton kernels got CPU tensors: move them to a CUDA device, or set TRITON_INTERPRET=1 "
            "(before the process starts) to run them, slowly, in Triton's CPU interpreter"
        )
    if on_cpu and not stdlib_interpreted():
        raise RuntimeError(
            "TRITON_INTERPRET=1 was set after triton was imported (peft, for one, imports it), so its own "
            "library functions were compiled for the GPU: set it before the process starts"
        )
    kernels = importlib.import_module(module)
    if on_cpu != kernels.INTERPRETED:
        mode = "the CPU interpreter" if kernels.INTERPRETED else "CUDA"
        raise RuntimeError(f"{module} was loaded for {mode}; a process cannot mix CUDA and interpreted runs")
    return kernels


def _drop_kernel_modules() -> None:
    for name in KERNEL_MODULES:
        sys.modules.pop(name, None)


@contextlib.contextmanager
def cpu_interpreter() -> Iterator[None]:
    """Run our Triton kernels on CPU tensors under Triton's interpreter inside this block, even if triton was
    imported earlier without ``TRITON_INTERPRET`` (as in a test session, where peft imports it).

    Sets ``TRITON_INTERPRET=1``, replaces ``triton.language``'s compiled library functions (``tl.sum``,
    ``tl.sigmoid``, ...) by interpreted twins and drops our kernel modules so that they are reloaded
    interpreted. On exit all of that is undone and the kernel modules are dropped again, so the next launch
    loads them in whichever mode the environment then asks for. Process-wide: not for concurrent threads.
    """
    require_triton()
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    saved_env = os.environ.get("TRITON_INTERPRET")
    compiled = {name: fn for name, fn in vars(tl).items() if isinstance(fn, JITFunction)}
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        for name, fn in compiled.items():
            setattr(tl, name, InterpretedFunction(fn.fn))
        _drop_kernel_modules()
        yield
    finally:
        for name, fn in compiled.items():
            setattr(tl, name, fn)
        if saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved_env
        _drop_kernel_modules()
