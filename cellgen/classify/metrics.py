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

Comparing arms (:func:`paired_comparison`): arms trained with the same seed share
the initial weights and the real training images (and their order, where the arms'
file lists are the same: baseline and classical), so the difference
of a metric is taken per seed, d_k = arm_k - other_k, and its mean gets a Student-t
95 % interval over the n seeds, mean(d) ± t_{0.975, n-1} * sd(d) / sqrt(n)
(:func:`t_interval`). Pairing removes the seed-to-seed spread both arms share, so
the interval is narrower than one of a difference of independent means. A
difference is *clear* when its interval excludes 0. :func:`ratio_interval` gives
Fieller's interval of a ratio of paired means (the share of a loss won back).

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

CONFIDENCE = 0.95
PAIRED_KEYS = ("weighted_f1", "macro_f1", "accuracy")
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


def t_quantile(level: float, degrees_of_freedom: int) -> float:
    """The two-sided Student-t quantile t_{(1 + level) / 2, df} (``scipy.stats.t``)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2.0, degrees_of_freedom))


def t_interval(values: Sequence[float], level: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of ``values`` with a Student-t interval: mean ± t_{(1+level)/2, n-1} * sd / sqrt(n).

    Returns ``{"mean", "std" (ddof 1), "n", "low", "high", "level", "clear"}``; with fewer than two
    values ``low``/``high`` are None and ``clear`` False (one value has no spread to estimate).
    ``clear`` is True when the interval excludes 0.

    Example:
        >>> result = t_interval([0.1, 0.2, 0.3])
        >>> round(result["low"], 4), round(result["high"], 4)   # 0.2 ± 4.3027 * 0.1 / sqrt(3)
        (-0.0484, 0.4484)
    """
    array = np.asarray(values, dtype=np.float64)
    n = int(array.size)
    if n == 0:
        return {"mean": None, "std": None, "n": 0, "low": None, "high": None, "level": level, "clear": False}
    mean = float(array.mean())
    if n < 2:
        return {"mean": mean, "std": None, "n": 1, "low": None, "high": None, "level": level, "clear": False}
    std = float(array.std(ddof=1))
    half = t_quantile(level, n - 1) * std / math.sqrt(n)
    low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "n": n, "low": low, "high": high, "level": level,
            "clear": bool(low > 0 or high < 0)}


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float],
                   level: float = CONFIDENCE) -> dict[str, Any]:
    """Fieller's interval of R = mean(a) / mean(b) over paired values (a_k, b_k), one pair per seed.

    The interval holds every theta for which the paired t-test of d_k = a_k - theta * b_k does not
    reject mean(d) = 0 at ``level``: (mean(a) - theta mean(b))^2 <= t^2 / n * var(a - theta b).
    It is bounded only when mean(b) itself differs clearly from 0; otherwise ``low``/``high`` are
    None and ``bounded`` False. With b_k constant it is the t interval of mean(a), divided by b.

    Returns ``{"ratio", "low", "high", "n", "level", "bounded"}`` (``ratio`` None when mean(b) = 0).
    """
    a = np.asarray(numerators, dtype=np.float64)
    b = np.asarray(denominators, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ratio_interval: {a.size} numerators but {b.size} denominators")
    n = int(a.size)
    mean_a, mean_b = (float(a.mean()), float(b.mean())) if n else (math.nan, math.nan)
    ratio = mean_a / mean_b if n and mean_b != 0 else None
    result = {"ratio": ratio, "low": None, "high": None, "n": n, "level": level, "bounded": False}
    if n < 2 or ratio is None:
        return result
    q = t_quantile(level, n - 1) ** 2 / n
    s_aa, s_bb = float(a.var(ddof=1)), float(b.var(ddof=1))
    s_ab = float(np.cov(a, b, ddof=1)[0, 1])
    # theta^2 (mean_b^2 - q s_bb) - 2 theta (mean_a mean_b - q s_ab) + (mean_a^2 - q s_aa) <= 0
    quadratic = mean_b ** 2 - q * s_bb
    linear = mean_a * mean_b - q * s_ab
    constant = mean_a ** 2 - q * s_aa
    discriminant = linear ** 2 - quadratic * constant
    if quadratic <= 0 or discriminant < 0:
        return result
    root = math.sqrt(discriminant)
    result.update(low=(linear - root) / quadratic, high=(linear + root) / quadratic, bounded=True)
    return result


def _values_by_seed(runs: Sequence[dict[str, Any]], path: Sequence[str]) -> dict[int, float]:
    values = {}
    for run in runs:
        value: Any = run
        for key in path:
            value = value[key]
        values[int(run["seed"])] = float(value)
    return values


def paired_values(runs: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]],
                  path: Sequence[str]) -> tuple[list[int], list[float], list[float]]:
    """The seeds both run lists have, with the metric at ``path`` of each (``["per_class", c, "f1"]``)."""
    mine, theirs = _values_by_seed(runs, path), _values_by_seed(others, path)
    seeds = sorted(set(mine) & set(theirs))
    return seeds, [mine[seed] for seed in seeds], [theirs[seed] for seed in seeds]


def paired_difference(runs: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]],
                      path: Sequence[str], level: float = CONFIDENCE) -> dict[str, Any]:
    """Per-seed differences runs - others of one metric, their mean and t interval (see the module)."""
    seeds, mine, theirs = paired_values(runs, others, path)
    differences = [a - b for a, b in zip(mine, theirs)]
    return {**t_interval(differences, level), "seeds": seeds, "differences": differences,
            "arm_mean": float(np.mean(mine)) if mine else None,
            "other_mean": float(np.mean(theirs)) if theirs else None}


def paired_comparison(runs: Sequence[dict[str, Any]], others: Sequence[dict[str, Any]],
                      classes: Sequence[str], level: float = CONFIDENCE) -> dict[str, Any]:
    """:func:`paired_difference` of weighted F1, macro F1, accuracy and every class's F1.

    Returns ``{"weighted_f1": ..., "macro_f1": ..., "accuracy": ..., "per_class": {name: ...}}``.
    """
    result: dict[str, Any] = {key: paired_difference(runs, others, [key], level) for key in PAIRED_KEYS}
    result["per_class"] = {name: paired_difference(runs, others, ["per_class", name, "f1"], level)
                           for name in classes}
    return result
