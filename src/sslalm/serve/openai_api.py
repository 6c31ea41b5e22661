"""OpenAI-compatible routes: ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``.

The request and response shapes are OpenAI's chat completions API as vLLM serves audio models, so the
official ``openai`` client, evaluation harnesses and proxies work unchanged:

* ``messages``: the clip comes as a content part ``{"type": "input_audio", "input_audio": {"data": <base64>,
  "format": "wav" | "mp3" | "flac" | "ogg"}}`` or ``{"type": "audio_url", "audio_url": {"url":
  "data:audio/...;
  base64,..."}}`` (``data:`` URLs only: this server never fetches a remote or file URL). Exactly one clip per
  request, in any user message; the question is the text of the last user message (``"content": "..."`` or
  ``{"type": "text", "text": ...}`` parts). System messages are accepted and ignored (the model was trained
  without one); earlier turns are not used (single-turn model).
* sampling: ``max_tokens`` / ``max_completion_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``
  (a string or up to 4), ``n`` (1 only), and vLLM's extras ``top_k`` (-1 or 0 = off) and
  ``repetition_penalty``; unset fields take ``sslalm.generation_settings``' defaults.
* response: ``chat.completion`` with ``usage`` (``prompt_tokens`` counts the audio tokens and the prompt's
  text tokens) and ``finish_reason`` ``"stop"`` (EOS or a stop string) or ``"length"``.
* ``stream: true``: server-sent events of ``chat.completion.chunk`` objects (a first chunk with the role, one
  per piece of text as it is decoded, a last one with ``finish_reason``; with ``stream_options:
  {"include_usage": true}`` one more with ``usage`` and no choices), then ``data: [DONE]``.
* errors: ``{"error": {"message", "type", "param", "code"}}`` — 400 invalid request (also for settings out of
  range), 404 unknown model, 413 too large, 415 not JSON, 503 busy (``Retry-After``), 500 server error.
"""

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from sslalm.audio import SAMPLE_RATE
from sslalm.serve.requests import (  # noqa: F401  (error_envelope re-exported)
    BodyTooLarge,
    check_capacity,
    error_envelope,
    log_request,
    read_json,
)
from sslalm.serve.service import ModelService, RequestError, decode_b64

logger = logging.getLogger(__name__)

AUDIO_FORMATS = ("wav", "mp3", "flac", "ogg")
MAX_STOP = 4
# accepted and ignored when they ask for nothing beyond the default
_NEUTRAL = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logprobs": False,
    "logit_bias": None,
    "parallel_tool_calls": None,
    "user": None,
    "metadata": None,
    "store": None,
    "service_tier": None,
    "modalities": None,
}
_KNOWN = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "seed",
    "stop",
    "n",
    "stream",
    "stream_options",
    *_NEUTRAL,
}


def _bad(message: str, param: str | None = None, status: int = 400) -> RequestError:
    return RequestError(status, message, param=param)


def _audio_from_part(part: dict[str, Any], where: str) -> bytes:
    kind = part.get("type")
    if kind == "input_audio":
        audio = part.get("input_audio")
        if not isinstance(audio, dict) or "data" not in audio:
            raise _bad(f"{where}.input_audio must be an object with 'data' (base64) and 'format'", where)
        fmt = audio.get("format", "wav")
        if fmt not in AUDIO_FORMATS:
            raise _bad(
                f"{where}.input_audio.format must be one of {', '.join(AUDIO_FORMATS)}, got {fmt!r}",
                f"{where}.input_audio.format",
            )
        try:
            return decode_b64(audio["data"], f"{where}.input_audio.data")
        except RequestError as err:
            raise _bad(err.message, f"{where}.input_audio.data") from None
    url = part.get("audio_url")
    url = url.get("url") if isinstance(url, dict) else url
    if not isinstance(url, str) or not url:
        raise _bad(f"{where}.audio_url must be an object with a 'url'", where)
    if not url.startswith("data:"):
        shown = url if len(url) <= 60 else url[:57] + "..."
        raise _bad(
            f"{where}.audio_url accepts data: URLs only (data:audio/wav;base64,...); "
            "this server does not fetch "
            f"remote or file URLs, got {shown!r}: send the clip inline as input_audio or a data: URL",
            f"{where}.audio_url.url",
        )
    header, _, payload = url.partition(",")
    if ";base64" not in header:
        raise _bad(f"{where}.audio_url: the data: URL must be base64 (data:audio/wav;base64,...)", where)
    try:
        return decode_b64(payload, f"{where}.audio_url")
    except RequestError as err:
        raise _bad(err.message, f"{where}.audio_url.url") from None


