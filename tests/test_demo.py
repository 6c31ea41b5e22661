"""``sslalm demo``: helpers (fast) and the quick pipeline end to end (slow: the CI check that it learns)."""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml
from safetensors.torch import load_file

from sslalm.data.corpus.inventory import INSTRUMENT_LABELS
from sslalm.demo.baselines import chance_levels
from sslalm.demo.pipeline import fingerprint, pick_questions
from sslalm.demo.recipe import (
    FULL,
    QUICK,
    STAGES,
    sslalm_recipe,
    stage_config,
    stage_yaml,
    transformer_recipe,
)
from sslalm.eval.local import LABEL_PROMPT, load_local, share_answers

# ------------------------------------------------------------------------------------------- helpers


def test_chance_levels_count_every_label_of_a_clip():
    entries = [
        {"labels": ["a"]},
        {"labels": ["a", "b"]},
        {"labels": ["b"]},
        {"labels": ["c"]},
    ]
    ch = chance_levels(entries, ["a", "b", "c", "d"])
    assert ch["uniform"] == pytest.approx(25.0)
    # answering "b" always is right on 2 of 4 clips, as is "a"; ties go to the later name
    assert ch["majority"] == pytest.approx(50.0)
    assert ch["majority_label"] == "b"
    assert ch["num_clips"] == 4 and ch["num_labels"] == 4


def test_pick_questions_takes_one_record_per_task_in_order_and_is_seeded():
    records = [
        {"task": t, "audio_id": f"{t}{i}", "instruction": "q", "output": "a"}
        for t in ("open_speed", "caption", "cla_label", "count")
        for i in range(5)
    ]
    picked = pick_questions(records, 3, seed=1)
    assert [r["task"] for r in picked] == ["cla_label", "caption", "count"]
    assert picked == pick_questions(records, 3, seed=1)
    assert len(pick_questions(records, 10, seed=1)) == 4  # only four tasks exist


def test_fingerprint_changes_with_any_part():
    a = fingerprint("corpus", {"x": 1}, 0)
    assert a == fingerprint("corpus", {"x": 1}, 0)
    assert a != fingerprint("corpus", {"x": 2}, 0)
    assert a != fingerprint("corpus", {"x": 1}, 1)


def _demo_stage(number, schedule=FULL, **kwargs):
    args = dict(output_dir=f"out/stage{number}", train_file="corpus/train.json", seed=5, progress=False)
    args["init_from"] = None if number == 1 else f"out/stage{number - 1}"
    args.update(kwargs)
    return stage_config(number, schedule, **args)


def test_demo_stages_are_the_tiny_yaml_files_with_the_demo_overrides():
    """Each demo stage is configs/tiny/stage<N>.yaml through train.load_config: the YAML's data (tasks) and
    the parts it trains, plus the stated departures (lm from stage 2, the encoder frozen in stages 2-4), sizes
    from the schedule."""
    stages = {n: _demo_stage(n) for n in STAGES}
    for n, cfg in stages.items():
        yml = yaml.safe_load(stage_yaml(n).read_text())
        assert cfg.tasks == yml["tasks"], n
        assert cfg.cutoff_len == yml["cutoff_len"] and cfg.bf16 == yml["bf16"]
        assert cfg.max_steps == FULL.stage_steps[n - 1] and cfg.seed == 5
        assert cfg.train_files == ["corpus/train.json"] and cfg.output_dir == f"out/stage{n}"
        assert cfg.train_on_inputs is False and yml["train_on_inputs"] is True  # a stated departure
        assert cfg.loss_per_example is FULL.loss_per_example is True  # another
        assert cfg.balance_labels == FULL.balance_labels
        assert cfg.task_weights == FULL.task_draws
    assert [stages[n].trainable for n in STAGES] == [
        ["projector"],
        ["projector", "lora", "lm"],
        ["projector", "lora", "lm"],
        ["projector", "lora", "lm"],
    ]
    trained = dataclasses.replace(FULL, encoder_frozen_in=(2,))
    assert _demo_stage(4, trained).trainable == ["projector", "encoder", "lora", "lm"]
    assert stages[1].learning_rate == FULL.learning_rate
    assert stages[2].learning_rate == FULL.learning_rate * FULL.later_lr_factor
    assert stages[1].init_from is None and stages[3].init_from == "out/stage2"
    paper = dataclasses.replace(FULL, tune_lm=False, encoder_frozen_in=())
    for n in STAGES:
        assert _demo_stage(n, paper).trainable == yaml.safe_load(stage_yaml(n).read_text())["trainable"]


def test_demo_stage_one_builds_the_recipes_model_through_the_train_loader(monkeypatch):
    """Stage 1 carries the preset and the stage-0 checkpoints as model_overrides, which train.build_model
    applies; later stages start from the previous folder instead."""
    from sslalm.train import build_model

    cfg = _demo_stage(1, model_overrides={"train_frames": 96, "min_inference_frames": 96}, preset="tiny-ltu")
    assert cfg.model == "tiny-ltu" and cfg.model_overrides["train_frames"] == 96
    model = build_model(cfg)
    assert model.config.encoder_type == "ast" and model.config.train_frames == 96
    assert _demo_stage(2).model_overrides == {}


@pytest.mark.parametrize("tags", [True, False])
def test_stage_zero_hands_its_head_to_stage_one_when_the_schedule_has_tag_tokens(tmp_path, monkeypatch, tags):
    """``Schedule.tag_tokens``: stage 1's model_overrides name the stage-0 head's tags, pooling and file."""
    import sslalm.demo.pretrain as pretrain
    from sslalm.demo.pipeline import pretrain_stage0
    from sslalm.tokenizer import build_byte_tokenizer

    seen = {}
    monkeypatch.setattr(pretrain, "pretrain_language_model", lambda *a, **k: {})
    monkeypatch.setattr(pretrain, "pretrain_encoder", lambda *a, **k: seen.update(labels=a[3], kw=k) or {})
    record = {"instruction": "Classify the sound.", "input": "", "dataset": "x", "task": "cla_label"}
    records = [dict(record, audio_id="a.wav", output="dog"), dict(record, audio_id="b.wav", output="piano")]
    (tmp_path / "train.json").write_text(json.dumps(records))
    build_byte_tokenizer([], vocab_size=258, path=tmp_path / "tok")
    schedule = dataclasses.replace(
        QUICK, tag_tokens=tags, tag_fact_temperature=0.5, encoder_fact_net_warp=0.1
    )
    out = pretrain_stage0(
        sslalm_recipe("small"), schedule, tmp_path, str(tmp_path / "tok"), tmp_path / "m", 0, False, []
    )
    assert seen["labels"] == ["dog", "piano"] and seen["kw"]["fact_net_warp"] == 0.1
    if not tags:
        assert not any(k.startswith("tag_") for k in out)
        return
    assert out["tag_names"] == ["dog", "piano"] and out["tag_pool"] == QUICK.encoder_pool
    assert out["tag_cepstra"] == QUICK.encoder_cepstra and out["tag_scale"] == QUICK.tag_scale
    assert out["tag_fact_net"] == QUICK.encoder_fact_net == 0 and FULL.encoder_fact_net > 0
    assert out["tag_fact_temperature"] == 0.5 and QUICK.tag_fact_temperature is None
    assert out["tag_checkpoint"] == str(
        (tmp_path / "m" / "stage0_encoder" / pretrain.TAG_HEAD_FILE).resolve()
    )


