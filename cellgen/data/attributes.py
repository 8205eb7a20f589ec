"""Morphological attributes of cell images: attribute tables, selections and attribute ids.

WBCAtt (Tsutsui, Pang and Wen, "WBCAtt: A White Blood Cell Dataset Annotated with Detailed
Morphological Attributes", NeurIPS 2023 Datasets and Benchmarks; MIT licence) annotates 11
attributes (cell size and shape, nucleus shape, nuclear-cytoplasmic ratio, chromatin density,
cytoplasm vacuole, texture and colour, granule type and colour, granularity) of every basophil,
eosinophil, lymphocyte, monocyte and neutrophil image of the PBC dataset. Its table has one row
per image::

    split,class,file,cell_size,cell_shape,nucleus_shape,...,granularity,wbcatt_split
    train,neutrophil,SNE_221335.jpg,big,round,segmented-multilobed,...,yes,train

An **attribute table** (:class:`AttributeTable`, :func:`read_table`) is any CSV with ``class`` and
``file`` columns (``split`` optional); every other column is an attribute, except
``wbcatt_split`` (WBCAtt's own split, which is *not* ours and is never read as data). An empty
cell means "no value": the image is not annotated for that attribute (PBC classes WBCAtt does
not annotate, erythroblast, ig and platelet, have empty cells or no row at all).

A **selection** (:func:`parse_selection`) is a list of ``COLUMN=VALUE`` items naming a subset:
items of different columns must all hold, items of the same column are alternatives, e.g.
``["class=neutrophil", "nucleus_shape=segmented-multilobed"]`` (the multilobed neutrophils, the
closest public stand-in for the hypersegmented cells of Nilsson & Zettergren 2023) or
``["nucleus_shape=segmented-bilobed", "nucleus_shape=segmented-multilobed"]``. ``class`` and
``split`` are columns too. Unknown columns or values are a one-line :class:`DataError` listing
the valid ones.

**Attribute ids** (for conditioning a generator or training a classifier) number each
attribute's values in sorted order; id ``len(values)`` is "no value". A model stores its
vocabulary as a list of ``COLUMN=VALUE`` items (:func:`vocabulary_items`,
:func:`vocabulary_from_items`), so it is a flat config field.

The :class:`~cellgen.data.DataReader` uses all of this: a table CSV is itself a source (file
paths ``ROOT/<split>/<class>/<file>``, ``ROOT`` the ``root`` option or the CSV's folder), or it
annotates another source (``attributes=CSV``, rows matched by class and file name); ``select``
keeps the selected images and ``with_attributes=True`` yields attribute ids with the labels.

Example:
    >>> table = read_table("cellgen/sample_data/pbc-64/wbcatt.csv")
    >>> table.values("nucleus_shape")[:2]
    ['irregular', 'segmented-bilobed']
    >>> selection = parse_selection(["class=neutrophil", "nucleus_shape=segmented-multilobed"], table)
    >>> sum(selection.matches(row.class_name, row) for row in table.rows)
    6
"""

from __future__ import annotations

import csv
import difflib
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from cellgen.data.errors import DataError

SPLIT_COLUMN = "split"
CLASS_COLUMN = "class"
FILE_COLUMN = "file"
KEY_COLUMNS = (SPLIT_COLUMN, CLASS_COLUMN, FILE_COLUMN)
# WBCAtt's own train/val/test split: kept in the file for reference, never used to choose data.
IGNORED_COLUMNS = ("wbcatt_split",)
NO_VALUE = ""  # an empty cell: not annotated
NO_VALUE_TEXT = "(no value)"


def is_table_header(columns: Sequence[str]) -> bool:
    """Whether a CSV header is an attribute table's (``class`` and ``file`` columns, not ``path,label``)."""
    names = {name.strip().lower() for name in columns}
    return CLASS_COLUMN in names and FILE_COLUMN in names and not {"path", "label"} <= names


def _hint(name: str, names: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, list(names), n=1, cutoff=0.6)
    return f"; did you mean {match[0]!r}?" if match else ""


@dataclass(frozen=True)
class AttributeRow:
    """One image of an attribute table.

    Attributes:
        line: its line in the CSV (for messages).
        split: the ``split`` cell ("" without that column).
        class_name: the ``class`` cell.
        file: the ``file`` cell (a file name, or a path relative to the table's root).
        values: one cell per attribute column of the table ("" = no value).
        extra: ``(column, cell)`` of the ignored columns (``wbcatt_split``), written back by
            :meth:`AttributeTable.write`.
    """

    line: int
    split: str
    class_name: str
    file: str
    values: tuple[str, ...]
    extra: tuple[tuple[str, str], ...] = ()


