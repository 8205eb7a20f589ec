"""Scanning a source (the ``data_reader.py scan`` command): :func:`scan_images` and its :class:`ScanReport`."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from cellgen.data.errors import BadFileError
from cellgen.data.options import ON_ERROR_CHOICES, _check_choice, _check_crop, _check_image_size, _check_int
from cellgen.data.pixels import _size_text
from cellgen.data.pool import _inspect_all
from cellgen.data.sources import _open_source, _resolve_classes


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
