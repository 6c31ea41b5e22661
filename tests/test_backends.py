"""Pluggable encoders and LM backends: a new one is a class plus a registry entry; the slow, obviously
correct decode of the base backend agrees with the cached decode of Mamba's and transformers'."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file

from sslalm.generate import GenerationConfig
from sslalm.models import backends, encoders
from sslalm.models.backends import LanguageModelBackend
from sslalm.models.encoders import AudioEncoder
from sslalm.models.lalm import SSLALM, SSLALMConfig

# ---------------------------------------------------------------------------------- the toy backends


class MelConvEncoder(AudioEncoder):
    """Toy encoder: one strided conv over the fbank image -> (B, C, 128 / 16, T / 16)."""

    name = "toy-conv"

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(1, channels, 16, stride=16)

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def hidden_size(self) -> int:
        return self.conv.out_channels

    def forward_features(self, fbank):
        return self.conv(fbank.transpose(1, 2)[:, None])  # (B, C, 8, T // 16)

    def feature_map_size(self, frames: int) -> tuple[int, int]:
        return 128 // 16, frames // 16


class GRULM(nn.Module):
    """Toy causal LM: embedding -> GRU -> proj -> tied head (LoRA targets ``proj``)."""

    def __init__(self, vocab_size: int, d: int = 16):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, d)
        self.gru = nn.GRU(d, d, batch_first=True)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, vocab_size, bias=False)
        self.head.weight = self.embed.weight

    def get_input_embeddings(self):
        return self.embed

    def forward(self, input_ids=None, inputs_embeds=None, attention_mask=None, labels=None, **kwargs):
        h, _ = self.gru(self.embed(input_ids) if inputs_embeds is None else inputs_embeds)
        logits = self.head(torch.tanh(self.proj(h)))
        loss = None
        if labels is not None:
            flat = logits[:, :-1].reshape(-1, logits.shape[-1])
            loss = F.cross_entropy(flat, labels[:, 1:].reshape(-1), ignore_index=-100)
        return type("Out", (), {"loss": loss, "logits": logits})()


class GRUBackend(LanguageModelBackend):
    name = "toy-gru"
    module_class = GRULM
    lora_target_modules = ("proj",)


@pytest.fixture
def toy_registered():
    encoders.register_encoder(MelConvEncoder)
    backends.register_lm_backend(GRUBackend)
    yield
    del encoders.ENCODERS[MelConvEncoder.name], backends.LM_BACKENDS[GRUBackend.name]


def _toy_config() -> SSLALMConfig:
    return SSLALMConfig(
        encoder_type="toy-conv",
        encoder_config={"channels": 8},
        lm_type="toy-gru",
        lm_config={"vocab_size": "auto", "d": 16},
        projector_kernel=1,
        projector_stride=1,
        projector_padding=0,
        byte_tokenizer=True,
        train_frames=128,
        min_inference_frames=128,
    )


def test_a_registered_toy_encoder_and_lm_train_save_load_and_answer(toy_registered, tmp_path):
    torch.manual_seed(0)
    model = SSLALM(_toy_config())
    assert isinstance(model.encoder, MelConvEncoder) and isinstance(model.lm_backend, GRUBackend)
    assert model.config.lora_target_modules == ["proj"]  # the backend's default
    assert model.num_audio_tokens(128) == 8 * 8
    with torch.no_grad():  # a non-trivial adapter, so that saving it matters
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    # one training step through the processor: the trainable parts move, the frozen LM does not
    proc = model.processor
    g = torch.Generator().manual_seed(1)
    waves = [torch.randn(16000, generator=g) * 0.1 for _ in range(2)]
    batch = proc([proc.training_example(w, "What is it?", "", a) for w, a in zip(waves, ["A dog.", "Rain"])])
    assert batch["fbank"].shape == (2, 128, 128)
    frozen = {n: p.clone() for n, p in model.lm.named_parameters() if "lora_" not in n}
    trained = {n: p.clone() for n, p in model.named_parameters() if p.requires_grad}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model.train()
    loss = model(**batch).loss
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    moved = {n.split(".")[0] for n, p in model.named_parameters() if n in trained and not p.equal(trained[n])}
    assert moved == {"encoder", "projector", "lm"}
    assert all(torch.equal(p, frozen[n]) for n, p in model.lm.named_parameters() if "lora_" not in n)
    # save and reload: same outputs, same answers
    model.eval().save_pretrained(tmp_path / "toy")
    assert (tmp_path / "toy" / "base_lm" / "model.safetensors").is_file()  # random base LM, by the backend
    saved = load_file(tmp_path / "toy" / "model.safetensors")
    assert saved and all(k.startswith(("encoder.", "projector.")) or "lora_" in k for k in saved)
    loaded = SSLALM.from_pretrained(tmp_path / "toy")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
    questions = ["What is it?", "Why?"]
    answers = model.generate(waves, questions, do_sample=False, max_new_tokens=5)
    assert loaded.generate(waves, questions, do_sample=False, max_new_tokens=5) == answers
    assert answers == [model.ask(w, q, do_sample=False, max_new_tokens=5) for w, q in zip(waves, questions)]


def test_unknown_types_name_the_registered_ones():
    with pytest.raises(ValueError, match="encoder_type must be one of .ast., .dass., got .nope."):
        SSLALM(SSLALMConfig.preset("tiny-sslalm", encoder_type="nope"))
    with pytest.raises(ValueError, match="lm_type must be one of 'hf', 'mamba', got 'nope'"):
        SSLALM(SSLALMConfig.preset("tiny-sslalm", lm_type="nope"))


# ------------------------------------------------------------------ slow twins of the cached decoders


@pytest.mark.parametrize("preset", ["tiny-sslalm", "tiny-hybrid"])
def test_cached_decoding_equals_the_recomputing_fallback(preset):
    """Mamba's state and transformers' KV cache decode exactly what re-running the whole sequence does."""
    torch.manual_seed(0)
    model = SSLALM(SSLALMConfig.preset(preset, train_frames=128, min_inference_frames=128)).eval()
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    g = torch.Generator().manual_seed(2)
    prompts = model.prompt_embeddings(
        [torch.randn(8000, generator=g), torch.randn(30000, generator=g)], ["What is it?", "Describe it."]
    )
    assert prompts[0].shape[0] != prompts[1].shape[0]  # ragged: padding matters
    fast, slow = model.lm_backend, LanguageModelBackend()
    with torch.inference_mode():
        logits, cache = fast.prefill(model.lm, inputs_embeds=prompts[1][None])
        ref_logits, ref_cache = slow.prefill(model.lm, inputs_embeds=prompts[1][None])
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
        token = logits.argmax(-1)
        for _ in range(3):
            logits, cache = fast.step(model.lm, token, cache)
            ref_logits, ref_cache = slow.step(model.lm, token, ref_cache)
            torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
            token = logits.argmax(-1)
        for settings in ({"do_sample": False}, {"seed": 3, "temperature": 1.0}):
            gen = GenerationConfig(max_new_tokens=6, eos_token_id=None, **settings)
            assert fast.generate(model.lm, prompts, gen) == slow.generate(model.lm, prompts, gen)


def test_encoder_checkpoints_round_trip(tmp_path):
    for preset in ("tiny-sslalm", "tiny-ltu"):
        torch.manual_seed(0)
        encoder = SSLALM(SSLALMConfig.preset(preset)).encoder.eval()
        path = encoder.save_checkpoint(tmp_path / preset)
        other = type(encoder).from_config(SSLALMConfig.preset(preset).encoder_config).eval()
        other.load_checkpoint(path)
        fbank = torch.randn(1, 1024, 128)
        with torch.no_grad():
            torch.testing.assert_close(other.forward_features(fbank), encoder.forward_features(fbank))
        assert other.feature_map_size(2500) == encoder.feature_map_size(2500)


def test_nothing_outside_the_registries_switches_on_the_model_types():
    """``encoder_type`` / ``lm_type`` are looked up once (the registries); no other code branches on them."""
    src = Path(__file__).resolve().parents[1] / "src" / "sslalm"
    switch = re.compile(r"\b(encoder_type|lm_type)\s*(==|!=|in\s*[(\[{])|isinstance\([^)]*(ASTEncoder|DASS)")
    offenders = [
        f"{path.relative_to(src)}:{i}: {line.strip()}"
        for path in src.rglob("*.py")
        if path.parent.name not in ("encoders", "backends")
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if switch.search(line)
    ]
    assert not offenders, offenders
