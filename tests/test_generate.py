"""Generation with the constant-size state: transformers parity, batching, stopping, sampling, tokenizer."""

from __future__ import annotations

import pytest
import torch
from transformers import MambaConfig as HFMambaConfig
from transformers import MambaForCausalLM
from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

from sslalm.generate import GenerationConfig, apply_repetition_penalty, generate
from sslalm.models.mamba import MambaConfig, MambaLM
from sslalm.tokenizer import build_byte_tokenizer, load_tokenizer

VOCAB = 300
GREEDY = dict(do_sample=False, eos_token_id=None)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(3)
    return MambaLM(MambaConfig(d_model=32, n_layer=2, vocab_size=VOCAB)).eval()


def ragged_prompts(n: int = 4, max_len: int = 9):
    g = torch.Generator().manual_seed(7)
    lengths = torch.randint(1, max_len + 1, (n,), generator=g)
    lengths[0] = max_len
    ids = torch.randint(2, VOCAB, (n, max_len), generator=g)
    ids[torch.arange(max_len)[None, :] >= lengths[:, None]] = 1  # pad id, must be ignored
    return ids, lengths


@pytest.mark.parametrize("penalty", [1.0, 1.1])
def test_greedy_matches_transformers(model, penalty):
    hf = MambaForCausalLM(HFMambaConfig(**model.config.to_hf_dict())).eval()
    hf.load_state_dict(model.state_dict())
    ids = torch.randint(2, VOCAB, (2, 6))
    ref = hf.generate(
        ids, max_new_tokens=12, do_sample=False, repetition_penalty=penalty, eos_token_id=None, pad_token_id=0
    )[:, 6:]
    ours = generate(model, ids, max_new_tokens=12, repetition_penalty=penalty, **GREEDY)
    assert torch.equal(ours.sequences, ref)
    embeds = model.embed(ids).detach()
    ref_embeds = hf.generate(inputs_embeds=embeds, max_new_tokens=12, do_sample=False, repetition_penalty=1.0)
    ours_embeds = generate(model, inputs_embeds=embeds, max_new_tokens=12, repetition_penalty=1.0, **GREEDY)
    assert torch.equal(ours_embeds.sequences, ref_embeds[:, : ours_embeds.sequences.shape[1]])


@pytest.mark.parametrize("as_embeds", [False, True])
def test_batched_equals_one_by_one(model, as_embeds):
    ids, lengths = ragged_prompts()
    kw = dict(max_new_tokens=10, **GREEDY)
    if as_embeds:
        embeds = model.embed(ids).detach()
        batched = generate(model, inputs_embeds=embeds, lengths=lengths, **kw)
        singles = [generate(model, inputs_embeds=embeds[b : b + 1, :n], **kw) for b, n in enumerate(lengths)]
    else:
        batched = generate(model, ids, lengths=lengths, **kw)
        singles = [generate(model, ids[b : b + 1, :n], **kw) for b, n in enumerate(lengths)]
    assert len({tuple(s.sequences[0].tolist()) for s in singles}) > 1  # prompts really differ
    for b, single in enumerate(singles):
        assert batched.sequences[b].tolist() == single.sequences[0].tolist()


def test_stops_at_eos_per_sequence(model):
    ids, lengths = ragged_prompts(3)
    free = generate(model, ids, lengths=lengths, max_new_tokens=8, **GREEDY)
    eos = int(free.sequences[0, 2])  # make row 0's third token the end of its answer
    out = generate(
        model, ids, lengths=lengths, max_new_tokens=8, do_sample=False, eos_token_id=eos, pad_token_id=1
    )
    for b in range(3):
        row = free.sequences[b].tolist()
        n = row.index(eos) + 1 if eos in row else 8
        assert out.lengths[b] == n
        assert out.sequences[b, :n].tolist() == row[:n]
        assert (out.sequences[b, n:] == 1).all()
        assert out.tolist()[b] == [t for t in row[:n] if t != eos]
    assert out.lengths[0] <= 3


def test_seeded_sampling_is_reproducible(model):
    ids, lengths = ragged_prompts(3)
    kw = dict(max_new_tokens=15, temperature=1.0, top_k=50, top_p=0.9, eos_token_id=None)
    a = generate(model, ids, lengths=lengths, seed=123, **kw)
    b = generate(model, ids, lengths=lengths, seed=123, **kw)
    c = generate(model, ids, lengths=lengths, seed=124, **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert not torch.equal(a.sequences, c.sequences)
    one = generate(model, ids, lengths=lengths, max_new_tokens=15, top_k=1, eos_token_id=None, seed=5)
    greedy = generate(model, ids, lengths=lengths, max_new_tokens=15, **GREEDY)
    assert torch.equal(one.sequences, greedy.sequences)


def test_paper_defaults():
    cfg = GenerationConfig()
    assert (cfg.temperature, cfg.top_k, cfg.top_p, cfg.repetition_penalty) == (0.1, 500, 0.95, 1.1)
    assert cfg.eos_token_id == 0 and cfg.do_sample
    assert cfg.hf_kwargs()["top_k"] == 500


def test_repetition_penalty_matches_transformers():
    torch.manual_seed(0)
    scores = torch.randn(3, 50)
    history = torch.randint(0, 50, (3, 20))
    seen = torch.zeros(3, 50, dtype=torch.bool).scatter_(1, history, True)
    ref = RepetitionPenaltyLogitsProcessor(1.3)(history, scores.clone())
    assert torch.allclose(apply_repetition_penalty(scores, seen, 1.3), ref)


def test_generate_from_cached_prefix_state(model):
    """An audio prefix read once can serve several questions: its state seeds generation."""
    prefix = torch.randint(2, VOCAB, (1, 7))
    question = torch.randint(2, VOCAB, (1, 4))
    with torch.no_grad():
        _, prefix_state = model.prefill(prefix)
    cached = generate(model, question, state=prefix_state, max_new_tokens=6, **GREEDY)
    full = generate(model, torch.cat([prefix, question], 1), max_new_tokens=6, **GREEDY)
    assert torch.equal(cached.sequences, full.sequences)


def test_local_tokenizer_conventions_and_round_trip(model, tmp_path):
    texts = ["a dog barks in the rain", "birds sing at dawn", "the engine of a car idles"] * 10
    build_byte_tokenizer(texts, vocab_size=VOCAB, path=tmp_path / "tok")
    tok = load_tokenizer(tmp_path / "tok")
    assert (tok.eos_token_id, tok.pad_token_id) == (0, 1)  # GPT-NeoX: <|endoftext|>=0, <|padding|>=1
    assert len(tok) == VOCAB
    text = "a dog sings, ünïcode ok"
    ids = tok(text)["input_ids"]
    assert ids[0] != tok.bos_token_id and tok.decode(ids) == text
    batch = tok(["birds sing", "a dog barks at dawn"], padding=True, return_tensors="pt")
    lengths = batch["attention_mask"].sum(1)
    out = generate(model, batch["input_ids"], lengths=lengths, max_new_tokens=5, do_sample=False)
    assert len(tok.batch_decode(out.tolist())) == 2


def test_tokenizer_without_pad_gets_one(tmp_path):
    tok = build_byte_tokenizer(["hello world"] * 5, vocab_size=260)
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "nopad")
    assert load_tokenizer(tmp_path / "nopad").pad_token == "<|padding|>"