class AttributeTable:
    """An attribute table read from a CSV (see the module docstring).

    Attributes:
        path: the CSV file.
        columns: the attribute columns, in file order.
        rows: one :class:`AttributeRow` per image, in file order.
        has_split: whether the table has a ``split`` column.
        header: the header as written (for :meth:`write`).
    """

    def __init__(self, path: Path, columns: list[str], rows: list[AttributeRow], has_split: bool,
                 header: list[str]):
        self.path = Path(path)
        self.columns = list(columns)
        self.rows = list(rows)
        self.has_split = has_split
        self.header = list(header)
        self._index = {column: position for position, column in enumerate(self.columns)}
        self._by_key: dict[tuple[str, str], AttributeRow] | None = None

    def __repr__(self) -> str:
        return f"AttributeTable({str(self.path)!r}, {len(self.rows)} rows, {len(self.columns)} attributes)"

    @property
    def classes(self) -> list[str]:
        """The classes of the rows, sorted."""
        return sorted({row.class_name for row in self.rows})

    @property
    def annotated_classes(self) -> list[str]:
        """Classes with at least one attribute value (sorted)."""
        return sorted({row.class_name for row in self.rows if any(row.values)})

    @property
    def splits(self) -> list[str]:
        """The values of the ``split`` column, sorted (empty without one)."""
        return sorted({row.split for row in self.rows if row.split}) if self.has_split else []

    def selectable_columns(self) -> list[str]:
        """Columns a selection may name: ``class``, ``split`` (if present) and the attributes."""
        return [CLASS_COLUMN] + ([SPLIT_COLUMN] if self.has_split else []) + self.columns

    def check_columns(self, columns: Iterable[str]) -> list[str]:
        """``columns`` as a list, each an attribute column of the table.

        Raises:
            DataError: a name that is no attribute column (the message lists them).
        """
        columns = list(columns)
        for column in columns:
            if column not in self._index:
                raise DataError(f"{self.path}: unknown attribute {column!r} (attributes: "
                                f"{', '.join(self.columns) or 'none'}){_hint(column, self.columns)}")
        if len(set(columns)) != len(columns):
            raise DataError(f"attributes must be distinct, got {', '.join(columns)}")
        return columns

    def value(self, row: AttributeRow, column: str) -> str:
        """The cell of ``row`` in attribute ``column`` ("" = no value)."""
        return row.values[self._index[column]]

    def values(self, column: str) -> list[str]:
        """The values attribute ``column`` takes (sorted, without "no value")."""
        (column,) = self.check_columns([column])
        position = self._index[column]
        return sorted({row.values[position] for row in self.rows if row.values[position]})

    def value_counts(self, column: str, rows: Iterable[AttributeRow | None] | None = None) -> dict[str, int]:
        """How many of ``rows`` (default: all) take each value of ``column`` (``NO_VALUE_TEXT`` for none)."""
        (column,) = self.check_columns([column])
        counts = Counter(self.value(row, column) if row is not None else NO_VALUE
                         for row in (self.rows if rows is None else rows))
        return {(name or NO_VALUE_TEXT): counts[name] for name in sorted(counts, key=lambda name: (not name, name))}

    def vocabulary(self, columns: Iterable[str] | None = None) -> dict[str, list[str]]:
        """``{column: values}`` of ``columns`` (default: every attribute column)."""
        return {column: self.values(column) for column in self.check_columns(self.columns if columns is None
                                                                             else columns)}

    def row_for(self, class_name: str, file_name: str) -> AttributeRow | None:
        """The row of the image ``file_name`` (a name or path; its name counts) of ``class_name``, or None."""
        if self._by_key is None:
            self._by_key = {(row.class_name, os.path.basename(row.file)): row for row in self.rows}
        return self._by_key.get((class_name, os.path.basename(file_name)))

    def image_path(self, row: AttributeRow, root: str | os.PathLike | None = None) -> Path:
        """Where the image of ``row`` is: ``ROOT/<split>/<class>/<file>`` (no split column:
        ``ROOT/<class>/<file>``; a ``file`` cell holding a folder, ``ROOT/<file>``), ``ROOT`` the
        table's folder by default. An absolute ``file`` is taken as it is."""
        base = Path(root) if root is not None else self.path.parent
        file = Path(row.file)
        if file.is_absolute():
            return file
        if len(file.parts) > 1:
            return base / file
        parts = ([row.split] if self.has_split and row.split else []) + [row.class_name, row.file]
        return base.joinpath(*parts)

    def subset(self, rows: Iterable[AttributeRow]) -> "AttributeTable":
        """A table with the same columns and only ``rows``."""
        return AttributeTable(self.path, self.columns, list(rows), self.has_split, self.header)

    def write(self, path: str | os.PathLike, rows: Iterable[AttributeRow] | None = None) -> Path:
        """Writes ``rows`` (default: all) as a CSV with this table's header."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        lowered = [name.strip().lower() for name in self.header]
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(self.header)
            for row in (self.rows if rows is None else rows):
                cells = {SPLIT_COLUMN: row.split, CLASS_COLUMN: row.class_name,
                         FILE_COLUMN: row.file, **dict(zip(self.columns, row.values))}
                extra = dict(row.extra)
                writer.writerow([cells.get(name, extra.get(name, "")) for name in lowered])
        return path


def read_table(path: str | os.PathLike) -> AttributeTable:
    """Reads an attribute table (a CSV with ``class`` and ``file`` columns; see the module docstring).

    Raises:
        DataError: a missing or unreadable file, missing columns, a short row, an empty class or
            file cell, or an image listed twice.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such attribute table (a CSV with class, file and attribute columns)")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            lines = csv.reader(handle)
            header = next(lines, None)
            if not header:
                raise DataError(f"{path}: empty attribute table (expected a header such as split,class,file,...)")
            names = [name.strip().lower() for name in header]
            for column in (CLASS_COLUMN, FILE_COLUMN):
                if column not in names:
                    raise DataError(f"{path}: an attribute table needs a {column!r} column "
                                    f"(line 1 has: {', '.join(header)})")
            duplicated = sorted(name for name, count in Counter(names).items() if count > 1)
            if duplicated:
                raise DataError(f"{path}: column(s) {', '.join(duplicated)} appear twice in the header")
            columns = [name for name in names if name not in KEY_COLUMNS + IGNORED_COLUMNS and name]
            positions = [names.index(column) for column in columns]
            ignored = [(name, names.index(name)) for name in IGNORED_COLUMNS if name in names]
            has_split = SPLIT_COLUMN in names
            rows: list[AttributeRow] = []
            seen: dict[tuple[str, str], int] = {}
            for cells in lines:
                line = lines.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if len(cells) != len(names):
                    raise DataError(f"{path} line {line}: {len(cells)} field(s), expected {len(names)} "
                                    "as in the header")
                cell = {name: cells[index].strip() for index, name in enumerate(names)}
                if not cell[CLASS_COLUMN] or not cell[FILE_COLUMN]:
                    raise DataError(f"{path} line {line}: empty {'class' if not cell[CLASS_COLUMN] else 'file'}")
                key = (cell[CLASS_COLUMN], os.path.basename(cell[FILE_COLUMN]))
                if key in seen:
                    raise DataError(f"{path} line {line}: {key[0]}/{key[1]} is listed twice (first on line "
                                    f"{seen[key]})")
                seen[key] = line
                rows.append(AttributeRow(line, cell.get(SPLIT_COLUMN, ""), cell[CLASS_COLUMN], cell[FILE_COLUMN],
                                         tuple(cells[position].strip() for position in positions),
                                         tuple((name, cells[index].strip()) for name, index in ignored)))
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not a UTF-8 text CSV ({error.reason})") from None
    except csv.Error as error:
        raise DataError(f"{path}: malformed CSV ({error})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read attribute table ({error.strerror or error})") from None
    if not rows:
        raise DataError(f"{path}: no rows after the header")
    return AttributeTable(path, columns, rows, has_split, header)


