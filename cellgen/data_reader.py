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

Example:
    >>> reader = DataReader("data/pbc128/train", image_size=64, batch_size=32)
    >>> reader.classes[:2]
    ['basophil', 'eosinophil']
    >>> for images, labels in reader.epoch(0):  # float32 [32, 64, 64, 3], int32 [32]
    ...     pass
    >>> dataset = reader.as_tf_dataset()  # endless, epoch 0, 1, 2, ... for model.fit
"""

from __future__ import annotations

import csv
import json
import numbers
import os
import re
import stat
import struct
import sys
import threading
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from cellgen.images import ImageReadError, decode_rgb, from_uint8, is_image_file

UNLABELLED_CLASS = "unlabelled"
ON_ERROR_CHOICES = ("raise", "skip")
SKIP_REPORT_NAME = "skipped_files.csv"
CLASSES_FILE_NAME = "classes.json"
TFDS_PREFIX = "tfds:"
PROGRESS_MIN_FILES = 1000  # progress=None shows a bar from this many files on

_VERIFY_CHUNK = 64  # images per task in the parallel verify pass
_TFDS_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


class DataError(ValueError):
    """Bad input data or a bad reader option. The one-line message names the file or option."""


class BadFileError(DataError):
    """One image file (or record) cannot be used.

    Attributes:
        path: the file path (or TFDS record name).
        reason: what is wrong with it, without the path.
    """

    def __init__(self, path: str, reason: str, origin: str = ""):
        self.path = path
        self.reason = reason
        where = f" ({origin})" if origin else ""
        super().__init__(f"{path}: {reason}{where}")


# ---------------------------------------------------------------------------
# Class lists


def save_classes(path: str | os.PathLike, classes: Sequence[str]) -> Path:
    """Writes a class list as ``classes.json`` (a JSON list of names, index = class id).

    Args:
        path: the JSON file to write (parent folders are created).
        classes: class names in id order.

    Returns:
        The path written.
    """
    names = _check_class_names(classes, "classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(names, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_classes(path: str | os.PathLike) -> list[str]:
    """Reads a class list written by :func:`save_classes`.

    Raises:
        DataError: the file is missing, not JSON, or not a list of unique non-empty names.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: classes file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read classes file ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a JSON classes file ({error})") from None
    return _check_class_names(data, str(path))


def _check_class_names(names, what: str) -> list[str]:
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise DataError(f"{what}: expected a list of class names, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise DataError(f"{what}: the class list is empty")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{what}: class names must be non-empty strings, got {name!r}")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"{what}: duplicate class name(s): {', '.join(duplicates)}")
    return names


# ---------------------------------------------------------------------------
# Augmentation


@dataclass(frozen=True)
class Augment:
    """Classical augmentation (the rotation + zoom baseline of Klang & Carlberg).

    Applied per image after crop and resize, on uint8 pixels, with a random
    generator seeded from (reader seed, epoch, position in the epoch), so an
    epoch is reproducible and oversampled copies of one file differ. Borders
    are filled by reflection (cells lie on a plain background).

    Args:
        rotation_degrees: the angle is drawn uniformly from [-r, r] degrees.
        zoom: scale factor drawn uniformly from [1 - zoom, 1 + zoom] (a float
            in [0, 1)), or from [low, high] given as a pair; > 1 magnifies.
        horizontal_flip: mirror left-right with probability 0.5.
        vertical_flip: mirror top-bottom with probability 0.5.

    Example:
        >>> reader = DataReader("train", image_size=64,
        ...                     augment=Augment(rotation_degrees=180, zoom=0.1,
        ...                                     horizontal_flip=True, vertical_flip=True))
    """

    rotation_degrees: float = 0.0
    zoom: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    zoom_range: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not _is_real(self.rotation_degrees) or not 0 <= self.rotation_degrees <= 360:
            raise DataError(f"Augment.rotation_degrees must be in [0, 360], got {self.rotation_degrees!r}")
        if _is_real(self.zoom):
            if not 0 <= self.zoom < 1:
                raise DataError(f"Augment.zoom must be in [0, 1) or a (low, high) pair, got {self.zoom!r}")
            zoom_range = (1.0 - float(self.zoom), 1.0 + float(self.zoom))
        elif (isinstance(self.zoom, (tuple, list)) and len(self.zoom) == 2
              and all(_is_real(value) for value in self.zoom) and 0 < self.zoom[0] <= self.zoom[1]):
            zoom_range = (float(self.zoom[0]), float(self.zoom[1]))
        else:
            raise DataError(f"Augment.zoom must be in [0, 1) or a (low, high) pair with 0 < low <= high, "
                            f"got {self.zoom!r}")
        object.__setattr__(self, "zoom_range", zoom_range)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Returns an augmented copy of a uint8 (H, W, 3) image; draws 4 numbers from ``rng``."""
        flip_h, flip_v, angle_draw, zoom_draw = rng.random(4)
        if self.horizontal_flip and flip_h < 0.5:
            image = image[:, ::-1]
        if self.vertical_flip and flip_v < 0.5:
            image = image[::-1]
        angle = (2.0 * angle_draw - 1.0) * self.rotation_degrees
        low, high = self.zoom_range
        scale = low + (high - low) * zoom_draw
        if angle == 0.0 and scale == 1.0:
            return np.ascontiguousarray(image)
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, scale)
        return cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


# ---------------------------------------------------------------------------
# Sources


@dataclass(frozen=True)
class _Entry:
    key: str  # file path (or TFDS record name): what lists and messages show
    class_name: str
    origin: str = ""  # e.g. "line 7 of labels.csv"
    record: int = -1  # TFDS record number


def _read_file_bytes(entry: _Entry) -> np.ndarray:
    try:
        return np.fromfile(entry.key, dtype=np.uint8)
    except FileNotFoundError:
        raise BadFileError(entry.key, "file not found", entry.origin) from None
    except IsADirectoryError:
        raise BadFileError(entry.key, "is a directory, not an image file", entry.origin) from None
    except PermissionError:
        raise BadFileError(entry.key, "permission denied", entry.origin) from None
    except OSError as error:
        raise BadFileError(entry.key, f"cannot read file ({error.strerror or error})", entry.origin) from None


def _file_problem(path: str) -> str | None:
    """Cheap checks done for every file when the reader is built (no decoding)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot access file ({error.strerror or error})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "file is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


