"""The attribute study's numbers and report (``report.md``, ``report.html``, ``report.json``).

:func:`classifier_comparison` pairs the binary classifier experiments of an
:class:`~cellgen.study.attribute_study.AttributeStudy` by seed: each experiment trains repeat k
with seed ``seed + k`` (the same initial weights and real images), so a synthetic arm of one
generator (``classifier/<generator>``) and its real-only counterpart (``classifier/real``) differ
per seed only by the synthetic positives. For the F1 of the positive class and the accuracy
(recall) of the normal class, N&Z's two numbers (their Table 4: the normal class's accuracy
dropped as the abnormal F1 rose), it gives per arm the mean and 95 % t interval over seeds and per
pair the paired differences with their 95 % t interval
(:func:`cellgen.classify.metrics.paired_difference`); a difference is clear only when that
interval excludes 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cellgen.classify.metrics import paired_difference, t_interval
from cellgen.runs import read_json
from cellgen.study.analysis import difference_sentence
from cellgen.study.config import STAGES
from cellgen.study.report import Block, real_vs_synthetic_grid, training_curve_blocks, write_pages

# A synthetic arm and the real-only arm it is paired with (the same arm without synthetic images).
COUNTERPART = {"synthetic": "baseline", "classical+synthetic": "classical"}
TITLES = {"conditional": "attribute-conditioned DDIM", "finetuned": "base DDIM fine-tuned on the positives"}
# The classifier experiment of the real-only arms (the others are named after their generator).
REAL_EXPERIMENT = "real"


def negative_class(positive_label: str) -> str:
    """The negatives' class in the binary classifier's model (``not_<positive>``)."""
    from cellgen.classify.mixing import negative_name

    return negative_name(positive_label)


def _metric_paths(positive: str, normal: str) -> dict[str, list[str]]:
    return {"f1_positive": ["per_class", positive, "f1"], "normal_accuracy": ["per_class", normal, "recall"],
            "weighted_f1": ["weighted_f1"]}


def _full_runs(report: dict[str, Any], arm: str) -> list[dict[str, Any]]:
    """The test metrics (``metrics/test.json``: every class's precision, recall, F1) of each seed of an arm."""
    return [read_json(Path(run["run_dir"]) / "metrics" / "test.json") for run in report["arms"][arm]["runs"]]


def arm_label(arm: str, generator: str | None) -> str:
    """``synthetic (conditional)``; a real-only arm keeps its name."""
    return arm if generator is None else f"{arm} ({generator})"


def classifier_comparison(study) -> dict[str, Any]:
    """Per arm and pair of arms, the positive F1 and normal-class accuracy over the paired seeds (module docstring).

    Returns:
        ``{"positive", "normal", "arms": {label: {"experiment", "seeds", metric: t_interval}},
        "paired": {"A - B": {"arm", "against", metric: paired_difference}}}``.
    """
    positive = study.positive_label
    normal = negative_class(positive)
    paths = _metric_paths(positive, normal)
    runs: dict[str, list[dict[str, Any]]] = {}
    experiment_of: dict[str, str] = {}
    for name in study.experiments():
        report = read_json(study.experiment_dir(name) / "report.json")
        for arm in report["arms"]:
            label = arm_label(arm, None if name == REAL_EXPERIMENT else name)
            runs[label] = _full_runs(report, arm)
            experiment_of[label] = name
    arms = {}
    for label, arm_runs in runs.items():
        summary: dict[str, Any] = {"experiment": experiment_of[label], "seeds": [int(run["seed"]) for run in arm_runs]}
        for metric, path in paths.items():
            values = [float(_at(run, path)) for run in arm_runs]
            summary[metric] = {**t_interval(values), "values": values}
        arms[label] = summary
    pairs = []
    for generator in (study.generators if study.synthetic_arms else []):
        for arm in study.synthetic_arms:
            other = COUNTERPART[arm] if COUNTERPART[arm] in study.real_arms else (
                "baseline" if "baseline" in study.real_arms else None)
            if other is not None:
                pairs.append((arm_label(arm, generator), other))
    if len(study.generators) > 1:
        first, second = study.generators[:2]
        pairs += [(arm_label(arm, first), arm_label(arm, second)) for arm in study.synthetic_arms]
    paired = {}
    for label, other in pairs:
        paired[f"{label} - {other}"] = {"arm": label, "against": other, **{
            metric: paired_difference(runs[label], runs[other], path) for metric, path in paths.items()}}
    return {"positive": positive, "normal": normal, "arms": arms, "paired": paired}


def _at(run: dict[str, Any], path: list[str]) -> Any:
    value: Any = run
    for key in path:
        value = value[key]
    return value


def _share(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _interval(stats: dict[str, Any]) -> str:
    if stats.get("mean") is None:
        return "-"
    if stats.get("low") is None:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} [{stats['low']:.3f}, {stats['high']:.3f}]"


def _difference(stats: dict[str, Any]) -> str:
    if stats.get("mean") is None:
        return "-"
    if stats.get("low") is None:
        return f"{stats['mean']:+.3f} (one seed)"
    return f"{stats['mean']:+.3f} [{stats['low']:+.3f}, {stats['high']:+.3f}]" + (" *" if stats.get("clear") else "")


def fidelity_rows(fidelity: dict[str, Any]) -> list[dict[str, Any]]:
    """The fidelity table as rows: per attribute, the real validation images of the requested value and
    each generator, with the share the attribute classifier calls the requested value."""
    rows = []
    for attribute, entry in fidelity.items():
        real = entry["real_val"]
        rows.append({"attribute": attribute, "requested": entry["requested"], "images": "real validation",
                     "count": real["requested_images"], "called_requested": real["called_requested"]})
        for name, result in entry["generators"].items():
            rows.append({"attribute": attribute, "requested": entry["requested"], "images": name,
                         "count": result["images"], "called_requested": result["called_requested"]})
    return rows


def question_text(study) -> str:
    config = study.config
    return (f"Does a binary classifier of {study.positive_label} ({' and '.join(config.positive)}) against the "
            f"other cells of {' and '.join(config.population)} (N&Z 2023, Table 4) gain F1 on the positive class "
            f"from synthetic positives, made by "
            + " or by ".join(TITLES[name] for name in study.generators)
            + ", and what does the normal class's accuracy do? And do the generated cells carry the attribute "
              "they were asked for?")


def attribute_answer(study) -> dict[str, Any]:
    """``report.json``: question, verdict sentences, the fidelity table, every arm and the paired differences."""
    counts = read_json(study.directory / "data" / "counts.json")
    fidelity_file = study.evaluation_dir / "fidelity.json"
    fidelity = read_json(fidelity_file) if fidelity_file.is_file() else {}
    comparison_file = study.classifier_dir / "comparison.json"
    comparison = read_json(comparison_file) if comparison_file.is_file() else None
    verdict = []
    for attribute, entry in fidelity.items():
        real = entry["real_val"]
        parts = [f"{TITLES[name]} {_share(result['called_requested'])} of {result['images']}"
                 for name, result in entry["generators"].items()]
        verdict.append(f"Attribute fidelity ({attribute}={entry['requested']}): the classifier trained on real "
                       f"training images calls {_share(real['called_requested'])} of the "
                       f"{real['requested_images']} real validation cells so, and of the generated cells: "
                       + "; ".join(parts) + ".")
    if comparison and comparison["paired"]:
        for name, pair in comparison["paired"].items():
            verdict.append(difference_sentence(f"{name}, F1 of {comparison['positive']}", pair["f1_positive"]))
            verdict.append(difference_sentence(f"{name}, accuracy of the normal class ({comparison['normal']})",
                                               pair["normal_accuracy"]))
    elif comparison is not None:
        verdict.append("No two arms were compared (give a real-only arm and a synthetic arm).")
    return {"kind": "attribute_study_report", "question": question_text(study), "verdict": verdict,
            "positive": list(study.config.positive), "population": list(study.config.population),
            "positive_label": study.positive_label, "counts": counts,
            "generators": {name: {"title": TITLES[name], "run": str(study.generator_run(name)),
                                  "synthetic": str(study.synthetic_dir(name))} for name in study.generators},
            "fidelity": fidelity, "fidelity_table": fidelity_rows(fidelity),
            "classifier": comparison, "paired": (comparison or {}).get("paired", {})}


def build_blocks(study, answer: dict[str, Any]) -> list[Block]:
    config = study.config
    assets = study.directory / "report_assets"
    assets.mkdir(exist_ok=True)
    counts = answer["counts"]
    label = study.positive_label
    blocks = [Block("heading", "Attribute study", 1), Block("text", f"**Question.** {answer['question']}"),
              Block("heading", "Verdict"), Block("list", answer["verdict"] or ["No stage has produced numbers yet."]),
              Block("text", "Every experiment trains repeat k with the same seed, so each synthetic arm is paired per "
                            "seed with its real-only counterpart; a difference is clear (*) only when its 95 % "
                            "Student-t interval over the seeds excludes 0.")]
    blocks.append(Block("heading", "Data"))
    blocks.append(Block("text", f"Training `{config.train}`, validation `{config.val}` (epoch selection, attribute "
                                f"fidelity, expert kit), test `{config.test}` (reported); attributes "
                                f"`{config.attributes_csv}`. Every generator and classifier fit read only the "
                                f"population's training images (`data/population_train.csv`, "
                                f"{sum(counts['population'].values())} images); synthetic images entered training "
                                "only, never validation or test."))
    blocks.append(Block("table", (["split", label, config.negative_label],
                                  [[split, row[label], row[config.negative_label]]
                                   for split, row in counts["binary"].items()])))
    settings = [["generators", ", ".join(TITLES[name] for name in study.generators)],
                ["DDIM preset", f"`{config.generator_preset}` {' '.join(config.generator_overrides)} at "
                                f"{config.generator_size} px".replace("  ", " ")],
                ["fine-tune", f"`{config.finetune_preset or config.generator_preset}` "
                              f"{' '.join(config.finetune_overrides)}".strip()],
                ["sampling", f"{config.sample_steps} steps; the conditional DDIM with guidance {config.guidance:g}"],
                ["attribute classifier", f"`{config.attribute_classifier_preset}` "
                                         f"{' '.join(config.attribute_classifier_overrides)}".strip()],
                ["binary classifier", f"`{config.classifier_preset}` {' '.join(config.classifier_overrides)}, "
                                      f"arms {', '.join(config.arms)}, {config.seeds} paired seed(s), validation "
                                      "positives oversampled to the negative count"]]
    for stage in STAGES:
        if study.is_done(stage):
            record = study.stage_record(stage)
            settings.append([f"stage {stage}", f"{record['seconds']} s"])
    blocks.append(Block("heading", "Settings"))
    blocks.append(Block("table", (["setting", "value"], settings)))
    blocks.append(Block("text", "Every command the study ran is in `commands.sh`."))

    blocks.append(Block("heading", "Attribute fidelity"))
    if answer["fidelity_table"]:
        blocks.append(Block("text", "Share of images the attribute classifier (trained on the population's real "
                                    "training images only, balanced value weights) calls the requested value; the "
                                    "real validation row is the ceiling to hold a generator to. Per-value shares: "
                                    "`evaluation/fidelity.md`."))
        blocks.append(Block("table", (["attribute", "requested", "images", "n", "called requested"],
                                      [[row["attribute"], row["requested"], TITLES.get(row["images"], row["images"]),
                                        row["count"], _share(row["called_requested"])]
                                       for row in answer["fidelity_table"]])))
    else:
        blocks.append(Block("text", "The evaluate stage has not run."))
    for name in study.generators:
        grid = real_vs_synthetic_grid(study.binary_csv("train"), label, study.synthetic_dir(name), config.image_size,
                                      assets / f"real_vs_{name}.png", f"{label}: real (training) vs {TITLES[name]}")
        if grid:
            blocks.append(Block("image", (grid, f"{label}: real vs {TITLES[name]}")))
    kits = [study.kit_dir(name) for name in study.generators if study.kit_dir(name).is_dir()]
    if kits:
        blocks.append(Block("text", "Blinded expert kits (real validation and generated positives, shuffled; the key "
                                    "stored apart): " + ", ".join(f"`{kit.relative_to(study.directory)}`" for kit in kits)
                                    + ". Score with `expert_test.py score KIT answers.csv`."))

    blocks.append(Block("heading", "Binary classifier"))
    comparison = answer["classifier"]
    if comparison:
        blocks.append(Block("text", f"Test split, mean and 95 % t interval over the seeds. F1 of {label}; accuracy of "
                                    f"the normal class ({comparison['normal']}: the share of the other cells called "
                                    "so). Per-experiment reports: `classifier/*/report.md`."))
        blocks.append(Block("table", (["arm", f"F1 {label}", "normal-class accuracy", "weighted F1"],
                                      [[name, _interval(arm["f1_positive"]), _interval(arm["normal_accuracy"]),
                                        _interval(arm["weighted_f1"])] for name, arm in comparison["arms"].items()])))
        if comparison["paired"]:
            blocks.append(Block("text", "Paired differences (per seed; mean and 95 % interval; * excludes 0):"))
            blocks.append(Block("table", (["comparison", f"F1 {label}", "normal-class accuracy"],
                                          [[name, _difference(pair["f1_positive"]), _difference(pair["normal_accuracy"])]
                                           for name, pair in comparison["paired"].items()])))
    else:
        blocks.append(Block("text", "The classify stage has not run."))

    blocks.extend(training_curve_blocks(study, assets))
    blocks.append(Block("heading", "Attribution"))
    blocks.append(Block("text", "Method: Nilsson & Zettergren (2023). Attributes: WBCAtt, Tsutsui, Pang and Wen, "
                                "NeurIPS 2023 Datasets and Benchmarks (MIT licence). PBC images: Acevedo et al., "
                                "Data in Brief 30 (2020) 105474, CC BY 4.0."))
    return blocks


def write_attribute_report(study) -> dict[str, Path]:
    """Writes ``report.json``, ``report.md`` and ``report.html`` in the study directory; returns their paths."""
    answer = attribute_answer(study)
    return write_pages(study.directory, answer, build_blocks(study, answer))
