"""``sslalm train``: stage configs, Trainer glue (loss scaling, checkpoints, resume), DDP, overfitting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn as nn
import torch.nn.functional as F
import yaml

from sslalm.audio import FbankExtractor
from sslalm.prompt import build_prompt
from sslalm.tokenizer import build_byte_tokenizer
from sslalm.train import (
    TRAINABLE_FILE,
    StageConfig,
    gradient_accumulation_steps,
    load_config,
    train,
)

REPO = Path(__file__).resolve().parents[1]
SR = 16000
ANSWERS = ["A dog barks.", "A bell rings.", "Rain falls.", "A man speaks."]
QUESTION = "What is the sound?"


# ---- a test double with SSLALM's training interface -----------------------------------------------------


class TinyLALMDouble(nn.Module):
    """Test double of ``SSLALM``'s training interface: audio tokens prepended to a frozen GRU "LM".

    Parts: ``encoder`` (frames → features), ``projector`` (→ LM width), ``lora`` (a low-rank update of the
    LM's hidden state); the embedding and GRU are frozen, and the output head is tied to the embedding (so a
    checkpoint must not try to store shared tensors). No dropout, so runs are deterministic.
    """

    def __init__(self, tokenizer, d: int = 32, audio_tokens: int = 4, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.tokenizer = tokenizer
        self.feature_extractor = FbankExtractor(target_length=1024)
        self.audio_tokens = audio_tokens
        vocab = len(tokenizer)
        self.encoder = nn.Linear(128, d)
        self.projector = nn.Linear(d, d)
        self.embed = nn.Embedding(vocab, d)
        self.lm = nn.GRU(d, d, batch_first=True)
        self.lora_a = nn.Linear(d, 4, bias=False)
        self.lora_b = nn.Linear(4, d, bias=False)
        self.head = nn.Linear(d, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied
        for p in self.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def num_audio_tokens(self, num_frames: int) -> int:
        return self.audio_tokens

    def set_trainable(self, parts) -> None:
        names = {"encoder": ["encoder"], "projector": ["projector"], "lora": ["lora_a", "lora_b"]}
        for p in self.parameters():
            p.requires_grad_(False)
        for part in parts:
            for name in names[part]:
                getattr(self, name).requires_grad_(True)

    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def _audio(self, fbank):  # (B, T, 128) -> (B, A, d)
        b, t, _ = fbank.shape
        chunks = fbank[:, : t // self.audio_tokens * self.audio_tokens].reshape(b, self.audio_tokens, -1, 128)
        return self.projector(torch.tanh(self.encoder(chunks.mean(2))))

    def _logits(self, fbank, input_ids):
        x = torch.cat([self._audio(fbank), self.embed(input_ids)], dim=1)  # (B, A + L, d)
        h, _ = self.lm(x)
        h = h + self.lora_b(self.lora_a(h))
        return self.head(h)  # (B, A + L, V)

    def forward(self, fbank, input_ids, attention_mask=None, labels=None):
        logits = self._logits(fbank, input_ids)
        loss = None
        if labels is not None:
            full = torch.cat([labels.new_full((labels.shape[0], self.audio_tokens), -100), labels], dim=1)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), full[:, 1:].flatten(), ignore_index=-100)
        return SimpleNamespace(loss=loss, logits=logits)

    def save_pretrained(self, path) -> None:
        from safetensors.torch import save_file

        os.makedirs(path, exist_ok=True)
        state = {n: p.detach().contiguous() for n, p in self.named_parameters() if p.requires_grad}
        save_file(state, os.path.join(path, "model.safetensors"))
        Path(path, "config.json").write_text(json.dumps({"double": True}))

    @torch.no_grad()
    def ask(self, audio, question: str, max_new_tokens: int = 20) -> str:
        fbank = self.feature_extractor(audio)[None]
        ids = self.tokenizer(build_prompt(question))["input_ids"]
        out = []
        for _ in range(max_new_tokens):
            nxt = int(self._logits(fbank, torch.tensor([ids + out]))[0, -1].argmax())
            if nxt == self.tokenizer.eos_token_id:
                break
            out.append(nxt)
        return self.tokenizer.decode(out)


def make_double(seed: int = 0) -> TinyLALMDouble:
    texts = [build_prompt(QUESTION) + a for a in ANSWERS]
    return TinyLALMDouble(build_byte_tokenizer(texts * 4, vocab_size=300), seed=seed)


def write_clips(folder: Path, n: int = 4, seconds: float = 1.0) -> Path:
    """``n`` one-second tones with distinct pitches and an OpenAQA JSON file over them; returns the file."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    records = []
    for i in range(n):
        sf.write(
            folder / f"clip{i}.wav", (0.3 * np.sin(2 * np.pi * 300 * (i + 1) * t)).astype(np.float32), SR
        )
        records.append(
            {
                "instruction": QUESTION,
                "input": "",
                "audio_id": f"clip{i}.wav",
                "dataset": "toy",
                "task": "cla",
                "output": ANSWERS[i % len(ANSWERS)],
            }
        )
    path = folder / "train.json"
    path.write_text(json.dumps(records))
    return path


