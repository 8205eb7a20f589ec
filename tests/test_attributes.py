"""Morphological attributes as data (issue 18, item 1): attribute tables, selections, the reader with
attributes on the shipped WBCAtt rows of the embedded sample, and images without attributes."""

from __future__ import annotations

import configparser
import dataclasses
import fnmatch
from pathlib import Path

import numpy as np
import pytest

from cellgen.data import DataError, DataReader
from cellgen.data.attributes import (NO_VALUE_TEXT, AttributeRow, describe_ids, encode_rows, no_value_ids,
                                     parse_selection, read_table, request_ids, vocabulary_from_items,
                                     vocabulary_items)
from cellgen.sample_data import SPLITS, sample_path

SAMPLE = sample_path("train").parent
TABLE = SAMPLE / "wbcatt.csv"
WBCATT_COLUMNS = ["cell_size", "cell_shape", "nucleus_shape", "nuclear_cytoplasmic_ratio", "chromatin_density",
                  "cytoplasm_vacuole", "cytoplasm_texture", "cytoplasm_colour", "granule_type", "granule_colour",
                  "granularity"]
ANNOTATED = ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]
UNANNOTATED = ["erythroblast", "ig", "platelet"]
MULTILOBED = ["class=neutrophil", "nucleus_shape=segmented-multilobed"]


@pytest.fixture(scope="module")
def table():
    return read_table(TABLE)


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# The shipped table ----------------------------------------------------------------------


def test_the_shipped_table_has_one_row_per_sample_image_and_empty_cells_for_unannotated_classes(table):
    assert table.columns == WBCATT_COLUMNS and table.has_split
    assert table.splits == ["test", "train", "val"]
    assert table.annotated_classes == ANNOTATED
    images = {(split, folder.name, image.name) for split in SPLITS
              for folder in sample_path(split).iterdir() for image in folder.glob("*.jpg")}
    assert {(row.split, row.class_name, row.file) for row in table.rows} == images
    assert len(table.rows) == 320
    for row in table.rows:
        assert table.image_path(row).is_file()
        assert all(row.values) == (row.class_name in ANNOTATED)
        assert any(row.values) == (row.class_name in ANNOTATED)
    counts = table.value_counts("nucleus_shape", [row for row in table.rows if row.split == "train"
                                                  and row.class_name == "neutrophil"])
    assert counts == {"segmented-bilobed": 6, "segmented-multilobed": 4, "unsegmented-band": 14}
    assert table.value_counts("nucleus_shape")[NO_VALUE_TEXT] == 120  # 3 classes x 40 images


def test_the_wbcatt_files_are_package_data_with_the_licence_and_the_citation():
    parser = configparser.ConfigParser()
    parser.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    patterns = [item.strip() for item in parser["options.package_data"]["cellgen.sample_data"].split(",")]
    shipped = [path.relative_to(SAMPLE.parent).as_posix() for path in SAMPLE.iterdir() if path.is_file()]
    assert sorted(shipped) == ["pbc-64/LICENSE-WBCAtt-MIT.txt", "pbc-64/WBCATT.md", "pbc-64/wbcatt.csv"]
    for name in shipped:
        assert any(fnmatch.fnmatch(name, pattern) for pattern in patterns), name
    assert "MIT License" in (SAMPLE / "LICENSE-WBCAtt-MIT.txt").read_text(encoding="utf-8")
    notes = (SAMPLE / "WBCATT.md").read_text(encoding="utf-8")
    assert "Tsutsui" in notes and "NeurIPS 2023" in notes and "wbcatt_split" in notes


def test_the_shipped_rows_agree_with_the_shared_wbcatt_table(shared_data, table):
    """The sample's rows are WBCAtt's (keyed to our splits): train images from our train split,
    val and test images from our validation split."""
    shared = read_table(shared_data / "wbcatt" / "pbc128_wbcatt_trainval.csv")
    assert shared.columns == table.columns
    for row in table.rows:
        source = shared.row_for(row.class_name, row.file)
        if row.class_name in UNANNOTATED:
            assert source is None
            continue
        assert source.values == row.values and source.extra == row.extra
        assert source.split == ("train" if row.split == "train" else "val")


# Selections --------------------------------------------------------------------------------