def test_editing_the_yaml_changes_the_demo(tmp_path, monkeypatch):
    """configs/tiny is the single source: a changed YAML file changes the demo's stage."""
    import sslalm.demo.recipe as recipe

    for n in STAGES:
        text = stage_yaml(n).read_text()
        if n == 3:
            text = text.replace("cutoff_len: 108", "cutoff_len: 77")
        (tmp_path / f"stage{n}.yaml").write_text(text)
    monkeypatch.setattr(recipe, "CURRICULUM_DIR", tmp_path)
    assert _demo_stage(3).cutoff_len == 77 and _demo_stage(2).cutoff_len == 108
    (tmp_path / "stage4.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="configs/tiny"):
        _demo_stage(4)


@pytest.mark.parametrize("size", ["base", "small"])
def test_the_two_models_have_comparable_sizes(tmp_path, size):
    """Built as the demo builds them (with the demo's vocabulary), the transformer LALM is within 15 % of
    the ssLALM in total parameters, and their language models within 2 %."""
    from sslalm.demo.pretrain import record_texts
    from sslalm.models.lalm import SSLALM, SSLALMConfig
    from sslalm.tokenizer import build_byte_tokenizer

    texts = record_texts([{"instruction": "Classify the sound.", "output": "a dog barks"}] * 20)
    tok = build_byte_tokenizer(texts, vocab_size=FULL.vocab_size)
    sizes, lms, encs = {}, {}, {}
    for r in (sslalm_recipe(size), transformer_recipe(FULL.frames, size)):
        lm_config = {**r.lm_config, "vocab_size": "auto"}
        config = SSLALMConfig.preset(
            r.preset,
            encoder_config=r.encoder_config,
            lm_type=r.lm_type,
            lm_config=lm_config,
            train_frames=FULL.frames,
        )
        model = SSLALM(config, tokenizer=tok)
        # the demo's tokenizer has FULL.vocab_size entries; this one is smaller, so count the LM's embedding
        # as the demo's vocabulary would make it
        emb = model.lm.get_input_embeddings().weight
        extra = (FULL.vocab_size - emb.shape[0]) * emb.shape[1]
        sizes[r.key] = model.num_parameters() + extra
        lms[r.key] = sum(p.numel() for _, p in model.parameter_groups()["lm"]) + extra
        encs[r.key] = sum(p.numel() for _, p in model.parameter_groups()["encoder"])
    assert 0.85 < sizes["transformer"] / sizes["sslalm"] < 1.15, sizes
    assert 0.98 < lms["transformer"] / lms["sslalm"] < 1.02, lms
    if size == "base":  # the encoders too (the small AST is 4 % larger than the small DASS)
        assert 0.99 < encs["transformer"] / encs["sslalm"] < 1.01, encs


def test_encoder_tags_are_the_labels_plus_the_language_of_speech(tmp_path):
    """Stage 0's encoder targets: a clip's labels, and the language its open-ended record states."""
    from sslalm.demo.pipeline import _encoder_clips

    recs = [
        {"audio_id": "a.wav", "task": "cla_label", "output": "female speech"},
        {"audio_id": "a.wav", "task": "open_language", "output": "The speaker is speaking Polish."},
        {"audio_id": "a.wav", "task": "open_gender", "output": "It is a female voice."},
        {"audio_id": "b.wav", "task": "cla_label", "output": "violin, male speech"},
        {"audio_id": "c.wav", "task": "open_language", "output": "French."},  # no label record: not a clip
    ]
    clips = _encoder_clips(recs, tmp_path)
    assert clips == {
        str(tmp_path / "a.wav"): ["female speech", "language: Polish"],
        str(tmp_path / "b.wav"): ["violin", "male speech"],
    }


class FirstBins(torch.nn.Module):
    """A stand-in encoder for the loss tests: features = the fbank's first 4 bins, as a (B, 4, 1, 1) map."""

    hidden_size = 4

    def forward_features(self, fbank):
        return fbank[:, 0, :4, None, None]


def test_encoder_loss_has_one_softmax_per_tag_group():
    """Labels and the language are separate softmaxes: a speech clip's label keeps its whole target mass."""
    import torch.nn.functional as F

    from sslalm.demo.pretrain import EncoderClassifier, tag_groups

    tags = ["female speech", "language: French", "language: Polish", "violin"]
    assert tag_groups(tags) == [0, 1, 1, 0]
    torch.manual_seed(0)
    model = EncoderClassifier(FirstBins(), 4, tag_groups(tags))
    fbank = torch.randn(3, 2, 8)
    targets = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1], [1, 0, 0, 1]])  # speech+Polish, violin, a mixture
    out = model(fbank, targets)
    logits = out["logits"]
    label, lang = [0, 3], [1, 2]
    expected = (
        F.cross_entropy(logits[:, label], torch.tensor([[1.0, 0], [0, 1], [0.5, 0.5]]), reduction="sum")
        + F.cross_entropy(logits[:1, lang], torch.tensor([[0.0, 1]]), reduction="sum")
    ) / 3
    assert torch.allclose(out["loss"], expected)


def test_a_fact_keeps_the_mass_mixup_left_it():
    """A speech clip mixed under another at 0.3 teaches its language at 0.3; labels still share mass 1."""
    import torch.nn.functional as F

    from sslalm.demo.pretrain import EncoderClassifier, tag_groups

    tags = ["female speech", "language: French", "language: Polish", "violin"]
    torch.manual_seed(0)
    model = EncoderClassifier(FirstBins(), 4, tag_groups(tags))
    fbank = torch.randn(2, 2, 8)
    targets = torch.tensor([[0.3, 0, 0.3, 0.7], [0.6, 0.6, 0.4, 0.4]])  # violin over speech; two voices
    out = model(fbank, targets)
    logits = out["logits"]
    label, lang = [0, 3], [1, 2]
    expected = (
        F.cross_entropy(logits[:, label], torch.tensor([[0.3, 0.7], [0.6, 0.4]]), reduction="sum")
        + 0.3 * F.cross_entropy(logits[:1, lang], torch.tensor([[0.0, 1]]), reduction="sum")
        + F.cross_entropy(logits[1:, lang], torch.tensor([[0.6, 0.4]]), reduction="sum")
    ) / 2
    assert torch.allclose(out["loss"], expected)


