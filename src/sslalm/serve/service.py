"""The model behind both front ends (HTTP API and Gradio app): limits, input checks, batched answers.

``ModelService`` owns one ``SSLALM`` and one ``DynamicBatcher`` (``sslalm.serve.batcher``). Front ends turn
their inputs into a waveform with ``decode_bytes`` / ``decode_array`` and the form or JSON fields into
generation settings with ``generation_settings``, then call ``submit`` (a future) or ``ask`` (blocking).
Every refusal is a ``RequestError`` carrying an HTTP status and a message meant for the user:

=====  ==========================================================================================
400    unreadable audio (``sslalm.audio.AudioError``'s message), missing or malformed fields
413    encoded audio (or the request body) larger than ``max_upload_mb``
422    audio longer than ``max_audio_seconds``; a generation value out of range; question too long
503    the queue is full (``Retry-After`` says when to come back) or the server is shutting down
=====  ==========================================================================================

Audio only ever comes as bytes or samples; nothing a client sends is opened as a server-side path.

Batching is transparent: requests share a model call only when their generation settings are equal, and
``SSLALM.generate`` returns for a batch what one-by-one calls return. Seeded sampling draws from one random
stream per call, so a seeded request always runs alone (its answer is reproducible whatever else is queued).
"""

from __future__ import annotations

import collections
import io
import itertools
import logging
import math
import threading
import time
from collections.abc import Hashable, Mapping
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sslalm.audio import SAMPLE_RATE
from sslalm.serve.batcher import BatcherClosed, Completed, DynamicBatcher, QueueFull

logger = logging.getLogger(__name__)

MB = 1 << 20