class _FolderSource:
    """A folder of class sub-folders, or a flat folder of unlabelled images."""

    def __init__(self, root: Path):
        self.root = root
        self.ignored: list[tuple[str, str]] = []
        self.entries: list[_Entry] = []
        children = sorted(os.scandir(root), key=lambda item: item.name)
        folders = [child for child in children if child.is_dir() and not _is_hidden(child.name)]
        images = [child for child in children
                  if not child.is_dir() and not _is_hidden(child.name) and is_image_file(child.name)]
        for child in children:
            if _is_hidden(child.name):
                self.ignored.append((child.path, "hidden file or folder"))
            elif not child.is_dir() and not is_image_file(child.name):
                self.ignored.append((child.path, "not an image file name"))
        if folders and images:
            raise DataError(f"{root}: mixes image files (e.g. {images[0].name}) with class sub-folders "
                            f"(e.g. {folders[0].name}); use one layout")
        if folders:
            self.labelled = True
            self.layout = "class folders"
            self.class_names = [folder.name for folder in folders]
            for folder in folders:
                self._list_class_folder(folder)
        elif images:
            self.labelled = False
            self.layout = "flat folder (unlabelled)"
            self.class_names = [UNLABELLED_CLASS]
            self.entries = [_Entry(image.path, UNLABELLED_CLASS) for image in images]
        else:
            raise DataError(f"{root}: empty folder (no images and no class sub-folders)")

    def _list_class_folder(self, folder: os.DirEntry):
        for child in sorted(os.scandir(folder.path), key=lambda item: item.name):
            if _is_hidden(child.name):
                self.ignored.append((child.path, "hidden file or folder"))
            elif is_image_file(child.name):  # a folder named x.jpg is kept and reported when read
                self.entries.append(_Entry(child.path, folder.name))
            elif child.is_dir():
                self.ignored.append((child.path, "sub-folder inside a class folder (not read)"))
            else:
                self.ignored.append((child.path, "not an image file name"))

    def missing_reason(self, name: str) -> str:
        folder = self.root / name
        if folder.is_dir():
            return f"class folder {folder} has no images"
        return f"class '{name}' has no folder in {self.root}"

    def problem(self, entry: _Entry) -> str | None:
        return _file_problem(entry.key)

    def read_bytes(self, entry: _Entry) -> np.ndarray:
        return _read_file_bytes(entry)


class _CsvSource:
    """A CSV file with ``path`` and ``label`` columns; paths relative to the CSV's folder."""

    labelled = True
    layout = "CSV file"

    def __init__(self, csv_path: Path):
        self.csv_path = csv_path
        self.ignored: list[tuple[str, str]] = []
        self.entries: list[_Entry] = []
        self.first_line: dict[str, int] = {}
        base = csv_path.parent
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as handle:
                rows = csv.reader(handle)
                header = next(rows, None)
                if header is None:
                    raise DataError(f"{csv_path}: empty CSV file (expected a 'path,label' header)")
                columns = [name.strip().lower() for name in header]
                for column in ("path", "label"):
                    if column not in columns:
                        raise DataError(f"{csv_path}: missing column '{column}' "
                                        f"(line 1 has: {', '.join(header) or 'nothing'})")
                path_at, label_at = columns.index("path"), columns.index("label")
                for row in rows:
                    line = rows.line_num
                    if not any(cell.strip() for cell in row):
                        continue
                    if len(row) <= max(path_at, label_at):
                        raise DataError(f"{csv_path} line {line}: {len(row)} field(s), "
                                        f"expected {len(columns)} as in the header")
                    relative, label = row[path_at].strip(), row[label_at].strip()
                    if not relative:
                        raise DataError(f"{csv_path} line {line}: empty path")
                    if not label:
                        raise DataError(f"{csv_path} line {line}: empty label for {relative}")
                    self.first_line.setdefault(label, line)
                    self.entries.append(_Entry(str(base / relative), label, f"line {line} of {csv_path}"))
        except UnicodeDecodeError as error:
            raise DataError(f"{csv_path}: not a UTF-8 text CSV ({error.reason})") from None
        except csv.Error as error:
            raise DataError(f"{csv_path}: malformed CSV ({error})") from None
        if not self.entries:
            raise DataError(f"{csv_path}: no rows after the header")
        self.class_names = sorted(self.first_line)

    def unknown_class_message(self, name: str, classes: list[str]) -> str:
        return (f"{self.csv_path} line {self.first_line[name]}: unknown label '{name}' "
                f"(classes: {', '.join(classes)})")

    def missing_reason(self, name: str) -> str:
        return f"class '{name}' has no rows in {self.csv_path}"

    def problem(self, entry: _Entry) -> str | None:
        return _file_problem(entry.key)

    def read_bytes(self, entry: _Entry) -> np.ndarray:
        return _read_file_bytes(entry)


def _parse_tfds_spec(spec: str) -> tuple[str, str]:
    rest = spec[len(TFDS_PREFIX):].strip()
    if not rest:
        raise DataError(f"source '{spec}': expected tfds:NAME[:SPLIT]")
    if ":" in rest:
        head, tail = rest.rsplit(":", 1)
        if not _TFDS_VERSION.match(tail):
            return head, tail or "train"
    return rest, "train"