def test_a_selection_names_the_positive_subset(table):
    selection = parse_selection(MULTILOBED, table)
    chosen = [row for row in table.rows if selection.matches(row.class_name, row)]
    assert [(row.split, row.class_name) for row in chosen] == ([("train", "neutrophil")] * 4
                                                               + [("test", "neutrophil")] * 2)
    assert str(selection) == "class=neutrophil and nucleus_shape=segmented-multilobed"
    assert parse_selection(selection.items(), table) == selection
    # Values of one column are alternatives; columns must all hold.
    either = parse_selection(["class=neutrophil", "nucleus_shape=segmented-multilobed",
                              "nucleus_shape=segmented-bilobed", "split=train"], table)
    assert sum(either.matches(row.class_name, row) for row in table.rows) == 10
    assert either.allowed("nucleus_shape") == {"segmented-multilobed", "segmented-bilobed"}
    assert either.without("split").allowed("split") is None
    # No row: only a class condition can hold.
    assert parse_selection(["class=platelet"], table, classes=["platelet"]).matches("platelet", None)
    assert not selection.matches("neutrophil", None)


@pytest.mark.parametrize("items, message", [
    (["nucleus=segmented-multilobed"], "select: unknown column 'nucleus' in .*wbcatt.csv \\(columns: class, split, "
                                       "cell_size, .*granularity\\); did you mean 'nucleus_shape'\\?"),
    (["nucleus_shape=multilobed"], "select: nucleus_shape has no value 'multilobed' .*\\(values: irregular, "
                                   "segmented-bilobed, segmented-multilobed, unsegmented-band, unsegmented-indented, "
                                   "unsegmented-round\\); did you mean 'segmented-multilobed'\\?"),
    (["class=neutrophils"], "class has no value 'neutrophils' .*values: basophil, .*neutrophil"),
    (["split=test2"], "split has no value 'test2' .*values: test, train, val"),
    (["wbcatt_split=train"], "WBCAtt's own split, which must not choose data"),
    (["class:neutrophil"], "select: expected COLUMN=VALUE, got 'class:neutrophil'"),
    (["=neutrophil"], "expected COLUMN=VALUE"),
    ([], "empty selection"),
])
def test_selection_errors_are_one_line_and_list_the_valid_names(table, items, message):
    with pytest.raises(DataError, match=message) as caught:
        parse_selection(items, table)
    assert "\n" not in str(caught.value)


def test_table_errors_name_the_file_and_line(tmp_path):
    with pytest.raises(DataError, match="no such attribute table"):
        read_table(tmp_path / "missing.csv")
    with pytest.raises(DataError, match="needs a 'file' column"):
        read_table(_write(tmp_path / "a.csv", "split,class,path\ntrain,a,x.jpg\n"))
    with pytest.raises(DataError, match="line 3: a/x.jpg is listed twice \\(first on line 2\\)"):
        read_table(_write(tmp_path / "b.csv", "class,file,size\na,x.jpg,big\na,x.jpg,small\n"))
    with pytest.raises(DataError, match="line 2: 2 field\\(s\\), expected 3"):
        read_table(_write(tmp_path / "c.csv", "class,file,size\na,x.jpg\n"))
    with pytest.raises(DataError, match="line 2: empty file"):
        read_table(_write(tmp_path / "d.csv", "class,file,size\na,,big\n"))
    with pytest.raises(DataError, match="no rows after the header"):
        read_table(_write(tmp_path / "e.csv", "class,file,size\n"))
    with pytest.raises(DataError, match="unknown attribute 'colour' \\(attributes: size\\)"):
        read_table(_write(tmp_path / "f.csv", "class,file,size\na,x.jpg,big\n")).values("colour")


# Vocabularies and ids ---------------------------------------------------------------------------


def test_vocabulary_items_round_trip_and_request_ids(table):
    vocabulary = table.vocabulary(["nucleus_shape", "cytoplasm_vacuole"])
    assert vocabulary["cytoplasm_vacuole"] == ["no", "yes"]
    items = vocabulary_items(vocabulary)
    assert items[-2:] == ["cytoplasm_vacuole=no", "cytoplasm_vacuole=yes"]
    assert vocabulary_from_items(items, ["nucleus_shape", "cytoplasm_vacuole"]) == vocabulary
    np.testing.assert_array_equal(no_value_ids(vocabulary), [6, 2])
    ids = request_ids(["cytoplasm_vacuole=yes"], vocabulary)
    np.testing.assert_array_equal(ids, [6, 1])  # nucleus_shape left open: "no value"
    assert describe_ids(ids, vocabulary) == ["cytoplasm_vacuole=yes"]
    np.testing.assert_array_equal(request_ids({"nucleus_shape": "irregular"}, vocabulary), [0, 2])
    with pytest.raises(DataError, match="--attr: unknown attribute 'vacuole' .*nucleus_shape, cytoplasm_vacuole"):
        request_ids(["vacuole=yes"], vocabulary, option="--attr")
    with pytest.raises(DataError, match="cytoplasm_vacuole has no value 'maybe' \\(values: no, yes\\)"):
        request_ids(["cytoplasm_vacuole=maybe"], vocabulary)
    with pytest.raises(DataError, match="requested twice"):
        request_ids(["cytoplasm_vacuole=no", "cytoplasm_vacuole=yes"], vocabulary)
    with pytest.raises(DataError, match="no values for attribute\\(s\\) cytoplasm_vacuole"):
        vocabulary_from_items(["nucleus_shape=irregular"], ["nucleus_shape", "cytoplasm_vacuole"])
    with pytest.raises(DataError, match="listed twice"):
        vocabulary_from_items(["nucleus_shape=a", "nucleus_shape=a"], ["nucleus_shape"])


