"""LoRA through peft on every in_proj: counts, every code path adapted, training, adapter save/load."""

from __future__ import annotations

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import Linear as LoraLinear

from sslalm.generate import generate
from sslalm.models.mamba import MambaConfig, MambaLM, lora_config, lora_parameter_count

VOCAB = 500


def tiny() -> MambaLM:
    torch.manual_seed(11)
    return MambaLM(MambaConfig(d_model=32, n_layer=3, vocab_size=VOCAB))


def randomise_lora(model) -> None:
    """peft starts lora_B at zero (a no-op adapter); give it weights so the tests can see it."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)


def test_counts_on_every_in_proj():
    model = get_peft_model(tiny(), lora_config())
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert len(wrapped) == 3 and all(n.endswith("mixer.in_proj") for n in wrapped)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == 3 * 8 * (32 + 2 * 64) == lora_parameter_count(MambaConfig(d_model=32, n_layer=3))
    cfg = model.peft_config["default"]
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 16, 0.05)


def test_count_for_the_2_8b_shape_on_meta():
    with torch.device("meta"):
        model = get_peft_model(MambaLM(MambaConfig.mamba_2_8b()), lora_config())
    wrapped = [n for n, m in model.named_modules() if isinstance(m, LoraLinear)]
    assert len(wrapped) == 64
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 6_553_600


def test_peft_refuses_out_proj_as_for_transformers_mamba():
    with pytest.raises(ValueError, match="out_proj"):
        get_peft_model(tiny(), LoraConfig(r=8, target_modules=["out_proj"]))


def test_lora_applies_identically_in_training_prefill_and_step():
    base = tiny().eval()
    model = get_peft_model(tiny(), lora_config()).eval()
    randomise_lora(model)
    ids = torch.randint(2, VOCAB, (2, 10))
    with torch.no_grad():
        plain = base(ids).logits
        full = model(input_ids=ids).logits
        logits, state = model.prefill(ids[:, :6])
        steps = [logits] + [model.step(ids[:, t], state=state) for t in range(6, 10)]
    assert (full - plain).abs().max() > 1e-2  # the adapter changes the output ...
    assert torch.allclose(torch.stack(steps, 1), full[:, 5:], atol=1e-5)  # ... the same way on every path
    with model.disable_adapter(), torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, plain, atol=1e-6)


def test_adapted_model_trains_and_round_trips(tmp_path):
    base = tiny()
    with torch.no_grad():  # std-0.02 tied embeddings cap the logits near 0.6; give the head some range
        base.backbone.embeddings.weight.normal_(std=0.5)
    base_copy = MambaLM(base.config)
    base_copy.load_state_dict(base.state_dict())
    model = get_peft_model(base, lora_config())
    ids = torch.randint(2, VOCAB, (4, 16))
    labels = ids.clone()
    labels[:, :3] = -100
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    losses = []
    for _ in range(30):
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    base_param = model.base_model.model.backbone.layers[0].mixer.in_proj.base_layer.weight
    assert base_param.grad is None and not base_param.requires_grad  # the base stays frozen

    model.eval()
    model.save_pretrained(tmp_path / "adapter")
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json"} <= saved
    restored = PeftModel.from_pretrained(base_copy, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(restored(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-6)
    a = generate(model, ids[:, :5], max_new_tokens=6, do_sample=False)
    b = restored.generate(ids[:, :5], max_new_tokens=6, do_sample=False)  # peft forwards to MambaLM.generate
    assert torch.equal(a.sequences, b.sequences)
