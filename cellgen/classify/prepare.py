"""Preparing a classifier experiment's data: checked splits, synthetic images and the training lists.

:func:`prepare_data` checks the train, validation and test splits against each other and writes
``OUT/data/train-all.csv``, ``val.csv`` and ``test.csv``; :func:`write_training_sets` writes
``OUT/data/seed-K/train-ARM.csv`` for every seed and arm (real files with ``limit_class``
applied, plus the synthetic files of the synthetic arms, generated first with
``synthetic_from``). Which files an arm sees is decided in :mod:`cellgen.classify.mixing`;
synthetic files only ever enter training lists.

Example:
    >>> data = prepare_data(config, Path(config.out))                                  # doctest: +SKIP
    >>> sets = write_training_sets(config, data, Path(config.out), seeds=[0, 1])       # doctest: +SKIP
    >>> sets.csv[0]["synthetic"]                                                       # doctest: +SKIP
    PosixPath('OUT/data/seed-0/train-synthetic.csv')
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from cellgen.classify import mixing
from cellgen.classify.config import SYNTHETIC_ARMS, ClassifierConfig
from cellgen.config import ConfigError
from cellgen.data import DataError, DataReader, crop_option

Printer = Callable[[str], None]


@dataclass
class ExperimentData:
    """The resolved data of an experiment (see :func:`prepare_data`).

    Attributes:
        source_classes: class names of the training split (sorted folder names or CSV labels).
        classes: model classes (``source_classes``, or ``[not_<positive>, positive]`` in binary mode).
        data_dir: ``OUT/data``.
        train_csv: every readable real training file with its source class (before ``limit_class``).
        val_csv, test_csv: the evaluation file lists (model labels).
        synthetic_classes: classes that receive synthetic images.
        synthetic_pool: class -> synthetic files to choose from.
        counts: image counts per split for the report.
    """

    source_classes: list[str]
    classes: list[str]
    data_dir: Path
    train_csv: Path
    val_csv: Path
    test_csv: Path
    synthetic_classes: list[str] = field(default_factory=list)
    synthetic_pool: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)


def reader_for(config: ClassifierConfig, source, **options) -> DataReader:
    """A DataReader of ``source`` with the experiment's image size, crop, workers and error policy."""
    options.setdefault("workers", config.workers)
    options.setdefault("on_error", config.on_error)
    return DataReader(source, image_size=config.image_size, crop=crop_option(config.crop), **options)


def _require_split(value: str, flag: str) -> str:
    if not value:
        raise ConfigError(f"{flag} is required (a class folder or a path,label CSV)")
    return value


@dataclass
class CheckedSplits:
    """The readers of an experiment's checked splits, before anything is written (see :func:`check_data`)."""

    train: DataReader
    val: DataReader
    test: DataReader
    source_classes: list[str]
    classes: list[str]
    synthetic_classes: list[str]
    synthetic: DataReader | None = None


def check_data(config: ClassifierConfig, printer: Printer = print) -> CheckedSplits:
    """Reads and checks the splits (and the synthetic folder) without writing anything, so that bad
    data fails before the experiment's folder exists.

    Raises:
        DataError, ConfigError: as :func:`prepare_data`.
    """
    train_source = _require_split(config.data, "--train")
    val_source = _require_split(config.val_data, "--val")
    test_source = _require_split(config.test_data, "--test")
    listed = list(config.classes) or None  # --classes: a label outside the list is an error naming it
    train = reader_for(config, train_source, shuffle=False, classes=listed)
    val = reader_for(config, val_source, shuffle=False, classes=listed)
    test = reader_for(config, test_source, shuffle=False, classes=listed)
    mixing.check_class_sets(train.classes, {f"--val {val_source}": val.classes,
                                            f"--test {test_source}": test.classes},
                            reference_name=f"--train {train_source}")
    source_classes = list(train.classes)
    if len(source_classes) < 2:
        raise DataError(f"--train {train_source}: one class only ({', '.join(source_classes)}); "
                        "a classifier needs images of at least 2 classes")
    classes = mixing.model_classes(source_classes, config.mode, config.positive)
    for name in config.limit_class:
        if name not in source_classes:
            raise DataError(f"--limit-class: unknown class {name!r} (classes: {', '.join(source_classes)})")
    synthetic_classes = list(config.synthetic_classes) or (
        [config.positive] if config.mode == "binary" else list(source_classes))
    unknown = [name for name in synthetic_classes if name not in source_classes]
    if unknown:
        raise DataError(f"synthetic_classes: unknown class(es) {', '.join(unknown)} "
                        f"(classes: {', '.join(source_classes)})")
    if config.uses_synthetic and not (config.synthetic or config.synthetic_from):
        arms = ", ".join(arm for arm in config.arms if arm in SYNTHETIC_ARMS)
        raise ConfigError(f"arm(s) {arms} need --synthetic DIR or --synthetic-from RUN")
    if (config.synthetic or config.synthetic_from) and not config.uses_synthetic:
        printer("note: no synthetic arm selected; the synthetic images are not used")
    synthetic = None
    if config.synthetic and config.uses_synthetic:
        synthetic = reader_for(config, config.synthetic, shuffle=False, allow_missing_classes=True)
        if not synthetic.labelled:
            raise DataError(f"--synthetic {config.synthetic}: expected one sub-folder per class "
                            f"(e.g. {config.synthetic}/{synthetic_classes[0]}/)")
        mixing.check_synthetic_classes(source_classes, synthetic.classes, f"--synthetic {config.synthetic}")
    return CheckedSplits(train, val, test, source_classes, classes, synthetic_classes, synthetic)