def test_encoding_rows_with_and_without_attributes(table):
    vocabulary = {"cytoplasm_vacuole": ["no", "yes"]}
    platelet = next(row for row in table.rows if row.class_name == "platelet")
    vacuole = next(row for row in table.rows if table.value(row, "cytoplasm_vacuole") == "yes")
    plain = next(row for row in table.rows if table.value(row, "cytoplasm_vacuole") == "no")
    ids = encode_rows(table, [vacuole, plain, platelet, None], vocabulary)
    np.testing.assert_array_equal(ids, [[1], [0], [2], [2]])
    with pytest.raises(DataError, match=f"line {vacuole.line}: cytoplasm_vacuole='yes' is not among the values no"):
        encode_rows(table, [vacuole], {"cytoplasm_vacuole": ["no"]})


# The reader ---------------------------------------------------------------------------------


def test_reader_annotates_a_class_folder_with_the_table_and_gives_no_value_to_unannotated_classes():
    reader = DataReader(sample_path("train"), image_size=16, batch_size=16, attributes=TABLE,
                        attribute_columns=["nucleus_shape", "cytoplasm_vacuole"], seed=2, workers=0)
    assert reader.attribute_columns == ["nucleus_shape", "cytoplasm_vacuole"]
    values = reader.attribute_vocabulary["nucleus_shape"]
    ids = reader.attribute_ids
    assert ids.shape == (192, 2) and ids.dtype == np.int32
    table = reader.attribute_table
    for path, class_name, row_ids in zip(reader.files, [reader.classes[label] for label in reader.labels], ids):
        row = reader.attribute_row(path)
        if class_name in UNANNOTATED:
            assert not any(row.values) and row_ids.tolist() == [len(values), 2]  # empty cells: no value
        else:
            assert values[row_ids[0]] == table.value(row, "nucleus_shape")
    # Batches carry the ids of their own images, in the epoch's order.
    order = reader.epoch_order(1)
    for index, (images, labels, batch_ids) in enumerate(reader.epoch(1, with_attributes=True)):
        chosen = order[index * 16:(index + 1) * 16]
        np.testing.assert_array_equal(labels, reader.labels[chosen])
        np.testing.assert_array_equal(batch_ids, ids[chosen])
        assert images.shape == (len(chosen), 16, 16, 3)
    images, labels, all_ids = reader.load_all(with_attributes=True)
    np.testing.assert_array_equal(all_ids, ids)
    dataset = reader.as_tf_dataset(epochs=1, with_attributes=True)
    assert [tuple(part.shape) for part in next(iter(dataset))] == [(16, 16, 16, 3), (16,), (16, 2)]


def test_reader_keeps_only_the_selection_and_other_classes_need_no_images():
    reader = DataReader(sample_path("train"), image_size=16, batch_size=4, attributes=TABLE, select=MULTILOBED,
                        workers=0)
    assert reader.num_images == 4 and set(reader.labels) == {reader.classes.index("neutrophil")}
    assert reader.class_counts()["neutrophil"] == 4 and reader.class_counts()["basophil"] == 0
    assert str(reader.selection) == "class=neutrophil and nucleus_shape=segmented-multilobed"
    nucleus = reader.attribute_columns.index("nucleus_shape")
    assert {reader.attribute_vocabulary["nucleus_shape"][index] for index in reader.attribute_ids[:, nucleus]} == {
        "segmented-multilobed"}
    # Class caps and oversampling still apply to what the selection keeps.
    capped = DataReader(sample_path("train"), image_size=16, attributes=TABLE, select=MULTILOBED,
                        class_limits={"neutrophil": 2}, oversample={"neutrophil": 6}, workers=0)
    assert len(capped.files) == 2 and capped.num_images == 6
    with pytest.raises(DataError, match="select class=erythroblast and nucleus_shape=irregular: no image .*matches"):
        DataReader(sample_path("train"), image_size=16, attributes=TABLE,
                   select=["class=erythroblast", "nucleus_shape=irregular"])


