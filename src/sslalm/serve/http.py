"""``sslalm serve``: an HTTP API for a saved model (FastAPI on uvicorn), OpenAI-compatible, with batching.

Endpoints:

* ``POST /v1/chat/completions`` — OpenAI's chat completions as vLLM serves audio models: ``input_audio``
  (base64) or ``audio_url`` (``data:`` URLs) parts, streaming (server-sent events), ``usage``; see
  ``sslalm.serve.openai_api``. ``GET /v1/models``, ``GET /v1/models/{id}``.
* ``POST /v1/ask`` — multipart form (``audio`` file, ``question``, optional generation fields) or JSON
  (``{"audio_base64": ..., "question": ..., <generation fields>}``). Returns
  ``{"answer", "audio_seconds", "audio_tokens", "completion_tokens", "finish_reason", "latency_ms",
  "request_id", "batch_size", "queue_ms"}``. Generation fields, defaults and ranges:
  ``sslalm.generation_settings`` (the table ``sslalm ask`` and the Gradio page use too).
* ``GET /health`` — 200 ``{"status": "ok"}`` while the batch worker runs, else 503.
* ``GET /v1/model`` — model summary and the server's limits.
* ``GET /metrics`` — JSON counters: requests, decode steps or batches, rejections, refused connections.
* ``GET /docs``, ``GET /redoc`` — the interactive documentation, with Swagger UI's and ReDoc's assets served
  by this server from the ``fastapi-offline`` package (no CDN: the pages work offline).

Request path: ``sslalm.serve.guard`` times out slow headers and stalled bodies and caps open connections;
``BodyLimit`` below refuses a declared oversized body with 413 at once (no "100 Continue", nothing read)
and counts the bytes of other bodies as they arrive, stopping at the limit; JSON bodies are read into one
buffer under that limit, at most ``JSON_SLOTS`` large ones at a time, and parsed off the event loop; the
audio is decoded on a worker thread; the decoded clip joins the batching engine's queue
(``sslalm.serve.service``). Status codes are listed in ``sslalm.serve.service``; 4xx answers are logged as
one line, 5xx with their traceback. The server binds 127.0.0.1 by default and has no authentication: put it
behind a proxy before exposing it.

Memory is bounded by the limits: queued clips hold at most ``queue_size * max_audio_seconds * 64 kB/s``
of waveform (16 kHz float32; 2.4 GB at the defaults, worst case), request bodies being read at most
``max_upload_mb`` each (4/3 of it for base64 JSON, ``JSON_SLOTS`` at a time beyond 1 MB), and at most
``max_connections`` connections are open.

Shutdown (Ctrl-C / SIGTERM): uvicorn stops accepting connections and waits up to ``--shutdown-timeout``
seconds for open requests; then the batcher finishes what is queued and its thread ends.
"""

import argparse
import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from sslalm.audio import SAMPLE_RATE
from sslalm.serve.requests import (  # noqa: F401  (re-exported: the request plumbing lived here)
    BIG_BODY,
    BIG_JSON,
    FIELD_SLACK,
    JSON_SLOTS,
    OPENAI_PATHS,
    BodyLimit,
    BodyTooLarge,
    check_capacity,
    error_body,
    error_response,
    log_request,
    read_json,
)
from sslalm.serve.service import GENERATION_FIELDS, ModelService, RequestError, ServeLimits, decode_b64

logger = logging.getLogger(__name__)

INSTALL_HINT = (
    "the HTTP server needs fastapi, fastapi-offline, uvicorn and python-multipart: "
    "pip install 'sslalm[serve]'"
)
OVER_CAP_DRAIN_S = 1.0  # a refused connection's body is read (and dropped) this long at most


def _gen_schema() -> dict[str, Any]:
    """JSON-schema properties of the generation fields, from ``sslalm.generation_settings``."""
    kinds = {int: "integer", float: "number", bool: "boolean"}
    out = {}
    for name, spec in GENERATION_FIELDS.items():
        prop: dict[str, Any] = {"type": kinds[spec.kind], "description": spec.help}
        if spec.default is not None:
            prop["default"] = spec.default
        if spec.low is not None:
            prop["minimum" if spec.low_inclusive else "exclusiveMinimum"] = spec.low
        if spec.high is not None:
            prop["maximum"] = spec.high
        out[name] = prop
    return out


def ask_openapi() -> dict[str, Any]:
    gen = _gen_schema()
    return {
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
                            **gen,
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["audio_base64", "question"],
                        "properties": {
                            "audio_base64": {
                                "type": "string",
                                "description": "the audio file's bytes, base64",
                            },
                            "question": {"type": "string"},
                            **gen,
                        },
                    }
                },
            },
        }
    }


def _require_fastapi() -> None:
    try:
        import fastapi  # noqa: F401
        import fastapi_offline  # noqa: F401
        import python_multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({err})") from err


