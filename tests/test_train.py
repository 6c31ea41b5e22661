"""``sslalm train``: stage configs, Trainer glue (loss scaling, checkpoints, resume), DDP, overfitting."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
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
from sslalm.errors import UserError
from sslalm.models.processor import SSLALMProcessor
from sslalm.prompt import build_prompt
from sslalm.tokenizer import build_byte_tokenizer
from sslalm.train import (
    StageConfig,
    _make_trainer_class,
    build_model,
    gradient_accumulation_steps,
    last_checkpoint,
    load_config,
    train,
    training_arguments,
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
        self.processor = SSLALMProcessor(tokenizer, feature_extractor=self.feature_extractor)
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


def assert_close_weights(a: dict, b: dict, rel: float = 1e-5) -> tuple[float, float]:
    """Every tensor equal up to ``rel`` of its own size (relative L2 norm of the difference).

    Returns (largest absolute element difference, largest relative difference). An element-wise relative
    tolerance is not used: Adam turns float-rounding differences in near-zero gradients into steps of up to
    about lr, which are large next to a near-zero weight yet negligible next to the tensor.
    """
    assert a.keys() == b.keys()
    worst_abs = worst_rel = 0.0
    for k in a:
        diff = (a[k].double() - b[k].double()).norm() / b[k].double().norm().clamp(min=1e-12)
        assert diff <= rel, f"{k}: relative difference {float(diff):.2e} > {rel:.0e}"
        worst_abs = max(worst_abs, float((a[k] - b[k]).abs().max()))
        worst_rel = max(worst_rel, float(diff))
    return worst_abs, worst_rel


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


def test_tiny_curriculum_configs_follow_the_full_one():
    from sslalm.data.corpus import CLOSED_TASKS

    full = [load_config(REPO / "configs" / f"stage{k}.yaml") for k in (1, 2, 3, 4)]
    tiny = [load_config(REPO / "configs" / "tiny" / f"stage{k}.yaml") for k in (1, 2, 3, 4)]
    assert tiny[0].model == "tiny-sslalm" and tiny[0].init_from is None
    for prev, nxt in zip(tiny[:-1], tiny[1:], strict=True):
        assert nxt.init_from == prev.output_dir
    for f, t in zip(full, tiny, strict=True):
        assert (t.trainable, t.learning_rate, t.num_train_epochs) == (
            f.trainable,
            f.learning_rate,
            f.num_train_epochs,
        )
    cla = ["cla_label", "caption"]  # classification + acoustic description, as combine_cla.json
    assert [t.tasks for t in tiny] == [cla, cla, list(CLOSED_TASKS), None]


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
    with pytest.raises(ValueError, match="learning_rate must be a number"):
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
            "--strict",
        ]
    )
    assert train_mod.run_cli(args) == 0
    cfg = seen["cfg"]
    assert cfg.learning_rate == 3e-4 and cfg.output_dir == str(tmp_path / "o") and cfg.resume is True
    assert cfg.trainable == ["projector"] and cfg.strict_data is True


def test_the_audio_cache_setting_reaches_the_dataset(tmp_path):
    from sslalm.models.lalm import SSLALM, SSLALMConfig
    from sslalm.train import build_dataset

    data = write_clips(tmp_path / "data", n=2)
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    assert build_dataset(tiny_stage(tmp_path, data), model).audio.max_bytes == 1 << 30  # 1024 MB by default
    ds = build_dataset(tiny_stage(tmp_path, data, audio_cache_mb=0.5), model)
    assert ds.audio.max_bytes == 1 << 19
    ds[0], ds[1], ds[0]
    assert (ds.audio.hits, ds.audio.misses) == (1, 2)
    assert build_dataset(tiny_stage(tmp_path, data, audio_cache_mb=0), model).audio.max_bytes == 0
    with pytest.raises(ValueError, match="audio_cache_mb"):
        tiny_stage(tmp_path, data, audio_cache_mb=-1)


# ---- training with the test double ------------------------------------------------------------------------


TINY = {"model": "tiny-sslalm"}
# no stochastic layers: runs that see the same data in different groupings can be compared exactly
DETERMINISTIC = {"lora_dropout": 0.0, "encoder_config": {"drop_path_rate": 0.0}}


def test_train_saves_trainable_weights_checkpoints_and_logs(tmp_path):
    from safetensors.torch import load_file

    from sslalm.models.lalm import SSLALM

    data = write_clips(tmp_path / "data", n=8)
    cfg = tiny_stage(
        tmp_path,
        data,
        **TINY,
        trainable=["projector", "lora"],
        save_steps=1,
        save_total_limit=2,
        report_to=["tensorboard"],
    )
    metrics = train(cfg)
    out = Path(cfg.output_dir)
    assert metrics["num_examples"] == 8 and metrics["output_dir"] == cfg.output_dir
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]  # 2 kept
    ckpt = out / "checkpoint-4"
    for name in ("model.safetensors", "config.json", "optimizer.pt", "scheduler.pt", "trainer_state.json"):
        assert (ckpt / name).is_file(), name
    assert yaml.safe_load((out / "stage_config.yaml").read_text())["trainable"] == ["projector", "lora"]
    assert list(out.glob("runs/*/events.out.tfevents.*"))  # TensorBoard log
    state = json.loads((out / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]

    # the stage output is a model folder with the trained weights; frozen parts did not move
    trained = SSLALM.from_pretrained(out)
    initial = SSLALM.from_pretrained(ckpt)  # same weights as the end (step 4 = last step)
    start = build_model(cfg)  # what training started from (same seed)
    saved = load_file(out / "model.safetensors")
    assert not any(k.startswith("lm.") and "lora_" not in k for k in saved)  # no frozen LM weights
    for name, p in trained.named_parameters():
        torch.testing.assert_close(p, dict(initial.named_parameters())[name])
        moved = not torch.equal(p, dict(start.named_parameters())[name])
        assert moved == (name.startswith("projector.") or "lora_" in name), name
    with pytest.raises(UserError, match="--resume"):
        train(cfg)


def test_stage_chain_starts_from_previous_output(tmp_path):
    from sslalm.models.lalm import SSLALM

    data = write_clips(tmp_path / "data")
    one = tiny_stage(tmp_path / "s1", data, **TINY, trainable=["projector"], max_steps=1)
    train(one)
    two = tiny_stage(
        tmp_path / "s2",
        data,
        init_from=one.output_dir,
        trainable=["projector", "encoder", "lora"],
        max_steps=1,
    )
    start = build_model(two)
    after_one = SSLALM.from_pretrained(one.output_dir)
    for (name, p), q in zip(start.named_parameters(), after_one.parameters(), strict=True):
        assert torch.equal(p, q), name
    model = build_model(two)
    train(two, model=model)
    groups = model.parameter_groups()
    assert model.num_trainable_parameters() == sum(
        p.numel() for part in ("projector", "encoder", "lora") for _, p in groups[part]
    )
    before = dict(after_one.named_parameters())
    assert any(not torch.equal(p, before[n]) for n, p in groups["encoder"])  # stage 2 trains the encoder
    assert all(torch.equal(p, before[n]) for n, p in groups["lm"])  # never the base LM
    assert (Path(two.output_dir) / "model.safetensors").is_file()


def test_accumulation_equals_a_large_batch(tmp_path):
    """Token-weighted loss: 4 micro-batches of 1 give the same update as 1 batch of 4 (unequal lengths)."""
    data = write_clips(tmp_path / "data")
    runs = {}
    for name, micro in (("accumulate", 1), ("batch", 4)):
        model = make_double()
        train(tiny_stage(tmp_path / name, data, per_device_train_batch_size=micro, max_steps=2), model=model)
        runs[name] = trainable_weights(model)
    assert_close_weights(runs["accumulate"], runs["batch"])


def test_per_example_loss_weighs_every_example_once():
    """Each example's token mean, then the mean over examples; audio positions and -100 carry no target."""
    from sslalm.train import per_example_loss

    torch.manual_seed(0)
    n_audio, text, vocab = 3, 5, 7
    logits = torch.randn(3, n_audio + text, vocab)
    labels = torch.full((3, text), -100)
    labels[0, 1:5] = torch.tensor([1, 2, 3, 4])  # four targets
    labels[1, 2] = 5  # one target
    expected = []
    for b, positions in ((0, [1, 2, 3, 4]), (1, [2])):
        losses = [
            torch.nn.functional.cross_entropy(logits[b, n_audio + i - 1][None], labels[b, i][None])
            for i in positions  # text token i is predicted at the position before it
        ]
        expected.append(torch.stack(losses).mean())
    got = per_example_loss(logits, labels)
    assert torch.allclose(got, torch.stack(expected).mean())  # example 2 has no target and is left out
    token_mean = torch.nn.functional.cross_entropy(
        logits[:, n_audio - 1 : -1].transpose(1, 2), labels, ignore_index=-100
    )
    assert not torch.allclose(got, token_mean)  # the one-target example weighs as much as the four-target one
    assert per_example_loss(logits, torch.full((3, text), -100)).item() == 0.0


