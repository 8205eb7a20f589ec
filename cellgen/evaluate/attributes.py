"""Attribute fidelity: do generated cells carry the morphological attribute they were asked for?

A generator conditioned on WBCAtt attributes (``generate.py --attr nucleus_shape=segmented-multilobed``)
or fine-tuned on a selected subset (``train_ddim.py --finetune-from RUN --select ...``, the route of
Nilsson & Zettergren 2023) is only useful if its cells show that attribute. This module trains an
**attribute classifier** on *real training images only* (:func:`train_attribute_classifier`: the
project's classifier network, by default the ``classifier_fast`` preset's small CNN, through
:func:`cellgen.classify.train_lib.build_and_compile`), predicting one attribute (say
``nucleus_shape``) within a selection (say ``class=neutrophil``). Then:

- :func:`evaluate_real` measures it on real validation images (accuracy, and per value the share
  called that value, i.e. the recall: the ceiling a generator can be held to);
- :func:`attribute_fidelity` gives the share of generated images it calls the requested value;
- :func:`fidelity_markdown` puts generators and the real validation images side by side;
- :func:`write_binary_file_list` writes the file lists of N&Z's one-against-the-rest classifier
  experiment with an attribute as the "abnormality" (multilobed against the other neutrophils).

Training weights every value by ``n / (k * n_v)`` (balanced class weights, as the classifier
benchmark's ``class_weights = "balanced"``): the interesting values are the rare ones (305
multilobed among 2,304 training neutrophils), and a classifier that never says "multilobed"
would make every generator look unfaithful.

Example:
    >>> classifier = train_attribute_classifier("pbc128/train", "nucleus_shape", "wbcatt.csv",
    ...                                         select=["class=neutrophil"])            # doctest: +SKIP
    >>> real = evaluate_real(classifier, "pbc128/val", "wbcatt.csv")                   # doctest: +SKIP
    >>> real["per_value"]["segmented-multilobed"]["called"]                            # doctest: +SKIP
    >>> images = load_sampler("runs/ddim-attr", attributes=["nucleus_shape=segmented-multilobed"]
    ...                       ).sample(200, seed=0, class_name="neutrophil")           # doctest: +SKIP
    >>> attribute_fidelity(classifier, images, "segmented-multilobed")["called_requested"]  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from cellgen.data import DataError, DataReader, crop_option
from cellgen.data.attributes import NO_VALUE_TEXT, SPLIT_COLUMN, split_item
from cellgen.evaluate.errors import EvaluationError

DEFAULT_PRESET = "classifier_fast"
MODEL_FILE = "attribute_classifier.keras"
INFO_FILE = "attribute_classifier.json"


@dataclass
class AttributeClassifier:
    """A classifier of one attribute's values, trained on real images (see the module docstring).

    Attributes:
        model: the Keras classifier (images in [-1, 1] -> probabilities over ``values``).
        attribute: the attribute column, e.g. ``nucleus_shape``.
        values: the values it tells apart (those of its training images), in output order.
        image_size: its input side; other sizes are resized (OpenCV, as the data reader).
        crop: the center crop of its training images (0 = none), applied to real images it reads.
        select: the selection of its training images (e.g. ``["class=neutrophil"]``).
        training_counts: training images per value.
    """

    model: Any
    attribute: str
    values: list[str]
    image_size: int
    crop: float = 0.0
    select: list[str] = field(default_factory=list)
    training_counts: dict[str, int] = field(default_factory=dict)

    def probabilities(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """float32 (N, len(values)) probabilities of images in [-1, 1] (or uint8), any square size."""
        from cellgen.classify.models import predict_probabilities
        from cellgen.evaluate.generated import _resize_uint8_or_float

        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
            raise EvaluationError(f"expected square RGB images (N, S, S, 3), got shape {images.shape}")
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 127.5 - 1.0
        images = _resize_uint8_or_float(images.astype(np.float32), self.image_size)
        if not len(images):
            return np.zeros((0, len(self.values)), np.float32)
        return predict_probabilities(self.model, images, batch_size=batch_size)

    def predict(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """int (N,) indices into :attr:`values` of the most probable value of each image."""
        return self.probabilities(images, batch_size).argmax(axis=1)

    def save(self, directory: str | os.PathLike) -> Path:
        """Writes ``attribute_classifier.keras`` and ``attribute_classifier.json`` into ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.save(directory / MODEL_FILE)
        info = {"attribute": self.attribute, "values": self.values, "image_size": self.image_size,
                "crop": self.crop, "select": self.select, "training_counts": self.training_counts}
        (directory / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "AttributeClassifier":
        """Reads a classifier written by :meth:`save` (the model with ``safe_mode=True``).

        Raises:
            EvaluationError: the folder lacks the files.
        """
        from cellgen.classify.models import load_classifier

        directory = Path(directory)
        if not (directory / INFO_FILE).is_file():
            raise EvaluationError(f"{directory}: not an attribute classifier (no {INFO_FILE})")
        info = json.loads((directory / INFO_FILE).read_text(encoding="utf-8"))
        return cls(load_classifier(directory / MODEL_FILE), info["attribute"], list(info["values"]),
                   int(info["image_size"]), float(info.get("crop", 0.0)), list(info.get("select", [])),
                   dict(info.get("training_counts", {})))


def _value_labels(reader: DataReader, attribute: str, values: Sequence[str] | None, what: str):
    """``(kept positions, labels into values, values)`` of a reader's images that have a value of
    ``attribute`` among ``values`` (default: every value its images take)."""
    vocabulary = reader.attribute_vocabulary[attribute]
    ids = reader.attribute_ids[:, 0]
    annotated = ids < len(vocabulary)
    if not annotated.any():
        raise DataError(f"{what}: none of the {reader.num_images} selected images has a {attribute} value "
                        "(select an annotated class, e.g. class=neutrophil)")
    if values is None:
        values = [vocabulary[index] for index in sorted(set(ids[annotated].tolist()))]
    position = {vocabulary.index(value): index for index, value in enumerate(values) if value in vocabulary}
    keep = np.array([int(index) in position for index in ids], bool)
    labels = np.array([position[int(index)] for index in ids[keep]], np.int32)
    return np.flatnonzero(keep), labels, list(values)


def train_attribute_classifier(data: str | os.PathLike, attribute: str, attributes_csv: str | os.PathLike | None = None,
                               select: Sequence[str] = ("class=neutrophil",), *, preset: str = DEFAULT_PRESET,
                               overrides: Mapping[str, Any] | None = None, seed: int = 0, augment: bool = True,
                               root: str | os.PathLike | None = None, verbose: int = 0) -> AttributeClassifier:
    """Trains a classifier of ``attribute`` on the real training images of ``data`` that ``select`` names.

    Args:
        data: the *training* images (class folders, a CSV, or an attribute table; never validation
            or generated images).
        attribute: the attribute to predict, e.g. ``nucleus_shape``.
        attributes_csv: the attribute table of ``data`` (WBCAtt's layout); None when ``data`` is one.
        select: the subset to train on, ``COLUMN=VALUE`` items (default: the neutrophils). Its
            images must all have a value of ``attribute``; the classifier tells apart the values
            they take.
        preset: the classifier preset (``classifier_fast``: the small CNN from scratch, 64 px).
        overrides: config fields changed from the preset (``image_size``, ``epochs``, ``cnn_width``...).
        seed: seeds the weights, the shuffles and the augmentation.
        augment: the preset's classical augmentation (dihedral flips and turns, zoom).
        root: the folder the paths of a CSV ``data`` are relative to.
        verbose: Keras ``fit`` verbosity.

    Raises:
        DataError, ConfigError: bad data, selection or options; an unannotated selection; fewer
            than two values among the selected images.
    """
    from cellgen.classify.config import ClassifierConfig
    from cellgen.classify.mixing import balanced_class_weights
    from cellgen.classify.train_lib import build_and_compile, classical_augment
    from cellgen.config import load_config
    from cellgen.runs import set_seed

    import tensorflow as tf

    config = load_config(ClassifierConfig, preset, {**dict(overrides or {}), "seed": seed})
    reader = DataReader(data, image_size=config.image_size, crop=crop_option(config.crop),
                        batch_size=config.batch_size, shuffle=True, seed=config.seed, workers=config.workers,
                        augment=classical_augment(config, "classical") if augment else None,
                        attributes=attributes_csv, attribute_columns=[attribute], select=list(select) or None,
                        root=root)
    positions, labels, values = _value_labels(reader, attribute, None, f"attribute classifier on {data}")
    if len(positions) != reader.num_images:
        missing = reader.files[int(np.flatnonzero(reader.attribute_ids[:, 0] == len(
            reader.attribute_vocabulary[attribute]))[0])]
        raise DataError(f"attribute classifier: {reader.num_images - len(positions)} selected image(s) of {data} "
                        f"have no {attribute} value (first: {missing}); select annotated classes only")
    if len(values) < 2:
        raise DataError(f"attribute classifier: the selected images of {data} all have {attribute}={values[0]}; "
                        "nothing to tell apart")
    counts = {value: int((labels == index).sum()) for index, value in enumerate(values)}
    set_seed(config.seed)
    model, _ = build_and_compile(config, len(values))
    vocabulary = reader.attribute_vocabulary[attribute]
    compact = tf.constant([values.index(value) if value in values else 0 for value in vocabulary] + [0], tf.int32)
    dataset = reader.as_tf_dataset(with_attributes=True).map(
        lambda images, _labels, attributes: (images, tf.gather(compact, attributes[:, 0])))
    with reader.raising_data_errors():
        model.fit(dataset, epochs=config.epochs, steps_per_epoch=len(reader), verbose=verbose, shuffle=False,
                  class_weight=balanced_class_weights(counts, values))
    return AttributeClassifier(model, attribute, values, config.image_size, config.crop, list(select), counts)


def _real_selection(classifier: AttributeClassifier, select: Sequence[str] | None) -> list[str]:
    """The selection of real evaluation images: the given one, else the classifier's without ``split``
    items (the evaluation folder is its own split)."""
    if select is not None:
        return list(select)
    return [item for item in classifier.select if split_item(item)[0] != SPLIT_COLUMN]


def evaluate_real(classifier: AttributeClassifier, data: str | os.PathLike,
                  attributes_csv: str | os.PathLike | None = None, select: Sequence[str] | None = None, *,
                  root: str | os.PathLike | None = None, batch_size: int = 64) -> dict[str, Any]:
    """The classifier on real (validation) images of the same selection.

    Args:
        classifier: from :func:`train_attribute_classifier`.
        data: real images with attributes (never the classifier's training images).
        attributes_csv: their attribute table (None when ``data`` is one).
        select: the images to score (default: the classifier's selection without ``split``).

    Returns:
        ``{"attribute", "images", "accuracy", "balanced_accuracy", "per_value": {value: {"support",
        "called" (share called that value: its recall), "precision", "f1"}}, "confusion_matrix",
        "other_values"}``; ``other_values`` counts images whose value the classifier never saw.
    """
    from cellgen.classify.metrics import classification_metrics, confusion_matrix

    reader = DataReader(data, image_size=classifier.image_size, crop=crop_option(classifier.crop),
                        batch_size=batch_size, shuffle=False, attributes=attributes_csv,
                        attribute_columns=[classifier.attribute], select=_real_selection(classifier, select) or None,
                        root=root)
    positions, labels, _ = _value_labels(reader, classifier.attribute, classifier.values, f"evaluate_real on {data}")
    images, _ = reader.load_all()
    predictions = classifier.predict(images[positions], batch_size=batch_size)
    metrics = classification_metrics(confusion_matrix(labels, predictions, len(classifier.values)),
                                     classifier.values)
    vocabulary = reader.attribute_vocabulary[classifier.attribute]
    others = {}
    for index in reader.attribute_ids[:, 0]:
        name = vocabulary[index] if index < len(vocabulary) else NO_VALUE_TEXT
        if name not in classifier.values:
            others[name] = others.get(name, 0) + 1
    return {"attribute": classifier.attribute, "images": int(len(positions)), "accuracy": metrics["accuracy"],
            "balanced_accuracy": metrics["balanced_accuracy"],
            "per_value": {value: {"support": stats["support"], "called": stats["recall"],
                                  "precision": stats["precision"], "f1": stats["f1"]}
                          for value, stats in metrics["per_class"].items()},
            "confusion_matrix": metrics["confusion_matrix"], "other_values": others}


def _generated_images(generated, image_size: int, count: int | None, seed: int, class_name: str | None,
                      batch_size: int) -> np.ndarray:
    if hasattr(generated, "sample"):  # a cellgen sampler
        if not count:
            raise EvaluationError("attribute_fidelity: give count= to draw images from a sampler")
        return np.asarray(generated.sample(int(count), seed=seed, class_name=class_name, batch_size=batch_size))
    if isinstance(generated, (str, os.PathLike)):
        images, _ = DataReader(generated, image_size=image_size, batch_size=batch_size, shuffle=False,
                               upscale_warning=False).load_all()
        return images[:count] if count else images
    return np.asarray(generated)[:count] if count else np.asarray(generated)


def attribute_fidelity(classifier: AttributeClassifier, generated, requested: str, *, count: int | None = None,
                       seed: int = 0, class_name: str | None = None, batch_size: int = 64) -> dict[str, Any]:
    """The share of generated images the classifier calls the ``requested`` value.

    Args:
        classifier: from :func:`train_attribute_classifier` (trained on real images only).
        generated: images in [-1, 1] (or uint8), a folder of generated images, or a sampler
            (then ``count`` images of ``class_name`` are drawn with ``seed``).
        requested: the value the images were generated with, e.g. ``segmented-multilobed``.

    Returns:
        ``{"attribute", "requested", "images", "called_requested", "called": {value: share}}``.

    Raises:
        EvaluationError: a value the classifier does not know, or no images.
    """
    if requested not in classifier.values:
        raise EvaluationError(f"attribute_fidelity: the {classifier.attribute} classifier tells apart "
                              f"{', '.join(classifier.values)}, not {requested!r}")
    images = _generated_images(generated, classifier.image_size, count, seed, class_name, batch_size)
    if not len(images):
        raise EvaluationError("attribute_fidelity: no generated images")
    predictions = classifier.predict(images, batch_size=batch_size)
    called = {value: float(np.mean(predictions == index)) for index, value in enumerate(classifier.values)}
    return {"attribute": classifier.attribute, "requested": requested, "images": int(len(images)),
            "called_requested": called[requested], "called": called}


def fidelity_markdown(results: Mapping[str, Mapping[str, Any]], real: Mapping[str, Any] | None = None) -> str:
    """A Markdown table: per generator (``results``: name -> :func:`attribute_fidelity` result) the
    images and the share called each value, and the real validation images of the requested value
    (``real``: :func:`evaluate_real`) as the reference row."""
    if not results:
        raise EvaluationError("fidelity_markdown: no results")
    first = next(iter(results.values()))
    values = list(first["called"])
    requested = first["requested"]
    lines = [f"| images ({first['attribute']} requested: {requested}) | n | " + " | ".join(
                 f"called {value}" for value in values) + " |",
             "| --- | --- |" + " --- |" * len(values)]
    for name, result in results.items():
        lines.append(f"| {name} | {result['images']} | " + " | ".join(
            f"{result['called'][value]:.1%}" for value in values) + " |")
    if real is not None and requested in real["per_value"]:
        matrix = np.asarray(real["confusion_matrix"], dtype=np.float64)
        row = matrix[values.index(requested)]
        shares = row / row.sum() if row.sum() else row
        lines.append(f"| real validation images with {requested} | {int(row.sum())} | " + " | ".join(
            f"{share:.1%}" for share in shares) + " |")
    return "\n".join(lines) + "\n"


# The N&Z classifier experiment on an attribute --------------------------------------------------


def write_binary_file_list(data: str | os.PathLike, csv_path: str | os.PathLike,
                           attributes_csv: str | os.PathLike | None = None, *,
                           select: Sequence[str] = ("class=neutrophil",),
                           positive: Sequence[str] = ("nucleus_shape=segmented-multilobed",),
                           positive_label: str = "multilobed", negative_label: str = "other",
                           root: str | os.PathLike | None = None) -> dict[str, int]:
    """Writes the ``path,label`` CSV of a binary experiment: the images ``select`` names, labelled
    ``positive_label`` when they also match ``positive`` and ``negative_label`` otherwise.

    This is N&Z's one-against-the-rest set-up (their Table 4: normal against one abnormality) with
    an attribute in place of the abnormality, e.g. multilobed neutrophils against the other
    neutrophils. The CSV is a reader source, so ``evaluate_classifier.py --train TRAIN.csv --val
    VAL.csv --set mode=binary --set positive=multilobed`` trains on it (validation positives
    oversampled to the negative count, ``oversample_val_positive``), and a folder
    ``SYNTH/multilobed/`` of generated positives joins the synthetic arms (``--synthetic SYNTH``).

    Returns:
        ``{positive_label: count, negative_label: count}``.

    Raises:
        DataError: a bad selection, equal labels, or no positive or no negative image.
    """
    from cellgen.data.attributes import parse_selection

    if positive_label == negative_label or not positive_label or not negative_label:
        raise DataError(f"the positive and negative labels must differ and be non-empty, got {positive_label!r} "
                        f"and {negative_label!r}")
    reader = DataReader(data, image_size=16, shuffle=False, attributes=attributes_csv, select=list(select) or None,
                        root=root, workers=0)
    chosen = parse_selection(list(positive), reader.attribute_table, reader.classes, option="positive")
    labels = [positive_label if chosen.matches(class_name, reader.attribute_row(path), reader.attribute_table)
              else negative_label for path, class_name in reader.kept_files()]
    counts = {positive_label: labels.count(positive_label), negative_label: labels.count(negative_label)}
    if not all(counts.values()):
        raise DataError(f"{data}: the selection {reader.selection or 'of every image'} has {counts[positive_label]} "
                        f"image(s) with {chosen} and {counts[negative_label]} without; a binary experiment needs "
                        "both")
    reader.write_file_list(csv_path, labels)
    return counts
