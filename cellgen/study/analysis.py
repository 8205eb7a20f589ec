"""The study's answer from the classifier reports: paired verdicts and the share of the scarcity loss won back.

Everything here works on the ``report.json`` dicts of :mod:`cellgen.classify.report`
(``arms[ARM]["runs"]``: one entry per seed with ``seed`` and ``per_class_f1``; ``paired``:
the per-seed differences with their 95 % t intervals), so it can be tested with hand-made
numbers.

Scarcity (issue 17): with the scarce class's F1 of the ``classical`` arm trained on the
uncapped training set (F_full, the reference experiment), of the ``classical`` arm on the
kept images (F_scarce) and of the best synthetic arm (F_syn, the synthetic arm with the
highest mean F1 of that class), all means over the same seeds,

    share_recovered = (F_syn - F_scarce) / (F_full - F_scarce),

and its interval is Fieller's paired 95 % interval of the ratio of the per-seed
differences (F_syn,k - F_scarce,k) / (F_full,k - F_scarce,k)
(:func:`cellgen.classify.metrics.ratio_interval`). Choosing the best of two synthetic arms
on the same test split favours the synthetic side slightly; the report names the arm.
"""

from __future__ import annotations

from typing import Any, Sequence

from cellgen.classify.config import SYNTHETIC_ARMS
from cellgen.classify.metrics import CONFIDENCE, ratio_interval, t_interval


