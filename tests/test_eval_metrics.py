"""Classification metrics: hand-computed values, agreement with scikit-learn and with the loop twins."""

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, f1_score

from oracles import (
    average_precision_reference,
    cosine_similarity_reference,
    mean_average_precision_reference,
    micro_f1_reference,
)
from sslalm.eval.classification import (
    accuracy,
    clean_prediction,
    cosine_similarity,
    label_sentence,
    mean_average_precision,
    micro_f1,
    score_classification,
    similarity_scores,
    truth_matrix,
)
from sslalm.eval.embedders import HashingEmbedder, LabelEmbeddingCache


def test_clean_prediction_and_label_sentence():
    assert clean_prediction("Label: Dog barking") == "Dog barking"
    assert clean_prediction('Audio caption: "a dog barks".') == "a dog barks"
    assert clean_prediction("  rain  ") == "rain"
    assert clean_prediction("") == ""
    assert label_sentence("Crying Baby") == "sound of crying baby"


def test_truth_matrix_multi_hot_and_unknown_label():
    t = truth_matrix([["a"], ["b", "c"], []], ["a", "b", "c"])
    assert t.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="not in the label set"):
        truth_matrix([["z"]], ["a"])


def test_cosine_matches_loop_twin_on_random_inputs():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((7, 5)), rng.standard_normal((4, 5))
    a[3] = 0  # zero row -> zeros, no NaN
    np.testing.assert_allclose(cosine_similarity(a, b), cosine_similarity_reference(a, b), atol=1e-12)
    assert np.all(cosine_similarity(a, b)[3] == 0)


def test_hand_computed_accuracy_micro_f1_and_ap():
    # 3 clips, 3 classes; top classes: 0, 2, 1
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.3, 0.5], [0.1, 0.8, 0.1]])
    truth = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 1]])
    assert accuracy(scores, truth) == pytest.approx(2 / 3)  # clip 2 wrong
    # tp = 2 (clips 1, 3), fp = 1 (clip 2), fn = 2 (clip 2's class 1, clip 3's class 2) -> 4 / 7
    assert micro_f1(scores, truth) == pytest.approx(4 / 7)
    # class 1: scores (0.1, 0.3, 0.8), positives clips 2, 3 -> ranks 2, 1 -> precisions 1, 1 -> AP 1
    # class 2: scores (0.0, 0.5, 0.1), positive clip 3 at rank 2 -> AP 1/2; class 0: AP 1 -> mAP 5/6
    assert average_precision_reference(truth[:, 2], scores[:, 2]) == pytest.approx(0.5)
    assert mean_average_precision(scores, truth) == pytest.approx(5 / 6)


def test_map_skips_classes_without_positives():
    scores = np.array([[0.9, 0.1], [0.2, 0.8]])
    truth = np.array([[1, 0], [1, 0]])
    assert mean_average_precision(scores, truth) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_metrics_agree_with_sklearn_and_twins_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    n, c = 40, 6
    scores = np.round(rng.random((n, c)), 1)  # rounding makes ties, which AP must handle like sklearn
    single = rng.integers(0, c, n)
    onehot = np.eye(c, dtype=int)[single]
    assert accuracy(scores, onehot) == pytest.approx(accuracy_score(single, scores.argmax(1)))
    multi = (rng.random((n, c)) < 0.3).astype(int)
    multi[np.arange(n), single] = 1
    pred = np.eye(c, dtype=int)[scores.argmax(1)]
    assert micro_f1(scores, multi) == pytest.approx(f1_score(multi, pred, average="micro"))
    assert micro_f1(scores, multi) == pytest.approx(micro_f1_reference(scores, multi))
    for j in range(c):
        assert average_precision_reference(multi[:, j], scores[:, j]) == pytest.approx(
            average_precision_score(multi[:, j], scores[:, j])
        )
    assert mean_average_precision(scores, multi) == pytest.approx(
        mean_average_precision_reference(scores, multi)
    )


def test_micro_f1_equals_accuracy_on_single_label_rows():
    rng = np.random.default_rng(3)
    scores = rng.random((30, 5))
    truth = np.eye(5, dtype=int)[rng.integers(0, 5, 30)]
    assert micro_f1(scores, truth) == pytest.approx(accuracy(scores, truth))


@pytest.mark.parametrize("metric", ["acc", "mi-f1", "map"])
def test_prediction_equal_to_label_scores_100(metric):
    labels = ["dog", "rain", "crying baby", "church bells", "vacuum cleaner"]
    refs = [[lab] for lab in labels] * 2
    preds = [lab.upper() for lab in labels] + [
        f"Label: {lab}" for lab in labels
    ]  # case and prefix don't matter
    s = score_classification(preds, refs, labels, metric, HashingEmbedder())
    assert s.value == pytest.approx(100.0)
    assert s.n == 10
    assert s.top_labels == labels * 2


def test_score_classification_counts_a_wrong_answer():
    labels = ["dog", "rain", "siren"]
    s = score_classification(
        ["dog", "dog", "siren"], [["dog"], ["rain"], ["siren"]], labels, "acc", HashingEmbedder()
    )
    assert s.value == pytest.approx(200 / 3)
    assert s.top_labels == ["dog", "dog", "siren"]


def test_similarity_scores_embed_labels_once_through_the_cache(tmp_path):
    calls = []

    class Counting(HashingEmbedder):
        def encode(self, texts):
            calls.append(list(texts))
            return super().encode(texts)

    emb = Counting()
    cache = LabelEmbeddingCache(emb, tmp_path)
    for _ in range(3):
        s = similarity_scores(["dog", "a dog", "dog"], ["dog", "cat"], emb, cache)
    assert s.shape == (3, 2)
    label_calls = [c for c in calls if c == ["sound of dog", "sound of cat"]]
    assert len(label_calls) == 1  # labels embedded once, answers every time (deduplicated: 2 texts)
    assert calls[-1] == ["sound of dog", "sound of a dog"]


def test_unknown_metric_and_empty_input():
    with pytest.raises(ValueError, match="unknown classification metric"):
        score_classification(["x"], [["x"]], ["x"], "auc", HashingEmbedder())
    s = score_classification([], [], ["x"], "acc", HashingEmbedder())
    assert s.n == 0 and np.isnan(s.value)
