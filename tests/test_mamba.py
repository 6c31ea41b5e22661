"""Our Mamba-1 LM against transformers' MambaForCausalLM (the reference): logits, checkpoints, state."""

from __future__ import annotations

import json
import os

import pytest
import torch
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM

from sslalm.models.mamba import MambaConfig, MambaLM, MambaMixer, MambaState, load_weight_files

VOCAB = 1001  # not a multiple of 8: exercises the padding to 1008 rows


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def tiny(**kw) -> MambaLM:
    return MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=VOCAB, **kw)).eval()


def hf_twin(model: MambaLM) -> MambaForCausalLM:
    """transformers' model holding exactly our weights."""
    hf = MambaForCausalLM(HFMambaConfig(**model.config.to_hf_dict())).eval()
    hf.load_state_dict(model.state_dict(), strict=True)
    hf.tie_weights()
    return hf


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(1)
    model = tiny()
    return model, hf_twin(model)


def test_config_presets_and_padding():
    cfg = MambaConfig.mamba_2_8b()
    assert (cfg.d_inner, cfg.time_step_rank, cfg.padded_vocab_size) == (5120, 160, 50280)
    with torch.device("meta"):
        big = MambaLM(cfg)
    assert big.num_parameters() == 2_768_345_600  # docs/mamba.md, the hub's "2.77B"
    assert tiny().backbone.embeddings.weight.shape == (1008, 32)
    assert MambaConfig.from_dict(cfg.to_dict()) == cfg
    assert MambaConfig.from_dict(cfg.to_hf_dict()).to_hf_dict() == cfg.to_hf_dict()
    assert MambaConfig.from_dict(cfg.to_state_spaces_dict()) == cfg


def test_logits_match_transformers(pair):
    model, hf = pair
    ids = torch.randint(0, VOCAB, (3, 29))
    with torch.no_grad():
        ours, ref = model(ids).logits, hf(ids).logits
        assert ours.shape == ref.shape == (3, 29, 1008)
        assert rel_err(ours, ref) < 1e-4
        embeds = model.embed(ids)
        assert rel_err(model(inputs_embeds=embeds).logits, hf(inputs_embeds=embeds).logits) < 1e-4


def test_loss_matches_transformers(pair):
    model, hf = pair
    ids = torch.randint(0, VOCAB, (2, 17))
    labels = ids.clone()
    labels[:, :5] = -100
    with torch.no_grad():
        assert torch.allclose(model(ids, labels=labels).loss, hf(ids, labels=labels).loss, rtol=1e-5)


def test_step_by_step_equals_full_forward(pair):
    model, hf = pair
    ids = torch.randint(0, VOCAB, (2, 12))
    with torch.no_grad():
        full = model(ids).logits
        logits, state = model.prefill(ids[:, :5])
        steps = [logits]
        for t in range(5, 12):
            steps.append(model.step(ids[:, t], state=state))
    assert rel_err(torch.stack(steps, 1), full[:, 4:]) < 1e-5


def test_chunked_prefill_equals_one_pass(pair):
    model, _ = pair
    ids = torch.randint(0, VOCAB, (2, 23))
    with torch.no_grad():
        one = model(ids, return_state=True)
        a = model(ids[:, :4], return_state=True)
        a_before = a.state.clone()
        b = model(ids[:, 4:9], state=a.state)
        c = model(ids[:, 9:], state=b.state)
    chunked = torch.cat([a.logits, b.logits, c.logits], 1)
    assert rel_err(chunked, one.logits) < 1e-5
    assert torch.allclose(c.state.ssm, one.state.ssm, atol=1e-5)
    assert torch.allclose(c.state.conv, one.state.conv)
    assert torch.equal(a.state.ssm, a_before.ssm) and torch.equal(a.state.conv, a_before.conv)  # untouched


def test_right_padded_batch_equals_single_sequences(pair):
    model, _ = pair
    lengths = [7, 3, 11]
    ids = torch.randint(2, VOCAB, (3, 11))
    mask = torch.arange(11)[None, :] < torch.tensor(lengths)[:, None]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask, return_state=True)
        last, state = model.prefill(ids, lengths=lengths)
        for b, n in enumerate(lengths):
            alone = model(ids[b : b + 1, :n], return_state=True)
            assert rel_err(batched.logits[b, :n], alone.logits[0]) < 1e-5
            assert rel_err(last[b], alone.logits[0, -1]) < 1e-5
            assert torch.allclose(state.ssm[:, b], alone.state.ssm[:, 0], atol=1e-6)
            assert torch.allclose(state.conv[:, b], alone.state.conv[:, 0], atol=1e-6)  # rounding in layer 1
            assert torch.allclose(batched.state.ssm[:, b], alone.state.ssm[:, 0], atol=1e-6)


def test_left_padding_matches_transformers(pair):
    model, hf = pair
    ids = torch.randint(2, VOCAB, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, :4] = 0
    with torch.no_grad():
        ours = model(ids, attention_mask=mask).logits
        ref = hf(ids, attention_mask=mask).logits
        alone = model(ids[1:, 4:]).logits
    assert rel_err(ours[:, -5:], ref[:, -5:]) < 1e-4
    assert rel_err(ours[1, 4:], alone[0]) < 1e-5