def test_per_example_loss_accumulates_like_a_large_batch(tmp_path):
    """``loss_per_example``: 4 micro-batches of 1 give the update of 1 batch of 4, and a different one than
    the token-weighted loss."""
    data = write_clips(tmp_path / "data")
    runs = {}
    for name, micro, per_example in (("accumulate", 1, True), ("batch", 4, True), ("tokens", 4, False)):
        model = make_double()
        cfg = tiny_stage(tmp_path / name, data, per_device_train_batch_size=micro, max_steps=2)
        cfg.loss_per_example = per_example
        train(cfg, model=model)
        runs[name] = trainable_weights(model)
    assert_close_weights(runs["accumulate"], runs["batch"])
    assert any(not torch.allclose(runs["batch"][n], runs["tokens"][n]) for n in runs["batch"])


def test_data_workers_give_the_same_run(tmp_path):
    """Loader processes get the dataset (tokenizer, extractor) and the epoch's crops: same result as none."""
    data = write_clips(tmp_path / "data", n=8, seconds=12.0)  # longer than 10.24 s: random crops
    runs = {}
    for workers in (0, 2):
        model = make_double()
        train(tiny_stage(tmp_path / f"w{workers}", data, dataloader_num_workers=workers), model=model)
        runs[workers] = trainable_weights(model)
    assert assert_close_weights(runs[2], runs[0], rel=0.0) == (0.0, 0.0)


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    """Stop after step 3 (checkpoint at 2), resume, finish: same weights as a run without the stop.

    Dropout stays on: the resumed run must also restore the random state saved in the checkpoint.
    """
    from transformers import TrainerCallback

    from sslalm.models.lalm import SSLALM

    class StopAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 3:  # after checkpoint-2 was written, before checkpoint-4
                raise _Interrupt

    data = write_clips(tmp_path / "data", n=8)
    kw = dict(TINY, num_train_epochs=3, save_steps=2, per_device_train_batch_size=2, effective_batch_size=4)
    straight = tiny_stage(tmp_path / "straight", data, **kw)
    train(straight)

    cfg = tiny_stage(tmp_path / "resumed", data, **kw)
    with pytest.raises(_Interrupt):
        train(cfg, callbacks=[StopAfter()])
    assert sorted(p.name for p in Path(cfg.output_dir).glob("checkpoint-*")) == ["checkpoint-2"]
    partial = Path(cfg.output_dir) / "checkpoint-4"  # as if killed while writing the next checkpoint
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"half a file")
    assert last_checkpoint(cfg.output_dir) == str(Path(cfg.output_dir) / "checkpoint-2")
    cfg.resume = True
    train(cfg)
    a = SSLALM.from_pretrained(straight.output_dir).trainable_state_dict()
    b = SSLALM.from_pretrained(cfg.output_dir).trainable_state_dict()
    worst, rel = assert_close_weights(a, b)
    print(f"resume vs uninterrupted: max |dw| = {worst:.2e}, max relative {rel:.2e}")
    state = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    s1 = [
        h["loss"]
        for h in json.loads((Path(straight.output_dir) / "trainer_state.json").read_text())["log_history"]
        if "loss" in h
    ]
    s2 = [h["loss"] for h in state["log_history"] if "loss" in h]
    np.testing.assert_allclose(s2, s1, rtol=1e-5)


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    """torchrun -m sslalm.train: 2 processes (gloo) with micro-batch 2 == 1 process with micro-batch 4."""
    from safetensors.torch import load_file

    data = write_clips(tmp_path / "data", n=8)
    results = {}
    for name, nproc, micro in (("single", 1, 4), ("ddp", 2, 2)):
        cfg = tiny_stage(
            tmp_path / name,
            data,
            **TINY,
            model_overrides=DETERMINISTIC,
            per_device_train_batch_size=micro,
            num_train_epochs=2,
        )
        cfg_path = tmp_path / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(dataclasses.asdict(cfg)))
        port = 29500 + (os.getpid() * 7 + nproc) % 2000
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(nproc),
            "--master_port",
            str(port),
            "-m",
            "sslalm.train",
            "--config",
            str(cfg_path),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=400)
        assert proc.returncode == 0, proc.stderr[-4000:]
        assert (
            f"{nproc} process(es) x micro-batch {micro} x accumulation {4 // (nproc * micro)}" in proc.stderr
        )
        results[name] = load_file(Path(cfg.output_dir) / "model.safetensors")
        state = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text())
        results[name + "_loss"] = [h["loss"] for h in state["log_history"] if "loss" in h]
    # Adam amplifies float summation-order differences in tiny gradients; 5e-5 of a tensor is << one step
    worst, rel = assert_close_weights(results["ddp"], results["single"], rel=5e-5)
    print(
        f"DDP vs single: max |dw| {worst:.2e}, max relative {rel:.2e}; losses {results['single_loss']} vs "
        f"{results['ddp_loss']}"
    )
    assert len(results["ddp_loss"]) == 4
    np.testing.assert_allclose(results["ddp_loss"], results["single_loss"], rtol=1e-5)


