"""The study report: ``report.md`` and a self-contained ``report.html``.

The report is built as a list of blocks (headings, paragraphs, tables, images)
and rendered twice: Markdown linking the PNG files of the study directory, and
HTML with every image embedded (base64), so the HTML can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cellgen.runs import read_history, read_json
from cellgen.study.config import STAGES


@dataclass
class Block:
    kind: str  # "heading", "text", "table", "image", "list"
    content: Any
    level: int = 2


def _precision_label(precision: str) -> str:
    return "each preset's own" if precision == "preset" else precision


def _mean_std(stats: dict[str, Any] | None, digits: int = 3) -> str:
    if not stats:
        return "-"
    mean, std = stats.get("mean"), stats.get("std")
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    # One repetition has no spread to show: "0.1234 ± 0.0000" would claim a precision it lacks.
    repetitions = stats.get("n", len(stats["values"]) if "values" in stats else 2)
    if std is None or repetitions < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


# Verdict -------------------------------------------------------------------------


def compare_arms(arm: dict[str, Any], baseline: dict[str, Any], metric_path: Sequence[str]) -> dict[str, Any]:
    """Difference of means between two arms for one metric, with a standard error.

    The standard error of a difference of independent means is
    sqrt(s_a^2 / n_a + s_b^2 / n_b); with one seed per arm there is no estimate.
    """

    def lookup(summary):
        value = summary
        for key in metric_path:
            value = value[key]
        return value

    a, b = lookup(arm), lookup(baseline)
    difference = a["mean"] - b["mean"]
    n_a, n_b = int(a.get("n", 1)), int(b.get("n", 1))
    if n_a > 1 and n_b > 1:
        standard_error = math.sqrt(a["std"] ** 2 / n_a + b["std"] ** 2 / n_b)
    else:
        standard_error = None
    return {"difference": difference, "standard_error": standard_error, "seeds": min(n_a, n_b),
            "arm_mean": a["mean"], "baseline_mean": b["mean"]}


def verdict_sentence(name: str, comparison: dict[str, Any]) -> str:
    """Plain words for a comparison: clear gain or loss only beyond two standard errors."""
    difference = comparison["difference"]
    error = comparison["standard_error"]
    numbers = f"{comparison['baseline_mean']:.3f} -> {comparison['arm_mean']:.3f} ({difference:+.3f}"
    if error is None:
        return (f"{name}: {numbers}, one seed). With a single seed there is no estimate of the run-to-run "
                "spread, so this difference is not evidence either way; run more seeds.")
    numbers += f" ± {error:.3f} standard error over {comparison['seeds']} seeds)"
    if error == 0 and difference == 0:
        return f"{name}: {numbers}: identical."
    if difference > 2 * error:
        return f"{name}: {numbers}: a clear improvement (more than two standard errors)."
    if difference < -2 * error:
        return f"{name}: {numbers}: clearly worse (more than two standard errors)."
    return f"{name}: {numbers}: no clear difference (within two standard errors of zero)."


# Assets --------------------------------------------------------------------------


def _real_images(kept_csv: Path, class_name: str, count: int, size: int) -> np.ndarray:
    from cellgen.data import DataReader

    reader = DataReader(str(kept_csv), image_size=size, batch_size=count, shuffle=True, seed=0,
                        class_filter=class_name)
    images, _ = next(iter(reader.epoch(0)))
    return images[:count]


def _synthetic_images(folder: Path, count: int, size: int) -> np.ndarray:
    from cellgen.data import DataReader

    reader = DataReader(str(folder), image_size=size, batch_size=count, shuffle=False)
    images, _ = next(iter(reader.epoch(0)))
    return images[:count]


def _real_vs_synthetic_grid(study, class_name: str, path: Path, per_row: int = 8) -> Path | None:
    from cellgen.plots import save_image_grid

    folder = study.synthetic_dir(class_name)
    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    size = study.config.image_size
    real = _real_images(study.kept_csv, class_name, per_row * 2, size)
    synthetic = _synthetic_images(folder, per_row * 2, size)
    labelled_rows = [("real", real[:per_row]), ("real", real[per_row:2 * per_row]),
                     ("synthetic", synthetic[:per_row]), ("synthetic", synthetic[per_row:2 * per_row])]
    labelled_rows = [(label, row) for label, row in labelled_rows if len(row)]
    # Short rows are padded with white so that every row starts a new grid line.
    padded = [np.concatenate([row, np.ones((per_row - len(row),) + row.shape[1:], row.dtype)])
              if len(row) < per_row else row for _, row in labelled_rows]
    labels = [label for label, _ in labelled_rows]
    scale = max(1, 96 // size)
    return save_image_grid(np.concatenate(padded), path, columns=per_row, row_labels=labels,
                           title=f"{class_name}: real (kept training images) vs synthetic", scale=scale)


def _loss_curve(run_path: Path, path: Path, title: str) -> Path | None:
    from cellgen.plots import plot_history

    history_file = run_path / "logs" / "history.csv"
    if not history_file.is_file():
        return None
    history = read_history(history_file)
    keys = [key for key in history if "loss" in key]
    if not keys or not history[keys[0]]:
        return None
    return plot_history(history, path, keys=keys, title=title)


# Report --------------------------------------------------------------------------


def build_blocks(study) -> list[Block]:
    """The report's blocks for a :class:`cellgen.study.pipeline.Study` (its paths, config and stage records)."""
    config = study.config
    directory = study.directory
    assets = directory / "report_assets"
    assets.mkdir(exist_ok=True)
    counts = read_json(directory / "data" / "counts.json")
    targets = list(config.target_classes)
    synthetic_counts = study.synthetic_counts()
    classifier_report_path = study.classifier_dir / "report.json"
    classifier = read_json(classifier_report_path) if classifier_report_path.is_file() else None

    blocks = [Block("heading", "Augmentation study", 1)]
    question = (f"Does adding synthetic {', '.join(targets)} images, made by a {config.generator} "
                f"fine-tuned on {'that class' if len(targets) == 1 else 'each class'}, improve the "
                f"classifier's F1 on the test split?")
    blocks.append(Block("text", f"**Question.** {question}"))

    # Verdict first: it is what the reader came for.
    blocks.append(Block("heading", "Verdict"))
    sentences = []
    if classifier and "baseline" in classifier["arms"]:
        for arm_name, arm in classifier["arms"].items():
            if arm_name == "baseline":
                continue
            sentences.append(verdict_sentence(f"{arm_name} vs baseline, weighted F1",
                                              compare_arms(arm, classifier["arms"]["baseline"], ["weighted_f1"])))
            for class_name in targets:
                sentences.append(verdict_sentence(
                    f"{arm_name} vs baseline, F1 of {class_name}",
                    compare_arms(arm, classifier["arms"]["baseline"], ["per_class", class_name, "f1"])))
    else:
        sentences.append("No classifier comparison with a baseline arm was run, so there is no verdict.")
    blocks.append(Block("list", sentences))
    blocks.append(Block("text", "A difference counts as clear only when it exceeds two standard errors of the "
                                "difference of the seed means; small test sets and few seeds give wide margins."))

    blocks.append(Block("heading", "Data"))
    rows = [[name, counts["original"].get(name, 0), counts["kept"].get(name, 0),
             synthetic_counts.get(name, 0)] for name in counts["original"]]
    blocks.append(Block("text", f"Training data `{config.train}`, validation `{config.val}` (epoch selection), "
                                f"test `{config.test}` (reported). Scarcity cap: "
                                f"{config.limit_class or 'none'} (seed {config.seed}); every stage, generator "
                                "training included, read only the kept images listed in `data/train_kept.csv`. "
                                "Synthetic images were added to training only, never to validation or test."))
    blocks.append(Block("table", (["class", "real (original)", "real (kept)", "synthetic"], rows)))

    blocks.append(Block("heading", "Settings"))
    settings = [
        ["generator", f"{config.generator}, base preset `{config.generator_preset}` "
                      f"{' '.join(config.generator_overrides)}".strip()],
        ["fine-tuning", f"preset `{config.finetune_preset or config.generator_preset}` "
                        f"{' '.join(config.finetune_overrides)}".strip()],
        ["classifier", f"preset `{config.classifier_preset}` {' '.join(config.classifier_overrides)}".strip()],
        ["arms / seeds", f"{', '.join(config.arms)} / {config.seeds}"],
        ["image size / precision / strategy", f"{config.image_size} px / {_precision_label(config.precision)} / {config.strategy}"],
    ]
    for stage in STAGES:
        if not study.is_done(stage):
            continue
        record = study.stage_record(stage)
        settings.append([f"stage {record['stage']}", f"{record['seconds']} s, finished {record['finished']}"])
    blocks.append(Block("table", (["setting", "value"], settings)))
    blocks.append(Block("text", "Every command the study ran is in `commands.sh`; each stage can be re-run by hand."))

    blocks.append(Block("heading", "Real vs synthetic"))
    for class_name in targets:
        grid = _real_vs_synthetic_grid(study, class_name, assets / f"real_vs_synthetic_{class_name}.png")
        if grid:
            blocks.append(Block("image", (grid, f"{class_name}: real vs synthetic")))

    blocks.append(Block("heading", "Training curves"))
    runs = [("base generator", study.base_run)] + [(f"fine-tuned on {name}", study.finetune_run(name))
                                                    for name in targets]
    for title, run_path in runs:
        curve = _loss_curve(Path(run_path), assets / f"loss_{Path(run_path).name}.png", title)
        if curve:
            blocks.append(Block("image", (curve, f"loss curves: {title}")))

    blocks.append(Block("heading", "Generator metrics"))
    metric_rows = []
    for class_name in targets:
        metrics_file = study.evaluation_dir / class_name / "metrics.json"
        if not metrics_file.is_file():
            continue
        result = read_json(metrics_file)
        summary = result.get("summary", {})
        memorization = result.get("memorization") or {}
        metric_rows.append([class_name] + [_mean_std(summary.get(name), 4) for name in
                                           ("fid", "kid", "precision", "recall", "density", "coverage")]
                           + [_memorization_text(memorization)])
    if metric_rows:
        extractor = study.stage_record("evaluate")["outputs"].get("extractor", "") if study.is_done("evaluate") else ""
        blocks.append(Block("text", f"Synthetic images against the real validation images of the class; features "
                                    f"from {extractor or 'the configured extractor'}. FID/KID on a few dozen small "
                                    "images are biased and noisy: compare runs, not absolute values. Precision "
                                    "and density measure fidelity, recall and coverage diversity (mode collapse "
                                    "shows as low recall/coverage)."))
        blocks.append(Block("table", (["class", "FID", "KID", "precision", "recall", "density", "coverage",
                                       "closer than 5 % of training pairs"], metric_rows)))
    else:
        blocks.append(Block("text", "Generator metrics were not computed (extractor = none)."))
    for class_name in targets:
        for picture in sorted((study.evaluation_dir / class_name).glob("*.png")):
            blocks.append(Block("image", (picture, f"{class_name}: {picture.stem.replace('_', ' ')}")))
    kits = [path for path in sorted((directory / "expert_kit").glob("*")) if path.is_dir()]
    if kits:
        blocks.append(Block("text", "Blinded expert-test kits (shuffled real and synthetic images, an answer "
                                    "sheet, the key stored apart): " + ", ".join(f"`{kit.relative_to(directory)}`"
                                                                                 for kit in kits)
                                    + ". Score with `expert_test.py score KIT answers.csv`."))

    blocks.append(Block("heading", "Classifier F1"))
    if classifier:
        arms = classifier["arms"]
        header = ["arm", "weighted F1", "macro F1", "accuracy"] + [f"F1 {name}" for name in targets]
        table_rows = []
        for arm_name, arm in arms.items():
            delta = arm.get("delta_vs_baseline") or {}
            row = [arm_name, _mean_std(arm["weighted_f1"]), _mean_std(arm["macro_f1"]), _mean_std(arm["accuracy"])]
            for name in targets:
                cell = _mean_std(arm["per_class"][name]["f1"])
                if delta:
                    cell += f" ({delta['per_class'][name]['f1']:+.3f})"
                row.append(cell)
            table_rows.append(row)
        blocks.append(Block("text", f"Test split, mean ± std over {config.seeds} seed(s); brackets: difference "
                                    "against the baseline arm. Full per-class tables: `classifier/report.md`."))
        blocks.append(Block("table", (header, table_rows)))
        per_class_rows = []
        for name in classifier["classes"]:
            row = [name]
            for arm_name, arm in arms.items():
                delta = arm.get("delta_vs_baseline")
                cell = _mean_std(arm["per_class"][name]["f1"])
                if delta:
                    cell += f" ({delta['per_class'][name]['f1']:+.3f})"
                row.append(cell)
            per_class_rows.append(row)
        blocks.append(Block("table", (["class"] + [f"F1 {arm}" for arm in arms], per_class_rows)))
        for picture in sorted(study.classifier_dir.glob("*.png")):
            blocks.append(Block("image", (picture, picture.stem.replace("_", " "))))
    else:
        blocks.append(Block("text", "The classifier stage has not run."))
    blocks.append(Block("heading", "Attribution"))
    blocks.append(Block("text", "Methods: Klang & Carlberg (2020) and Nilsson & Zettergren (2023), CellaVision / "
                                "Lund University. PBC images: Acevedo et al., Data in Brief 30 (2020) 105474, "
                                "CC BY 4.0."))
    return blocks


