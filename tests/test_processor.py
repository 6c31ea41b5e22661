"""The processor: the one path from audio and text to model inputs, for training and inference alike."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from sslalm.audio import FbankExtractor
from sslalm.models.lalm import SSLALM, SSLALMConfig
from sslalm.models.processor import SSLALMProcessor
from sslalm.prompt import IGNORE_INDEX, build_prompt, collate, tokenize_example


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SSLALM(SSLALMConfig.preset("tiny-sslalm", train_frames=256, min_inference_frames=300)).eval()


def test_audio_features_for_training_crops_and_whole_clips(model):
    proc = model.processor
    wave = torch.randn(16000 * 5) * 0.1  # 498 frames
    torch.testing.assert_close(proc.training_features(wave), FbankExtractor(target_length=256)(wave))
    assert proc.training_features(wave).shape == (256, 128)
    torch.testing.assert_close(proc.inference_features(wave), FbankExtractor(target_length=None)(wave))
    short = torch.randn(16000) * 0.1  # 98 frames: padded to min_inference_frames as in training
    torch.testing.assert_close(proc.inference_features(short), FbankExtractor(target_length=300)(short))
    for n in (400, 16000, 47_999, 48_160, 80_000):  # around min_inference_frames (300 frames = 48,160)
        assert proc.inference_frames(n) == proc.inference_features(torch.randn(n) * 0.1).shape[0]


def test_text_goes_through_the_template(model):
    proc = model.processor
    tok = model.tokenizer
    assert proc.prompt_ids("What is it?") == tok(build_prompt("What is it?"))["input_ids"]
    q, a = "What is it?", "A dog."
    assert proc.text_example(q, "", a) == tokenize_example(tok, q, "", a)
    masked = SSLALMProcessor(tok, train_on_inputs=False, cutoff_len=20).text_example(q, "", a)
    assert masked == tokenize_example(tok, q, "", a, cutoff_len=20, train_on_inputs=False)
    assert IGNORE_INDEX in masked["labels"]
    ids = tok("A dog barks.")["input_ids"] + [tok.eos_token_id]
    assert proc.decode(ids) == "A dog barks."


def test_examples_and_batches(model):
    proc = model.processor
    g = torch.Generator().manual_seed(0)
    waves = [torch.randn(8000, generator=g), torch.randn(20000, generator=g)]
    examples = [proc.training_example(w, "Q?", "", a) for w, a in zip(waves, ["Yes.", "A long answer here."])]
    for w, ex in zip(waves, examples):
        torch.testing.assert_close(ex["fbank"], proc.training_features(w))
    batch = proc(examples)
    reference = collate(examples, model.tokenizer.pad_token_id)
    assert batch.keys() == reference.keys() == {"fbank", "input_ids", "attention_mask", "labels"}
    for k in batch:
        torch.testing.assert_close(batch[k], reference[k])
    with torch.no_grad():
        assert torch.isfinite(model(**batch).loss)


def test_generate_decodes_from_the_processors_inputs(model):
    """``prompt_embeddings`` is audio tokens of the whole-clip fbank, then the templated question."""
    wave = torch.randn(16000 * 4) * 0.1
    [seq] = model.prompt_embeddings([wave], ["What is it?"])
    with torch.no_grad():
        audio = model.encode_audio(model.processor.inference_features(wave)[None])[0]
        text = model.embed_tokens(torch.tensor(model.processor.prompt_ids("What is it?")))
    torch.testing.assert_close(seq, torch.cat([audio, text]))


def test_saved_alone_or_as_part_of_a_model_folder(model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    from_model = SSLALMProcessor.from_pretrained(tmp_path / "model", cutoff_len=50)
    assert (from_model.train_frames, from_model.min_inference_frames, from_model.cutoff_len) == (256, 300, 50)
    assert from_model.prompt_ids("Hi?") == model.processor.prompt_ids("Hi?")
    from_model.save_pretrained(tmp_path / "proc")
    saved = json.loads((tmp_path / "proc" / "processor_config.json").read_text())
    assert saved["cutoff_len"] == 50 and saved["sample_rate"] == 16000
    again = SSLALMProcessor.from_pretrained(tmp_path / "proc")
    assert again.to_dict() == from_model.to_dict()
    assert again.prompt_ids("Hi?") == model.processor.prompt_ids("Hi?")
    with pytest.raises(FileNotFoundError, match="processor_config.json"):
        SSLALMProcessor.from_pretrained(tmp_path)


def test_old_configs_with_cutoff_len_still_load(caplog):
    data = SSLALMConfig.preset("tiny-sslalm").to_dict()
    assert "cutoff_len" not in data
    with caplog.at_level("WARNING"):
        config = SSLALMConfig.from_dict({**data, "cutoff_len": 108})
    assert config == SSLALMConfig.preset("tiny-sslalm")
    assert "cutoff_len" in caplog.text
    with pytest.raises(ValueError, match="unknown field .cutof_len."):
        SSLALMConfig.from_dict({**data, "cutof_len": 108})


def test_tiny_tokenizer_comes_from_the_config_field_not_the_name():
    named = dataclasses.replace(SSLALMConfig.preset("tiny-sslalm"), name="custom")  # not keyed on the name
    assert len(SSLALM(named).tokenizer) == 258
    with pytest.raises(ValueError, match="no tokenizer"):
        SSLALM(SSLALMConfig.preset("tiny-sslalm", byte_tokenizer=False))
