"""TensorFlow Datasets sources (``tfds:NAME[:SPLIT]``), read record by record.

Holds the TFRecord framing (an offset index of each shard) and the ArrayRecord random access
that keep shuffling per-example without loading a dataset.
"""

from __future__ import annotations

import os
import re
import struct
import threading

import numpy as np

from cellgen.data.classes import UNLABELLED_CLASS
from cellgen.data.entries import _Entry
from cellgen.data.errors import BadFileError, DataError

TFDS_PREFIX = "tfds:"
_TFDS_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


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