def parse_messages(messages: Any) -> tuple[bytes, str]:
    """(audio file bytes, question) from OpenAI ``messages``; else a 400 ``RequestError`` naming the part."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    clips: list[bytes] = []
    question = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise _bad(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role, content = message["role"], message.get("content")
        if role not in ("system", "developer", "user", "assistant"):
            raise _bad(f"messages[{i}].role {role!r} is not supported", f"messages[{i}].role")
        if role != "user":
            continue
        texts = []
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text":
                    texts.append(str(part.get("text", "")))
                elif kind in ("input_audio", "audio_url"):
                    clips.append(_audio_from_part(part, where))
                else:
                    raise _bad(
                        f"{where}: part type {kind!r} is not supported (use text, input_audio or audio_url)",
                        f"{where}.type",
                    )
        else:
            raise _bad(f"messages[{i}].content must be a string or a list of parts", f"messages[{i}].content")
        question = "\n".join(t for t in texts if t.strip())
    if not clips:
        raise _bad(
            "the request has no audio: add a content part {'type': 'input_audio', 'input_audio': "
            "{'data': <base64>, 'format': 'wav'}} to a user message",
            "messages",
        )
    if len(clips) > 1:
        raise _bad(f"one audio clip per request, got {len(clips)}", "messages")
    if question is None:
        raise _bad("messages needs a user message with the question", "messages")
    return clips[0], question


def generation_fields(body: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """OpenAI sampling fields -> (sslalm generation fields, stop strings); unsupported values -> 400."""
    unknown = sorted(set(body) - _KNOWN)
    if unknown:
        raise _bad(f"unsupported field(s) {unknown}", unknown[0])
    for name, neutral in _NEUTRAL.items():
        value = body.get(name)
        if value not in (None, neutral) and name not in ("user", "metadata", "store", "service_tier"):
            if name == "modalities" and value == ["text"]:
                continue
            raise _bad(f"{name}={value!r} is not supported by this server", name)
    n = body.get("n", 1)
    if n not in (None, 1) or isinstance(n, bool):
        raise _bad(f"n must be 1 (one answer per request), got {n!r}", "n")
    fields: dict[str, Any] = {}
    if body.get("max_tokens") is not None and body.get("max_completion_tokens") is not None:
        raise _bad("give max_tokens or max_completion_tokens, not both", "max_completion_tokens")
    for name in ("max_completion_tokens", "max_tokens"):
        if body.get(name) is not None:
            fields["max_new_tokens"] = (name, body[name])
    for name in ("temperature", "top_p", "seed", "repetition_penalty"):
        if body.get(name) is not None:
            fields[name] = (name, body[name])
    top_k = body.get("top_k")
    if top_k is not None:
        fields["top_k"] = ("top_k", 0 if top_k == -1 else top_k)  # vLLM: -1 = off
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOP:
        stops = tuple(stop)
    else:
        raise _bad(f"stop must be a string or a list of at most {MAX_STOP} strings", "stop")
    return fields, tuple(s for s in stops if s)


def _settings(service: ModelService, fields: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """Validated settings; errors name the OpenAI field and answer 400 (as OpenAI does for bad values)."""
    names = {ours: theirs for ours, (theirs, _) in fields.items()}
    try:
        return service.generation_settings({ours: value for ours, (_, value) in fields.items()})
    except RequestError as err:
        param = names.get(err.param or "", err.param)
        message = err.message.replace(err.param or "\0", param or "") if param else err.message
        raise _bad(message, param) from None


def add_openai_routes(app: Any, service: ModelService) -> None:
    """Add the OpenAI-compatible routes to the FastAPI ``app`` (``app.state.model_id`` names the model)."""
    from fastapi import Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool

    def model_card() -> dict[str, Any]:
        return {
            "id": app.state.model_id,
            "object": "model",
            "created": int(service.started),
            "owned_by": "sslalm",
            "root": app.state.model_id,
            "parent": None,
            "max_model_len": service.limits.max_new_tokens_limit,
        }

    def fail(status: int, message: str, param: str | None = None, headers: dict | None = None) -> Any:
        return JSONResponse(error_envelope(status, message, param), status_code=status, headers=headers)

    @app.get("/v1/models")
    async def list_models() -> Any:
        """The served model (OpenAI's model list)."""
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str) -> Any:
        """One model by id; 404 in OpenAI's error envelope for any other id."""
        if model_id != app.state.model_id:
            return fail(404, f"The model `{model_id}` does not exist.", "model")
        return model_card()

    @app.post("/v1/chat/completions", openapi_extra=CHAT_OPENAPI)
    async def chat_completions(request: Request) -> Any:
        """OpenAI chat completions with audio (``input_audio`` / ``audio_url`` data URLs), streamed or not."""
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        start = time.perf_counter()
        status, audio_s, note = 500, float("nan"), ""
        generation = None
        streaming = False
        try:
            check_capacity(service)
            if not request.headers.get("content-type", "").lower().startswith("application/json"):
                raise _bad("send the request as application/json", None, 415)
            try:
                body = await read_json(request, app.state.json_slots)
            except BodyTooLarge as err:
                raise RequestError(413, str(err)) from None
            if not isinstance(body, dict):
                raise _bad("the JSON body must be an object")
            model = body.get("model")
            if model is not None and model != app.state.model_id:
                raise _bad(f"The model `{model}` does not exist.", "model", 404)
            fields, stop = generation_fields(body)
            settings = _settings(service, fields)
            stream = body.get("stream") or False
            if not isinstance(stream, bool):
                raise _bad("stream must be true or false", "stream")
            options = body.get("stream_options") or {}
            if not isinstance(options, dict):
                raise _bad("stream_options must be an object", "stream_options")
            include_usage = bool(options.get("include_usage", False))
            data, question = await run_in_threadpool(parse_messages, body.pop("messages", None))  # base64
            del body
            question = service.check_question(question)
            service.check_upload_size(len(data))
            async with app.state.decoding:
                wave = await run_in_threadpool(service.decode_bytes, data)  # (num_samples,) at 16 kHz
            del data
            audio_s = wave.numel() / SAMPLE_RATE
            prompt_tokens = service.prompt_tokens(wave.numel(), question)
            generation = service.start(wave, question, settings, stop)
            created = int(time.time())
            if stream:
                streaming = True
                status = 200
                events = _sse(generation, rid, created, app.state.model_id, prompt_tokens, include_usage)
                return StreamingResponse(
                    events,
                    media_type="text/event-stream",
                    headers={"X-Request-ID": rid, "Cache-Control": "no-cache"},
                )
            done = await asyncio.wrap_future(generation.future)
            finished = done.value
            status = 200
            return JSONResponse(
                {
                    "id": rid,
                    "object": "chat.completion",
                    "created": created,
                    "model": app.state.model_id,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": finished.text},
                            "logprobs": None,
                            "finish_reason": finished.finish_reason,
                        }
                    ],
                    "usage": _usage(prompt_tokens, finished.completion_tokens),
                },
                headers={"X-Request-ID": rid},
            )
        except RequestError as err:
            status, note = err.status, err.message
            return fail(err.status, err.message, err.param, {"X-Request-ID": rid, **err.headers})
        except asyncio.CancelledError:
            status, note = 499, "client went away"
            if generation is not None:
                generation.cancel()
            raise
        except Exception as err:
            logger.exception("chat id=%s failed", rid)
            return fail(500, f"internal error: {type(err).__name__}: {err}")
        finally:
            service.record_response(status)
            if not streaming or status != 200:
                log_request("chat", rid, status, audio_s, start, note)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _sse(
    generation: Any, rid: str, created: int, model: str, prompt_tokens: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """The chunk stream of one answer; the client leaving cancels the generation."""

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        obj = {
            "id": rid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        if include_usage:
            obj.setdefault("usage", None)
        return f"data: {json.dumps(obj)}\n\n".encode()

    completed = False
    try:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for delta in generation.deltas():
                yield chunk({"content": delta})
            finished = generation.future.result().value
        except Exception as err:  # the model failed mid-answer: say so in the stream
            logger.exception("chat stream id=%s failed", rid)
            error = error_envelope(500, f"internal error: {type(err).__name__}: {err}")
            yield f"data: {json.dumps(error)}\n\n".encode()
            yield b"data: [DONE]\n\n"
            completed = True
            return
        yield chunk({}, finished.finish_reason)
        if include_usage:
            usage = {
                "id": rid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [],
                "usage": _usage(prompt_tokens, finished.completion_tokens),
            }
            yield f"data: {json.dumps(usage)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        completed = True
        logger.info("chat id=%s status=200 stream tokens=%d", rid, finished.completion_tokens)
    finally:
        if not completed:
            generation.cancel()


_MESSAGE_SCHEMA = {
    "type": "object",
    "required": ["role", "content"],
    "properties": {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant"]},
        "content": {
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "type": {"type": "string", "enum": ["text", "input_audio", "audio_url"]},
                            "text": {"type": "string"},
                            "input_audio": {
                                "type": "object",
                                "properties": {
                                    "data": {
                                        "type": "string",
                                        "description": "the audio file's bytes, base64",
                                    },
                                    "format": {"type": "string", "enum": list(AUDIO_FORMATS)},
                                },
                            },
                            "audio_url": {
                                "type": "object",
                                "properties": {"url": {"type": "string", "description": "data: URL only"}},
                            },
                        },
                    },
                },
            ]
        },
    },
}
CHAT_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["messages"],
                    "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": _MESSAGE_SCHEMA},
                        "max_tokens": {"type": "integer", "minimum": 1},
                        "max_completion_tokens": {"type": "integer", "minimum": 1},
                        "temperature": {"type": "number", "minimum": 0},
                        "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "top_k": {"type": "integer", "minimum": -1},
                        "repetition_penalty": {"type": "number", "minimum": 0.01, "maximum": 100},
                        "seed": {"type": "integer", "minimum": 0},
                        "stop": {
                            "oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]
                        },
                        "n": {"type": "integer", "enum": [1]},
                        "stream": {"type": "boolean"},
                        "stream_options": {
                            "type": "object",
                            "properties": {"include_usage": {"type": "boolean"}},
                        },
                    },
                }
            }
        },
    }
}