def _runs(report: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    return list(report["arms"][arm]["runs"])


def class_f1_runs(report: dict[str, Any], arm: str, class_name: str) -> dict[int, float]:
    """``{seed: F1 of class_name}`` of one arm of a classifier report."""
    return {int(run["seed"]): float(run["per_class_f1"][class_name]) for run in _runs(report, arm)}


def best_synthetic_arm(report: dict[str, Any], class_name: str) -> str | None:
    """The synthetic arm with the highest mean F1 of ``class_name`` (None: no synthetic arm)."""
    candidates = [arm for arm in SYNTHETIC_ARMS if arm in report["arms"]]
    if not candidates:
        return None

    def mean_f1(arm):
        values = class_f1_runs(report, arm, class_name)
        return sum(values.values()) / len(values)

    return max(candidates, key=mean_f1)


def scarcity_summary(report: dict[str, Any], reference: dict[str, Any] | None, class_name: str,
                     level: float = CONFIDENCE) -> dict[str, Any]:
    """The ``scarcity`` block of the study's ``report.json`` (see the module docstring).

    Args:
        report: the classifier report of the arms (kept images).
        reference: the classifier report of the ``classical`` arm on the uncapped training set,
            or None when the study ran no reference.
        class_name: the capped class.

    Returns:
        ``{class, f1_full, f1_scarce, f1_best_synthetic, best_synthetic_arm, share_recovered,
        share_recovered_interval: [low, high] or None, seeds, per_seed: {...}, note}``; values the
        study cannot measure are None and ``note`` says why.
    """
    result: dict[str, Any] = {"class": class_name, "f1_full": None, "f1_scarce": None, "f1_best_synthetic": None,
                              "best_synthetic_arm": None, "share_recovered": None,
                              "share_recovered_interval": None, "seeds": [], "level": level, "note": ""}
    if "classical" not in report["arms"]:
        result["note"] = "no classical arm on the kept images (F_scarce)"
        return result
    scarce = class_f1_runs(report, "classical", class_name)
    arm = best_synthetic_arm(report, class_name)
    full = class_f1_runs(reference, "classical", class_name) if reference and "classical" in reference["arms"] else {}
    synthetic = class_f1_runs(report, arm, class_name) if arm else {}
    seeds = sorted(set(scarce) & (set(full) if full else set(scarce)) & (set(synthetic) if synthetic else set(scarce)))
    result["seeds"] = seeds

    def mean(values):
        return sum(values[seed] for seed in seeds) / len(seeds) if values and seeds else None

    result.update(f1_scarce=mean(scarce), f1_full=mean(full), f1_best_synthetic=mean(synthetic),
                  best_synthetic_arm=arm)
    result["per_seed"] = {"scarce": [scarce[s] for s in seeds], "full": [full[s] for s in seeds] if full else None,
                          "best_synthetic": [synthetic[s] for s in seeds] if synthetic else None}
    if not full:
        result["note"] = "no reference run on the uncapped training set (F_full)"
        return result
    if not synthetic:
        result["note"] = "no synthetic arm"
        return result
    gains = [synthetic[s] - scarce[s] for s in seeds]
    losses = [full[s] - scarce[s] for s in seeds]
    if result["f1_full"] - result["f1_scarce"] <= 0:
        result["note"] = "scarcity cost nothing here (F_full <= F_scarce): there is no loss to win back"
        return result
    interval = ratio_interval(gains, losses, level)
    result["share_recovered"] = interval["ratio"]
    if interval["bounded"]:
        result["share_recovered_interval"] = [interval["low"], interval["high"]]
    elif len(seeds) < 2:
        result["note"] = "one seed: no interval"
    else:
        result["note"] = ("the scarcity loss itself is not clearly above 0 over these seeds, so the share's "
                          "interval is unbounded")
    return result


# Sentences --------------------------------------------------------------------------------


def difference_sentence(label: str, stats: dict[str, Any]) -> str:
    """Plain words for one paired difference: clear only when its 95 % interval excludes 0."""
    numbers = f"{stats['other_mean']:.3f} -> {stats['arm_mean']:.3f} ({stats['mean']:+.3f}"
    if stats.get("low") is None:
        return (f"{label}: {numbers}, one seed). One seed gives no estimate of the run-to-run spread, "
                "so this is not evidence either way; run more seeds.")
    if stats.get("std") == 0 and stats["mean"] == 0:
        return f"{label}: {numbers}, the same in each of {stats['n']} paired seeds): no difference."
    level = round(100 * stats.get("level", CONFIDENCE))
    numbers += (f", {level} % interval {stats['low']:+.3f} to {stats['high']:+.3f} over {stats['n']} "
                "paired seeds)")
    if stats["low"] > 0:
        return f"{label}: {numbers}: a clear gain."
    if stats["high"] < 0:
        return f"{label}: {numbers}: clearly worse."
    return f"{label}: {numbers}: no clear difference (the interval includes 0)."


# The comparisons the verdict leads with, most telling first.
VERDICT_ORDER = ("classical+synthetic - classical", "synthetic - classical", "synthetic - baseline",
                 "classical+synthetic - baseline", "classical - baseline")


def verdict_lines(report: dict[str, Any] | None, targets: Sequence[str]) -> list[str]:
    """One sentence per paired comparison of the classifier report (weighted F1, then each target's F1)."""
    if not report or not report.get("paired"):
        return ["No two arms were compared (the verdict needs at least two arms with the same seeds)."]
    paired = report["paired"]
    names = [name for name in VERDICT_ORDER if name in paired] + [name for name in paired
                                                                  if name not in VERDICT_ORDER]
    lines = []
    for name in names:
        comparison = paired[name]
        for class_name in targets:
            lines.append(difference_sentence(f"{name}, F1 of {class_name}", comparison["per_class"][class_name]))
        lines.append(difference_sentence(f"{name}, weighted F1", comparison["weighted_f1"]))
    return lines


def scarcity_sentence(scarcity: dict[str, Any], kept: int | None = None, original: int | None = None) -> str:
    """The share of the scarcity loss won back, in words."""
    name = scarcity["class"]
    if scarcity.get("f1_scarce") is None or scarcity.get("f1_full") is None:
        return f"Share of the {name} scarcity loss won back: not measured ({scarcity.get('note') or 'no reference'})."
    counts = f" ({original} real images)" if original else ""
    kept_text = f" ({kept} kept)" if kept else ""
    text = (f"{name} F1 of the classical arm: {scarcity['f1_full']:.3f} with every training image{counts}, "
            f"{scarcity['f1_scarce']:.3f} after the cap{kept_text}")
    if scarcity.get("share_recovered") is None:
        return f"{text}. {scarcity.get('note') or 'No share to report.'}"
    text += (f"; the best synthetic arm ({scarcity['best_synthetic_arm']}) reached "
             f"{scarcity['f1_best_synthetic']:.3f}: **{100 * scarcity['share_recovered']:.0f} % of the loss won back**")
    interval = scarcity.get("share_recovered_interval")
    if interval:
        text += f" (95 % interval {100 * interval[0]:.0f} % to {100 * interval[1]:.0f} %, paired over {len(scarcity['seeds'])} seeds)."
    else:
        text += f" ({scarcity.get('note') or 'no interval'})."
    return text


def mean_interval_text(values: Sequence[float], digits: int = 3) -> str:
    """``0.812 [0.790, 0.834]``: mean and 95 % t interval over seeds (no interval for one seed)."""
    stats = t_interval(values)
    if stats["mean"] is None:
        return "-"
    if stats["low"] is None:
        return f"{stats['mean']:.{digits}f}"
    return f"{stats['mean']:.{digits}f} [{stats['low']:.{digits}f}, {stats['high']:.{digits}f}]"


def arm_values(report: dict[str, Any], arm: str, path: Sequence[str]) -> list[float]:
    """Per-seed values of a run-level metric (``["weighted_f1"]``, ``["per_class_f1", c]``) of one arm."""
    values = []
    for run in _runs(report, arm):
        value: Any = run
        for key in path:
            value = value[key]
        values.append(float(value))
    return values


__all__ = ["scarcity_summary", "verdict_lines", "scarcity_sentence", "difference_sentence", "best_synthetic_arm",
           "class_f1_runs", "mean_interval_text", "arm_values"]
