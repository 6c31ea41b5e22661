"""Hostile settings and configs: every one is refused with one clear line that names the field or file.

Covers the config schemas (model, encoder, LM, stage), generation settings through the Python API and
``sslalm ask``, the CLI's one-line errors (exit 2; ``--debug`` keeps the traceback), the audio duration and
sample-rate limits, and ``--resume`` verifying checkpoints.
"""

from __future__ import annotations

import io
import json
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from sslalm.audio import AudioError, load_audio
from sslalm.cli import main
from sslalm.errors import UserError
from sslalm.generation_settings import MAX_AUDIO_SECONDS, GenerationSettingsError
from sslalm.models.lalm import SSLALM
from sslalm.models.lalm_config import SSLALMConfig
from sslalm.schema import ConfigError

# ---- config schemas ----------------------------------------------------------------------------------------


def _tiny_dict() -> dict:
    return SSLALMConfig.preset("tiny-sslalm").to_dict()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lora_r": "eight"}, r"^lora_r must be an integer >= 1 and <= 4096, got 'eight' \(text\)"),
        ({"min_inference_frames": "1024"}, r"^min_inference_frames must be an integer .*got '1024' \(text\)"),
        ({"encoder_config": "small"}, r"^encoder_config must be a mapping, got 'small'"),
        ({"lm_config": [1, 2]}, r"^lm_config must be a mapping"),
        ({"lora_dropout": float("nan")}, r"^lora_dropout must be a number"),
        ({"encoder_type": "whisper"}, r"^encoder_type must be one of 'ast', 'dass'"),
        ({"lora_target_modules": []}, r"^lora_target_modules must be a non-empty list"),
        ({"train_lm": "yes"}, r"^train_lm must be true or false"),
        ({"lorar": 8}, r"^unknown field 'lorar' \(did you mean 'lora_r'\?\)"),
        ({"tag_fact_temperature": 0}, r"^tag_fact_temperature must be a number > 0 and <= 100 \(or null\)"),
    ],
)
def test_model_config_fields_are_typed_and_ranged(change, message):
    data = {**_tiny_dict(), **change}
    with pytest.raises(ConfigError, match=message):
        SSLALMConfig.from_dict(data)


@pytest.mark.parametrize(
    "where, change, message",
    [
        ("lm_config", {"n_layerr": 3}, r"^lm_config: unknown field 'n_layerr' \(did you mean 'n_layer'\?\)"),
        ("lm_config", {"d_model": -4}, r"^lm_config: d_model must be an integer >= 1"),
        ("lm_config", {"norm_eps": "tiny"}, r"^lm_config: norm_eps must be a number"),
        (
            "encoder_config",
            {"depthz": [1]},
            r"^encoder_config: unknown field 'depthz' \(did you mean 'depths'",
        ),
        (
            "encoder_config",
            {"dims": [8, "x", 32, 64]},
            r"^encoder_config: dims must be a non-empty list of integers",
        ),
        ("encoder_config", {"drop_path_rate": 2.0}, r"^encoder_config: drop_path_rate must be a number"),
    ],
)
def test_nested_encoder_and_lm_configs_are_checked(where, change, message):
    data = _tiny_dict()
    data[where].update(change)
    with pytest.raises(ConfigError, match=message):
        SSLALMConfig.from_dict(data)


def test_hf_lm_config_keys_are_checked():
    data = SSLALMConfig.preset("tiny-hybrid").to_dict()
    SSLALMConfig.from_dict(data)
    data["lm_config"]["num_hidden_layerz"] = 2
    with pytest.raises(
        ConfigError, match=r"lm_config: unknown field 'num_hidden_layerz'.*'num_hidden_layers'"
    ):
        SSLALMConfig.from_dict(data)
    data = SSLALMConfig.preset("tiny-hybrid").to_dict()
    data["lm_config"]["hidden_size"] = "64"
    with pytest.raises(ConfigError, match=r"lm_config: hidden_size must be an integer"):
        SSLALMConfig.from_dict(data)


