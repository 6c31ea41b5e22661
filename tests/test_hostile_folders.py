"""Model folders under hostile conditions: moved, copied, incomplete, damaged, unreadable, run from a working
directory that holds another model's parts. Each case must load from the folder alone or name the problem."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from sslalm.errors import UserError
from sslalm.models.lalm import SSLALM, SSLALMConfig
from sslalm.models.loading import ModelFolderError


def _tiny(seed: int) -> SSLALM:
    torch.manual_seed(seed)
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm"))
    with torch.no_grad():  # non-trivial adapters, so that two models answer differently
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    return model.eval()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> dict[str, Path]:
    """Two saved tiny models with different random base LMs (built once; tests work on copies)."""
    root = tmp_path_factory.mktemp("pristine")
    for name, seed in (("a", 0), ("b", 1)):
        _tiny(seed).save_pretrained(root / name)
    return {"a": root / "a", "b": root / "b"}


def _copy(pristine, name: str, dst: Path) -> Path:
    shutil.copytree(pristine[name], dst)
    return dst


def _logits(model: SSLALM) -> torch.Tensor:
    torch.manual_seed(5)
    fbank = torch.randn(1, 128, 128)
    ids = torch.randint(2, 200, (1, 6))
    with torch.no_grad():
        return model(fbank, ids).logits


@pytest.mark.parametrize("part", ["base_lm", "tokenizer"])
def test_a_missing_part_is_named_and_never_taken_from_the_working_directory(
    pristine, tmp_path, part, monkeypatch
):
    """Old behaviour: a folder without base_lm/ loaded the one in the cwd and answered with that model."""
    folder = _copy(pristine, "a", tmp_path / "a")
    shutil.rmtree(folder / part)
    monkeypatch.chdir(_copy(pristine, "b", tmp_path / "b"))  # holds another model's base_lm/ and tokenizer/
    assert Path(part).is_dir()
    with pytest.raises(ModelFolderError, match=rf"model folder {folder} is incomplete: .*'{part}'"):
        SSLALM.from_pretrained(folder)


def test_a_moved_run_folder_still_loads(pristine, tmp_path):
    """A stage saved from a loaded model (init_from) used to point at the first folder's base_lm by absolute
    path; moving the run folder broke it. Now the base LM comes along (hard-linked) and is stored relative."""
    run = tmp_path / "runs"
    first = _copy(pristine, "a", run / "stage1")
    SSLALM.from_pretrained(first).save_pretrained(run / "stage2")
    saved = json.loads((run / "stage2" / "config.json").read_text())
    assert saved["lm_checkpoint"] == "base_lm" and saved["tokenizer"] == "tokenizer"
    expected = _logits(SSLALM.from_pretrained(run / "stage2"))
    moved = tmp_path / "elsewhere"
    run.rename(moved)
    torch.testing.assert_close(_logits(SSLALM.from_pretrained(moved / "stage2")), expected)
    shutil.rmtree(moved / "stage1")  # the second stage does not need the first one either
    torch.testing.assert_close(_logits(SSLALM.from_pretrained(moved / "stage2")), expected)


def test_external_base_lm_pointer_absolute_outside_relative_inside_and_named_when_gone(tmp_path, monkeypatch):
    """A large checkpoint on another filesystem (simulated) is pointed at by absolute path."""
    from sslalm.models import folder
    from sslalm.models.mamba import MambaConfig, MambaLM

    lm = MambaLM(MambaConfig(d_model=64, n_layer=2, vocab_size=264))
    lm.save_pretrained(tmp_path / "pretrained")
    config = SSLALMConfig.preset("tiny-sslalm", lm_checkpoint=str(tmp_path / "pretrained"))
    model = SSLALM(config)
    monkeypatch.setattr(folder, "can_bring_along", lambda source, into: False)
    model.save_pretrained(tmp_path / "outside")
    monkeypatch.undo()
    assert json.loads((tmp_path / "outside" / "config.json").read_text())["lm_checkpoint"] == str(
        (tmp_path / "pretrained").resolve()
    )
    inside = tmp_path / "inside"
    lm.save_pretrained(inside / "my_lm")
    SSLALM(SSLALMConfig.preset("tiny-sslalm", lm_checkpoint=str(inside / "my_lm"))).save_pretrained(inside)
    assert json.loads((inside / "config.json").read_text())["lm_checkpoint"] == "my_lm"
    inside.rename(tmp_path / "inside_moved")
    SSLALM.from_pretrained(tmp_path / "inside_moved")
    shutil.rmtree(tmp_path / "pretrained")
    with pytest.raises(
        ModelFolderError,
        match=r"base language model \(lm_checkpoint\) .*outside the model folder\) does not exist",
    ):
        SSLALM.from_pretrained(tmp_path / "outside")


def test_a_run_whose_stages_share_a_pretrained_lm_still_loads_when_moved(tmp_path):
    """The demo's layout: every stage starts from one stand-in LM folder beside the stages. Each stage folder
    takes the LM into its own base_lm/ (hard links on one filesystem), so the moved run still loads."""
    from sslalm.models.mamba import MambaConfig, MambaLM

    run = tmp_path / "run"
    MambaLM(MambaConfig(d_model=64, n_layer=2, vocab_size=264)).save_pretrained(run / "stage0_lm")
    model = SSLALM(SSLALMConfig.preset("tiny-sslalm", lm_checkpoint=str(run / "stage0_lm"))).eval()
    model.save_pretrained(run / "stage1")
    SSLALM.from_pretrained(run / "stage1").save_pretrained(run / "stage2")
    for stage in ("stage1", "stage2"):
        assert json.loads((run / stage / "config.json").read_text())["lm_checkpoint"] == "base_lm"
    linked = run / "stage2" / "base_lm" / "model.safetensors"
    assert os.path.samefile(linked, run / "stage0_lm" / "model.safetensors")  # no extra disk
    run.rename(tmp_path / "moved")
    shutil.rmtree(tmp_path / "moved" / "stage0_lm")
    reloaded = SSLALM.from_pretrained(tmp_path / "moved" / "stage2")
    wav = torch.sin(torch.arange(16000) / 7.0)
    assert reloaded.ask(wav, "what?", do_sample=False, max_new_tokens=4) == model.ask(
        wav, "what?", do_sample=False, max_new_tokens=4
    )


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_weight_files_get_the_same_permissions_as_the_rest(tmp_path, umask):
    """safetensors creates its files 0600: another user (a service account) could not read the weights."""
    old = os.umask(umask)
    try:
        _tiny(0).save_pretrained(tmp_path / "m")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    files = [p for p in (tmp_path / "m").rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" and p.parent.name == "base_lm" for p in files)
    modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(want)}, modes


def test_invalid_json_is_named_with_its_line(pristine, tmp_path):
    folder = _copy(pristine, "a", tmp_path / "a")
    (folder / "config.json").write_text('{\n  "encoder_type": "dass",\n  oops\n}')
    with pytest.raises(UserError, match=r"config\.json is not valid JSON: .* line 3"):
        SSLALM.from_pretrained(folder)
    folder = _copy(pristine, "a", tmp_path / "b")
    (folder / "tokenizer" / "tokenizer.json").write_text("{ not json")
    with pytest.raises(UserError, match=r"tokenizer/tokenizer\.json is not valid JSON: .* line 1"):
        SSLALM.from_pretrained(folder)
    folder = _copy(pristine, "a", tmp_path / "c")
    (folder / "base_lm" / "config.json").write_text("[1, 2")
    with pytest.raises(UserError, match=r"base_lm/config\.json is not valid JSON"):
        SSLALM.from_pretrained(folder)


def test_empty_config_is_refused_before_building_anything(pristine, tmp_path):
    """``{}`` used to start building a default 2.8B model until memory ran out."""
    folder = _copy(pristine, "a", tmp_path / "a")
    (folder / "config.json").write_text("{}")
    with pytest.raises(
        UserError, match=r"config\.json: missing required field\(s\): encoder_type, encoder_config"
    ):
        SSLALM.from_pretrained(folder)
    config = json.loads((pristine["a"] / "config.json").read_text())
    del config["encoder_config"]["depths"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=r"encoder_config: missing required field\(s\): depths"):
        SSLALM.from_pretrained(folder)


def test_truncated_and_non_finite_weights_are_named(pristine, tmp_path):
    folder = _copy(pristine, "a", tmp_path / "a")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(
        UserError, match=rf"{weights} is not a readable safetensors file .*truncated or corrupt"
    ):
        SSLALM.from_pretrained(folder)
    state = load_file(pristine["a"] / "model.safetensors")
    name = sorted(state)[3]
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, weights)
    with pytest.raises(UserError, match=rf"tensor '{name}' holds \d+ NaN or infinite"):
        SSLALM.from_pretrained(folder)
    base = folder / "base_lm" / "model.safetensors"
    shutil.copy(pristine["a"] / "model.safetensors", weights)
    lm_state = load_file(base)
    key = sorted(lm_state)[0]
    lm_state[key] = lm_state[key].clone().fill_(float("inf"))
    save_file(lm_state, base)
    with pytest.raises(UserError, match=rf"base_lm/model\.safetensors: tensor '{key}'"):
        SSLALM.from_pretrained(folder)


def test_missing_tokenizer_names_the_folder_not_huggingface(tmp_path):
    from sslalm.tokenizer import load_tokenizer

    with pytest.raises(UserError, match=rf"tokenizer folder {tmp_path / 'nope'} does not exist"):
        load_tokenizer(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=rf"cannot load a tokenizer from {tmp_path / 'empty'}") as err:
        load_tokenizer(tmp_path / "empty")
    assert "huggingface.co" not in str(err.value)


def test_unreadable_files_are_named(pristine, tmp_path, monkeypatch):
    folder = _copy(pristine, "a", tmp_path / "a")
    real = Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "config.json" and self.parent == folder:
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", denied)
    with pytest.raises(UserError, match=rf"cannot read {folder / 'config.json'}: permission denied"):
        SSLALM.from_pretrained(folder)
    monkeypatch.undo()
    # as another user: safetensors itself reports an unreadable file as "No such file or directory"
    real_access = os.access
    weights = folder / "model.safetensors"
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != weights and real_access(p, mode, **kw))
    with pytest.raises(UserError, match=rf"cannot read {weights}: permission denied"):
        SSLALM.from_pretrained(folder)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads any file")
def test_unreadable_weights_are_named(pristine, tmp_path):
    folder = _copy(pristine, "a", tmp_path / "a")
    os.chmod(folder / "model.safetensors", 0)
    with pytest.raises(UserError, match=r"model\.safetensors: permission denied"):
        SSLALM.from_pretrained(folder)


def test_weights_from_another_model_are_refused_naming_both_files(pristine, tmp_path):
    folder = _copy(pristine, "a", tmp_path / "a")
    state = load_file(folder / "model.safetensors")
    state["encoder.extra"] = torch.zeros(1)
    save_file(state, folder / "model.safetensors")
    with pytest.raises(ModelFolderError, match=r"does not match .*config\.json"):
        SSLALM.from_pretrained(folder)


def test_relative_paths_may_not_leave_the_folder(pristine, tmp_path, monkeypatch):
    folder = _copy(pristine, "a", tmp_path / "models" / "a")
    _copy(pristine, "b", tmp_path / "models" / "b")
    config = json.loads((folder / "config.json").read_text())
    config["lm_checkpoint"] = "../b/base_lm"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match=r"'../b/base_lm' leaves the folder"):
        SSLALM.from_pretrained(folder)


def test_non_finite_transformers_base_lm_is_named(tmp_path):
    torch.manual_seed(0)
    SSLALM(SSLALMConfig.preset("tiny-hybrid")).save_pretrained(tmp_path / "h")
    base = tmp_path / "h" / "base_lm" / "model.safetensors"
    state = load_file(base)
    key = next(k for k in sorted(state) if k.endswith("mlp.up_proj.weight"))
    state[key] = state[key].clone()
    state[key][0, 0] = float("nan")
    save_file(state, base, metadata={"format": "pt"})
    with pytest.raises(
        UserError, match=r"base language model .*base_lm: tensor '.*mlp\.up_proj.*' holds 1 NaN"
    ):
        SSLALM.from_pretrained(tmp_path / "h")


def test_saving_over_another_models_folder_replaces_its_base_lm(pristine, tmp_path):
    target = _copy(pristine, "b", tmp_path / "target")  # holds model b's base LM
    loaded = SSLALM.from_pretrained(pristine["a"])
    expected = _logits(loaded)
    loaded.save_pretrained(target)
    torch.testing.assert_close(_logits(SSLALM.from_pretrained(target)), expected)
    assert (target / "base_lm" / "model.safetensors").stat().st_ino == (
        pristine["a"] / "base_lm" / "model.safetensors"
    ).stat().st_ino  # hard-linked, not copied
