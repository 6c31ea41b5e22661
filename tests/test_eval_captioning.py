"""Caption metrics through pycocoevalcap: hand-computed values, tokenizers, SPICE availability, METEOR."""

import math
import shutil

import pytest

from sslalm.eval.captioning import (
    CORENLP_JARS,
    find_corenlp_jars,
    install_corenlp_jars,
    python_tokenize,
    score_captions,
    spice_unavailable_reason,
)

JAVA = shutil.which("java")
needs_java = pytest.mark.skipif(JAVA is None, reason="java not installed (the README's set-up installs it)")
FAST = ("BLEU", "ROUGE-L", "CIDEr-D")


def test_python_tokenizer_lowercases_and_drops_punctuation():
    assert python_tokenize("A dog's bark, then: RAIN...") == "a dog's bark then rain"
    assert python_tokenize("  ") == ""


@pytest.mark.parametrize("tokenizer", ["python", pytest.param("ptb", marks=needs_java)])
def test_hand_computed_bleu_and_rouge(tokenizer):
    # hyp "a b c d" vs ref "a b c e": p1 = 3/4, p2 = 2/3, p3 = 1/2, p4 = 0, brevity penalty 1
    r = score_captions({"x": "A b c d."}, {"x": ["a b c e"]}, metrics=FAST, tokenizer=tokenizer)
    assert r.tokenizer == tokenizer
    assert r.scores["BLEU-1"] == pytest.approx(0.75, abs=1e-6)
    assert r.scores["BLEU-2"] == pytest.approx(math.sqrt(0.75 * 2 / 3), abs=1e-6)
    assert r.scores["BLEU-3"] == pytest.approx((0.75 * 2 / 3 * 0.5) ** (1 / 3), abs=1e-6)
    assert r.scores["BLEU-4"] < 1e-3
    # LCS 3 of 4 words both ways: P = R = 3/4 -> ROUGE-L F = 3/4
    assert r.scores["ROUGE-L"] == pytest.approx(0.75)


def test_hand_computed_cider_d():
    # clip a: answer equals its only reference, and shares no n-gram with clip b -> 10 (x the length
    # penalty e^0 = 1); clip b: no overlap -> 0; corpus mean 5
    preds = {"a": "a dog barks loudly", "b": "birds sing"}
    refs = {"a": ["a dog barks loudly"], "b": ["heavy rain falls"]}
    r = score_captions(preds, refs, metrics=("CIDEr-D",), tokenizer="python")
    assert r.scores["CIDEr-D"] == pytest.approx(5.0)


def test_answer_equal_to_every_reference_is_perfect_and_several_references_count():
    preds = {"a": "a dog barks loudly outside", "b": "heavy rain falls on the roof"}
    refs = {"a": [preds["a"]] * 5, "b": [preds["b"], "rain is falling", "rain on a roof", "a storm", "rain"]}
    r = score_captions(preds, refs, metrics=FAST, tokenizer="python")
    assert r.scores["BLEU-4"] == pytest.approx(1.0)
    assert r.scores["ROUGE-L"] == pytest.approx(1.0)
    assert r.n == 2
    # with one matching reference out of five, clip b's CIDEr-D is diluted but positive
    r_b = score_captions(preds, refs, metrics=("CIDEr-D",), tokenizer="python")
    assert 0 < r_b.scores["CIDEr-D"] < 10


