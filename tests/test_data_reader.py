"""Tests for cellgen.data, the reader (tiny images made in tmp_path; real data from pbc128-tiny)."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cellgen.data import entries as entries_module  # noqa: E402
from cellgen.data import (  # noqa: E402
    Augment,
    BadFileError,
    DataError,
    DataReader,
    load_classes,
    save_classes,
    scan_images,
)
from cellgen.images import from_uint8  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Writes raw OpenCV-order pixels (BGR, BGRA, gray, uint8 or uint16); the suffix picks the format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(path.suffix, pixels)
    assert ok
    encoded.tofile(str(path))
    return path


def make_tree(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    """A class-folder tree; image number k (counted over the whole tree) is a constant image of value k+1.

    The red channel holds the id, so a decoded image tells which file it came from.
    """
    image_id = 1
    for class_name, count in counts.items():
        (root / class_name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            rgb = np.full((size, size, 3), (image_id, 50, 100), dtype=np.uint8)
            write_image(root / class_name / f"img_{index:03d}.png", rgb[:, :, ::-1].copy())
            image_id += 1
    return root


def image_ids(images: np.ndarray) -> list[int]:
    """The ids written by make_tree, read back from float images."""
    return [int(round(value)) for value in images[:, :, :, 0].mean(axis=(1, 2)) * 127.5 + 127.5]


def epoch_ids(reader: DataReader, epoch: int) -> list[int]:
    return [image_id for images, _ in reader.epoch(epoch) for image_id in image_ids(images)]


# ---------------------------------------------------------------------------
# Layouts, ids and pixels


def test_class_folders_get_sorted_ids_and_batches_have_the_right_form(tmp_path):
    root = make_tree(tmp_path / "train", {"b": 3, "a": 2, "c": 4})
    reader = DataReader(root, image_size=8, batch_size=4, shuffle=False)
    assert reader.classes == ["a", "b", "c"]
    assert reader.labelled
    assert (len(reader), reader.num_images) == (3, 9)
    batches = list(reader)
    assert [len(labels) for _, labels in batches] == [4, 4, 1]
    images, labels = batches[0]
    assert images.dtype == np.float32 and images.shape == (4, 8, 8, 3)
    assert labels.dtype == np.int32
    # make_tree wrote ids 1-3 in b, 4-5 in a, 6-9 in c
    id_to_label = {1: 1, 2: 1, 3: 1, 4: 0, 5: 0, 6: 2, 7: 2, 8: 2, 9: 2}
    for images, labels in batches:
        assert [id_to_label[i] for i in image_ids(images)] == labels.tolist()
    assert reader.class_counts() == {"a": 2, "b": 3, "c": 4}


def test_pixels_are_rgb_and_scaled_to_minus_one_one(tmp_path):
    bgr = np.zeros((4, 4, 3), dtype=np.uint8)
    bgr[:, :] = (10, 0, 255)  # blue 10, green 0, red 255 in OpenCV order
    write_image(tmp_path / "x" / "red.png", bgr)
    images, _ = DataReader(tmp_path, shuffle=False).load_all()
    assert images.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(images[0, 0, 0], np.float32([1.0, -1.0, (10 - 127.5) / 127.5]))


def test_center_crop_in_pixels_and_as_fraction(tmp_path):
    rgb = np.arange(10 * 12 * 3, dtype=np.uint32).reshape(10, 12, 3).astype(np.uint8)
    write_image(tmp_path / "c" / "img.png", rgb[:, :, ::-1].copy())
    images, _ = DataReader(tmp_path, crop=4).load_all()
    np.testing.assert_array_equal(images[0], from_uint8(rgb[3:7, 4:8]))
    images, _ = DataReader(tmp_path, crop=0.5).load_all()  # side round(0.5 * 10) = 5
    np.testing.assert_array_equal(images[0], from_uint8(rgb[2:7, 3:8]))


def test_resize_uses_area_to_shrink_and_cubic_to_enlarge(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    write_image(tmp_path / "c" / "img.png", rgb[:, :, ::-1].copy())
    small, _ = DataReader(tmp_path, image_size=7).load_all()  # not a whole factor: area != linear
    np.testing.assert_array_equal(small[0], from_uint8(cv2.resize(rgb, (7, 7), interpolation=cv2.INTER_AREA)))
    large, _ = DataReader(tmp_path, image_size=(24, 32)).load_all()
    expected = cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_CUBIC)
    assert large.shape == (1, 24, 32, 3)
    np.testing.assert_array_equal(large[0], from_uint8(expected))
    cropped, _ = DataReader(tmp_path, crop=12, image_size=5).load_all()
    np.testing.assert_array_equal(cropped[0], from_uint8(cv2.resize(rgb[2:14, 2:14], (5, 5),
                                                                    interpolation=cv2.INTER_AREA)))


def test_native_size_needs_all_images_to_agree(tmp_path):
    write_image(tmp_path / "a" / "1.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "a" / "2.png", np.zeros((6, 9, 3), np.uint8))
    with pytest.raises(DataError, match=r"image_size=None.*9x6.*2\.png"):
        DataReader(tmp_path, on_error="skip")
    reader = DataReader(tmp_path, shuffle=False)  # raise mode: found while streaming
    assert reader.image_shape == (8, 8, 3)
    with pytest.raises(BadFileError, match=r"2\.png: is 9x6 after cropping"):
        list(reader)
    assert DataReader(tmp_path, crop=6).image_shape == (6, 6, 3)  # same size once cropped
    assert DataReader(tmp_path, image_size=5).num_images == 2


def test_images_smaller_than_the_crop(tmp_path):
    for index in range(3):
        write_image(tmp_path / "a" / f"big{index}.png", np.full((32, 32, 3), 9, np.uint8))
    write_image(tmp_path / "a" / "small.png", np.full((8, 12, 3), 9, np.uint8))
    reader = DataReader(tmp_path, crop=16, image_size=8, shuffle=False)
    with pytest.raises(BadFileError, match=r"small\.png: image is 12x8 px, smaller than the 16 px crop"):
        list(reader)
    reader = DataReader(tmp_path, crop=16, image_size=8, on_error="skip")
    assert reader.num_images == 3
    assert [(Path(path).name, reason) for path, reason in reader.skipped] == [
        ("small.png", "image is 12x8 px, smaller than the 16 px crop")]


def test_flat_folder_is_one_unlabelled_class(tmp_path):
    for index in range(5):
        write_image(tmp_path / f"gen_{index}.png", np.full((8, 8, 3), index, np.uint8))
    reader = DataReader(tmp_path, batch_size=2)
    assert reader.classes == ["unlabelled"] and not reader.labelled
    assert all((labels == 0).all() for _, labels in reader)
    assert reader.class_counts() == {"unlabelled": 5}
    with pytest.raises(DataError, match="classes"):
        DataReader(tmp_path, classes=["a", "b"])


def test_non_ascii_paths(tmp_path):
    root = make_tree(tmp_path / "données", {"eosinófilo": 2, "célula_ü": 1})
    reader = DataReader(root, shuffle=False)
    assert reader.classes == sorted(["eosinófilo", "célula_ü"])
    images, labels = reader.load_all()
    assert images.shape == (3, 8, 8, 3) and labels.tolist() == [0, 1, 1]


def test_ignored_entries_are_listed_not_silently_dropped(tmp_path):
    make_tree(tmp_path, {"a": 2})
    (tmp_path / "a" / "notes.txt").write_text("hello")
    (tmp_path / "a" / ".DS_Store").write_bytes(b"\0\1")
    reader = DataReader(tmp_path)
    assert reader.num_images == 2
    assert sorted((Path(path).name, reason) for path, reason in reader.ignored) == [
        (".DS_Store", "hidden file or folder"), ("notes.txt", "not an image file name")]


# ---------------------------------------------------------------------------
# Class lists


def test_fixed_class_list_maps_ids_and_checks_classes(tmp_path):
    root = make_tree(tmp_path / "synthetic", {"a": 2, "b": 1})
    reader = DataReader(root, classes=["c", "b", "a"], allow_missing_classes=True, shuffle=False)
    assert reader.classes == ["c", "b", "a"]
    assert reader.labels.tolist() == [2, 2, 1]
    assert reader.class_counts() == {"c": 0, "b": 1, "a": 2}
    with pytest.raises(DataError, match="class 'c' has no folder"):
        DataReader(root, classes=["a", "b", "c"])
    with pytest.raises(DataError, match=r"class folder .*b is not in classes"):
        DataReader(root, classes=["a", "z"])
    # a class left out by class_filter does not need images
    assert DataReader(root, classes=["a", "b", "c"], class_filter="a").num_images == 2


def test_save_and_load_classes_json(tmp_path):
    path = save_classes(tmp_path / "run" / "classes.json", ["basophil", "eosinophil"])
    assert json.loads(path.read_text()) == ["basophil", "eosinophil"]
    assert load_classes(path) == ["basophil", "eosinophil"]
    root = make_tree(tmp_path / "data", {"eosinophil": 1})
    assert DataReader(root, classes=path, allow_missing_classes=True).labels.tolist() == [1]
    (tmp_path / "bad.json").write_text('["a", "a"]')
    with pytest.raises(DataError, match="duplicate"):
        load_classes(tmp_path / "bad.json")
    with pytest.raises(DataError, match="not found"):
        load_classes(tmp_path / "missing.json")


# ---------------------------------------------------------------------------
# Epochs: shuffling, batching, filters, caps and oversampling


def test_shuffle_is_deterministic_per_seed_and_epoch(tmp_path):
    root = make_tree(tmp_path, {"a": 12, "b": 12})
    first = DataReader(root, batch_size=5, seed=1)
    again = DataReader(root, batch_size=5, seed=1)
    other_seed = DataReader(root, batch_size=5, seed=2)
    epoch0 = epoch_ids(first, 0)
    assert sorted(epoch0) == list(range(1, 25))
    assert epoch0 == epoch_ids(again, 0) == [i for images, _ in first for i in image_ids(images)]
    assert epoch_ids(first, 1) != epoch0
    assert epoch_ids(first, 1) == epoch_ids(again, 1)
    assert epoch_ids(other_seed, 0) != epoch0
    assert epoch_ids(DataReader(root, batch_size=5, shuffle=False), 3) == list(range(1, 25))


def test_drop_remainder(tmp_path):
    root = make_tree(tmp_path, {"a": 10})
    assert [len(labels) for _, labels in DataReader(root, batch_size=4)] == [4, 4, 2]
    reader = DataReader(root, batch_size=4, drop_remainder=True)
    assert len(reader) == 2 and [len(labels) for _, labels in reader] == [4, 4]
    with pytest.raises(DataError, match="batch_size 16 with drop_remainder"):
        DataReader(root, batch_size=16, drop_remainder=True)


def test_class_filter_keeps_ids_of_the_full_class_list(tmp_path):
    root = make_tree(tmp_path, {"a": 2, "b": 3, "c": 4})
    reader = DataReader(root, class_filter="c", batch_size=3)
    assert reader.classes == ["a", "b", "c"]
    assert all((labels == 2).all() for _, labels in reader)
    assert reader.class_counts() == {"a": 0, "b": 0, "c": 4}
    assert DataReader(root, class_filter=["a", "c"]).num_images == 6


def test_class_limits_fix_the_kept_subset_for_a_seed(tmp_path):
    root = make_tree(tmp_path, {"a": 20, "b": 10})
    reader = DataReader(root, class_limits={"a": 5, "b": 0.5}, seed=4, batch_size=4)
    assert reader.class_counts() == {"a": 5, "b": 5}
    assert reader.num_images == len(reader.files) == 10
    same = DataReader(root, class_limits={"a": 5, "b": 0.5}, seed=4, shuffle=False)
    assert same.files == reader.files
    assert same.kept_files() == [(path, Path(path).parent.name) for path in reader.files]
    kept_ids = sorted(epoch_ids(same, 0))
    for epoch in (0, 1, 5):  # every epoch reads exactly the kept subset
        assert sorted(epoch_ids(reader, epoch)) == kept_ids
    assert DataReader(root, class_limits={"a": 5}, seed=5).files != DataReader(
        root, class_limits={"a": 5}, seed=4).files
    assert DataReader(root, class_limits={"a": 500}).class_counts() == {"a": 20, "b": 10}


def test_oversample_repeats_a_class_to_exactly_the_target(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "b": 7})  # ids 1-3 are class a
    reader = DataReader(root, oversample={"a": 8}, batch_size=4, seed=3)
    assert reader.class_counts() == {"a": 8, "b": 7}
    assert reader.num_images == 15 and len(reader) == 4
    assert len(reader.files) == 10
    for epoch in (0, 1):
        ids = epoch_ids(reader, epoch)
        counts = [ids.count(i) for i in (1, 2, 3)]
        assert sum(counts) == 8 and sorted(counts) == [2, 3, 3]
        assert all(ids.count(i) == 1 for i in range(4, 11))
        assert ids == epoch_ids(DataReader(root, oversample={"a": 8}, batch_size=4, seed=3), epoch)
    with pytest.raises(DataError, match=r"oversample\['b'\] = 5 is below its 7"):
        DataReader(root, oversample={"b": 5})


@pytest.mark.parametrize("options, option_name", [
    ({"on_error": "foo"}, "on_error"),
    ({"crop": -1}, "crop"),
    ({"crop": 1}, "crop"),
    ({"crop": 1.5}, "crop"),
    ({"batch_size": 0}, "batch_size"),
    ({"image_size": 0}, "image_size"),
    ({"seed": -1}, "seed"),
    ({"workers": -1}, "workers"),
    ({"prefetch": -2}, "prefetch"),
    ({"augment": "flip"}, "augment"),
    ({"class_filter": "zebra"}, "class_filter"),
    ({"class_limits": {"zebra": 3}}, "class_limits"),
    ({"class_limits": {"a": 0}}, "class_limits"),
    ({"class_limits": {"a": 1.5}}, "class_limits"),
    ({"oversample": {"zebra": 30}}, "oversample"),
    ({"oversample": {"a": 0}}, "oversample"),
])
def test_unknown_option_values_raise_data_error_naming_the_option(tmp_path, options, option_name):
    root = make_tree(tmp_path, {"a": 2})
    with pytest.raises(DataError, match=option_name) as error:
        DataReader(root, **options)
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------
# Bad input


def test_missing_path_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match=r"nowhere: no such file or folder"):
        DataReader(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        DataReader(tmp_path / "empty")
    root = make_tree(tmp_path / "tree", {"a": 2})
    (root / "b").mkdir()
    with pytest.raises(DataError, match=r"class folder .*b has no images"):
        DataReader(root)
    assert DataReader(root, allow_missing_classes=True).classes == ["a", "b"]
    write_image(root / "stray.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match="mixes image files"):
        DataReader(root)


def bad_file_tree(tmp_path: Path, bad_name: str, content: bytes | None) -> tuple[Path, Path]:
    root = make_tree(tmp_path / "data", {"a": 3})
    bad = root / "a" / bad_name
    if content is None:
        bad.mkdir()
    else:
        bad.write_bytes(content)
    return root, bad


def truncated_jpeg() -> bytes:
    ok, encoded = cv2.imencode(".jpg", np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return encoded.tobytes()[: len(encoded) // 2]


@pytest.mark.parametrize("bad_name, content, reason, found_at_construction", [
    ("zero.png", b"", "file is empty (0 bytes)", True),
    ("folder.jpg", None, "is a directory, not an image file", True),
    ("truncated.jpg", "truncated", "not a readable image", False),
    ("text.jpg", b"this is not an image\n", "not a readable image", False),
])
def test_bad_files_raise_naming_the_file_or_are_skipped(tmp_path, bad_name, content, reason,
                                                        found_at_construction):
    content = truncated_jpeg() if content == "truncated" else content
    root, bad = bad_file_tree(tmp_path, bad_name, content)
    if found_at_construction:
        with pytest.raises(DataError, match=re.escape(reason)) as error:
            DataReader(root, image_size=8)
    else:
        reader = DataReader(root, image_size=8)  # decode errors show while streaming
        with pytest.raises(DataError, match=re.escape(reason)) as error:
            list(reader)
    assert str(bad) in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(DataError, match=re.escape(reason)):
        DataReader(root, image_size=8, verify=True)
    reader = DataReader(root, image_size=8, on_error="skip", batch_size=2)
    assert reader.skipped == [(str(bad), reader.skipped[0][1])] and reason in reader.skipped[0][1]
    assert (reader.num_images, len(reader)) == (3, 2)
    assert sum(len(labels) for _, labels in reader) == 3
    report = reader.write_skip_report(tmp_path / "report")
    with open(report, newline="", encoding="utf-8") as handle:
        assert list(csv.reader(handle)) == [["path", "reason"], [str(bad), reader.skipped[0][1]]]


def test_unreadable_files(tmp_path, monkeypatch):
    # Running as root makes chmod 000 files readable, so permission failures are simulated.
    root = make_tree(tmp_path, {"a": 3})
    locked = str(root / "a" / "img_001.png")
    real_access = os.access
    monkeypatch.setattr(entries_module.os, "access",
                        lambda path, mode: False if str(path) == locked else real_access(path, mode))
    with pytest.raises(DataError, match=r"img_001\.png: permission denied"):
        DataReader(root)
    assert DataReader(root, on_error="skip").skipped == [(locked, "permission denied")]
    monkeypatch.undo()

    real_fromfile = np.fromfile

    def fromfile(path, *args, **kwargs):
        if str(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_fromfile(path, *args, **kwargs)

    monkeypatch.setattr(entries_module.np, "fromfile", fromfile)
    reader = DataReader(root, image_size=8)
    with pytest.raises(BadFileError, match=r"img_001\.png: permission denied"):
        list(reader)


def test_grayscale_rgba_and_16_bit_pngs_are_converted(tmp_path):
    write_image(tmp_path / "a" / "1_gray.png", np.full((4, 4), 100, np.uint8))
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[:, :] = (0, 0, 255, 128)  # half-transparent red on the white background
    write_image(tmp_path / "a" / "2_rgba.png", bgra)
    bgr16 = np.zeros((4, 4, 3), np.uint16)
    bgr16[:, :] = (257 * 10, 257 * 100, 65535)
    write_image(tmp_path / "a" / "3_deep.png", bgr16)
    images, _ = DataReader(tmp_path, shuffle=False).load_all()
    pixels = np.rint(images[:, 0, 0] * 127.5 + 127.5).astype(int)
    alpha = 128 / 255
    green_blue = int(0 * alpha + 255 * (1 - alpha) + 0.5)
    assert pixels.tolist() == [[100, 100, 100], [255, green_blue, green_blue], [255, 100, 10]]


# ---------------------------------------------------------------------------
# CSV source


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)
    return path


def test_csv_source(tmp_path):
    make_tree(tmp_path / "images", {"x": 3})
    rows = [["path", "label", "note"], ["images/x/img_000.png", "neutrophil", ""],
            ["images/x/img_001.png", "basophil", "rare"], [str(tmp_path / "images/x/img_002.png"), "neutrophil", ""]]
    listing = write_csv(tmp_path / "list.csv", rows)
    reader = DataReader(listing, shuffle=False)
    assert reader.classes == ["basophil", "neutrophil"]
    images, labels = reader.load_all()
    assert labels.tolist() == [1, 0, 1] and image_ids(images) == [1, 2, 3]
    assert reader.layout == "CSV file"


def test_csv_errors_name_the_column_or_line(tmp_path):
    make_tree(tmp_path / "images", {"x": 2})
    no_label = write_csv(tmp_path / "no_label.csv", [["path", "class"], ["images/x/img_000.png", "a"]])
    with pytest.raises(DataError, match=r"no_label\.csv: missing column 'label'"):
        DataReader(no_label)
    missing = write_csv(tmp_path / "missing.csv", [["path", "label"], ["images/x/img_000.png", "a"],
                                                   ["images/x/gone.png", "a"]])
    with pytest.raises(DataError, match=r"gone\.png: file not found \(line 3 of .*missing\.csv\)"):
        DataReader(missing)
    reader = DataReader(missing, on_error="skip")
    assert reader.num_images == 1 and "line 3" in reader.skipped[0][1]
    unknown = write_csv(tmp_path / "unknown.csv", [["path", "label"], ["images/x/img_000.png", "a"],
                                                   ["images/x/img_001.png", "zebra"]])
    with pytest.raises(DataError, match=r"unknown\.csv line 3: unknown label 'zebra'"):
        DataReader(unknown, classes=["a", "b"])


def test_file_list_round_trip_reads_the_same_images(tmp_path):
    root = make_tree(tmp_path / "data", {"a": 10, "b": 4})
    reader = DataReader(root, class_limits={"a": 0.3}, seed=9)
    listing = reader.write_file_list(tmp_path / "run" / "kept.csv")
    again = DataReader(listing, classes=reader.classes)
    assert [str(Path(path).resolve()) for path in again.files] == [str(Path(p).resolve()) for p in reader.files]
    assert again.labels.tolist() == reader.labels.tolist()


# ---------------------------------------------------------------------------
# Augmentation, cache, workers, prefetch


def test_augment_is_deterministic_and_reflects_borders(tmp_path):
    root = make_tree(tmp_path, {"a": 6}, size=16)
    augment = Augment(rotation_degrees=45, zoom=0.2, horizontal_flip=True, vertical_flip=True)
    reader = DataReader(root, augment=augment, seed=2, batch_size=6)
    first, _ = next(iter(reader.epoch(0)))
    again, _ = next(iter(DataReader(root, augment=augment, seed=2, batch_size=6).epoch(0)))
    np.testing.assert_array_equal(first, again)
    # constant images stay constant: a reflected border adds no black corners
    assert np.ptp(first, axis=(1, 2)).max() == 0

    pattern = np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    write_image(tmp_path / "p" / "pattern.png", pattern[:, :, ::-1].copy())
    flips = DataReader(tmp_path, class_filter="p", augment=Augment(horizontal_flip=True), batch_size=1)
    seen = set()
    for epoch in range(12):
        (image,), _ = next(iter(flips.epoch(epoch)))
        if np.array_equal(image, from_uint8(pattern)):
            seen.add("same")
        elif np.array_equal(image, from_uint8(pattern[:, ::-1])):
            seen.add("mirrored")
        else:
            pytest.fail("a horizontal flip changed more than the orientation")
    assert seen == {"same", "mirrored"}
    rotations = DataReader(tmp_path, class_filter="p", augment=Augment(rotation_degrees=30), batch_size=1)
    assert not np.array_equal(next(iter(rotations.epoch(0)))[0], next(iter(rotations.epoch(1)))[0])
    with pytest.raises(DataError, match="zoom"):
        Augment(zoom=1.5)
    with pytest.raises(DataError, match="rotation_degrees"):
        Augment(rotation_degrees=-1)


def test_cache_keeps_decoded_images_and_streaming_does_not(tmp_path):
    root = make_tree(tmp_path / "cached", {"a": 4})
    cached = DataReader(root, cache=True, batch_size=2)
    before = epoch_ids(cached, 0)
    for path in cached.files:
        os.remove(path)
    assert sorted(epoch_ids(cached, 1)) == sorted(before)
    root = make_tree(tmp_path / "verified", {"a": 6})
    capped = DataReader(root, cache=True, on_error="skip", class_limits={"a": 2}, image_size=4)
    assert sorted(capped._cache) == sorted(capped.files)  # filled by the verify pass, kept files only
    for path in capped.files:
        os.remove(path)
    assert capped.load_all()[0].shape == (2, 4, 4, 3)
    root = make_tree(tmp_path / "streamed", {"a": 4})
    streamed = DataReader(root, batch_size=2)
    list(streamed)
    os.remove(streamed.files[0])
    with pytest.raises(BadFileError, match="file not found"):
        list(streamed.epoch(1))


def test_worker_counts_give_identical_batches(tmp_path):
    root = make_tree(tmp_path, {"a": 7, "b": 6}, size=12)
    augment = Augment(rotation_degrees=20, horizontal_flip=True)
    results = []
    for workers in (0, 1, 2):
        reader = DataReader(root, image_size=10, batch_size=4, workers=workers, augment=augment, seed=1)
        results.append([batch for batch in reader.epoch(2)])
    for other in results[1:]:
        for (images, labels), (other_images, other_labels) in zip(results[0], other):
            np.testing.assert_array_equal(images, other_images)
            np.testing.assert_array_equal(labels, other_labels)


def test_prefetch_is_bounded(tmp_path):
    root = make_tree(tmp_path, {"a": 40})
    reader = DataReader(root, batch_size=4, prefetch=2, workers=2)
    decoded = []
    lock = threading.Lock()
    original = reader._image_uint8

    def counting(index):
        with lock:
            decoded.append(index)
        return original(index)

    reader._image_uint8 = counting
    batches = reader.epoch(0)
    next(batches)
    time.sleep(0.3)  # give the workers time to run ahead as far as they may
    assert 4 <= len(decoded) <= (2 + 1) * 4
    batches.close()
    assert len(decoded) <= (2 + 1) * 4


def test_load_all_returns_kept_files_in_order(tmp_path):
    root = make_tree(tmp_path, {"a": 3, "b": 2})
    reader = DataReader(root, batch_size=2, oversample={"b": 5}, augment=Augment(rotation_degrees=90))
    images, labels = reader.load_all()
    assert images.shape == (5, 8, 8, 3) and labels.tolist() == [0, 0, 0, 1, 1]
    assert image_ids(images) == [1, 2, 3, 4, 5]


# ---------------------------------------------------------------------------
# tf.data bridge


def test_tf_dataset_runs_successive_epochs_and_trains(tmp_path):
    tf = pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    root = make_tree(tmp_path, {"a": 5, "b": 5})
    reader = DataReader(root, batch_size=4, drop_remainder=True, seed=1)
    dataset = reader.as_tf_dataset()
    images_spec, labels_spec = dataset.element_spec
    assert images_spec.shape.as_list() == [4, 8, 8, 3] and images_spec.dtype == tf.float32
    assert labels_spec.shape.as_list() == [4] and labels_spec.dtype == tf.int32
    expected = [batch for epoch in (0, 1) for batch in reader.epoch(epoch)]
    for (images, labels), (want_images, want_labels) in zip(dataset.take(len(expected)), expected):
        np.testing.assert_array_equal(images.numpy(), want_images)
        np.testing.assert_array_equal(labels.numpy(), want_labels)

    finite = DataReader(root, batch_size=4, seed=1).as_tf_dataset(epochs=2, start_epoch=3, with_labels=False)
    assert finite.element_spec.shape.as_list() == [None, 8, 8, 3]
    assert int(finite.cardinality()) == 6 and sum(1 for _ in finite) == 6

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(dataset, epochs=2, steps_per_epoch=len(reader), shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2

    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    distributed = strategy.experimental_distribute_dataset(reader.as_tf_dataset(epochs=1))
    images, labels = next(iter(distributed))
    assert images.shape == (4, 8, 8, 3) and labels.shape == (4,)


# ---------------------------------------------------------------------------
# TFDS source


@pytest.fixture(scope="module", params=["tfrecord", "array_record"])
def tfds_dir(tmp_path_factory, request):
    tfds = pytest.importorskip("tensorflow_datasets")
    from tensorflow_datasets.core import registered

    with registered.skip_registration():  # read back from files, like a user's prepared dataset
        class CellgenTinyCells(tfds.core.GeneratorBasedBuilder):
            # A one-part module name: TFDS then skips looking for the builder's code as a package
            # resource (with tests/ a package, that lookup needs the optional importlib_resources).
            __module__ = "cellgen_tiny_cells"
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=["zeta", "alpha"]),
                }))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(0, 9), "test": self._generate_examples(100, 3)}

            def _generate_examples(self, first_value, count):
                for index in range(count):
                    yield index, {"image": np.full((6, 6, 3), first_value + index, np.uint8),
                                  "label": index % 2}

    data_dir = tmp_path_factory.mktemp("tfds")
    if request.param == "array_record":
        pytest.importorskip("array_record")
    CellgenTinyCells(data_dir=str(data_dir), file_format=request.param).download_and_prepare()
    return data_dir, request.param


def test_tfds_source_reads_a_prepared_dataset(tfds_dir, monkeypatch):
    tfds_dir, tfds_format = tfds_dir
    reader = DataReader("tfds:cellgen_tiny_cells:train", tfds_data_dir=tfds_dir, batch_size=4, seed=1)
    assert reader.classes == ["alpha", "zeta"]  # sorted names; TFDS ids re-mapped by name
    assert reader.num_images == 9
    assert reader.layout == {"tfrecord": "TFDS dataset (TFRecord)",
                             "array_record": "TFDS dataset (ArrayRecord)"}[tfds_format]
    values, labels = [], []
    for images, batch_labels in reader:
        values += [int(round(v)) for v in images[:, 0, 0, 0] * 127.5 + 127.5]
        labels += batch_labels.tolist()
    assert sorted(values) == list(range(9))
    # TFDS label index % 2 == 1 is "alpha" (sorted id 0)
    assert all(label == (0 if value % 2 else 1) for value, label in zip(values, labels))
    report = scan_images("tfds:cellgen_tiny_cells:train", tfds_data_dir=tfds_dir)
    assert report.class_counts == {"alpha": 4, "zeta": 5} and report.image_sizes == {"6x6": 9}
    monkeypatch.setenv("TFDS_DATA_DIR", str(tfds_dir))
    test_split = DataReader("tfds:cellgen_tiny_cells:test", image_size=4, on_error="skip")
    assert test_split.num_images == 3 and test_split.image_shape == (4, 4, 3)
    with pytest.raises(DataError, match="unknown split 'valid'"):
        DataReader("tfds:cellgen_tiny_cells:valid")
    with pytest.raises(DataError, match="tfds:no_such_cells.*not found") as error:
        DataReader("tfds:no_such_cells")
    assert "\n" not in str(error.value)


# ---------------------------------------------------------------------------
# Real data


def test_real_tiny_split():
    tiny = SHARED_DATA / "pbc128-tiny"
    if not tiny.is_dir():
        pytest.skip(f"{tiny} not available")
    reader = DataReader(tiny, image_size=64, crop=0.75, batch_size=32, on_error="skip")
    assert len(reader.classes) == 8 and reader.class_counts() == {name: 16 for name in reader.classes}
    assert reader.skipped == [] and dict(reader.image_sizes) == {"128x128": 128}
    images, labels = next(iter(reader))
    assert images.shape == (32, 64, 64, 3) and -1.0 <= images.min() < images.max() <= 1.0
    report = scan_images(tiny)
    assert report.total == 128 and report.image_sizes == {"128x128": 128}


def test_the_old_module_and_the_cli_re_export_the_package():
    import cellgen.data as data
    import cellgen.data_reader as old
    from cellgen.cli import common

    for name in data.__all__:
        assert getattr(old, name) is getattr(data, name), name
    assert common.crop_option is data.crop_option
    assert [data.crop_option(value) for value in (0, 0.0, 0.5, 1.0, 24.0, 24)] == [None, None, 0.5, 1.0, 24, 24]
    assert isinstance(data.crop_option(24.0), int) and isinstance(data.crop_option(1.0), float)
