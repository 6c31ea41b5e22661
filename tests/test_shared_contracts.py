"""The shared user-facing contracts: generation settings table and the model-folder loader."""

from __future__ import annotations

import math

import pytest

from sslalm.errors import UserError
from sslalm.generation_settings import (
    GENERATION_FIELDS,
    GenerationSettingsError,
    generation_defaults,
    validate_generation,
    validate_question,
)
from sslalm.models.loading import ModelFolderError, check_model_folder, find_model_folders


def test_defaults_are_the_papers_sampling():
    d = generation_defaults()
    assert (d["temperature"], d["top_k"], d["top_p"], d["repetition_penalty"]) == (0.1, 500, 0.95, 1.1)
    assert d["seed"] is None and set(d) == set(GENERATION_FIELDS)


@pytest.mark.parametrize(
    "name,value",
    [
        ("temperature", math.nan),
        ("temperature", -3),
        ("temperature", "hot"),
        ("top_p", 5),
        ("top_p", 0),
        ("max_new_tokens", -5),
        ("max_new_tokens", 2.5),
        ("repetition_penalty", 0),
        ("repetition_penalty", 1e-300),
        ("top_k", True),
        ("seed", -1),
        ("bogus", 1),
    ],
)
def test_bad_settings_are_user_errors_naming_the_field(name, value):
    with pytest.raises(GenerationSettingsError) as info:
        validate_generation({name: value})
    assert info.value.field == name and name in str(info.value)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_tiny_temperature_is_greedy_and_strings_parse():
    out = validate_generation({"temperature": 1e-300, "top_k": "7", "do_sample": "yes", "seed": None})
    assert out == {"temperature": 0.0, "do_sample": False, "top_k": 7, "seed": None}


def test_max_new_tokens_limit_is_applied():
    assert validate_generation({"max_new_tokens": 512}, max_new_tokens_limit=512)["max_new_tokens"] == 512
    with pytest.raises(GenerationSettingsError, match="<= 512"):
        validate_generation({"max_new_tokens": 513}, max_new_tokens_limit=512)


def test_questions():
    assert validate_question("  what?  ") == "what?"
    for bad in ("", "   ", None, "x" * 3000):
        with pytest.raises(GenerationSettingsError):
            validate_question(bad)


def _fake_model(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")


def test_model_folder_errors_name_the_folders_below(tmp_path):
    run = tmp_path / "run"
    _fake_model(run / "stage1")
    _fake_model(run / "stage4")
    assert check_model_folder(run / "stage4") == run / "stage4"
    assert set(find_model_folders(run)) == {run / "stage1", run / "stage4"}
    with pytest.raises(ModelFolderError, match="stage4") as info:
        check_model_folder(run)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelFolderError, match="does not exist"):
        check_model_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="no config.json"):
        check_model_folder(tmp_path / "empty")
