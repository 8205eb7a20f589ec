"""Streaming image reader shared by every cellgen stage (GAN, DDIM, classifiers).

Klang & Carlberg (2020, section 4.2) wrote their own reader because their
dataset did not fit in memory; this is the same idea. Images are listed once,
then decoded from disk batch by batch by a small pool of worker threads
(OpenCV releases the GIL while decoding and resizing), with a bounded number
of batches decoded ahead. Nothing is held in memory unless ``cache=True``.

Sources (the ``source`` argument of :class:`DataReader`):

* a folder with one sub-folder per class (``train/<class>/*.jpg``);
* a CSV file with ``path,label`` columns, paths relative to the CSV's folder
  (absolute paths also work);
* an attribute table (WBCAtt's layout ``split,class,file,<attributes>``, see
  :mod:`~cellgen.data.attributes`): paths ``ROOT/<split>/<class>/<file>``, ``ROOT`` the ``root``
  option or the CSV's folder; a table with several splits is read one split at a time
  (``select=["split=train"]``). A table also annotates any other source (``attributes=CSV``),
  ``select`` keeps a subset named by attribute values and ``epoch(i, with_attributes=True)``
  yields attribute ids with the labels;
* an unlabelled flat folder of images. It is read as a single pseudo-class:
  ``reader.classes == ["unlabelled"]`` and every label is 0, so class counts,
  caps and oversampling work unchanged; ``reader.labelled`` is False;
* a TensorFlow Datasets dataset already prepared in the local data directory,
  ``"tfds:NAME[:SPLIT]"`` (split defaults to ``train``; ``NAME`` may carry a
  version, ``"tfds:name:1.0.0:test"``). The data directory is the
  ``tfds_data_dir`` option, else the ``TFDS_DATA_DIR`` environment variable,
  else the TFDS default. Nothing is downloaded. Records are read by random
  access (an offset index for TFRecord shards, the record index for
  ArrayRecord) so that shuffling stays per-example; TFDS label ids are
  re-mapped by class *name* to cellgen's sorted ids.

Pixel pipeline for every image: OpenCV decode (non-ASCII paths work), BGR to
RGB (grayscale replicated, alpha composited on white, 16-bit scaled to 8),
optional square center crop, resize to ``image_size`` (``cv2.INTER_AREA``
when shrinking, ``cv2.INTER_CUBIC`` when enlarging), optional classical
augmentation, then ``(p - 127.5) / 127.5`` to float32 in [-1, 1].

Bad files: with ``on_error="raise"`` (default) the first bad file met stops
the run with a one-line :class:`DataError` naming it; cheap problems (missing,
empty, a directory) are found when the reader is built, decode problems while
streaming. With ``on_error="skip"`` every image is decoded once when the
reader is built (in parallel, with a progress bar for large sets), bad files
are listed in ``reader.skipped`` and left out, and ``len(reader)`` and
``reader.num_images`` are exact before training starts. Nothing is dropped
silently: files that are not images by name (``notes.txt``), hidden files
(``.DS_Store``) and stray sub-folders are listed in ``reader.ignored``.

Modules: :mod:`~cellgen.data.reader` (:class:`DataReader`), :mod:`~cellgen.data.sources`
(folders and CSV files), :mod:`~cellgen.data.tfds_source` (TFDS, TFRecord framing),
:mod:`~cellgen.data.entries` (per-file checks), :mod:`~cellgen.data.pixels` (decode, crop,
resize), :mod:`~cellgen.data.pool` (the parallel verify pass), :mod:`~cellgen.data.augment`,
:mod:`~cellgen.data.classes` (``classes.json``), :mod:`~cellgen.data.attributes` (attribute tables such as
WBCAtt's, selections, attribute ids), :mod:`~cellgen.data.options` (option checks,
:func:`crop_option`), :mod:`~cellgen.data.scan` (:func:`scan_images`) and
:mod:`~cellgen.data.errors`. ``cellgen.data_reader`` re-exports this package (older imports).

Example:
    >>> reader = DataReader("data/pbc128/train", image_size=64, batch_size=32)
    >>> reader.classes[:2]
    ['basophil', 'eosinophil']
    >>> for images, labels in reader.epoch(0):  # float32 [32, 64, 64, 3], int32 [32]
    ...     pass
    >>> dataset = reader.as_tf_dataset()  # endless, epoch 0, 1, 2, ... for model.fit
"""

from __future__ import annotations

from cellgen.data.attributes import AttributeTable, Selection, parse_selection, read_table
from cellgen.data.augment import Augment
from cellgen.data.classes import CLASSES_FILE_NAME, UNLABELLED_CLASS, load_classes, save_classes
from cellgen.data.errors import BadFileError, DataError
from cellgen.data.options import ON_ERROR_CHOICES, crop_option
from cellgen.data.pool import PROGRESS_MIN_FILES
from cellgen.data.reader import SKIP_REPORT_NAME, DataReader, raising_data_errors
from cellgen.data.scan import ScanReport, scan_images
from cellgen.data.tfds_source import TFDS_PREFIX

__all__ = [
    "AttributeTable", "Selection", "parse_selection", "read_table", "Augment", "BadFileError", "CLASSES_FILE_NAME", "DataError", "DataReader", "ON_ERROR_CHOICES",
    "PROGRESS_MIN_FILES", "SKIP_REPORT_NAME", "ScanReport", "TFDS_PREFIX", "UNLABELLED_CLASS", "crop_option",
    "load_classes", "raising_data_errors", "save_classes", "scan_images",
]
