"""The generation runner (batched, resumable JSONL) and the whole ``sslalm eval`` pipeline on fake trees."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from sslalm.cli import build_parser
from sslalm.eval.datasets import benchmark_dir, find_benchmarks, load_benchmark
from sslalm.eval.runner import generate_predictions, run_cli
from sslalm.eval.scoring import read_predictions
from synthetic_benchmarks import SAMPLE_RATE, ToneModel, build_synthetic_benchmarks, dominant_frequency


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return build_synthetic_benchmarks(tmp_path_factory.mktemp("bench"))


class Interrupting:
    """Wraps a model and raises KeyboardInterrupt (like Ctrl-C) once ``after`` clips have been answered."""

    def __init__(self, model, after):
        self.model, self.after, self.seen = model, after, 0

    def generate(self, audio, prompts, **kw):
        if self.seen >= self.after:
            raise KeyboardInterrupt
        self.seen += len(audio)
        return self.model.generate(audio, prompts, **kw)


def test_tone_model_reads_the_audio_not_the_file_name(tree):
    model = ToneModel(tree.answers)
    f, g = sorted(tree.answers)[3], sorted(tree.answers)[7]
    t = torch.arange(SAMPLE_RATE // 2) / SAMPLE_RATE
    wave = torch.sin(2 * torch.pi * (f + 20) * t)
    other = torch.sin(2 * torch.pi * (g - 20) * t)
    assert model.generate([wave], ["q"]) == [tree.answers[f]]
    assert model.generate([other, wave], ["q", "q"]) == [tree.answers[g], tree.answers[f]]  # in order
    with pytest.raises(ValueError, match="one prompt per audio clip"):
        model.generate([wave, other], ["q"])
    assert dominant_frequency(np.asarray(wave), SAMPLE_RATE) == pytest.approx(f + 20, abs=2)


def test_generation_is_resumable_without_duplicates(tree, tmp_path):
    bench = load_benchmark("esc50", benchmark_dir("esc50", tree.root))
    path = tmp_path / "esc50.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_predictions(
            Interrupting(ToneModel(tree.answers), after=4), bench, path, batch_size=2, progress=False
        )
    first = read_predictions(path)
    assert len(first) == 4  # two whole batches were written and flushed before the interrupt
    model = ToneModel(tree.answers)
    stats = generate_predictions(model, bench, path, batch_size=2, progress=False)
    assert (stats.already, stats.new, stats.total) == (4, 5, 9)
    assert model.calls == 3  # only the 5 remaining clips were asked (batches of 2)
    lines = path.read_text().splitlines()
    ids = [json.loads(x)["audio_id"] for x in lines]
    assert len(ids) == len(set(ids)) == 9
    rec = json.loads(lines[0])
    assert set(rec) == {"audio_id", "prompt", "prediction", "references", "audio_path"}
    again = generate_predictions(ToneModel(tree.answers), bench, path, progress=False)
    assert (again.already, again.new) == (9, 0)


def test_a_truncated_last_line_is_cut_and_regenerated(tree, tmp_path):
    bench = load_benchmark("tut17", benchmark_dir("tut17", tree.root))
    path = tmp_path / "tut17.jsonl"
    generate_predictions(ToneModel(tree.answers), bench, path, progress=False)
    text = path.read_text()
    path.write_text(text[: len(text) - 25])  # the last record was cut mid-write
    assert len(read_predictions(path)) == 3
    stats = generate_predictions(ToneModel(tree.answers), bench, path, progress=False)
    assert stats.new == 1
    assert [json.loads(x)["audio_id"] for x in path.read_text().splitlines()] == ["1", "2", "3", "4"]


def test_one_unreadable_clip_costs_one_answer(tree, tmp_path):
    bench = load_benchmark("vggsound", benchmark_dir("vggsound", tree.root))
    stats = generate_predictions(
        ToneModel(tree.answers), bench, tmp_path / "v.jsonl", batch_size=8, progress=False
    )
    assert stats.new == 3 and list(stats.failed) == ["corruptClip_000040"]
    assert (
        "LibsndfileError" in stats.failed["corruptClip_000040"]
        or "Error" in stats.failed["corruptClip_000040"]
    )


def _args(argv):
    return build_parser().parse_args(["eval", *argv])


def test_whole_pipeline_cli_on_fake_trees(tree, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SPICE_CORENLP_DIR", raising=False)
    out = tmp_path / "run"
    argv = ["--data-root", str(tree.root), "--out", str(out), "--embedder", "hashing", "--batch-size", "3",
            "--caption-metrics", "BLEU,ROUGE-L,CIDEr-D,SPICE", "--embedding-cache", str(tmp_path / "cache"),
            "--name", "tone-model", "--report", "--no-progress"]  # fmt: skip
    assert run_cli(_args(argv), model=ToneModel(tree.answers)) == 0
    res = json.loads((out / "results.json").read_text())
    b = res["benchmarks"]
    for name, exp in tree.expected.items():
        assert b[name]["n_clips"] == exp["clips"], name
        assert b[name]["n_scored"] == exp.get("answered", exp["clips"]), name
        assert b[name]["malformed"] == exp["malformed"], name
        if "value" in exp:
            assert b[name]["value"] == pytest.approx(exp["value"], abs=1e-3), name
    assert 0 < b["fsd50k"]["value"] <= 100 and 0 < b["audioset"]["value"] <= 100
    for name in ("audiocaps", "clotho"):  # each answer equals one reference caption
        assert b[name]["scores"]["BLEU-4"] == pytest.approx(100.0)
        assert b[name]["value"] is None and "SPICE" in b[name]["not_run"]
    assert res["embedder"] == "hashing-4096" and res["spice"]["ran"] is False

    md = (out / "report.md").read_text()
    ours = next(line for line in md.splitlines() if line.startswith("| **tone-model**"))
    cells = [c.strip() for c in ours.strip("|").split("|")]
    assert cells[1:4] == ["88.9", "85.7", "100.0"] and cells[10:] == ["n/r", "n/r", "—"]
    assert "SPICE not run" in md and "hashing-4096" in md
    rows = list(csv.DictReader(io.StringIO((out / "report.csv").read_text())))
    assert [r["source"] for r in rows] == ["paper"] * 5 + ["ours"]
    assert float(rows[-1]["ESC50"]) == pytest.approx(88.89) and rows[-1]["AudioCaps"] == ""
    assert float(rows[-1]["AudioCaps BLEU-4"]) == pytest.approx(100.0)
    assert "tone-model" in capsys.readouterr().out

    # a second run asks only for the clip that failed (the unreadable one); then rescoring from the folder
    # alone, without model or data, gives the same numbers
    asked = []

    class Recording(ToneModel):
        def generate(self, audio, prompts, **kw):
            asked.extend(audio)
            return super().generate(audio, prompts, **kw)

    assert run_cli(_args(argv), model=Recording(tree.answers)) == 0
    assert [p.rsplit("/", 1)[-1] for p in asked] == ["corruptClip_000040.wav"]
    (out / "results.json").unlink()
    assert run_cli(_args(["--out", str(out), "--embedder", "hashing", "--benchmarks", "esc50,dcase17",
                          "--embedding-cache", str(tmp_path / "cache"), "--report"])) == 0  # fmt: skip
    again = json.loads((out / "results.json").read_text())["benchmarks"]
    assert set(again) == {"esc50", "dcase17"} and again["esc50"]["value"] == b["esc50"]["value"]


def test_cli_limit_and_errors(tree, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["--data-root", str(tree.root), "--benchmarks", "bjo", "--out", str(out), "--embedder", "hashing",
            "--limit", "2", "--no-progress", "--embedding-cache", str(tmp_path / "c")]  # fmt: skip
    assert run_cli(_args(argv), model=ToneModel(tree.answers)) == 0
    assert len(read_predictions(out / "bjo.jsonl")) == 2
    assert run_cli(_args(["--data-root", str(tmp_path / "empty"), "--out", str(out)])) == 2
    assert run_cli(_args(["--out", str(tmp_path / "nothing")])) == 2
    assert run_cli(_args(["--out", str(out), "--benchmarks", "nope"])) == 2
    assert run_cli(_args(["--out", str(out), "--caption-metrics", "WER"])) == 2
    assert run_cli(_args(["--model", "m", "--out", str(out)])) == 2
    assert "error" in capsys.readouterr().out


def test_cli_model_path_that_is_not_a_model_folder_names_the_ones_below(tree, tmp_path, capsys):
    """``--model`` goes through the shared loader: a run folder is refused before any clip is answered."""
    stage = tmp_path / "runs" / "stage2"
    stage.mkdir(parents=True)
    (stage / "config.json").write_text("{}")
    (stage / "model.safetensors").write_bytes(b"")
    out = tmp_path / "run"
    argv = ["--model", str(tmp_path / "runs"), "--data-root", str(tree.root), "--benchmarks", "bjo",
            "--out", str(out), "--embedder", "hashing", "--no-progress"]  # fmt: skip
    assert run_cli(_args(argv)) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("error: ") and "is not a model folder" in printed and str(stage) in printed
    assert not (out / "bjo.jsonl").exists()


def test_find_benchmarks_feeds_the_runner(tree):
    names = [b.name for b in find_benchmarks(tree.root, "all")]
    assert names == list(tree.expected)


def test_eval_help_lists_the_options(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["eval", "--help"])
    text = capsys.readouterr().out
    for opt in ("--model", "--data-root", "--benchmarks", "--out", "--batch-size", "--embedder", "--report",
                "--spice-corenlp"):  # fmt: skip
        assert opt in text


@pytest.mark.slow
def test_pipeline_with_the_default_offline_minilm_embedder(tree, tmp_path):
    out = tmp_path / "run"
    argv = ["--data-root", str(tree.root), "--benchmarks", "esc50,dcase17,tut17", "--out", str(out),
            "--embedding-cache", str(tmp_path / "cache"), "--no-progress"]  # fmt: skip
    assert run_cli(_args(argv), model=ToneModel(tree.answers)) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["embedder"] == "all-MiniLM-L6-v2"
    for name in ("esc50", "dcase17", "tut17"):
        assert res["benchmarks"][name]["value"] == pytest.approx(tree.expected[name]["value"], abs=1e-3), name


def test_a_model_that_always_fails_stops_the_run(tree, tmp_path):
    class Broken:
        def generate(self, audio, prompts, **kw):
            raise TypeError("unexpected keyword argument 'max_new_tokenz'")

    bench = load_benchmark("esc50", benchmark_dir("esc50", tree.root))
    with pytest.raises(RuntimeError, match="max_new_tokenz"):
        generate_predictions(Broken(), bench, tmp_path / "e.jsonl", batch_size=4, progress=False)