def test_python_constructors_validate_too():
    from sslalm.models.dass import DASSConfig
    from sslalm.models.mamba_config import MambaConfig

    with pytest.raises(ConfigError, match="lora_r must be an integer"):
        SSLALMConfig.preset("tiny-sslalm", lora_r="eight")
    with pytest.raises(ConfigError, match="n_layer must be an integer >= 1"):
        MambaConfig(n_layer=0)
    with pytest.raises(ConfigError, match="unknown field 'dimz'"):
        DASSConfig.from_dict({"dimz": [1]})
    with pytest.raises(ConfigError, match="dt_rank must be an integer or 'auto'"):
        DASSConfig(dt_rank="big")
    assert isinstance(ConfigError("x"), ValueError)  # code that caught ValueError still does


# ---- stage config ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change, message",
    [
        ({"max_steps": -5, "num_train_epochs": 0}, r"max_steps must be a positive number of steps, or -1"),
        ({"max_steps": -1, "num_train_epochs": 0}, r"this schedule trains zero steps"),
        ({"num_train_epochs": -2}, r"num_train_epochs must be a number >= 0"),
        ({"learning_rate": float("nan")}, r"learning_rate must be a number > 0"),
        ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size must be an integer >= 1"),
        ({"save_steps": 2.5}, r"save_steps must be an integer"),
        ({"model_overrides": {"lora_rr": 4}}, r"model_overrides: unknown field 'lora_rr'"),
        ({"bf16": "maybe"}, r"bf16 must be true, false or auto"),
    ],
)
def test_stage_config_ranges(tmp_path, change, message):
    from sslalm.train import load_config

    with pytest.raises(ConfigError, match=message):
        load_config(None, {"output_dir": str(tmp_path), **change})


def test_stage_model_overrides_are_validated_before_building(tmp_path):
    """A typo inside lm_config used to train and be stored in the model."""
    from sslalm.train import build_model, load_config

    cfg = load_config(
        None,
        {
            "output_dir": str(tmp_path),
            "model": "tiny-sslalm",
            "model_overrides": {"lm_config": {"n_layerr": 3}},
        },
    )
    with pytest.raises(ConfigError, match=r"model_overrides: lm_config: unknown field 'n_layerr'"):
        build_model(cfg)
    cfg = load_config(
        None, {"output_dir": str(tmp_path), "model": "tiny-sslalm", "model_overrides": {"lora_r": "eight"}}
    )
    with pytest.raises(ConfigError, match="model_overrides: lora_r must be an integer"):
        build_model(cfg)


def test_train_command_prints_one_line_for_a_zero_step_schedule(tmp_path, capsys):
    config = tmp_path / "stage.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nmax_steps: -5\nnum_train_epochs: 0\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_steps" in err and str(config) in err
    assert not (tmp_path / "out").exists()
    config.write_text("output_dir: x\nlearning_rate: [oops\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config} is not valid YAML at line " in err and len(err.strip().splitlines()) == 1


# ---- generation settings -----------------------------------------------------------------------------------


def test_generation_config_validates_through_the_shared_table():
    from sslalm.generate import GenerationConfig

    for bad in (
        {"temperature": float("nan")},
        {"top_p": 5},
        {"max_new_tokens": -5},
        {"repetition_penalty": 0},
    ):
        with pytest.raises(GenerationSettingsError, match=next(iter(bad))):
            GenerationConfig(**bad)
    tiny = GenerationConfig(temperature=1e-300)  # dividing logits by it overflowed into NaN
    assert tiny.greedy and tiny.temperature == 0.0
    with pytest.raises(GenerationSettingsError, match="eos_token_id"):
        GenerationConfig(eos_token_id=-1)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from sslalm.models.lalm import SSLALM

    folder = tmp_path_factory.mktemp("tiny") / "model"
    torch.manual_seed(0)
    SSLALM(SSLALMConfig.preset("tiny-sslalm")).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "tone.wav"
    t = np.arange(32000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


def test_python_api_ask_refuses_nan_temperature(tiny_folder, tone):
    from sslalm.models.lalm import SSLALM

    model = SSLALM.from_pretrained(tiny_folder)
    with pytest.raises(UserError, match="temperature must be a number"):
        model.ask(str(tone), "What is it?", temperature=float("nan"))
    # a vanishing temperature is greedy, not NaN
    greedy = model.ask(str(tone), "What is it?", do_sample=False, max_new_tokens=3)
    assert model.ask(str(tone), "What is it?", temperature=1e-300, max_new_tokens=3) == greedy


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--temperature", "nan"], "temperature must be a number"),
        (["--temperature", "-3"], "temperature must be >= 0.0"),
        (["--top-p", "5"], "top_p must be > 0.0 and <= 1.0"),
        (["--question", ""], "the question is empty"),
        (["--max-new-tokens", "-5"], "max_new_tokens must be >= 1"),
        (["--repetition-penalty", "0"], "repetition_penalty must be >= 0.01"),
        (["--top-k", "many"], "top_k must be an integer"),
    ],
)
def test_ask_refuses_bad_settings_in_one_line(tiny_folder, tone, capsys, flags, message):
    args = ["ask", "--model", str(tiny_folder), "--audio", str(tone), "--question", "What?", *flags]
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err