class RequestError(Exception):
    """A refused request: ``status`` (HTTP code), ``message`` for the user, optional extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


@dataclass
class ServeLimits:
    """What one request may ask for. The defaults suit one GPU; the CLI flags of the same names set them."""

    max_batch: int = 8
    batch_wait_ms: float = 10.0
    queue_size: int = 64
    max_upload_mb: float = 50.0  # encoded audio bytes
    max_audio_seconds: float = 600.0  # decoded duration
    max_new_tokens_limit: int = 512
    max_question_chars: int = 2000

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * MB)


@dataclass
class AskResult:
    """One answer and how it was produced (what ``POST /v1/ask`` returns, plus the batch it ran in)."""

    answer: str
    audio_seconds: float
    audio_tokens: int
    batch_size: int
    queue_ms: float
    run_ms: float


# name -> (type, low, high, low inclusive); None = unbounded
_FIELDS: dict[str, tuple[type, float | None, float | None, bool]] = {
    "max_new_tokens": (int, 1, None, True),
    "temperature": (float, 0.0, 100.0, True),
    "top_k": (int, 0, None, True),
    "top_p": (float, 0.0, 1.0, False),
    "repetition_penalty": (float, 0.0, 100.0, False),
    "do_sample": (bool, None, None, True),
    "seed": (int, 0, 2**63 - 1, True),
}
GENERATION_FIELDS = tuple(_FIELDS)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse(name: str, value: Any) -> Any:
    kind, low, high, low_inclusive = _FIELDS[name]
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text not in _TRUE | _FALSE:
                raise ValueError
            return text in _TRUE
        if isinstance(value, bool):
            raise ValueError
        if kind is int:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float):
                if not number.is_integer():
                    raise ValueError
                number = int(number)
            if not isinstance(number, int):
                raise ValueError
        else:
            number = float(value)
            if not math.isfinite(number):
                raise ValueError
    except (TypeError, ValueError):
        raise RequestError(
            422, f"{name} must be {'a boolean' if kind is bool else kind.__name__}, got {value!r}"
        ) from None
    too_low = low is not None and (number < low or (number == low and not low_inclusive))
    if too_low or (high is not None and number > high):
        bound = f"{'>=' if low_inclusive else '>'} {low}" + (f" and <= {high}" if high is not None else "")
        raise RequestError(422, f"{name} must be {bound}, got {number}")
    return number


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
    """An ``SSLALM`` behind a ``DynamicBatcher``, with the checks every front end needs.

    Args:
        model: a loaded ``SSLALM`` (in eval mode, on its device).
        limits: ``ServeLimits``.
    """

    def __init__(self, model: Any, limits: ServeLimits | None = None):
        from sslalm.audio import FbankExtractor
        from sslalm.generate import GenerationConfig

        self.model = model
        self.limits = limits or ServeLimits()
        self._framing = FbankExtractor(target_length=None)
        defaults = GenerationConfig()
        self.default_generation = {
            name: getattr(defaults, name) for name in GENERATION_FIELDS if name not in ("seed",)
        }
        self.default_generation["max_new_tokens"] = min(
            self.default_generation["max_new_tokens"], self.limits.max_new_tokens_limit
        )
        self._solo = itertools.count()
        self._responses: collections.Counter[int] = collections.Counter()
        self._responses_lock = threading.Lock()
        self.started = time.time()
        self.batcher = DynamicBatcher(
            self._run_batch,
            max_batch=self.limits.max_batch,
            wait_s=self.limits.batch_wait_ms / 1000.0,
            queue_size=self.limits.queue_size,
        )

    # ------------------------------------------------------------------ inputs
    def generation_settings(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Validated generation keyword arguments for ``SSLALM.generate`` from form/JSON/slider values.

        Unknown names and out-of-range values raise a 422 ``RequestError``; ``None`` or "" means the default
        (the paper's sampling settings, ``max_new_tokens`` capped at ``max_new_tokens_limit``).
        """
        unknown = sorted(set(fields) - set(GENERATION_FIELDS))
        if unknown:
            raise RequestError(422, f"unknown generation fields {unknown}; known: {list(GENERATION_FIELDS)}")
        settings: dict[str, Any] = dict(self.default_generation)
        settings["seed"] = None
        for name, value in fields.items():
            if value is None or (isinstance(value, str) and not value.strip()):
                continue
            settings[name] = _parse(name, value)
        limit = self.limits.max_new_tokens_limit
        if settings["max_new_tokens"] > limit:
            raise RequestError(
                422, f"max_new_tokens must be <= {limit} on this server, got {settings['max_new_tokens']}"
            )
        return settings

    def check_question(self, question: Any) -> str:
        if not isinstance(question, str) or not question.strip():
            raise RequestError(400, "question is required: a non-empty text field")
        if len(question) > self.limits.max_question_chars:
            raise RequestError(
                422,
                f"question has {len(question)} characters; "
                f"this server accepts at most {self.limits.max_question_chars}",
            )
        return question.strip()

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
        frames = max(self._framing.num_frames(num_samples), self.model.config.min_inference_frames)
        return int(self.model.num_audio_tokens(frames))

    # ------------------------------------------------------------------ answering
    def batch_key(self, settings: Mapping[str, Any]) -> Hashable:
        """Requests with equal keys may share a batch: equal settings, and never seeded sampling."""
        sampling = settings.get("do_sample", True) and settings.get("temperature", 1.0) > 0
        solo = next(self._solo) if sampling and settings.get("seed") is not None else None
        return (tuple(sorted(settings.items())), solo)

    def submit(self, wave: Any, question: str, settings: Mapping[str, Any]) -> Future:
        """Queue one decoded request; the future resolves to ``Completed(value=answer, ...)``.

        Raises a 503 ``RequestError`` when the queue is full or the service is closing.
        """
        try:
            return self.batcher.submit((wave, question), self.batch_key(settings))
        except QueueFull as err:
            retry = self.batcher.retry_after_s()
            raise RequestError(
                503, f"server busy: {err}; retry in {retry} s", {"Retry-After": str(retry)}
            ) from None
        except BatcherClosed as err:
            raise RequestError(503, str(err), {"Retry-After": "5"}) from None

    def result(self, wave: Any, done: Completed) -> AskResult:
        return AskResult(
            answer=done.value,
            audio_seconds=wave.numel() / SAMPLE_RATE,
            audio_tokens=self.audio_tokens(wave.numel()),
            batch_size=done.batch_size,
            queue_ms=done.queue_s * 1000.0,
            run_ms=done.run_s * 1000.0,
        )

    def ask(
        self, wave: Any, question: str, settings: Mapping[str, Any], timeout: float | None = None
    ) -> AskResult:
        """Blocking: queue one request and wait for its answer."""
        return self.result(wave, self.submit(wave, question, settings).result(timeout))

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
            "limits": asdict(self.limits),
        }

    def record_response(self, status: int) -> None:
        """Count one answered request by status code (front ends call this once per request)."""
        with self._responses_lock:
            self._responses[status] += 1

    def metrics(self) -> dict[str, Any]:
        """Batcher counters, responses by status code and uptime (``GET /metrics``)."""
        with self._responses_lock:
            responses = {str(k): v for k, v in sorted(self._responses.items())}
        return {
            **self.batcher.stats(),
            "responses": responses,
            "uptime_s": round(time.time() - self.started, 3),
        }

    def close(self, drain: bool = True, timeout: float | None = 60.0) -> None:
        self.batcher.close(drain=drain, timeout=timeout)
