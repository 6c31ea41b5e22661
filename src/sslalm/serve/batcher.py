"""Dynamic batching: many concurrent callers, one model thread, batches formed on the fly.

Callers ``submit(payload, key)`` and get a ``concurrent.futures.Future``; one background thread owns the
model and runs ``run_batch(payloads, key) -> results``. The rules, and why:

* **Bounded queue.** At most ``queue_size`` requests wait (running ones not counted); ``submit`` raises
  ``QueueFull`` beyond that, so an overloaded server answers "busy, retry" at once instead of piling up
  memory and latency without limit.
* **Short wait for company.** The oldest waiting request waits at most ``wait_s`` (measured from its
  arrival) for others to join it, up to ``max_batch``. Under load the worker comes back from a batch to find
  the oldest request already past its deadline and takes what is there without waiting; when idle, a lone
  request pays at most ``wait_s`` extra latency.
* **Only compatible requests share a batch.** ``key`` is anything hashable; one batch holds one key (the
  server uses the generation settings, since ``SSLALM.generate`` takes one set per call, and a unique key for
  seeded sampling, whose random stream depends on the batch). Requests keep first-in-first-out order: the
  oldest request's key forms the next batch, others wait their turn.
* **Failures stay local.** If a batch of several raises, each request is retried alone, so one bad input
  fails only its own future. An exception in a single run is set on that future.
* **Cancelled futures are skipped** (a client that hung up costs no model time).
* **Graceful close.** ``close(drain=True)`` refuses new work and finishes what is queued; ``drain=False``
  fails the queued futures with ``BatcherClosed``.

We write this rather than use a library: the candidates (Ray Serve's ``@serve.batch``, NVIDIA Triton,
TorchServe) are whole serving systems, and the rules above fit in one small thread.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """The bounded queue is full; retry later."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no new work."""


@dataclass
class Completed:
    """What a request's future resolves to: the result and how it was served."""

    value: Any
    batch_size: int  # requests in the model call that produced it
    queue_s: float  # from submit to the start of that call
    run_s: float  # duration of that call


@dataclass
class _Job:
    payload: Any
    key: Hashable
    future: Future
    t_submit: float = field(default_factory=time.monotonic)