def test_empty_prediction_and_no_clips():
    r = score_captions(
        {"a": "", "b": "rain"}, {"a": ["dog"], "b": ["rain falls"]}, metrics=FAST, tokenizer="python"
    )
    assert set(r.scores) == {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr-D"}
    empty = score_captions({}, {}, metrics=FAST)
    assert empty.n == 0 and set(empty.not_run) == set(FAST)
    with pytest.raises(ValueError, match="unknown caption metrics"):
        score_captions({"a": "x"}, {"a": ["x"]}, metrics=("WER",))


def test_spice_not_run_says_why(monkeypatch, tmp_path):
    monkeypatch.delenv("SPICE_CORENLP_DIR", raising=False)
    monkeypatch.setattr("sslalm.eval.captioning._spice_lib_dir", lambda: tmp_path / "lib")
    r = score_captions(
        {"a": "a dog"}, {"a": ["a dog barks"]}, metrics=("CIDEr-D", "SPICE"), tokenizer="python"
    )
    assert "SPICE" not in r.scores and "SPIDEr" not in r.scores
    reason = r.not_run["SPICE"]
    assert ("CoreNLP" in reason and "--spice-corenlp" in reason) or "java" in reason
    assert r.not_run["SPIDEr"] == "needs SPICE and CIDEr-D"


def test_spice_jars_are_found_and_linked_where_pycocoevalcap_expects_them(monkeypatch, tmp_path):
    corenlp = tmp_path / "corenlp" / "stanford-corenlp-full-2015-12-09"
    corenlp.mkdir(parents=True)
    lib = tmp_path / "spice_lib"
    assert install_corenlp_jars(tmp_path / "corenlp", lib).endswith(", ".join(CORENLP_JARS))
    for jar in CORENLP_JARS:
        (corenlp / jar).write_bytes(b"PK fake jar")
    assert set(find_corenlp_jars(tmp_path / "corenlp")) == set(CORENLP_JARS)
    assert install_corenlp_jars(tmp_path / "corenlp", lib) is None
    assert all((lib / jar).is_file() for jar in CORENLP_JARS)
    assert install_corenlp_jars(tmp_path / "elsewhere", lib) is None  # already in place
    if JAVA is not None:
        monkeypatch.setattr("sslalm.eval.captioning._spice_lib_dir", lambda: lib)
        assert spice_unavailable_reason(None) is None


def test_spice_failure_is_reported_not_raised(monkeypatch):
    monkeypatch.setattr("sslalm.eval.captioning.spice_unavailable_reason", lambda d: None)

    class BrokenSpice:
        def compute_score(self, gts, res):
            raise OSError("java crashed")

    monkeypatch.setattr("pycocoevalcap.spice.spice.Spice", BrokenSpice)
    r = score_captions(
        {"a": "a dog"}, {"a": ["a dog barks"]}, metrics=("CIDEr-D", "SPICE"), tokenizer="python"
    )
    assert r.not_run["SPICE"] == "SPICE failed: java crashed"


def test_spidr_is_mean_of_cider_d_and_spice_when_spice_runs(monkeypatch):
    monkeypatch.setattr("sslalm.eval.captioning.spice_unavailable_reason", lambda d: None)

    class FixedSpice:  # stands in for the Java scorer, which needs the CoreNLP jars
        def compute_score(self, gts, res):
            assert all(len(v) == 1 for v in res.values())
            return 0.25, []

    monkeypatch.setattr("pycocoevalcap.spice.spice.Spice", FixedSpice)
    preds = {"a": "a dog barks loudly", "b": "birds sing"}
    refs = {"a": ["a dog barks loudly"], "b": ["heavy rain falls"]}
    r = score_captions(preds, refs, metrics=("CIDEr-D", "SPICE"), tokenizer="python")
    assert r.scores["SPICE"] == 0.25
    assert r.scores["SPIDEr"] == pytest.approx((5.0 + 0.25) / 2)


@needs_java
@pytest.mark.slow
def test_meteor_runs_once_per_call_and_rewards_matches():
    # one JVM for the call (about 16 s to load its paraphrase table); an exact match, a partial one, a miss
    preds = {"a": "a dog barks loudly", "b": "rain", "c": "birds sing"}
    refs = {"a": ["a dog barks loudly", "a dog is barking"], "b": ["rain falls"], "c": ["heavy traffic"]}
    r = score_captions(preds, refs, metrics=("METEOR",))
    assert r.tokenizer == "ptb" and "METEOR" not in r.not_run
    assert 0.2 < r.scores["METEOR"] < 0.9


def test_scoring_lists_the_same_caption_metrics():
    from sslalm.eval import captioning, scoring

    assert scoring.CAPTION_METRICS == captioning.METRICS
