"""Filtering synthetic images: keep a generated image only when a real-data classifier agrees with its class.

The classifier (trained by the study on the kept real training images only: see
:meth:`cellgen.study.pipeline.Study.filter_request`) gives every candidate image a
probability of the class it was generated for; candidates with at least the threshold
are kept, in generation order, up to the number needed. Nothing here sees a validation
or test image.

Example:
    >>> summary = filter_images("filter/classifier/.../best.keras", {"basophil": Path("cand/basophil")},
    ...                         {"basophil": Path("synthetic/basophil")}, {"basophil": 764}, 0.5, 64,
    ...                         Path("filter"))                                        # doctest: +SKIP
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cellgen.runs import RunDir, RunError, write_json


def class_probabilities(model_path: str | Path, folder: str | Path, class_name: str,
                        image_size: int) -> tuple[list[str], np.ndarray]:
    """The files of ``folder`` (sorted) and the probability the classifier gives ``class_name`` for each."""
    from cellgen.classify.models import load_classifier, predict_probabilities
    from cellgen.data import DataReader

    model_path = Path(model_path)
    classes = RunDir(model_path.parents[1]).classes
    if class_name not in classes:
        raise RunError(f"filter: class {class_name!r} is not one of the filter classifier's classes "
                       f"({', '.join(classes)})")
    reader = DataReader(str(folder), image_size=image_size, batch_size=64, shuffle=False, upscale_warning=False)
    images, _ = reader.load_all()
    model = load_classifier(model_path)
    probabilities = predict_probabilities(model, images)
    return list(reader.files), probabilities[:, classes.index(class_name)]


def filter_images(model_path: str | Path, candidates: Mapping[str, Path], outputs: Mapping[str, Path],
                  needed: Mapping[str, int], threshold: float, image_size: int, directory: Path) -> dict[str, Any]:
    """Copies the candidates that pass into ``outputs[class]``; writes ``scores.csv`` and ``summary.json``.

    Args:
        model_path: the filter classifier (``best.keras``).
        candidates: class -> folder of generated candidates.
        outputs: class -> folder for the kept images (emptied first).
        needed: class -> images wanted; at most that many are kept (the first that pass).
        threshold: minimum probability of the image's class.
        image_size: the classifier's input size.
        directory: where ``scores.csv`` and ``summary.json`` go.

    Returns:
        ``{class: {candidates, passed, kept, needed, threshold, mean_probability}}``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {}
    rows = []
    for class_name, folder in candidates.items():
        files, probabilities = class_probabilities(model_path, folder, class_name, image_size)
        passing = [index for index, value in enumerate(probabilities) if value >= threshold]
        kept = passing[:int(needed[class_name])]
        target = Path(outputs[class_name])
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for index in kept:
            shutil.copy2(files[index], target / Path(files[index]).name)
        kept_set = set(kept)
        rows += [(file, class_name, f"{value:.6f}", int(index in kept_set))
                 for index, (file, value) in enumerate(zip(files, probabilities))]
        summary[class_name] = {"candidates": len(files), "passed": len(passing), "kept": len(kept),
                               "needed": int(needed[class_name]), "threshold": threshold,
                               "mean_probability": float(np.mean(probabilities)) if len(files) else None}
    with open(directory / "scores.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "class", "probability", "kept"])
        writer.writerows(rows)
    write_json(directory / "summary.json", summary)
    return summary