def _memorization_text(memorization: dict[str, Any]) -> str:
    """Share of generated images closer to a training image than the training images'
    own 5 % nearest-neighbour quantile, in feature and pixel space (expected ~5 % or less)."""
    parts = []
    for space in ("features", "pixels"):
        share = (memorization.get(space) or {}).get("share_below")
        if isinstance(share, (int, float)):
            parts.append(f"{space}: {100 * share:.1f}%")
    return ", ".join(parts) if parts else "-"


def _markdown(blocks: list[Block], directory: Path) -> str:
    lines: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            lines += ["#" * block.level + " " + block.content, ""]
        elif block.kind == "text":
            lines += [block.content, ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.content] + [""]
        elif block.kind == "table":
            header, rows = block.content
            lines.append("| " + " | ".join(str(cell) for cell in header) + " |")
            lines.append("| " + " | ".join("---" for _ in header) + " |")
            lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
            lines.append("")
        elif block.kind == "image":
            path, caption = block.content
            lines += [f"![{caption}]({Path(path).resolve().relative_to(directory.resolve())})", ""]
    return "\n".join(lines)


def _inline_markdown(text: str) -> str:
    """Escapes text and renders the two inline marks the report uses (**bold**, `code`)."""
    escaped = html.escape(text)
    parts = escaped.split("`")
    escaped = "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))
    parts = escaped.split("**")
    return "".join(f"<strong>{part}</strong>" if index % 2 else part for index, part in enumerate(parts))