class _TfdsSource:
    """A TFDS dataset prepared in a local data directory, read record by record."""

    layout = "TFDS dataset"

    def __init__(self, spec: str, data_dir: str | None):
        import tensorflow_datasets as tfds  # heavy; only for TFDS sources

        self.spec = spec
        self.ignored: list[tuple[str, str]] = []
        name, split = _parse_tfds_spec(spec)
        data_dir = data_dir or os.environ.get("TFDS_DATA_DIR") or None
        where = data_dir or "the default TFDS data_dir"
        try:
            builder = tfds.builder(name, data_dir=data_dir)
        except Exception as error:  # TFDS raises several types with multi-line messages
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise DataError(f"{spec}: dataset '{name}' not found in {where} ({first_line})") from None
        if not builder.is_prepared():
            raise DataError(f"{spec}: dataset '{name}' is not prepared in {where} "
                            f"(build it first, e.g. `tfds build {name} --data_dir DIR`; nothing is downloaded here)")
        features = builder.info.features
        self.image_key = self._feature_key(features, tfds.features.Image, "image", required=True)
        self.label_key = self._feature_key(features, tfds.features.ClassLabel, "label", required=False)
        self.labelled = self.label_key is not None
        label_names = list(features[self.label_key].names) if self.labelled else []
        try:
            instructions = builder.info.splits[split].file_instructions
        except (KeyError, ValueError, TypeError, AssertionError):
            raise DataError(f"{spec}: unknown split '{split}' "
                            f"(available: {', '.join(sorted(builder.info.splits))})") from None
        self.array_record = "array_record" in str(builder.info.file_format).lower()
        self.files: list[str] = []
        self._locations: list[tuple[int, int, int]] = []  # (file, offset or record, length)
        labels: list[int] = []
        for instruction in instructions:
            take = instruction.take if instruction.take is not None and instruction.take >= 0 else None
            file_index = len(self.files)
            self.files.append(instruction.filename)
            for location, record in self._scan(instruction.filename, instruction.skip, take):
                self._locations.append((file_index,) + location)
                labels.append(self._parse(record, len(labels))[1] if self.labelled else -1)
        if not self._locations:
            raise DataError(f"{spec}: split '{split}' has no examples")
        self.layout = f"TFDS dataset ({'ArrayRecord' if self.array_record else 'TFRecord'})"
        self.class_names = label_names if self.labelled else [UNLABELLED_CLASS]
        prefix = f"tfds:{name}:{split}"
        self.entries = []
        for number, label in enumerate(labels):
            if self.labelled and not 0 <= label < len(label_names):
                raise DataError(f"{prefix}#{number}: label {label} outside the {len(label_names)} "
                                f"'{self.label_key}' names")
            class_name = label_names[label] if self.labelled else UNLABELLED_CLASS
            self.entries.append(_Entry(f"{prefix}#{number}", class_name, record=number))
        self._lock = threading.Lock()
        self._array_readers: dict[int, object] = {}

    def _feature_key(self, features, feature_type, preferred: str, required: bool) -> str | None:
        keys = [key for key, feature in features.items() if isinstance(feature, feature_type)]
        if preferred in keys:
            return preferred
        if len(keys) == 1:
            return keys[0]
        if not keys and not required:
            return None
        what = "no" if not keys else f"several ({', '.join(keys)}) and no '{preferred}'"
        raise DataError(f"{self.spec}: {what} {feature_type.__name__} feature")

    def _scan(self, filename: str, skip: int, take: int | None):
        """Yields ((offset or record, length), record bytes) of records skip .. skip+take."""
        stop = None if take is None else skip + take
        if self.array_record:
            reader = self._open_array_record(filename)
            total = reader.num_records()
            stop = total if stop is None else min(stop, total)
            for start in range(skip, stop, 256):
                record_numbers = list(range(start, min(start + 256, stop)))
                for number, record in zip(record_numbers, reader.read(record_numbers)):
                    yield (number, len(record)), record
            return
        try:
            handle = open(filename, "rb")
        except OSError as error:
            raise DataError(f"{self.spec}: cannot open {filename} ({error.strerror or error})") from None
        with handle:
            size = os.fstat(handle.fileno()).st_size
            number = 0
            while stop is None or number < stop:
                header = handle.read(12)
                if not header:
                    break
                if len(header) < 12:
                    raise DataError(f"{filename}: truncated TFRecord file (record {number})")
                (length,) = struct.unpack("<Q", header[:8])
                offset = handle.tell()
                if offset + length + 4 > size:
                    raise DataError(f"{filename}: truncated TFRecord file (record {number})")
                if number >= skip:
                    yield (offset, length), handle.read(length)
                    handle.seek(4, os.SEEK_CUR)
                else:
                    handle.seek(length + 4, os.SEEK_CUR)
                number += 1

    @staticmethod
    def _open_array_record(filename: str):
        from array_record.python.array_record_module import ArrayRecordReader

        return ArrayRecordReader(filename, "readahead_buffer_size:0")

    def _parse(self, record: bytes, number: int) -> tuple[bytes, int]:
        from tensorflow.core.example import example_pb2

        try:
            feature = example_pb2.Example.FromString(record).features.feature
            image = feature[self.image_key].bytes_list.value[0]
            label = int(feature[self.label_key].int64_list.value[0]) if self.labelled else -1
        except Exception as error:
            raise DataError(f"{self.spec}#{number}: cannot parse the TFDS record ({error})") from None
        return image, label

    def missing_reason(self, name: str) -> str:
        return f"class '{name}' has no examples in {self.spec}"

    def problem(self, entry: _Entry) -> str | None:
        return None

    def read_bytes(self, entry: _Entry) -> np.ndarray:
        file_index, location, length = self._locations[entry.record]
        filename = self.files[file_index]
        try:
            if self.array_record:
                with self._lock:
                    reader = self._array_readers.get(file_index)
                    if reader is None:
                        reader = self._array_readers[file_index] = self._open_array_record(filename)
                    record = reader.read([location])[0]
            else:
                with open(filename, "rb") as handle:
                    handle.seek(location)
                    record = handle.read(length)
        except OSError as error:
            raise BadFileError(entry.key, f"cannot read {filename} ({error.strerror or error})") from None
        image, _ = self._parse(record, entry.record)
        return np.frombuffer(image, dtype=np.uint8)