def prepare_data(config: ClassifierConfig, out: Path, printer: Printer = print,
                 checked: CheckedSplits | None = None) -> ExperimentData:
    """Checks the splits (unless ``checked`` by :func:`check_data`) and writes
    ``OUT/data/train-all.csv``, ``val.csv`` and ``test.csv``.

    With ``on_error="skip"`` the images are decoded once here; later readers use these
    lists without a second verification pass.

    Raises:
        DataError: the class sets of train, val, test or the synthetic folder differ,
            or a class option names an unknown class.
        ConfigError: a split is missing or synthetic arms have no synthetic source.
    """
    checked = checked if checked is not None else check_data(config, printer)
    train, val, test = checked.train, checked.val, checked.test
    data_dir = out / "data"
    rows = {split: [(path, mixing.label_for(name, config.mode, config.positive), mixing.REAL)
                    for path, name in reader.kept_files()] for split, reader in (("val", val), ("test", test))}
    # source class names here: limit_class and synthetic_classes refer to them
    train_csv = mixing.write_rows(data_dir / "train-all.csv",
                                  [(path, name, mixing.REAL) for path, name in train.kept_files()])
    val_csv = mixing.write_rows(data_dir / "val.csv", rows["val"])
    test_csv = mixing.write_rows(data_dir / "test.csv", rows["test"])
    data = ExperimentData(checked.source_classes, checked.classes, data_dir, train_csv, val_csv, test_csv,
                          checked.synthetic_classes)
    data.counts = {"train (real, before limits)": train.class_counts(),
                   "val": mixing.count_rows(rows["val"])[mixing.REAL],
                   "test": mixing.count_rows(rows["test"])[mixing.REAL]}
    for reader in (train, val, test):
        if reader.skipped:
            reader.write_skip_report(data_dir / Path(str(reader.source)).name)  # announces them too
    if checked.synthetic is not None:
        data.synthetic_pool = group_by_class(checked.synthetic.kept_files())
    return data


def real_training_files(config: ClassifierConfig, train_csv: Path,
                        seed: int) -> tuple[list[tuple[str, str]], dict[str, int]]:
    """Real training files kept for ``seed`` (``limit_class`` applied) and their counts per class.

    ``train_csv`` lists the training folder's files in the reader's order, so the kept subset
    is the one ``DataReader(train, class_limits=..., seed=seed)`` keeps in the other stages.
    """
    limits = {name: float(fraction) for name, fraction in config.limit_class.items()}
    reader = reader_for(config, train_csv, shuffle=False, seed=seed, class_limits=limits or None, verify=False)
    return reader.kept_files(), reader.class_counts()


def _parse_synthetic_from(spec: str) -> dict[str | None, str]:
    """``RUN`` -> {None: RUN}; ``a=RUN1,b=RUN2`` -> {"a": RUN1, "b": RUN2}."""
    if "=" not in spec:
        return {None: spec}
    runs: dict[str | None, str] = {}
    for part in spec.split(","):
        if "=" not in part:
            raise ConfigError(f"--synthetic-from: expected RUN or class=RUN,class2=RUN2; got {part!r}")
        name, run = part.split("=", 1)
        runs[name.strip()] = run.strip()
    return runs