def test_encoder_tags_take_every_speech_clips_language_from_the_manifest(tmp_path):
    """The questions ask some clips' language; the corpus's manifest states it for all of them, speech over
    noise included, and a clip the manifest does not describe keeps what its records say."""
    import csv
    import json

    from sslalm.demo.pipeline import _encoder_clips

    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, ["file", "split", "kind", "meta"])
        w.writeheader()
        w.writerow({"file": "a.wav", "kind": "speech", "meta": json.dumps({"language": "Czech"})})
        speech = {"language": "Dutch", "gender": "male"}
        w.writerow({"file": "b.wav", "kind": "speech_noise", "meta": json.dumps({"speech": speech})})
        w.writerow({"file": "c.wav", "kind": "instrument", "meta": json.dumps({"instrument": "violin"})})
        w.writerow({"file": "d.wav", "kind": "speech", "meta": "not json"})
        w.writerow({"file": "c.wav", "kind": "speech", "meta": "[1, 2]"})  # JSON, but not an object
    recs = [
        {"audio_id": "a.wav", "task": "cla_label", "output": "female speech"},
        {"audio_id": "b.wav", "task": "cla_label", "output": "male speech, white noise"},
        {"audio_id": "c.wav", "task": "cla_label", "output": "violin"},
        {"audio_id": "d.wav", "task": "cla_label", "output": "male speech"},
        {"audio_id": "d.wav", "task": "open_language", "output": "The speaker is speaking Polish."},
    ]
    clips = _encoder_clips(recs, tmp_path)
    assert clips == {
        str(tmp_path / "a.wav"): ["female speech", "language: Czech"],
        str(tmp_path / "b.wav"): ["male speech", "white noise", "language: Dutch"],
        str(tmp_path / "c.wav"): ["violin"],
        str(tmp_path / "d.wav"): ["male speech", "language: Polish"],
    }
    both = _encoder_clips(recs, tmp_path, ("language", "instrument"))  # the full schedule's facts
    assert both[str(tmp_path / "c.wav")] == ["violin", "instrument: violin"]
    assert both[str(tmp_path / "a.wav")] == ["female speech", "language: Czech"]
    with pytest.raises(ValueError, match="unknown facts"):
        _encoder_clips(recs, tmp_path, ("mood",))


def test_clips_with_a_fact_are_drawn_more_often():
    from sslalm.demo.pretrain import encoder_draw_weights

    tags = [["violin"], ["male speech", "language: Dutch"], ["violin"], ["male speech"]]
    w = encoder_draw_weights(tags, 0.0, 3.0)
    assert w == pytest.approx([4 / 6, 2.0, 4 / 6, 4 / 6]) and sum(w) == pytest.approx(4)
    balanced = encoder_draw_weights(tags, 0.5, 1.0)  # fact_draws 1: the label balance alone
    from sslalm.data.balance import clip_balance_weights

    assert balanced == pytest.approx(clip_balance_weights(tags, 0.5))
    with pytest.raises(ValueError, match="fact_draws"):
        encoder_draw_weights(tags, 0.0, 0.0)


def test_linear_probe_learns_separable_features_and_guesses_only_allowed_labels():
    from sslalm.demo.baselines import fbank_statistics, fit_probe, probe_accuracy

    rng = np.random.default_rng(0)
    centres = {"dog": 0.0, "piano": 3.0, "cat": -3.0}
    train_y = [lab for lab in centres for _ in range(30)]
    train_x = np.stack([rng.normal(centres[y], 1.0, 8) for y in train_y])
    test_y = ["dog", "piano", "cat"] * 10
    test_x = np.stack([rng.normal(centres[y], 1.0, 8) for y in test_y])
    clf = fit_probe(train_x, train_y)
    assert probe_accuracy(clf, test_x, [[y] for y in test_y], list(centres)) > 90
    # "cat" is not a label of this set: its clips can only be wrong, the others stay right
    acc = probe_accuracy(clf, test_x, [[y] for y in test_y], ["dog", "piano"])
    assert 55 < acc < 70
    fb = np.arange(12, dtype=np.float32).reshape(4, 3)  # (T, F)
    np.testing.assert_allclose(fbank_statistics(fb), [4.5, 5.5, 6.5, *fb.std(0), 9, 10, 11])


def test_encoder_augmentation_is_seeded_and_changes_level_noise_and_spectrum():
    from sslalm.demo.pretrain import augment_fbank, augment_waveform

    wav = torch.sin(torch.linspace(0, 2000, 16000))

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return augment_waveform(wav, g), augment_fbank(torch.zeros(50, 128), g, 4.5)

    (w1, f1), (w2, f2), (w3, _) = run(1), run(1), run(2)
    assert torch.equal(w1, w2) and torch.equal(f1, f2)
    assert not torch.equal(w1, w3) and not torch.equal(w1, wav)
    assert f1.shape == (50, 128) and torch.equal(f1[0], f1[-1])  # one curve for every frame
    db = f1[0] * 2 * 4.5 / (math.log(10) / 10)
    assert db.abs().max() <= 14.0 + 1e-4  # tilt of at most 6 dB plus a bump of at most 8 dB
    loud = wav.abs() > 0.1
    for seed in range(8):  # without noise only the level changes, by at most 6 dB
        gain = augment_waveform(wav, torch.Generator().manual_seed(seed), noise=False)[loud] / wav[loud]
        assert torch.allclose(gain, gain[0].expand_as(gain)) and 0.5 < float(gain[0]) < 2.0


def test_encoder_dataset_switches_noise_and_equaliser_off(tmp_path):
    import soundfile as sf

    from sslalm.audio import FbankExtractor
    from sslalm.demo.pretrain import ClipLabelDataset

    wav = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)  # energy in every bin
    sf.write(tmp_path / "a.wav", wav, 16000)
    clips = [(str(tmp_path / "a.wav"), ["tone"])]
    plain = FbankExtractor(target_length=100)(torch.from_numpy(wav))

    def bends(**switches) -> float:  # the most six draws bend the spectrum (std of the change, no padding)
        data = ClipLabelDataset(clips, ["tone"], 100, augment=True, **switches)
        return max(float((data[0]["fbank"] - plain)[:90].std()) for _ in range(6))

    assert bends(noise=False, eq=False) < 0.03  # a level change adds about one constant to every value
    assert bends(noise=False) > 0.06  # the equaliser tilts and bumps it


def test_speed_change_scales_pitch_and_length_together():
    from sslalm.demo.pretrain import change_speed

    t = torch.arange(16000) / 16000
    tone = torch.sin(2 * math.pi * 440 * t)
    for factor in (0.9, 1.1):
        out = change_speed(tone, factor)
        assert abs(out.numel() - 16000 / factor) <= 2
        peak = float(torch.fft.rfft(out).abs().argmax()) * 16000 / out.numel()  # Hz
        assert abs(peak - 440 * factor) < 3
    assert change_speed(tone, 1.0) is tone