def _open_source(source, tfds_data_dir):
    if isinstance(source, str) and source.startswith(TFDS_PREFIX):
        return _TfdsSource(source, tfds_data_dir)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"source must be a folder, a .csv file or 'tfds:NAME[:SPLIT]', got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        try:
            return _FolderSource(path)
        except PermissionError as error:
            raise DataError(f"{error.filename or path}: permission denied") from None
    if path.suffix.lower() == ".csv":
        try:
            return _CsvSource(path)
        except OSError as error:
            raise DataError(f"{path}: cannot read CSV ({error.strerror or error})") from None
    raise DataError(f"{path}: a source must be a folder, a .csv file or 'tfds:NAME[:SPLIT]'")


# ---------------------------------------------------------------------------
# Option checks


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(value, option: str, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise DataError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if _is_int(image_size) and image_size > 0:
        return int(image_size), int(image_size)
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(_is_int(side) and side > 0 for side in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise DataError(f"image_size must be None, a positive int or (height, width), got {image_size!r}")


def _check_crop(crop) -> int | float | None:
    if crop is None:
        return None
    if _is_int(crop):
        if crop > 1:
            return int(crop)
    elif _is_real(crop) and 0 < crop <= 1:
        return float(crop)
    raise DataError(f"crop must be an int > 1 (pixels) or a float in (0, 1] "
                    f"(fraction of the shorter side), got {crop!r}")


def _check_choice(value, option: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise DataError(f"{option} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _check_known(names, option: str, classes: list[str]):
    for name in names:
        if name not in classes:
            raise DataError(f"{option}: unknown class {name!r} (classes: {', '.join(classes)})")


def _check_class_filter(class_filter, classes: list[str]) -> list[int]:
    if class_filter is None:
        return list(range(len(classes)))
    names = [class_filter] if isinstance(class_filter, str) else class_filter
    if not isinstance(names, (list, tuple, set, frozenset)) or not names:
        raise DataError(f"class_filter must be a class name or a non-empty list of names, got {class_filter!r}")
    _check_known(names, "class_filter", classes)
    return sorted(classes.index(name) for name in set(names))


def _check_class_limits(class_limits, classes: list[str]) -> dict[int, int | float]:
    if class_limits is None:
        return {}
    if not isinstance(class_limits, dict):
        raise DataError(f"class_limits must be a dict class -> count or fraction, got {class_limits!r}")
    _check_known(class_limits, "class_limits", classes)
    limits = {}
    for name, limit in class_limits.items():
        if _is_int(limit) and limit >= 1:
            limits[classes.index(name)] = int(limit)
        elif _is_real(limit) and not _is_int(limit) and 0 < limit <= 1:
            limits[classes.index(name)] = float(limit)
        else:
            raise DataError(f"class_limits[{name!r}] must be a count >= 1 or a fraction in (0, 1], got {limit!r}")
    return limits


def _check_oversample(oversample, classes: list[str]) -> dict[int, int]:
    if oversample is None:
        return {}
    if not isinstance(oversample, dict):
        raise DataError(f"oversample must be a dict class -> target count, got {oversample!r}")
    _check_known(oversample, "oversample", classes)
    targets = {}
    for name, target in oversample.items():
        if not _is_int(target) or target < 1:
            raise DataError(f"oversample[{name!r}] must be a target count >= 1, got {target!r}")
        targets[classes.index(name)] = int(target)
    return targets


def _resolve_classes(source, classes) -> list[str]:
    """The class list (id = index): the given list, or the source's class names sorted."""
    if classes is not None and isinstance(classes, (str, os.PathLike)):
        classes = load_classes(classes)
    if not source.labelled:
        if classes is not None and list(classes) != [UNLABELLED_CLASS]:
            raise DataError(f"classes: {source.layout} has no labels; classes= cannot apply "
                            f"(put the images in class sub-folders)")
        return [UNLABELLED_CLASS]
    if classes is None:
        return sorted(source.class_names)
    classes = _check_class_names(classes, "classes")
    for name in source.class_names:
        if name in classes:
            continue
        if isinstance(source, _CsvSource):
            raise DataError(source.unknown_class_message(name, classes))
        if isinstance(source, _FolderSource):
            raise DataError(f"class folder {source.root / name} is not in classes ({', '.join(classes)})")
        if any(entry.class_name == name for entry in source.entries):
            raise DataError(f"{source.spec}: label '{name}' is not in classes ({', '.join(classes)})")
    return classes


# ---------------------------------------------------------------------------
# Pixel pipeline


def _crop_side(crop: int | float, height: int, width: int) -> int:
    if isinstance(crop, int):
        return crop
    return max(1, int(round(crop * min(height, width))))


def _center_crop(image: np.ndarray, crop, entry: _Entry) -> np.ndarray:
    if crop is None:
        return image
    height, width = image.shape[:2]
    side = _crop_side(crop, height, width)
    if side > height or side > width:
        raise BadFileError(entry.key, f"image is {width}x{height} px, smaller than the {side} px crop",
                           entry.origin)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def _resize(image: np.ndarray, size_hw: tuple[int, int] | None) -> np.ndarray:
    height, width = image.shape[:2]
    if size_hw is None or (height, width) == tuple(size_hw):
        return np.ascontiguousarray(image)
    target_h, target_w = size_hw
    shrinking = target_h <= height and target_w <= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (target_w, target_h), interpolation=interpolation)


def _decode_entry(source, entry: _Entry) -> np.ndarray:
    data = source.read_bytes(entry)
    try:
        return decode_rgb(data, entry.key)
    except ImageReadError as error:
        reason = str(error)
        if reason.startswith(f"{entry.key}: "):
            reason = reason[len(entry.key) + 2:]
        raise BadFileError(entry.key, reason, entry.origin) from None


@dataclass
class _Inspection:
    error: BadFileError | None = None
    native_hw: tuple[int, int] | None = None
    cropped_hw: tuple[int, int] | None = None
    image: np.ndarray | None = None


def _inspect(source, entry: _Entry, crop, size_hw, keep_image: bool) -> _Inspection:
    """Decodes and crops one entry (and resizes it when size_hw is given); keeps the result if asked."""
    try:
        image = _decode_entry(source, entry)
        cropped = _center_crop(image, crop, entry)
        prepared = _resize(cropped, size_hw) if keep_image or size_hw is not None else None
        return _Inspection(None, image.shape[:2], cropped.shape[:2], prepared if keep_image else None)
    except BadFileError as error:
        return _Inspection(error)


def _show_progress(progress, count: int) -> bool:
    return bool(progress) if progress is not None else count >= PROGRESS_MIN_FILES


def _inspect_all(source, entries: list[_Entry], crop, size_hw, keep_images: bool, workers: int,
                 progress, stop_at_first_error: bool, description: str) -> list[_Inspection]:
    """Decodes every entry once, in parallel, in chunks; results in entry order."""
    from tqdm import tqdm

    chunks = [entries[start:start + _VERIFY_CHUNK] for start in range(0, len(entries), _VERIFY_CHUNK)]

    def inspect_chunk(chunk):
        return [_inspect(source, entry, crop, size_hw, keep_images) for entry in chunk]

    results: list[_Inspection] = []
    bar = tqdm(total=len(entries), desc=description, unit="img", file=sys.stderr,
               disable=not _show_progress(progress, len(entries)), leave=False)
    executor = ThreadPoolExecutor(max(1, workers), thread_name_prefix="cellgen-verify")
    try:
        for chunk_results in executor.map(inspect_chunk, chunks):
            for inspection in chunk_results:
                if stop_at_first_error and inspection.error is not None:
                    raise inspection.error
            results.extend(chunk_results)
            bar.update(len(chunk_results))
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results


def _size_text(height_width) -> str:
    height, width = height_width
    return f"{width}x{height}"


# ---------------------------------------------------------------------------
# The reader


class DataReader:
    """Streams batches of images (float32 NHWC in [-1, 1]) and int32 labels from disk.

    Args:
        source: a class-folder tree, a flat folder (unlabelled), a ``path,label``
            CSV, or ``"tfds:NAME[:SPLIT]"`` (see the module docstring).
        image_size: output size, an int (square) or (height, width). ``None``
            keeps the size after cropping, only if all images agree.
        crop: square center crop before resizing: an int > 1 in pixels, or a
            float in (0, 1] as a fraction of the shorter side.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (deterministic for (seed, epoch)).
        seed: non-negative int; fixes shuffles, caps, oversampling and augmentation.
        classes: fixed class list (or a path to classes.json) defining the ids,
            e.g. the real data's list for a synthetic folder. A source class not
            in it is an error; a listed class absent from the source is an error
            unless ``allow_missing_classes=True``.
        on_error: ``"raise"`` stops at the first bad file, ``"skip"`` leaves bad
            files out after a verify pass and lists them in ``skipped``.
        drop_remainder: drop the last incomplete batch (static batch size).
        class_filter: a class name or list of names to keep; labels keep their
            ids from the full class list.
        class_limits: per-class caps, a count or a fraction of the class
            (fractions round to the nearest count, at least 1), e.g.
            ``{"basophil": 0.1}``. The kept subset depends on the seed only.
        oversample: per-class target count per epoch, e.g. ``{"basophil": 2000}``:
            the class's kept files are repeated (whole copies, plus a
            seed- and epoch-dependent subset for the remainder).
        augment: an :class:`Augment`, applied per image.
        workers: decoding threads (0 decodes in the calling thread).
        prefetch: batches decoded ahead of the one being consumed.
        cache: keep decoded, cropped and resized uint8 images in memory after
            their first read.
        allow_missing_classes: see ``classes``. Classes left out by
            ``class_filter`` never need images.
        tfds_data_dir: TFDS data directory (else ``$TFDS_DATA_DIR``).
        verify: decode every image once when the reader is built. Defaults to
            True for ``on_error="skip"`` (needed for exact counts), else False.
        progress: show a tqdm bar on stderr during verification; ``None``
            shows it from 1000 files on.

    Raises:
        DataError: a bad option (the message names it) or bad data.

    Example:
        >>> reader = DataReader("pbc128/train", image_size=64, batch_size=32,
        ...                     class_limits={"basophil": 80}, seed=3)
        >>> len(reader), reader.num_images, reader.class_counts()["basophil"]
        (..., ..., 80)
        >>> images, labels = next(iter(reader.epoch(1)))
        >>> images.shape, images.dtype, labels.dtype
        ((32, 64, 64, 3), dtype('float32'), dtype('int32'))
    """

    def __init__(self, source, image_size=None, crop=None, batch_size: int = 32, shuffle: bool = True,
                 seed: int = 0, classes=None, on_error: str = "raise", drop_remainder: bool = False,
                 class_filter=None, class_limits=None, oversample=None, augment: Augment | None = None,
                 workers: int = 2, prefetch: int = 2, cache: bool = False, *,
                 allow_missing_classes: bool = False, tfds_data_dir: str | os.PathLike | None = None,
                 verify: bool | None = None, progress: bool | None = None):
        self.image_size = _check_image_size(image_size)
        self.crop = _check_crop(crop)
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.seed = _check_int(seed, "seed", 0)
        self.on_error = _check_choice(on_error, "on_error", ON_ERROR_CHOICES)
        self.workers = _check_int(workers, "workers", 0)
        self.prefetch = _check_int(prefetch, "prefetch", 0)
        if augment is not None and not isinstance(augment, Augment):
            raise DataError(f"augment must be an Augment or None, got {type(augment).__name__}")
        self.augment = augment
        self.shuffle = bool(shuffle)
        self.drop_remainder = bool(drop_remainder)
        self.verified = (self.on_error == "skip") if verify is None else bool(verify)

        self._source = _open_source(source, None if tfds_data_dir is None else os.fspath(tfds_data_dir))
        self.source = os.fspath(source)
        self.layout = self._source.layout
        self.labelled = self._source.labelled
        self.ignored: list[tuple[str, str]] = list(self._source.ignored)
        self.skipped: list[tuple[str, str]] = []
        self.classes: list[str] = _resolve_classes(self._source, classes)
        class_ids = {name: index for index, name in enumerate(self.classes)}
        included = _check_class_filter(class_filter, self.classes)
        limits = _check_class_limits(class_limits, self.classes)
        targets = _check_oversample(oversample, self.classes)
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

        candidates = [entry for entry in self._source.entries if class_ids[entry.class_name] in included]
        candidates = self._cheap_checks(candidates)
        self.image_sizes: Counter = Counter()  # "WxH" -> count, filled by the verify pass
        cropped_sizes: dict[tuple[int, int], list[str]] = {}
        if self.verified:
            inspections = _inspect_all(self._source, candidates, self.crop,
                                       self.image_size if cache else None, keep_images=bool(cache),
                                       workers=self.workers, progress=progress,
                                       stop_at_first_error=self.on_error == "raise",
                                       description="verifying images")
            good = []
            for entry, inspection in zip(candidates, inspections):
                if inspection.error is not None:
                    self.skipped.append((entry.key, inspection.error.reason))
                    continue
                good.append(entry)
                self.image_sizes[_size_text(inspection.native_hw)] += 1
                cropped_sizes.setdefault(inspection.cropped_hw, []).append(entry.key)
                if inspection.image is not None:
                    self._cache[entry.key] = inspection.image
            candidates = good

        raw_counts = Counter(entry.class_name for entry in self._source.entries)
        kept_counts = Counter(entry.class_name for entry in candidates)
        for class_id in included:
            name = self.classes[class_id]
            if kept_counts[name] == 0 and not allow_missing_classes:
                if raw_counts[name]:
                    reason = f"class '{name}': all {raw_counts[name]} images were skipped as unreadable"
                else:
                    reason = self._source.missing_reason(name)
                raise DataError(f"{reason} (pass allow_missing_classes=True to allow an empty class)")

        self._kept: list[_Entry] = self._apply_limits(candidates, limits, class_ids)
        if not self._kept:
            raise DataError(f"{self.source}: no images left to read")
        if self._cache:  # the verify pass cached images that caps may have left out
            kept_keys = {entry.key for entry in self._kept}
            for key in [key for key in self._cache if key not in kept_keys]:
                del self._cache[key]
        self._labels = np.array([class_ids[entry.class_name] for entry in self._kept], dtype=np.int32)
        self._class_members = {class_id: np.flatnonzero(self._labels == class_id) for class_id in included}
        self._oversample: dict[int, int] = {}
        for class_id, target in targets.items():
            members = self._class_members.get(class_id)
            if members is None:
                continue  # left out by class_filter: nothing to oversample
            if len(members) == 0:
                raise DataError(f"oversample: class '{self.classes[class_id]}' has no images to repeat")
            if target < len(members):
                raise DataError(f"oversample[{self.classes[class_id]!r}] = {target} is below its "
                                f"{len(members)} kept images (use class_limits to reduce a class)")
            self._oversample[class_id] = target

        self.image_shape = self._resolve_image_shape(cropped_sizes)
        self.num_images = len(self._kept) + sum(
            target - len(self._class_members[class_id]) for class_id, target in self._oversample.items())
        if self.drop_remainder and self.num_images < self.batch_size:
            raise DataError(f"batch_size {self.batch_size} with drop_remainder=True leaves no batch "
                            f"from {self.num_images} images")

    # -- construction helpers ------------------------------------------------

    def _cheap_checks(self, entries: list[_Entry]) -> list[_Entry]:
        good = []
        for entry in entries:
            problem = self._source.problem(entry)
            if problem is None:
                good.append(entry)
            elif self.on_error == "raise":
                raise BadFileError(entry.key, problem, entry.origin)
            else:
                origin = f" ({entry.origin})" if entry.origin else ""
                self.skipped.append((entry.key, problem + origin))
        return good

    def _apply_limits(self, entries: list[_Entry], limits: dict[int, int | float],
                      class_ids: dict[str, int]) -> list[_Entry]:
        if not limits:
            return entries
        positions_by_class: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            positions_by_class.setdefault(class_ids[entry.class_name], []).append(position)
        dropped = set()
        for class_id, limit in limits.items():
            positions = positions_by_class.get(class_id, [])
            count = limit if isinstance(limit, int) else max(1, int(round(limit * len(positions))))
            if count >= len(positions):
                continue
            rng = np.random.default_rng([self.seed, zlib.crc32(self.classes[class_id].encode()), 7])
            keep = set(rng.choice(len(positions), size=count, replace=False).tolist())
            dropped.update(position for index, position in enumerate(positions) if index not in keep)
        return [entry for position, entry in enumerate(entries) if position not in dropped]

    def _resolve_image_shape(self, cropped_sizes: dict[tuple[int, int], list[str]]) -> tuple[int, int, int]:
        if self.image_size is not None:
            return self.image_size + (3,)
        if self.verified:
            kept = {entry.key for entry in self._kept}
            sizes = {size: [key for key in keys if key in kept] for size, keys in cropped_sizes.items()}
            sizes = {size: keys for size, keys in sizes.items() if keys}
            if len(sizes) > 1:
                listing = ", ".join(f"{_size_text(size)} ({len(keys)} files, e.g. {keys[0]})"
                                    for size, keys in sorted(sizes.items(), key=lambda item: -len(item[1])))
                raise DataError(f"image_size=None keeps the native size, but images differ: {listing}; "
                                f"pass image_size")
            return next(iter(sizes)) + (3,)
        first = self._kept[0]
        image = _center_crop(_decode_entry(self._source, first), self.crop, first)
        return image.shape[:2] + (3,)

    # -- public API ------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_remainder:
            return self.num_images // self.batch_size
        return -(-self.num_images // self.batch_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Iterates epoch 0."""
        return self.epoch(0)

    def __repr__(self) -> str:
        return (f"DataReader({self.source!r}, {self.num_images} images/epoch, {len(self)} batches of "
                f"{self.batch_size}, shape {self.image_shape}, {len(self.classes)} classes)")

    @property
    def files(self) -> list[str]:
        """The kept files (unique, after skips, filter and caps), in reading order."""
        return [entry.key for entry in self._kept]

    @property
    def labels(self) -> np.ndarray:
        """int32 class ids of :attr:`files`."""
        return self._labels.copy()

    def kept_files(self) -> list[tuple[str, str]]:
        """(path, class name) of every kept file, in the order of :attr:`files`."""
        return [(entry.key, entry.class_name) for entry in self._kept]

    def class_counts(self) -> dict[str, int]:
        """Images per epoch for every class of ``classes`` (after filter, caps and oversampling)."""
        counts = {name: 0 for name in self.classes}
        for class_id, members in self._class_members.items():
            counts[self.classes[class_id]] = self._oversample.get(class_id, len(members))
        return counts

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Indices into :attr:`files` in the order epoch ``epoch`` reads them (repeats included)."""
        epoch = _check_int(epoch, "epoch", 0)
        order = np.arange(len(self._kept))
        extras = []
        for class_id, target in sorted(self._oversample.items()):
            members = self._class_members[class_id]
            copies, remainder = divmod(target, len(members))
            extras.extend([members] * (copies - 1))
            if remainder:
                rng = np.random.default_rng([self.seed, epoch, zlib.crc32(self.classes[class_id].encode()), 11])
                extras.append(members[np.sort(rng.choice(len(members), size=remainder, replace=False))])
        if extras:
            order = np.concatenate([order] + extras)
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch, 5]).permutation(order)
        return order

    def epoch(self, index: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields epoch ``index`` as (images float32 [B, H, W, 3] in [-1, 1], labels int32 [B]).

        Decoding runs on ``workers`` threads, ``prefetch`` batches ahead.

        Raises:
            DataError: (while iterating) a file cannot be read, with on_error="raise";
                or a file changed after the verify pass.
        """
        order = self.epoch_order(index)
        return self._stream(order, index)

    def _stream(self, order: np.ndarray, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        batch_count = len(self)
        batch_size = self.batch_size
        executor = (ThreadPoolExecutor(self.workers, thread_name_prefix="cellgen-reader")
                    if self.workers > 0 else None)
        pending: deque = deque()
        next_batch = 0

        def submit(batch_number: int):
            positions = np.arange(batch_number * batch_size, min((batch_number + 1) * batch_size, len(order)))
            images = np.empty((len(positions),) + self.image_shape, dtype=np.float32)
            labels = self._labels[order[positions]]
            if executor is None:
                return images, labels, positions, None
            parts = np.array_split(np.arange(len(positions)), min(self.workers, len(positions)))
            futures = [executor.submit(self._fill, images, part, positions, order, epoch, self.augment)
                       for part in parts]
            return images, labels, positions, futures

        try:
            while next_batch < batch_count or pending:
                while next_batch < batch_count and len(pending) < self.prefetch + 1:
                    pending.append(submit(next_batch))
                    next_batch += 1
                images, labels, positions, futures = pending.popleft()
                if futures is None:
                    self._fill(images, np.arange(len(positions)), positions, order, epoch, self.augment)
                else:
                    for future in futures:
                        future.result()
                yield images, labels
        finally:
            for _, _, _, futures in pending:
                for future in futures or ():
                    future.cancel()
            if executor is not None:
                executor.shutdown(wait=True, cancel_futures=True)

    def _fill(self, images: np.ndarray, slots: np.ndarray, positions: np.ndarray, order: np.ndarray,
              epoch: int, augment: Augment | None):
        """Decodes the images at ``positions[slots]`` of an epoch's ``order`` into ``images[slots]``."""
        for slot in slots:
            position = int(positions[slot])
            pixels = self._image_uint8(int(order[position]))
            if augment is not None:
                pixels = augment.apply(pixels, np.random.default_rng([self.seed, epoch, position]))
            images[slot] = from_uint8(pixels)

    def _image_uint8(self, kept_index: int) -> np.ndarray:
        entry = self._kept[kept_index]
        if self._cache is not None:
            cached = self._cache.get(entry.key)
            if cached is not None:
                return cached
        try:
            image = _center_crop(_decode_entry(self._source, entry), self.crop, entry)
        except BadFileError as error:
            if self.verified:
                raise BadFileError(entry.key, f"{error.reason} (it passed verification: did the file change?)",
                                   entry.origin) from None
            raise
        if self.image_size is None and image.shape[:2] != self.image_shape[:2]:
            raise BadFileError(entry.key, f"is {_size_text(image.shape[:2])} after cropping but image_size=None "
                                          f"keeps the first image's {_size_text(self.image_shape[:2])}; "
                                          f"pass image_size", entry.origin)
        image = _resize(image, self.image_size)
        if self._cache is not None:
            self._cache[entry.key] = image
        return image

    def as_tf_dataset(self, epochs: int | None = None, start_epoch: int = 0, with_labels: bool = True):
        """A ``tf.data.Dataset`` of (images float32 [B, H, W, 3], labels int32 [B]) batches.

        It runs epochs ``start_epoch``, ``start_epoch + 1``, ... each with its
        own shuffle, endlessly when ``epochs`` is None (use
        ``model.fit(dataset, epochs=E, steps_per_epoch=len(reader))``), else
        for ``epochs`` epochs with a known cardinality. The batch dimension is
        static when ``drop_remainder=True``. Works with
        ``strategy.experimental_distribute_dataset``.

        Args:
            epochs: number of epochs, or None for endless.
            start_epoch: the first epoch's number (e.g. to resume training).
            with_labels: False yields images only.
        """
        import tensorflow as tf

        if epochs is not None:
            epochs = _check_int(epochs, "epochs", 1)
        start_epoch = _check_int(start_epoch, "start_epoch", 0)

        def generate():
            epoch = start_epoch
            while epochs is None or epoch < start_epoch + epochs:
                for images, labels in self.epoch(epoch):
                    yield (images, labels) if with_labels else images
                epoch += 1

        batch_dim = self.batch_size if self.drop_remainder else None
        image_spec = tf.TensorSpec((batch_dim,) + self.image_shape, tf.float32)
        signature = (image_spec, tf.TensorSpec((batch_dim,), tf.int32)) if with_labels else image_spec
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        cardinality = tf.data.INFINITE_CARDINALITY if epochs is None else len(self) * epochs
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
        return dataset.prefetch(1)

    def load_all(self) -> tuple[np.ndarray, np.ndarray]:
        """All kept images (no repeats, no augmentation) as float32 [N, H, W, 3] and int32 [N].

        Holds everything in memory: meant for small evaluation sets.
        """
        images = np.empty((len(self._kept),) + self.image_shape, dtype=np.float32)
        order = np.arange(len(self._kept))
        if self.workers == 0:
            self._fill(images, order, order, order, 0, None)
        else:
            parts = np.array_split(order, max(1, min(len(order) // 64, 4 * self.workers)))
            with ThreadPoolExecutor(self.workers, thread_name_prefix="cellgen-reader") as executor:
                for future in [executor.submit(self._fill, images, part, order, order, 0, None) for part in parts]:
                    future.result()
        return images, self._labels.copy()

    def write_skip_report(self, directory: str | os.PathLike) -> Path:
        """Writes ``skipped_files.csv`` (columns path, reason) in ``directory``; returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / SKIP_REPORT_NAME
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "reason"])
            writer.writerows(self.skipped)
        return path

    def write_file_list(self, csv_path: str | os.PathLike) -> Path:
        """Writes the kept files as a ``path,label`` CSV (paths relative to it), itself a valid source.

        Lets a later stage (or a scarcity study) read exactly the same images.
        """
        if isinstance(self._source, _TfdsSource):
            raise DataError("write_file_list needs a folder or CSV source, not a TFDS dataset")
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        base = csv_path.parent.resolve()
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for path, class_name in self.kept_files():
                try:
                    shown = os.path.relpath(Path(path).resolve(), base)
                except ValueError:  # another drive on Windows
                    shown = str(Path(path).resolve())
                writer.writerow([Path(shown).as_posix(), class_name])
        return csv_path


# ---------------------------------------------------------------------------
# Scanning (the data_reader.py scan command)


@dataclass
class ScanReport:
    """What :func:`scan_images` found.

    Attributes:
        source: the scanned source.
        layout: "class folders", "CSV file", ...
        classes: class names (id order).
        class_counts: readable images per class.
        image_sizes: decoded sizes "WxH" -> count (before any crop).
        skipped: (path, reason) of unreadable files (on_error="skip").
        ignored: (path, reason) of entries that are not image files.
    """

    source: str
    layout: str
    classes: list[str]
    class_counts: dict[str, int]
    image_sizes: dict[str, int]
    skipped: list[tuple[str, str]]
    ignored: list[tuple[str, str]]

    @property
    def total(self) -> int:
        return sum(self.class_counts.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "layout": self.layout,
            "classes": self.classes,
            "class_counts": self.class_counts,
            "total": self.total,
            "image_sizes": self.image_sizes,
            "unreadable": [{"path": path, "reason": reason} for path, reason in self.skipped],
            "ignored": [{"path": path, "reason": reason} for path, reason in self.ignored],
        }


def scan_images(source, crop=None, image_size=None, on_error: str = "raise", classes=None,
                workers: int = 2, progress: bool | None = None,
                tfds_data_dir: str | os.PathLike | None = None) -> ScanReport:
    """Decodes every image of a source once (in parallel) and counts what it finds.

    Unlike :class:`DataReader` it accepts images of mixed sizes (it reports
    them). With ``crop``, images smaller than the crop are unreadable; with
    ``image_size`` every image also goes through the resize.

    Args:
        source: as for :class:`DataReader`.
        crop: as for :class:`DataReader`.
        image_size: as for :class:`DataReader` (only exercises the resize).
        on_error: "raise" stops at the first bad file, "skip" lists them.
        classes: fixed class list (or classes.json path).
        workers: decoding threads.
        progress: tqdm bar on stderr (None: from 1000 files on).
        tfds_data_dir: as for :class:`DataReader`.

    Example:
        >>> report = scan_images("pbc128/train", on_error="skip")
        >>> report.class_counts["basophil"], report.image_sizes
        (849, {'128x128': 11953})
    """
    size_hw = _check_image_size(image_size)
    crop = _check_crop(crop)
    on_error = _check_choice(on_error, "on_error", ON_ERROR_CHOICES)
    workers = _check_int(workers, "workers", 1)
    data = _open_source(source, None if tfds_data_dir is None else os.fspath(tfds_data_dir))
    class_list = _resolve_classes(data, classes)
    skipped: list[tuple[str, str]] = []
    entries = []
    for entry in data.entries:
        problem = data.problem(entry)
        if problem is None:
            entries.append(entry)
        elif on_error == "raise":
            raise BadFileError(entry.key, problem, entry.origin)
        else:
            skipped.append((entry.key, problem + (f" ({entry.origin})" if entry.origin else "")))
    inspections = _inspect_all(data, entries, crop, size_hw, keep_images=False, workers=workers,
                               progress=progress, stop_at_first_error=on_error == "raise",
                               description="scanning images")
    counts = {name: 0 for name in class_list}
    sizes: Counter = Counter()
    for entry, inspection in zip(entries, inspections):
        if inspection.error is not None:
            skipped.append((entry.key, inspection.error.reason))
        else:
            counts[entry.class_name] += 1
            sizes[_size_text(inspection.native_hw)] += 1
    return ScanReport(os.fspath(source), data.layout, class_list, counts,
                      dict(sizes.most_common()), skipped, list(data.ignored))