def split_item(item: str, option: str = "select", error: type[Exception] = DataError) -> tuple[str, str]:
    """``"COLUMN=VALUE"`` -> ``(column, value)`` (stripped; the column lower-cased).

    Raises:
        error: no ``=``, or an empty column or value.
    """
    if not isinstance(item, str) or "=" not in item:
        raise error(f"{option}: expected COLUMN=VALUE, got {item!r}")
    column, value = (part.strip() for part in item.split("=", 1))
    if not column or not value:
        raise error(f"{option}: expected COLUMN=VALUE, got {item!r}")
    return column.lower(), value


def _items(items, option: str, error: type[Exception]) -> list[tuple[str, str]]:
    if items is None:
        return []
    if isinstance(items, str):
        items = [items]
    if isinstance(items, Mapping):
        return [(str(column).strip().lower(), str(value).strip()) for column, value in items.items()]
    if not isinstance(items, (list, tuple)):
        raise error(f"{option}: expected a list of COLUMN=VALUE items, got {items!r}")
    return [split_item(item, option, error) for item in items]


@dataclass(frozen=True)
class Selection:
    """A subset of images named by ``COLUMN=VALUE`` items (see :func:`parse_selection`).

    Attributes:
        conditions: ``(column, allowed values)`` pairs; an image is selected when every pair holds.
    """

    conditions: tuple[tuple[str, frozenset], ...]

    @property
    def columns(self) -> list[str]:
        return [column for column, _ in self.conditions]

    def allowed(self, column: str) -> frozenset | None:
        """The values allowed for ``column``, or None when the selection does not restrict it."""
        return dict(self.conditions).get(column)

    def matches(self, class_name: str, row: AttributeRow | None, table: AttributeTable | None = None) -> bool:
        """Whether an image of ``class_name`` with attribute ``row`` (None: no row) is selected."""
        for column, allowed in self.conditions:
            if column == CLASS_COLUMN:
                value = class_name
            elif row is None:
                return False
            elif column == SPLIT_COLUMN:
                value = row.split
            else:
                value = (table.value(row, column) if table is not None
                         else row.values[self._positions[column]])
            if value not in allowed:
                return False
        return True

    def without(self, *columns: str) -> "Selection":
        """The selection without the conditions on ``columns``."""
        return Selection(tuple((column, allowed) for column, allowed in self.conditions if column not in columns),
                         _positions=self._positions)

    def items(self) -> list[str]:
        """The selection as ``COLUMN=VALUE`` items (parsing them gives it back)."""
        return [f"{column}={value}" for column, allowed in self.conditions for value in sorted(allowed)]

    def __str__(self) -> str:
        return " and ".join(f"{column}={'|'.join(sorted(allowed))}" for column, allowed in self.conditions)

    # attribute column -> position in the rows' values (set by parse_selection)
    _positions: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False, hash=False)

    def __bool__(self) -> bool:
        return bool(self.conditions)