def tiny_stage(tmp_path: Path, data: Path, **kw) -> StageConfig:
    values = dict(
        output_dir=str(tmp_path / "out"),
        train_files=[str(data)],
        trainable=["projector", "encoder", "lora"],
        learning_rate=1e-2,
        warmup_steps=0,
        num_train_epochs=2,
        per_device_train_batch_size=2,
        effective_batch_size=4,
        save_steps=1000,
        logging_steps=1,
        dataloader_num_workers=0,
        report_to=["none"],
        bf16=False,
        seed=0,
    )
    values.update(kw)
    return load_config(None, values)


def trainable_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_close_weights(a: dict, b: dict, rtol: float = 1e-5, atol: float = 1e-6) -> float:
    assert a.keys() == b.keys()
    worst = 0.0
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=lambda m, k=k: f"{k}: {m}")
        worst = max(worst, float((a[k] - b[k]).abs().max()))
    return worst


# ---- configuration ----------------------------------------------------------------------------------------


def test_curriculum_configs():
    stages = [load_config(REPO / "configs" / f"stage{k}.yaml") for k in (1, 2, 3, 4)]
    assert [s.trainable for s in stages] == [["projector"]] + [["projector", "encoder", "lora"]] * 3
    assert [s.learning_rate for s in stages] == [1e-3, 1e-4, 1e-4, 1e-4]
    assert [s.num_train_epochs for s in stages] == [2, 2, 1, 1]
    assert all(
        s.effective_batch_size == 256 and s.warmup_steps == 100 and s.cutoff_len == 108 for s in stages
    )
    assert all(s.bf16 == "auto" and s.train_on_inputs for s in stages)
    assert stages[0].init_from is None
    for prev, nxt in zip(stages[:-1], stages[1:], strict=True):
        assert nxt.init_from == prev.output_dir  # each stage starts from the previous stage's output
    for s in stages:
        assert s.effective_batch_size % s.per_device_train_batch_size == 0
        assert gradient_accumulation_steps(s.effective_batch_size, s.per_device_train_batch_size, 4) >= 1


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(
        REPO / "configs" / "stage2.yaml",
        {
            "learning_rate": "1e-3",
            "trainable": "projector,lora",
            "max_steps": "7",
            "tasks": "[cla, caption]",
            "crop_seconds": "null",
            "bf16": "false",
            "training_args": "{gradient_checkpointing: true}",
        },
    )
    assert cfg.learning_rate == 1e-3 and cfg.max_steps == 7 and cfg.bf16 is False
    assert cfg.trainable == ["projector", "lora"] and cfg.tasks == ["cla", "caption"]
    assert cfg.crop_seconds is None and cfg.training_args == {"gradient_checkpointing": True}
    with pytest.raises(ValueError, match="unknown stage config key"):
        load_config(None, {"output_dir": "x", "learning_rat": 1})
    with pytest.raises(ValueError, match="trainable"):
        load_config(None, {"output_dir": "x", "trainable": "projector,decoder"})
    with pytest.raises(ValueError, match="output_dir"):
        load_config(None, {})
    with pytest.raises(ValueError, match="learning_rate must be float"):
        load_config(None, {"output_dir": "x", "learning_rate": "fast"})
    assert gradient_accumulation_steps(256, 8, 1) == 32 and gradient_accumulation_steps(256, 4, 4) == 16
    with pytest.raises(ValueError, match="not a multiple"):
        gradient_accumulation_steps(256, 6, 1)


def test_cli_maps_flags_to_config(tmp_path, monkeypatch):
    import argparse

    from sslalm import train as train_mod

    seen = {}
    monkeypatch.setattr(train_mod, "train", lambda cfg: seen.setdefault("cfg", cfg) and {})
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    args = parser.parse_args(
        [
            "--config",
            str(REPO / "configs" / "stage1.yaml"),
            "--learning-rate",
            "3e-4",
            "--output_dir",
            str(tmp_path / "o"),
            "--resume",
        ]
    )
    assert train_mod.run_cli(args) == 0
    cfg = seen["cfg"]
    assert cfg.learning_rate == 3e-4 and cfg.output_dir == str(tmp_path / "o") and cfg.resume is True
    assert cfg.trainable == ["projector"]


# ---- training with the test double ------------------------------------------------------------------------


