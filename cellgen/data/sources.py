"""Listing a source: class folders, flat folders, ``path,label`` CSV files and attribute tables, and
the class list.

TFDS datasets are listed by :mod:`cellgen.data.tfds_source`; :func:`_open_source` picks the kind. A
CSV whose header has ``class`` and ``file`` columns is an attribute table
(:mod:`cellgen.data.attributes`, WBCAtt's layout), listed by :class:`_TableSource`.
"""

from __future__ import annotations

import csv
import difflib
import os
from pathlib import Path

import numpy as np

from cellgen.data.attributes import AttributeTable, is_table_header, read_table
from cellgen.data.classes import UNLABELLED_CLASS, _check_class_names, load_classes
from cellgen.data.entries import _Entry, _file_problem, _is_hidden, _read_file_bytes
from cellgen.data.errors import DataError
from cellgen.data.tfds_source import TFDS_PREFIX, _TfdsSource
from cellgen.images import is_image_file


def close_matches(name: str, names: list[str]) -> list[str]:
    """Names that ``name`` may be a typo of (closest first; case-insensitive)."""
    lowered = {candidate.lower(): candidate for candidate in names}
    return [lowered[match] for match in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.8)]


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
    """A CSV file with ``path`` and ``label`` columns; paths relative to ``root`` (default: the CSV's folder)."""

    labelled = True
    layout = "CSV file"

    def __init__(self, csv_path: Path, root: Path | None = None):
        self.csv_path = csv_path
        self.ignored: list[tuple[str, str]] = []
        self.entries: list[_Entry] = []
        self.first_line: dict[str, int] = {}
        base = csv_path.parent if root is None else root
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
        matches = close_matches(name, classes)
        hint = f"; did you mean '{matches[0]}'?" if matches else ""
        return (f"{self.csv_path} line {self.first_line[name]}: unknown label '{name}', not in the class list "
                f"(classes: {', '.join(classes)}){hint}")

    def missing_reason(self, name: str) -> str:
        return f"class '{name}' has no rows in {self.csv_path}"

    def problem(self, entry: _Entry) -> str | None:
        return _file_problem(entry.key)

    def read_bytes(self, entry: _Entry) -> np.ndarray:
        return _read_file_bytes(entry)

class _TableSource(_CsvSource):
    """An attribute table (``split,class,file,...``) as a source: ``ROOT/<split>/<class>/<file>``.

    ``ROOT`` is the ``root`` option, else the table's folder. ``rows`` maps each entry's path to its
    :class:`~cellgen.data.attributes.AttributeRow`; ``table`` is the whole table.
    """

    layout = "attribute table (CSV)"

    def __init__(self, csv_path: Path, root: Path | None = None):
        self.csv_path = csv_path
        self.ignored = []
        self.table: AttributeTable = read_table(csv_path)
        self.entries, self.rows, self.first_line = [], {}, {}
        for row in self.table.rows:
            path = str(self.table.image_path(row, root))
            self.first_line.setdefault(row.class_name, row.line)
            self.entries.append(_Entry(path, row.class_name, f"line {row.line} of {csv_path}"))
            self.rows[path] = row
        if not any(os.path.exists(entry.key) for entry in self.entries[:50]):
            where = root if root is not None else csv_path.parent
            raise DataError(f"{csv_path}: no image of its first rows exists under {where} (e.g. "
                            f"{self.entries[0].key}); give the folder its paths are relative to (root)")
        self.class_names = sorted(self.first_line)


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        return next(csv.reader(handle), None) or []


def _open_source(source, tfds_data_dir, root=None):
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
        root = None if root is None else Path(root)
        if root is not None and not root.is_dir():
            raise DataError(f"root: {root} is not a folder")
        try:
            if is_table_header(_csv_header(path)):
                return _TableSource(path, root)
            return _CsvSource(path, root)
        except (UnicodeDecodeError, csv.Error):
            return _CsvSource(path, root)  # reports the problem with its line
        except OSError as error:
            raise DataError(f"{path}: cannot read CSV ({error.strerror or error})") from None
    raise DataError(f"{path}: a source must be a folder, a .csv file or 'tfds:NAME[:SPLIT]'")

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
            matches = close_matches(name, classes)
            hint = f"; did you mean '{matches[0]}'?" if matches else ""
            raise DataError(f"class folder {source.root / name} is not in classes ({', '.join(classes)}){hint}")
        if any(entry.class_name == name for entry in source.entries):
            raise DataError(f"{source.spec}: label '{name}' is not in classes ({', '.join(classes)})")
    return classes