def test_reader_reads_a_table_as_its_source_one_split_at_a_time(tmp_path):
    with pytest.raises(DataError, match="splits test, train, val; choose one with select split=NAME"):
        DataReader(TABLE, image_size=16)
    reader = DataReader(TABLE, image_size=16, select=["split=train"], workers=0)
    assert reader.layout == "attribute table (CSV)" and reader.num_images == 192
    folder = DataReader(sample_path("train"), image_size=16, workers=0)
    assert sorted(reader.files) == sorted(folder.files) and reader.classes == folder.classes
    assert reader.attribute_columns == WBCATT_COLUMNS  # every attribute by default
    # The same table elsewhere: its paths are relative to root.
    moved = tmp_path / "tables" / "copy.csv"
    moved.parent.mkdir()
    moved.write_bytes(TABLE.read_bytes())
    with pytest.raises(DataError, match="no image of its first rows exists under .*tables.*give the folder"):
        DataReader(moved, image_size=16, select=["split=val"])
    rooted = DataReader(moved, image_size=16, select=["split=val", "class=neutrophil"], root=SAMPLE, workers=0)
    assert rooted.num_images == 8
    with pytest.raises(DataError, match="root applies to CSV sources"):
        DataReader(sample_path("train"), image_size=16, root=SAMPLE)


def test_images_of_an_annotated_class_without_a_row_get_no_value_and_a_warning(tmp_path, capsys, table):
    # WBCAtt's own layout: no rows at all for the classes it does not annotate; here also one
    # monocyte row missing.
    missing = sorted(row.file for row in table.rows if row.class_name == "monocyte" and row.split == "train")[0]
    kept = [row for row in table.rows if row.class_name not in UNANNOTATED and row.file != missing]
    partial = table.write(tmp_path / "partial.csv", kept)
    capsys.readouterr()
    reader = DataReader(sample_path("train"), image_size=16, attributes=partial,
                        attribute_columns=["cell_size"], workers=0)
    warning = capsys.readouterr().err
    assert warning.count("warning:") == 1 and "1 image of classes" in warning and missing in warning
    assert (reader.attribute_ids[:, 0] == 2).sum() == 72 + 1  # 3 unannotated classes x 24, plus the missing one
    assert all(reader.attribute_row(path) is None for path, name in reader.kept_files() if name in UNANNOTATED)


def test_a_fixed_vocabulary_and_attribute_options_without_a_table():
    vocabulary = ["nucleus_shape=segmented-bilobed", "nucleus_shape=segmented-multilobed",
                  "nucleus_shape=unsegmented-band"]
    reader = DataReader(sample_path("train"), image_size=16, attributes=TABLE, attribute_columns=["nucleus_shape"],
                        attribute_values=vocabulary, select=["class=neutrophil"], workers=0)
    assert reader.attribute_vocabulary == {"nucleus_shape": [item.split("=")[1] for item in vocabulary]}
    with pytest.raises(DataError, match="nucleus_shape='irregular' is not among the values"):
        DataReader(sample_path("train"), image_size=16, attributes=TABLE, attribute_columns=["nucleus_shape"],
                   attribute_values=vocabulary)
    with pytest.raises(DataError, match="unknown attribute 'nucleus' \\(attributes: cell_size, "):
        DataReader(sample_path("train"), image_size=16, attributes=TABLE, attribute_columns=["nucleus"])
    with pytest.raises(DataError, match="select needs attributes: give attributes=CSV"):
        DataReader(sample_path("train"), image_size=16, select=MULTILOBED)
    plain = DataReader(sample_path("train"), image_size=16)
    assert plain.attribute_ids.shape == (192, 0) and plain.attribute_columns == []
    with pytest.raises(DataError, match="with_attributes: .* has no attribute table"):
        plain.epoch(0, with_attributes=True)


def test_rows_are_rewritten_with_the_same_layout(tmp_path, table):
    rows = [dataclasses.replace(row, split="somewhere") for row in table.rows[:3]]
    rows.append(AttributeRow(0, "x", "platelet", "P.jpg", ("",) * len(table.columns), (("wbcatt_split", ""),)))
    written = read_table(table.write(tmp_path / "out.csv", rows))
    assert written.header == table.header and [row.split for row in written.rows] == ["somewhere"] * 3 + ["x"]
    assert [row.values for row in written.rows] == [row.values for row in rows]
    assert written.rows[0].extra == table.rows[0].extra