def test_train_saves_trainable_weights_checkpoints_and_logs(tmp_path):
    data = write_clips(tmp_path / "data", n=8)
    model = make_double()
    frozen = model.lm.weight_ih_l0.detach().clone()
    cfg = tiny_stage(
        tmp_path,
        data,
        trainable=["projector", "lora"],
        save_steps=1,
        save_total_limit=2,
        report_to=["tensorboard"],
    )
    metrics = train(cfg, model=model)
    out = Path(cfg.output_dir)
    assert metrics["num_examples"] == 8 and metrics["output_dir"] == cfg.output_dir
    assert torch.equal(model.lm.weight_ih_l0, frozen)  # frozen parts do not move
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # 2 kept
    ckpt = out / "checkpoint-4"
    for name in (TRAINABLE_FILE, "model.safetensors", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    from safetensors.torch import load_file

    saved = load_file(out / "model.safetensors")  # the stage output: trainable weights only
    assert set(saved) == {"projector.weight", "projector.bias", "lora_a.weight", "lora_b.weight"}
    assert torch.equal(saved["projector.weight"], model.projector.weight)
    assert yaml.safe_load((out / "stage_config.yaml").read_text())["trainable"] == ["projector", "lora"]
    assert list(out.glob("runs/*/events.out.tfevents.*"))  # TensorBoard log
    losses = [
        h["loss"] for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h
    ]
    assert len(losses) == 4 and losses[-1] < losses[0]
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, model=make_double())


def test_accumulation_equals_a_large_batch(tmp_path):
    """Token-weighted loss: 2 micro-batches of 2 give the same update as 1 batch of 4 (unequal lengths)."""
    data = write_clips(tmp_path / "data")
    runs = {}
    for name, micro in (("accumulate", 1), ("batch", 4)):
        model = make_double()
        train(tiny_stage(tmp_path / name, data, per_device_train_batch_size=micro, max_steps=2), model=model)
        runs[name] = trainable_weights(model)
    assert_close_weights(runs["accumulate"], runs["batch"])


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    from transformers import TrainerCallback

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # after checkpoint-2 was written, before checkpoint-4
                raise _Interrupt

    data = write_clips(tmp_path / "data", n=8)
    kw = dict(num_train_epochs=3, save_steps=2, per_device_train_batch_size=2, effective_batch_size=4)
    straight = make_double()
    train(tiny_stage(tmp_path / "straight", data, **kw), model=straight)

    cfg = tiny_stage(tmp_path / "resumed", data, **kw)
    with pytest.raises(_Interrupt):
        train(cfg, model=make_double(), callbacks=[StopAfter()])
    assert sorted(p.name for p in Path(cfg.output_dir).glob("checkpoint-*")) == ["checkpoint-2"]
    resumed = make_double()
    with torch.no_grad():  # the trained weights must come from the checkpoint, not from the initialisation
        for module in (resumed.encoder, resumed.projector, resumed.lora_a, resumed.lora_b):
            for p in module.parameters():
                p.add_(1.0)
    cfg.resume = True
    train(cfg, model=resumed)
    worst = assert_close_weights(trainable_weights(resumed), trainable_weights(straight))
    print(f"resume vs uninterrupted: max |dw| = {worst:.2e}")
    state = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text())
    assert state["global_step"] == 6


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun: 2 processes on gloo, micro-batch 2 == 1 process, micro-batch 4 (same data per step)."""
    data = write_clips(tmp_path / "data", n=8)
    launcher = tmp_path / "launch.py"
    launcher.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "torch.set_num_threads(1)\n"
        "from test_train import make_double, trainable_weights\n"
        "from sslalm.train import load_config, train\n"
        "cfg = load_config(sys.argv[1])\n"
        "model = make_double()\n"
        "train(cfg, model=model)\n"
        "import torch.distributed as dist\n"
        "ddp = dist.is_initialized()\n"
        "if not ddp or dist.get_rank() == 0:\n"
        "    info = {'world': dist.get_world_size() if ddp else 1,\n"
        "            'backend': dist.get_backend() if ddp else None}\n"
        "    torch.save({'weights': trainable_weights(model), **info}, sys.argv[2])\n"
    )
    results = {}
    for name, nproc, micro in (("single", 1, 4), ("ddp", 2, 2)):
        cfg = tiny_stage(tmp_path / name, data, per_device_train_batch_size=micro, num_train_epochs=2)
        cfg_path = tmp_path / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump({k: v for k, v in vars(cfg).items()}))
        out = tmp_path / f"{name}.pt"
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(29500 + os.getpid() % 1000 + nproc),
            str(launcher),
            str(cfg_path),
            str(out),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        saved = torch.load(out, weights_only=True)
        assert saved["world"] == nproc and saved["backend"] in (None, "gloo")
        results[name] = saved["weights"]
        state = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text())
        results[name + "_loss"] = [h["loss"] for h in state["log_history"] if "loss" in h]
    worst = assert_close_weights(results["ddp"], results["single"])
    print(f"DDP vs single: max |dw| = {worst:.2e}; losses {results['single_loss']} vs {results['ddp_loss']}")
    np.testing.assert_allclose(results["ddp_loss"], results["single_loss"], rtol=1e-5)