def test_model_folder_errors_are_one_line_and_debug_shows_the_traceback(tmp_path, tone, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    args = ["ask", "--model", str(tmp_path / "m"), "--audio", str(tone), "--question", "What?"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sslalm ask: error: ") and "config.json: missing required field(s)" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(ConfigError):
        main(["--debug", *args])


def test_eval_loads_through_the_same_checks(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text('{"encoder_type": "dass",')
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    from sslalm.models.loading import load_model

    with pytest.raises(UserError, match=r"config\.json is not valid JSON: .* line 1"):
        load_model(str(tmp_path / "m"))


# ---- audio limits ------------------------------------------------------------------------------------------


def _wav_claiming(rate: int, seconds_of_data: float = 0.125) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(8000 * seconds_of_data), np.int16), 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[24:28] = struct.pack("<I", rate)  # sample rate
    data[28:32] = struct.pack("<I", rate * 2)  # byte rate
    return bytes(data)


@pytest.mark.parametrize("rate", [1, 999, 400_000])
def test_absurd_header_rates_are_refused(rate):
    """A 2 kB WAV whose header claims 1 Hz decoded to 1,000 s of audio."""
    with pytest.raises(AudioError, match=rf"claims a sample rate of {rate} Hz"):
        load_audio(_wav_claiming(rate))
    assert load_audio(_wav_claiming(8000)).numel() == 2000


def test_duration_limit_is_checked_from_the_header_and_names_the_flag(tmp_path, tiny_folder, capsys):
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(16000 * 3, np.float32), 16000)
    with pytest.raises(
        AudioError, match=r"is 3.0 s long; the limit is 2 s \(raise it with --max-audio-seconds\)"
    ):
        load_audio(long, max_seconds=2, limit_hint="--max-audio-seconds")
    assert load_audio(long, max_seconds=3).numel() == 48000
    args = ["ask", "--model", str(tiny_folder), "--audio", str(long), "--question", "What?"]
    assert main([*args, "--max-audio-seconds", "2"]) == 2
    assert "the limit is 2 s (raise it with --max-audio-seconds)" in capsys.readouterr().err


def test_ask_shares_the_servers_default_duration_limit():
    import argparse

    from sslalm.inference import add_arguments
    from sslalm.serve.service import ServeLimits

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--model", "m", "--audio", "a", "--question", "q"])
    assert args.max_audio_seconds == MAX_AUDIO_SECONDS == ServeLimits().max_audio_seconds == 600


def test_random_bytes_named_mp3_are_not_decodable_audio(tmp_path):
    path = tmp_path / "song.mp3"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="not decodable audio") as err:
        load_audio(path)
    assert "does not exist" not in str(err.value)
    assert isinstance(err.value, UserError) and isinstance(err.value, ValueError)


# ---- --resume verifies checkpoints -------------------------------------------------------------------------


def _checkpoint(folder: Path, step: int, **damage) -> Path:
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    weights = {"projector.w": torch.randn(4, 4)}
    if damage.get("nan"):
        weights["projector.w"][0, 0] = math.nan
    save_file(weights, path / "model.safetensors")
    if damage.get("truncate"):
        data = (path / "model.safetensors").read_bytes()
        (path / "model.safetensors").write_bytes(data[:-7])
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    if not damage.get("no_optimizer"):
        torch.save({"state": {0: {"exp_avg": torch.randn(64)}}}, path / "optimizer.pt")
    if damage.get("corrupt_optimizer"):
        data = bytearray((path / "optimizer.pt").read_bytes())
        middle = len(data) // 2
        data[middle : middle + 16] = b"\x00" * 16
        (path / "optimizer.pt").write_bytes(bytes(data))
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    return path


