"""The composed audio language model: presets, trainable parts, save/load, checkpoints, batched generation."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from sslalm.models.dass import DASSConfig, DASSModel
from sslalm.models.lalm import PRESETS, SSLALM, SSLALMConfig
from sslalm.models.mamba import MambaConfig, MambaLM
from sslalm.models.projector import ConvProjector, PoolProjector

# paper §III.E (docs/paper.md): trainable and total parameters, in millions / billions
TABLE = {
    "sslalm-small": (43.3, 2.8),
    "sslalm-medium": (62.1, 2.8),
    "hybrid-small": (42.1, 6.8),
    "hybrid-medium": (60.9, 6.8),
}


@pytest.mark.parametrize("name", sorted(TABLE))
def test_full_presets_match_the_paper_counts_on_meta(name):
    with torch.device("meta"):
        model = SSLALM(SSLALMConfig.preset(name))
    trainable, total = TABLE[name]
    assert abs(model.num_trainable_parameters() / 1e6 - trainable) < 0.1
    assert round(model.num_parameters() / 1e9, 1) == total
    assert model.num_audio_tokens(1024) == 32


def test_every_preset_is_listed_and_unknown_names_fail():
    assert {"sslalm-small", "sslalm-medium", "hybrid-small", "hybrid-medium", "ltu"} <= set(PRESETS)
    assert {"tiny-sslalm", "tiny-hybrid", "tiny-ltu"} <= set(PRESETS)
    with pytest.raises(ValueError, match="unknown preset"):
        SSLALMConfig.preset("nope")


def test_config_round_trips_through_json():
    config = SSLALMConfig.preset("tiny-ltu", lora_r=4)
    assert SSLALMConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def _batch(model, batch=2, frames=1024, length=12):
    fbank = torch.randn(batch, frames, 128)
    ids = torch.randint(2, len(model.tokenizer), (batch, length))
    mask = torch.ones_like(ids)
    mask[1, length - 4 :] = 0
    labels = ids.masked_fill(mask == 0, -100)
    return fbank, ids, mask, labels


@pytest.mark.parametrize("name", ["tiny-sslalm", "tiny-hybrid", "tiny-ltu"])
def test_tiny_presets_train_only_the_chosen_parts(name):
    model = SSLALM(SSLALMConfig.preset(name))
    fbank, ids, mask, labels = _batch(model)
    out = model(fbank, ids, mask, labels)
    n_audio = model.num_audio_tokens(1024)
    assert out.logits.shape[:2] == (2, n_audio + ids.shape[1])
    model.set_trainable(["projector"])
    assert model.num_trainable_parameters() == sum(p.numel() for p in model.projector.parameters())
    model.zero_grad()
    model(fbank, ids, mask, labels).loss.backward()
    grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert grads and all(n.startswith("projector.") for n in grads)
    model.set_trainable(["projector", "encoder", "lora"])
    model.zero_grad()
    model(fbank, ids, mask, labels).loss.backward()
    grads = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None}
    assert grads == {"encoder", "projector", "lm"}
    assert all("lora_" in n for n, p in model.lm.named_parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="unknown trainable"):
        model.set_trainable(["everything"])


def test_loss_ignores_audio_positions_and_padding():
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    fbank, ids, mask, labels = _batch(model)
    with torch.no_grad():
        out = model(fbank, ids, mask, labels)
        n_audio = model.num_audio_tokens(1024)
        logits = out.logits[:, n_audio - 1 : -1]  # the positions that predict text tokens
        expected = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("name", ["tiny-sslalm", "tiny-hybrid"])
def test_save_and_load_restore_the_same_outputs(tmp_path, name):
    model = SSLALM(SSLALMConfig.preset(name))
    with torch.no_grad():  # make the LoRA adapters non-trivial so that saving them matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    model.eval()
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert saved and all(k.startswith(("encoder.", "projector.")) or "lora_" in k for k in saved)
    assert (tmp_path / "base_lm" / "config.json").is_file()  # random base LM: written once
    loaded = SSLALM.from_pretrained(tmp_path)
    fbank, ids, mask, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank, ids, mask).logits, model(fbank, ids, mask).logits)


@pytest.mark.parametrize("name", ["tiny-sslalm", "tiny-ltu"])
def test_fine_tuned_lm_weights_are_saved_and_restored(tmp_path, name):
    """Part ``lm`` trains the base LM's own weights; from then on they travel in the model's file."""
    model = SSLALM(SSLALMConfig.preset(name))
    model.set_trainable(["projector", "lora"])
    assert not model.config.train_lm
    assert not any(k.startswith("lm.") and "lora_" not in k for k in model.trainable_state_dict())
    model.set_trainable(["projector", "lm"])
    assert model.config.train_lm
    lm_params = dict(model.parameter_groups()["lm"])
    assert model.num_trainable_parameters() == sum(p.numel() for p in lm_params.values()) + sum(
        p.numel() for p in model.projector.parameters()
    )
    with torch.no_grad():  # what fine-tuning the LM would do: change its weights
        for p in lm_params.values():
            p.add_(torch.randn_like(p) * 0.05)
    model.eval().save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert set(lm_params) <= set(saved)
    loaded = SSLALM.from_pretrained(tmp_path)
    assert loaded.config.train_lm
    fbank, ids, mask, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank, ids, mask).logits, model(fbank, ids, mask).logits)
    loaded.set_trainable(["projector"])  # a later stage that freezes the LM still saves the tuned weights
    loaded.save_pretrained(tmp_path / "next")
    assert set(lm_params) <= set(load_file(tmp_path / "next" / "model.safetensors"))


def test_builds_from_local_dass_and_mamba_checkpoints(tmp_path):
    torch.manual_seed(3)
    dass = DASSModel(DASSConfig.tiny())
    torch.save({f"module.v.{k}": v for k, v in dass.state_dict().items()}, tmp_path / "dass.pth")
    lm = MambaLM(MambaConfig(d_model=64, n_layer=2, vocab_size=264))
    lm.save_pretrained(tmp_path / "mamba")
    config = SSLALMConfig.preset(
        "tiny-sslalm", encoder_checkpoint=str(tmp_path / "dass.pth"), lm_checkpoint=str(tmp_path / "mamba")
    )
    model = SSLALM(config).eval()
    for k, v in dass.state_dict().items():
        if not k.startswith("classifier.head"):
            torch.testing.assert_close(model.encoder.state_dict()[k], v)
    ids = torch.randint(2, 258, (1, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.lm(input_ids=ids).logits, lm(input_ids=ids).logits)
    model.save_pretrained(tmp_path / "finetune")
    saved = json.loads((tmp_path / "finetune" / "config.json").read_text())
    assert saved["lm_checkpoint"] == "base_lm"  # the folder holds its base LM: it loads from itself alone
    for f in (tmp_path / "mamba").iterdir():  # as hard links to the checkpoint's files: no extra disk
        assert os.path.samefile(f, tmp_path / "finetune" / "base_lm" / f.name)
    assert SSLALM.from_pretrained(tmp_path / "finetune").num_parameters() == model.num_parameters()


def test_conv_projector_emits_time_major_tokens():
    proj = ConvProjector(1, 1, kernel_size=1, stride=1, padding=0)
    with torch.no_grad():
        proj.conv.weight.fill_(1.0)
        proj.conv.bias.zero_()
        proj.linear.weight.fill_(1.0)
        proj.linear.bias.zero_()
    freq, time = 2, 3
    grid = torch.arange(freq * time, dtype=torch.float32).reshape(1, 1, freq, time)  # value = f * time + t
    tokens = proj(grid)[0, :, 0]
    expected = [f * time + t for t in range(time) for f in range(freq)]
    assert tokens.tolist() == expected
    assert ConvProjector(768, 16).num_tokens(4, 32) == 32
    assert PoolProjector(768, 16, time_pool=3).num_tokens(12, 101) == 34


TAGS = ["dog", "female speech", "piano", "language: Italian", "language: Polish"]


def test_tag_tokens_are_mixtures_of_the_tag_words_embeddings_one_per_group():
    from sslalm.models.tagger import TagTokens, tag_group_columns, tag_word

    assert tag_group_columns(TAGS) == [[0, 1, 2], [3, 4]]  # the labels, then one group per fact
    assert [tag_word(t) for t in TAGS[2:]] == ["piano", "Italian", "Polish"]
    torch.manual_seed(0)
    emb = torch.nn.Embedding(20, 6)
    word_ids = [[1], [2, 3], [4], [5, 6, 7], [8]]
    tagger = TagTokens(4, TAGS, word_ids, pool="mean+max")
    features = torch.randn(2, 4, 3, 5)  # (B, C, F, T)
    out = tagger(features, emb)  # (B, 2, d)
    assert out.shape == (2, 2, 6) and tagger.num_tokens == 2
    flat = features.flatten(2)
    logits = torch.cat([flat.mean(2), flat.max(2).values], 1) @ tagger.head.weight.T + tagger.head.bias
    words = torch.stack([emb.weight[ids].mean(0) for ids in word_ids])  # (K, d): a word's token mean
    for g, cols in enumerate([[0, 1, 2], [3, 4]]):
        probs = logits[:, cols].softmax(-1)
        torch.testing.assert_close(out[:, g], probs @ words[cols])
    one_hot = torch.zeros(5)  # a confident head hands over the word itself
    tagger.head.weight.data.zero_()
    tagger.head.bias.data.copy_(one_hot.index_fill(0, torch.tensor([2, 4]), 50.0))
    torch.testing.assert_close(tagger(features, emb)[0], words[[2, 4]], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="token ids"):
        TagTokens(4, TAGS, word_ids[:4])
    with pytest.raises(ValueError, match="pooling"):
        TagTokens(4, TAGS, word_ids, pool="max")
    sharp = TagTokens(4, TAGS, word_ids, temperature=0.25)  # logits / 0.25 before each softmax
    sharp.load_state_dict(tagger.state_dict())
    features = torch.randn(1, 4, 3, 5)
    expected = (tagger.head(torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)) / 0.25)[:, :3]
    torch.testing.assert_close(sharp.probabilities(features)[0], expected.softmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        TagTokens(4, TAGS, word_ids, temperature=0.0)
    facts_only = TagTokens(4, TAGS, word_ids, fact_temperature=0.1)  # the labels keep temperature 1
    facts_only.load_state_dict(tagger.state_dict())
    logits = tagger.head(torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1))
    labels, language = facts_only.probabilities(features)
    torch.testing.assert_close(labels, logits[:, :3].softmax(-1))
    torch.testing.assert_close(language, (logits[:, 3:] / 0.1).softmax(-1))
    with pytest.raises(ValueError, match="temperature"):
        TagTokens(4, TAGS, word_ids, fact_temperature=-1.0)


def test_tag_head_with_cepstral_statistics_loads_saves_and_reads_each_clip_alone(tmp_path):
    from safetensors.torch import save_file

    from sslalm.errors import UserError
    from sslalm.models.cepstral import CepstralStatistics

    torch.manual_seed(0)
    base = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    stats = CepstralStatistics(4)  # 8 cepstra and deltas: 8 means + 36 covariances
    width = 2 * base.encoder.hidden_size + stats.dim
    head = {
        "weight": torch.randn(len(TAGS), width),
        "bias": torch.randn(len(TAGS)),
        "cepstra.shift": torch.randn(stats.dim),
        "cepstra.scale": torch.rand(stats.dim) + 0.5,
    }
    save_file(head, tmp_path / "head.safetensors")
    config = SSLALMConfig.preset(
        "tiny-sslalm", tag_names=TAGS, tag_cepstra=4, tag_checkpoint=str(tmp_path / "head.safetensors")
    )
    model = SSLALM(config).eval()
    torch.testing.assert_close(model.tagger.cepstra.scale, head["cepstra.scale"])
    fbank = torch.randn(1, 300, 128)
    features = model.encoder.forward_features(fbank)
    pooled = torch.cat([features.mean((2, 3)), features.amax((2, 3))], 1)
    z = (stats.raw(fbank) - head["cepstra.shift"]) / head["cepstra.scale"]
    logits = torch.cat([pooled, z], 1) @ head["weight"].T + head["bias"]
    torch.testing.assert_close(model.tagger.probabilities(features, fbank)[1], logits[:, 3:].softmax(-1))
    with pytest.raises(ValueError, match="needs the fbank"):
        model.tagger.probabilities(features)
    with pytest.raises(UserError, match="tag_cepstra 0"):  # the config forgot the head's cepstra
        SSLALM(dataclasses.replace(config, tag_cepstra=0))
    with torch.no_grad():
        tags = model.encode_audio(fbank)[0, -2:]
        model.config.tag_scale = "audio"  # as large as the projector's tokens
        tokens = model.encode_audio(fbank)[0]  # (N + 2, d)
        model.config.tag_scale = "word"
    n_proj = tokens.shape[0] - 2
    torch.testing.assert_close(tokens[-2:].norm(dim=-1), tokens[:n_proj].norm(dim=-1).mean().expand(2))
    torch.testing.assert_close(
        tokens[-2:] / tokens[-2:].norm(dim=-1, keepdim=True), tags / tags.norm(dim=-1)[:, None]
    )
    model.save_pretrained(tmp_path / "m")
    loaded = SSLALM.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(loaded.tagger.cepstra.shift, head["cepstra.shift"])
    clip = torch.randn(16000) * 0.1
    prompts = ["What is it?", "Count"]
    batched = loaded.generate([clip, clip[:8000]], prompts, do_sample=False, max_new_tokens=4)
    assert batched[1] == loaded.ask(clip[:8000], "Count", do_sample=False, max_new_tokens=4)


def test_tag_token_model_keeps_its_head_frozen_and_saves_it(tmp_path):
    from safetensors.torch import save_file

    base = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    width = 2 * base.encoder.hidden_size
    head = {"weight": torch.randn(len(TAGS), width), "bias": torch.randn(len(TAGS))}
    save_file(head, tmp_path / "head.safetensors")
    head_file = str(tmp_path / "head.safetensors")
    config = SSLALMConfig.preset("tiny-sslalm", tag_names=TAGS, tag_checkpoint=head_file)
    model = SSLALM(config)
    torch.testing.assert_close(model.tagger.head.weight, head["weight"])
    with pytest.raises(ValueError, match="different stage-0 runs"):  # a head for other tags
        SSLALM(dataclasses.replace(config, tag_names=TAGS[:4]))
    assert model.num_audio_tokens(1024) == base.num_audio_tokens(1024) + 2
    fbank, ids, mask, labels = _batch(model)
    model.set_trainable(["projector", "lora", "lm"])
    assert not any(p.requires_grad for p in model.tagger.parameters())
    model(fbank, ids, mask, labels=labels).loss.backward()
    emb = model.lm.get_input_embeddings().weight
    tag_ids = model.tagger.word_ids.unique()
    assert emb.grad[tag_ids].abs().sum() > 0  # the loss reaches the tag words' embeddings through the tokens
    model.eval().save_pretrained(tmp_path / "m")
    saved = load_file(tmp_path / "m" / "model.safetensors")
    torch.testing.assert_close(saved["tagger.head.weight"], head["weight"])
    assert json.loads((tmp_path / "m" / "config.json").read_text())["tag_checkpoint"] is None
    loaded = SSLALM.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank, ids, mask).logits, model(fbank, ids, mask).logits)
    clip = torch.randn(16000) * 0.1
    n_text = len(loaded.processor.prompt_ids("What is it?"))
    assert len(loaded.prompt_embeddings([clip], ["What is it?"])[0]) == loaded.num_audio_tokens(1024) + n_text
    prompts = ["What is it?", "Count"]
    batched = loaded.generate([clip, clip[:8000]], prompts, do_sample=False, max_new_tokens=4)
    assert batched[1] == loaded.ask(clip[:8000], "Count", do_sample=False, max_new_tokens=4)


@pytest.mark.parametrize("name", ["tiny-sslalm", "tiny-hybrid"])
def test_batched_generation_equals_one_by_one(name):
    model = SSLALM(SSLALMConfig.preset(name)).eval()
    g = torch.Generator().manual_seed(0)
    audios = [torch.randn(16000 * s, generator=g) * 0.1 for s in (2, 13, 5)]  # ragged: 32, 42, 32 tokens
    prompts = ["What is it?", "Describe the sound in detail please.", "Count"]
    batched = model.generate(audios, prompts, do_sample=False, max_new_tokens=6)
    single = [model.generate([a], [p], do_sample=False, max_new_tokens=6)[0] for a, p in zip(audios, prompts)]
    assert batched == single
    sampled = model.generate(audios, prompts, max_new_tokens=6, seed=1, temperature=1.0)
    assert sampled == [
        model.generate([a], [p], max_new_tokens=6, seed=1, temperature=1.0)[0]
        for a, p in zip(audios, prompts)
    ]
    assert model.ask(audios[0], prompts[0], do_sample=False, max_new_tokens=6) == batched[0]


def test_whole_clips_at_inference_give_32_tokens_per_10_24_s():
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    for seconds, frames in ((3, 1024), (60, 5998)):  # short clips are padded to 10.24 s, long ones kept whole
        fbank = model.processor.inference_features(torch.randn(16000 * seconds) * 0.1)
        assert fbank.shape == (frames, 128)
    assert model.num_audio_tokens(5998) == 2 * 94  # 60 s: 188 tokens, all of the clip
    with torch.no_grad():
        assert model.encode_audio(torch.randn(1, 5998, 128)).shape[1] == 188


@pytest.mark.slow
def test_a_ten_minute_file_is_encoded_whole():
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    with torch.no_grad():
        tokens = model.encode_audio(torch.randn(1, 60000, 128))
    assert tokens.shape[1] == model.num_audio_tokens(60000) == 2 * 938


def test_ast_encoder_windows_long_inputs():
    model = SSLALM(SSLALMConfig.preset("tiny-ltu")).eval()
    with torch.no_grad():
        short = model.encoder.forward_features(torch.randn(1, 1024, 128))
        long = model.encoder.forward_features(torch.randn(1, 2500, 128))
    assert short.shape == (1, 64, 12, 101)
    assert long.shape == (1, 64, 12, 303)
    assert model.num_audio_tokens(2500) == 101


@pytest.mark.parametrize("name", ["tiny-sslalm", "tiny-ltu"])
def test_gradient_checkpointing_gives_the_same_gradients(name):
    config = SSLALMConfig.preset(name, lora_dropout=0.0)
    config.encoder_config["drop_path_rate"] = 0.0  # stochastic depth would differ between the two passes
    model = SSLALM(config)
    model.train()
    fbank, ids, mask, labels = _batch(model)

    def grads():
        model.zero_grad()
        model(fbank, ids, mask, labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.gradient_checkpointing_enable()
    checkpointed = grads()
    model.gradient_checkpointing_disable()
    assert plain.keys() == checkpointed.keys()
    for n in plain:
        torch.testing.assert_close(checkpointed[n], plain[n], rtol=1e-4, atol=1e-6)


def test_trainer_facing_helpers():
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    embed = model.lm.get_input_embeddings().weight.numel()
    assert model.num_parameters(exclude_embeddings=True) == model.num_parameters() - embed
    assert model.num_parameters(only_trainable=True) == model.num_trainable_parameters()
    assert json.loads(model.config.to_json_string())["name"] == "tiny-sslalm"


def test_ask_command_prints_the_models_answer(tmp_path, capsys):
    import soundfile as sf

    from sslalm.cli import main

    model = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    model.save_pretrained(tmp_path / "model")
    t = torch.arange(16000 * 2) / 16000
    sf.write(tmp_path / "tone.wav", (0.3 * torch.sin(2 * torch.pi * 440 * t)).numpy(), 16000)
    args = ["ask", "--model", str(tmp_path / "model"), "--audio", str(tmp_path / "tone.wav")]
    assert main([*args, "--question", "What is it?", "--temperature", "0", "--max-new-tokens", "5"]) == 0
    expected = model.ask(str(tmp_path / "tone.wav"), "What is it?", do_sample=False, max_new_tokens=5)
    assert capsys.readouterr().out.strip() == expected
    sf.write(tmp_path / "empty.wav", torch.zeros(0).numpy(), 16000)
    bad = ["ask", "--model", str(tmp_path / "model"), "--audio", str(tmp_path / "empty.wav")]
    assert main([*bad, "--question", "What is it?"]) == 2  # a user error: one line, exit status 2


def test_folders_saved_before_the_processor_still_load(tmp_path, caplog):
    """Older config.json files carry ``cutoff_len`` and no ``byte_tokenizer``: they load, same outputs."""
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm")).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["byte_tokenizer"]
    (tmp_path / "config.json").write_text(json.dumps({**config, "cutoff_len": 108}))
    with caplog.at_level("WARNING"):
        loaded = SSLALM.from_pretrained(tmp_path)
    assert "cutoff_len" in caplog.text and not loaded.config.byte_tokenizer
    fbank, ids, mask, _ = _batch(model)
    with torch.no_grad():
        torch.testing.assert_close(loaded(fbank, ids, mask).logits, model(fbank, ids, mask).logits)
