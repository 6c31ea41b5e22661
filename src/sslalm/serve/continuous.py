"""Continuous batching for the Mamba LM: requests join and leave the running decode batch at every step.

A Mamba LM's recurrent state has a fixed size per sequence (``MambaState``: conv and SSM state, no KV cache
that grows with the text), so sequences at different positions can share one ``MambaLM.step`` call: the
batch is just the rows of that state. One worker thread loops:

1. **admit** — up to ``max_prefill`` newcomers (default 1; never beyond ``max_batch`` rows) are taken from
   the bounded queue; each clip is encoded into audio tokens, its prompt embedded, and the newcomers are
   prefilled together (right-padded, ``MambaLM.prefill``). Their states and next-token logits are appended
   to the running batch. Admitting few per turn interleaves the (costly) audio encoding with decode steps,
   so a burst of arrivals does not hold every running row, and every newcomer's first token, behind all
   the burst's encodings.
2. **sample** — one token per row, with each request's own settings (``sslalm.generate``'s pieces: the
   repetition penalty over a per-row "seen" mask, transformers' temperature/top-k/top-p warpers, one
   seeded ``torch.Generator`` per seeded request), so a row draws exactly what ``SSLALM.generate`` draws for
   it alone.
3. **emit** — the new text of each row goes to its ``Generation`` handle at once (SSE and the page read it).
4. **retire** — rows that met EOS, a stop string, ``max_new_tokens`` or a cancelled client leave now.
5. **step** — the remaining rows advance by one token (``MambaLM.step``, state updated in place).

Nothing waits for a batch to drain: a request arriving mid-generation starts at the next loop turn. The
running state holds ``max_batch`` rows at most, so memory is bounded by ``max_batch`` and ``queue_size``.

The prompt is built as ``SSLALM.generate`` builds it (whole-clip fbank, padded to ``min_inference_frames``;
audio tokens, then the alpaca prompt's embeddings); ``tests/test_serve.py`` checks that greedy answers equal
``SSLALM.ask(..., do_sample=False)`` and seeded ones equal one-by-one seeded generation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from sslalm.serve.batcher import Completed, QueueWorker

logger = logging.getLogger(__name__)


@dataclass
class Finished:
    """What a generation produced (``Generation.future`` resolves to a ``Completed`` of it)."""

    text: str
    completion_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length" (max_new_tokens)


class Generation:
    """One request's progress, written by the worker thread and read by any thread or event loop.

    ``text`` grows as tokens are decoded (only text that can no longer change is published: no half UTF-8
    characters, no trailing whitespace that the final answer strips, nothing that may start a stop string);
    ``future`` resolves to ``Completed(value=Finished(...))`` or to the request's exception.
    """

    def __init__(self, on_cancel: Callable[[], Any] | None = None) -> None:
        self.future: Future = Future()
        self._on_cancel = on_cancel
        self.text = ""
        self.first_token_s: float | None = None  # monotonic time of the first published token
        self.cancelled = False
        self._cond = threading.Condition()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []  # async readers

    # ---------------------------------------------------------------- worker side
    def publish(self, text: str, waker: Waker | None = None) -> None:
        """New text (a longer prefix of the answer). With a ``waker``, async readers are woken when it is
        flushed (one wake-up per event loop per decode step instead of one per token and reader)."""
        with self._cond:
            if text == self.text:
                return
            self.text = text
            if self.first_token_s is None:
                self.first_token_s = time.monotonic()
            self._notify(waker)

    def finish(self, done: Completed | None = None, error: BaseException | None = None) -> None:
        with self._cond:
            if not self.future.done():
                if error is not None:
                    self.future.set_exception(error)
                else:
                    self.text = done.value.text
                    self.future.set_result(done)
            self._notify(None)

    def _notify(self, waker: Waker | None) -> None:
        """(Under ``_cond``.) Wake threads now, async readers now or through ``waker``; an event still set
        is skipped: its reader has not looked yet and will read the newest text under the same lock."""
        self._cond.notify_all()
        for loop, event in self._waiters:
            if event.is_set():
                continue
            if waker is None:
                loop.call_soon_threadsafe(event.set)
            else:
                waker.add(loop, event)

    # ---------------------------------------------------------------- reader side
    @property
    def done(self) -> bool:
        return self.future.done()

    def cancel(self) -> None:
        """The client left: the worker drops this request at its next step (or never starts it)."""
        self.cancelled = True
        self.future.cancel()  # succeeds only while queued; a running one is dropped by the worker
        if self._on_cancel is not None:
            self._on_cancel()

    def wait_text(self, known: int, timeout: float | None = None) -> tuple[str, bool]:
        """Block until the text is longer than ``known`` characters or the request ended; (text, done)."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.text) > known or self.future.done(), timeout)
            return self.text, self.future.done()

    async def deltas(self) -> AsyncIterator[str]:
        """New text as it is published, on the caller's event loop; ends when the request ends (raises its
        error, if any)."""
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        with self._cond:
            self._waiters.append((loop, wake))
        sent = 0
        try:
            while True:
                with self._cond:
                    text, finished = self.text, self.future.done()
                    wake.clear()
                if finished:
                    final = self.future.result().value.text  # raises the request's error
                    if final.startswith(text[:sent]) and len(final) > sent:
                        yield final[sent:]
                    return
                if len(text) > sent:
                    yield text[sent:]
                    sent = len(text)
                await wake.wait()
        finally:
            with self._cond:
                self._waiters.remove((loop, wake))


