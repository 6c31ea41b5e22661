"""Prompt template, tokenisation (cut, EOS), loss masking and right-padded collation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sslalm.prompt import (
    IGNORE_INDEX,
    Collator,
    build_prompt,
    collate,
    extract_response,
    tokenize_example,
)

_CORPUS = [
    "### Instruction:\nWhat is the sound?\n\n### Response:\nA dog barks twice.",
    "### Instruction:\nDescribe the audio.\n\n### Input:\nhello there\n\n### Response:\nSpeech, a man.",
    "Close-ended question: Write an audio caption describing the sound. Label: bell; siren; music",
]


def tiny_tokenizer(bos: bool = False):
    """A byte-level BPE tokenizer trained in memory (GPT-NeoX-like: EOS 0, pad 1; optional LLaMA-like BOS)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|padding|>", "<s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 5, trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    extra = {"bos_token": "<s>"} if bos else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|padding|>", **extra
    )


_TOK = tiny_tokenizer()


@pytest.fixture(scope="module")
def tok():
    return _TOK


def test_template_matches_alpaca_short():
    assert build_prompt("What is it?") == "### Instruction:\nWhat is it?\n\n### Response:\n"
    assert build_prompt("Q?", "") == "### Instruction:\nQ?\n\n### Response:\n"
    assert build_prompt("Q?", "words") == "### Instruction:\nQ?\n\n### Input:\nwords\n\n### Response:\n"
    assert extract_response(build_prompt("Q?") + "  An answer. ") == "An answer."


def test_full_text_labels_and_eos(tok):
    ex = tokenize_example(tok, "What is the sound?", "", "A dog barks.")
    expected = tok(build_prompt("What is the sound?") + "A dog barks.")["input_ids"] + [tok.eos_token_id]
    assert ex["input_ids"] == expected
    assert ex["labels"] == expected  # LTU default: loss on every text token, EOS included
    assert ex["attention_mask"] == [1] * len(expected)


@pytest.mark.parametrize("bos", [False, True])
def test_answer_only_masks_exactly_the_prompt(bos):
    tok = tiny_tokenizer(bos=bos)
    ex = tokenize_example(tok, "What is the sound?", "", "A dog barks twice.", train_on_inputs=False)
    n_masked = sum(1 for x in ex["labels"] if x == IGNORE_INDEX)
    assert ex["labels"][:n_masked] == [IGNORE_INDEX] * n_masked
    prompt_text = tok.decode(ex["input_ids"][:n_masked], skip_special_tokens=True)
    assert prompt_text == build_prompt("What is the sound?")
    answer_ids = ex["labels"][n_masked:]
    assert answer_ids == ex["input_ids"][n_masked:]
    assert answer_ids[-1] == tok.eos_token_id
    assert tok.decode(answer_ids, skip_special_tokens=True) == "A dog barks twice."
    if bos:
        assert ex["input_ids"][0] == tok.bos_token_id


@settings(max_examples=40, deadline=None)
@given(cutoff=st.integers(1, 60), words=st.integers(0, 30))
def test_cutoff_keeps_eos_only_when_there_is_room(cutoff, words):
    tok = _TOK
    output = " ".join(["dog barks"] * words)
    full = tok(build_prompt("Q?") + output)["input_ids"]
    ex = tokenize_example(tok, "Q?", "", output, cutoff_len=cutoff)
    assert len(ex["input_ids"]) <= cutoff
    if len(full) < cutoff:
        assert ex["input_ids"] == full + [tok.eos_token_id]
    else:  # truncated (or exactly full): LTU appends no EOS
        assert ex["input_ids"] == full[:cutoff]
    for train_on_inputs in (True, False):
        ex2 = tokenize_example(tok, "Q?", "", output, cutoff_len=cutoff, train_on_inputs=train_on_inputs)
        assert len(ex2["labels"]) == len(ex2["input_ids"]) == len(ex2["attention_mask"])


def test_no_eos_token_is_an_error(tok):
    class NoEos:
        eos_token_id = None

    with pytest.raises(ValueError, match="eos"):
        tokenize_example(NoEos(), "q", "", "a")


def test_collate_right_pads(tok):
    a = tokenize_example(tok, "What is the sound?", "", "A dog barks twice.")
    b = tokenize_example(tok, "Q?", "", "Bell.")
    fb = [torch.randn(16, 128), torch.randn(16, 128)]
    batch = collate([{**a, "fbank": fb[0]}, {**b, "fbank": fb[1]}], pad_id=tok.pad_token_id)
    la, lb = len(a["input_ids"]), len(b["input_ids"])
    assert la > lb
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (2, la)
    assert batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1, :lb].tolist() == b["input_ids"]
    assert batch["input_ids"][1, lb:].eq(tok.pad_token_id).all()
    assert batch["attention_mask"][1].tolist() == [1] * lb + [0] * (la - lb)
    assert batch["labels"][1, lb:].eq(IGNORE_INDEX).all()
    assert batch["labels"][0].tolist() == a["labels"]
    assert torch.equal(batch["fbank"], torch.stack(fb))

    padded = Collator(tok.pad_token_id, pad_to_multiple_of=8)([a, b])
    assert padded["input_ids"].shape[1] % 8 == 0 and padded["input_ids"].shape[1] >= la
    assert "fbank" not in padded
    with pytest.raises(ValueError):
        collate([], pad_id=0)