def parse_selection(items, table: AttributeTable, classes: Sequence[str] | None = None,
                    option: str = "select") -> Selection:
    """A :class:`Selection` from ``COLUMN=VALUE`` items, checked against ``table``.

    Args:
        items: a list of ``"COLUMN=VALUE"`` strings (or one string, or a ``{column: value}`` dict).
        table: the attribute table that defines the columns and values.
        classes: the valid ``class`` values (default: the table's classes); a reader passes its
            own, which may include classes the table does not annotate.
        option: the option name the messages start with.

    Raises:
        DataError: a malformed item, an unknown column (the message lists the columns) or an
            unknown value (the message lists the column's values), or ``wbcatt_split``.
    """
    parsed = _items(items, option, DataError)
    if not parsed:
        raise DataError(f"{option}: empty selection (give COLUMN=VALUE items, e.g. class=neutrophil)")
    valid_classes = list(classes) if classes is not None else table.classes
    allowed: dict[str, set[str]] = {}
    for column, value in parsed:
        if column in IGNORED_COLUMNS:
            raise DataError(f"{option}: {column} is WBCAtt's own split, which must not choose data "
                            f"(use {SPLIT_COLUMN}, the dataset's)")
        if column == CLASS_COLUMN:
            values = valid_classes
        elif column == SPLIT_COLUMN and table.has_split:
            values = table.splits
        elif column in table.columns:
            values = table.values(column)
        else:
            columns = table.selectable_columns()
            raise DataError(f"{option}: unknown column {column!r} in {table.path} (columns: {', '.join(columns)})"
                            f"{_hint(column, columns)}")
        if value not in values:
            raise DataError(f"{option}: {column} has no value {value!r} in {table.path} (values: "
                            f"{', '.join(values)}){_hint(value, values)}")
        allowed.setdefault(column, set()).add(value)
    positions = {column: table.columns.index(column) for column in allowed if column in table.columns}
    return Selection(tuple((column, frozenset(values)) for column, values in allowed.items()), _positions=positions)


