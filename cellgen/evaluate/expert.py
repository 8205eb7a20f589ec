"""Expert real-vs-synthetic test kit: make a shuffled image set, score the answers.

Both theses let a person who reads blood smears for a living judge a mix of
real and generated cells (Klang & Carlberg 2020, section 4.4 and Table 2: a
medical technologist, 50 real and 50 Vanilla-GAN images; Nilsson & Zettergren
2023, section 4.4 and Tables 9-14: a medical expert and a CellaVision employee,
50 real and 50 DDIM images over three abnormalities). The expert is not told
the ratio and the images come in random order.

A kit folder::

    KIT/
      expert/                 give this folder to the expert
        images/001.png ...    every image re-encoded as PNG at one size, so that
                              file format, size or name do not give the answer away
        answers.csv           id,answer  - fill in "real" or "synthetic"
        INSTRUCTIONS.txt
      key/                    keep this folder: the answers
        key.csv               id,truth,class,source
        kit.json              seed, counts, sizes, sources

Scoring treats "real" as the positive class, as the theses do: recall
(sensitivity) is the share of real images called real, specificity the share of
synthetic images called synthetic (N&Z section 3.12, Table 14). Low
specificity means the synthetic images pass as real.

Example:
    >>> make_kit("pbc128/val", "synthetic/", "kits/k1", n=100, seed=7)     # doctest: +SKIP
    >>> result = score_kit("kits/k1", "answers_filled.csv")                # doctest: +SKIP
    >>> print(format_tables(result))                                      # doctest: +SKIP
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import shutil
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.features import read_files

REAL = "real"
SYNTHETIC = "synthetic"
TRUTHS = (REAL, SYNTHETIC)
# Accepted spellings in an answer sheet (case-insensitive); K&C's Table 2 says "Fake".
ANSWER_ALIASES = {"real": REAL, "r": REAL, "synthetic": SYNTHETIC, "s": SYNTHETIC, "fake": SYNTHETIC,
                  "generated": SYNTHETIC}
EXPERT_DIR = "expert"
KEY_DIR = "key"
SINGLE_CLASS = "all"

INSTRUCTIONS = """\
Real or synthetic?

The folder images/ holds {count} numbered images of white blood cells. Some are
photographs of real cells, some were made by a computer program. The share of
each is not given; it may be anything.

