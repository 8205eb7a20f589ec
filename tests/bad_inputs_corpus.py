"""A corpus of bad (and questionable) inputs for ``tests/test_bad_inputs.py`` (issue 21).

:func:`build_corpus` writes every input into a folder; nothing here is checked in as files,
so the corpus is rebuilt for each test session. Every data folder is a small class-folder
tree (16 real 64 px cells per class, 8 in each of two classes, copied from the package's
sample) with one thing wrong or unusual added, so a script that trains on it trains one
step at most.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("basophil", "eosinophil")
PER_CLASS = 8


def _sample(split: str = "train") -> Path:
    from cellgen.sample_data import sample_path

    return Path(sample_path(split))


def _good_tree(root: Path, classes=CLASSES, per_class: int = PER_CLASS, split: str = "train") -> Path:
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((_sample(split) / name).iterdir())[:per_class]:
            shutil.copy2(path, root / name / path.name)
    return root


def _png(path: Path, pixels: np.ndarray) -> Path:
    ok, encoded = cv2.imencode(".png", pixels)
    assert ok, path
    encoded.tofile(str(path))
    return path


def _cell(size: int = 64) -> np.ndarray:
    """A real cell (BGR uint8) from the sample, resized to ``size``."""
    first = sorted((_sample() / CLASSES[0]).iterdir())[0]
    image = cv2.imdecode(np.fromfile(str(first), np.uint8), cv2.IMREAD_COLOR)
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def build_corpus(root: Path) -> dict[str, Path]:
    """Writes the corpus under ``root``; returns name -> path (see the comments for what each is)."""
    root.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def tree(name: str, **options) -> Path:
        paths[name] = _good_tree(root / name, **options)
        return paths[name]

    tree("good")                                                    # nothing wrong: the control
    (tree("zero_byte") / "basophil" / "empty.jpg").write_bytes(b"")
    (tree("text_as_jpeg") / "basophil" / "notes.jpg").write_text("these are my notes, not a JPEG\n")
    truncated = tree("truncated_jpeg") / "basophil" / "truncated.jpg"
    whole = next(iter(sorted((root / "good" / "basophil").iterdir()))).read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])
    # Valid formats that are converted to 8-bit RGB (no warning due), and a non-ASCII file name.
    formats = tree("formats") / "basophil"
    cell = _cell()
    _png(formats / "grayscale.png", cv2.cvtColor(cell, cv2.COLOR_BGR2GRAY))
    _png(formats / "rgba.png", np.dstack([cell, np.full(cell.shape[:2], 255, np.uint8)]))
    _png(formats / "sixteen_bit.png", cell.astype(np.uint16) * 257)
    shutil.copy2(next(iter(sorted((root / "good" / "eosinophil").iterdir()))),
                 formats.parent / "eosinophil" / "Zelle_äöü_細胞.jpg")
    _png(tree("tiny_image") / "basophil" / "five_by_five.png", _cell(5))  # upscaled: a warning
    (tree("empty_class") / "lymphocyte").mkdir()
    tree("one_class", classes=CLASSES[:1], per_class=2 * PER_CLASS)
    loop = tree("symlink_loop") / "basophil"
    os.symlink("loop_b.jpg", loop / "loop_a.jpg")   # a.jpg -> b.jpg -> a.jpg: stat() fails with ELOOP
    os.symlink("loop_a.jpg", loop / "loop_b.jpg")
    os.symlink("..", loop / "parent")               # a folder loop inside a class folder
    paths["missing"] = root / "does-not-exist"

    # CSV sources (paths relative to the CSV's folder).
    csvs = root / "csv"
    csvs.mkdir()
    shutil.copytree(root / "good", csvs / "good")
    rows = [(f"good/{name}/{path.name}", name) for name in CLASSES for path in sorted((csvs / "good" / name).iterdir())]
    paths["csv_missing_column"] = _csv(csvs / "missing_column.csv", ("path", "klass"), rows)
    paths["csv_missing_file"] = _csv(csvs / "missing_file.csv", ("path", "label"),
                                     [*rows, ("good/basophil/not-there.jpg", "basophil")])
    paths["csv_unknown_label"] = _csv(csvs / "unknown_label.csv", ("path", "label"),
                                      [*rows[:-1], (rows[-1][0], "basophill")])
    # A label typo among larger classes (25+ rows each): accepted with a "typo?" warning when no
    # class list is given. Rows may repeat files.
    many = [row for row in rows for _ in range(4)]
    paths["csv_rare_label"] = _csv(csvs / "rare_label.csv", ("path", "label"),
                                   [*many, (rows[0][0], "basophill")])

    # Runs that are not runs, and a folder that is not empty.
    paths["not_a_run"] = _good_tree(root / "not_a_run")              # a data folder given as a run
    empty = root / "empty_folder"
    empty.mkdir()
    paths["empty_folder"] = empty
    (root / "a_file.txt").write_text("not a folder\n")
    paths["a_file"] = root / "a_file.txt"
    broken = root / "broken_run"
    broken.mkdir()
    (broken / "config.json").write_text("{ not json")
    paths["broken_run"] = broken
    paths["bad_preset"] = root / "bad_preset.toml"
    paths["bad_preset"].write_text("epochs = [unclosed\n")
    (root / "manifest.json").write_text(json.dumps({name: str(path) for name, path in paths.items()}, indent=1))
    return paths