def generate_synthetic(spec: str, counts: dict[str, int], out_dir: Path, seed: int = 0,
                       batch_size: int = 32, progress: bool = True) -> dict[str, list[str]]:
    """Writes ``counts[c]`` images per class from generator run(s) into ``out_dir/<class>/``.

    ``spec`` is one run (conditional, or unconditional when a single class needs images)
    or ``class=RUN,...`` with one run per class. Folders that already hold enough images
    (a resumed experiment) are reused.
    """
    from cellgen.sampling import generated_set_seed, load_sampler, write_samples

    runs = _parse_synthetic_from(spec)
    needed = {name: count for name, count in counts.items() if count > 0}
    pool: dict[str, list[str]] = {}
    samplers: dict[str, Any] = {}
    for index, (name, count) in enumerate(sorted(needed.items())):
        folder = out_dir / name
        existing = sorted(str(path) for path in folder.glob("*.png")) if folder.is_dir() else []
        if len(existing) >= count:
            pool[name] = existing
            continue
        if None in runs:
            run = runs[None]
        elif name in runs:
            run = runs[name]
        else:
            raise ConfigError(f"--synthetic-from: no run given for class {name!r} "
                              f"(given: {', '.join(str(key) for key in runs)})")
        if run not in samplers:
            samplers[run] = load_sampler(run)
        sampler = samplers[run]
        class_name = name
        if sampler.classes is None:
            if None in runs and len(needed) > 1:
                raise ConfigError(f"--synthetic-from {run}: an unconditional generator cannot make images for "
                                  f"{len(needed)} classes; give one run per class (class=RUN,...) or "
                                  "set --synthetic-classes to one class")
            class_name = None
        if folder.is_dir():
            for stale in existing:
                os.remove(stale)
        files = write_samples(sampler, count, folder, seed=generated_set_seed(seed, index), class_name=class_name,
                              batch_size=batch_size, prefix=f"synthetic_{name}", progress=progress)
        pool[name] = [str(path) for path in files]
    return pool


def save_class_examples(files_by_class: dict[str, Sequence[str]], path: Path, image_size: int,
                         title: str, per_class: int = 8) -> Path | None:
    """A grid with one row of example images per class."""
    import cv2

    from cellgen.images import read_rgb
    from cellgen.plots import save_image_grid

    rows, labels = [], []
    for name in sorted(files_by_class):
        files = list(files_by_class[name])[:per_class]
        if not files:
            continue
        images = [cv2.resize(read_rgb(file), (image_size, image_size), interpolation=cv2.INTER_AREA)
                  for file in files]
        images += [np.full_like(images[0], 255)] * (per_class - len(images))
        rows.extend(images)
        labels.append(name)
    if not rows:
        return None
    return save_image_grid(np.stack(rows), path, columns=per_class, row_labels=labels, title=title)




@dataclass
class TrainingSets:
    """The training file lists of every seed and arm (see :func:`write_training_sets`).

    Attributes:
        csv: ``{seed: {arm: OUT/data/seed-K/train-ARM.csv}}``.
        synthetic_per_class: synthetic images added per class in the synthetic arms.
        counts: ``{"seed K": {arm: {origin: {label: count}}}}`` for the report.
    """

    csv: dict[int, dict[str, Path]]
    synthetic_per_class: dict[str, int]
    counts: dict[str, Any]




def write_training_sets(config: ClassifierConfig, data: ExperimentData, out: Path, seeds: Sequence[int],
                        progress: bool = True) -> TrainingSets:
    """Writes ``OUT/data/seed-K/train-ARM.csv`` for every seed and arm.

    For each seed the real files come from :func:`real_training_files` (``limit_class`` applied,
    identical for every arm); the synthetic arms add :func:`mixing.choose_synthetic` of the pool,
    generated first into ``OUT/synthetic`` when ``synthetic_from`` is set. Synthetic files only
    ever enter training lists.
    """
    real_by_seed = {seed: real_training_files(config, data.train_csv, seed) for seed in seeds}
    # limit_class keeps round(fraction * n) files whatever the seed: the amounts are the same for every seed
    per_class = mixing.synthetic_counts(config.synthetic_amount, real_by_seed[seeds[0]][1], data.synthetic_classes,
                                        ratio=config.synthetic_ratio, count=config.synthetic_count,
                                        positive=config.positive) if config.uses_synthetic else {}
    where = f"--synthetic {config.synthetic}" if config.synthetic else str(out / "synthetic")
    if config.uses_synthetic and config.synthetic_from:
        data.synthetic_pool = generate_synthetic(config.synthetic_from, per_class, out / "synthetic",
                                                 seed=config.seed, batch_size=config.batch_size, progress=progress)
    chosen_by_seed = {seed: (mixing.choose_synthetic(data.synthetic_pool, per_class, seed, where)
                             if config.uses_synthetic else None) for seed in seeds}  # fails before any training
    sets = TrainingSets({}, per_class, {})
    for seed in seeds:
        for arm in config.arms:
            rows = mixing.training_rows(real_by_seed[seed][0], chosen_by_seed[seed] if arm in SYNTHETIC_ARMS else None,
                                        config.mode, config.positive)
            path = mixing.write_rows(data.data_dir / f"seed-{seed}" / f"train-{arm_slug(arm)}.csv", rows)
            sets.csv.setdefault(seed, {})[arm] = path
            sets.counts.setdefault(f"seed {seed}", {})[arm] = mixing.count_rows(rows)
    return sets




def group_by_class(files: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """``[(path, class), ...]`` -> ``{class: [path, ...]}`` in the given order."""
    grouped: dict[str, list[str]] = {}
    for path, name in files:
        grouped.setdefault(name, []).append(path)
    return grouped


def arm_slug(arm: str) -> str:
    """An arm's name as a file or folder name (``classical+synthetic`` -> ``classical_synthetic``)."""
    return arm.replace("+", "_")