For every image, write "real" or "synthetic" in the answer column of
answers.csv (one row per image id). Please answer every image, even when
unsure. Do not rename the images.
"""


# ---------------------------------------------------------------------------
# Making a kit


def _split_counts(total: int, classes: Sequence[str]) -> dict[str, int]:
    base, remainder = divmod(total, len(classes))
    return {name: base + (1 if index < remainder else 0) for index, name in enumerate(classes)}


def _real_counts(per_class: Mapping[str, int], real_share: float) -> dict[str, int]:
    """Real images per class. The kit's real total is ``total x real_share`` rounded half up (so an
    even kit at the default 0.5 is exactly half real, as in both theses), spread over the classes
    by largest remainder, ties to the classes in order: every class is within one image of its
    share. (Rounding each class on its own gave 48 real of 100 over 8 classes.)"""
    share = Decimal(repr(float(real_share)))
    target = int((Decimal(sum(per_class.values())) * share).to_integral_value(rounding=ROUND_HALF_UP))
    ideal = {name: Decimal(count) * share for name, count in per_class.items()}
    counts = {name: int(value) for name, value in ideal.items()}  # floor: the values are >= 0
    names = list(per_class)
    by_remainder = sorted(names, key=lambda name: (-(ideal[name] - counts[name]), names.index(name)))
    for name in by_remainder[:max(0, target - sum(counts.values()))]:
        counts[name] += 1
    return {name: min(count, per_class[name]) for name, count in counts.items()}


def _list_source(source, what: str, class_filter=None, crop=None):
    from cellgen.data import DataError, DataReader

    try:
        reader = DataReader(source, crop=crop, batch_size=1, shuffle=False, class_filter=class_filter, workers=0)
    except DataError as error:
        message = str(error)
        raise EvaluationError(message if os.fspath(source) in message else f"{what} {source}: {message}") from None
    files: dict[str, list[str]] = {}
    for path, class_name in reader.kept_files():
        files.setdefault(class_name, []).append(path)
    return reader, files


def make_kit(real, synthetic, out, n: int = 100, seed: int = 0, real_share: float = 0.5,
             image_size: int | None = None, real_crop=None, class_name: str | None = None,
             counts: Mapping[str, int] | None = None, overwrite: bool = False) -> Path:
    """Builds an expert test kit (layout in the module docstring).

    Args:
        real: folder of real images (class folders, a flat folder or a CSV).
        synthetic: folder of synthetic images. With class sub-folders the kit covers
            those classes (each must exist in ``real``) and is scored per class.
        out: kit folder to create.
        n: total number of images (split evenly over the classes unless ``counts``); an even
            ``n`` at ``real_share=0.5`` is exactly half real, half synthetic.
        seed: seeds the choice of images and their order; the same seed gives the same kit.
        real_share: share of real images in the kit (0.5 unless told otherwise), each class
            within one image of it.
        image_size: side of every kit image (default: the synthetic images' size).
        real_crop: center crop of the real images before resizing (as the generator's training crop).
        class_name: real class to use when the synthetic folder is flat and ``real`` has several classes.
        counts: images per class (overrides ``n``), e.g. ``{"hypersegmented": 40, "dohle": 30}``.
        overwrite: replace an existing kit folder.

    Returns:
        The kit folder.

    Raises:
        EvaluationError: too few images, unknown classes, an existing kit, bad options.
    """
    if not 0.0 <= real_share <= 1.0:
        raise EvaluationError(f"--real-share must be in [0, 1], got {real_share}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise EvaluationError(f"{out}: folder exists and is not empty; choose another --out")
        shutil.rmtree(out)
    synthetic_reader, synthetic_files = _list_source(synthetic, "synthetic")
    if synthetic_reader.labelled:
        classes = list(synthetic_files)
        if class_name is not None and class_name not in classes:
            raise EvaluationError(f"--class {class_name!r} is not a class folder of {synthetic}")
        if class_name is not None:
            classes = [class_name]
        real_reader, real_files = _list_source(real, "real", class_filter=classes, crop=real_crop)
    else:
        real_reader, real_files = _list_source(real, "real", class_filter=class_name, crop=real_crop)
        if len(real_files) > 1:
            raise EvaluationError(f"{synthetic} is a flat folder (one class) but {real} has "
                                  f"{len(real_files)} classes; pass --class to choose the real class")
        classes = [class_name or (next(iter(real_files)) if real_reader.labelled else SINGLE_CLASS)]
        real_files = {classes[0]: next(iter(real_files.values()))}
        synthetic_files = {classes[0]: next(iter(synthetic_files.values()))}
    if counts:
        unknown = sorted(set(counts) - set(classes))
        if unknown:
            raise EvaluationError(f"--counts: unknown class(es) {', '.join(unknown)}; kit classes: {', '.join(classes)}")
        per_class = {name: int(counts.get(name, 0)) for name in classes}
    else:
        if n < 2:
            raise EvaluationError(f"--n must be at least 2, got {n}")
        per_class = _split_counts(n, classes)
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, str, str]] = []  # (truth, class, path)
    real_counts = _real_counts(per_class, real_share)
    for name in classes:
        wanted = {REAL: real_counts[name], SYNTHETIC: per_class[name] - real_counts[name]}
        pools = {REAL: real_files.get(name, []), SYNTHETIC: synthetic_files.get(name, [])}
        for truth in TRUTHS:
            pool = pools[truth]
            folder = real if truth == REAL else synthetic
            if wanted[truth] > len(pool):
                raise EvaluationError(f"{folder}: class '{name}' has {len(pool)} {truth} images, "
                                      f"the kit needs {wanted[truth]}")
            picks = rng.choice(len(pool), size=wanted[truth], replace=False)
            chosen.extend((truth, name, pool[index]) for index in np.sort(picks))
    if not chosen:
        raise EvaluationError("the kit would hold no images (check --n and --counts)")
    if image_size is None:
        image_size = int(synthetic_reader.image_shape[0])
    if image_size < 8:
        raise EvaluationError(f"--size must be at least 8, got {image_size}")
    order = rng.permutation(len(chosen))
    real_paths = [path for truth, _, path in chosen if truth == REAL]
    synthetic_paths = [path for truth, _, path in chosen if truth == SYNTHETIC]
    pixels = {}
    if real_paths:
        pixels.update(zip(real_paths, read_files(real_paths, image_size, real_crop)))
    if synthetic_paths:
        pixels.update(zip(synthetic_paths, read_files(synthetic_paths, image_size, None)))

    from cellgen.images import write_rgb
    from cellgen.runs import write_json

    width = max(3, len(str(len(chosen))))
    images_dir = out / EXPERT_DIR / "images"
    key_dir = out / KEY_DIR
    images_dir.mkdir(parents=True)
    key_dir.mkdir(parents=True)
    key_rows = []
    for position, index in enumerate(order, start=1):
        truth, name, path = chosen[index]
        image_id = f"{position:0{width}d}"
        write_rgb(images_dir / f"{image_id}.png", pixels[path])
        key_rows.append({"id": image_id, "truth": truth, "class": name, "source": os.path.abspath(path)})
    with open(out / EXPERT_DIR / "answers.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "answer"])
        writer.writerows([row["id"], ""] for row in key_rows)
    (out / EXPERT_DIR / "INSTRUCTIONS.txt").write_text(INSTRUCTIONS.format(count=len(key_rows)), encoding="utf-8")
    with open(key_dir / "key.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "truth", "class", "source"])
        writer.writeheader()
        writer.writerows(key_rows)
    write_json(key_dir / "kit.json", {
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "seed": seed, "real_share": real_share, "image_size": image_size, "real_crop": real_crop,
        "real": os.path.abspath(os.fspath(real)), "synthetic": os.path.abspath(os.fspath(synthetic)),
        "classes": classes,
        "counts": {name: {truth: sum(1 for t, c, _ in chosen if t == truth and c == name) for truth in TRUTHS}
                   for name in classes},
        "total": len(key_rows),
    })
    return out


# ---------------------------------------------------------------------------
# Reading key and answers


def read_key(kit) -> list[dict[str, str]]:
    """The rows of ``KIT/key/key.csv`` (id, truth, class, source).

    Raises:
        EvaluationError: not a kit folder or a malformed key.
    """
    path = Path(kit) / KEY_DIR / "key.csv"
    if not path.is_file():
        raise EvaluationError(f"{kit}: not an expert test kit (no {KEY_DIR}/key.csv)")
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    for line, row in enumerate(rows, start=2):
        if row.get("truth") not in TRUTHS or not row.get("id"):
            raise EvaluationError(f"{path}: line {line} is malformed (expected id,truth,class,source)")
    return rows


def read_answers(path, ids: Sequence[str]) -> dict[str, str]:
    """Reads a filled answer sheet (columns ``id,answer``) and checks it against the kit ids.

    Returns:
        id -> ``"real"`` or ``"synthetic"``.

    Raises:
        EvaluationError: a one-line message naming the file and the problem: missing file or
            columns, unknown or repeated ids, ids without an answer, or an unknown label.
    """
    path = Path(path)
    if not path.is_file():
        raise EvaluationError(f"{path}: answers file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise EvaluationError(f"{path}: not a readable CSV file ({error})") from None
    if not rows:
        raise EvaluationError(f"{path}: empty file (expected an 'id,answer' header)")
    header = [cell.strip().lower() for cell in rows[0]]
    for column in ("id", "answer"):
        if column not in header:
            raise EvaluationError(f"{path}: missing column '{column}' (line 1 has: {', '.join(rows[0]) or 'nothing'})")
    id_column, answer_column = header.index("id"), header.index("answer")
    known = set(ids)
    width = max(len(value) for value in ids) if ids else 0
    answers: dict[str, str] = {}
    unanswered, unknown = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        cells = row + [""] * (max(id_column, answer_column) + 1 - len(row))
        image_id = cells[id_column].strip()
        if image_id.isdigit() and image_id not in known:
            image_id = image_id.zfill(width)  # a spreadsheet may have dropped the leading zeros
        if image_id not in known:
            unknown.append(image_id or f"(empty, line {line})")
            continue
        if image_id in answers:
            raise EvaluationError(f"{path}: line {line}: id {image_id} is answered twice")
        label = cells[answer_column].strip().lower()
        if not label:
            unanswered.append(image_id)
            answers[image_id] = ""
            continue
        if label not in ANSWER_ALIASES:
            raise EvaluationError(f"{path}: line {line}: unknown answer {cells[answer_column].strip()!r} "
                                  f"for id {image_id} (write real or synthetic)")
        answers[image_id] = ANSWER_ALIASES[label]
    if unknown:
        raise EvaluationError(f"{path}: {len(unknown)} id(s) not in the kit: {_short_list(unknown)}")
    missing = sorted(known - set(answers)) + sorted(unanswered)
    if missing:
        raise EvaluationError(f"{path}: no answer for {len(missing)} id(s): {_short_list(sorted(missing))}")
    return answers


def _short_list(items: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


# ---------------------------------------------------------------------------
# Scoring


def confusion_counts(truths: Sequence[str], answers: Sequence[str]) -> dict[str, dict[str, int]]:
    """``matrix[actual][predicted]`` counts over real/synthetic."""
    matrix = {actual: {predicted: 0 for predicted in TRUTHS} for actual in TRUTHS}
    for truth, answer in zip(truths, answers):
        matrix[truth][answer] += 1
    return matrix


def metrics_from_confusion(matrix: Mapping[str, Mapping[str, int]]) -> dict[str, float | None]:
    """Accuracy, recall (real called real) and specificity (synthetic called synthetic).

    A metric whose denominator is zero is ``None``.
    """
    real_real, real_synthetic = matrix[REAL][REAL], matrix[REAL][SYNTHETIC]
    synthetic_real, synthetic_synthetic = matrix[SYNTHETIC][REAL], matrix[SYNTHETIC][SYNTHETIC]
    total = real_real + real_synthetic + synthetic_real + synthetic_synthetic

    def ratio(numerator: int, denominator: int) -> float | None:
        return numerator / denominator if denominator else None

    return {
        "accuracy": ratio(real_real + synthetic_synthetic, total),
        "recall": ratio(real_real, real_real + real_synthetic),
        "specificity": ratio(synthetic_synthetic, synthetic_real + synthetic_synthetic),
        "total": total,
    }


def score_answers(truths: Sequence[str], answers: Sequence[str],
                  classes: Sequence[str] | None = None) -> dict:
    """Scores real/synthetic answers against the truth, overall and per class.

    Args:
        truths: ``"real"``/``"synthetic"`` per image.
        answers: the expert's ``"real"``/``"synthetic"`` per image (same order).
        classes: optional class per image; with several classes, per-class results are added.

    Returns:
        ``{"all": {"confusion": {actual: {predicted: n}}, "accuracy", "recall", "specificity", "total"},
        "per_class": {class: {...}}}`` (``per_class`` is empty for a single class).

    Example:
        >>> truths = ["real"] * 50 + ["synthetic"] * 50
        >>> answers = ["real"] * 48 + ["synthetic"] * 2 + ["real"] * 34 + ["synthetic"] * 16
        >>> result = score_answers(truths, answers)           # N&Z Table 9
        >>> [round(result["all"][key], 2) for key in ("accuracy", "recall", "specificity")]
        [0.64, 0.96, 0.32]
    """
    if len(truths) != len(answers):
        raise EvaluationError(f"{len(truths)} truths but {len(answers)} answers")
    for value in list(truths) + list(answers):
        if value not in TRUTHS:
            raise EvaluationError(f"labels must be 'real' or 'synthetic', got {value!r}")

    def summary(selection: Sequence[int]) -> dict:
        matrix = confusion_counts([truths[index] for index in selection], [answers[index] for index in selection])
        return {"confusion": matrix, **metrics_from_confusion(matrix)}

    result = {"all": summary(range(len(truths))), "per_class": {}}
    if classes is not None:
        names = sorted(set(classes))
        if len(names) > 1:
            for name in names:
                result["per_class"][name] = summary([index for index, value in enumerate(classes) if value == name])
    return result


def score_kit(kit, answers_path, out=None, name: str = "expert") -> dict:
    """Scores a filled answer sheet of a kit; writes ``score.json``, ``score.md`` and confusion PNGs.

    Args:
        kit: the kit folder made by :func:`make_kit`.
        answers_path: the filled ``answers.csv``.
        out: folder for the results (default ``KIT/results/<answers file stem>``).
        name: who answered, used in the table titles (e.g. "Medical expert").
    """
    from cellgen.plots import plot_confusion_matrix
    from cellgen.runs import write_json

    key = read_key(kit)
    answers = read_answers(answers_path, [row["id"] for row in key])
    result = score_answers([row["truth"] for row in key], [answers[row["id"]] for row in key],
                           [row["class"] for row in key])
    result["name"] = name
    result["kit"] = os.path.abspath(os.fspath(kit))
    result["answers"] = os.path.abspath(os.fspath(answers_path))
    out = Path(out) if out is not None else Path(kit) / "results" / Path(answers_path).stem
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "score.json", result)
    (out / "score.md").write_text(format_tables(result, markdown=True), encoding="utf-8")
    for label, part in [("all", result["all"])] + list(result["per_class"].items()):
        matrix = np.array([[part["confusion"][actual][predicted] for predicted in TRUTHS] for actual in TRUTHS])
        plot_confusion_matrix(matrix, ["real", "synthetic"], out / f"confusion_{_file_safe(label)}.png",
                              title=f"{name}: {label}")
    result["out"] = str(out)
    return result


def _file_safe(text: str) -> str:
    return "".join(character if character.isalnum() or character in "-_" else "_" for character in text)


def round_half_up(value: float, digits: int = 2) -> float:
    """Rounds like the thesis tables (19/40 = 0.475 -> 0.48), not to the nearest binary float."""
    quantum = Decimal(1).scaleb(-digits)
    return float(Decimal(repr(value)).quantize(quantum, rounding=ROUND_HALF_UP))


def _format_number(value: float | None) -> str:
    if value is None:
        return "n/a"
    text = f"{round_half_up(value):.2f}".rstrip("0").rstrip(".")
    return text if text else "0"


def confusion_table(part: Mapping, title: str, markdown: bool = False) -> str:
    """A confusion matrix in the layout of N&Z Tables 9-13 / K&C Table 2 (rows actual, columns predicted)."""
    matrix = part["confusion"]
    rows = [(actual.capitalize(), matrix[actual][REAL], matrix[actual][SYNTHETIC]) for actual in TRUTHS]
    column_totals = (sum(row[1] for row in rows), sum(row[2] for row in rows))
    if markdown:
        lines = [f"**{title}**", "", "| Actual \\ Predicted | Real | Synthetic | Total |", "| --- | ---: | ---: | ---: |"]
        lines += [f"| {label} | {a} | {b} | {a + b} |" for label, a, b in rows]
        lines.append(f"| Total | {column_totals[0]} | {column_totals[1]} | {sum(column_totals)} |")
        return "\n".join(lines) + "\n"
    lines = [title, f"{'':18}{'Predicted':>22}", f"{'':18}{'Real':>10}{'Synthetic':>12}{'Total':>8}"]
    for index, (label, a, b) in enumerate(rows):
        lines.append(f"{'Actual' if index == 0 else '':8}{label:<10}{a:>10}{b:>12}{a + b:>8}")
    lines.append(f"{'Total':<18}{column_totals[0]:>10}{column_totals[1]:>12}{sum(column_totals):>8}")
    return "\n".join(lines) + "\n"


def format_tables(result: Mapping, markdown: bool = False) -> str:
    """Confusion matrices and the metrics table (N&Z Table 14 layout) as text or Markdown."""
    name = result.get("name", "expert")
    parts = [("all classes" if result["per_class"] else "all images", result["all"])]
    parts += list(result["per_class"].items())
    blocks = [confusion_table(part, f"{name}: {label}", markdown) for label, part in parts]
    metric_rows = [(f"{name}: {label}", metric.capitalize(), _format_number(part[metric]))
                   for label, part in parts[1:] + parts[:1] for metric in ("accuracy", "recall", "specificity")]
    if markdown:
        table = ["| Test type | Metric | Value |", "| --- | --- | ---: |"]
        table += [f"| {test if index % 3 == 0 else ''} | {metric} | {value} |"
                  for index, (test, metric, value) in enumerate(metric_rows)]
        blocks.append("**Metrics** (real = positive class)\n\n" + "\n".join(table) + "\n")
    else:
        width = max(len(test) for test, _, _ in metric_rows) + 2
        table = [f"{'Test type':<{width}}{'Metric':<13}Value"]
        table += [f"{test if index % 3 == 0 else '':<{width}}{metric:<13}{value}"
                  for index, (test, metric, value) in enumerate(metric_rows)]
        blocks.append("Metrics (real = positive class)\n" + "\n".join(table) + "\n")
    return "\n".join(blocks)
