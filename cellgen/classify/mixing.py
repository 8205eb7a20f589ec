"""Which files each arm trains, validates and tests on.

Every split becomes a ``path,label,origin`` CSV under ``OUT/data/`` (a valid
:class:`cellgen.data_reader.DataReader` source; ``origin`` is ``real`` or
``synthetic``), so an experiment records exactly what each model saw:

- ``val.csv``, ``test.csv``: real images only; synthetic images never enter them.
- ``seed-K/train-ARM.csv``: the real training images kept for seed K (with
  ``limit_class``, a seed-chosen fraction of a class, the same files in every
  arm) plus, in the synthetic arms, the synthetic images chosen for seed K.

Amounts of synthetic images per class (``synthetic_classes``):

- ``ratio``: ``round(synthetic_ratio * real count of the class)`` (K&C section 5.4:
  "each class in the training set was increased by 50 %");
- ``count``: ``synthetic_count`` per class;
- ``match_positive``: the real count of the positive class (N&Z section 6.1: "the
  number of generated images to be added was chosen to be the number of real
  abnormal images in the training dataset"; Table 4).

In binary mode (N&Z) labels are the positive class and ``not_<positive>``; the
validation positives are oversampled to the negative count by the reader
(N&Z section 4.1, Table 4).

Example:
    >>> synthetic_counts("ratio", {"a": 10, "b": 5}, ["a", "b"], ratio=0.5)
    {'a': 5, 'b': 3}
"""

from __future__ import annotations

import csv
import math
import os
import zlib
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from cellgen.data_reader import DataError

REAL = "real"
SYNTHETIC = "synthetic"


def negative_name(positive: str) -> str:
    """Name of the merged negative class in binary mode."""
    return f"not_{positive}"


def model_classes(source_classes: Sequence[str], mode: str, positive: str = "") -> list[str]:
    """Class names in model id order: the source classes, or ``[not_<positive>, positive]``."""
    if mode == "binary":
        if positive not in source_classes:
            raise DataError(f"--positive {positive!r} is not a training class ({', '.join(source_classes)})")
        return [negative_name(positive), positive]
    return list(source_classes)


def label_for(class_name: str, mode: str, positive: str = "") -> str:
    """The model label of an image of ``class_name``."""
    if mode == "binary":
        return positive if class_name == positive else negative_name(positive)
    return class_name


def check_class_sets(reference: Sequence[str], others: dict[str, Sequence[str]],
                     reference_name: str = "--train") -> None:
    """Raises DataError when a split's classes differ from the reference split's.

    Args:
        reference: class names of the training split.
        others: ``{"--val DIR": classes, ...}``; the key is used in the message.
    """
    wanted = set(reference)
    for name, classes in others.items():
        missing = sorted(wanted - set(classes))
        extra = sorted(set(classes) - wanted)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"lacks {', '.join(missing)}")
            if extra:
                parts.append(f"has extra {', '.join(extra)}")
            raise DataError(f"{name}: class set differs from {reference_name} ({'; '.join(parts)})")


def check_synthetic_classes(train_classes: Sequence[str], synthetic_classes: Iterable[str],
                            where: str) -> None:
    """Raises DataError when a synthetic folder has a class the training data does not have."""
    extra = sorted(set(synthetic_classes) - set(train_classes))
    if extra:
        raise DataError(f"{where}: class folder(s) {', '.join(extra)} are not training classes "
                        f"({', '.join(train_classes)})")


def synthetic_counts(amount: str, real_counts: dict[str, int], classes: Sequence[str], ratio: float = 0.5,
                     count: int = 0, positive: str = "") -> dict[str, int]:
    """Synthetic images per class for an amount option (see the module docstring).

    Args:
        amount: ``ratio``, ``count`` or ``match_positive``.
        real_counts: real training images per class (after ``limit_class``).
        classes: the classes that receive synthetic images.
    """
    unknown = [name for name in classes if name not in real_counts]
    if unknown:
        raise DataError(f"synthetic_classes: unknown class(es) {', '.join(unknown)} "
                        f"(classes: {', '.join(real_counts)})")
    if amount == "ratio":
        # round half up: 0.5 * 5 gives 3 (Python's round() would give 2)
        return {name: int(math.floor(ratio * real_counts[name] + 0.5)) for name in classes}
    if amount == "count":
        return {name: int(count) for name in classes}
    if amount == "match_positive":
        if positive not in real_counts:
            raise DataError(f"synthetic_match_positive: positive class {positive!r} is not a training class")
        return {name: int(real_counts[positive]) for name in classes}
    raise ValueError(f"unknown synthetic amount {amount!r}")


def choose_synthetic(pool: dict[str, Sequence[str]], counts: dict[str, int], seed: int,
                     where: str = "synthetic") -> dict[str, list[str]]:
    """A seed-chosen subset of ``counts[c]`` files from each class's pool (sorted file order).

    Raises:
        DataError: a class has no folder or fewer files than needed; the message names both.
    """
    chosen: dict[str, list[str]] = {}
    for name, needed in counts.items():
        if needed == 0:
            chosen[name] = []
            continue
        files = sorted(pool.get(name, []))
        if len(files) < needed:
            have = f"has only {len(files)}" if files else "has no images"
            raise DataError(f"{where}: class {name!r} {have}; {needed} synthetic images are needed "
                            "(add images, lower the amount, or set synthetic_classes)")
        rng = np.random.default_rng([seed, zlib.crc32(name.encode()), 13])
        picks = np.sort(rng.choice(len(files), size=needed, replace=False))
        chosen[name] = [files[index] for index in picks]
    return chosen


def training_rows(real_files: Sequence[tuple[str, str]], synthetic: dict[str, Sequence[str]] | None,
                  mode: str, positive: str = "") -> list[tuple[str, str, str]]:
    """``(path, label, origin)`` rows of an arm's training set."""
    rows = [(path, label_for(name, mode, positive), REAL) for path, name in real_files]
    for name, files in (synthetic or {}).items():
        rows.extend((path, label_for(name, mode, positive), SYNTHETIC) for path in files)
    return rows


def write_rows(path: str | os.PathLike, rows: Iterable[tuple[str, str, str]]) -> Path:
    """Writes ``path,label,origin`` rows with absolute paths."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "origin"])
        for file, label, origin in rows:
            writer.writerow([Path(file).resolve().as_posix(), label, origin])
    os.replace(temporary, path)
    return path


def read_rows(path: str | os.PathLike) -> list[tuple[str, str, str]]:
    """Reads rows written by :func:`write_rows`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["path"], row["label"], row.get("origin", REAL)) for row in csv.DictReader(handle)]


def count_rows(rows: Iterable[tuple[str, str, str]]) -> dict[str, dict[str, int]]:
    """``{origin: {label: count}}``."""
    counts: dict[str, dict[str, int]] = {}
    for _, label, origin in rows:
        counts.setdefault(origin, {}).setdefault(label, 0)
        counts[origin][label] += 1
    return counts


def balanced_class_weights(counts: dict[str, int], classes: Sequence[str]) -> dict[int, float]:
    """``n / (k * n_c)`` for every class id (classes without images get weight 0)."""
    total = sum(counts.get(name, 0) for name in classes)
    present = [name for name in classes if counts.get(name, 0) > 0]
    return {index: (total / (len(present) * counts[name]) if counts.get(name, 0) else 0.0)
            for index, name in enumerate(classes)}
