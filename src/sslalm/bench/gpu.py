"""``sslalm bench gpu`` (``scripts/bench-gpu.sh``): every GPU row, one JSON line per row as it finishes.

Rows (batch 1, bf16, random weights; times are medians of ``--repeats`` after a warm-up, synchronised):

* ``mamba-prefill``: Mamba-2.8B shape (d_model 2560, 64 layers), prompts of 96 / 1,024 / 8,192 tokens, ours
  (``auto`` kernels: mamba_ssm, else Triton, else chunked) and transformers' ``MambaForCausalLM`` without its
  CUDA kernels (same weights; only up to ``--hf-max-len`` tokens, it is very slow);
* ``mamba-decode``: ms per token after 128 / 1,024 / 8,192 tokens of context, eager and as a CUDA graph;
* ``mamba-train``: forward + backward of a 2-layer slice of the 2.8B width (batch 1, ``--train-length``),
  ``auto`` beside the torch ``chunked`` scan;
* ``dass``: DASS-small ``forward_features`` on 10 / 60 / 600 s, and AST on 10 s beside it;
* ``llama``: LLaMA-7B shape (transformers, SDPA attention): prefill and decode at the same lengths.

``--tiny`` shrinks every model and length so the whole script runs in seconds on a CPU (the test suite does
that); rows that need CUDA (the graph) then say ``"skipped"``. The last stdout line is the usual JSON summary.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

FULL = dict(
    mamba=dict(d_model=2560, layers=64, vocab=50280),
    llama=dict(hidden=4096, layers=32, intermediate=11008, heads=32, vocab=32000),
    prefill=[96, 1024, 8192],
    contexts=[128, 1024, 8192],
    train=dict(layers=2, length=2048),
    dass_size="small",
    durations=[10.0, 60.0, 600.0],
)
TINY = dict(
    mamba=dict(d_model=32, layers=2, vocab=256),
    llama=dict(hidden=32, layers=2, intermediate=64, heads=4, vocab=256),
    prefill=[16, 40],
    contexts=[8, 24],
    train=dict(layers=2, length=32),
    dass_size="tiny",
    durations=[0.64, 1.28],
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --tiny, for tests)")
    parser.add_argument(
        "--tiny", action="store_true", help="tiny shapes: checks the script, measures nothing"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--decode-tokens", type=int, default=20, help="timed decode steps per context")
    parser.add_argument("--hf-max-len", type=int, default=1024, help="longest prompt for transformers' Mamba")
    parser.add_argument("--skip", nargs="*", default=[], choices=["mamba", "train", "dass", "llama"])


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (allocator, kernel compilation)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1000 * (time.perf_counter() - t0))
    return sorted(times)[len(times) // 2]


def _emit(rows: list, **row: Any) -> None:
    rows.append(row)
    print(json.dumps(row, sort_keys=True), flush=True)


def _mamba(spec: dict, device: str, dtype):
    import torch

    from sslalm.models.mamba import MambaConfig, MambaLM

    torch.manual_seed(0)
    cfg = MambaConfig(d_model=spec["d_model"], n_layer=spec["layers"], vocab_size=spec["vocab"])
    with torch.device(device):
        model = MambaLM(cfg)
    return model.to_compute_dtype(dtype).eval(), cfg


def _mamba_rows(shape: dict, args, dtype, rows: list) -> None:
    import torch
    import transformers

    from sslalm.generate import CUDAGraphStep, StaticStep
    from sslalm.ops.dispatch import available_backends
    from sslalm.ops.scan import pick_method

    device, cuda = args.device, args.device.startswith("cuda")
    model, cfg = _mamba(shape["mamba"], device, dtype)
    probe = torch.zeros(1, cfg.d_inner, 2, device=device, dtype=dtype)
    kernel = pick_method(probe, torch.zeros(cfg.d_inner, cfg.d_state), grad=False)
    base = dict(model="ours", device=device, dtype=str(dtype), kernel=kernel,
                backends=sorted(available_backends(device.split(":")[0])))  # fmt: skip
    ids = torch.randint(0, cfg.vocab_size, (1, max(shape["prefill"] + shape["contexts"])), device=device)
    with torch.inference_mode():
        for n in shape["prefill"]:
            ms = _median_ms(lambda n=n: model.prefill(ids[:, :n]), device, args.repeats)
            _emit(rows, row="mamba-prefill", length=n, ms=ms, tokens_per_s=1000 * n / ms, **base)
        for n in shape["contexts"]:
            logits, state = model.prefill(ids[:, :n])
            token = logits.argmax(-1)
            for graph in (False, True):
                if graph and not cuda:
                    _emit(
                        rows, row="mamba-decode", context=n, graph=True, status="skipped: needs CUDA", **base
                    )
                    continue
                step = (CUDAGraphStep if graph else StaticStep)(model, state.clone(), 1)
                ms = _median_ms(lambda step=step, token=token: step(token), device, args.decode_tokens)
                _emit(rows, row="mamba-decode", context=n, graph=graph, ms_per_token=ms, **base)
        hf_cfg = transformers.MambaConfig(**cfg.to_hf_dict())
        with torch.device(device):
            hf = transformers.MambaForCausalLM(hf_cfg)
        hf.load_state_dict(model.state_dict(), strict=False)
        hf = hf.to(dtype).eval()
        for n in (n for n in shape["prefill"] if n <= args.hf_max_len):
            ms = _median_ms(lambda n=n: hf(ids[:, :n], logits_to_keep=1), device, 1)
            _emit(rows, row="mamba-prefill", model="transformers-mamba", length=n, ms=ms, device=device,
                  dtype=str(dtype), tokens_per_s=1000 * n / ms)  # fmt: skip


def _train_rows(shape: dict, args, dtype, rows: list) -> None:
    import torch

    width = dict(shape["mamba"], layers=shape["train"]["layers"])
    model, cfg = _mamba(width, args.device, dtype)
    model.train()
    ids = torch.randint(0, cfg.vocab_size, (1, shape["train"]["length"]), device=args.device)
    for method in ("auto", "chunked"):
        for mixer in model.backbone.layers:
            mixer.mixer.scan_method = method

        def fwd_bwd():
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, labels=ids).loss.backward()

        ms = _median_ms(fwd_bwd, args.device, args.repeats)
        _emit(rows, row="mamba-train", method=method, layers=width["layers"], d_model=width["d_model"],
              length=shape["train"]["length"], ms=ms, device=args.device, dtype=str(dtype))  # fmt: skip


def _dass_rows(shape: dict, args, dtype, rows: list) -> None:
    import torch
    from transformers import ASTConfig, ASTModel

    from sslalm.models.dass import DASSConfig, DASSModel

    device = args.device
    with torch.device(device):
        dass = DASSModel(getattr(DASSConfig, shape["dass_size"])()).to(dtype).eval()
    with torch.inference_mode():
        for seconds in shape["durations"]:
            fbank = torch.randn(1, round(100 * seconds), 128, device=device, dtype=dtype)
            ms = _median_ms(lambda fbank=fbank: dass.forward_features(fbank), device, args.repeats)
            _emit(rows, row="dass", model=f"DASS-{shape['dass_size']}", audio_s=seconds, ms=ms, device=device,
                  dtype=str(dtype))  # fmt: skip
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
        cfg = ASTConfig(**small) if args.tiny else ASTConfig()
        with torch.device(device):
            ast = ASTModel(cfg).to(dtype).eval()
        fbank = torch.randn(1, cfg.max_length, 128, device=device, dtype=dtype)
        ms = _median_ms(lambda: ast(fbank), device, args.repeats)
        _emit(
            rows,
            row="dass",
            model="AST",
            audio_s=cfg.max_length / 100,
            ms=ms,
            device=device,
            dtype=str(dtype),
        )


def _llama_rows(shape: dict, args, dtype, rows: list) -> None:
    import torch
    import transformers

    spec, device = shape["llama"], args.device
    cfg = transformers.LlamaConfig(
        vocab_size=spec["vocab"], hidden_size=spec["hidden"], intermediate_size=spec["intermediate"],
        num_hidden_layers=spec["layers"], num_attention_heads=spec["heads"], max_position_embeddings=16384,
        attn_implementation="sdpa",
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.LlamaForCausalLM(cfg).to(dtype).eval()
    ids = torch.randint(0, spec["vocab"], (1, max(shape["prefill"] + shape["contexts"])), device=device)
    base = dict(model="transformers-llama-sdpa", device=device, dtype=str(dtype))
    with torch.inference_mode():
        for n in shape["prefill"]:
            ms = _median_ms(lambda n=n: model(ids[:, :n], logits_to_keep=1), device, args.repeats)
            _emit(rows, row="llama-prefill", length=n, ms=ms, tokens_per_s=1000 * n / ms, **base)
        for n in shape["contexts"]:
            out = model(ids[:, :n], use_cache=True, logits_to_keep=1)
            cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            times = []
            for _ in range(args.decode_tokens):
                _sync(device)
                t0 = time.perf_counter()
                out = model(token, cache=cache, use_cache=True)
                _sync(device)
                times.append(1000 * (time.perf_counter() - t0))
                cache, token = out.cache, out.logits[:, -1].argmax(-1, keepdim=True)
            _emit(rows, row="llama-decode", context=n, ms_per_token=sorted(times)[len(times) // 2], **base)


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("bench gpu: no CUDA device here (use --tiny --device cpu to check the script)")
    shape = TINY if args.tiny else FULL
    dtype = torch.bfloat16
    rows: list[dict] = []
    t0 = time.perf_counter()
    if "mamba" not in args.skip:
        _mamba_rows(shape, args, dtype, rows)
    if "train" not in args.skip:
        _train_rows(shape, args, dtype, rows)
    if "dass" not in args.skip:
        _dass_rows(shape, args, dtype, rows)
    if "llama" not in args.skip:
        _llama_rows(shape, args, dtype, rows)
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    return {"benchmark": "gpu", "device": gpu or args.device, "tiny": args.tiny, "rows": rows,
            "total_s": time.perf_counter() - t0, "torch": torch.__version__}  # fmt: skip