def test_encoder_dataset_speed_draws_are_seeded_bounded_and_keep_the_crop(tmp_path):
    import soundfile as sf

    from sslalm.demo.pretrain import ClipLabelDataset

    t = np.arange(3 * 16000) / 16000
    sf.write(tmp_path / "a.wav", (0.3 * np.sin(2 * np.pi * 500 * t)).astype(np.float32), 16000)
    clips = [(str(tmp_path / "a.wav"), ["tone"])]

    def draws(speed: float) -> list[torch.Tensor]:
        data = ClipLabelDataset(
            clips, ["tone"], 100, seed=3, augment=True, noise=False, eq=False, speed=speed
        )
        return [data[0]["fbank"] for _ in range(8)]

    fast = draws(0.1)
    assert all(f.shape == (100, 128) for f in fast)
    assert all(torch.equal(a, b) for a, b in zip(fast, draws(0.1)))  # seeded per draw
    peaks = {int(f[10:90].mean(0).argmax()) for f in fast}  # the tone's mel bin moves with the speed
    assert len(peaks) > 1
    assert {int(f[10:90].mean(0).argmax()) for f in draws(0.0)} == {peaks_at_500 := _mel_bin_of(500.0)}
    assert all(abs(p - peaks_at_500) <= 3 for p in peaks)  # within +-10 % of 500 Hz: +-2 bins
    with pytest.raises(ValueError, match="speed"):
        ClipLabelDataset(clips, ["tone"], 100, speed=0.6)


def _mel_bin_of(hz: float) -> int:
    """The log-mel bin of the extractor's 128 where a pure tone of ``hz`` peaks."""
    from sslalm.audio import FbankExtractor

    t = torch.arange(16000) / 16000
    return int(FbankExtractor(target_length=100)(torch.sin(2 * math.pi * hz * t))[10:90].mean(0).argmax())


def test_report_states_the_encoder_departures_the_schedule_makes():
    from sslalm.demo.report import _encoder_recipe, _frozen_encoder

    assert _encoder_recipe({"encoder_augment": False}) == ""
    assert _frozen_encoder({"encoder_frozen_in": []}) == ""
    assert _encoder_recipe({}) == " (with random level, noise and equaliser)"  # results of older runs
    assert _encoder_recipe({"encoder_augment": False, "encoder_mixup": 0.4}) == " (with mixup (Beta 0.4))"
    settings = {"encoder_eq": False, "encoder_mixup": 0.4, "encoder_drop": 0.1, "encoder_balance": 0.5}
    assert _encoder_recipe(settings) == (
        " (with random level and noise, mixup (Beta 0.4) and drop path (DASS) or dropout (AST) 0.1;"
        " clips drawn label-balanced)"
    )
    level = {"encoder_noise": False, "encoder_eq": False, "encoder_augment": True, "encoder_balance": 0.5}
    assert _encoder_recipe(level) == " (with random level; clips drawn label-balanced)"
    assert _encoder_recipe({**level, "encoder_pool": "mean+max"}) == (
        " (with random level; clips drawn label-balanced; its classifier head reads the mean and the maximum"
        " of its map)"
    )
    assert _encoder_recipe({**level, "encoder_speed": 0.1}) == (
        " (with random level and speed (x0.9-1.1); clips drawn label-balanced)"
    )
    assert _encoder_recipe({**level, "encoder_fact_draws": 2.0}) == (
        " (with random level; clips drawn label-balanced; speech clips, which teach the language, drawn 2"
        " times as often)"
    )
    assert _encoder_recipe({**level, "encoder_cepstra": 24, "encoder_cepstra_labels": False}) == (
        " (with random level; clips drawn label-balanced; its language columns also read the covariance of"
        " the fbank's first 24 cepstra and their deltas (`sslalm.models.cepstral`; not in the paper))"
    )
    assert "its classifier head also reads the covariance" in _encoder_recipe({"encoder_cepstra": 24})
    instruments = {"encoder_cepstra": 24, "encoder_cepstra_labels": list(INSTRUMENT_LABELS)}  # as JSON has it
    assert "its columns for the language and the instruments also read" in _encoder_recipe(instruments)
    two = _encoder_recipe({"encoder_cepstra": 24, "encoder_cepstra_labels": ["piano", "dog"]})
    assert "its columns for the language and for dog and piano also read" in two
    assert _frozen_encoder({"encoder_frozen_in": [2]}) == "; stage 2 keeps the stage-0 encoder as it is"
    four = _frozen_encoder({"encoder_frozen_in": [4, 2, 3]})
    assert four == "; stages 2-4 keep the stage-0 encoder as it is"
    assert _frozen_encoder({"encoder_frozen_in": [2, 4]}) == "; stages 2, 4 keep the stage-0 encoder as it is"
    from sslalm.demo.report import _tag_tokens

    assert _tag_tokens({}) == "" and _tag_tokens({"tag_tokens": False}) == ""  # older results: none
    assert "classifier head" in _tag_tokens({"tag_tokens": True})
    full = _tag_tokens(
        {
            "tag_tokens": True,
            "tag_scale": "audio",
            "encoder_fact_probe": True,
            "task_draws": {"open_language": 5.0},
        }
    )
    assert full.endswith(
        ", scaled to the norm of the projector's tokens; the head's language columns are a logistic"
        " regression on the cepstral statistics; records of these tasks are drawn more often:"
        " open_language 5 times"
    )
    net = _tag_tokens({"tag_tokens": True, "encoder_fact_probe": True, "encoder_fact_net": 128})
    assert "logistic" not in net  # the net gives the language, not the refit columns
    assert net.endswith("10 ms cepstra (128 channels, `sslalm.models.frame_net`), trained after stage 0")
    settings = {"encoder_fact_net": 64, "encoder_fact_net_warp": 0.1, "tag_fact_temperature": 0.25}
    assert _tag_tokens({"tag_tokens": True, **settings}).endswith(
        "trained after stage 0 on draws whose mel axis is stretched by up to 10% (other voices); the facts'"
        " distributions take a softmax temperature of 0.25, so that their tokens lie near the likeliest"
        " value's word"
    )


def test_spec_masks_are_seeded_bounded_bands_and_spans():
    from sslalm.demo.pretrain import mask_fbank

    fbank = torch.randn(100, 128)

    def run(seed):
        return mask_fbank(fbank, torch.Generator().manual_seed(seed), max_bins=24, max_frames=48)

    a, b = run(3), run(3)
    assert torch.equal(a, b) and a.shape == fbank.shape and not torch.equal(fbank, run(4))
    zero_bins = (a == 0).all(dim=0).sum()  # whole masked frequency bands
    zero_frames = (a == 0).all(dim=1).sum()  # whole masked time spans
    assert zero_bins <= 48 and zero_frames <= 96
    kept = a != 0
    assert torch.equal(a[kept], fbank[kept])  # nothing else changes
    masks = [mask_fbank(fbank, torch.Generator().manual_seed(s)) for s in range(20)]
    assert any((m == 0).all(dim=0).any() for m in masks) and any((m == 0).all(dim=1).any() for m in masks)


def test_mixup_mixes_clips_and_their_targets_with_one_weight():
    from sslalm.demo.pretrain import EncoderClassifier, mix_batch

    torch.manual_seed(0)
    fbank = torch.randn(6, 10, 8)
    targets = torch.eye(6)
    mixed, mixed_t = mix_batch(fbank, targets, 0.4)
    lam = mixed_t.max(dim=1).values  # each row: lam on its own clip, 1 - lam on its partner
    assert torch.allclose(lam, lam[0].expand(6)) and 0.5 <= float(lam[0]) <= 1.0
    assert torch.allclose(mixed_t.sum(dim=1), torch.ones(6))
    partner = [int(row.argsort()[-2]) if lam[0] < 1 else i for i, row in enumerate(mixed_t)]
    for i, j in enumerate(partner):
        assert torch.allclose(mixed[i], lam[0] * fbank[i] + (1 - lam[0]) * fbank[j], atol=1e-6)

    class Mean(torch.nn.Module):
        hidden_size = 8

        def forward_features(self, fbank):
            return fbank.mean(1)[:, :, None, None]

    model = EncoderClassifier(Mean(), 6, mixup=0.4)
    model.eval()  # no mixup at evaluation: the logits are the clips' own
    assert torch.allclose(model(fbank, targets)["logits"], model.head(fbank.mean(1)))