class Waker:
    """Async readers to wake after a decode step, grouped by loop: one ``call_soon_threadsafe`` per loop."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, list[asyncio.Event]] = collections.defaultdict(list)

    def add(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self._events[loop].append(event)

    def flush(self) -> None:
        for loop, events in self._events.items():
            with contextlib.suppress(RuntimeError):  # a loop that has closed: nobody to wake
                loop.call_soon_threadsafe(_set_all, events)
        self._events = collections.defaultdict(list)


def _set_all(events: list[asyncio.Event]) -> None:
    for event in events:
        event.set()


@dataclass
class _Job:
    payload: Any  # (wave (num_samples,), question, settings dict)
    generation: Generation
    t_submit: float = field(default_factory=time.monotonic)


class ContinuousBatcher(QueueWorker):
    """The scheduler: a bounded queue, one worker thread and a ``decoder`` that does the model work.

    ``decoder`` provides ``admit(payloads) -> rows`` (prefill the newcomers, append them to the running
    batch), ``sample() -> None`` (one token per row, text published to each row's ``Generation``),
    ``retire() -> list[(index, Finished | None)]`` and ``step()``; ``MambaDecoder`` below is the one used
    for ``SSLALM``. Same public surface as ``DynamicBatcher`` (``submit``, ``stats``, ``pause``, ``close``,
    ...), so the service and its tests treat both alike.
    """

    def __init__(
        self,
        decoder: Any,
        max_batch: int = 8,
        queue_size: int = 64,
        max_prefill: int = 1,
        name: str = "sslalm-decoder",
    ):
        if max_batch < 1 or queue_size < 1:
            raise ValueError(f"need max_batch >= 1 and queue_size >= 1; got {max_batch}, {queue_size}")
        super().__init__(max_batch, queue_size)
        self.decoder = decoder
        self.max_prefill = max(1, max_prefill)
        self._running: list[_Job] = []
        self._step_s = 0.0  # last decode step's duration
        self._start(name)

    def _new_job(self, payload: Any, key: Hashable) -> tuple[_Job, Generation]:
        generation = Generation()
        return _Job(payload, generation), generation

    def _fail(self, job: _Job, error: BaseException) -> None:
        job.generation.finish(error=error)

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: the queue ahead at the last step rate, 64 tokens each."""
        with self._cond:
            waves = (len(self._pending) + len(self._running)) / self.max_batch
            return max(1, round(waves * 64 * self._step_s + 0.5))

    def stats(self) -> dict[str, Any]:
        with self._cond:
            steps = self._counts["steps"]
            rows = sum(size * n for size, n in self._sizes.items())
            return {
                "engine": "continuous",
                "requests": self._counts["submitted"],
                "completed": self._counts["completed"],
                "failed": self._counts["failed"],
                "rejected": self._counts["rejected"],
                "cancelled": self._counts["cancelled"],
                "batches": steps,  # decode steps (one model call each)
                "prefills": self._counts["prefills"],
                "tokens": self._counts["tokens"],
                "max_batch_seen": max(self._sizes, default=0),
                "mean_batch_size": rows / steps if steps else 0.0,
                "queue_depth": len(self._pending),
                "running": len(self._running),
                "busy_s": round(self._busy_s, 6),
                "max_batch": self.max_batch,
                "queue_size": self.queue_size,
            }

    # ---------------------------------------------------------------- worker
    def _take(self) -> list[_Job] | None:
        """Newcomers to admit now (possibly none while rows are running); None when closed and idle."""
        with self._cond:
            while not self._running and (not self._pending or self._paused) and not self._closed:
                self._cond.wait()
            if not self._running and not self._pending:
                return None
            if self._paused and not self._closed:
                return []
            room = min(self.max_batch - len(self._running), self.max_prefill)
            jobs = []
            while self._pending and len(jobs) < room:
                job = self._pending.popleft()
                if job.generation.future.set_running_or_notify_cancel():
                    jobs.append(job)
                else:
                    self._counts["cancelled"] += 1
            return jobs

    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                jobs = self._take()
                if jobs is None:
                    return
                start = time.monotonic()
                if jobs:
                    self._admit(jobs)
                if self._running:
                    self._decode_once(start)
                elif not jobs:
                    with self._cond:  # paused with nothing running: sleep until resumed
                        self._cond.wait(0.05)

    def _admit(self, jobs: list[_Job]) -> None:
        t_start = time.monotonic()
        try:
            self.decoder.admit([job.payload for job in jobs], [job.generation for job in jobs])
        except Exception as exc:
            if len(jobs) > 1:  # find the bad one: admit each alone
                logger.warning("prefill of %d requests failed (%s); admitting each alone", len(jobs), exc)
                for job in jobs:
                    self._admit([job])
                return
            logger.exception("request failed in prefill")
            jobs[0].generation.finish(error=exc)
            with self._cond:
                self._counts["failed"] += 1
            return
        for job in jobs:
            job.t_start = t_start  # type: ignore[attr-defined]
        with self._cond:
            self._running.extend(jobs)
            self._counts["prefills"] += 1

    def _decode_once(self, start: float) -> None:
        try:
            self.decoder.sample()
            ended = self.decoder.retire([job.generation.cancelled for job in self._running])
            now = time.monotonic()
            for index, finished in sorted(ended, reverse=True):
                job = self._running.pop(index)
                if finished is None:
                    with self._cond:
                        self._counts["cancelled"] += 1
                    job.generation.finish(error=RequestCancelled("the client went away"))
                    continue
                t_start = getattr(job, "t_start", job.t_submit)
                done = Completed(finished, self._peak_rows(job), t_start - job.t_submit, now - t_start)
                with self._cond:  # count first: a client reading /metrics after its answer sees it
                    self._counts["completed"] += 1
                    self._counts["tokens"] += finished.completion_tokens
                job.generation.finish(done)
            if self._running:
                rows = len(self._running)
                self.decoder.step()
                with self._cond:
                    self._counts["steps"] += 1
                    self._sizes[rows] += 1
                    for job in self._running:
                        job.peak = max(getattr(job, "peak", 0), rows)  # type: ignore[attr-defined]
        except Exception as exc:  # a model failure: fail every running request, keep serving
            logger.exception("decode step failed; failing %d running requests", len(self._running))
            for job in self._running:
                job.generation.finish(error=exc)
            with self._cond:
                self._counts["failed"] += len(self._running)
            self._running.clear()
            self.decoder.reset()
        elapsed = time.monotonic() - start
        with self._cond:
            self._busy_s += elapsed
            self._step_s = elapsed

    @staticmethod
    def _peak_rows(job: _Job) -> int:
        return max(1, getattr(job, "peak", 1))


class RequestCancelled(Exception):
    """Set on a generation whose client left (nobody reads it)."""


# ------------------------------------------------------------------------------------------ the Mamba decoder


@dataclass
class _Row:
    generation: Generation
    config: Any  # sslalm.generate.GenerationConfig
    stop: tuple[str, ...]
    generator: Any = None  # torch.Generator for seeded sampling
    ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    published: str = ""


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string (and whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


def _stop_holdback(text: str, stop: Sequence[str]) -> int:
    """Characters at the end of ``text`` that may be the start of a stop string (not published yet)."""
    hold = 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    return hold


class MambaDecoder:
    """The model side of continuous batching for an ``SSLALM`` whose LM is a ``MambaLM``.

    Holds the running batch: ``state`` (``MambaState`` with one row per request), ``logits`` (B, V) for the
    next token, ``seen`` (B, V) bool (the repetition penalty's mask), ``tokens`` (B,) just sampled.
    """

    def __init__(self, model: Any):
        self.model = model
        self.lm = model.lm
        self.tokenizer = model.tokenizer
        self._warpers: dict[Hashable, Any] = {}
        self.reset()

    def reset(self) -> None:
        self.rows: list[_Row] = []
        self.state = None
        self.logits = None
        self.seen = None
        self.tokens = None

    # ---------------------------------------------------------------- prompts
    def prompt_embeddings(self, wave: Any, question: str) -> Any:
        """(L, d) prompt embeddings of one 16 kHz clip (num_samples,) and question: exactly what
        ``SSLALM.generate`` decodes from (``SSLALM.prompt_embeddings``)."""
        return self.model.prompt_embeddings([wave], [question])[0]

    def generation_config(self, settings: dict[str, Any]) -> Any:
        from sslalm.generate import GenerationConfig

        tok = self.tokenizer
        known = {f.name for f in dataclasses.fields(GenerationConfig)}
        gen = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
        return dataclasses.replace(gen, **{k: v for k, v in settings.items() if k in known})

    # ---------------------------------------------------------------- the scheduler's calls
    def admit(self, payloads: list[tuple[Any, str, dict[str, Any]]], generations: list[Generation]) -> None:
        """Prefill the newcomers together and append their rows to the running batch."""
        import torch
        from torch import nn

        from sslalm.models.mamba import MambaState

        seqs = [self.prompt_embeddings(wave, question) for wave, question, _ in payloads]
        lengths = torch.tensor([s.shape[0] for s in seqs])
        embeds = nn.utils.rnn.pad_sequence(seqs, batch_first=True)  # right-padded (B, L, d)
        logits, state = self.lm.prefill(inputs_embeds=embeds, lengths=lengths)
        rows = []
        for (_, _, settings), generation in zip(payloads, generations, strict=True):
            config = self.generation_config(settings)
            generator = None
            if config.seed is not None and not config.greedy:
                generator = torch.Generator(device=logits.device).manual_seed(config.seed)
            rows.append(_Row(generation, config, tuple(settings.get("stop") or ()), generator))
        seen = torch.zeros(len(rows), logits.shape[1], dtype=torch.bool, device=logits.device)
        if self.state is None:
            self.state, self.logits, self.seen = state, logits, seen
        else:
            self.state = MambaState(
                torch.cat([self.state.conv, state.conv], dim=1), torch.cat([self.state.ssm, state.ssm], dim=1)
            )
            self.logits = torch.cat([self.logits, logits])
            self.seen = torch.cat([self.seen, seen])
        self.rows.extend(rows)

    def _warpers_for(self, config: Any) -> Any:
        from sslalm.generate import Sampler

        key = (config.temperature, config.top_k, config.top_p)
        if key not in self._warpers:
            self._warpers[key] = Sampler(
                dataclasses.replace(config, seed=None), self.logits.shape[1], "cpu"
            ).warpers
        return self._warpers[key]

    def sample(self) -> None:
        """One token per row (``sslalm.generate.Sampler``'s rule, rows grouped by equal settings)."""
        import torch

        from sslalm.generate import apply_repetition_penalty

        batch = len(self.rows)
        device = self.logits.device
        tokens = torch.empty(batch, dtype=torch.long, device=device)
        groups: dict[Hashable, list[int]] = collections.defaultdict(list)
        for i, row in enumerate(self.rows):
            c = row.config
            groups[(c.greedy, c.temperature, c.top_k, c.top_p, c.repetition_penalty)].append(i)
        for index in groups.values():
            config = self.rows[index[0]].config
            where = torch.tensor(index, device=device)
            scores = apply_repetition_penalty(
                self.logits[where].float(), self.seen[where], config.repetition_penalty
            )
            if config.greedy:
                tokens[where] = scores.argmax(-1)
                continue
            probs = torch.softmax(self._warpers_for(config)(None, scores), dim=-1)
            free = [j for j, i in enumerate(index) if self.rows[i].generator is None]
            if free:
                picked = torch.multinomial(probs[free], 1)[:, 0]
                tokens[where[free]] = picked
            for j, i in enumerate(index):
                if self.rows[i].generator is not None:
                    tokens[i] = torch.multinomial(probs[j : j + 1], 1, generator=self.rows[i].generator)[0, 0]
        self.seen[torch.arange(batch, device=device), tokens] = True
        self.tokens = tokens
        waker = Waker()
        for row, token in zip(self.rows, tokens.tolist(), strict=True):
            self._advance(row, token, waker)
        waker.flush()

    def _advance(self, row: _Row, token: int, waker: Waker | None = None) -> None:
        config = row.config
        if config.eos_token_id is not None and token == config.eos_token_id:
            row.finish_reason = "stop"
            return
        row.ids.append(token)
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True).lstrip()
        text, stopped = _cut_at_stop(text, row.stop)
        if stopped:
            row.finish_reason = "stop"
            return
        if len(row.ids) >= config.max_new_tokens:
            row.finish_reason = "length"
            return
        if text.endswith("\ufffd"):  # half a UTF-8 character: wait for the rest
            return
        safe = text.rstrip()
        safe = safe[: len(safe) - _stop_holdback(safe, row.stop)]
        if len(safe) > len(row.published) and safe.startswith(row.published):
            row.published = safe
            row.generation.publish(safe, waker)

    def final_text(self, row: _Row) -> str:
        text = self.tokenizer.decode(row.ids, skip_special_tokens=True).strip()
        return _cut_at_stop(text, row.stop)[0].strip() if row.stop else text

    def retire(self, cancelled: list[bool]) -> list[tuple[int, Finished | None]]:
        """Rows that are done (or whose client left) leave the batch now; (index, Finished or None)."""
        import torch

        ended = []
        keep = []
        for i, (row, gone) in enumerate(zip(self.rows, cancelled, strict=True)):
            if gone:
                ended.append((i, None))
            elif row.finish_reason is not None:
                ended.append((i, Finished(self.final_text(row), len(row.ids), row.finish_reason)))
            else:
                keep.append(i)
        if ended:
            if not keep:
                self.reset()
            else:
                where = torch.tensor(keep, device=self.logits.device)
                self.rows = [self.rows[i] for i in keep]
                self.state = self.state.select(where)
                self.seen = self.seen[where]
                self.tokens = self.tokens[where]
        return ended

    def step(self) -> None:
        """Advance every running row by its sampled token (``MambaLM.step``, in place)."""
        self.logits = self.lm.step(self.tokens, state=self.state)
