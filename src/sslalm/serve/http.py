"""``sslalm serve``: an HTTP API for a saved model (FastAPI on uvicorn) with dynamic batching.

Endpoints:

* ``POST /v1/ask`` — multipart form (``audio`` file, ``question``, optional generation fields) or JSON
  (``{"audio_base64": ..., "question": ..., <generation fields>}``). Returns
  ``{"answer", "audio_seconds", "audio_tokens", "latency_ms", "request_id", "batch_size", "queue_ms"}``.
  Generation fields: ``max_new_tokens``, ``temperature``, ``top_k``, ``top_p``, ``repetition_penalty``,
  ``do_sample``, ``seed`` (defaults: the paper's sampling settings).
* ``GET /health`` — 200 ``{"status": "ok"}`` while the batch worker runs, else 503.
* ``GET /v1/model`` — model summary and the server's limits.
* ``GET /metrics`` — JSON counters: requests, batches, batch-size histogram, rejections, queue depth.
* ``GET /docs`` — FastAPI's interactive documentation.

Request path: the body is read under a size limit (``BodyLimit`` below counts bytes as they arrive and stops
at the limit with 413, before anything is parsed or decoded); the audio is decoded on a thread of the
server's pool; the decoded clip joins the ``DynamicBatcher`` queue (``sslalm.serve.batcher``), whose single
worker thread runs ``SSLALM.generate`` on batches of up to ``--max-batch`` requests gathered within
``--batch-wait-ms``; the request's coroutine awaits its future, so the event loop stays free while the model
works. Limits and status codes are listed in ``sslalm.serve.service``. The server binds 127.0.0.1 by
default and has no authentication: put it behind a proxy before exposing it.

Memory is bounded by the limits: queued clips hold at most ``queue_size * max_audio_seconds * 64 kB/s``
of waveform (16 kHz float32; 2.4 GB at the defaults, worst case), uploads being read at most
``max_upload_mb`` each, and uvicorn accepts at most ``2 * (queue_size + max_batch) + 32`` connections.

Shutdown (Ctrl-C / SIGTERM): uvicorn stops accepting connections and waits up to ``--shutdown-timeout``
seconds for open requests; then the batcher finishes what is queued and its thread ends.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
import uuid
from typing import Any

from sslalm.serve.service import GENERATION_FIELDS, MB, ModelService, RequestError, ServeLimits, decode_b64

logger = logging.getLogger(__name__)

INSTALL_HINT = "the HTTP server needs fastapi, uvicorn and python-multipart: pip install 'sslalm[serve]'"
FIELD_SLACK = 64 * 1024  # bytes allowed beyond the audio for the question, the other fields and the framing

_GEN_SCHEMA = {
    "max_new_tokens": {"type": "integer", "minimum": 1},
    "temperature": {"type": "number", "minimum": 0},
    "top_k": {"type": "integer", "minimum": 0},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "repetition_penalty": {"type": "number", "exclusiveMinimum": 0},
    "do_sample": {"type": "boolean"},
    "seed": {"type": "integer", "minimum": 0},
}
ASK_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio", "question"],
                    "properties": {
                        "audio": {"type": "string", "format": "binary"},
                        "question": {"type": "string"},
                        **_GEN_SCHEMA,
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["audio_base64", "question"],
                    "properties": {
                        "audio_base64": {"type": "string", "description": "the audio file's bytes, base64"},
                        "question": {"type": "string"},
                        **_GEN_SCHEMA,
                    },
                }
            },
        },
    }
}


def _require_fastapi() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err


class BodyTooLarge(Exception):
    """Raised from the receive channel when a request body passes its limit."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than {limit / MB:.2f} MB")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: refuse bodies over a limit that depends on the content type, while reading.

    A declared ``Content-Length`` over the limit is answered 413 without reading the body into memory;
    otherwise the bytes are counted as they arrive and ``BodyTooLarge`` is raised in the application the
    moment the count passes the limit (chunked uploads included), so a large body is never buffered whole.

    Whenever a response starts before the body was read to its end (413, or an early 503), the rest is read
    and thrown away first, up to ``2 * limit + DRAIN_BYTES`` bytes and ``DRAIN_SECONDS``: closing a socket
    with unread data makes TCP send a reset, and the client would see "connection reset" instead of the
    answer. Bodies beyond that cap are cut off.
    """

    DRAIN_BYTES = 16 * MB
    DRAIN_SECONDS = 10.0

    def __init__(self, app: Any, limits: ServeLimits, on_reject: Any = None):
        self.app = app
        self.limits = limits
        self.on_reject = on_reject  # called with 413 when a declared length is refused

    def limit_for(self, content_type: str) -> int:
        audio = self.limits.max_upload_bytes
        if content_type.startswith("multipart/form-data"):
            return audio + FIELD_SLACK
        if content_type.startswith("application/json"):
            return -(-audio * 4 // 3) + FIELD_SLACK  # base64 grows the bytes by 4/3
        return FIELD_SLACK

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        limit = self.limit_for(headers.get(b"content-type", b"").decode("latin-1").lower())
        declared = headers.get(b"content-length", b"")
        seen, done = 0, False

        async def limited_receive() -> dict:
            nonlocal seen, done
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if seen > limit:
                    raise BodyTooLarge(limit)
            else:
                done = True  # http.disconnect
            return message

        async def discard() -> None:
            nonlocal done
            drained = 0
            while not done and drained <= 2 * limit + self.DRAIN_BYTES:
                message = await receive()
                drained += len(message.get("body", b""))
                done = message["type"] != "http.request" or not message.get("more_body", False)

        async def draining_send(message: dict) -> None:
            if message["type"] == "http.response.start" and not done:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(discard(), self.DRAIN_SECONDS)
            await send(message)

        if declared.isdigit() and int(declared) > limit:
            from starlette.responses import JSONResponse

            message = f"the request body is {int(declared) / MB:.2f} MB; the limit is {limit / MB:.2f} MB"
            logger.info("refused a %s-byte body (limit %d)", declared.decode(), limit)
            if self.on_reject is not None:
                self.on_reject(413)
            response = JSONResponse({"detail": message}, status_code=413, headers={"Connection": "close"})
            await response(scope, receive, draining_send)
            return
        await self.app(scope, limited_receive, draining_send)


async def _read_ask(request: Any) -> tuple[bytes, Any, dict[str, Any]]:
    """(audio bytes, question, generation fields) from a multipart or JSON request."""
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException

    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=len(GENERATION_FIELDS) + 2)
        except HTTPException as err:
            raise RequestError(400, f"malformed multipart form: {err.detail}") from None
        try:
            audio = form.get("audio")
            if audio is None:
                raise RequestError(400, "the form has no 'audio' file field")
            if not isinstance(audio, UploadFile):
                raise RequestError(
                    400,
                    "'audio' must be an uploaded file (multipart file field); server paths are not accepted",
                )
            data = await audio.read()
            question = form.get("question")
            if isinstance(question, UploadFile):
                raise RequestError(400, "'question' must be a text field, not a file")
            fields = {k: v for k, v in form.multi_items() if k not in ("audio", "question")}
        finally:
            await form.close()
        return data, question, fields
    if content_type.startswith("application/json"):
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(400, f"the body is not valid JSON: {err}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the JSON body must be an object")
        if "audio_base64" not in body:
            raise RequestError(
                400, "the JSON body needs 'audio_base64' (the audio file's bytes; paths are not accepted)"
            )
        data = decode_b64(body.pop("audio_base64"))
        question = body.pop("question", None)
        return data, question, body
    raise RequestError(
        415, "send multipart/form-data (audio file + question) or application/json (audio_base64)"
    )


def create_app(service: ModelService, close_timeout_s: float = 60.0) -> Any:
    """The FastAPI application for ``service``. Its lifespan closes the service (draining the queue)."""
    _require_fastapi()
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        logger.info("shutting down: finishing %d queued requests", service.batcher.stats()["queue_depth"])
        await run_in_threadpool(service.close, True, close_timeout_s)

    app = FastAPI(
        title="sslalm", summary="Ask a state-space audio language model about audio.", lifespan=lifespan
    )
    app.state.service = service
    decoding = asyncio.Semaphore(max(2, os.cpu_count() or 2))  # decodes at once (CPU and memory spikes)
    app.add_middleware(BodyLimit, limits=service.limits, on_reject=service.record_response)

    def error(rid: str, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse(
            {"detail": message, "request_id": rid},
            status_code=status,
            headers={"X-Request-ID": rid, **(headers or {})},
        )

    @app.post("/v1/ask", openapi_extra=ASK_OPENAPI)
    async def ask(request: Request) -> Any:
        """Answer a question about an uploaded clip (multipart or JSON with base64 audio)."""
        rid = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        status, audio_s = 500, float("nan")
        try:
            if service.batcher.closed:
                raise RequestError(503, "the server is shutting down", {"Retry-After": "5"})
            if service.batcher.is_full():  # refuse before reading and decoding anything
                retry = service.batcher.retry_after_s()
                raise RequestError(
                    503, f"server busy: queue full; retry in {retry} s", {"Retry-After": str(retry)}
                )
            try:
                data, question, fields = await _read_ask(request)
            except BodyTooLarge as err:
                raise RequestError(413, str(err), {"Connection": "close"}) from None
            question = service.check_question(question)
            settings = service.generation_settings(fields)
            service.check_upload_size(len(data))
            async with decoding:
                wave = await run_in_threadpool(service.decode_bytes, data)  # (num_samples,) at 16 kHz
            del data
            audio_s = wave.numel() / 16000
            done = await asyncio.wrap_future(service.submit(wave, question, settings))
            result = service.result(wave, done)
            status = 200
            latency_ms = (time.perf_counter() - start) * 1000.0
            logger.info(
                "ask id=%s status=200 audio_s=%.2f tokens=%d batch=%d queue_ms=%.1f latency_ms=%.1f", rid,
                result.audio_seconds, result.audio_tokens, result.batch_size, result.queue_ms, latency_ms,
            )  # fmt: skip
            body = {
                "answer": result.answer,
                "audio_seconds": round(result.audio_seconds, 6),
                "audio_tokens": result.audio_tokens,
                "latency_ms": round(latency_ms, 3),
                "request_id": rid,
                "batch_size": result.batch_size,
                "queue_ms": round(result.queue_ms, 3),
            }
            return JSONResponse(body, headers={"X-Request-ID": rid})
        except RequestError as err:
            status = err.status
            return error(rid, err.status, err.message, err.headers)
        except Exception as err:  # the model failed: log it whole, tell the client briefly
            logger.exception("ask id=%s failed", rid)
            return error(rid, 500, f"internal error: {type(err).__name__}: {err}")
        finally:
            service.record_response(status)
            if status != 200:
                logger.info(
                    "ask id=%s status=%d audio_s=%.2f latency_ms=%.1f",
                    rid, status, audio_s, (time.perf_counter() - start) * 1000.0,
                )  # fmt: skip

    @app.get("/health")
    async def health() -> Any:
        """200 while the batch worker is alive and accepting work, else 503."""
        if service.healthy():
            return {"status": "ok", "queue_depth": service.batcher.stats()["queue_depth"]}
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/v1/model")
    async def model_info() -> Any:
        """Model summary (architecture, size, device) and this server's limits."""
        return service.info()

    @app.get("/metrics")
    async def metrics() -> Any:
        """Counters: requests, batches, batch sizes, rejections, queue depth, busy time."""
        return service.metrics()

    return app