def test_encoder_head_can_read_the_maximum_beside_the_mean():
    from sslalm.demo.pretrain import EncoderClassifier

    class Map(torch.nn.Module):
        hidden_size = 4

        def forward_features(self, fbank):  # (B, T, 8) -> (B, 4, 2, T)
            b, t, _ = fbank.shape
            return fbank.reshape(b, t, 2, 4).permute(0, 3, 2, 1)

    fbank = torch.zeros(3, 10, 8)
    fbank[0, 3, 1] = 5.0  # one cell: moves the maximum far more than the mean
    model = EncoderClassifier(Map(), 5, pool="mean+max").eval()
    assert model.head.in_features == 8
    feats = Map().forward_features(fbank)
    expect = model.head(torch.cat([feats.mean(dim=(2, 3)), feats.amax(dim=(2, 3))], dim=-1))
    torch.testing.assert_close(model(fbank)["logits"], expect)
    pooled = model.pooled(feats)  # the peak: 5 in the maximum half, 5 over its 20 cells in the mean half
    assert float(pooled[0, 4:].max()) == 5.0 and float(pooled[0, :4].max()) == 5.0 / 20
    assert EncoderClassifier(Map(), 5).pooled(feats).shape == (3, 4)
    with pytest.raises(ValueError, match="pool"):
        EncoderClassifier(Map(), 5, pool="max")


def test_encoder_head_reads_cepstral_statistics_for_the_facts_alone_when_asked():
    from sslalm.demo.pretrain import EncoderClassifier
    from sslalm.models.tagger import head_inputs, tag_groups

    class Map(torch.nn.Module):
        hidden_size = 4

        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward_features(self, fbank):  # (B, T, 128) -> (B, 4, 32, T)
            b, t, _ = fbank.shape
            return self.scale * fbank.reshape(b, t, 32, 4).permute(0, 3, 2, 1)

    tags = ["dog", "piano", "language: French", "language: Polish"]
    torch.manual_seed(0)
    fbank, targets = torch.randn(4, 30, 128), torch.eye(4)
    for labels_too in (True, False, [1]):  # every label column, none, the piano's alone
        model = EncoderClassifier(
            Map(), 4, tag_groups(tags), pool="mean+max", cepstra=2, cepstra_labels=labels_too
        )
        assert model.head.in_features == 8 + model.cepstra.dim
        model.cepstra.fit([fbank])
        expect = model.head(
            head_inputs(model.encoder.forward_features(fbank), "mean+max", model.cepstra, fbank)
        )
        torch.testing.assert_close(model(fbank)["logits"], expect)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1, weight_decay=0.01)
        for _ in range(3):
            opt.zero_grad()
            model(fbank, targets)["loss"].backward()
            opt.step()
        block = model.head.weight[:, -model.cepstra.dim :]  # (4 tags, D): the statistics' weights
        assert block[2:].abs().sum() > 0  # the language always reads them
        reading = [0, 1] if labels_too is True else labels_too or []
        for col in (0, 1):  # the labels only when asked
            assert (block[col].abs().sum() > 0) == (col in reading), (labels_too, col)


def test_fact_columns_are_refit_as_a_regression_on_the_cepstral_statistics(tmp_path):
    """Two "languages" told apart by their spectra alone: the refit columns name them; the label columns
    and the facts' weights on the pooled map are left as they were, and zero."""
    from sslalm.demo.pretrain import EncoderClassifier, fit_cepstra, fit_fact_columns
    from sslalm.models.tagger import head_inputs, tag_groups

    class Map(torch.nn.Module):
        hidden_size = 4

        def forward_features(self, fbank):  # (B, T, 128) -> (B, 4, 1, 1): nothing about the language
            return torch.zeros(fbank.shape[0], 4, 1, 1)

    rng = np.random.default_rng(0)
    clips = []
    for i in range(24):
        noise = rng.normal(0, 0.1, 16000).astype(np.float32)
        if i % 2:
            noise = np.cumsum(noise) / 20  # a low tilt
        path = tmp_path / f"c{i}.wav"
        sf.write(path, noise, 16000)
        clips.append((str(path), ["speech", "language: A" if i % 2 == 0 else "language: B"]))
    clips.append((str(tmp_path / "c0.wav"), ["dog"]))  # a clip without the fact
    tags = ["dog", "language: A", "language: B", "speech"]
    model = EncoderClassifier(Map(), 4, tag_groups(tags), pool="mean", cepstra=3, cepstra_labels=False).eval()
    fit_cepstra(model.cepstra, clips, tags, 64, 0)
    before = model.head.weight.detach().clone()
    out = fit_fact_columns(model, clips, tags, 64, 0)
    assert out["language"]["clips"] == 24 and out["language"]["values"] == 2
    assert out["language"]["C"] in (0.01, 0.03, 0.1, 0.3)
    w = model.head.weight.detach()
    torch.testing.assert_close(w[[0, 3]], before[[0, 3]], rtol=0, atol=0)
    assert torch.equal(w[1:3, :4], torch.zeros(2, 4))
    from sslalm.audio import FbankExtractor, load_audio

    ex = FbankExtractor(target_length=64)
    fb = torch.stack([ex(load_audio(p)) for p, _ in clips[:24]])
    with torch.no_grad():
        logits = model.head(head_inputs(model.encoder.forward_features(fb), "mean", model.cepstra, fb))
    assert (logits[:, 1:3].argmax(1) == torch.arange(24) % 2).all()
    with pytest.raises(ValueError, match="cepstral"):
        fit_fact_columns(EncoderClassifier(Map(), 4, tag_groups(tags)), clips, tags, 64, 0)


# ------------------------------------------------------------------------------------------- local corpus


def _fake_corpus(root: Path) -> Path:
    (root / "audio" / "test").mkdir(parents=True)
    entries = []
    for i, (label, caption) in enumerate([("dog", "A dog barks."), ("piano", "A piano plays a C.")]):
        path = f"audio/test/clip{i}.wav"
        sf.write(root / path, np.zeros(1600, dtype=np.float32), 16000)
        entries.append(
            {
                "audio_id": path,
                "label": label,
                "labels": [label],
                "caption": caption,
                "captions": [caption, caption.lower()],
                "kind": "x",
            }
        )
    entries.append(
        {
            "audio_id": "audio/test/missing.wav",
            "label": "dog",
            "labels": ["dog"],
            "caption": "c",
            "captions": ["c"],
            "kind": "x",
        }
    )
    (root / "test_cla.json").write_text(json.dumps(entries))
    (root / "labels.json").write_text(json.dumps({"cla": {"test": ["dog", "piano", "cat"]}}))
    return root


