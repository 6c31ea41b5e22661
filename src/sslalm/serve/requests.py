"""Request plumbing both HTTP APIs share (``/v1/ask`` and the OpenAI routes): body limits enforced while
reading, bounded JSON reading, the capacity check, one-line request logs and error bodies.

``BodyLimit`` refuses a declared oversized body with 413 at once (no "100 Continue", nothing read) and
counts the bytes of other bodies as they arrive, raising ``BodyTooLarge`` the moment the count passes the
limit; ``read_json`` buffers a JSON body in one ``bytearray`` under that limit, at most ``JSON_SLOTS`` large
ones at a time, and parses it off the event loop. Error bodies are OpenAI's envelope on the OpenAI paths and
``{"detail": ...}`` elsewhere.
"""

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from sslalm.serve.service import MB, ModelService, RequestError, ServeLimits

logger = logging.getLogger(__name__)

FIELD_SLACK = 64 * 1024  # bytes allowed beyond the audio for the question, the other fields and the framing
JSON_SLOTS = 2  # JSON bodies over 1 MB buffered at once (each is parsed whole: bound the peak memory)
BIG_JSON = 1 * MB
BIG_BODY = 1 * MB  # after a request with a larger body, freed heap memory is given back (``_trim_memory``)
OPENAI_PATHS = ("/v1/chat/", "/v1/models", "/v1/completions")
_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    408: "invalid_request_error",
    503: "service_unavailable",
}
_CODES = {404: "model_not_found", 413: "request_too_large", 503: "server_busy", 408: "request_timeout"}


def error_envelope(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object for an HTTP status."""
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": _CODES.get(status)}}


def error_body(path: str, status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """The error JSON for ``path``: OpenAI's envelope on the OpenAI routes, ``{"detail": ...}`` elsewhere."""
    if path.startswith(OPENAI_PATHS):
        return error_envelope(status, message, param)
    return {"detail": message}


def error_response(
    path: str, status: int, message: str, headers: dict[str, str] | None = None, param: str | None = None
) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse(error_body(path, status, message, param), status_code=status, headers=headers)


class BodyTooLarge(Exception):
    """Raised from the receive channel when a request body passes its limit."""

    def __init__(self, limit: int):
        super().__init__(f"the request body is larger than {limit / MB:.2f} MB")
        self.limit = limit


class BodyLimit:
    """ASGI middleware: refuse bodies over a limit that depends on the content type, while reading.

    A declared ``Content-Length`` over the limit is answered 413 at once, before anything is read (so a client
    that sent ``Expect: 100-continue`` never gets "100 Continue", and nobody waits for a drain). Otherwise the
    bytes are counted as they arrive and ``BodyTooLarge`` is raised in the application the moment the count
    passes the limit (chunked uploads included), so a large body is never buffered whole. Either way the 413
    goes out at once; what the client still sends is discarded by uvicorn for at most ``guard.LINGER_S``.
    """

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
        scope.setdefault("state", {})["body_limit"] = limit
        declared = headers.get(b"content-length", b"")
        seen = 0

        if declared.isdigit() and int(declared) > limit:
            message = f"the request body is {int(declared) / MB:.2f} MB; the limit is {limit / MB:.2f} MB"
            logger.info("413 %s %s: %s", scope["method"], scope["path"], message)
            if self.on_reject is not None:
                self.on_reject(413)
            # the client waiting for "100 Continue" sent no body: close; otherwise the guard lingers briefly
            waiting = headers.get(b"expect", b"").lower() == b"100-continue"
            response = error_response(
                scope["path"], 413, message, {"Connection": "close"} if waiting else None
            )
            await response(scope, receive, send)  # never calls receive: no 100 Continue, nothing read
            return

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, send)
        finally:
            if seen > BIG_BODY:  # the request's buffers, copies and decoded audio are freed by now
                from starlette.concurrency import run_in_threadpool

                await run_in_threadpool(_trim_memory)


def _trim_memory() -> None:
    """Give freed heap memory back to the system (glibc ``malloc_trim``; a no-op elsewhere).

    A large body is read in pieces, parsed into short-lived strings and decoded on worker threads; glibc keeps
    the freed memory in its per-thread arenas. Trimming after such a request keeps the server's resident
    memory flat instead of ratcheting up with every large upload.
    """
    import gc

    gc.collect()  # large buffers caught in reference cycles (exception tracebacks) would wait for a full pass
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


async def read_json(request: Any, slots: asyncio.Semaphore) -> Any:
    """The request's JSON body, read under ``BodyLimit``'s limit and parsed on a worker thread.

    Bodies over ``BIG_JSON`` (declared, or found while reading) wait for one of ``slots``, so only a few
    large bodies are held at once; the bytes go into one ``bytearray`` (no list of chunks).
    """
    from starlette.concurrency import run_in_threadpool

    declared = request.headers.get("content-length", "")
    big = not declared.isdigit() or int(declared) > BIG_JSON
    async with slots if big else contextlib.nullcontext():
        buffer = bytearray()
        try:
            async for chunk in request.stream():
                buffer += chunk
        except BodyTooLarge:
            raise
        except Exception as err:  # the client went away mid-body
            raise RequestError(400, f"the request body could not be read: {type(err).__name__}") from None

        def parse() -> Any:
            try:
                return json.loads(buffer)
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RequestError(400, f"the body is not valid JSON: {err}") from None
            finally:
                buffer.clear()

        return await run_in_threadpool(parse)


def check_capacity(service: ModelService) -> None:
    """Refuse before reading or decoding anything when the queue is full or the service is closing."""
    if service.batcher.closed:
        raise RequestError(503, "the server is shutting down", {"Retry-After": "5"})
    if service.batcher.is_full():
        retry = service.batcher.retry_after_s()
        raise RequestError(503, f"server busy: queue full; retry in {retry} s", {"Retry-After": str(retry)})


def log_request(route: str, rid: str, status: int, audio_s: float, start: float, note: str = "") -> None:
    """One line per request; 4xx/5xx lines say why (tracebacks are logged only for 5xx, where they arise)."""
    ms = (time.perf_counter() - start) * 1000.0
    if status < 400:
        logger.info("%s id=%s status=%d audio_s=%.2f latency_ms=%.1f", route, rid, status, audio_s, ms)
    else:
        logger.info("%s id=%s status=%d latency_ms=%.1f: %s", route, rid, status, ms, note)