@pytest.mark.parametrize(
    "damage, reason",
    [
        ({"truncate": True}, "its weights do not load"),
        ({"nan": True}, "NaN or infinite"),
        ({"no_optimizer": True}, "it has no optimizer.pt"),
        ({"corrupt_optimizer": True}, "optimizer.pt is"),
    ],
)
def test_resume_falls_back_to_the_newest_complete_checkpoint(tmp_path, caplog, damage, reason):
    from sslalm.train import checkpoint_problem, last_checkpoint

    good = _checkpoint(tmp_path, 2)
    bad = _checkpoint(tmp_path, 4, **damage)
    assert checkpoint_problem(good) is None
    assert reason in checkpoint_problem(bad)
    with caplog.at_level(logging.WARNING, logger="sslalm.train"):
        assert last_checkpoint(tmp_path) == str(good)
    assert f"skipping checkpoint {bad}: " in caplog.text and reason in caplog.text
    assert f"resuming from {good}, the newest complete checkpoint" in caplog.text


def test_resume_from_a_named_broken_checkpoint_says_why_and_which_to_use(tmp_path):
    from sslalm.train import load_config, train

    good = _checkpoint(tmp_path / "out", 2)
    bad = _checkpoint(tmp_path / "out", 4, truncate=True)
    cfg = load_config(None, {"output_dir": str(tmp_path / "out"), "resume": str(bad)})
    with pytest.raises(
        UserError, match=rf"cannot resume from {bad}: its weights .*newest complete one is {good}"
    ):
        train(cfg)


# ---- sslalm eval shares the checks ------------------------------------------------------------------------


def test_eval_refuses_bad_generation_settings_before_answering(tmp_path, capsys):
    import argparse

    from sslalm.eval.runner import add_arguments, run_cli

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(tmp_path / "run"), "--temperature", "nan", "--data-root", "x"])
    assert run_cli(args) == 2
    assert "temperature must be a number" in capsys.readouterr().out
    assert args.max_audio_seconds == MAX_AUDIO_SECONDS


def test_eval_duration_limit_fails_the_long_clip_and_names_the_flag(tmp_path):
    from sslalm.inference import DurationLimited

    class Echo:
        def generate(self, audios, prompts, **kw):
            return [f"{a.numel()} samples" for a in audios]

    short, long = tmp_path / "short.wav", tmp_path / "long.wav"
    sf.write(short, np.zeros(16000, np.float32), 16000)
    sf.write(long, np.zeros(16000 * 3, np.float32), 16000)
    model = DurationLimited(Echo(), 2.0)
    assert model.generate([str(short), torch.zeros(99)], ["q", "q"]) == ["16000 samples", "99 samples"]
    with pytest.raises(AudioError, match=r"the limit is 2 s \(raise it with --max-audio-seconds\)"):
        model.generate([str(long)], ["q"])


def test_training_arguments_and_data_files_are_user_errors(tmp_path):
    from sslalm.train import build_dataset, load_config, training_arguments

    cfg = load_config(None, {"output_dir": str(tmp_path), "training_args": {"gradient_checkpointin": True}})
    with pytest.raises(ConfigError, match="training arguments: .*gradient_checkpointin"):
        training_arguments(cfg)
    cfg = load_config(None, {"output_dir": str(tmp_path), "lr_scheduler_type": "cosinee"})
    with pytest.raises(ConfigError, match="training arguments: cosinee is not a valid"):
        training_arguments(cfg)

    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    cfg = load_config(None, {"output_dir": str(tmp_path), "train_files": [str(tmp_path / "nope.json")]})
    with pytest.raises(UserError, match="cannot read data file .*nope.json"):
        build_dataset(cfg, model)


@pytest.mark.parametrize("command", ["serve", "app"])
def test_serve_and_app_refuse_a_bad_model_folder_in_one_line(tmp_path, capsys, command):
    if command == "app":
        pytest.importorskip("gradio")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({**_tiny_dict(), "lora_r": "eight"}))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"")
    assert main([command, "--model", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("config.json: lora_r must be an integer >= 1 and <= 4096, got 'eight' (text)"), err
