"""The experiment report: ``report.json``, ``report.md``, confusion matrices and an F1 bar chart.

Per arm: mean and standard deviation over seeds of accuracy, weighted and macro
F1 (K&C Table 4 reports the weighted F1), per-class precision, recall, F1,
specificity and the theses' per-class accuracy, and the differences against the
baseline arm. ``paired``: the paired comparisons of :func:`comparison_pairs` (every arm
against ``baseline``, the synthetic arms against ``classical``): per-seed differences,
their mean and 95 % t interval, per class and overall
(:func:`cellgen.classify.metrics.paired_comparison`). Confusion matrices (summed over seeds) show the row percentage
and the count in each cell, like K&C Figures 20-21 and N&Z Figures 24-26.

Example:
    >>> report = build_report(results, classes, config_dict)  # doctest: +SKIP
    >>> write_report(report, "runs/exp1")                      # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Sequence

from cellgen.classify.config import SYNTHETIC_ARMS
from cellgen.classify.metrics import PER_CLASS_KEYS, deltas_against, paired_comparison, summarize_runs
from cellgen.plots import plot_confusion_matrix, plot_grouped_bars
from cellgen.runs import write_json

RUN_KEYS = ("seed", "best_epoch", "best_val_loss", "epochs_trained", "train_seconds", "train_images",
            "run_dir", "accuracy", "weighted_f1", "macro_f1")


def comparison_pairs(arms: Sequence[str]) -> list[tuple[str, str]]:
    """The (arm, other) pairs a report compares: every arm against ``baseline``, and each synthetic
    arm against ``classical`` (do synthetic images add to what the cheap fix already wins?)."""
    pairs = [(arm, "baseline") for arm in arms if arm != "baseline" and "baseline" in arms]
    if "classical" in arms:
        pairs += [(arm, "classical") for arm in arms if arm in SYNTHETIC_ARMS]
    return pairs


def comparison_name(arm: str, other: str) -> str:
    return f"{arm} - {other}"


def build_report(results: dict[str, list[dict[str, Any]]], classes: Sequence[str], config: dict[str, Any],
                 data: dict[str, Any] | None = None) -> dict[str, Any]:
    """Aggregates per-run results into the report dict.

    Args:
        results: ``{arm: [run result, ...]}``; a run result holds the test metrics of
            :func:`cellgen.classify.metrics.classification_metrics` plus ``seed``,
            ``best_epoch``, ``best_val_loss``, ``epochs_trained``, ``train_seconds``,
            ``train_images`` and ``run_dir``.
        classes: class names in model id order.
        config: the resolved experiment config.
        data: image counts per split (recorded as is).
    """
    arms: dict[str, Any] = {}
    for arm, runs in results.items():
        summary = summarize_runs(runs, classes)
        summary["runs"] = [{key: run.get(key) for key in RUN_KEYS} | {
            "per_class_f1": {name: run["per_class"][name]["f1"] for name in classes}} for run in runs]
        arms[arm] = summary
    if "baseline" in arms:
        for arm, summary in arms.items():
            if arm != "baseline":
                summary["delta_vs_baseline"] = deltas_against(summary, arms["baseline"], classes)
    paired = {comparison_name(arm, other): {"arm": arm, "against": other,
                                            **paired_comparison(results[arm], results[other], classes)}
              for arm, other in comparison_pairs(list(results))}
    return {
        "kind": "classifier_report",
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "classes": list(classes),
        "mode": config.get("mode"),
        "positive": config.get("positive") or None,
        "backbone": config.get("backbone"),
        "seeds": sorted({run["seed"] for runs in results.values() for run in runs}),
        "data": data or {},
        "arms": arms,
        "paired": paired,
        "config": config,
    }


def _pm(stats: dict[str, float], digits: int = 3) -> str:
    if stats.get("n", 0) > 1:
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}"


def _signed(value: float, digits: int = 3) -> str:
    return f"{value:+.{digits}f}"


def report_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown tables."""
    classes = report["classes"]
    arms = report["arms"]
    config = report["config"]
    seeds = report["seeds"]
    lines = [
        "# Classifier augmentation benchmark",
        "",
        f"- backbone: {config.get('backbone')}"
        + (f" (alpha {config.get('alpha')})" if config.get("backbone") == "mobilenetv2" else "")
        + f", weights: {config.get('weights')}, image size {config.get('image_size')} px, "
          f"{config.get('epochs')} epochs, batch {config.get('batch_size')}, lr {config.get('learning_rate')}",
        f"- mode: {report['mode']}" + (f", positive class: {report['positive']}" if report.get("positive") else ""),
        f"- seeds: {', '.join(str(seed) for seed in seeds)} (mean ± sample std over seeds)",
        f"- synthetic amount: {config.get('synthetic_amount', '')}; limit_class: {config.get('limit_class') or 'none'}",
        f"- created {report['created']}",
        "",
        "## Summary (test split)",
        "",
        "| arm | weighted F1 | macro F1 | accuracy | Δ weighted F1 | Δ macro F1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for arm, summary in arms.items():
        delta = summary.get("delta_vs_baseline")
        lines.append(f"| {arm} | {_pm(summary['weighted_f1'])} | {_pm(summary['macro_f1'])} | "
                     f"{_pm(summary['accuracy'])} | {_signed(delta['weighted_f1']) if delta else '-'} | "
                     f"{_signed(delta['macro_f1']) if delta else '-'} |")
    lines += ["", "## Per-class F1", "", "| class | support | " + " | ".join(arms) + " |",
              "| --- | --- | " + " | ".join("---" for _ in arms) + " |"]
    for name in classes:
        support = next(iter(arms.values()))["per_class"][name]["support"]
        cells = []
        for summary in arms.values():
            cell = _pm(summary["per_class"][name]["f1"])
            delta = summary.get("delta_vs_baseline")
            if delta:
                cell += f" ({_signed(delta['per_class'][name]['f1'])})"
            cells.append(cell)
        lines.append(f"| {name} | {support} | " + " | ".join(cells) + " |")
    lines += ["", "Brackets: difference of the mean against the baseline arm.", ""]
    lines += paired_markdown(report)
    for arm, summary in arms.items():
        lines += [f"## {arm}: per-class metrics", "",
                  "| class | " + " | ".join(PER_CLASS_KEYS) + " |",
                  "| --- | " + " | ".join("---" for _ in PER_CLASS_KEYS) + " |"]
        for name in classes:
            lines.append(f"| {name} | " + " | ".join(_pm(summary["per_class"][name][key]) for key in PER_CLASS_KEYS)
                         + " |")
        lines += ["", f"![confusion matrix]({_confusion_name(arm)})", ""]
    lines += ["Per-class accuracy is the diagonal of the row-normalised confusion matrix (the theses' "
              "per-class accuracy; equal to recall).", "", "![per-class F1 by arm](f1_by_arm.png)", ""]
    data = report.get("data") or {}
    if data:
        lines += ["## Images", "", "```", _format_counts(data), "```", ""]
    return "\n".join(lines)


def interval_text(stats: dict[str, Any], digits: int = 3) -> str:
    """``+0.012 [-0.004, +0.028]`` (mean and 95 % interval of a paired difference); one seed: no interval."""
    if stats.get("mean") is None:
        return "-"
    if stats.get("low") is None:
        return f"{stats['mean']:+.{digits}f} (1 seed)"
    return f"{stats['mean']:+.{digits}f} [{stats['low']:+.{digits}f}, {stats['high']:+.{digits}f}]"


def paired_markdown(report: dict[str, Any]) -> list[str]:
    """The paired-differences table: one row per comparison, weighted F1 and every class's F1."""
    paired = report.get("paired") or {}
    if not paired:
        return []
    classes = report["classes"]
    lines = ["## Paired differences (same seeds)", "",
             "Per seed, arm minus the other arm (same initial weights and real images); mean and "
             "95 % Student-t interval over the seeds. **Bold**: the interval excludes 0.", "",
             "| comparison | weighted F1 | macro F1 | " + " | ".join(f"F1 {name}" for name in classes) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in classes) + " |"]

    def cell(stats):
        text = interval_text(stats)
        return f"**{text}**" if stats.get("clear") else text

    for name, comparison in paired.items():
        lines.append(f"| {name} | {cell(comparison['weighted_f1'])} | {cell(comparison['macro_f1'])} | "
                     + " | ".join(cell(comparison["per_class"][c]) for c in classes) + " |")
    return lines + [""]


