"""``sslalm bench lm``: our Mamba LM against transformers' Mamba and a LLaMA of about the same size.

Measured side by side in one run, random weights (cost does not depend on their values), batch 1:

* prefill: seconds to read a prompt of each ``--prefill`` length and produce the next-token logits (every
  model computes the last position's logits only);
* decode: milliseconds per generated token after a prompt of each ``--decode-contexts`` length (median of
  ``--decode-tokens`` steps). Our state and transformers' Mamba cache have a fixed size; LLaMA's KV cache
  grows with the context, so its time per token is expected to grow while ours stays flat;
* ``--train``: forward + backward of a small model (default d_model 256, 4 layers, batch 4, length 256) and
  of the demo's LM (d_model 64, 2 layers, batch 32, length 60, vocabulary 1024), ours against transformers'
  pure-PyTorch fallback, i.e. the training path.

"ours" uses what ``auto`` picks on this machine (the compiled numba kernels on a CPU); "ours-torch" is the
same model with numba switched off (``SSLALM_DISABLE_NUMBA``), i.e. the torch kernels (``loop`` for
prefill, ``recurrent`` for training, the torch decode step), the path before the compiled kernels.
``scan_share`` is the fraction of one prefill of the longest prompt spent inside the selective scan.

transformers' ``MambaForCausalLM`` gets exactly our weights (``load_state_dict``) and the logits of both are
compared as a sanity check. Each model runs in a fresh process (``run_isolated``), so the peak resident
memory column is its own. Transformers' Mamba is very slow, so it runs ``--hf-repeats`` times (default 1)
and decodes only at contexts it prefilled anyway. On CUDA (when available, unless ``--no-gpu``) the same
cases run on the GPU in bf16, plus our decode step captured as a CUDA graph, reported against the
memory-bandwidth floor (weight bytes / measured device copy bandwidth).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from sslalm.bench.common import format_table, run_isolated, timed, torch_kernels_only

MAMBA, MAMBA_TORCH, HF_MAMBA, LLAMA = "ours", "ours-torch", "transformers-mamba", "transformers-llama"
OURS = (MAMBA, MAMBA_TORCH)
DEMO_TRAIN = dict(d_model=64, layers=2, batch=32, length=60, vocab=1024)


def kernels_for(kind: str):
    """ "ours-torch" runs with numba switched off (inside the returned context); every other kind as is."""
    return torch_kernels_only(kind == MAMBA_TORCH)


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--d-model", type=int, default=768, help="Mamba width (768, 24 layers = mamba-130m)")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--vocab", type=int, default=50280)
    parser.add_argument("--llama-hidden", type=int, default=768)
    parser.add_argument("--llama-layers", type=int, default=12)
    parser.add_argument("--llama-intermediate", type=int, default=2048)
    parser.add_argument("--llama-heads", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in each case")
    parser.add_argument("--prefill", type=_ints, default=[128, 1024], help="prompt lengths, e.g. 128,1024")
    parser.add_argument("--decode-contexts", type=_ints, default=[128, 1024], help="e.g. 128,1024,2048")
    parser.add_argument("--decode-tokens", type=int, default=5, help="timed decode steps per context")
    parser.add_argument("--repeats", type=int, default=3, help="timed prefills (median) for ours and LLaMA")
    parser.add_argument("--hf-repeats", type=int, default=1, help="timed prefills for transformers' Mamba")
    parser.add_argument("--no-bf16", action="store_true", help="skip our bf16-weights row")
    parser.add_argument("--skip-torch-kernels", action="store_true", help="skip the ours-torch rows")
    parser.add_argument("--skip-hf-mamba", action="store_true")
    parser.add_argument("--hf-bf16", action="store_true", help="also run transformers' Mamba in bf16 on CPU")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--train", action="store_true", help="also compare training forward + backward")
    parser.add_argument("--train-only", action="store_true", help="only the training comparison")
    parser.add_argument("--train-d-model", type=int, default=256)
    parser.add_argument("--train-layers", type=int, default=4)
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-length", type=int, default=256)
    parser.add_argument("--train-vocab", type=int, default=50280)
    parser.add_argument("--skip-demo-train", action="store_true", help="skip the demo-LM training shape")
    parser.add_argument("--no-gpu", action="store_true", help="CPU only even when CUDA is available")
    parser.add_argument("--timeout", type=float, default=3600.0, help="per-case limit (s)")


def _mamba_config(d_model: int, layers: int, vocab: int):
    from sslalm.models.mamba import MambaConfig

    return MambaConfig(d_model=d_model, n_layer=layers, vocab_size=vocab)


def _build(kind: str, spec: dict, device: str, dtype_name: str):
    """The model of ``kind`` with deterministic random weights (ours and transformers' Mamba share them)."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    dtype = getattr(torch, dtype_name)
    if kind == LLAMA:
        cfg = transformers.LlamaConfig(
            vocab_size=spec["vocab"],
            hidden_size=spec["llama_hidden"],
            intermediate_size=spec["llama_intermediate"],
            num_hidden_layers=spec["llama_layers"],
            num_attention_heads=spec["llama_heads"],
            max_position_embeddings=8192,
            tie_word_embeddings=True,
        )
        torch.manual_seed(0)
        return transformers.LlamaForCausalLM(cfg).to(device=device, dtype=dtype).eval()
    from sslalm.models.mamba import MambaLM

    cfg = _mamba_config(spec["d_model"], spec["layers"], spec["vocab"])
    torch.manual_seed(0)
    ours = MambaLM(cfg)
    if kind in OURS:
        return ours.to(device).to_compute_dtype(dtype).eval()
    hf = transformers.MambaForCausalLM(transformers.MambaConfig(**cfg.to_hf_dict()))
    hf.load_state_dict(ours.state_dict())
    return hf.to(device=device, dtype=dtype).eval()


class _Runner:
    """Uniform prefill / decode calls: the LM backends' own (``sslalm.models.backends``)."""

    def __init__(self, kind: str, model: Any):
        from sslalm.models.backends import lm_backend

        self.model = model
        self.backend = lm_backend("mamba" if kind in OURS else "hf")

    def prefill(self, ids):
        return self.backend.prefill(self.model, input_ids=ids)

    def step(self, token, cache):
        return self.backend.step(self.model, token, cache)


def inference_case(kind: str, spec: dict, device: str, dtype_name: str, cuda_graph: bool = False) -> dict:
    """Prefill and decode timings of one model (run in a child process on CPU)."""
    with kernels_for(kind):
        return _inference_case(kind, spec, device, dtype_name, cuda_graph)


def _scan_seconds(model, prompt, runner) -> tuple[float, float]:
    """(seconds inside the selective scan, total seconds) of one prefill of ``prompt``."""
    import sslalm.models.mamba as mamba_module

    spent = [0.0]
    scan = mamba_module.selective_scan

    def timed_scan(*args, **kwargs):
        t0 = time.perf_counter()
        out = scan(*args, **kwargs)
        spent[0] += time.perf_counter() - t0
        return out

    mamba_module.selective_scan = timed_scan
    try:
        t0 = time.perf_counter()
        runner.prefill(prompt)
        total = time.perf_counter() - t0
    finally:
        mamba_module.selective_scan = scan
    return spent[0], total


def _inference_case(kind: str, spec: dict, device: str, dtype_name: str, cuda_graph: bool) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    cuda = device.startswith("cuda")
    model = _build(kind, spec, device, dtype_name)
    runner = _Runner(kind, model)
    params = sum(p.numel() for p in model.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    gen = torch.Generator().manual_seed(1)
    prefill_set, contexts = set(spec["prefill"]), set(spec["contexts"])
    if kind == HF_MAMBA:
        contexts &= prefill_set  # its prefill is the costly part; decode where we prefilled anyway
    longest = max(prefill_set | contexts)
    ids = torch.randint(2, spec["vocab"] - 8, (1, longest), generator=gen).to(device)
    repeats = spec["hf_repeats"] if kind == HF_MAMBA else spec["repeats"]
    result: dict[str, Any] = {
        "params": params,
        "weight_bytes": weight_bytes,
        "prefill_s": {},
    }
    with torch.inference_mode():
        runner.prefill(ids[:, :16])  # warm-up (allocator, lazy initialisation)
        live = {}  # context length -> (next-token logits, state or cache)
        for length in sorted(prefill_set | contexts):
            prompt = ids[:, :length]
            box: dict = {}

            def run_prefill(prompt=prompt, box=box):
                box["out"] = runner.prefill(prompt)

            if length in prefill_set:
                t = timed(run_prefill, repeats=repeats, warmup=0, cuda=cuda)
                result["prefill_s"][length] = t["wall_s"]
            else:
                run_prefill()
            logits, cache = box["out"]
            if length == min(spec["prefill"]):
                result["check_logits"] = logits[0].float().cpu().tolist()
            if length in contexts:
                live[length] = runner.step(logits.argmax(-1), cache)  # one warm-up step per context
        # Decode round-robin over the contexts, so a change in the machine's load hits them all alike.
        times: dict[int, list[float]] = {n: [] for n in live}
        for _ in range(spec["decode_tokens"]):
            for n, (logits, cache) in live.items():
                token = logits.argmax(-1)
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                live[n] = runner.step(token, cache)
                if cuda:
                    torch.cuda.synchronize()
                times[n].append(time.perf_counter() - t0)
        result["decode_ms"] = {n: 1000 * statistics.median(ts) for n, ts in sorted(times.items())}
        if kind in OURS and not cuda:
            scan_s, total_s = _scan_seconds(model, ids[:, : max(spec["prefill"])], runner)
            result["scan_share"] = scan_s / total_s
        if cuda_graph and kind == MAMBA:
            graph = {
                n: _graph_decode_ms(model, cache, logits.argmax(-1), spec)
                for n, (logits, cache) in live.items()
            }
            result["graph_decode_ms"] = graph
    if cuda:
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def _graph_decode_ms(model, state, token, spec: dict) -> float:
    import torch

    from sslalm.generate import CUDAGraphStep

    step = CUDAGraphStep(model, state, token.shape[0])
    step(token)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(spec["decode_tokens"]):
        token = step(token).argmax(-1)
    torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / spec["decode_tokens"]


def train_case(kind: str, spec: dict, demo: bool = False) -> dict:
    """Seconds per forward + backward (median) of a small model in training (the demo's LM if ``demo``)."""
    with kernels_for(kind):
        return _train_case(kind, spec, demo)


def _train_case(kind: str, spec: dict, demo: bool) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    if demo:
        d, layers, batch, length, vocab = (
            DEMO_TRAIN[k] for k in ("d_model", "layers", "batch", "length", "vocab")
        )
    else:
        d, layers, vocab = spec["train_d_model"], spec["train_layers"], spec["train_vocab"]
        batch, length = spec["train_batch"], spec["train_length"]
    model = _build(kind, {"d_model": d, "layers": layers, "vocab": vocab}, "cpu", "float32").train()
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    box = {}

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        box["loss"] = loss.item()

    repeats = spec["hf_repeats"] if kind == HF_MAMBA else spec["repeats"]
    t = timed(fwd_bwd, repeats=repeats, warmup=1)
    return {
        "fwd_bwd_s": t["wall_s"],
        "loss": box["loss"],
        "params": sum(p.numel() for p in model.parameters()),
    }


def _gpu_bandwidth_gbs() -> float:
    """Device-to-device copy bandwidth (read + write bytes per second) of a 1 GiB buffer, in GB/s."""
    import torch

    src = torch.empty(2**28, dtype=torch.float32, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    torch.cuda.synchronize()
    return 2 * src.nbytes * 10 / (time.perf_counter() - t0) / 1e9


def _rel_err(a: list[float], b: list[float]) -> float:
    import torch

    ta, tb = torch.tensor(a), torch.tensor(b)
    return float((ta - tb).abs().max() / tb.abs().max())


def _inference_rows(spec: dict, args: argparse.Namespace, device: str, dtype: str, results: dict) -> list:
    cases = [(MAMBA, dtype)]
    bf16 = device == "cpu" and not args.no_bf16
    if bf16:
        cases.append((MAMBA, "bfloat16"))
    if device == "cpu" and not args.skip_torch_kernels:
        cases.append((MAMBA_TORCH, dtype))
    if not args.skip_hf_mamba:
        cases.append((HF_MAMBA, dtype))
        if bf16 and args.hf_bf16:
            cases.append((HF_MAMBA, "bfloat16"))
    if not args.skip_llama:
        cases.append((LLAMA, dtype))
    rows = []
    for kind, dt in cases:
        name = f"{kind} {dt} {device}"
        print(f"running {name} ...", flush=True)
        if device == "cpu":
            res = run_isolated(inference_case, kind, spec, device, dt, timeout=args.timeout)
        else:
            import torch

            torch.cuda.reset_peak_memory_stats()
            res = inference_case(kind, spec, device, dt, cuda_graph=(kind == MAMBA))
        results[name] = res
        row = {"model": kind, "dtype": dt, "device": device, "params_M": res["params"] / 1e6}
        for n, s in res["prefill_s"].items():
            row[f"prefill{n}_s"] = s
        for n, ms in res["decode_ms"].items():
            row[f"decode@{n}_ms"] = ms
        for n, ms in res.get("graph_decode_ms", {}).items():
            row[f"graph@{n}_ms"] = ms
        if "scan_share" in res:
            row["scan_share"] = res["scan_share"]
        row["peak_MB"] = res.get("peak_gpu_mb", res.get("peak_rss_mb"))
        rows.append(row)
    return rows


def _summary(results: dict, spec: dict, device: str) -> dict:
    """Speed-ups of every row of ours against every transformers row, logits check, decode growth."""
    out: dict[str, Any] = {}
    for name, ours in results.items():
        if not (name.startswith(MAMBA) and name.endswith(device)):
            continue
        ours_dt = name.split()[1]
        for other_name, other in results.items():
            if not other_name.endswith(device) or other_name.startswith(MAMBA) or "prefill_s" not in other:
                continue
            kind, other_dt = other_name.split()[:2]
            for n, s in other["prefill_s"].items():
                out[f"{device}_prefill{n}_speedup[ours {ours_dt} vs {kind} {other_dt}]"] = (
                    s / ours["prefill_s"][n]
                )
            if kind == HF_MAMBA and other_dt == ours_dt and "check_logits" in other:
                err = _rel_err(ours["check_logits"], other["check_logits"])
                out[f"{device}_logits_rel_err[ours vs {kind} {ours_dt}]"] = err
    lo, hi = min(spec["contexts"]), max(spec["contexts"])
    for name, res in results.items():
        if name.endswith(device) and lo in res.get("decode_ms", {}) and hi in res["decode_ms"]:
            out[f"decode_growth_{lo}_to_{hi}[{name}]"] = res["decode_ms"][hi] / res["decode_ms"][lo]
    return out


def run(args: argparse.Namespace) -> dict:
    spec = {
        "d_model": args.d_model,
        "layers": args.layers,
        "vocab": args.vocab,
        "llama_hidden": args.llama_hidden,
        "llama_layers": args.llama_layers,
        "llama_intermediate": args.llama_intermediate,
        "llama_heads": args.llama_heads,
        "threads": args.threads,
        "prefill": args.prefill,
        "contexts": args.decode_contexts,
        "decode_tokens": args.decode_tokens,
        "repeats": args.repeats,
        "hf_repeats": args.hf_repeats,
        "train_d_model": args.train_d_model,
        "train_layers": args.train_layers,
        "train_batch": args.train_batch,
        "train_length": args.train_length,
        "train_vocab": args.train_vocab,
    }
    import torch

    out: dict[str, Any] = {"spec": spec, "torch": torch.__version__, "results": {}}
    if not args.train_only:
        rows = _inference_rows(spec, args, "cpu", "float32", out["results"])
        print(f"\nCPU, {args.threads} thread(s), batch 1 (prefill in s, decode in ms/token):")
        print(format_table(rows, list(dict.fromkeys(k for r in rows for k in r))))
        out.update(_summary(out["results"], spec, "cpu"))
        if torch.cuda.is_available() and not args.no_gpu:
            out["gpu"] = torch.cuda.get_device_name()
            out["gpu_bandwidth_GBs"] = bw = _gpu_bandwidth_gbs()
            rows = _inference_rows(spec, args, "cuda", "bfloat16", out["results"])
            for row in rows:
                res = out["results"][f"{row['model']} bfloat16 cuda"]
                row["floor_ms"] = res["weight_bytes"] / (bw * 1e9) * 1e3
            print(f"\n{out['gpu']} (copy {bw:.0f} GB/s), bf16, batch 1; floor = weight bytes / bandwidth:")
            print(format_table(rows, list(dict.fromkeys(k for r in rows for k in r))))
            out.update(_summary(out["results"], spec, "cuda"))
    if args.train or args.train_only:
        out.update(_train_rows(spec, args, out["results"]))
    for res in out["results"].values():
        res.pop("check_logits", None)
    return out


def _train_rows(spec: dict, args: argparse.Namespace, results: dict) -> dict:
    """Training forward + backward: ours (auto kernels), ours-torch and transformers' Mamba, per shape."""
    out: dict[str, Any] = {}
    shapes = [("train", False)] + ([] if args.skip_demo_train else [("demo-train", True)])
    kinds = (
        [MAMBA]
        + ([] if args.skip_torch_kernels else [MAMBA_TORCH])
        + ([] if args.skip_hf_mamba else [HF_MAMBA])
    )
    for label, demo in shapes:
        rows = []
        for kind in kinds:
            print(f"running {label} fwd+bwd {kind} ...", flush=True)
            res = run_isolated(train_case, kind, spec, demo, timeout=args.timeout)
            results[f"{label} {kind}"] = res
            rows.append({"model": kind, "params_M": res["params"] / 1e6, "fwd_bwd_s": res["fwd_bwd_s"],
                         "loss": res["loss"], "peak_MB": res["peak_rss_mb"]})  # fmt: skip
        for row in rows[1:]:
            out[f"{label}_speedup[ours vs {row['model']}]"] = row["fwd_bwd_s"] / rows[0]["fwd_bwd_s"]
        if demo:
            what = ", ".join(f"{k} {v}" for k, v in DEMO_TRAIN.items())
        else:
            what = (f"d_model {args.train_d_model}, {args.train_layers} layers, batch {args.train_batch}, "
                    f"length {args.train_length}, vocab {args.train_vocab}")  # fmt: skip
        print(f"\nTraining forward + backward ({label}: {what}), CPU, {args.threads} thread(s):")
        print(format_table(rows, ["model", "params_M", "fwd_bwd_s", "loss", "peak_MB"]))
    return out