async def _read_ask(request: Any, json_slots: asyncio.Semaphore) -> tuple[bytes, Any, dict[str, Any]]:
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
                raise RequestError(400, "the form has no 'audio' file field", param="audio")
            if not isinstance(audio, UploadFile):
                raise RequestError(
                    400,
                    "'audio' must be an uploaded file (multipart file field); server paths are not accepted",
                    param="audio",
                )
            data = await audio.read()
            question = form.get("question")
            if isinstance(question, UploadFile):
                raise RequestError(400, "'question' must be a text field, not a file", param="question")
            fields = {k: v for k, v in form.multi_items() if k not in ("audio", "question")}
        finally:
            await form.close()
        return data, question, fields
    if content_type.startswith("application/json"):
        body = await read_json(request, json_slots)
        if not isinstance(body, dict):
            raise RequestError(400, "the JSON body must be an object")
        if "audio_base64" not in body:
            raise RequestError(
                400,
                "the JSON body needs 'audio_base64' (the audio file's bytes; paths are not accepted)",
                param="audio_base64",
            )
        from starlette.concurrency import run_in_threadpool

        data = await run_in_threadpool(decode_b64, body.pop("audio_base64"))  # tens of MB: off the loop
        question = body.pop("question", None)
        return data, question, body
    raise RequestError(
        415, "send multipart/form-data (audio file + question) or application/json (audio_base64)"
    )


