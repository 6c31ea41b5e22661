"""The OpenAI-compatible routes driven by the official ``openai`` client on 127.0.0.1 (tiny random model)."""

from __future__ import annotations

import base64
import time

import pytest

from test_serve import _serving, _wav_bytes, model, model_dir  # noqa: F401  (fixtures)

openai = pytest.importorskip("openai")

QUESTION = "What can be inferred from the audio?"


def _messages(audio: bytes, question: str = QUESTION, fmt: str = "wav") -> list[dict]:
    part = {"type": "input_audio", "input_audio": {"data": base64.b64encode(audio).decode(), "format": fmt}}
    return [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": [{"type": "text", "text": question}, part]},
    ]


def _client(http_client) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=str(http_client.base_url).rstrip("/") + "/v1", api_key="unused", max_retries=0, timeout=30
    )


def test_openai_client_plain_and_streamed_answers_equal_greedy(model):  # noqa: F811
    audio = _wav_bytes(1.0, seed=3)
    expected = model.ask(audio, QUESTION, max_new_tokens=8, do_sample=False)
    with _serving(model) as (http, service, _):
        client = _client(http)
        assert [m.id for m in client.models.list()] == ["tiny-sslalm"]
        assert client.models.retrieve("tiny-sslalm").id == "tiny-sslalm"
        reply = client.chat.completions.create(
            model="tiny-sslalm", messages=_messages(audio), max_tokens=8, temperature=0
        )
        assert reply.object == "chat.completion" and reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason in ("stop", "length")
        usage = reply.usage
        text_tokens = usage.prompt_tokens - model.num_audio_tokens(1024)
        assert text_tokens > 0 and usage.completion_tokens <= 8
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

        stream = client.chat.completions.create(
            model="tiny-sslalm",
            messages=_messages(audio),
            max_completion_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == expected
        assert chunks[0].choices[0].delta.role == "assistant"
        finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
        assert finals == [reply.choices[0].finish_reason]
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == usage.completion_tokens

        # a data: URL works like input_audio; seeded sampling reproduces one-by-one generation
        sampled = {"temperature": 1.0, "top_p": 1.0, "seed": 11}
        expect_sampled = model.ask(audio, QUESTION, max_new_tokens=6, top_k=0, **sampled)
        url = "data:audio/wav;base64," + base64.b64encode(audio).decode()
        msgs = [
            {"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}}, QUESTION_PART]}
        ]
        reply = client.chat.completions.create(
            model="tiny-sslalm", messages=msgs, max_tokens=6, extra_body={"top_k": -1}, **sampled
        )
        assert reply.choices[0].message.content == expect_sampled


QUESTION_PART = {"type": "text", "text": QUESTION}


def test_openai_stop_strings_and_length(model):  # noqa: F811
    audio = _wav_bytes(1.0, seed=1)
    full = model.ask(audio, QUESTION, max_new_tokens=12, do_sample=False)
    stop = full[3:5]
    with _serving(model) as (http, _, _):
        client = _client(http)
        reply = client.chat.completions.create(
            model="tiny-sslalm", messages=_messages(audio), max_tokens=12, temperature=0, stop=[stop]
        )
        assert reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.content == full[: full.index(stop)].strip()
        streamed = client.chat.completions.create(
            model="tiny-sslalm",
            messages=_messages(audio),
            max_tokens=12,
            temperature=0,
            stop=stop,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        assert text == reply.choices[0].message.content


def test_openai_errors_use_the_envelope(model):  # noqa: F811
    audio = _wav_bytes(1.0)
    with _serving(model, max_new_tokens_limit=16) as (http, service, _):
        client = _client(http)
        cases = [
            (dict(messages=_messages(audio), n=2), 400, "n", "n must be 1"),
            (dict(messages=_messages(audio), max_tokens=17), 400, "max_tokens", "<= 16"),
            (dict(messages=_messages(audio), temperature=-1), 400, "temperature", ">= 0"),
            (dict(messages=[{"role": "user", "content": QUESTION}]), 400, "messages", "no audio"),
            (dict(messages=_messages(audio, fmt="aiff")), 400, None, "format must be one of"),
            (dict(messages=_messages(b"not audio at all" * 20)), 400, None, ""),
        ]
        for kwargs, status, param, text in cases:
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="tiny-sslalm", **kwargs)
            assert err.value.status_code == status, err.value.body
            body = err.value.body
            assert (
                set(body) == {"message", "type", "param", "code"} and body["type"] == "invalid_request_error"
            )
            assert text in body["message"] and (param is None or body["param"] == param)
        for url in ("https://example.com/a.wav", "file:///etc/passwd"):
            msgs = [
                {"role": "user", "content": [{"type": "audio_url", "audio_url": {"url": url}}, QUESTION_PART]}
            ]
            with pytest.raises(openai.BadRequestError, match="data: URLs only"):
                client.chat.completions.create(model="tiny-sslalm", messages=msgs)
        with pytest.raises(openai.NotFoundError) as err:
            client.chat.completions.create(model="gpt-4o", messages=_messages(audio))
        assert err.value.body["code"] == "model_not_found"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("gpt-4o")
        assert service.batcher.stats()["requests"] == 0  # nothing reached the model


def test_openai_busy_is_503_with_retry_after_and_a_client_that_leaves_frees_its_row(model):  # noqa: F811
    audio = _wav_bytes(1.0, seed=2)
    with _serving(model, queue_size=1, max_new_tokens_limit=512) as (http, service, _):
        client = _client(http)
        service.batcher.pause()
        held = service.start(service.decode_bytes(audio), QUESTION, service.generation_settings({}))
        with pytest.raises(openai.APIStatusError) as err:  # the queue (size 1) is full
            client.chat.completions.create(model="tiny-sslalm", messages=_messages(audio), max_tokens=4)
        assert err.value.status_code == 503 and int(err.value.response.headers["retry-after"]) >= 1
        assert err.value.body["type"] == "service_unavailable"
        held.cancel()
        service.batcher.resume()
        # a streamed answer whose client hangs up after the first chunk: its row leaves the batch at once
        _wait_idle = time.monotonic() + 10
        while service.batcher.stats()["queue_depth"] and time.monotonic() < _wait_idle:
            time.sleep(0.02)
        cancelled = service.batcher.stats()["cancelled"]
        body = {
            "messages": _messages(audio),
            "max_tokens": 500,
            "temperature": 1.0,
            "top_k": 0,
            "stream": True,
        }
        with http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line.startswith("data: ") and '"content": ""' not in line:
                    break
        end = time.monotonic() + 10
        while service.batcher.stats()["running"] and time.monotonic() < end:
            time.sleep(0.02)
        stats = service.batcher.stats()
        assert stats["running"] == 0 and stats["cancelled"] == cancelled + 1  # dropped, not finished
        assert stats["tokens"] < 500  # it did not decode on for nobody


def test_transformers_lm_is_served_by_the_dynamic_engine():
    """A hybrid (LLaMA-style) LM has no fixed-size state: it is served by dynamic batching, and the OpenAI
    route still answers what the model answers (the stream carries the answer in one piece)."""
    import torch

    from sslalm.models.lalm import SSLALM, SSLALMConfig

    torch.manual_seed(0)
    hybrid = SSLALM(SSLALMConfig.preset("tiny-hybrid")).eval()
    with torch.no_grad():  # larger weights: a non-empty answer (the initial ones end at once)
        for name, param in hybrid.lm.named_parameters():
            if param.ndim >= 2 and "embed" not in name:
                param.normal_(0.0, 0.3)
    audio = _wav_bytes(1.0, seed=5)
    expected = hybrid.ask(audio, QUESTION, max_new_tokens=6, do_sample=False)
    assert expected
    with _serving(hybrid) as (http, service, _):
        assert service.engine == "dynamic"
        client = _client(http)
        model_id = client.models.list().data[0].id
        reply = client.chat.completions.create(
            model=model_id, messages=_messages(audio), max_tokens=6, temperature=0
        )
        assert reply.choices[0].message.content == expected
        stream = client.chat.completions.create(
            model=model_id, messages=_messages(audio), max_tokens=6, temperature=0, stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected
