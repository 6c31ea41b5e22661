"""The model behind both front ends (HTTP API and Gradio app): limits, input checks, batched answers.

``ModelService`` owns one ``SSLALM`` and one batching engine: ``ContinuousBatcher`` with ``MambaDecoder``
(``sslalm.serve.continuous``) for Mamba LMs, where requests join and leave the running decode batch at every
token, or ``DynamicBatcher`` (``sslalm.serve.batcher``: whole ``SSLALM.generate`` calls on batches formed
on the fly) for transformers LMs, whose KV cache has no fixed-size state to splice rows into. Front ends turn
their inputs into a waveform with ``decode_bytes`` / ``decode_array`` and the form or JSON fields into
generation settings with ``generation_settings`` (defaults and ranges from ``sslalm.generation_settings``,
the one table shared with ``sslalm ask``), then call ``start`` (a ``Generation`` whose text grows as tokens
are decoded), ``submit`` (a future) or ``ask`` (blocking).
Every refusal is a ``RequestError`` carrying an HTTP status and a message meant for the user:

=====  ==========================================================================================
400    unreadable audio (``sslalm.audio.AudioError``'s message), missing or malformed fields
413    encoded audio (or the request body) larger than ``max_upload_mb``
422    audio longer than ``max_audio_seconds``; a generation value out of range; question too long
503    the queue is full (``Retry-After`` says when to come back) or the server is shutting down
=====  ==========================================================================================

Audio only ever comes as bytes or samples; nothing a client sends is opened as a server-side path.

Batching is transparent. Continuous batching samples each row with its own settings (and its own seeded
generator), so any requests share a decode step. The dynamic engine lets requests share a model call only
when their settings are equal, and runs seeded sampling alone (transformers samples from one global stream).
"""

from __future__ import annotations

import collections
import io
import itertools
import logging
import threading
import time
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sslalm.audio import SAMPLE_RATE
from sslalm.generation_settings import (
    GENERATION_FIELDS,
    MAX_AUDIO_SECONDS,
    GenerationSettingsError,
    generation_defaults,
    validate_generation,
    validate_question,
)
from sslalm.serve.batcher import BatcherClosed, Completed, DynamicBatcher, QueueFull
from sslalm.serve.continuous import ContinuousBatcher, Finished, Generation, MambaDecoder

logger = logging.getLogger(__name__)

MB = 1 << 20


__all__ = ["GENERATION_FIELDS", "AskResult", "ModelService", "RequestError", "ServeLimits", "decode_b64"]


class RequestError(Exception):
    """A refused request: ``status`` (HTTP code), ``message`` for the user, optional extra headers and the
    request field at fault (``param``, reported in the OpenAI error envelope)."""

    def __init__(
        self, status: int, message: str, headers: dict[str, str] | None = None, param: str | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.param = param


@dataclass
class ServeLimits:
    """What one request may ask for. The defaults suit one GPU; the CLI flags of the same names set them."""

    max_batch: int = 8
    batch_wait_ms: float = 10.0
    queue_size: int = 64
    max_upload_mb: float = 50.0  # encoded audio bytes
    max_audio_seconds: float = MAX_AUDIO_SECONDS  # decoded duration (the limit ask and eval share)
    max_new_tokens_limit: int = 512
    max_question_chars: int = 2000
    engine: str = "auto"  # "continuous" (Mamba LMs only), "dynamic", or "auto": continuous where possible
    header_timeout_s: float = 10.0  # a request's headers must arrive within this
    body_timeout_s: float = 30.0  # longest pause between two pieces of a request body
    max_connections: int | None = None  # open connections; None = 2 * (queue_size + max_batch) + 32

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)

    @property
    def connection_cap(self) -> int:
        if self.max_connections is not None:
            return self.max_connections
        return 2 * (self.queue_size + self.max_batch) + 32


@dataclass
class AskResult:
    """One answer and how it was produced (what ``POST /v1/ask`` returns, plus the batch it ran in)."""

    answer: str
    audio_seconds: float
    audio_tokens: int
    batch_size: int  # requests in the model call (dynamic) or most rows decoding beside it (continuous)
    queue_ms: float
    run_ms: float
    completion_tokens: int = 0
    finish_reason: str = "stop"


