"""The measurement kit of ``sslalm bench`` and ``sslalm demo``: isolated processes, CPU and wall time, peak
memory, the greedy decode loop, tables.

* Peak memory: each case runs in a fresh child process (``run_isolated``) and reports the child's peak
  resident set size, so one case's allocations never hide another's. Inside a process, ``reset_peak_rss``
  starts the count afresh (Linux: the high-water mark ``VmHWM`` is reset through ``/proc/self/clear_refs``,
  so the imports before it do not count) and ``peak_rss`` reads it. On CUDA,
  ``torch.cuda.max_memory_allocated`` is used instead.
* ``timed``: median wall and CPU seconds of a call.
* ``greedy_decode``: the timed decode loop over any LM backend's ``prefill``/``step``
  (``sslalm.models.backends``): one new token per step on the backend's cache (Mamba's state,
  transformers' KV cache), never stopping at EOS.
* ``format_table``: aligned plain-text or Markdown tables.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import resource
import time
from collections.abc import Callable, Sequence
from typing import Any


def _status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_peak_rss() -> float:
    """Start peak-memory tracking here; returns the current RSS in MB.

    On Linux the process's high-water mark is reset; elsewhere ``peak_rss`` reports the whole process's
    peak (``getrusage``), imports included.
    """
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        pass
    now = _status_mb("VmRSS")
    return now if now is not None else _maxrss_mb()


def peak_rss() -> float:
    """Peak RSS in MB since the last ``reset_peak_rss`` (Linux), else since the process started."""
    hwm = _status_mb("VmHWM")
    return hwm if hwm is not None else _maxrss_mb()


def _exit_with_parent(parent_pid: int, poll_s: float = 1.0) -> None:
    """Leave (exit status 1) as soon as the parent process is gone: a parent killed by a signal cannot stop
    its children, and a training child left behind would hold the CPUs for many minutes."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _child(conn, fn: Callable[..., dict], args: tuple, kwargs: dict, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    try:
        before = peak_rss()
        result = fn(*args, **kwargs)
        result.setdefault("peak_rss_mb", peak_rss())
        result.setdefault("baseline_rss_mb", before)
        conn.send(("ok", result))
    except BaseException as exc:  # report, never hang the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def run_isolated(fn: Callable[..., dict], *args: Any, timeout: float | None = None, **kwargs: Any) -> dict:
    """Run ``fn(*args, **kwargs) -> dict`` in a fresh spawned process and return its dict.

    The dict gains ``peak_rss_mb`` (the child's peak resident memory) unless ``fn`` set it. ``fn`` must be a
    module-level function (it is pickled). Raises RuntimeError with the child's error message on failure.
    The child exits within about a second when this process dies (killed by a signal, say) without it.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(child, fn, args, kwargs, os.getpid()))
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


def greedy_decode(
    backend: Any, lm: Any, logits: Any, cache: Any, new_tokens: int
) -> tuple[float, list[list[int]]]:
    """Seconds per decoded token after a prefill, and the greedy tokens of each row.

    ``logits`` (B, V) and ``cache`` are what ``backend.prefill(lm, ...)`` returned; the first token is the
    prefill's argmax, then ``new_tokens`` steps of ``backend.step`` are timed (no EOS stop, so models
    decode alike). Returns (seconds per step, B lists of ``new_tokens + 1`` ids).
    """
    token = logits.argmax(-1)  # (B,)
    tokens = [token]
    start = time.perf_counter()
    for _ in range(new_tokens):
        logits, cache = backend.step(lm, token, cache)
        token = logits.argmax(-1)
        tokens.append(token)
    seconds = (time.perf_counter() - start) / max(new_tokens, 1)
    return seconds, [list(map(int, row)) for row in zip(*(t.tolist() for t in tokens), strict=True)]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table of already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def format_table(rows: Sequence[dict], columns: Sequence[str], markdown: bool = False) -> str:
    """A table of ``rows`` (dicts) in ``columns``: aligned plain text with right-aligned values, or a
    Markdown table; floats to 3 significant digits, missing values empty."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return "" if v is None else str(v)

    cells = [[fmt(r.get(c)) for c in columns] for r in rows]
    if markdown:
        return markdown_table(columns, cells)
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
