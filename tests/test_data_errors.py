"""Data-side reliability (issue 21): one-line errors from inside model.fit, warnings with counts,
messages that say what the user can do."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from cellgen.data import BadFileError, DataError, DataReader, raising_data_errors


def write_image(path: Path, size: int = 20, value: int | None = None, suffix: str = ".png") -> Path:
    path = path.with_suffix(suffix)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(abs(hash(path.name)) % 2**32)
    pixels = (rng.integers(0, 255, (size, size, 3), dtype=np.uint8) if value is None
              else np.full((size, size, 3), value, np.uint8))
    ok, encoded = cv2.imencode(suffix, pixels)
    assert ok
    encoded.tofile(str(path))
    return path


def class_tree(root: Path, counts: dict[str, int], size: int = 20, suffix: str = ".png") -> Path:
    for name, count in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            write_image(root / name / f"img_{index:03d}", size, suffix=suffix)
    return root


def truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    return path


def tiny_classifier(size: int):
    import keras

    model = keras.Sequential([keras.Input((size, size, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


# ---------------------------------------------------------------------------
# A bad file met inside model.fit


@pytest.fixture()
def truncated_jpeg_tree(tmp_path):
    root = class_tree(tmp_path / "train", {"a": 6, "b": 6}, suffix=".jpg")
    bad = truncate(root / "b" / "img_003.jpg")
    return root, bad


def test_fit_on_a_truncated_jpeg_raises_one_line_data_error(truncated_jpeg_tree):
    import tensorflow as tf

    root, bad = truncated_jpeg_tree
    reader = DataReader(root, image_size=16, batch_size=4)
    model = tiny_classifier(16)
    # What surfaces without the context manager: TensorFlow's error, the file buried in a long message.
    with pytest.raises(tf.errors.InvalidArgumentError) as raw:
        model.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader), epochs=2, verbose=0, shuffle=False)
    assert "IteratorGetNext" in str(raw.value) and len(str(raw.value).splitlines()) > 10

    with pytest.raises(DataError) as caught:
        with reader.raising_data_errors():
            model.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader), epochs=2, verbose=0, shuffle=False)
    error = caught.value
    assert isinstance(error, BadFileError) and error.path == str(bad)
    message = str(error)
    assert message == f"{bad}: not a readable image (corrupt, truncated or unsupported format)"
    assert "\n" not in message
    assert error.__cause__ is None and error.__suppress_context__


def test_several_readers_plain_iteration_and_validation_data(truncated_jpeg_tree, tmp_path):
    import tensorflow as tf

    root, bad = truncated_jpeg_tree
    good = DataReader(class_tree(tmp_path / "val", {"a": 4, "b": 4}), image_size=16, batch_size=4)
    reader = DataReader(root, image_size=16, batch_size=4, workers=0)
    with pytest.raises(DataError, match=r"img_003\.jpg: not a readable image"):
        with raising_data_errors(good, None, reader):
            for _ in reader.as_tf_dataset(epochs=1):
                pass
    # The bad reader as validation data of a fit on a good one.
    model = tiny_classifier(16)
    with pytest.raises(DataError, match=r"img_003\.jpg"):
        with raising_data_errors(good, reader):
            model.fit(good.as_tf_dataset(), steps_per_epoch=len(good), epochs=1, verbose=0, shuffle=False,
                      validation_data=reader.as_tf_dataset(epochs=1), validation_steps=len(reader))


def test_other_tensorflow_errors_pass_through(truncated_jpeg_tree):
    import tensorflow as tf

    root, _ = truncated_jpeg_tree
    reader = DataReader(root, image_size=16, batch_size=4)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not a data problem"):
        with reader.raising_data_errors():
            tf.debugging.assert_equal(1, 2, message="not a data problem")
    with pytest.raises(DataError):
        with reader.raising_data_errors():
            list(reader.as_tf_dataset(epochs=1))
    # Entering again forgets the earlier failure: an unrelated error is not blamed on the file.
    with pytest.raises(tf.errors.InvalidArgumentError):
        with reader.raising_data_errors():
            tf.debugging.assert_equal(1, 2)
    with reader.raising_data_errors():  # no error at all
        pass


# ---------------------------------------------------------------------------
# Warnings with counts


def test_upscaled_images_are_counted_after_the_verify_pass(tmp_path, capsys):
    root = class_tree(tmp_path, {"a": 3, "b": 3}, size=20)
    for index, size in ((0, 5), (2, 8)):
        write_image(root / "b" / f"img_{index:03d}", size)
    write_image(root / "a" / "img_001", 12)
    reader = DataReader(root, image_size=16, batch_size=2, on_error="skip")
    expected = (f"3 images smaller than 16 px were upscaled (smallest 5x5): first {root / 'a' / 'img_001.png'}")
    assert reader.notes == [expected]
    assert capsys.readouterr().err == f"warning: {expected}\n"
    assert reader.upscaled == [(str(root / "a" / "img_001.png"), "12x12"), (str(root / "b" / "img_000.png"), "5x5"),
                               (str(root / "b" / "img_002.png"), "8x8")]
    list(reader.epoch(0))
    list(reader.epoch(1))
    assert capsys.readouterr().err == ""  # once per reader
    assert reader.notes == [expected]


def test_upscaled_images_are_reported_after_the_first_epoch_without_verification(tmp_path, capsys):
    root = class_tree(tmp_path, {"a": 4, "b": 4}, size=32)
    write_image(root / "a" / "img_002", 10)
    reader = DataReader(root, image_size=(24, 16), batch_size=3)
    assert reader.notes == [] and reader.upscaled == [] and capsys.readouterr().err == ""
    list(reader.epoch(0))
    message = f"1 image smaller than 16x24 px was upscaled in the first epoch (smallest 10x10): first {root / 'a' / 'img_002.png'}"
    assert capsys.readouterr().err == f"warning: {message}\n"
    assert reader.notes == [message]
    list(reader.epoch(1))
    reader.load_all()
    assert capsys.readouterr().err == ""
    # Crops count with their size after cropping; the warning can be turned off.
    cropped = DataReader(root, image_size=24, crop=0.5, batch_size=3, on_error="skip")
    assert cropped.upscaled[0] == (str(root / "a" / "img_000.png"), "16x16") and len(cropped.upscaled) == 8
    assert "after cropping" in cropped.notes[0]
    quiet = DataReader(root, image_size=64, batch_size=3, on_error="skip", upscale_warning=False)
    quiet.load_all()
    assert quiet.notes == [] and quiet.upscaled == []
    capsys.readouterr()
    # Shrinking and exact sizes are not questionable.
    assert DataReader(root, image_size=8, batch_size=3, on_error="skip").notes == []


def test_skipped_files_are_announced_once_with_the_report(tmp_path, capsys):
    root = class_tree(tmp_path / "data", {"a": 4, "b": 4})
    for name in ("img_000", "img_002"):
        truncate(root / "b" / f"{name}.png")
    reader = DataReader(root, image_size=16, batch_size=2, on_error="skip")
    assert len(reader.skipped) == 2
    assert reader.notes == [f"{root}: skipped 2 unreadable files (first: {root / 'b' / 'img_000.png'}: "
                            f"not a readable image (corrupt, truncated or unsupported format))"]
    capsys.readouterr()
    report = reader.write_skip_report(tmp_path / "logs")
    assert capsys.readouterr().err == f"warning: {root}: skipped 2 unreadable files; list in {report}\n"
    list(reader.epoch(0))
    reader.write_skip_report(tmp_path / "logs")
    assert capsys.readouterr().err == ""
    # Without a report, the first read announces them.
    other = DataReader(root, image_size=16, batch_size=2, on_error="skip")
    assert capsys.readouterr().err == ""
    other.load_all()
    assert capsys.readouterr().err == f"warning: {other.notes[0]}\n"


# ---------------------------------------------------------------------------
# Messages that say what to do


def test_an_empty_class_folder_says_what_to_do(tmp_path):
    root = class_tree(tmp_path, {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(DataError) as caught:
        DataReader(root)
    message = str(caught.value)
    assert message == f"class folder {root / 'b'} has no images: add images to it or remove the folder"
    assert "allow_missing_classes" not in message
    with pytest.raises(DataError, match=r"has no images: add images to it or use a class list without it$"):
        DataReader(root, classes=["a", "b"])
    with pytest.raises(DataError, match=r"class 'c' has no folder in .*: add the folder .*c with images or use "
                                        r"a class list without it$"):
        DataReader(tmp_path, classes=["a", "b", "c"], class_filter=["a", "c"])
    truncate(write_image(root / "b" / "img_000"))
    with pytest.raises(DataError, match=r"class 'b': all 1 image were skipped as unreadable: replace them or "
                                        r"remove the folder$") as skipped:
        DataReader(root, on_error="skip")
    assert "allow_missing_classes" not in str(skipped.value)


def write_labels(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return path


def labelled_images(tmp_path: Path, counts: dict[str, int]) -> list[tuple[str, str]]:
    rows = []
    for label, count in counts.items():
        for index in range(count):
            name = f"{label}_{index:03d}"
            write_image(tmp_path / "images" / name, 6, value=index % 250)
            rows.append((f"images/{name}.png", label))
    return rows


def test_a_csv_label_outside_the_class_list_is_an_error_naming_it(tmp_path):
    rows = labelled_images(tmp_path, {"basophil": 3, "eosinophil": 3})
    rows.insert(2, (rows[0][0], "basophill"))
    labels = write_labels(tmp_path / "labels.csv", rows)
    with pytest.raises(DataError) as caught:
        DataReader(labels, classes=["basophil", "eosinophil", "monocyte"], allow_missing_classes=True)
    assert str(caught.value) == (f"{labels} line 4: unknown label 'basophill', not in the class list "
                                 f"(classes: basophil, eosinophil, monocyte); did you mean 'basophil'?")
    # A listed class without rows says what to do.
    good = write_labels(tmp_path / "good.csv", [row for row in rows if row[1] != "basophill"])
    with pytest.raises(DataError, match=r"class 'monocyte' has no rows in .*good\.csv: add rows for it or use a "
                                        r"class list without it$"):
        DataReader(good, classes=["basophil", "eosinophil", "monocyte"])


def test_a_rare_label_is_flagged_as_a_possible_typo(tmp_path, capsys):
    counts = {"basophil": 50, "eosinophil": 55, "lymphocyte": 60, "monocyte": 52}
    rows = labelled_images(tmp_path, counts)
    rows.insert(10, (rows[0][0], "basophill"))
    labels = write_labels(tmp_path / "labels.csv", rows)
    reader = DataReader(labels, image_size=6)
    message = (f"label 'basophill' occurs on 1 line of {labels} (first: line 12), the median class has 54 images: "
               f"a typo? (did you mean 'basophil'?)")
    assert reader.notes == [message]
    assert capsys.readouterr().err == f"warning: {message}\n"
    assert "basophill" in reader.classes  # a warning only: the label may be real
    # A class folder with 2 images next to classes of 60 is flagged too; balanced data is not.
    root = class_tree(tmp_path / "tree", {"a": 60, "b": 60, "c": 2}, size=4)
    assert DataReader(root).notes == [f"class folder {root / 'c'} has 2 images, the median class has 60 images: a typo?"]
    assert DataReader(root, classes=["a", "b", "c"]).notes == []  # an explicit list is the user's choice
    assert DataReader(class_tree(tmp_path / "even", {"a": 3, "b": 2, "c": 1}, size=4)).notes == []
