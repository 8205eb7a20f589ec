""":class:`DataReader`: streams batches of images and labels from a source, decoded by worker threads."""

from __future__ import annotations

import contextlib
import csv
import os
import statistics
import sys
import threading
import zlib
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from cellgen.data.attributes import (AttributeRow, AttributeTable, Selection, encode_rows, parse_selection,
                                     read_table, vocabulary_from_items)
from cellgen.data.augment import Augment
from cellgen.data.entries import _Entry
from cellgen.data.errors import BadFileError, DataError
from cellgen.data.options import (ON_ERROR_CHOICES, _check_choice, _check_class_filter, _check_class_limits,
                                  _check_crop, _check_image_size, _check_int, _check_oversample)
from cellgen.data.pixels import _center_crop, _decode_entry, _resize, _size_text
from cellgen.data.pool import _inspect_all
from cellgen.data.sources import (_CsvSource, _FolderSource, _open_source, _resolve_classes, _TableSource,
                                  close_matches)
from cellgen.data.tfds_source import _TfdsSource
from cellgen.images import from_uint8

SKIP_REPORT_NAME = "skipped_files.csv"
# A class this rare next to the median class (count <= 2 and median >= 25 x count) is flagged as a
# possible label typo when the class list comes from the data.
RARE_CLASS_MAX_IMAGES = 2
RARE_CLASS_MEDIAN_RATIO = 25


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
            in it is an error (the message names the label, the CSV line and the
            classes); a listed class absent from the source is an error unless
            ``allow_missing_classes=True``. Without it the classes are the source's
            (sorted), and a class far rarer than the others (at most 2 images while
            the median class has 25x more) gets a warning: a possible label typo.
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
        upscale_warning: warn when images smaller than ``image_size`` are
            enlarged (off for readers that resize on purpose, e.g. feature extractors).
        attributes: an attribute table (a WBCAtt-layout CSV path or an
            :class:`~cellgen.data.attributes.AttributeTable`) annotating the source's images,
            matched by class and file name; images without a row have "no value". A source that
            is itself an attribute table annotates its images without it.
        attribute_columns: the attributes whose ids :meth:`epoch` yields with
            ``with_attributes=True`` (default: every attribute of the table).
        attribute_values: a fixed vocabulary, ``["column=value", ...]`` (a model's); default: the
            table's values, sorted. Ids number each column's values; ``len(values)`` is "no value".
        select: ``COLUMN=VALUE`` items naming the images to keep (see
            :func:`~cellgen.data.attributes.parse_selection`; ``class``, ``split`` and attribute
            columns). Classes with no selected image need none. An attribute table source with
            several splits needs a ``split=`` item (so training never mixes in validation rows).
        root: the folder a CSV's paths are relative to (default: the CSV's folder).

    Warnings (questionable but usable input) are printed once per reader on stderr
    as ``warning: ...`` and kept in :attr:`notes` for a run's log: a possible
    label typo, images enlarged to ``image_size`` (see :attr:`upscaled`; known
    after the verify pass, else after the first epoch read), and with
    ``on_error="skip"`` the skipped files (announced by :meth:`write_skip_report`
    with the report's path, else on the first read).

    A bad file met while streaming inside ``tf.data`` (``model.fit``) surfaces as
    TensorFlow's long ``InvalidArgumentError``; :meth:`raising_data_errors` turns
    it back into the one-line :class:`DataError` naming the file.

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
                 verify: bool | None = None, progress: bool | None = None, upscale_warning: bool = True,
                 attributes=None, attribute_columns=None, attribute_values=None, select=None, root=None):
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
        self.notes: list[str] = []  # warnings for a run's log (see the class docstring)
        self.upscale_warning = bool(upscale_warning)
        self._lock = threading.Lock()
        self._printed: set[str] = set()
        self._upscaled: dict[int, tuple[int, int]] = {}  # kept index -> size before the resize
        self._upscale_reported = False
        self._skip_note: str | None = None
        self._stream_error: DataError | None = None

        self._source = _open_source(source, None if tfds_data_dir is None else os.fspath(tfds_data_dir), root)
        if root is not None and not isinstance(self._source, _CsvSource):
            raise DataError(f"root applies to CSV sources; {source} is a {self._source.layout}")
        self.source = os.fspath(source)
        self.layout = self._source.layout
        self.labelled = self._source.labelled
        self.ignored: list[tuple[str, str]] = list(self._source.ignored)
        self.skipped: list[tuple[str, str]] = []
        self.classes: list[str] = _resolve_classes(self._source, classes)
        if classes is None:
            self._warn_rare_classes()
        class_ids = {name: index for index, name in enumerate(self.classes)}
        included = _check_class_filter(class_filter, self.classes)
        limits = _check_class_limits(class_limits, self.classes)
        targets = _check_oversample(oversample, self.classes)
        self._cache: dict[str, np.ndarray] | None = {} if cache else None

        candidates = [entry for entry in self._source.entries if class_ids[entry.class_name] in included]
        self.attribute_table: AttributeTable | None = None
        self.attribute_vocabulary: dict[str, list[str]] = {}  # column -> values (ids: their positions)
        self.selection: Selection | None = None
        self._rows: dict[str, AttributeRow | None] = {}
        candidates, unselected = self._attach_attributes(candidates, attributes, select,
                                                         attribute_columns, attribute_values)
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
            if kept_counts[name] == 0 and not allow_missing_classes and name not in unselected:
                raise DataError(self._missing_class_message(name, raw_counts[name], listed=classes is not None))

        self._kept: list[_Entry] = self._apply_limits(candidates, limits, class_ids)
        if not self._kept:
            raise DataError(f"{self.source}: no images left to read")
        if self._cache:  # the verify pass cached images that caps may have left out
            kept_keys = {entry.key for entry in self._kept}
            for key in [key for key in self._cache if key not in kept_keys]:
                del self._cache[key]
        self._labels = np.array([class_ids[entry.class_name] for entry in self._kept], dtype=np.int32)
        self._attribute_ids = np.zeros((len(self._kept), 0), np.int32)
        if self.attribute_table is not None:
            self._attribute_ids = encode_rows(self.attribute_table, [self._rows.get(entry.key) for entry in self._kept],
                                              self.attribute_vocabulary)
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
        if self.skipped:
            first_path, first_reason = self.skipped[0]
            self._skip_note = (f"{self.source}: skipped {_count(len(self.skipped), 'unreadable file')} "
                               f"(first: {first_path}: {first_reason})")
            self.notes.append(self._skip_note)
        if self.verified and self.image_size is not None and self.upscale_warning:
            kept_index = {entry.key: index for index, entry in enumerate(self._kept)}
            for size, keys in cropped_sizes.items():
                if _enlarges(size, self.image_size):
                    self._upscaled.update((kept_index[key], size) for key in keys if key in kept_index)
            self._report_upscaled()
        self.num_images = len(self._kept) + sum(
            target - len(self._class_members[class_id]) for class_id, target in self._oversample.items())
        if self.drop_remainder and self.num_images < self.batch_size:
            raise DataError(f"batch_size {self.batch_size} with drop_remainder=True leaves no batch "
                            f"from {self.num_images} images")

    # -- construction helpers ------------------------------------------------

    def _attach_attributes(self, candidates: list[_Entry], attributes, select, columns, values):
        """Finds the attribute rows of ``candidates`` and keeps the selected ones.

        Returns ``(candidates, classes emptied by the selection)``.
        """
        table = None
        if attributes is not None:
            table = attributes if isinstance(attributes, AttributeTable) else read_table(attributes)
        elif isinstance(self._source, _TableSource):
            table = self._source.table
        if table is None:
            given = [name for name, value in (("select", select), ("attribute_columns", columns),
                                              ("attribute_values", values)) if value]
            if given:
                raise DataError(f"{given[0]} needs attributes: give attributes=CSV (a table of the images' "
                                f"attributes, WBCAtt's layout) or read such a table as the source")
            return candidates, set()
        self.attribute_table = table
        columns = table.check_columns(table.columns if columns is None else columns)
        if values is None:
            self.attribute_vocabulary = table.vocabulary(columns)
        elif isinstance(values, dict):
            self.attribute_vocabulary = {column: list(values[column]) for column in columns}
        else:
            self.attribute_vocabulary = vocabulary_from_items(values, columns)
        own_rows = self._source.rows if isinstance(self._source, _TableSource) and attributes is None else None
        unmatched = []
        annotated = set(table.annotated_classes)
        for entry in candidates:
            row = own_rows.get(entry.key) if own_rows is not None else table.row_for(entry.class_name, entry.key)
            self._rows[entry.key] = row
            if row is None and entry.class_name in annotated:
                unmatched.append(entry.key)
        if unmatched:
            self._warn(f"{_count(len(unmatched), 'image')} of classes {table.path} annotates have no row there "
                       f"(first: {unmatched[0]}); they have no attribute values")
        if select:
            self.selection = parse_selection(select, table, self.classes)
        splits = table.splits
        if own_rows is not None and len(splits) > 1 and (self.selection is None
                                                          or self.selection.allowed("split") is None):
            raise DataError(f"{table.path}: has rows of the splits {', '.join(splits)}; choose one with "
                            f"select split=NAME (reading several would mix training and validation images)")
        if self.selection is None:
            return candidates, set()
        kept = [entry for entry in candidates
                if self.selection.matches(entry.class_name, self._rows[entry.key], table)]
        if not kept:
            raise DataError(f"select {self.selection}: no image of {self.source} matches")
        before = {entry.class_name for entry in candidates}
        return kept, before - {entry.class_name for entry in kept}

    def _missing_class_message(self, name: str, raw_count: int, listed: bool) -> str:
        """Why class ``name`` has no images, and what the user can do about it (no internal option names)."""
        folder = self._source.root / name if isinstance(self._source, _FolderSource) else None
        if raw_count:
            reason = f"class '{name}': all {_count(raw_count, 'image')} were skipped as unreadable"
            remedies = ["replace them"]
        else:
            reason = self._source.missing_reason(name)
            if folder is not None:
                remedies = ["add images to it" if folder.is_dir() else f"add the folder {folder} with images"]
            elif isinstance(self._source, _CsvSource):
                remedies = ["add rows for it"]
            else:
                remedies = ["read a split that has images of every class"]
        if listed:
            remedies.append("use a class list without it")
        elif folder is not None and folder.is_dir():
            remedies.append("remove the folder")
        return f"{reason}: {' or '.join(remedies)}"

    def _warn_rare_classes(self):
        """Warns about classes far rarer than the median class of the source: possible label typos."""
        if not isinstance(self._source, (_FolderSource, _CsvSource)) or len(self.classes) < 3:
            return
        counts = Counter(entry.class_name for entry in self._source.entries)
        for name in self.classes:
            others = [counts[other] for other in self.classes if other != name]
            median = statistics.median(others)
            count = counts[name]
            if not count or count > RARE_CLASS_MAX_IMAGES or median < RARE_CLASS_MEDIAN_RATIO * count:
                continue  # an empty class is an error of its own (see _missing_class_message)
            matches = close_matches(name, [other for other in self.classes if other != name])
            hint = f" (did you mean '{matches[0]}'?)" if matches else ""
            if isinstance(self._source, _CsvSource):
                where = f"label '{name}' occurs on {_count(count, 'line')} of {self._source.csv_path} " \
                        f"(first: line {self._source.first_line[name]})"
            else:
                where = f"class folder {self._source.root / name} has {_count(count, 'image')}"
            self._warn(f"{where}, the median class has {round(median)} images: a typo?{hint}")

    def _warn(self, message: str):
        """Adds a warning to :attr:`notes` (if new) and prints it once on stderr."""
        with self._lock:
            if message in self._printed:
                return
            self._printed.add(message)
            if message not in self.notes:
                self.notes.append(message)
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def _announce_skips(self, report: Path | None = None):
        if self._skip_note is None or self._skip_note in self._printed:
            return
        with self._lock:
            self._printed.add(self._skip_note)
        if report is None:
            message = self._skip_note
        else:
            message = (f"{self.source}: skipped {_count(len(self.skipped), 'unreadable file')}; "
                       f"list in {report}")
        print(f"warning: {message}", file=sys.stderr, flush=True)

    def _report_upscaled(self, counted: str = ""):
        """Warns once about enlarged images; ``counted`` says what the count covers when it is not
        every kept image (an epoch that drops its last partial batch leaves a few images unread)."""
        with self._lock:
            if self._upscale_reported or not self._upscaled:
                return
            self._upscale_reported = True
            upscaled = sorted(self._upscaled.items())
        height, width = self.image_size
        target = f"{height} px" if height == width else f"{_size_text(self.image_size)} px"
        smallest = min((size for _, size in upscaled), key=lambda size: (size[0] * size[1], size))
        cropped = " after cropping" if self.crop is not None else ""
        were = "image smaller than {} was upscaled" if len(upscaled) == 1 else "images smaller than {} were upscaled"
        self._warn(f"{len(upscaled)} {were.format(target)}{counted} (smallest {_size_text(smallest)}{cropped}): "
                   f"first {self._kept[upscaled[0][0]].key}")

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

    @property
    def attribute_columns(self) -> list[str]:
        """The attributes of :attr:`attribute_ids` (empty without an attribute table)."""
        return list(self.attribute_vocabulary)

    @property
    def attribute_ids(self) -> np.ndarray:
        """int32 (N, A) attribute ids of :attr:`files` (``len(values)``: "no value"; A = 0 without a table)."""
        return self._attribute_ids.copy()

    def attribute_row(self, path: str) -> AttributeRow | None:
        """The attribute row of a kept file (None: no row, or no attribute table)."""
        return self._rows.get(path)

    def kept_files(self) -> list[tuple[str, str]]:
        """(path, class name) of every kept file, in the order of :attr:`files`."""
        return [(entry.key, entry.class_name) for entry in self._kept]

    @property
    def upscaled(self) -> list[tuple[str, str]]:
        """(path, "WxH" before the resize) of the files enlarged to ``image_size``, in file order.

        Complete after the verify pass (``on_error="skip"`` or ``verify=True``); otherwise it
        fills while images are read (complete once every file was read once).
        """
        with self._lock:
            upscaled = sorted(self._upscaled.items())
        return [(self._kept[index].key, _size_text(size)) for index, size in upscaled]

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

    def epoch(self, index: int, with_attributes: bool = False) -> Iterator[tuple[np.ndarray, ...]]:
        """Yields epoch ``index`` as (images float32 [B, H, W, 3] in [-1, 1], labels int32 [B]).

        With ``with_attributes`` (a reader with an attribute table) each batch also has its
        attribute ids, int32 [B, A] (see :attr:`attribute_ids`).
        Decoding runs on ``workers`` threads, ``prefetch`` batches ahead.

        Raises:
            DataError: (while iterating) a file cannot be read, with on_error="raise";
                or a file changed after the verify pass.
        """
        self._check_with_attributes(with_attributes)
        order = self.epoch_order(index)
        self._announce_skips()
        return self._stream(order, index, with_attributes)

    def _check_with_attributes(self, with_attributes: bool):
        if with_attributes and self.attribute_table is None:
            raise DataError(f"with_attributes: {self.source} has no attribute table (give attributes=CSV)")

    def _stream(self, order: np.ndarray, epoch: int, with_attributes: bool = False
                ) -> Iterator[tuple[np.ndarray, ...]]:
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
                if with_attributes:
                    yield images, labels, self._attribute_ids[order[positions]]
                else:
                    yield images, labels
            self._report_upscaled(" in the first epoch")
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
        if self.upscale_warning and self.image_size is not None and _enlarges(image.shape[:2], self.image_size):
            with self._lock:
                self._upscaled[kept_index] = image.shape[:2]
        image = _resize(image, self.image_size)
        if self._cache is not None:
            self._cache[entry.key] = image
        return image

    def as_tf_dataset(self, epochs: int | None = None, start_epoch: int = 0, with_labels: bool = True,
                      with_attributes: bool = False):
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
            with_attributes: also yield the attribute ids, int32 [B, A]: batches
                ``(images, labels, attribute_ids)`` (needs ``with_labels``).
        """
        import tensorflow as tf

        self._check_with_attributes(with_attributes)
        if with_attributes and not with_labels:
            raise DataError("with_attributes needs with_labels (batches are images, labels, attribute ids)")

        if epochs is not None:
            epochs = _check_int(epochs, "epochs", 1)
        start_epoch = _check_int(start_epoch, "start_epoch", 0)

        def generate():
            epoch = start_epoch
            try:
                while epochs is None or epoch < start_epoch + epochs:
                    for batch in self.epoch(epoch, with_attributes):
                        yield batch if with_labels else batch[0]
                    epoch += 1
            except DataError as error:  # tf.data wraps it; raising_data_errors() unwraps it
                with self._lock:
                    if self._stream_error is None:
                        self._stream_error = error
                raise

        batch_dim = self.batch_size if self.drop_remainder else None
        image_spec = tf.TensorSpec((batch_dim,) + self.image_shape, tf.float32)
        signature = (image_spec, tf.TensorSpec((batch_dim,), tf.int32)) if with_labels else image_spec
        if with_attributes:
            signature += (tf.TensorSpec((batch_dim, len(self.attribute_columns)), tf.int32),)
        dataset = tf.data.Dataset.from_generator(generate, output_signature=signature)
        cardinality = tf.data.INFINITE_CARDINALITY if epochs is None else len(self) * epochs
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(cardinality))
        return dataset.prefetch(1)

    def raising_data_errors(self):
        """A context manager that turns a bad file met inside ``tf.data`` back into a :class:`DataError`.

        A file that cannot be decoded while :meth:`as_tf_dataset` streams (``on_error="raise"``, or a
        file changed after verification) stops ``model.fit`` with TensorFlow's
        ``InvalidArgumentError`` (a long traceback ending in ``IteratorGetNext``, the file named
        deep inside). The reader remembers that first failure; this context manager catches the
        TensorFlow error (any ``tf.errors.OpError``) and raises the reader's one-line error instead
        (a :class:`BadFileError`, e.g. ``".../b/x.jpg: not a readable image (corrupt, truncated or
        unsupported format)"``), ``from None``. Other TensorFlow errors, and every error when this
        reader met no bad file, pass through unchanged. Entering it forgets earlier failures.

        A training loop wraps the calls that consume the reader's datasets, one context per
        reader (or :func:`raising_data_errors` for several)::

            with reader.raising_data_errors():
                model.fit(reader.as_tf_dataset(start_epoch=initial_epoch), epochs=epochs,
                          initial_epoch=initial_epoch, steps_per_epoch=len(reader))

            with raising_data_errors(reader, val_reader):  # None entries are ignored
                model.fit(reader.as_tf_dataset(), validation_data=val_reader.as_tf_dataset(epochs=1), ...)

        Works the same around ``strategy.experimental_distribute_dataset`` datasets and plain
        iteration (``for batch in dataset``). The script's ``guarded`` wrapper then prints
        ``error: <file>: <reason>`` and exits with status 2.
        """
        return raising_data_errors(self)

    def load_all(self, with_attributes: bool = False) -> tuple[np.ndarray, ...]:
        """All kept images (no repeats, no augmentation) as float32 [N, H, W, 3] and int32 [N]
        (and, ``with_attributes``, the int32 [N, A] attribute ids).

        Holds everything in memory: meant for small evaluation sets.
        """
        self._check_with_attributes(with_attributes)
        self._announce_skips()
        images = np.empty((len(self._kept),) + self.image_shape, dtype=np.float32)
        order = np.arange(len(self._kept))
        if self.workers == 0:
            self._fill(images, order, order, order, 0, None)
        else:
            parts = np.array_split(order, max(1, min(len(order) // 64, 4 * self.workers)))
            with ThreadPoolExecutor(self.workers, thread_name_prefix="cellgen-reader") as executor:
                for future in [executor.submit(self._fill, images, part, order, order, 0, None) for part in parts]:
                    future.result()
        self._report_upscaled()
        if with_attributes:
            return images, self._labels.copy(), self._attribute_ids.copy()
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
        self._announce_skips(path)
        return path

    def write_file_list(self, csv_path: str | os.PathLike, labels: Sequence[str] | None = None) -> Path:
        """Writes the kept files as a ``path,label`` CSV (paths relative to it), itself a valid source.

        Lets a later stage (or a scarcity study) read exactly the same images. ``labels`` (one per
        kept file, in the order of :attr:`files`) replaces the class names, e.g. to relabel a
        selection as the positive class of a binary experiment.
        """
        if isinstance(self._source, _TfdsSource):
            raise DataError("write_file_list needs a folder or CSV source, not a TFDS dataset")
        if labels is not None and len(labels) != len(self._kept):
            raise DataError(f"write_file_list: {len(labels)} labels for {len(self._kept)} files")
        csv_path = Path(csv_path)
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        base = csv_path.parent.resolve()
        with open(csv_path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            for index, (path, class_name) in enumerate(self.kept_files()):
                if labels is not None:
                    class_name = labels[index]
                try:
                    shown = os.path.relpath(Path(path).resolve(), base)
                except ValueError:  # another drive on Windows
                    shown = str(Path(path).resolve())
                writer.writerow([Path(shown).as_posix(), class_name])
        return csv_path


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" + ("" if number == 1 else "s")


def _enlarges(height_width: Sequence[int], size_hw: tuple[int, int]) -> bool:
    """Whether the resize to ``size_hw`` enlarges an image (cubic interpolation; see ``_resize``)."""
    height, width = height_width[:2]
    return (height, width) != tuple(size_hw) and not (size_hw[0] <= height and size_hw[1] <= width)


@contextlib.contextmanager
def raising_data_errors(*readers: DataReader | None):
    """:meth:`DataReader.raising_data_errors` for several readers at once (None entries are ignored).

    Example::

        with raising_data_errors(train_reader, val_reader):
            model.fit(train_reader.as_tf_dataset(), validation_data=..., ...)
    """
    import tensorflow as tf

    readers = [reader for reader in readers if reader is not None]
    for reader in readers:
        with reader._lock:
            reader._stream_error = None
    try:
        yield
    except tf.errors.OpError:
        for reader in readers:
            error = reader._stream_error
            if error is not None:
                raise error.with_traceback(None) from None
        raise
