"""The paper's Table I as data, and the Markdown/CSV report that prints our rows beside it."""

import csv
import io

import pytest

from sslalm.eval.paper_table import (
    CAP_AVG,
    CAPTION_COLUMNS,
    CLASSIF_AVG,
    CLASSIFICATION_COLUMNS,
    COLUMNS,
    PAPER_ROWS,
)
from sslalm.eval.report import our_values, render_csv, render_markdown, write_report


def test_paper_rows_are_consistent_with_their_own_averages():
    assert len(COLUMNS) == 12
    assert [r.name.split(" [")[0] for r in PAPER_ROWS] == [
        "LTU (7B)",
        "Small Hybrid-LALM (7B)",
        "Medium Hybrid-LALM (7B)",
        "Small ssLALM (3B)",
        "Medium ssLALM (3B)",
    ]
    for r in PAPER_ROWS:  # the printed averages round the printed columns' means
        cls = [r.values[c] for c, _ in CLASSIFICATION_COLUMNS]
        cap = [r.values[c] for c, _ in CAPTION_COLUMNS]
        assert sum(cls) / 8 == pytest.approx(r.values[CLASSIF_AVG], abs=0.051), r.name
        assert sum(cap) / 2 == pytest.approx(r.values[CAP_AVG], abs=0.051), r.name
    medium = PAPER_ROWS[-1].values
    assert (medium["ESC50"], medium["AudioSet"], medium["Classif. Avg."], medium["Clotho"]) == (
        86.8,
        19.4,
        51.4,
        11.7,
    )


def _results(spice_ran=False):
    cap_scores = {"BLEU-4": 20.0, "METEOR": 18.0, "ROUGE-L": 40.0, "CIDEr-D": 55.5}
    not_run = {}
    if spice_ran:
        cap_scores.update({"SPICE": 15.0, "SPIDEr": 35.25})
    else:
        not_run = {"SPICE": "jars missing", "SPIDEr": "needs SPICE and CIDEr-D"}
    return {
        "model": "tiny",
        "embedder": "all-MiniLM-L6-v2",
        "tokenizer": "ptb",
        "spice": {"ran": spice_ran, "reason": None if spice_ran else "jars missing"},
        "benchmarks": {
            "esc50": {"column": "ESC50", "task": "classification", "metric": "acc", "value": 60.0,
                      "n_scored": 10, "n_clips": 10, "skipped": {"audio file not found": 2}, "malformed": 1,
                      "details": {"accuracy": 60.0, "micro_f1": 60.0, "map": 70.0}},
            "fsd50k": {"column": "FSD", "task": "classification", "metric": "map", "value": 30.0,
                       "n_scored": 5, "n_clips": 6, "skipped": {}, "malformed": 0,
                       "details": {"accuracy": 40.0, "micro_f1": 35.0, "map": 30.0}},
            "audiocaps": {"column": "AudioCaps", "task": "captioning", "metric": "spice",
                          "value": cap_scores.get("SPICE"), "n_scored": 3, "n_clips": 3, "skipped": {},
                          "malformed": 0, "scores": cap_scores, "not_run": not_run},
        },
    }  # fmt: skip


def test_our_values_average_only_what_ran():
    v = our_values(_results())
    assert v["ESC50"] == 60.0 and v["DCASE"] is None and v[CLASSIF_AVG] == pytest.approx(45.0)
    assert v["AudioCaps"] is None and v[CAP_AVG] is None
    v = our_values(_results(spice_ran=True))
    assert v["AudioCaps"] == 15.0 and v[CAP_AVG] == 15.0


def _our_row(md, name="tiny"):
    line = next(x for x in md.splitlines() if x.startswith(f"| **{name}**"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_puts_our_row_under_the_papers_with_dashes_and_footer():
    md = render_markdown([_results()])
    header = next(x for x in md.splitlines() if x.startswith("| Model"))
    assert "ESC50 ZS- (Acc)" in header and "DCASE ZS- (Mi-F1)" in header and "Cap. Avg." in header
    assert "| LTU (7B) [paper] | 83.1 | 45.9 |" in md
    row = _our_row(md)
    assert row[1:3] == ["60.0", "—"]  # ESC50 ran, DCASE not run
    assert row[7] == "30.0" and row[9] == "45.0 (2/8)"
    assert row[10:] == ["n/r", "—", "—"]  # AudioCaps ran without SPICE; Clotho not run
    assert "SPICE not run (jars missing)" in md
    assert "`all-MiniLM-L6-v2`" in md and "not directly comparable" in md
    assert "| tiny | AudioCaps | 55.5 | 18.0 | 20.0 | 40.0 | n/r | n/r | 3/3 |" in md
    assert "2 audio file not found" in md  # the runs table says what was skipped


def test_markdown_when_spice_ran_and_with_two_runs():
    other = _results(spice_ran=True)
    other["model"] = "tiny-2"
    md = render_markdown([_results(), other])
    assert _our_row(md, "tiny-2")[10:] == ["15.0", "—", "15.0 (1/2)"]
    assert "tiny-2: SPICE ran" in md and "tiny: SPICE not run" in md


def test_csv_has_the_papers_columns_and_our_caption_details(tmp_path):
    text = render_csv([_results()])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0])[:14] == ["model", "source", *COLUMNS]
    assert [r["source"] for r in rows] == ["paper"] * 5 + ["ours"]
    ours = rows[-1]
    assert float(ours["ESC50"]) == 60.0 and ours["DCASE"] == "" and ours["AudioCaps"] == ""
    assert float(ours["AudioCaps CIDEr-D"]) == 55.5 and ours["Clotho CIDEr-D"] == ""
    assert ours["spice"] == "not run: jars missing" and ours["embedder"] == "all-MiniLM-L6-v2"
    md_path, csv_path = write_report(_results(), tmp_path)
    assert md_path.read_text() == render_markdown([_results()]) and csv_path.read_text() == text
