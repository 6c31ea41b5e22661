"""Shared measurement helpers for the benchmarks: CPU time, wall time, peak memory, tables.

Peak memory is measured by running each case in a fresh child process (``run_isolated``) and reading the
child's peak resident set size, so one case's allocations never hide another's. On CUDA,
``torch.cuda.max_memory_allocated`` is used instead.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any


def _child(conn, fn: Callable[..., dict], args: tuple, kwargs: dict) -> None:
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        result = fn(*args, **kwargs)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
        result.setdefault("peak_rss_mb", peak / 1024)
        result.setdefault("baseline_rss_mb", before / 1024)
        conn.send(("ok", result))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., dict], *args: Any, timeout: float | None = None, **kwargs: Any) -> dict:
    """Run ``fn(*args, **kwargs) -> dict`` in a fresh spawned process and return its dict.

    The dict gains ``peak_rss_mb`` (the child's peak resident memory) unless ``fn`` set it. ``fn`` must be a
    module-level function (it is pickled). Raises RuntimeError with the child's error message on failure.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs))
    proc.start()
    child.close()
    if not parent.poll(timeout):
        proc.kill()
        raise RuntimeError(f"benchmark case timed out after {timeout} s")
    status, payload = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(payload)
    return payload


def timed(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, cuda: bool = False) -> dict:
    """Median wall and CPU seconds of ``fn()`` over ``repeats`` calls after ``warmup`` calls."""
    import torch

    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        if cuda:
            torch.cuda.synchronize()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    walls.sort()
    cpus.sort()
    return {"wall_s": walls[len(walls) // 2], "cpu_s": cpus[len(cpus) // 2]}


def format_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain-text table with right-aligned numbers (floats to 3 significant digits)."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


@contextlib.contextmanager
def torch_kernels_only(enabled: bool = True):
    """Within the block (when ``enabled``), ``auto`` dispatch ignores numba: the torch kernels run, as before
    the compiled ones existed. Restores the environment and the backend probe afterwards."""
    from sslalm.ops.dispatch import backend_available

    old = os.environ.get("SSLALM_DISABLE_NUMBA")
    if enabled:
        os.environ["SSLALM_DISABLE_NUMBA"] = "1"
    backend_available.cache_clear()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("SSLALM_DISABLE_NUMBA", None)
        else:
            os.environ["SSLALM_DISABLE_NUMBA"] = old
        backend_available.cache_clear()
