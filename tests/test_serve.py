"""Serving: the batchers, the HTTP API (real uvicorn on 127.0.0.1) and the Gradio handler.

Every server here binds 127.0.0.1 on an ephemeral port and is stopped by the test that started it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import socket
import threading
import time

import numpy as np
import pytest
import torch

from sslalm.audio import AudioError, load_audio
from sslalm.generation_settings import generation_defaults
from sslalm.models.lalm import SSLALM, SSLALMConfig
from sslalm.serve import BatcherClosed, DynamicBatcher, ModelService, QueueFull, RequestError, ServeLimits

GREEDY = {"max_new_tokens": 8, "do_sample": False}
QUESTIONS = ["What can be inferred from the audio?", "a b", "Describe it.", "Any speech?", "Mood?", "Who?"]


# ---------------------------------------------------------------------------------------------- helpers


def _wav_bytes(seconds: float = 1.0, seed: int = 0, rate: int = 16000) -> bytes:
    import soundfile as sf

    """A tone whose pitch depends on ``seed`` (random-weight encoders barely tell white noises apart)."""
    t = np.arange(int(rate * seconds)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * (200 + 300 * seed) * t)).astype(np.float32), rate, format="WAV")
    return buf.getvalue()


def _wait(predicate, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    with torch.no_grad():  # larger LM weights, so different clips and questions give different answers
        for name, param in model.lm.named_parameters():
            if param.ndim >= 2 and "embeddings" not in name:
                param.normal_(0.0, 0.3)
    path = tmp_path_factory.mktemp("served")
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir):
    return SSLALM.from_pretrained(model_dir)


@contextlib.contextmanager
def _serving(model, **limits):
    """A real uvicorn server in a thread on 127.0.0.1:<free port>; yields (httpx client, service, server)."""
    httpx = pytest.importorskip("httpx")
    uvicorn = pytest.importorskip("uvicorn")
    from sslalm.serve.http import create_app, server_config

    service = ModelService(model, ServeLimits(**limits))
    app = create_app(service, close_timeout_s=10)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(server_config(app, service, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        _wait(lambda: server.started)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30.0, trust_env=False) as client:
            yield client, service, server
    finally:
        service.batcher.resume()
        server.should_exit = True
        thread.join(20)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"
    assert not service.batcher.is_alive(), "the batch worker outlived the server"


def _ask(client, audio: bytes, question: str, **fields):
    data = {"question": question, **{k: str(v) for k, v in fields.items()}}
    return client.post("/v1/ask", files={"audio": ("clip.wav", audio, "audio/wav")}, data=data)


# ---------------------------------------------------------------------------------------------- batcher


def test_batcher_batches_up_to_max_in_fifo_order():
    calls = []
    batcher = DynamicBatcher(
        lambda xs, key: calls.append(list(xs)) or [x * 10 for x in xs], max_batch=3, wait_s=1.0
    )
    batcher.pause()
    futures = [batcher.submit(i) for i in range(7)]
    batcher.resume()
    assert [f.result(5).value for f in futures] == [i * 10 for i in range(7)]
    assert calls == [[0, 1, 2], [3, 4, 5], [6]]  # full batches leave at once; the last waits for wait_s
    assert [f.result().batch_size for f in futures] == [3, 3, 3, 3, 3, 3, 1]
    stats = batcher.stats()
    assert stats["batches"] == 3 and stats["completed"] == 7 and stats["batch_sizes"] == {"1": 1, "3": 2}
    batcher.close()
    assert not batcher.is_alive()


def test_batcher_waits_for_company_then_goes_alone():
    calls = []
    batcher = DynamicBatcher(lambda xs, key: calls.append(list(xs)) or xs, max_batch=8, wait_s=0.5)
    first = batcher.submit("a")
    time.sleep(0.05)
    second = batcher.submit("b")
    assert first.result(5).value == "a" and second.result(5).value == "b"
    assert calls == [["a", "b"]]
    start = time.monotonic()
    batcher.submit("c").result(5)
    assert time.monotonic() - start >= 0.45  # a lone request waits (at most) wait_s for company
    batcher.close()


def test_batcher_groups_only_equal_keys_oldest_first():
    calls = []
    batcher = DynamicBatcher(lambda xs, key: calls.append((key, list(xs))) or xs, max_batch=8, wait_s=0.0)
    batcher.pause()
    futures = [batcher.submit(x, key=k) for x, k in [(1, "g"), (2, "s"), (3, "g"), (4, "s"), (5, "t")]]
    batcher.resume()
    assert [f.result(5).value for f in futures] == [1, 2, 3, 4, 5]
    assert calls == [("g", [1, 3]), ("s", [2, 4]), ("t", [5])]
    batcher.close()


def test_batcher_bounded_queue_and_close():
    batcher = DynamicBatcher(lambda xs, key: xs, max_batch=2, wait_s=0.0, queue_size=3)
    batcher.pause()
    futures = [batcher.submit(i) for i in range(3)]
    assert batcher.is_full()
    with pytest.raises(QueueFull, match="queue size 3"):
        batcher.submit(99)
    assert batcher.stats()["rejected"] == 1
    batcher.close(drain=True, timeout=5)  # close un-pauses and finishes the queue
    assert [f.result(0).value for f in futures] == [0, 1, 2]
    with pytest.raises(BatcherClosed):
        batcher.submit(0)

    batcher = DynamicBatcher(lambda xs, key: xs, queue_size=3)
    batcher.pause()
    pending = batcher.submit(1)
    batcher.close(drain=False, timeout=5)
    with pytest.raises(BatcherClosed):
        pending.result(0)


def test_batcher_one_bad_request_fails_alone_and_cancelled_ones_are_skipped():
    def run(xs, key):
        if "bad" in xs:
            raise ValueError("bad input")
        return [x.upper() for x in xs]

    batcher = DynamicBatcher(run, max_batch=4, wait_s=0.0)
    batcher.pause()
    futures = [batcher.submit(x) for x in ["a", "bad", "c", "d"]]
    assert futures[3].cancel()
    batcher.resume()
    assert futures[0].result(5).value == "A" and futures[2].result(5).value == "C"
    with pytest.raises(ValueError, match="bad input"):
        futures[1].result(5)
    stats = batcher.stats()
    assert stats["failed"] == 1 and stats["cancelled"] == 1 and stats["completed"] == 2
    batcher.close()


# ---------------------------------------------------------------------------------------------- service


def test_generation_settings_are_validated(model):
    service = ModelService(model, ServeLimits(max_new_tokens_limit=16))
    try:
        settings = service.generation_settings({"max_new_tokens": "8", "do_sample": "false", "seed": ""})
        assert settings["max_new_tokens"] == 8 and settings["do_sample"] is False and settings["seed"] is None
        assert service.generation_settings({})["max_new_tokens"] == 16  # the default is capped by the limit
        # one source of defaults: the generation-settings table (what `sslalm ask` and the page use)
        table = generation_defaults()
        for name in ("temperature", "top_k", "top_p", "repetition_penalty", "do_sample"):
            assert service.generation_settings({})[name] == table[name]
        tiny = service.generation_settings({"temperature": 1e-300})  # used to pass, then 500 in sampling
        assert tiny["temperature"] == 0.0 and tiny["do_sample"] is False
        bad = [
            ({"max_new_tokens": 17}, "<= 16"),
            ({"max_new_tokens": 0}, ">= 1"),
            ({"max_new_tokens": "2.5"}, "must be an integer"),
            ({"temperature": "-1"}, ">= 0"),
            ({"temperature": "nan"}, "must be a number"),
            ({"top_p": 0}, "> 0"),
            ({"repetition_penalty": 1e-300}, ">= 0.01"),
            ({"do_sample": "maybe"}, "boolean"),
            ({"beams": 4}, "unknown generation setting"),
        ]
        for fields, message in bad:
            with pytest.raises(RequestError, match=message) as err:
                service.generation_settings(fields)
            assert err.value.status == 422 and err.value.param == next(iter(fields))
        # seeded sampling runs alone; greedy requests with equal settings share a key
        seeded = service.generation_settings({"seed": 3})
        assert service.batch_key(seeded) != service.batch_key(seeded)
        assert service.batch_key(settings) == service.batch_key(dict(settings))
    finally:
        service.close()


# ---------------------------------------------------------------------------------------------- HTTP


def test_http_ask_multipart_and_json_equal_model_ask(model):
    audio = _wav_bytes(1.0, seed=1)
    question = QUESTIONS[0]
    expected = model.ask(audio, question, **GREEDY)
    with _serving(model) as (client, service, _):
        r = _ask(client, audio, question, **GREEDY)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["answer"] == expected
        assert body["audio_seconds"] == pytest.approx(1.0)
        assert body["audio_tokens"] == model.num_audio_tokens(1024)  # 1 s is padded to 10.24 s
        assert body["latency_ms"] > 0 and body["request_id"] == r.headers["x-request-id"]
        payload = {"audio_base64": base64.b64encode(audio).decode(), "question": question, **GREEDY}
        r = client.post("/v1/ask", json=payload)
        assert r.status_code == 200, r.text
        assert r.json()["answer"] == expected

        assert client.get("/health").json()["status"] == "ok"
        info = client.get("/v1/model").json()
        assert info["name"] == "tiny-sslalm" and info["lm_type"] == "mamba"
        assert info["parameters"] == model.num_parameters() and info["limits"]["max_batch"] == 8
        metrics = client.get("/metrics").json()
        assert metrics["requests"] == 2 and metrics["completed"] == 2 and metrics["responses"] == {"200": 2}
        assert "/v1/ask" in client.get("/openapi.json").json()["paths"]


def test_http_concurrent_requests_are_batched_and_equal_one_by_one(model):
    clips = [_wav_bytes(1.0 + 0.25 * i, seed=i) for i in range(len(QUESTIONS))]
    expected = [model.ask(c, q, **GREEDY) for c, q in zip(clips, QUESTIONS)]
    assert len(set(expected)) > 3, "the test model should answer different inputs differently"
    answers: dict[int, dict] = {}
    with _serving(model, max_batch=4, batch_wait_ms=50, engine="dynamic") as (client, service, _):
        service.batcher.pause()  # let every request queue up, so the batches are certain

        def send(i):
            r = _ask(client, clips[i], QUESTIONS[i], **GREEDY)
            answers[i] = r.json() if r.status_code == 200 else {"error": r.text}

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clips))]
        for t in threads:
            t.start()
        _wait(lambda: client.get("/metrics").json()["queue_depth"] == len(clips))
        service.batcher.resume()
        for t in threads:
            t.join(30)
        metrics = client.get("/metrics").json()
    assert [answers[i].get("answer") for i in range(len(clips))] == expected
    assert metrics["batches"] == 2 and metrics["batch_sizes"] == {"2": 1, "4": 1}
    assert sorted(a["batch_size"] for a in answers.values()) == [2, 2, 4, 4, 4, 4]


def test_http_continuous_batching_joins_running_batch_and_equals_one_by_one(model):
    """Six queued requests, four rows at most: the first four decode together; the other two join the running
    batch as rows leave (no drain). Answers equal one-by-one greedy and seeded generation."""
    clips = [_wav_bytes(1.0 + 0.25 * i, seed=i) for i in range(len(QUESTIONS))]
    greedy = [{"max_new_tokens": 4 + 2 * i, "do_sample": False} for i in range(3)]
    seeded = [
        {"max_new_tokens": 6, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7 + i} for i in range(3)
    ]
    settings = greedy + seeded
    expected = [model.ask(c, q, **g) for c, q, g in zip(clips, QUESTIONS, settings)]
    answers: dict[int, dict] = {}
    with _serving(model, max_batch=4) as (client, service, _):
        assert service.engine == "continuous"
        service.batcher.pause()

        def send(i):
            r = _ask(client, clips[i], QUESTIONS[i], **settings[i])
            answers[i] = r.json() if r.status_code == 200 else {"error": r.text}

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(clips))]
        for t in threads:
            t.start()
        _wait(lambda: client.get("/metrics").json()["queue_depth"] == len(clips))
        service.batcher.resume()
        for t in threads:
            t.join(30)
        metrics = client.get("/metrics").json()
    assert [answers[i].get("answer") for i in range(len(clips))] == expected
    assert metrics["engine"] == "continuous" and metrics["max_batch_seen"] == 4
    assert metrics["prefills"] >= 2  # the last two were admitted while others were still decoding
    assert metrics["tokens"] == sum(a["completion_tokens"] for a in answers.values())
    # the shortest request (4 tokens) left after 4 steps while longer ones ran on: fewer steps than a
    # batch that waits for its longest member would take
    assert metrics["batches"] < 2 * max(s["max_new_tokens"] for s in settings)


def test_http_full_queue_answers_503_with_retry_after(model):
    audio = _wav_bytes(0.5)
    results = []
    with _serving(model, queue_size=2) as (client, service, _):
        service.batcher.pause()
        threads = [
            threading.Thread(target=lambda: results.append(_ask(client, audio, "q", **GREEDY).status_code))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        _wait(lambda: service.batcher.stats()["queue_depth"] == 2)
        r = _ask(client, audio, "q", **GREEDY)
        assert r.status_code == 503 and "busy" in r.json()["detail"]
        assert int(r.headers["retry-after"]) >= 1
        service.batcher.resume()
        for t in threads:
            t.join(30)
    assert results == [200, 200]


def test_http_upload_limit_while_reading(model):
    httpx = pytest.importorskip("httpx")
    big = _wav_bytes(4.0)  # 128 KB of 16-bit samples
    with _serving(model, max_upload_mb=0.05) as (client, service, _):  # 52 KB audio, 116 KB multipart body
        r = _ask(client, big, "q")
        assert r.status_code == 413 and "MB" in r.json()["detail"]
        # no Content-Length (chunked upload): refused by counting bytes as they arrive
        request = httpx.Request(
            "POST", "http://x/", files={"audio": ("a.wav", big + big)}, data={"question": "q"}
        )
        body = request.read()
        chunks = (body[i : i + 8192] for i in range(0, len(body), 8192))
        r = client.post("/v1/ask", content=chunks, headers={"content-type": request.headers["content-type"]})
        assert r.status_code == 413 and "larger than" in r.json()["detail"]
        # audio over the limit inside a body under it
        r = _ask(client, _wav_bytes(2.0), "q")
        assert r.status_code == 413 and "at most 0.05 MB" in r.json()["detail"]
        r = client.post("/v1/ask", json={"audio_base64": base64.b64encode(big).decode(), "question": "q"})
        assert r.status_code == 413
        assert service.batcher.stats()["requests"] == 0  # nothing reached the model
        assert client.get("/metrics").json()["responses"] == {"413": 4}


def test_http_bad_input_gets_clear_errors(model, tmp_path):
    junk = b"this is not audio, just text" * 10
    with pytest.raises(AudioError) as audio_error:
        load_audio(junk)
    wav_path = tmp_path / "server_side.wav"
    wav_path.write_bytes(_wav_bytes(1.0))
    with _serving(model, max_audio_seconds=2.0) as (client, service, _):
        r = _ask(client, junk, "q")
        assert r.status_code == 400 and r.json()["detail"] == str(audio_error.value)
        r = _ask(client, _wav_bytes(3.0), "q")
        assert (
            r.status_code == 422
            and "3.0 s long" in r.json()["detail"]
            and "at most 2 s" in r.json()["detail"]
        )
        r = _ask(client, _wav_bytes(1.0), "")
        assert r.status_code == 400 and "question" in r.json()["detail"]
        r = _ask(client, _wav_bytes(1.0), "q", temperature=-1)
        assert r.status_code == 422 and "temperature" in r.json()["detail"]
        # a path from the client is never opened: as a form field, or in JSON
        r = client.post("/v1/ask", data={"audio": str(wav_path), "question": "q"}, files={"x": ("x", b"")})
        assert r.status_code == 400 and "server paths are not accepted" in r.json()["detail"]
        r = client.post("/v1/ask", data={"audio": str(wav_path), "question": "q"})
        assert r.status_code == 415
        r = client.post("/v1/ask", json={"audio": str(wav_path), "question": "q"})
        assert r.status_code == 400 and "paths are not accepted" in r.json()["detail"]
        r = client.post("/v1/ask", json={"audio_base64": str(wav_path), "question": "q"})
        assert r.status_code == 400
        r = client.post("/v1/ask", content=b"{not json", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "JSON" in r.json()["detail"]
        assert service.batcher.stats()["requests"] == 0


def test_http_shutdown_finishes_queued_requests(model):
    audio = _wav_bytes(0.5)
    codes = []
    with _serving(model) as (client, service, server):
        service.batcher.pause()
        threads = [
            threading.Thread(target=lambda: codes.append(_ask(client, audio, "q", **GREEDY).status_code))
            for _ in range(3)
        ]
        for t in threads:
            t.start()
        _wait(lambda: service.batcher.stats()["queue_depth"] == 3)
        server.should_exit = True  # uvicorn stops accepting and waits for the open requests
        time.sleep(0.2)
        service.batcher.resume()
        for t in threads:
            t.join(30)
    assert codes == [200, 200, 200]
    with pytest.raises(RequestError) as err:
        service.submit(torch.zeros(16000), "q", {})
    assert err.value.status == 503


# ---------------------------------------------------------------------------------------------- Gradio


def test_gradio_handler_takes_int16_pairs(model):
    pytest.importorskip("gradio")
    import gradio as gr

    from sslalm.serve.app import build_app, make_handler

    service = ModelService(model, ServeLimits(max_audio_seconds=3.0))
    try:
        demo = build_app(service)
        assert isinstance(demo, gr.Blocks)
        ask = make_handler(service, error=gr.Error)
        rng = np.random.default_rng(3)
        samples = (rng.standard_normal(16000) * 3000).astype(np.int16)
        answer, details = list(ask((16000, samples), QUESTIONS[0], 8, 0.0))[-1]  # temperature 0 = greedy
        wave = torch.from_numpy(samples.astype(np.float32) / 32768.0)
        assert answer == model.ask(wave, QUESTIONS[0], max_new_tokens=8, do_sample=False)
        assert "1.00 s of audio" in details
        stereo = (rng.standard_normal((44100, 2)) * 3000).astype(np.int16)  # (samples, channels) at 44.1 kHz
        answer, details = list(ask((44100, stereo), "q", 8, 0.0))[-1]
        assert isinstance(answer, str) and "1.00 s of audio" in details
        with pytest.raises(gr.Error, match="Upload or record"):
            list(ask(None, "q"))
        with pytest.raises(gr.Error, match="at most 3 s"):
            list(ask((16000, np.zeros(16000 * 4, dtype=np.int16)), "q"))
        with pytest.raises(gr.Error, match="question"):
            list(ask((16000, samples), "  "))
    finally:
        service.close()


def test_gradio_app_answers_through_gradio_client(model, tmp_path, capfd):
    pytest.importorskip("gradio")
    client_mod = pytest.importorskip("gradio_client")
    from sslalm.serve.app import build_app, launch

    wav = tmp_path / "clip.wav"
    wav.write_bytes(_wav_bytes(1.0, seed=5))
    expected = model.ask(load_audio(str(wav)), "q", max_new_tokens=8, do_sample=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    service = ModelService(model, ServeLimits())
    demo = build_app(service)
    try:
        launch(demo, service.limits, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
        client = client_mod.Client(f"http://127.0.0.1:{port}/", verbose=False)
        answer, details = client.predict(
            client_mod.handle_file(str(wav)), "q", 8, 0.0, 500, 0.95, 1.1, None, api_name="/ask"
        )
        assert answer == expected and "8 tokens" in details
        capfd.readouterr()
        junk = tmp_path / "notes.wav"
        junk.write_bytes(b"not audio, just notes\n" * 30)
        for audio, question in [(junk, "q"), (wav, "")]:
            with pytest.raises(Exception) as err:  # gradio_client's AppError carries the page's message
                client.predict(client_mod.handle_file(str(audio)), question, 8, 0.0, api_name="/ask")
            assert "\n" not in str(err.value) and ("audio" in str(err.value) or "question" in str(err.value))
        assert "Traceback" not in capfd.readouterr().err  # user errors are not logged as tracebacks
    finally:
        demo.close()
        service.close()


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_parses_serve_and_app_flags():
    from sslalm.cli import build_parser

    args = build_parser().parse_args(["serve", "--model", "m", "--max-batch", "4", "--queue-size", "9"])
    assert (args.host, args.port, args.max_batch, args.queue_size, args.max_upload_mb) == (
        "127.0.0.1",
        8000,
        4,
        9,
        50.0,
    )
    args = build_parser().parse_args(["app", "--model", "m", "--share", "false"])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)
    assert build_parser().parse_args(["app", "--model", "m", "--share"]).share is True


def test_http_seeded_sampling_runs_alone_and_reproduces(model):
    audio = _wav_bytes(1.0, seed=2)
    sampled = {"max_new_tokens": 8, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 7}
    expected = [model.ask(audio, q, **sampled) for q in QUESTIONS[:3]]
    codes, answers = [], {}
    with _serving(model, batch_wait_ms=50, engine="dynamic") as (client, service, _):
        service.batcher.pause()

        def send(i):
            r = _ask(client, audio, QUESTIONS[i], **sampled)
            codes.append(r.status_code)
            answers[i] = r.json().get("answer")

        threads = [threading.Thread(target=send, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        _wait(lambda: service.batcher.stats()["queue_depth"] == 3)
        service.batcher.resume()
        for t in threads:
            t.join(30)
        metrics = client.get("/metrics").json()
    assert codes == [200, 200, 200] and [answers[i] for i in range(3)] == expected
    assert metrics["batch_sizes"] == {"1": 3}  # one random stream per call: seeded requests never share


def test_serve_and_app_name_the_model_folders_below_a_run_folder(model_dir, tmp_path, capsys):
    """A run folder (stages below it) is one line naming the model folders, exit 2, no traceback."""
    import shutil

    from sslalm.cli import main

    stage = tmp_path / "run" / "stage4"
    shutil.copytree(model_dir, stage)
    for command in ("serve", "app"):
        assert main([command, "--model", str(tmp_path / "run")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(stage) in err[0] and "not a model folder" in err[0], err
        assert "Traceback" not in err[0]


def test_docs_and_redoc_assets_are_local_and_served(model):
    """/docs and /redoc load Swagger UI / ReDoc from this server (works offline), not from a CDN."""
    import re

    with _serving(model) as (client, _, _):
        for page in ("/docs", "/redoc"):
            r = client.get(page)
            assert r.status_code == 200
            urls = re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)["\']', r.text)
            urls += re.findall(r"url:\s*'([^']+)'", r.text)
            assets = [u for u in urls if u.endswith((".js", ".css", ".png"))]
            assert assets, r.text[:500]
            for url in urls:
                assert not url.startswith(("http://", "https://", "//")), f"{page} loads {url} from outside"
            for url in assets:
                served = client.get(url)
                assert served.status_code == 200 and len(served.content) > 100, url
        assert client.get("/openapi.json").json()["paths"]["/v1/chat/completions"]


def test_client_errors_are_logged_as_one_line(model, caplog):
    """4xx answers: one log line each, no traceback; the 5xx path keeps its traceback (not exercised here)."""
    import logging

    caplog.set_level(logging.INFO)
    with _serving(model) as (client, _, _):
        assert _ask(client, b"not audio" * 40, "q").status_code == 400
        assert _ask(client, _wav_bytes(0.5), "").status_code == 400
        assert _ask(client, _wav_bytes(0.5), "q", temperature=-1).status_code == 422
    records = [r for r in caplog.records if r.name.startswith("sslalm.serve")]
    errors = [r for r in records if "status=4" in r.getMessage()]
    assert len(errors) == 3
    assert not any(r.exc_info for r in records) and all("\n" not in r.getMessage() for r in errors)