def test_local_benchmarks_read_labels_captions_and_skip_missing_audio(tmp_path):
    from sslalm.eval.datasets import CLASSIFICATION_PROMPT

    cla, cap, label = load_local(_fake_corpus(tmp_path), "test")
    assert (cla.task, cla.metric, cla.prompt) == ("classification", "acc", CLASSIFICATION_PROMPT)
    assert (cap.task, cap.prompt) == ("captioning", CLASSIFICATION_PROMPT)
    assert label.prompt == LABEL_PROMPT
    assert cla.labels == ["dog", "piano", "cat"] and cap.labels == []
    assert [c.references for c in cla.clips] == [("dog",), ("piano",)]
    assert cap.clips[1].references == ("A piano plays a C.", "a piano plays a c.")
    assert cla.skipped == {"audio file not found": 1}
    assert len({b.name for b in (cla, cap, label)}) == 3
    with pytest.raises(ValueError, match="unknown"):
        load_local(tmp_path, "test", kinds=("cla", "nope"))


def test_reference_captions_score_through_the_paper_prompt_protocol(tmp_path):
    """Each clip's first caption is scored as a model's caption would be; a caption whose label comes before
    a colon loses it to LTU's answer cleaning, which this baseline is there to show."""
    from sslalm.demo.baselines import reference_caption_accuracy
    from sslalm.eval.embedders import HashingEmbedder

    root = _fake_corpus(tmp_path)
    labels = ["dog", "piano", "cat"]
    assert reference_caption_accuracy(root, "test", labels, HashingEmbedder()) == 100.0
    entries = json.loads((root / "test_cla.json").read_text())
    entries[1]["captions"][0] = "Piano: a C is held."
    (root / "test_cla.json").write_text(json.dumps(entries))
    assert reference_caption_accuracy(root, "test", labels, HashingEmbedder()) == 50.0