def _real_clips(folder: Path) -> list[tuple[Path, str]]:
    """Four real recordings made at test time: espeak-ng speech and sox-synthesised events."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/setup-system.sh installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    jobs = {
        "speech.wav": (
            ["espeak-ng", "-w", "speech.wav", "hello there, good morning"],
            "Speech, a man says hello.",
        ),
        "beep.wav": (["sox", "-n", "-r", "16000", "beep.wav", "synth", "1.5", "sine", "1000"], "Beep tone."),
        "noise.wav": (
            ["sox", "-n", "-r", "16000", "noise.wav", "synth", "2", "whitenoise", "vol", "0.3"],
            "White noise.",
        ),
        "pluck.wav": (
            ["sox", "-n", "-r", "16000", "pluck.wav", "synth", "1", "pluck", "C3"],
            "Plucked string.",
        ),
    }
    clips = []
    for name, (cmd, answer) in jobs.items():
        subprocess.run(cmd, cwd=folder, check=True, capture_output=True)
        clips.append((folder / name, answer))
    return clips


@pytest.mark.slow
def test_tiny_model_overfits_real_clips_and_answers(tmp_path):
    """The training loss falls far below its start and ``ask`` on each training clip returns its answer.

    The tiny preset's language model is random and frozen; its embeddings (std 0.02, tied to the output) cap
    the logits at about +-1.3, so no trainable part could push the loss below ~4.3 nats. The test scales
    them up once (a pretrained LM has such a range), and gives LoRA the state-space projections (x_proj,
    dt_proj) too, so that the audio survives the prompt in a random recurrent state within few steps.
    """
    from sslalm.audio import load_audio

    clips = _real_clips(tmp_path / "clips")
    question = "What can be heard?"
    records = [
        {
            "instruction": question,
            "input": "",
            "audio_id": p.name,
            "dataset": "toy",
            "task": "cla",
            "output": a,
        }
        for p, a in clips
    ]
    data = tmp_path / "clips" / "train.json"
    data.write_text(json.dumps(records))
    cfg = tiny_stage(
        tmp_path,
        data,
        **TINY,
        trainable=["projector", "lora"],
        train_on_inputs=False,
        model_overrides={**DETERMINISTIC, "lora_target_modules": ["in_proj", "x_proj", "dt_proj"]},
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        max_steps=160,
        logging_steps=10,
        per_device_train_batch_size=4,
        effective_batch_size=4,
    )
    model = build_model(cfg)
    with torch.no_grad():
        model.lm.get_input_embeddings().weight.mul_(8.0)
    train(cfg, model=model)
    state = json.loads((Path(cfg.output_dir) / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    answers = [model.ask(load_audio(p), question, do_sample=False, max_new_tokens=40) for p, _ in clips]
    print(f"overfit: loss {losses[0]:.3f} -> {losses[-1]:.3f}; answers {answers}")
    assert losses[-1] < 0.1 * losses[0]
    assert answers == [a for _, a in clips]


@pytest.mark.slow
def test_tiny_curriculum_runs_on_the_local_corpus(tmp_path):
    """The four tiny stage configs, chained through the CLI entry point, on a small local corpus.

    Each stage takes one optimizer step (no warm-up, so the step moves the weights): stages 2-4 must each
    change the parts they train (projector, encoder, LoRA) from the previous stage's saved model and keep the
    base LM's weights, and the final model's ``ask`` must give the answer its batched ``generate`` gives.
    """
    import argparse

    from sslalm import train as train_mod
    from sslalm.data.corpus import build_corpus
    from sslalm.models.lalm import SSLALM

    info = build_corpus(tmp_path / "corpus", size=24, seed=0, workers=1, allow_download=False, progress=False)
    parser = argparse.ArgumentParser()
    train_mod.add_arguments(parser)
    for k in (1, 2, 3, 4):
        argv = [
            "--config",
            str(REPO / "configs" / "tiny" / f"stage{k}.yaml"),
            "--train_files",
            str(info.out_dir / "train.json"),
            "--output_dir",
            str(tmp_path / f"stage{k}"),
            "--max_steps",
            "1",
            "--warmup_steps",
            "0",
            "--per_device_train_batch_size",
            "4",
            "--effective_batch_size",
            "8",
            "--dataloader_num_workers",
            "0",
            "--report_to",
            "none",
        ]
        if k > 1:
            argv += ["--init_from", str(tmp_path / f"stage{k - 1}")]
        assert train_mod.run_cli(parser.parse_args(argv)) == 0
    stages = [SSLALM.from_pretrained(tmp_path / f"stage{k}") for k in (1, 2, 3, 4)]
    for k in (2, 3, 4):  # each trains projector, encoder and LoRA from the previous stage's output
        before, now = dict(stages[k - 2].named_parameters()), stages[k - 1].parameter_groups()
        for part in ("projector", "encoder", "lora"):
            assert any(not torch.equal(p, before[n]) for n, p in now[part]), (k, part)
        assert all(torch.equal(p, before[n]) for n, p in now["lm"]), k  # the base LM never trains
    clip = str(info.out_dir / json.loads((info.out_dir / "train.json").read_text())[0]["audio_id"])
    model, question, greedy = stages[-1], "What is it?", {"do_sample": False, "max_new_tokens": 5}
    answer = model.ask(clip, question, **greedy)
    assert model.generate([clip, clip], [question, question], **greedy) == [answer, answer]


def test_label_balance_weights_even_out_labels_per_task():
    """Power 1: every label drawn equally often within its task; mixtures average their labels; clips
    without a label record keep weight 1 before the per-task normalisation; power 0 changes nothing."""
    from types import SimpleNamespace as R

    from sslalm.data.balance import label_balance_weights

    labels = ["speech"] * 6 + ["violin"] * 2 + ["speech, violin"]
    recs = [R(task="cla_label", audio_path=f"c{i}", output=lab) for i, lab in enumerate(labels)]
    recs += [R(task="caption", audio_path=f"c{i}", output=f"caption {i}") for i in range(len(labels))]
    recs.append(R(task="caption", audio_path="unlabelled", output="x"))
    w = label_balance_weights(recs, 1.0)
    cla, cap = w[:9], w[9:]
    assert sum(cla) == pytest.approx(9) and sum(cap) == pytest.approx(10)  # each task keeps its share
    assert cla[6] / cla[0] == pytest.approx(7 / 3)  # speech on 7 clips, violin on 3 (with the mixture)
    single = label_balance_weights(recs[:8], 1.0)
    assert sum(single[:6]) == pytest.approx(sum(single[6:8]))  # single labels: equal shares
    assert cla[8] == pytest.approx((cla[0] + cla[6]) / 2)  # the mixture: mean of its labels' weights
    assert [c / cap[0] for c in cap[:9]] == pytest.approx([c / cla[0] for c in cla])  # same clip, same odds
    assert cap[9] / cap[0] == pytest.approx(7)  # an unlabelled clip: raw weight 1 (speech: 1/7)
    assert label_balance_weights(recs, 0.0) == pytest.approx([1.0] * len(recs))
    with pytest.raises(ValueError):
        label_balance_weights(recs, -1.0)


def test_task_weights_scale_one_tasks_draws():
    from types import SimpleNamespace as R

    from sslalm.data.balance import task_weighted
    from sslalm.schema import ConfigError

    recs = [R(task="open_language"), R(task="caption"), R(task="open_language")]
    assert task_weighted([1.0, 2.0, 0.5], recs, {"open_language": 3.0}) == [3.0, 2.0, 1.5]
    assert task_weighted([1.0, 2.0, 0.5], recs, {"count": 4.0}) == [1.0, 2.0, 0.5]  # absent: nothing to do
    with pytest.raises(ConfigError, match="task_weights"):
        StageConfig(output_dir="x", task_weights={"open_language": 0})
    with pytest.raises(ConfigError, match="task_weights"):
        StageConfig(output_dir="x", task_weights={"open_language": "3"})


def test_balanced_stage_draws_rare_labels_more_often(tmp_path):
    """``balance_labels`` replaces the Trainer's shuffling by seeded weighted draws over the records."""
    from transformers import TrainerCallback

    from sslalm.data.openaqa import OpenAQADataset

    folder = tmp_path / "data"
    data = write_clips(folder, n=8)
    records = json.loads(data.read_text())
    for i, r in enumerate(records):
        r["task"], r["output"] = "cla_label", "rare" if i == 0 else "common"
    data.write_text(json.dumps(records))
    seen = {}

    class Peek(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            seen["dataset"] = train_dataloader.dataset

    cfg = tiny_stage(tmp_path, data, balance_labels=1.0, max_steps=1)
    train(cfg, model=make_double(), callbacks=[Peek()])
    ds = seen["dataset"]
    assert isinstance(ds, OpenAQADataset) and ds.sample_weights[0] == pytest.approx(7 * ds.sample_weights[1])
    trainer = _make_trainer_class()(model=make_double(), args=training_arguments(cfg), train_dataset=ds)
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, torch.utils.data.WeightedRandomSampler)
    draws = [i for _ in range(50) for i in sampler]
    assert 0.35 < draws.count(0) / len(draws) < 0.65  # the one rare clip: half the draws, not an eighth
    assert draws[:8] == list(trainer._get_train_sampler())  # seeded
    del ds.sample_weights
    assert not isinstance(trainer._get_train_sampler(), torch.utils.data.WeightedRandomSampler)
    cfg = tiny_stage(tmp_path, data, task_weights={"cla_label": 2.0}, max_steps=1, overwrite_output_dir=True)
    train(cfg, model=make_double(), callbacks=[Peek()])
    assert seen["dataset"].sample_weights == [2.0] * 8