def test_state_is_constant_size_and_updated_in_place(pair):
    model, _ = pair
    with torch.no_grad():
        _, s_short = model.prefill(torch.randint(0, VOCAB, (1, 3)))
        _, s_long = model.prefill(torch.randint(0, VOCAB, (1, 300)))
        assert s_short.nbytes() == s_long.nbytes() == MambaState.zeros(model.config, 1).nbytes()
        ptrs = (s_long.conv.data_ptr(), s_long.ssm.data_ptr())
        before = s_long.clone()
        model.step(torch.tensor([5]), state=s_long)
    assert (s_long.conv.data_ptr(), s_long.ssm.data_ptr()) == ptrs
    assert not torch.equal(before.ssm, s_long.ssm)
    assert s_long.ssm.dtype == torch.float32


def save_state_spaces(model: MambaLM, path) -> None:
    """The original state-spaces layout: config.json (d_model, n_layer, ...) + pytorch_model.bin."""
    path.mkdir()
    (path / "config.json").write_text(json.dumps(model.config.to_state_spaces_dict()))
    sd = {
        k.replace("backbone.embeddings.", "backbone.embedding."): v.clone()
        for k, v in model.state_dict().items()
    }
    torch.save(sd, path / "pytorch_model.bin")


def test_load_state_spaces_layout(pair, tmp_path):
    model, hf = pair
    save_state_spaces(model, tmp_path / "mamba-tiny")
    sd = torch.load(tmp_path / "mamba-tiny" / "pytorch_model.bin", weights_only=True)
    assert "backbone.embedding.weight" in sd and "lm_head.weight" in sd
    loaded = MambaLM.from_pretrained(tmp_path / "mamba-tiny")
    assert loaded.config.vocab_size == VOCAB and loaded.config.padded_vocab_size == 1008
    assert loaded.lm_head.weight is loaded.backbone.embeddings.weight
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        assert rel_err(loaded(ids).logits, hf(ids).logits) < 1e-4


def test_load_hf_sharded_layout(pair, tmp_path):
    model, hf = pair
    hf.save_pretrained(tmp_path / "mamba-tiny-hf", max_shard_size="40KB")
    files = sorted(p.name for p in (tmp_path / "mamba-tiny-hf").iterdir())
    assert "model.safetensors.index.json" in files and sum(f.endswith(".safetensors") for f in files) > 1
    assert "pytorch_model.bin" not in files
    assert "backbone.embeddings.weight" in load_weight_files(tmp_path / "mamba-tiny-hf")
    loaded = MambaLM.from_pretrained(tmp_path / "mamba-tiny-hf")
    ids = torch.randint(0, VOCAB, (2, 13))
    with torch.no_grad():
        assert rel_err(loaded(ids).logits, hf(ids).logits) < 1e-4
    # and our own writer produces a folder transformers loads
    model.save_pretrained(tmp_path / "ours")
    back = MambaForCausalLM.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert rel_err(back(ids).logits, hf(ids).logits) < 1e-6


def test_load_rejects_mismatched_checkpoint(pair, tmp_path):
    model, _ = pair
    save_state_spaces(model, tmp_path / "bad")
    sd = torch.load(tmp_path / "bad" / "pytorch_model.bin", weights_only=True)
    sd.pop("backbone.layers.1.mixer.D")
    sd["backbone.layers.1.mixer.extra"] = torch.zeros(1)
    torch.save(sd, tmp_path / "bad" / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"layers\.1\.mixer\.D.*layers\.1\.mixer\.extra"):
        MambaLM.from_pretrained(tmp_path / "bad")
    with pytest.raises(FileNotFoundError):
        MambaLM.from_pretrained(tmp_path)


def test_bf16_keeps_ssm_parameters_fp32(pair):
    model, _ = pair
    ids = torch.randint(0, VOCAB, (1, 16))
    low = tiny()
    low.load_state_dict(model.state_dict())
    low.to_compute_dtype(torch.bfloat16)
    mixer = low.backbone.layers[0].mixer
    assert mixer.A_log.dtype == mixer.D.dtype == mixer.dt_proj.bias.dtype == torch.float32
    assert mixer.in_proj.weight.dtype == torch.bfloat16
    with torch.no_grad():
        ref = model(ids).logits
        out = low(ids).logits
        logits, state = low.prefill(ids[:, :8])
        step = low.step(ids[:, 8], state=state)
    assert rel_err(out, ref) < 0.05
    assert rel_err(step, out[:, 8]) < 0.02


def test_gradient_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    model = tiny().train()
    ids = torch.randint(0, VOCAB, (2, 10))
    model(ids, labels=ids).loss.backward()
    ref = model.backbone.layers[0].mixer.in_proj.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    model(ids, labels=ids).loss.backward()
    assert torch.allclose(model.backbone.layers[0].mixer.in_proj.weight.grad, ref, atol=1e-6)


