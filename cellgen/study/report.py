"""The study report: ``report.md``, a self-contained ``report.html`` and ``report.json``.

The report is built as a list of blocks (headings, paragraphs, tables, images)
and rendered twice: Markdown linking the PNG files of the study directory, and
HTML with every image embedded (base64), so the HTML can be mailed as one file.
It leads with the question, the verdict (paired differences over seeds with 95 %
intervals: :mod:`cellgen.study.analysis`) and the share of the scarcity loss won back.
``report.json`` holds the same answer as numbers: ``verdict`` (the sentences),
``paired`` (the classifier report's paired comparisons) and ``scarcity``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cellgen.runs import read_history, read_json, write_json
from cellgen.study import analysis
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


# Assets --------------------------------------------------------------------------


def _real_images(source: Path, class_name: str, count: int, size: int) -> np.ndarray:
    from cellgen.data import DataReader

    reader = DataReader(str(source), image_size=size, batch_size=count, shuffle=True, seed=0,
                        class_filter=class_name)
    images, _ = next(iter(reader.epoch(0)))
    return images[:count]


def _synthetic_images(folder: Path, count: int, size: int) -> np.ndarray:
    from cellgen.data import DataReader

    reader = DataReader(str(folder), image_size=size, batch_size=count, shuffle=False)
    images, _ = next(iter(reader.epoch(0)))
    return images[:count]


def real_vs_synthetic_grid(real: Path, class_name: str, folder: Path, size: int, path: Path, title: str,
                           per_row: int = 8) -> Path | None:
    """Two rows of real images of ``class_name`` (from the source ``real``) above two rows of the
    generated images in ``folder``; None when the folder is empty."""
    from cellgen.plots import save_image_grid

    if not folder.is_dir() or not any(folder.iterdir()):
        return None
    real_images = _real_images(real, class_name, per_row * 2, size)
    synthetic = _synthetic_images(folder, per_row * 2, size)
    labelled_rows = [("real", real_images[:per_row]), ("real", real_images[per_row:2 * per_row]),
                     ("synthetic", synthetic[:per_row]), ("synthetic", synthetic[per_row:2 * per_row])]
    labelled_rows = [(label, row) for label, row in labelled_rows if len(row)]
    # Short rows are padded with white so that every row starts a new grid line.
    padded = [np.concatenate([row, np.ones((per_row - len(row),) + row.shape[1:], row.dtype)])
              if len(row) < per_row else row for _, row in labelled_rows]
    labels = [label for label, _ in labelled_rows]
    scale = max(1, 96 // size)
    return save_image_grid(np.concatenate(padded), path, columns=per_row, row_labels=labels, title=title,
                           scale=scale)


def _real_vs_synthetic_grid(study, class_name: str, path: Path, per_row: int = 8) -> Path | None:
    return real_vs_synthetic_grid(study.kept_csv, class_name, study.synthetic_dir(class_name),
                                  study.config.image_size, path,
                                  f"{class_name}: real (kept training images) vs synthetic", per_row)


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



def training_curve_blocks(study, assets: Path) -> list[Block]:
    """A "Training curves" heading and the loss-curve image of every generator run of ``study``."""
    blocks = [Block("heading", "Training curves")]
    for title, run_path in study.generator_runs():
        curve = _loss_curve(Path(run_path), assets / f"loss_{Path(run_path).name}.png", title)
        if curve:
            blocks.append(Block("image", (curve, f"loss curves: {title}")))
    return blocks

def _read_report(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.is_file() else None


def scarce_class(study) -> str | None:
    """The capped class the study is about (the first target class with a cap)."""
    capped = [name for name in study.config.target_classes if name in study.config.limit_class]
    return capped[0] if capped else None


def study_answer(study) -> dict[str, Any]:
    """The question, verdict sentences, paired comparisons and scarcity block (``report.json``)."""
    config = study.config
    counts = read_json(study.directory / "data" / "counts.json")
    classifier = _read_report(study.classifier_dir / "report.json")
    reference = _read_report(study.reference_dir / "report.json")
    targets = list(config.target_classes)
    answer: dict[str, Any] = {"kind": "study_report", "question": question_text(study, counts),
                              "verdict": analysis.verdict_lines(classifier, targets),
                              "paired": (classifier or {}).get("paired", {}), "scarcity": None}
    name = scarce_class(study)
    if name and classifier:
        scarcity = analysis.scarcity_summary(classifier, reference, name)
        scarcity["real_images"] = {"original": counts["original"].get(name), "kept": counts["kept"].get(name)}
        answer["scarcity"] = scarcity
        answer["scarcity_sentence"] = analysis.scarcity_sentence(scarcity, counts["kept"].get(name),
                                                                 counts["original"].get(name))
    return answer


def question_text(study, counts: dict[str, Any]) -> str:
    config = study.config
    targets = ", ".join(config.target_classes)
    if config.conditional:
        how = (f"a class-conditional DDIM trained once on the kept images of every class"
               + (f", fine-tuned on {'that class' if len(config.target_classes) == 1 else 'each class'}"
                  if config.per_class_finetune else "")
               + f" (guidance {config.guidance:g})")
    elif config.acgan:
        how = ("an AC-GAN on a frozen Vanilla-GAN, both trained on the kept images of every class "
               "(Klang & Carlberg 2020)")
    else:
        how = f"a {config.generator} fine-tuned on {'that class' if len(config.target_classes) == 1 else 'each class'}"
    caps = [f"{name} cut to {counts['kept'].get(name)} of {counts['original'].get(name)} real training images"
            for name in config.limit_class]
    scarcity = f" With {', '.join(caps)}: " if caps else " "
    return (f"{scarcity}does adding synthetic {targets} images, made by {how}, improve the classifier's "
            f"F1 on the test split, beyond what classical augmentation (flips, quarter turns, zoom) already "
            f"wins back?").strip()


def build_blocks(study, answer: dict[str, Any] | None = None) -> list[Block]:
    """The report's blocks for a :class:`cellgen.study.pipeline.Study` (its paths, config and stage records)."""
    config = study.config
    directory = study.directory
    assets = directory / "report_assets"
    assets.mkdir(exist_ok=True)
    counts = read_json(directory / "data" / "counts.json")
    targets = list(config.target_classes)
    synthetic_counts = study.available_synthetic()
    classifier = _read_report(study.classifier_dir / "report.json")
    reference = _read_report(study.reference_dir / "report.json")
    answer = answer or study_answer(study)

    blocks = [Block("heading", "Augmentation study", 1)]
    blocks.append(Block("text", f"**Question.** {answer['question']}"))

    # Verdict first: it is what the reader came for.
    blocks.append(Block("heading", "Verdict"))
    if answer.get("scarcity_sentence"):
        blocks.append(Block("text", f"**Scarcity.** {answer['scarcity_sentence']}"))
    blocks.append(Block("list", answer["verdict"]))
    blocks.append(Block("text", "Arms share every seed (initial weights, the same real images, and the same order where the files are the same: the synthetic arms add files), so each "
                                "difference is taken per seed; a difference counts as clear only when its 95 % "
                                "Student-t interval over the seeds excludes 0. Few seeds and a small test split "
                                "give wide intervals."))

    blocks.append(Block("heading", "Data"))
    rows = [[name, counts["original"].get(name, 0), counts["kept"].get(name, 0),
             synthetic_counts.get(name, 0)] for name in counts["original"]]
    blocks.append(Block("text", f"Training data `{config.train}`, validation `{config.val}` (epoch selection), "
                                f"test `{config.test}` (reported). Scarcity cap: "
                                f"{config.limit_class or 'none'} (seed {config.seed}); every stage, generator "
                                "training and filter included, read only the kept images listed in "
                                "`data/train_kept.csv`"
                                + (" (except the reference classifier, `classifier_full/`, which trained on every "
                                   "real image to measure what the cap costs)" if study.has_reference else "")
                                + ". Synthetic images were added to training only, never to validation or test."
                                + (f" Generated at {config.generator_size} px and enlarged to {config.image_size} px "
                                   "for the classifier." if config.generator_size < config.image_size else "")))
    blocks.append(Block("table", (["class", "real (original)", "real (kept)", "synthetic"], rows)))

    blocks.append(Block("heading", "Settings"))
    settings = [
        ["generator", f"{config.generator} at {config.generator_size} px, base preset `{config.generator_preset}` "
                      f"{' '.join(config.generator_overrides)}".strip()
                      + (f"; guidance {config.guidance:g}, sampler {config.sampler or 'of the run'}"
                         if config.conditional else "")],
        ["fine-tuning", "none (one conditional generator, sampled per class)"
                        if config.conditional and not config.per_class_finetune else
                        f"AC-GAN on the frozen base, preset `{config.acgan_preset}` "
                        f"{' '.join(config.acgan_overrides)}".strip() if config.acgan else
                        f"preset `{config.finetune_preset or config.generator_preset}` "
                        f"{' '.join(config.finetune_overrides)}".strip()],
        ["synthetic classes", ", ".join(study.synthesised_classes())],
        ["filter", f"class probability >= {config.filter_threshold:g} under a classical classifier of the kept "
                   f"real images, {config.filter_candidates:g} candidates per image" if config.filtering else "off"],
        ["classifier", f"preset `{config.classifier_preset}` {' '.join(config.classifier_overrides)}".strip()],
        ["arms / seeds", f"{', '.join(config.arms)} / {config.seeds} (paired)"
                         + ("; reference: classical on the uncapped training set" if study.has_reference else "")],
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

    filter_summary = study.filter_dir / "summary.json"
    if config.filtering and filter_summary.is_file():
        summary = read_json(filter_summary)
        blocks.append(Block("text", f"Filter: a generated image was kept when the classical classifier of the kept "
                                    f"real images gave its class at least {config.filter_threshold:g} "
                                    "(`filter/scores.csv`)."))
        blocks.append(Block("table", (["class", "candidates", "passed", "kept", "needed", "mean probability"],
                                      [[name, row["candidates"], row["passed"], row["kept"], row["needed"],
                                        "-" if row["mean_probability"] is None else f"{row['mean_probability']:.3f}"]
                                       for name, row in summary.items()])))

    blocks.extend(training_curve_blocks(study, assets))

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
        blocks += _classifier_blocks(study, classifier, reference, targets)
    else:
        blocks.append(Block("text", "The classifier stage has not run."))
    blocks.append(Block("heading", "Attribution"))
    blocks.append(Block("text", "Methods: Klang & Carlberg (2020) and Nilsson & Zettergren (2023), CellaVision / "
                                "Lund University. PBC images: Acevedo et al., Data in Brief 30 (2020) 105474, "
                                "CC BY 4.0."))
    return blocks


def _arm_rows(report: dict[str, Any], targets: Sequence[str], label_suffix: str = "") -> list[list[str]]:
    rows = []
    for arm_name in report["arms"]:
        row = [arm_name + label_suffix]
        for path in (["weighted_f1"], ["macro_f1"], ["accuracy"]):
            row.append(analysis.mean_interval_text(analysis.arm_values(report, arm_name, path)))
        for name in targets:
            row.append(analysis.mean_interval_text(analysis.arm_values(report, arm_name, ["per_class_f1", name])))
        rows.append(row)
    return rows


def _classifier_blocks(study, classifier: dict[str, Any], reference: dict[str, Any] | None,
                       targets: Sequence[str]) -> list[Block]:
    from cellgen.classify.report import interval_text

    config = study.config
    blocks = []
    header = ["arm", "weighted F1", "macro F1", "accuracy"] + [f"F1 {name}" for name in targets]
    rows = _arm_rows(classifier, targets)
    if reference:
        rows += _arm_rows(reference, targets, " (every real image: reference)")
    blocks.append(Block("text", f"Test split, mean and 95 % t interval over {config.seeds} seed(s)"
                                + ("; the reference row trained the classical arm on the uncapped training set"
                                   if reference else "") + ". Full per-class tables: `classifier/report.md`."))
    blocks.append(Block("table", (header, rows)))
    paired = classifier.get("paired") or {}
    if paired:
        blocks.append(Block("text", "Paired differences per class (arm minus the other arm, per seed; mean and "
                                    "95 % interval; * the interval excludes 0):"))
        names = list(paired)
        per_class_rows = []
        for class_name in classifier["classes"]:
            row = [class_name]
            for name in names:
                stats = paired[name]["per_class"][class_name]
                row.append(interval_text(stats) + (" *" if stats.get("clear") else ""))
            per_class_rows.append(row)
        row = ["weighted F1"] + [interval_text(paired[name]["weighted_f1"])
                                 + (" *" if paired[name]["weighted_f1"].get("clear") else "") for name in names]
        per_class_rows.append(row)
        blocks.append(Block("table", (["class"] + names, per_class_rows)))
    for picture in sorted(study.classifier_dir.glob("*.png")):
        blocks.append(Block("image", (picture, picture.stem.replace("_", " "))))
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


def write_pages(directory: Path, answer: dict[str, Any], blocks: list[Block]) -> dict[str, Path]:
    """Writes ``report.json`` (``answer``), ``report.md`` and ``report.html`` (``blocks``) in ``directory``."""
    numbers = write_json(directory / "report.json", answer)
    markdown = directory / "report.md"
    markdown.write_text(_markdown(blocks, directory), encoding="utf-8")
    page = directory / "report.html"
    page.write_text(_html(blocks), encoding="utf-8")
    return {"markdown": markdown, "html": page, "json": numbers}


def write_report(study) -> dict[str, Path]:
    """Writes ``report.md``, ``report.html`` and ``report.json`` in the study directory; returns their paths."""
    answer = study_answer(study)
    return write_pages(study.directory, answer, build_blocks(study, answer))