class QueueWorker:
    """What both batching engines share: a bounded queue of jobs, one worker thread, pause and close.

    Subclasses set up their own fields, then call ``_start(name)``; they implement ``_new_job(payload, key)
    -> (job, handle)`` (the handle is what ``submit`` returns), ``_fail(job, error)`` and ``_loop``.
    """

    def __init__(self, max_batch: int, queue_size: int):
        self.max_batch = max_batch
        self.queue_size = queue_size
        self._pending: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._paused = False
        self._counts: collections.Counter[str] = collections.Counter()
        self._sizes: collections.Counter[int] = collections.Counter()  # rows per model call -> calls
        self._busy_s = 0.0

    def _start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _new_job(self, payload: Any, key: Hashable) -> tuple[Any, Any]:
        raise NotImplementedError

    def _fail(self, job: Any, error: BaseException) -> None:
        raise NotImplementedError

    def _loop(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ callers
    def submit(self, payload: Any, key: Hashable = None) -> Any:
        """Queue one request; returns its handle. Raises ``QueueFull`` or ``BatcherClosed`` instead."""
        job, handle = self._new_job(payload, key)
        with self._cond:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            if len(self._pending) >= self.queue_size:
                self._counts["rejected"] += 1
                raise QueueFull(
                    f"{len(self._pending)} requests are already waiting (queue size {self.queue_size})"
                )
            self._pending.append(job)
            self._counts["submitted"] += 1
            self._cond.notify_all()
        return handle

    def is_full(self) -> bool:
        with self._cond:
            return len(self._pending) >= self.queue_size

    @property
    def closed(self) -> bool:
        return self._closed

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    # ------------------------------------------------------------------ control
    def pause(self) -> None:
        """Start nothing new (what runs finishes). For tests and maintenance."""
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Refuse new work; finish the queue (``drain``) or fail it (``BatcherClosed``); join the thread."""
        with self._cond:
            self._closed = True
            self._paused = False
            if not drain:
                while self._pending:
                    self._fail(
                        self._pending.popleft(), BatcherClosed("the server shut down before this request ran")
                    )
                    self._counts["failed"] += 1
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning("%s still running after %.1f s", self._thread.name, timeout or 0.0)


class DynamicBatcher(QueueWorker):
    """One worker thread that groups submitted requests into batches (see the module docstring).

    Args:
        run_batch: ``(payloads, key) -> results`` (same length and order); called on the worker thread only.
        max_batch: most requests per call.
        wait_s: longest time the oldest request waits for others to join its batch.
        queue_size: most requests waiting (not counting the batch running).
    """

    def __init__(
        self,
        run_batch: Callable[[list[Any], Hashable], Sequence[Any]],
        max_batch: int = 8,
        wait_s: float = 0.01,
        queue_size: int = 64,
        name: str = "sslalm-batcher",
    ):
        if max_batch < 1 or queue_size < 1 or wait_s < 0:
            raise ValueError(
                f"need max_batch >= 1, queue_size >= 1, wait_s >= 0; got {max_batch}, {queue_size}, {wait_s}"
            )
        super().__init__(max_batch, queue_size)
        self.run_batch = run_batch
        self.wait_s = wait_s
        self._running = 0  # requests in the call now running
        self._last_batch_s = 0.0
        self._start(name)

    def _new_job(self, payload: Any, key: Hashable) -> tuple[_Job, Future]:
        future: Future = Future()
        return _Job(payload, key, future), future

    def _fail(self, job: _Job, error: BaseException) -> None:
        if job.future.set_running_or_notify_cancel():
            job.future.set_exception(error)

    def retry_after_s(self) -> int:
        """A whole-second hint for clients turned away: the time to serve the queue at the last batch rate."""
        with self._cond:
            waves = (len(self._pending) + self._running) / self.max_batch
            return max(1, round(waves * self._last_batch_s + 0.5))

    def stats(self) -> dict[str, Any]:
        """Counters since start: requests, batches, batch-size histogram, queue depth, busy seconds."""
        with self._cond:
            batches = self._counts["batches"]
            served = sum(size * n for size, n in self._sizes.items())
            return {
                "requests": self._counts["submitted"],
                "completed": self._counts["completed"],
                "failed": self._counts["failed"],
                "rejected": self._counts["rejected"],
                "cancelled": self._counts["cancelled"],
                "batches": batches,
                "max_batch_seen": max(self._sizes, default=0),
                "mean_batch_size": served / batches if batches else 0.0,
                "batch_sizes": {str(k): v for k, v in sorted(self._sizes.items())},
                "queue_depth": len(self._pending),
                "running": self._running,
                "busy_s": round(self._busy_s, 6),
                "max_batch": self.max_batch,
                "queue_size": self.queue_size,
                "wait_ms": self.wait_s * 1000.0,
            }

    # ------------------------------------------------------------------ worker
    def _next_batch(self) -> list[_Job] | None:
        """Block until a batch is due; None when closed and drained."""
        with self._cond:
            while True:
                while (not self._pending or self._paused) and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return None  # closed and empty
                first = self._pending[0]
                deadline = first.t_submit + self.wait_s
                while not self._closed and not self._paused:
                    same = sum(1 for job in self._pending if job.key == first.key)
                    remaining = deadline - time.monotonic()
                    if same >= self.max_batch or remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._paused and not self._closed:
                    continue  # paused while waiting: go back to sleep with the queue intact
                batch = [job for job in self._pending if job.key == first.key][: self.max_batch]
                for job in batch:
                    self._pending.remove(job)
                self._running = len(batch)
                return batch

    def _loop(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            live = [job for job in batch if job.future.set_running_or_notify_cancel()]
            with self._cond:
                self._counts["cancelled"] += len(batch) - len(live)
            if live:
                self._run(live)
            with self._cond:
                self._running = 0

    def _run(self, jobs: list[_Job]) -> None:
        start = time.monotonic()
        try:
            results = list(self.run_batch([job.payload for job in jobs], jobs[0].key))
            if len(results) != len(jobs):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} requests")
        except Exception as exc:
            self._record(len(jobs), time.monotonic() - start, ok=0)
            if len(jobs) > 1:
                logger.warning("batch of %d failed (%s); retrying each request alone", len(jobs), exc)
                for job in jobs:
                    self._run([job])
                return
            logger.exception("request failed")
            jobs[0].future.set_exception(exc)
            with self._cond:
                self._counts["failed"] += 1
            return
        elapsed = time.monotonic() - start
        self._record(len(jobs), elapsed, ok=len(jobs))
        for job, value in zip(jobs, results):
            job.future.set_result(Completed(value, len(jobs), start - job.t_submit, elapsed))

    def _record(self, size: int, elapsed: float, ok: int) -> None:
        with self._cond:
            self._counts["batches"] += 1
            self._counts["completed"] += ok
            self._sizes[size] += 1
            self._busy_s += elapsed
            self._last_batch_s = elapsed