def test_bad_inputs_raise(pair):
    model, _ = pair
    ids = torch.randint(0, VOCAB, (2, 5))
    with pytest.raises(ValueError, match="exactly one"):
        model(ids, inputs_embeds=model.embed(ids))
    with pytest.raises(ValueError, match="lengths"):
        model.prefill(ids, lengths=[0, 5])
    holes = torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with pytest.raises(ValueError, match="contiguous"):
        model(ids, attention_mask=holes)
    with torch.no_grad():
        _, state = model.prefill(ids)
    with pytest.raises(ValueError, match="left padding"):
        model(ids, attention_mask=torch.tensor([[0, 1, 1, 1, 1], [1, 1, 1, 1, 1]]), state=state)
    with pytest.raises(TypeError, match="unexpected"):
        model(ids, past_key_values=object())


def test_mixer_kernels_agree():
    """The LM with the compiled CPU kernels (numba scan and step) equals the torch kernels: prefill logits,
    the state, decoding steps and the training gradients."""
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=64, d_state=4))
    ids = torch.randint(0, 64, (2, 11))

    def run(scan: str, step: str):
        for mixer in (m for m in model.modules() if isinstance(m, MambaMixer)):
            mixer.scan_method, mixer.step_method = scan, step
        with torch.no_grad():
            logits, state = model.prefill(ids)
            steps = [model.step(logits.argmax(-1), state=state) for _ in range(3)]
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return [logits, state.conv, state.ssm, *steps, *grads]

    fast, slow = run("numba", "numba"), run("recurrent", "torch")
    for a, b in zip(fast, slow, strict=True):
        assert rel_err(a, b) < 1e-4


def test_bench_cases_run_at_a_tiny_shape():
    """``sslalm bench lm`` case functions, in-process at a toy size (the CLI runs them in child processes)."""
    from sslalm.bench.lm import HF_MAMBA, LLAMA, MAMBA, MAMBA_TORCH, inference_case, train_case

    spec = dict(d_model=16, layers=1, vocab=64, llama_hidden=16, llama_layers=1, llama_intermediate=32)
    spec.update(llama_heads=2, threads=1, prefill=[8], contexts=[8, 12], decode_tokens=2, repeats=1)
    spec.update(hf_repeats=1, train_d_model=16, train_layers=1, train_batch=2, train_length=8, train_vocab=64)
    ours = inference_case(MAMBA, spec, "cpu", "float32")
    hf = inference_case(HF_MAMBA, spec, "cpu", "float32")
    llama = inference_case(LLAMA, spec, "cpu", "float32")
    assert set(ours["decode_ms"]) == {8, 12} and set(hf["decode_ms"]) == {8}
    assert set(llama["decode_ms"]) == {8, 12}
    assert rel_err(torch.tensor(ours["check_logits"]), torch.tensor(hf["check_logits"])) < 1e-5
    assert train_case(MAMBA, spec)["loss"] == pytest.approx(train_case(HF_MAMBA, spec)["loss"], rel=1e-5)
    # "ours-torch": numba off inside the case only, same numbers; the demo's training shape runs
    torch_kernels = inference_case(MAMBA_TORCH, spec, "cpu", "float32")
    assert rel_err(torch.tensor(torch_kernels["check_logits"]), torch.tensor(ours["check_logits"])) < 1e-5
    assert 0 < ours["scan_share"] < 1 and 0 < torch_kernels["scan_share"] < 1
    assert "SSLALM_DISABLE_NUMBA" not in os.environ
    demo = train_case(MAMBA_TORCH, spec, demo=True)
    assert demo["loss"] == pytest.approx(train_case(MAMBA, spec, demo=True)["loss"], rel=1e-5)


def test_static_decode_step_is_the_captured_function():
    """``StaticStep`` is what ``CUDAGraphStep`` captures; run eagerly it must equal ``model.step`` (only the
    capture itself needs a GPU). On a CPU ``generate`` uses it by default and refuses ``cuda_graph=True``."""
    from sslalm.generate import CUDAGraphStep, StaticStep, generate, make_decode_step

    torch.manual_seed(1)
    model = MambaLM(MambaConfig(d_model=16, n_layer=2, vocab_size=64)).eval()
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad():
        logits, state = model.prefill(ids)
        twin = state.clone()
        step = make_decode_step(model, state, 2)
        assert type(step) is StaticStep and issubclass(CUDAGraphStep, StaticStep)
        token = logits.argmax(-1)
        for _ in range(4):
            got = step(token)
            want = model.step(token, state=twin)
            assert (
                torch.equal(got, want)
                and torch.equal(state.ssm, twin.ssm)
                and torch.equal(state.conv, twin.conv)
            )
            token = got.argmax(-1)
    with pytest.raises(ValueError, match="CUDA"):
        generate(model, ids, max_new_tokens=3, do_sample=False, cuda_graph=True)
    out = generate(model, ids, max_new_tokens=4, do_sample=False, eos_token_id=None)
    assert out.sequences.shape == (2, 4)