def _format_counts(data: dict[str, Any], indent: int = 0) -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(" " * indent + f"{key}:")
            lines.append(_format_counts(value, indent + 2))
        else:
            lines.append(" " * indent + f"{key}: {value}")
    return "\n".join(lines)


def _confusion_name(arm: str) -> str:
    return f"confusion_{arm.replace('+', '_')}.png"


def write_report(report: dict[str, Any], directory: str | os.PathLike) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md``, ``confusion_<arm>.png`` and ``f1_by_arm.png``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    classes = report["classes"]
    written = {"json": write_json(directory / "report.json", report)}
    markdown = directory / "report.md"
    markdown.write_text(report_markdown(report), encoding="utf-8")
    written["markdown"] = markdown
    for arm, summary in report["arms"].items():
        written[f"confusion_{arm}"] = plot_confusion_matrix(
            summary["confusion_matrix"], classes, directory / _confusion_name(arm),
            title=f"{arm} (test, summed over {summary['seeds']} seed(s))")
    means = {arm: {name: summary["per_class"][name]["f1"]["mean"] for name in classes}
             for arm, summary in report["arms"].items()}
    errors = {arm: {name: summary["per_class"][name]["f1"]["std"] for name in classes}
              for arm, summary in report["arms"].items()}
    written["f1_bars"] = plot_grouped_bars(means, directory / "f1_by_arm.png", errors=errors, ylabel="test F1",
                                           title="per-class F1 by arm (mean ± std over seeds)")
    return written