def test_share_answers_copies_predictions_with_the_other_references(tmp_path):
    src, dst = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    rows = [
        {"audio_id": i, "prompt": "p", "prediction": f"ans {i}", "references": ["lab"], "audio_path": i}
        for i in ("x", "y", "z")
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst.write_text(json.dumps({**rows[0], "prediction": "kept", "references": ["cap x"]}) + "\n")
    n = share_answers(src, dst, {"x": ("cap x",), "y": ("cap y", "cap y2")})
    assert n == 1  # x was already there, z is not in this benchmark
    got = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [(g["audio_id"], g["prediction"], g["references"]) for g in got] == [
        ("x", "kept", ["cap x"]),
        ("y", "ans y", ["cap y", "cap y2"]),
    ]


# ------------------------------------------------------------------------------------------- stage 0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from sslalm.demo.pretrain import record_texts
    from sslalm.tokenizer import build_byte_tokenizer

    path = tmp_path_factory.mktemp("tok")
    texts = record_texts(_records())
    return build_byte_tokenizer(texts, vocab_size=300, path=path), path


def _records():
    return [
        {"instruction": q, "input": "", "output": a, "audio_id": "x.wav", "task": "t"}
        for q, a in [
            ("Classify the sound.", "dog"),
            ("What is it?", "a piano note"),
            ("Describe the audio.", "A dog barks twice."),
        ]
    ] * 4


@pytest.mark.parametrize("lm_type", ["mamba", "hf"])
def test_pretrained_language_model_loads_as_the_lalm_base(tmp_path, tokenizer, lm_type):
    from sslalm.demo.pretrain import pretrain_language_model
    from sslalm.models.lalm import SSLALM, SSLALMConfig

    tok, tok_dir = tokenizer
    recipe = sslalm_recipe() if lm_type == "mamba" else transformer_recipe(256)
    lm_config = {
        **recipe.lm_config,
        **({"hidden_size": 16, "intermediate_size": 32} if lm_type == "hf" else {"d_model": 16}),
    }
    metrics = pretrain_language_model(
        lm_type, lm_config, tok, _records(), tmp_path / "lm", max_steps=3, batch_size=4, progress=False
    )
    assert math.isfinite(metrics["train_loss"])
    config = SSLALMConfig.preset(
        recipe.preset,
        lm_type=lm_type,
        lm_config=lm_config,
        lm_checkpoint=str(tmp_path / "lm"),
        tokenizer=str(tok_dir),
    )
    model = SSLALM(config)
    base = model.lm.get_base_model()
    assert base.get_input_embeddings().weight.shape[0] % 8 == 0
    assert base.get_input_embeddings().weight.shape[0] >= len(tok)
    saved = load_file(tmp_path / "lm" / "model.safetensors")  # the trained weights are what the LALM uses
    key = next(k for k in saved if k.endswith(("embed_tokens.weight", "embeddings.weight")))
    assert torch.equal(base.get_input_embeddings().weight, saved[key])
    tags = {"x.wav": ["dog", "language: Polish"]}  # the same LM after its clips' true tag tokens
    pretrain_language_model(
        lm_type,
        lm_config,
        tok,
        _records(),
        tmp_path / "lm2",
        max_steps=3,
        batch_size=4,
        progress=False,
        clip_tags=tags,
        tag_names=["dog", "piano", "language: French", "language: Polish"],
    )
    saved = load_file(tmp_path / "lm2" / "model.safetensors")  # the LM alone, no wrapper or tagger keys
    assert set(saved) == set(load_file(tmp_path / "lm" / "model.safetensors"))


def test_stage_zero_text_follows_its_clips_true_tag_tokens(tokenizer):
    from sslalm.demo.pretrain import (
        TagPrefixCollator,
        TagPrefixedLM,
        TagPrefixedText,
        TextDataset,
        tag_targets,
    )
    from sslalm.models.lalm import SSLALMConfig, build_language_model
    from sslalm.models.tagger import TagTokens

    names = ["dog", "piano", "language: French", "language: Polish"]
    assert tag_targets(["dog", "language: Polish"], names).tolist() == [1, 0, 0, 1]
    assert tag_targets(["dog", "piano"], names).tolist() == [0.5, 0.5, 0.5, 0.5]  # no language: uniform
    tok, _ = tokenizer
    torch.manual_seed(0)
    lm = build_language_model(
        SSLALMConfig(
            lm_type="mamba", lm_config={**sslalm_recipe().lm_config, "d_model": 16, "vocab_size": "auto"}
        ),
        len(tok),
        None,
    )
    tagger = TagTokens(
        1,
        names,
        [tok.encode(" " + w, add_special_tokens=False) for w in ["dog", "piano", "French", "Polish"]],
    )
    model = TagPrefixedLM(lm, tagger)
    data = TagPrefixedText(
        TextDataset(_records()[:2], tok), [tag_targets(["dog"], names), tag_targets(["piano"], names)]
    )
    batch = TagPrefixCollator(tok.pad_token_id)([data[0], data[1]])
    assert batch["tag_probs"].shape == (2, 4)
    out = model(**batch)
    ids = batch["input_ids"]
    assert out.logits.shape[:2] == (2, 2 + ids.shape[1]) and torch.isfinite(out.loss)
    emb = lm.get_input_embeddings()
    dog = emb.weight[tok.encode(" dog", add_special_tokens=False)].mean(0)
    tokens = tagger.mix([batch["tag_probs"][:, c] for c in tagger.groups], emb)
    torch.testing.assert_close(tokens[0, 0], dog)  # the first clip's label token is the word "dog"
    with torch.no_grad():  # the text after the tags: what the LM reads when the tags come first
        mask = torch.cat([torch.ones(2, 2, dtype=torch.long), batch["attention_mask"]], 1)
        manual = lm(inputs_embeds=torch.cat([tokens, emb(ids)], 1), attention_mask=mask).logits
    torch.testing.assert_close(out.logits, manual)


@pytest.mark.parametrize("kind", ["dass", "ast"])
def test_pretrained_encoder_is_what_the_lalm_loads(tmp_path, kind, monkeypatch):
    import sslalm.demo.pretrain as pretrain
    from sslalm.demo.pretrain import pretrain_encoder
    from sslalm.models.lalm import SSLALM, SSLALMConfig, build_encoder

    trained = {}
    fit = pretrain._fit
    monkeypatch.setattr(
        pretrain, "_fit", lambda model, *a, **k: trained.update(model=model) or fit(model, *a, **k)
    )

    recipe = sslalm_recipe() if kind == "dass" else transformer_recipe(128)
    clips = []
    for i, labels in enumerate([["dog"], ["piano"], ["dog", "piano"]]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, np.random.default_rng(i).normal(0, 0.1, 16000 * 2).astype(np.float32), 16000)
        clips.append((str(path), labels))
    base = SSLALMConfig(encoder_type=recipe.encoder_type, encoder_config=recipe.encoder_config)
    encoder = build_encoder(base)
    pretrain_encoder(
        encoder,
        kind,
        clips,
        ["dog", "piano"],
        128,
        tmp_path / "enc",
        max_steps=2,
        batch_size=2,
        progress=False,
    )
    config = SSLALMConfig.preset(
        recipe.preset,
        encoder_config=recipe.encoder_config,
        encoder_checkpoint=str(tmp_path / "enc"),
        train_frames=128,
    )
    model = SSLALM(config)
    fbank = torch.randn(1, 128, 128)
    encoder.eval()
    model.encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(model.encoder.forward_features(fbank), encoder.forward_features(fbank))
    # the classifier head is saved beside it, and a model with tag tokens reads it from there
    head = load_file(tmp_path / "enc" / "tag_head.safetensors")
    assert head["weight"].shape == (2, encoder.hidden_size) and head["bias"].abs().sum() > 0
    for name, value in trained["model"].head.state_dict().items():  # the head as training left it
        torch.testing.assert_close(head[name], value, rtol=0, atol=0)
    tagged = SSLALM(
        dataclasses.replace(
            config,
            tag_names=["dog", "piano"],
            tag_pool="mean",
            tag_checkpoint=str(tmp_path / "enc" / "tag_head.safetensors"),
        )
    )
    torch.testing.assert_close(tagged.tagger.head.weight, head["weight"])
    assert tagged.num_audio_tokens(128) == model.num_audio_tokens(128) + 1
    if kind == "ast":
        return
    pretrain_encoder(  # with cepstral statistics, their standardisation is fitted and saved with the head
        build_encoder(base),
        kind,
        clips,
        ["dog", "piano"],
        128,
        tmp_path / "enc2",
        2,
        2,
        cepstra=3,
        progress=False,
    )
    head = load_file(tmp_path / "enc2" / "tag_head.safetensors")
    stats = trained["model"].cepstra
    assert head["weight"].shape == (2, encoder.hidden_size + stats.dim)
    torch.testing.assert_close(head["cepstra.scale"], stats.scale, rtol=0, atol=0)
    assert not torch.equal(stats.scale, torch.ones_like(stats.scale))  # fitted on the clips
    tagged = SSLALM(
        dataclasses.replace(
            config,
            tag_names=["dog", "piano"],
            tag_pool="mean",
            tag_cepstra=3,
            tag_checkpoint=str(tmp_path / "enc2" / "tag_head.safetensors"),
        )
    )
    torch.testing.assert_close(tagged.tagger.cepstra.shift, head["cepstra.shift"])


# ------------------------------------------------------------------------------------------- measurement


def test_peak_rss_tracks_allocations_after_the_reset():
    from sslalm.demo.measure import peak_rss, reset_peak_rss

    start = reset_peak_rss()
    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MB, touched
    assert peak_rss() >= start + 50
    del block


@pytest.mark.parametrize("preset", ["tiny-sslalm", "tiny-ltu"])
def test_decode_latency_runs_the_lm_step_and_matches_greedy_generation(preset):
    """The timed decode loop produces the same tokens as greedy ``generate`` (so it times real decoding)."""
    from sslalm.demo.measure import decode_latency
    from sslalm.models.lalm import SSLALM, SSLALMConfig

    torch.manual_seed(0)
    model = SSLALM(SSLALMConfig.preset(preset, train_frames=128, min_inference_frames=128)).eval()
    wave = torch.randn(16000)
    seconds, tokens = decode_latency(model, wave, "What is it?", 6)
    assert 0 < seconds < 5 and len(tokens) == 7
    eos = model.tokenizer.eos_token_id
    if eos in tokens:
        tokens = tokens[: tokens.index(eos)]
    text = model.generate([wave], ["What is it?"], max_new_tokens=7, do_sample=False, repetition_penalty=1.0)
    assert model.tokenizer.decode(tokens, skip_special_tokens=True).strip() == text[0]


# ------------------------------------------------------------------------------------------- report


def _results(models=("sslalm", "transformer")):
    def stage(name, n):
        return {
            "stage": name,
            "steps": n,
            "wall_s": 2.0,
            "cpu_s": 3.0,
            "losses": [[1, 2.0], [n, 1.0]],
            "metrics": {},
        }

    m = {
        k: {
            "title": k.upper(),
            "training": {
                "stages": [
                    stage("0: LM text", 5),
                    stage("0: encoder labels", 4),
                    stage("1: p", 3),
                    stage("2: all", 6),
                ],
                "wall_s": 8.0,
                "cpu_s": 12.0,
                "num_parameters": 250000,
                "parameters": {"encoder": 1000, "projector": 200, "lora": 30, "lm": 9000},
                "peak_rss_mb": 900.0,
                "start_rss_mb": 500.0,
            },
            "eval": {
                "accuracy": 40.0,
                "label_accuracy": 35.5,
                "captions": {"CIDEr-D": 80.1, "METEOR": 20.0},
                "captions_not_run": {"SPICE": "no jars"},
                "n_clips": 10,
                "embedder": "minilm",
                "unseen": {"accuracy": 21.5, "label_accuracy": 23.5, "n_clips": 8},
                "facts": {
                    "gender": {"n": 4, "correct": 3, "accuracy": 75.0},
                    "order": {"n": 2, "correct": 1, "accuracy": 50.0 if k == "sslalm" else 12.5},
                },
            },
            "latency": {"ttft_ms": 12.0, "per_token_ms": 0.5, "peak_rss_mb": 600.0, "start_rss_mb": 550.0},
            "answers": ["a dog"],
        }
        for k in models
    }
    return {
        "settings": {**QUICK.to_dict(), "seed": 0, "threads": 1, "workers": 1, "compare": len(models) > 1},
        "corpus": {
            "dir": "c",
            "clips": {"train": 8},
            "records": {"train": 40},
            "tasks": {},
            "sources": ["x"],
            "skipped_sources": {},
            "reused": False,
            "seconds": 1.0,
        },
        "chance": {
            "num_labels": 4,
            "uniform": 25.0,
            "majority": 30.0,
            "majority_label": "dog",
            "num_clips": 10,
        },
        "baselines": {
            "test": {
                "uniform": 25.0,
                "majority": 30.0,
                "majority_label": "dog",
                "linear_probe": 61.25,
                "reference_captions": 97.5,
            },
            "unseen": {"uniform": 10.0, "majority": 40.0, "majority_label": "piano", "linear_probe": 33.75},
        },
        "unseen": {"dir": "u", "clips": {"speech": 4, "instrument": 4}, "skipped": {}},
        "final_model": "runs/x/sslalm/stage4",
        "questions": [
            {
                "audio_id": "a.wav",
                "task": "cla_label",
                "question": "q?",
                "reference": "dog",
                "answers": {k: "a dog" for k in models},
            }
        ],
        "models": m,
        "machine": {"cpus": 2, "threads": 1, "load_before": [1, 1, 1], "load_after": [2, 2, 2], "torch": "x"},
        "total_s": 60.0,
    }


def test_report_plot_and_table_from_results(tmp_path):
    from sslalm.demo.report import console_table, write_outputs

    paths = write_outputs(_results(), tmp_path)
    text = paths["report"].read_text()
    assert "| accuracy, paper prompt" in text and "SSLALM" in text and "TRANSFORMER" in text
    assert "![training loss](loss.png)" in text
    assert paths["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["results"].read_text())["chance"]["majority"] == 30.0
    table = console_table(_results(("sslalm",)))
    assert "40.0" in table and "n/r" in table  # SPICE did not run
    assert "0.250 / 0.001" in table  # total / trainable parameters in millions
    assert "21.5 / 23.5" in table  # the unseen-sources set beside the test split


def test_report_has_baselines_fact_table_and_ends_with_the_model_commands(tmp_path):
    from sslalm.demo.report import baseline_rows, console_table, fact_rows, write_outputs

    results = _results()
    text = write_outputs(results, tmp_path)["report"].read_text()
    header, rows = baseline_rows(results)
    assert header == ["", "test split (%)", "unseen sources (%)"]
    assert rows[1] == ["majority answer", "30.0 (dog)", "40.0 (piano)"]
    assert rows[2] == ["linear probe on fbank statistics", "61.2", "33.8"]
    assert rows[3] == ["reference captions, paper-prompt protocol (its ceiling)", "97.5", "n/r"]
    assert rows[4][1:] == ["40.0 / 35.5", "21.5 / 23.5"]
    header, rows = fact_rows(results)
    assert header[1:] == ["questions", "SSLALM (%)", "TRANSFORMER (%)"]
    assert rows == [["gender", "4", "75.0", "75.0"], ["order", "2", "50.0", "12.5"]]
    assert "| linear probe on fbank statistics | 61.2 | 33.8 |" in text
    assert "| order | 2 | 50.0 | 12.5 |" in text
    end = text.rstrip().splitlines()[-3:]
    assert end == [
        "sslalm app --model runs/x/sslalm/stage4",
        "sslalm serve --model runs/x/sslalm/stage4",
        "```",
    ]
    assert "unseen sources" in console_table(results, baseline_rows)


# ------------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_quick_demo_learns_and_writes_its_report(tmp_path, capsys):
    """The CI check that the pipeline learns: ``sslalm demo --quick`` beats the best constant answer (and
    uniform chance) on the test split by a clear margin, and writes its report, plot and results."""
    from sslalm.cli import main

    out = tmp_path / "demo"
    rc = main(
        [
            "demo",
            "--quick",
            "--out",
            str(out),
            "--corpus",
            str(tmp_path / "corpus"),
            "--threads",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "a few test questions" in printed and "results on the test split" in printed
    for name in ("report.md", "loss.png", "results.json"):
        assert (out / name).is_file()
    results = json.loads((out / "results.json").read_text())
    chance = results["chance"]
    ev = results["models"]["sslalm"]["eval"]
    assert ev["n_clips"] == chance["num_clips"] > 0
    assert set(ev["captions"]) >= {"CIDEr-D", "BLEU-4", "ROUGE-L"}
    lat = results["models"]["sslalm"]["latency"]
    assert lat["ttft_ms"] > 0 and lat["per_token_ms"] > 0 and lat["peak_rss_mb"] > 0
    stages = [s["stage"][:2] for s in results["models"]["sslalm"]["training"]["stages"]]
    assert stages == ["0:", "0:", "1:", "2:", "3:", "4:"]
    assert ev["accuracy"] >= 3 * chance["uniform"], (ev, chance)
    assert ev["accuracy"] >= chance["majority"] + QUICK_MARGIN, (ev, chance)
    base = results["baselines"]
    assert 0 < base["test"]["linear_probe"] <= 100 and 0 < base["unseen"]["linear_probe"] <= 100
    assert 90 <= base["test"]["reference_captions"] <= 100  # captions the protocol can read
    assert ev["unseen"]["n_clips"] == base["unseen"]["num_clips"] > 0
    assert {"gender", "language", "instrument family", "count", "order"} <= set(ev["facts"])
    assert all(f["n"] > 0 for f in ev["facts"].values())
    final = results["final_model"]
    assert final.endswith("stage4") and (Path(final) / "config.json").is_file()
    assert printed.rstrip().endswith(f"sslalm serve --model {final}")
    assert f"sslalm app --model {final}" in (out / "report.md").read_text()


# points over the most frequent label: the target (docs/demo.md); measured +28.8 with the test's settings
# (52 clips, 1 thread; session 12's recipe, again with session 13's time-major DASS and with session 14's
# code, whose quick schedule keeps tag tokens off: +23.1 with them), four clips above it
QUICK_MARGIN = 20.0


def test_report_names_the_kernel_compile_apart_from_training(tmp_path):
    from sslalm.demo.report import write_outputs

    results = _results()
    assert "the CPU scan kernels were compiled" not in write_outputs(results, tmp_path)["report"].read_text()
    results["models"]["sslalm"]["training"]["kernel_compile_s"] = 9.84
    results["models"]["transformer"]["training"]["kernel_compile_s"] = 0.0
    text = write_outputs(results, tmp_path)["report"].read_text()
    (note,) = [line for line in text.splitlines() if "the CPU scan kernels were compiled" in line]
    assert "SSLALM 9.8 s" in note and "TRANSFORMER" not in note  # no compile, no mention