# ---------------------------------------------------------------------------------------------------- CLI


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ServeLimits`` flags (shared with ``sslalm app``)."""
    d = ServeLimits()
    parser.add_argument("--max-batch", type=int, default=d.max_batch, help="most requests per model call")
    parser.add_argument(
        "--batch-wait-ms", type=float, default=d.batch_wait_ms, help="longest wait for a batch to fill"
    )
    parser.add_argument(
        "--queue-size", type=int, default=d.queue_size, help="most waiting requests; beyond it: 503"
    )
    parser.add_argument(
        "--max-upload-mb", type=float, default=d.max_upload_mb, help="largest audio file; beyond it: 413"
    )
    parser.add_argument(
        "--max-audio-seconds", type=float, default=d.max_audio_seconds, help="longest clip; beyond it: 422"
    )
    parser.add_argument("--max-new-tokens-limit", type=int, default=d.max_new_tokens_limit)
    parser.add_argument("--max-question-chars", type=int, default=d.max_question_chars)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")


def limits_from_args(args: argparse.Namespace) -> ServeLimits:
    return ServeLimits(
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        queue_size=args.queue_size,
        max_upload_mb=args.max_upload_mb,
        max_audio_seconds=args.max_audio_seconds,
        max_new_tokens_limit=args.max_new_tokens_limit,
        max_question_chars=args.max_question_chars,
    )


def load_model(path: str, device: str | None) -> Any:
    """``SSLALM.from_pretrained(path)`` on ``device`` (default: cuda if available), in eval mode."""
    import torch

    from sslalm.models.lalm import SSLALM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = SSLALM.from_pretrained(path).to(device).eval()
    logger.info("loaded %s (%s) on %s", path, model.config.name, device)
    return model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="folder written by SSLALM.save_pretrained / sslalm train"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (no authentication: keep it local)"
    )
    parser.add_argument("--port", type=int, default=8000)
    add_limit_arguments(parser)
    parser.add_argument(
        "--shutdown-timeout", type=float, default=30.0, help="seconds to finish open requests on shutdown"
    )


def run_cli(args: argparse.Namespace) -> int:
    try:
        _require_fastapi()
    except ImportError as err:
        logger.error("%s", err)
        return 1
    import uvicorn

    limits = limits_from_args(args)
    service = ModelService(load_model(args.model, args.device), limits)
    app = create_app(service, close_timeout_s=args.shutdown_timeout)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: this server has no authentication", args.host)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=int(args.shutdown_timeout),
        limit_concurrency=2 * (limits.queue_size + limits.max_batch) + 32,  # open connections, incl. uploads
    )
    return 0
