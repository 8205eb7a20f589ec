"""Classifier metrics against a hand-computed confusion matrix (K&C section 3.14)."""

from __future__ import annotations

import numpy as np
import pytest

from cellgen.classify.metrics import (classification_metrics, confusion_matrix, deltas_against, mean_std,
                                      summarize_runs)

CLASSES = ["a", "b", "c"]
# rows: true class, columns: predicted class
MATRIX = np.array([[5, 1, 0],
                   [2, 3, 1],
                   [0, 0, 4]])


def test_confusion_matrix_counts_pairs():
    labels = [0] * 6 + [1] * 6 + [2] * 4
    predictions = [0, 0, 0, 0, 0, 1] + [0, 0, 1, 1, 1, 2] + [2, 2, 2, 2]
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), MATRIX)


def test_metrics_match_hand_computation():
    metrics = classification_metrics(MATRIX, CLASSES)
    a, b, c = (metrics["per_class"][name] for name in CLASSES)
    # class a: TP 5, FP 2, FN 1, TN 8
    assert a["precision"] == pytest.approx(5 / 7)
    assert a["recall"] == pytest.approx(5 / 6)
    assert a["f1"] == pytest.approx(10 / 13)
    assert a["specificity"] == pytest.approx(8 / 10)
    # class b: TP 3, FP 1, FN 3, TN 9
    assert b["precision"] == pytest.approx(3 / 4)
    assert b["recall"] == pytest.approx(1 / 2)
    assert b["f1"] == pytest.approx(3 / 5)
    assert b["specificity"] == pytest.approx(9 / 10)
    # class c: TP 4, FP 1, FN 0, TN 11
    assert c["precision"] == pytest.approx(4 / 5)
    assert c["recall"] == pytest.approx(1.0)
    assert c["f1"] == pytest.approx(8 / 9)
    assert c["specificity"] == pytest.approx(11 / 12)
    # the theses' per-class accuracy is the row-normalised diagonal
    assert [metrics["per_class"][name]["accuracy"] for name in CLASSES] == pytest.approx([5 / 6, 1 / 2, 1.0])
    assert [metrics["per_class"][name]["support"] for name in CLASSES] == [6, 6, 4]
    assert metrics["accuracy"] == pytest.approx(12 / 16)
    assert metrics["weighted_f1"] == pytest.approx((6 * 10 / 13 + 6 * 3 / 5 + 4 * 8 / 9) / 16)
    assert metrics["macro_f1"] == pytest.approx((10 / 13 + 3 / 5 + 8 / 9) / 3)
    assert metrics["balanced_accuracy"] == pytest.approx((5 / 6 + 1 / 2 + 1) / 3)
    assert metrics["confusion_matrix"] == MATRIX.tolist()


def test_zero_division_gives_zero_not_nan():
    # class b is never predicted; class c has no test images
    matrix = np.array([[3, 0, 0], [2, 0, 0], [0, 0, 0]])
    metrics = classification_metrics(matrix, CLASSES)
    assert metrics["per_class"]["b"]["precision"] == 0.0
    assert metrics["per_class"]["b"]["f1"] == 0.0
    assert metrics["per_class"]["c"]["recall"] == 0.0
    assert metrics["per_class"]["c"]["specificity"] == 1.0
    assert all(np.isfinite(value) for value in (metrics["weighted_f1"], metrics["macro_f1"]))
    # weighted F1 ignores the empty class c; macro F1 counts it as 0
    f1_a = 2 * 0.6 * 1.0 / 1.6
    assert metrics["weighted_f1"] == pytest.approx(3 * f1_a / 5)
    assert metrics["macro_f1"] == pytest.approx(f1_a / 3)
    assert metrics["balanced_accuracy"] == pytest.approx(0.5)  # over the two present classes


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError, match="range"):
        confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match="differ in length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="does not match"):
        classification_metrics(MATRIX, ["a", "b"])


def test_mean_std_and_deltas_over_seeds():
    assert mean_std([0.5, 0.7]) == pytest.approx({"mean": 0.6, "std": np.std([0.5, 0.7], ddof=1), "n": 2})
    assert mean_std([0.9])["std"] == 0.0
    worse = classification_metrics(MATRIX, CLASSES)
    better = classification_metrics(np.array([[6, 0, 0], [1, 5, 0], [0, 0, 4]]), CLASSES)
    baseline = summarize_runs([worse, worse], CLASSES)
    arm = summarize_runs([worse, better], CLASSES)
    assert arm["weighted_f1"]["mean"] == pytest.approx((worse["weighted_f1"] + better["weighted_f1"]) / 2)
    assert arm["weighted_f1"]["std"] > 0 and baseline["weighted_f1"]["std"] == 0
    assert np.asarray(arm["confusion_matrix"]).sum() == 32
    delta = deltas_against(arm, baseline, CLASSES)
    assert delta["weighted_f1"] == pytest.approx((better["weighted_f1"] - worse["weighted_f1"]) / 2)
    assert delta["per_class"]["b"]["f1"] == pytest.approx(
        (better["per_class"]["b"]["f1"] - worse["per_class"]["b"]["f1"]) / 2)
