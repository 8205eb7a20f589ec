"""Classification metrics from a confusion matrix (Klang & Carlberg 2020, section 3.14).

With per class c the true positives TP, false positives FP, false negatives FN
and true negatives TN of the one-vs-rest problem (K&C eqs. 34-38):

- precision = TP / (TP + FP), recall = TP / (TP + FN), specificity = TN / (TN + FP);
- F1 = 2 * precision * recall / (precision + recall);
- the theses' per-class "accuracy" is the diagonal of the row-normalised confusion
  matrix (K&C Figures 20-21, N&Z Figures 24-26), which equals the recall;
- accuracy = trace / total; weighted F1 averages the per-class F1 weighted by the
  class support (K&C Table 4), macro F1 averages them equally.

A ratio with a zero denominator is reported as 0 (as scikit-learn's
``zero_division=0``), so a class the model never predicts gets precision 0.

Example:
    >>> matrix = confusion_matrix([0, 1, 1], [0, 1, 0], num_classes=2)
    >>> metrics = classification_metrics(matrix, ["a", "b"])
    >>> round(metrics["weighted_f1"], 4)
    0.6667
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import numpy as np

PER_CLASS_KEYS = ("precision", "recall", "f1", "specificity", "accuracy")
SUMMARY_KEYS = ("accuracy", "weighted_f1", "macro_f1", "macro_precision", "macro_recall", "balanced_accuracy")


def confusion_matrix(labels: Iterable[int], predictions: Iterable[int], num_classes: int) -> np.ndarray:
    """Counts (true row, predicted column) pairs into an int64 (num_classes, num_classes) matrix."""
    labels = np.asarray(list(labels) if not isinstance(labels, np.ndarray) else labels, dtype=np.int64)
    predictions = np.asarray(list(predictions) if not isinstance(predictions, np.ndarray) else predictions,
                             dtype=np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape} vs {predictions.shape}")
    for name, values in (("labels", labels), ("predictions", predictions)):
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(f"{name} must be in [0, {num_classes}), got range [{values.min()}, {values.max()}]")
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else 0.0


def classification_metrics(matrix: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    """Per-class and averaged metrics of a confusion matrix (rows true, columns predicted).

    Returns:
        ``{"per_class": {name: {precision, recall, f1, specificity, accuracy, support}},
        "accuracy", "weighted_f1", "macro_f1", "macro_precision", "macro_recall",
        "balanced_accuracy", "support", "confusion_matrix"}``.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] != len(classes):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not match {len(classes)} classes")
    total = int(matrix.sum())
    true_positives = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    per_class: dict[str, dict[str, float]] = {}
    for index, name in enumerate(classes):
        tp = int(true_positives[index])
        fp = int(predicted[index] - tp)
        fn = int(support[index] - tp)
        tn = total - tp - fp - fn
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        per_class[name] = {
            "precision": precision,
            "recall": recall,
            "f1": _ratio(2 * precision * recall, precision + recall),
            "specificity": _ratio(tn, tn + fp),
            "accuracy": recall,
            "support": int(support[index]),
        }
    f1_values = np.array([per_class[name]["f1"] for name in classes])
    present = support > 0
    return {
        "per_class": per_class,
        "accuracy": _ratio(true_positives.sum(), total),
        "weighted_f1": _ratio(float((f1_values * support).sum()), float(support.sum())),
        "macro_f1": float(f1_values.mean()),
        "macro_precision": float(np.mean([per_class[name]["precision"] for name in classes])),
        "macro_recall": float(np.mean([per_class[name]["recall"] for name in classes])),
        # mean recall over the classes present in the test set
        "balanced_accuracy": float(np.mean([per_class[name]["recall"] for name, keep in zip(classes, present)
                                            if keep])) if present.any() else 0.0,
        "support": total,
        "confusion_matrix": matrix.tolist(),
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof = 1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std, "n": int(array.size)}


def summarize_runs(runs: Sequence[dict[str, Any]], classes: Sequence[str]) -> dict[str, Any]:
    """Mean and std over seeds of every summary and per-class metric, plus the summed confusion matrix."""
    if not runs:
        raise ValueError("summarize_runs: no runs")
    summary: dict[str, Any] = {key: mean_std([run[key] for run in runs]) for key in SUMMARY_KEYS}
    summary["per_class"] = {
        name: {key: mean_std([run["per_class"][name][key] for run in runs]) for key in PER_CLASS_KEYS}
        for name in classes
    }
    for name in classes:
        summary["per_class"][name]["support"] = int(runs[0]["per_class"][name]["support"])
    summary["confusion_matrix"] = np.sum([np.asarray(run["confusion_matrix"]) for run in runs], axis=0).tolist()
    summary["seeds"] = len(runs)
    return summary


def deltas_against(summary: dict[str, Any], baseline: dict[str, Any], classes: Sequence[str]) -> dict[str, Any]:
    """Differences of mean metrics (arm minus baseline), overall and per class."""
    result: dict[str, Any] = {key: summary[key]["mean"] - baseline[key]["mean"] for key in SUMMARY_KEYS}
    result["per_class"] = {
        name: {key: summary["per_class"][name][key]["mean"] - baseline["per_class"][name][key]["mean"]
               for key in PER_CLASS_KEYS}
        for name in classes
    }
    return result
