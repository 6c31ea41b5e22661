"""Benchmark adapters on small fake trees in each official layout (built by tests/synthetic_benchmarks.py)."""

import logging
import shutil

import pytest

from sslalm.eval.adapters import DCASE2017_LABELS, TUT2017_LABELS
from sslalm.eval.benchmark import MISSING_AUDIO, DatasetNotFound
from sslalm.eval.datasets import (
    BENCHMARKS,
    benchmark_dir,
    find_benchmarks,
    load_benchmark,
    resolve_names,
)
from synthetic_benchmarks import build_synthetic_benchmarks, write_tone


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_synthetic_benchmarks(tmp_path_factory.mktemp("bench"))


def _load(tree, name):
    return load_benchmark(name, benchmark_dir(name, tree.root))


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_every_adapter_counts_clips_malformed_rows_and_missing_audio(tree, name):
    b = _load(tree, name)
    exp = tree.expected[name]
    assert len(b.clips) == exp["clips"]
    assert b.malformed == exp["malformed"]
    assert b.skipped.get(MISSING_AUDIO, 0) == exp["missing"]
    assert len({c.audio_id for c in b.clips}) == len(b.clips)
    assert all(c.references for c in b.clips)
    if b.task == "classification":
        assert all(r in b.labels for c in b.clips for r in c.references)
    spec = BENCHMARKS[name]
    assert (b.column, b.task, b.metric, b.prompt) == (spec.column, spec.task, spec.metric, spec.prompt)


def test_esc50_layout(tree):
    b = _load(tree, "esc50")
    assert b.labels == ["dog", "rooster", "rain", "crying baby"]  # ordered by target, "_" read as a space
    clip = next(c for c in b.clips if c.audio_id == "1-106-A-20")
    assert clip.references == ("crying baby",) and clip.audio_path.endswith("audio/1-106-A-20.wav")
    assert b.prompt == "Close-ended question: Write an audio caption describing the sound."


def test_dcase2017_weak_labels_crlf_and_y_prefix(tree, tmp_path):
    b = _load(tree, "dcase17")
    assert b.labels == list(DCASE2017_LABELS) and len(b.labels) == 17
    multi = next(c for c in b.clips if c.audio_id == "PNaLTW50fxM_60.000_70.000")
    assert multi.references == ("Car", "Car passing by")
    assert multi.audio_path.endswith("YPNaLTW50fxM_60.000_70.000.wav")
    # the strong-label file alone (onset/offset per event) gives the same weak labels
    root = tmp_path / "dcase"
    shutil.copytree(benchmark_dir("dcase17", tree.root), root)
    weak = root / "groundtruth_weak_label_evaluation_set.csv"
    strong = root / "groundtruth_release" / "groundtruth_strong_label_evaluation_set.csv"
    strong.parent.mkdir()
    text = weak.read_text()
    weak.unlink()
    strong.write_text(text.replace("Car\r\n", "Car\r\nPNaLTW50fxM_60.000_70.000.wav\t1.5\t3.0\tCar\r\n"))
    b2 = load_benchmark("dcase17", root)
    assert {c.audio_id: c.references for c in b2.clips} == {c.audio_id: c.references for c in b.clips}


def test_vocalsound_uses_file_names_of_te_json_and_prefers_16k(tree, tmp_path):
    root = tmp_path / "vs"
    shutil.copytree(benchmark_dir("vocalsound", tree.root), root)
    write_tone(root / "audio_44k" / "f0001_0_cough.wav", 1000.0)
    b = load_benchmark("vocalsound", root)
    clip = next(c for c in b.clips if c.audio_id == "f0001_0_cough")
    assert clip.references == ("Cough",) and "/audio_16k/" in clip.audio_path
    assert "Throat clearing" in b.labels and len(b.labels) == 6