# Vocabularies and ids ------------------------------------------------------------


def vocabulary_items(vocabulary: Mapping[str, Sequence[str]]) -> list[str]:
    """``{column: values}`` as the flat ``["column=value", ...]`` list a config stores."""
    return [f"{column}={value}" for column, values in vocabulary.items() for value in values]


def vocabulary_from_items(items: Sequence[str], columns: Sequence[str], option: str = "attribute_values",
                          error: type[Exception] = DataError) -> dict[str, list[str]]:
    """The ``{column: values}`` of ``columns`` from ``["column=value", ...]`` (values kept in order).

    Raises:
        error: a malformed item, a column not in ``columns``, a value listed twice, or a column
            without values.
    """
    vocabulary: dict[str, list[str]] = {column: [] for column in columns}
    for column, value in _items(list(items), option, error):
        if column not in vocabulary:
            raise error(f"{option}: {column!r} is not one of the attributes ({', '.join(columns) or 'none'})")
        if value in vocabulary[column]:
            raise error(f"{option}: {column}={value} is listed twice")
        vocabulary[column].append(value)
    empty = [column for column, values in vocabulary.items() if not values]
    if empty:
        raise error(f"{option}: no values for attribute(s) {', '.join(empty)}")
    return vocabulary


def no_value_ids(vocabulary: Mapping[str, Sequence[str]]) -> np.ndarray:
    """int32 (A,): each attribute's "no value" id (its number of values)."""
    return np.array([len(values) for values in vocabulary.values()], np.int32)


def encode_rows(table: AttributeTable, rows: Sequence[AttributeRow | None],
                vocabulary: Mapping[str, Sequence[str]]) -> np.ndarray:
    """int32 (N, A) attribute ids of ``rows`` (None: no row, every id "no value").

    Raises:
        DataError: a value outside ``vocabulary`` (e.g. a model's), naming the line.
    """
    columns = table.check_columns(vocabulary)
    ids = np.tile(no_value_ids(vocabulary), (len(rows), 1)).astype(np.int32).reshape(len(rows), len(columns))
    lookups = [{value: index for index, value in enumerate(vocabulary[column])} for column in columns]
    for position, row in enumerate(rows):
        if row is None:
            continue
        for index, (column, lookup) in enumerate(zip(columns, lookups)):
            value = table.value(row, column)
            if not value:
                continue
            if value not in lookup:
                raise DataError(f"{table.path} line {row.line}: {column}={value!r} is not among the values "
                                f"{', '.join(vocabulary[column])} (the model's vocabulary)")
            ids[position, index] = lookup[value]
    return ids


def request_ids(request, vocabulary: Mapping[str, Sequence[str]], option: str = "attributes",
                error: type[Exception] = DataError) -> np.ndarray:
    """int32 (A,) ids of requested attribute values; attributes not requested get "no value".

    Args:
        request: ``["column=value", ...]`` (or a ``{column: value}`` dict); None or empty: none.
        vocabulary: the model's ``{column: values}``.
        option: the option name the messages start with (``--attr`` for generate.py).

    Raises:
        error: a malformed item, an attribute the model has not (the message lists them), a value
            it does not know (the message lists them) or an attribute requested twice.
    """
    ids = no_value_ids(vocabulary)
    columns = list(vocabulary)
    seen = set()
    for column, value in _items(request, option, error):
        if column not in vocabulary:
            known = ", ".join(columns) if columns else "none: it is not conditioned on attributes"
            raise error(f"{option}: unknown attribute {column!r} (this model's attributes: {known})"
                        f"{_hint(column, columns)}")
        if column in seen:
            raise error(f"{option}: attribute {column} requested twice (one value per attribute)")
        seen.add(column)
        values = list(vocabulary[column])
        if value not in values:
            raise error(f"{option}: {column} has no value {value!r} (values: {', '.join(values)})"
                        f"{_hint(value, values)}")
        ids[columns.index(column)] = values.index(value)
    return ids


def describe_ids(ids: Sequence[int], vocabulary: Mapping[str, Sequence[str]]) -> list[str]:
    """``["column=value", ...]`` of the attributes ``ids`` set (no-value ids left out)."""
    return [f"{column}={values[int(index)]}" for (column, values), index in zip(vocabulary.items(), ids)
            if int(index) < len(values)]