def decode_b64(text: Any, name: str = "audio_base64") -> bytes:
    """Strict base64 (standard or URL-safe alphabet) -> bytes; a 400 ``RequestError`` otherwise."""
    import base64
    import binascii

    if not isinstance(text, str) or not text:
        raise RequestError(400, f"{name} must be a non-empty base64 string of the audio file's bytes")
    if text.startswith("data:") and "," in text:  # a data URL: data:audio/wav;base64,....
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    try:
        altchars = b"-_" if ("-" in text or "_" in text) else None
        return base64.b64decode(text, altchars=altchars, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(
            400, f"{name} is not valid base64 ({err}); send the file's bytes, not a path"
        ) from None


class ModelService:
    """An ``SSLALM`` behind a batching engine, with the checks every front end needs.

    Args:
        model: a loaded ``SSLALM`` (in eval mode, on its device).
        limits: ``ServeLimits`` (``engine`` picks continuous or dynamic batching).
    """

    def __init__(self, model: Any, limits: ServeLimits | None = None):
        self.model = model
        self.limits = limits or ServeLimits()
        defaults = generation_defaults()
        defaults.pop("seed")
        defaults["max_new_tokens"] = min(defaults["max_new_tokens"], self.limits.max_new_tokens_limit)
        self.default_generation = defaults
        self._solo = itertools.count()
        self._responses: collections.Counter[int] = collections.Counter()
        self._guard: collections.Counter[str] = collections.Counter()  # connection-level refusals
        self._responses_lock = threading.Lock()
        self.started = time.time()
        engine = self.limits.engine
        is_mamba = getattr(model.config, "lm_type", None) == "mamba"
        if engine == "auto":
            engine = "continuous" if is_mamba else "dynamic"
        if engine not in ("continuous", "dynamic"):
            raise ValueError(f"engine must be auto, continuous or dynamic, got {engine!r}")
        if engine == "continuous" and not is_mamba:
            raise ValueError("continuous batching needs a Mamba LM (a fixed-size state per sequence)")
        self.engine = engine
        if engine == "continuous":
            self.batcher: Any = ContinuousBatcher(
                MambaDecoder(model), max_batch=self.limits.max_batch, queue_size=self.limits.queue_size
            )
        else:
            self.batcher = DynamicBatcher(
                self._run_batch,
                max_batch=self.limits.max_batch,
                wait_s=self.limits.batch_wait_ms / 1000.0,
                queue_size=self.limits.queue_size,
            )

    # ------------------------------------------------------------------ inputs
    def generation_settings(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Validated generation keyword arguments for ``SSLALM.generate`` from form/JSON/slider values.

        Unknown names and out-of-range values raise a 422 ``RequestError`` naming the field; ``None`` or ""
        means the default (``sslalm.generation_settings``; ``max_new_tokens`` capped at
        ``max_new_tokens_limit``; no seed = random). A temperature below 1e-3 decodes greedily.
        """
        given = {
            name: value
            for name, value in fields.items()
            if not (value is None or (isinstance(value, str) and not value.strip()))
        }
        try:
            checked = validate_generation(given, max_new_tokens_limit=self.limits.max_new_tokens_limit)
        except GenerationSettingsError as err:
            raise RequestError(422, str(err), param=err.field) from None
        return {**self.default_generation, "seed": None, **checked}

    def check_question(self, question: Any) -> str:
        """The stripped question; 400 when missing or empty, 422 when longer than the server's limit."""
        if not isinstance(question, str) or not question.strip():
            raise RequestError(400, "question is required: a non-empty text field", param="question")
        try:
            return validate_question(question, self.limits.max_question_chars)
        except GenerationSettingsError as err:
            raise RequestError(422, str(err), param="question") from None

    def check_upload_size(self, size: int) -> None:
        if size > self.limits.max_upload_bytes:
            raise RequestError(
                413,
                f"the audio file is {size / MB:.2f} MB; "
                f"this server accepts at most {self.limits.max_upload_mb:g} MB",
            )

    def _check_duration(self, seconds: float) -> None:
        if seconds > self.limits.max_audio_seconds:
            raise RequestError(
                422,
                f"the audio is {seconds:.1f} s long; this server accepts at most "
                f"{self.limits.max_audio_seconds:g} s (cut it into shorter clips)",
            )

    def decode_bytes(self, data: bytes) -> Any:
        """Encoded audio file bytes -> 16 kHz mono float32 tensor (num_samples,), with the size limits.

        The header's duration is checked before decoding where libsndfile can read it, so a long compressed
        file is refused without decoding hours of audio; the decoded length is checked again afterwards.
        """
        from sslalm.audio import AudioError, load_audio

        self.check_upload_size(len(data))
        if not data:
            raise RequestError(400, "the audio file is empty (0 bytes)")
        try:
            import soundfile

            info = soundfile.info(io.BytesIO(data))
            if info.samplerate > 0 and info.frames > 0:
                self._check_duration(info.frames / info.samplerate)
        except RequestError:
            raise
        except Exception:  # unreadable header: let load_audio say what is wrong
            pass
        try:
            wave = load_audio(data, SAMPLE_RATE)
        except AudioError as err:
            raise RequestError(400, str(err)) from None
        self._check_duration(wave.numel() / SAMPLE_RATE)
        return wave

    def decode_array(self, sample_rate: int, samples: np.ndarray) -> Any:
        """In-memory samples (Gradio's ``(sr, int16 array)``) -> 16 kHz mono float32 tensor (num_samples,)."""
        from sslalm.audio import AudioError, load_audio

        array = np.asarray(samples)
        if array.ndim >= 1 and isinstance(sample_rate, (int, np.integer)) and sample_rate > 0:
            self._check_duration(max(array.shape[:2]) / float(sample_rate))
        try:
            wave = load_audio((array, sample_rate), SAMPLE_RATE)
        except AudioError as err:
            raise RequestError(400, str(err)) from None
        self._check_duration(wave.numel() / SAMPLE_RATE)
        return wave

    def audio_tokens(self, num_samples: int) -> int:
        """Audio tokens the model sees for a clip of ``num_samples`` at 16 kHz (short clips are padded)."""
        return int(self.model.num_audio_tokens(self.model.processor.inference_frames(num_samples)))

    def prompt_tokens(self, num_samples: int, question: str) -> int:
        """Tokens the LM reads for a request: the clip's audio tokens plus the prompt's text tokens."""
        return self.audio_tokens(num_samples) + len(self.model.processor.prompt_ids(question))

    # ------------------------------------------------------------------ answering
    def batch_key(self, settings: Mapping[str, Any]) -> Hashable:
        """(Dynamic engine) equal keys may share a batch: equal settings, and never seeded sampling."""
        sampling = settings.get("do_sample", True) and settings.get("temperature", 1.0) > 0
        solo = next(self._solo) if sampling and settings.get("seed") is not None else None
        return (tuple(sorted(settings.items())), solo)

    def start(
        self, wave: Any, question: str, settings: Mapping[str, Any], stop: tuple[str, ...] = ()
    ) -> Generation:
        """Queue one decoded request; its ``Generation`` publishes the answer's text as it is decoded and
        resolves to ``Completed(value=Finished(text, completion_tokens, finish_reason), ...)``.

        ``stop``: strings that end the answer (not included). Raises a 503 ``RequestError`` when the queue is
        full or the service is closing.
        """
        settings = dict(settings)
        try:
            if self.engine == "continuous":
                return self.batcher.submit((wave, question, {**settings, "stop": tuple(stop)}))
            future = self.batcher.submit((wave, question), self.batch_key(settings))
        except QueueFull as err:
            retry = self.batcher.retry_after_s()
            raise RequestError(
                503, f"server busy: {err}; retry in {retry} s", {"Retry-After": str(retry)}
            ) from None
        except BatcherClosed as err:
            raise RequestError(503, str(err), {"Retry-After": "5"}) from None
        generation = Generation(on_cancel=future.cancel)  # cancel() reaches the queued job
        max_new = settings["max_new_tokens"]

        def finished(done: Future) -> None:
            if done.cancelled():
                generation.future.cancel()
                return
            if done.exception() is not None:
                generation.finish(error=done.exception())
                return
            result = done.result()
            text, stopped = result.value, False
            for s in stop:
                if s and s in text:
                    text, stopped = text[: text.index(s)].strip(), True
            n = len(self.model.tokenizer(result.value, add_special_tokens=False)["input_ids"])
            reason = "stop" if stopped or n < max_new else "length"
            generation.finish(
                Completed(Finished(text, n, reason), result.batch_size, result.queue_s, result.run_s)
            )

        future.add_done_callback(finished)
        return generation

    def submit(self, wave: Any, question: str, settings: Mapping[str, Any]) -> Future:
        """Queue one request; the future resolves to ``Completed(value=Finished(...), ...)``."""
        return self.start(wave, question, settings).future

    def result(self, wave: Any, done: Completed) -> AskResult:
        finished: Finished = done.value
        return AskResult(
            answer=finished.text,
            audio_seconds=wave.numel() / SAMPLE_RATE,
            audio_tokens=self.audio_tokens(wave.numel()),
            batch_size=done.batch_size,
            queue_ms=done.queue_s * 1000.0,
            run_ms=done.run_s * 1000.0,
            completion_tokens=finished.completion_tokens,
            finish_reason=finished.finish_reason,
        )

    def ask(
        self, wave: Any, question: str, settings: Mapping[str, Any], timeout: float | None = None
    ) -> AskResult:
        """Blocking: queue one request and wait for its answer."""
        return self.result(wave, self.start(wave, question, settings).future.result(timeout))

    def _run_batch(self, payloads: list[tuple[Any, str]], key: Hashable) -> list[str]:
        settings = dict(key[0])  # key = (sorted settings, solo id or None); see batch_key
        waves = [wave for wave, _ in payloads]
        questions = [question for _, question in payloads]
        return self.model.generate(waves, questions, **settings)

    # ------------------------------------------------------------------ reporting
    def healthy(self) -> bool:
        return self.batcher.is_alive() and not self.batcher.closed

    def info(self) -> dict[str, Any]:
        """A summary of the model and the server's limits (``GET /v1/model``)."""
        model, config = self.model, self.model.config
        param = next(model.parameters())
        return {
            "name": config.name,
            "encoder_type": config.encoder_type,
            "projector_type": config.projector_type,
            "lm_type": config.lm_type,
            "lora_r": config.lora_r,
            "lora_target_modules": list(config.lora_target_modules),
            "parameters": model.num_parameters(),
            "audio_tokens_per_10_24_s": model.num_audio_tokens(1024),
            "min_inference_frames": config.min_inference_frames,
            "sample_rate": SAMPLE_RATE,
            "device": str(param.device),
            "dtype": str(param.dtype).replace("torch.", ""),
            "default_generation": dict(self.default_generation),
            "batching": self.engine,
            "limits": {**asdict(self.limits), "max_connections": self.limits.connection_cap},
        }

    def record_response(self, status: int) -> None:
        """Count one answered request by status code (front ends call this once per request)."""
        with self._responses_lock:
            self._responses[status] += 1

    def record_refusal(self, kind: str, status: int | None) -> None:
        """Count a connection refused by the guard (``over_capacity``, ``header_timeout``, ...) and its answer
        (None: closed without one)."""
        with self._responses_lock:
            self._guard[kind] += 1
            if status:
                self._responses[status] += 1

    def metrics(self) -> dict[str, Any]:
        """Batcher counters, responses by status code, connection refusals and uptime (``GET /metrics``)."""
        with self._responses_lock:
            responses = {str(k): v for k, v in sorted(self._responses.items())}
            guard = dict(sorted(self._guard.items()))
        return {
            **self.batcher.stats(),
            "responses": responses,
            "connections_refused": guard,
            "uptime_s": round(time.time() - self.started, 3),
        }

    def close(self, drain: bool = True, timeout: float | None = 60.0) -> None:
        self.batcher.close(drain=drain, timeout=timeout)