def test_tut2017_evaluate_txt_or_meta_txt(tree, tmp_path):
    b = _load(tree, "tut17")
    assert len(b.labels) == len(TUT2017_LABELS) and "city center" in b.labels
    assert {c.audio_id: c.references[0] for c in b.clips}["4"] == "city center"
    root = tmp_path / "tut"
    shutil.copytree(benchmark_dir("tut17", tree.root), root)
    (root / "evaluation_setup" / "evaluate.txt").unlink()
    b2 = load_benchmark("tut17", root)  # meta.txt has an extra column
    assert [c.references for c in b2.clips] == [c.references for c in b.clips]


def test_beijing_opera_class_folders(tree):
    b = _load(tree, "bjo")
    assert b.labels == ["bangu", "naobo", "daluo", "xiaoluo"]
    assert sorted(c.audio_id for c in b.clips)[:2] == ["bangu/bangu_1", "bangu/bangu_2"]


def test_vggsound_test_split_quoted_labels_and_label_set(tree):
    b = _load(tree, "vggsound")
    assert "people marching" in b.labels  # from a train row: the label set is the whole file's
    assert "trainOnly01_000005" not in {c.audio_id for c in b.clips}
    clip = next(c for c in b.clips if c.audio_id == "qqqRRRsss00_000010")
    assert clip.references == ("engine accelerating, revving, vroom",)


def test_fsd50k_multi_labels_and_vocabulary(tree):
    b = _load(tree, "fsd50k")
    assert "Acoustic guitar" in b.labels and len(b.labels) == 6
    assert {c.audio_id: c.references for c in b.clips}["1004"] == ("Acoustic guitar", "Music")


def test_audioset_comments_quoted_mids_and_file_stems(tree):
    b = _load(tree, "audioset")
    refs = {c.audio_id: c.references for c in b.clips}
    assert refs["--4gqARaEJE"] == ("Dog", "Bark")
    assert refs["-1nilez17Dg"] == ("Rain", "Music")  # found as <ytid>_<start>_<end>.wav
    assert len(b.labels) == 6


def test_audiocaps_groups_captions_per_clip(tree):
    b = _load(tree, "audiocaps")
    assert all(len(c.references) == 5 for c in b.clips)
    ids = {c.audio_id for c in b.clips}
    assert ids == {"ytAAAAAAAAA_30", "ytBBBBBBBBB_0", "ytCCCCCCCCC_60"}
    assert b.prompt.endswith("in AudioCaps style.") and b.labels == []


def test_clotho_file_names_with_commas_and_five_captions(tree):
    b = _load(tree, "clotho")
    clip = next(c for c in b.clips if c.audio_id == "rain, on roof.wav")
    assert len(clip.references) == 5 and clip.references[0] == "Rain falls on a roof."
    assert b.prompt == "Close-ended question: Create a caption for audio, in Clotho style."


def test_missing_datasets_are_skipped_with_a_message(tree, tmp_path, caplog):
    (tmp_path / "FSD50K").mkdir()  # a folder without its metadata
    with caplog.at_level(logging.WARNING):
        found = find_benchmarks(tmp_path, "esc50,fsd50k")
    assert found == []
    assert "esc50: not found under" in caplog.text and "fsd50k: skipped" in caplog.text
    with pytest.raises(DatasetNotFound):
        load_benchmark("fsd50k", tmp_path / "FSD50K")
    overrides = {"esc50": str(benchmark_dir("esc50", tree.root))}
    assert [b.name for b in find_benchmarks(tmp_path, ["esc50"], overrides)] == ["esc50"]


def test_resolve_names():
    assert resolve_names("audiocaps, esc50,VS,esc50") == ["esc50", "vocalsound", "audiocaps"]
    assert resolve_names("all") == list(BENCHMARKS)
    assert resolve_names(["beijing_opera", "dcase2017"]) == ["dcase17", "bjo"]
    with pytest.raises(ValueError, match="unknown benchmark 'imagenet'"):
        resolve_names("imagenet")