def _html(blocks: list[Block]) -> str:
    body: list[str] = []
    for block in blocks:
        if block.kind == "heading":
            body.append(f"<h{block.level}>{html.escape(block.content)}</h{block.level}>")
        elif block.kind == "text":
            body.append(f"<p>{_inline_markdown(block.content)}</p>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline_markdown(item)}</li>" for item in block.content) + "</ul>")
        elif block.kind == "table":
            header, rows = block.content
            head = "".join(f"<th>{html.escape(str(cell))}</th>" for cell in header)
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                            for row in rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif block.kind == "image":
            path, caption = block.content
            data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:980px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;"
             "text-align:left}th{background:#f2f2f2}img{max-width:100%}figure{margin:1em 0}"
             "figcaption{color:#555;font-size:90%}code{background:#f4f4f4;padding:0 3px}")
    return ("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>cellgen study report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def write_report(study) -> dict[str, Path]:
    """Writes ``report.md`` and ``report.html`` in the study directory; returns their paths."""
    blocks = build_blocks(study)
    markdown = study.directory / "report.md"
    markdown.write_text(_markdown(blocks, study.directory), encoding="utf-8")
    page = study.directory / "report.html"
    page.write_text(_html(blocks), encoding="utf-8")
    return {"markdown": markdown, "html": page}