def create_app(service: ModelService, close_timeout_s: float = 60.0, model_id: str | None = None) -> Any:
    """The FastAPI application for ``service``. Its lifespan closes the service (draining the queue).

    ``model_id``: the name clients pass as ``model`` on the OpenAI routes (default: the model's config name).
    """
    _require_fastapi()
    from fastapi_offline import FastAPIOffline
    from starlette.concurrency import run_in_threadpool

    from sslalm.serve.openai_api import add_openai_routes

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        logger.info("shutting down: finishing %d queued requests", service.batcher.stats()["queue_depth"])
        await run_in_threadpool(service.close, True, close_timeout_s)

    app = FastAPIOffline(
        title="sslalm",
        summary="Ask a state-space audio language model about audio (OpenAI-compatible chat completions).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.model_id = model_id or service.model.config.name
    app.state.decoding = asyncio.Semaphore(2)  # decodes at once (CPU and memory spikes)
    app.state.json_slots = asyncio.Semaphore(JSON_SLOTS)
    app.add_middleware(BodyLimit, limits=service.limits, on_reject=service.record_response)

    _add_ask_route(app, service)
    _add_status_routes(app, service)
    add_openai_routes(app, service)
    return app


def _add_ask_route(app: Any, service: ModelService) -> None:
    """``POST /v1/ask``: multipart or JSON with base64 audio, answered through the batching engine."""
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    def error(rid: str, status: int, message: str, headers: dict[str, str] | None = None) -> Any:
        return JSONResponse(
            {"detail": message, "request_id": rid},
            status_code=status,
            headers={"X-Request-ID": rid, **(headers or {})},
        )

    @app.post("/v1/ask", openapi_extra=ask_openapi())
    async def ask(request: Request) -> Any:
        """Answer a question about an uploaded clip (multipart or JSON with base64 audio)."""
        rid = uuid.uuid4().hex[:12]
        start = time.perf_counter()
        status, audio_s, note = 500, float("nan"), ""
        generation = None
        try:
            check_capacity(service)
            try:
                data, question, fields = await _read_ask(request, app.state.json_slots)
            except BodyTooLarge as err:
                raise RequestError(413, str(err)) from None
            question = service.check_question(question)
            settings = service.generation_settings(fields)
            service.check_upload_size(len(data))
            async with app.state.decoding:
                wave = await run_in_threadpool(service.decode_bytes, data)  # (num_samples,) at 16 kHz
            del data
            audio_s = wave.numel() / SAMPLE_RATE
            generation = service.start(wave, question, settings)
            done = await asyncio.wrap_future(generation.future)
            result = service.result(wave, done)
            status = 200
            latency_ms = (time.perf_counter() - start) * 1000.0
            body = {
                "answer": result.answer,
                "audio_seconds": round(result.audio_seconds, 6),
                "audio_tokens": result.audio_tokens,
                "completion_tokens": result.completion_tokens,
                "finish_reason": result.finish_reason,
                "latency_ms": round(latency_ms, 3),
                "request_id": rid,
                "batch_size": result.batch_size,
                "queue_ms": round(result.queue_ms, 3),
            }
            return JSONResponse(body, headers={"X-Request-ID": rid})
        except RequestError as err:
            status, note = err.status, err.message
            return error(rid, err.status, err.message, err.headers)
        except asyncio.CancelledError:
            status, note = 499, "client went away"
            if generation is not None:
                generation.cancel()
            raise
        except Exception as err:  # the model failed: log it whole, tell the client briefly
            logger.exception("ask id=%s failed", rid)
            return error(rid, 500, f"internal error: {type(err).__name__}: {err}")
        finally:
            service.record_response(status)
            log_request("ask", rid, status, audio_s, start, note)


def _add_status_routes(app: Any, service: ModelService) -> None:
    """``GET /health``, ``/v1/model`` and ``/metrics``."""
    from fastapi.responses import JSONResponse

    @app.get("/health")
    async def health() -> Any:
        """200 while the batch worker is alive and accepting work, else 503."""
        if service.healthy():
            return {"status": "ok", "queue_depth": service.batcher.stats()["queue_depth"]}
        return JSONResponse({"status": "unavailable"}, status_code=503)

    @app.get("/v1/model")
    async def model_info() -> Any:
        """Model summary (architecture, size, device) and this server's limits."""
        return {**service.info(), "id": app.state.model_id}

    @app.get("/metrics")
    async def metrics() -> Any:
        """Counters: requests, decode steps or batches, rejections, refused connections, queue depth."""
        return service.metrics()


def over_capacity_app(service: ModelService) -> Any:
    """The ASGI app for connections beyond the cap: the same JSON 503 + ``Retry-After`` a full queue gets."""

    async def app(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        retry = service.batcher.retry_after_s()
        cap = service.limits.connection_cap
        message = f"server busy: too many open connections (cap {cap}); retry in {retry} s"
        service.record_refusal("over_capacity", 503)
        logger.info("503 %s %s: %s", scope["method"], scope["path"], message)
        headers = dict(scope.get("headers") or [])
        if scope["method"] not in ("GET", "HEAD") and headers.get(b"expect", b"").lower() != b"100-continue":
            # read (and drop) what the client is already sending, briefly: closing a socket with unread data
            # resets it, and the client would lose this answer
            end = time.monotonic() + OVER_CAP_DRAIN_S
            with contextlib.suppress(asyncio.TimeoutError):
                while (left := end - time.monotonic()) > 0:
                    message_in = await asyncio.wait_for(receive(), left)
                    if message_in["type"] != "http.request" or not message_in.get("more_body", False):
                        break
        response = error_response(
            scope["path"], 503, message, {"Retry-After": str(retry), "Connection": "close"}
        )
        await response(scope, receive, send)

    return app


def server_config(app: Any, service: ModelService, **kwargs: Any) -> Any:
    """``uvicorn.Config`` for ``app`` with the connection guards of ``sslalm.serve.guard``.

    uvicorn's own ``limit_concurrency`` is off: the guard's cap answers in JSON, with ``Retry-After``.
    """
    import uvicorn

    from sslalm.serve.guard import guarded_protocol

    limits = service.limits
    protocol = guarded_protocol(
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        cap=limits.connection_cap,
        over_capacity=over_capacity_app(service),
        error_body=error_body,
        on_refuse=service.record_refusal,
    )
    kwargs.setdefault("timeout_keep_alive", 5)
    return uvicorn.Config(app, http=protocol, limit_concurrency=None, **kwargs)


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
    parser.add_argument(
        "--batching",
        choices=["auto", "continuous", "dynamic"],
        default=d.engine,
        help="continuous: requests join the running decode batch every token (Mamba LMs; auto picks it); "
        "dynamic: whole generate calls on batches formed within --batch-wait-ms",
    )
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
        engine=getattr(args, "batching", "auto"),
        header_timeout_s=getattr(args, "header_timeout", 10.0),
        body_timeout_s=getattr(args, "body_timeout", 30.0),
        max_connections=getattr(args, "max_connections", None),
    )


def load_service(args: argparse.Namespace) -> ModelService:
    """The model folder ``--model`` (checked: a wrong folder is one ``ModelFolderError`` line naming the
    model folders below it) loaded behind a ``ModelService`` with the flags' limits."""
    from sslalm.models.loading import load_model

    return ModelService(load_model(args.model, args.device), limits_from_args(args))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="folder written by SSLALM.save_pretrained / sslalm train"
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (no authentication: keep it local)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--served-model-name",
        default=None,
        help="the model id of the OpenAI routes (default: the --model argument, as vLLM)",
    )
    add_limit_arguments(parser)
    d = ServeLimits()
    parser.add_argument(
        "--header-timeout", type=float, default=d.header_timeout_s, help="seconds to send a request's headers"
    )
    parser.add_argument(
        "--body-timeout", type=float, default=d.body_timeout_s, help="longest pause inside a request body"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="open connections; beyond: JSON 503 + Retry-After (default 2 * (queue + batch) + 32)",
    )
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

    service = load_service(args)  # a UserError (a run folder, say) is one line from sslalm.cli, exit 2
    model_id = args.served_model_name or str(args.model)  # as vLLM: the --model argument
    app = create_app(service, close_timeout_s=args.shutdown_timeout, model_id=model_id)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("binding %s: this server has no authentication", args.host)
    config = server_config(
        app,
        service,
        host=args.host,
        port=args.port,
        log_level="info",
        timeout_graceful_shutdown=int(args.shutdown_timeout),
    )
    logger.info("serving %s as model id %r (%s batching)", args.model, model_id, service.engine)
    uvicorn.Server(config).run()
    return 0
