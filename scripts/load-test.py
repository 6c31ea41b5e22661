#!/usr/bin/env python
"""Bounded load test of ``sslalm serve`` on 127.0.0.1: continuous vs dynamic batching, side by side.

This starts ``sslalm serve`` once per batching engine, as child processes on 127.0.0.1, then for each
concurrency level runs that many closed-loop clients, each sending ``--requests`` streamed OpenAI chat
completions (greedy, ``--max-tokens``) one after another, to each engine in turn: half the requests in the
order A B, the other half B A, so that a change in the (shared) machine's load hits both engines alike.
It reports requests/s, generated tokens/s, time
to first token (first content chunk of the SSE stream) p50/p95, and the server's resident memory (RSS:
before, peak during, after each level, sampled every 0.1 s). Everything is bounded: a fixed number of
requests, timeouts on every call, and the child server is stopped at the end.

    OMP_NUM_THREADS=1 python scripts/load-test.py --tiny --clients 1 8 32 --requests 4 --max-tokens 32

``--tiny`` saves a tiny random-weight ssLALM to a temporary folder (no download); ``--model`` serves a
trained one. The last stdout line is the JSON of all results; a markdown table is printed before it.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

QUESTIONS = [
    "What can be inferred from the audio?",
    "What sound events can you hear, and in what order?",
    "Close-ended question: Write an audio caption describing the sound.",
    "Is there speech in the recording?",
]


def tiny_model(folder: str) -> str:
    import torch

    from sslalm.models.lalm import SSLALM, SSLALMConfig

    torch.manual_seed(0)
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    with torch.no_grad():  # larger LM weights: answers differ between inputs, few stop at once
        for name, param in model.lm.named_parameters():
            if param.ndim >= 2 and "embeddings" not in name:
                param.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    return folder


def clip(seconds: float, seed: int) -> str:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, (0.5 * np.sin(2 * np.pi * (200 + 150 * seed) * t)).astype(np.float32), 16000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def server(model: str, batching: str, max_batch: int, queue: int):
    import httpx

    port = free_port()
    cmd = [
        sys.executable, "-m", "sslalm.cli", "serve", "--model", model, "--host", "127.0.0.1",
        "--port", str(port), "--batching", batching, "--max-batch", str(max_batch),
        "--queue-size", str(queue),
        "--device", "cpu",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 120
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                if (
                    httpx.get(f"http://127.0.0.1:{port}/health", timeout=1, trust_env=False).status_code
                    == 200
                ):
                    break
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited with {proc.returncode}")
            time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start within 120 s")
        yield port, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def one_request(client, body: dict) -> tuple[float, float, int, str]:
    """(time to first content chunk, total time, completion tokens, text) of one chat completion."""
    start = time.perf_counter()
    first = None
    tokens = 0
    text = ""
    if not body["stream"]:
        r = client.post("/v1/chat/completions", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.text[:200]!r}")
        total = time.perf_counter() - start
        reply = r.json()
        return total, total, reply["usage"]["completion_tokens"], reply["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("choices") and chunk["choices"][0]["delta"].get("content"):
                text += chunk["choices"][0]["delta"]["content"]
                if first is None:
                    first = time.perf_counter() - start
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    total = time.perf_counter() - start
    return (first if first is not None else total), total, tokens, text


def run_level(
    port: int,
    pid: int,
    clients: int,
    requests: int,
    max_tokens: int,
    clips: list[str],
    exact: dict,
    stream: bool = True,
) -> dict:
    """One concurrency level. ``exact`` maps (clip, question) -> the token count the continuous engine
    reported; the dynamic engine only re-tokenizes its answers, which over-counts text that does not
    round-trip (a random model's bytes), so its tokens/s uses these counts for the same (greedy) answers."""
    import httpx
    import psutil

    proc = psutil.Process(pid)
    rss = [proc.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            with contextlib.suppress(psutil.Error):
                rss.append(proc.memory_info().rss)

    results: list[tuple[float, float, int, str]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def client_loop(c: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=300, trust_env=False) as client:
            for i in range(requests):
                k = (c * requests + i) % len(clips)
                body = {
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "text", "text": QUESTIONS[k % len(QUESTIONS)]},
                                {"type": "input_audio", "input_audio": {"data": clips[k], "format": "wav"}},
                            ],
                        }
                    ],
                    "max_tokens": max_tokens,
                    "temperature": 0,
                    "stream": stream,
                    **({"stream_options": {"include_usage": True}} if stream else {}),
                }
                try:
                    ttft, total, tokens, text = one_request(client, body)
                    with lock:
                        key = (k, text)
                        if exact.get("engine") == "continuous":
                            exact[key] = tokens
                        tokens = exact.get(key, tokens)
                        results.append((ttft, total, tokens, text))
                except Exception as err:  # counted, reported
                    with lock:
                        errors.append(str(err))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    me = psutil.Process()
    cpu0 = (sum(proc.cpu_times()[:2]), sum(me.cpu_times()[:2]))
    start = time.perf_counter()
    threads = [threading.Thread(target=client_loop, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(1800)
    wall = time.perf_counter() - start
    cpu = (sum(proc.cpu_times()[:2]) - cpu0[0], sum(me.cpu_times()[:2]) - cpu0[1])
    stop.set()
    sampler.join(5)
    rss.append(proc.memory_info().rss)
    if errors:
        print(f"{len(errors)} errors, first: {errors[0]}", file=sys.stderr)
    return {"results": results, "errors": len(errors), "wall": wall, "cpu": cpu, "rss": rss}


def summarize(clients: int, runs: list[dict]) -> dict:
    """One row from the runs of one engine at one level (requests and wall time summed, TTFTs pooled)."""
    results = [r for run in runs for r in run["results"]]
    wall = sum(run["wall"] for run in runs)
    ttft = sorted(r[0] for r in results)

    def pct(q: float) -> float:
        return ttft[min(len(ttft) - 1, int(round(q * (len(ttft) - 1))))] if ttft else float("nan")

    mb = 1 << 20
    return {
        "clients": clients,
        "requests": len(results),
        "errors": sum(run["errors"] for run in runs),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 3),
        "tokens_per_s": round(sum(r[2] for r in results) / wall, 2),
        "ttft_p50_ms": round(pct(0.5) * 1000, 1),
        "ttft_p95_ms": round(pct(0.95) * 1000, 1),
        "latency_p50_ms": round(statistics.median(r[1] for r in results) * 1000, 1) if results else None,
        "server_cpu_s": round(sum(run["cpu"][0] for run in runs), 2),  # CPU time the server used
        "client_cpu_s": round(sum(run["cpu"][1] for run in runs), 2),  # ... and this load generator
        "rss_start_mb": round(runs[0]["rss"][0] / mb, 1),
        "rss_peak_mb": round(max(max(run["rss"]) for run in runs) / mb, 1),
        "rss_end_mb": round(runs[-1]["rss"][-1] / mb, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a model folder (or --tiny)")
    parser.add_argument("--tiny", action="store_true", help="serve a tiny random-weight model")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument(
        "--requests", type=int, default=4, help="requests per client per engine (in two halves, A B B A)"
    )
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--engines", nargs="+", default=["continuous", "dynamic"])
    parser.add_argument(
        "--no-stream", action="store_true", help="plain (non-streamed) completions; TTFT is then the latency"
    )
    args = parser.parse_args(argv)
    if not (args.model or args.tiny):
        parser.error("give --model or --tiny")
    clips = [clip(1.0 + 0.5 * (i % 4), i) for i in range(16)]
    results = []
    exact: dict = {}
    stream = not args.no_stream
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        model = args.model or tiny_model(os.path.join(tmp, "tiny"))
        queue = max(64, 2 * max(args.clients))
        servers = {e: stack.enter_context(server(model, e, args.max_batch, queue)) for e in args.engines}
        for engine, (port, pid) in servers.items():  # warm-up
            exact["engine"] = engine
            run_level(port, pid, 1, 1, args.max_tokens, clips, exact, stream)
        # engines alternate within each level (A B B A), so a change in the machine's load hits both alike
        order = args.engines + args.engines[::-1]
        for clients in args.clients:
            runs: dict[str, list[dict]] = {e: [] for e in args.engines}
            for engine in order:
                port, pid = servers[engine]
                exact["engine"] = engine
                reps = max(1, args.requests // 2)
                runs[engine].append(
                    run_level(port, pid, clients, reps, args.max_tokens, clips, exact, stream)
                )
            for engine in args.engines:
                row = {"engine": engine, **summarize(clients, runs[engine])}
                print(json.dumps(row), file=sys.stderr, flush=True)
                results.append(row)
    print("| clients | batching | req/s | tokens/s | TTFT p50 ms | TTFT p95 ms | RSS start → peak → end MB |")
    print("|---:|---|---:|---:|---:|---:|---|")
    for clients in args.clients:
        for row in (r for r in results if r["clients"] == clients):
            print(
                f"| {clients} | {row['engine']} | {row['requests_per_s']:.2f} | {row['tokens_per_s']:.1f} | "
                f"{row['ttft_p50_ms']:.0f} | {row['ttft_p95_ms']:.0f} | "
                f"{row['rss_start_mb']:.0f} → {row['rss_peak_mb']:.0f} → {row['rss_end_mb']:.0f} |"
            )
    print(json.dumps({"command": " ".join(sys.argv), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
