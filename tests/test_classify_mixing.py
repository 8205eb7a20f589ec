"""Which files each arm sees: exact synthetic amounts, no leaks, scarcity limits, class-set checks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cellgen.classify import mixing
from cellgen.classify.config import ClassifierConfig
from cellgen.classify.prepare import prepare_data, write_training_sets
from cellgen.classify.train_lib import make_readers
from cellgen.config import ConfigError, load_config
from cellgen.data_reader import DataError, DataReader
from cellgen.images import write_rgb
from cellgen.sample_data import sample_path

SYNTHETIC_PER_CLASS = 10


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    """Generated-looking images (random pixels): 10 per class, in class folders."""
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for class_dir in sorted(sample_path("train").iterdir()):
        for index in range(SYNTHETIC_PER_CLASS):
            write_rgb(root / class_dir.name / f"gen_{index:02d}.png",
                      rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return root


def make_config(tmp_path, **changes) -> ClassifierConfig:
    values = {"data": str(sample_path("train")), "val_data": str(sample_path("val")),
              "test_data": str(sample_path("test")), "out": str(tmp_path / "exp"), "image_size": 32,
              "arms": "baseline,classical,synthetic,classical+synthetic", "seeds": 2}
    values.update(changes)
    return load_config(ClassifierConfig, "classifier_fast", values)


def plan(config):
    out = Path(config.out)
    data = prepare_data(config, out, printer=lambda message: None)
    seeds = [config.seed + repeat for repeat in range(config.seeds)]
    return data, write_training_sets(config, data, out, seeds, progress=False)


def per_origin(csv_path) -> dict[str, dict[str, int]]:
    return mixing.count_rows(mixing.read_rows(csv_path))


def test_amount_rules():
    real = {"a": 10, "b": 5, "c": 1}
    assert mixing.synthetic_counts("ratio", real, ["a", "b", "c"], ratio=0.5) == {"a": 5, "b": 3, "c": 1}
    assert mixing.synthetic_counts("ratio", real, ["b"], ratio=1.0) == {"b": 5}
    assert mixing.synthetic_counts("count", real, ["a", "c"], count=7) == {"a": 7, "c": 7}
    assert mixing.synthetic_counts("match_positive", real, ["b"], positive="a") == {"b": 10}
    with pytest.raises(DataError, match="unknown class"):
        mixing.synthetic_counts("count", real, ["z"], count=1)


@pytest.mark.parametrize("option, expected", [
    ({"synthetic_ratio": 0.25}, {"basophil": 6, "ig": 6}),            # round(0.25 * 24)
    ({"synthetic_count": 4}, {"basophil": 4, "ig": 4}),
    ({"synthetic_match_positive": True, "positive": "basophil",        # = 6 real basophils kept
      "limit_class": {"basophil": 0.25}}, {"basophil": 6, "ig": 6}),
    ({"synthetic_ratio": 0.375, "limit_class": {"basophil": 0.25}},   # of the 6 kept basophils
     {"basophil": 2, "ig": 9}),
])
def test_exact_synthetic_counts_and_no_leak(tmp_path, synthetic_dir, option, expected):
    config = make_config(tmp_path, synthetic=str(synthetic_dir), synthetic_classes="basophil,ig", **option)
    data, sets = plan(config)
    assert sets.synthetic_per_class == expected
    synthetic_files = {str(path.resolve()) for path in synthetic_dir.rglob("*.png")}
    for seed, by_arm in sets.csv.items():
        for arm, csv_path in by_arm.items():
            counts = per_origin(csv_path)
            rows = mixing.read_rows(csv_path)
            if arm in ("synthetic", "classical+synthetic"):
                assert counts[mixing.SYNTHETIC] == expected
                assert {path for path, _, origin in rows if origin == mixing.SYNTHETIC} <= synthetic_files
                # the synthetic images carry their folder's class
                assert all(Path(path).parent.name == label for path, label, origin in rows
                           if origin == mixing.SYNTHETIC)
            else:
                assert mixing.SYNTHETIC not in counts
                assert not {path for path, _, _ in rows} & synthetic_files
    for split_csv in (data.val_csv, data.test_csv):
        rows = mixing.read_rows(split_csv)
        assert len(rows) == 64 and {origin for _, _, origin in rows} == {mixing.REAL}
        assert not {path for path, _, _ in rows} & synthetic_files


def test_limit_class_keeps_the_same_files_in_every_arm(tmp_path, synthetic_dir):
    config = make_config(tmp_path, synthetic=str(synthetic_dir), synthetic_count=2,
                         limit_class={"basophil": 0.25, "monocyte": 0.5}, seeds=2)
    _, sets = plan(config)
    kept_by_seed = {}
    for seed, by_arm in sets.csv.items():
        real_sets = []
        for csv_path in by_arm.values():
            rows = mixing.read_rows(csv_path)
            real = per_origin(csv_path)[mixing.REAL]
            assert real["basophil"] == 6 and real["monocyte"] == 12 and real["neutrophil"] == 24
            real_sets.append({path for path, label, origin in rows if origin == mixing.REAL})
        assert all(files == real_sets[0] for files in real_sets)  # same real files in every arm
        kept_by_seed[seed] = {path for path in real_sets[0] if "/basophil/" in path}
    # the kept subset is chosen by the seed: another seed keeps other basophils
    assert kept_by_seed[0] != kept_by_seed[1]
    # and it is the subset every other stage gets from the reader with the same limits and seed
    reader = DataReader(sample_path("train"), class_limits={"basophil": 0.25, "monocyte": 0.5}, seed=1)
    assert {str(Path(path).resolve()) for path in reader.files} == \
        {path for path, _, origin in mixing.read_rows(sets.csv[1]["baseline"])}
    # and it is deterministic
    _, again = plan(config.replace(out=str(tmp_path / "again")))
    assert {path for path, _, origin in mixing.read_rows(again.csv[0]["baseline"])} == \
        {path for path, _, origin in mixing.read_rows(sets.csv[0]["baseline"])}


def test_binary_mode_labels_and_validation_oversampling(tmp_path, synthetic_dir):
    config = make_config(tmp_path, mode="binary", positive="basophil", synthetic=str(synthetic_dir),
                         synthetic_match_positive=True, limit_class={"basophil": 0.25},
                         arms="baseline,synthetic", seeds=1)
    data, sets = plan(config)
    assert data.classes == ["not_basophil", "basophil"]
    counts = per_origin(sets.csv[0]["synthetic"])
    assert counts[mixing.REAL] == {"not_basophil": 7 * 24, "basophil": 6}
    assert counts[mixing.SYNTHETIC] == {"basophil": 6}  # N&Z: as many as the real positives
    train, val, test = make_readers(config, "synthetic", sets.csv[0]["synthetic"], data.val_csv, data.test_csv,
                                    data.classes)
    assert val.class_counts() == {"not_basophil": 56, "basophil": 56}  # 8 positives repeated to 56
    assert test.class_counts() == {"not_basophil": 56, "basophil": 8}  # the test split is never resampled
    assert train.augment is None and train.drop_remainder


def test_classical_arm_gets_rotation_and_zoom(tmp_path):
    config = make_config(tmp_path, arms="classical", seeds=1, classical_rotation=90.0, classical_zoom=0.2)
    data, sets = plan(config)
    train, _, _ = make_readers(config, "classical", sets.csv[0]["classical"], data.val_csv, data.test_csv,
                               data.classes)
    assert train.augment.rotation_degrees == 90.0 and train.augment.zoom == 0.2
    # issue 17: the classical arms flip and turn by quarter turns first (the 8 symmetries of the square)
    assert train.augment.horizontal_flip and train.augment.rotate90
    plain = config.replace(classical_dihedral=False)
    train, _, _ = make_readers(plain, "classical", sets.csv[0]["classical"], data.val_csv, data.test_csv,
                               data.classes)
    assert not train.augment.horizontal_flip and not train.augment.rotate90


def test_balanced_sampling_repeats_every_class_to_the_largest(tmp_path):
    config = make_config(tmp_path, arms="baseline", seeds=1, limit_class={"basophil": 0.25}, sampling="balanced")
    data, sets = plan(config)
    train, val, _ = make_readers(config, "baseline", sets.csv[0]["baseline"], data.val_csv, data.test_csv,
                                 data.classes)
    assert set(train.class_counts().values()) == {24}  # 6 kept basophils repeated to 24 per epoch
    assert len(train.epoch_order(0)) == 24 * 8 and val.class_counts()["basophil"] == 8
    shuffled, _, _ = make_readers(config.replace(sampling="shuffle"), "baseline", sets.csv[0]["baseline"],
                                  data.val_csv, data.test_csv, data.classes)
    assert shuffled.class_counts()["basophil"] == 6
    with pytest.raises(ConfigError, match="sampling must be one of shuffle, balanced"):
        make_config(tmp_path, sampling="weighted")


def copy_split(source: Path, target: Path, drop: str | None = None, add: str | None = None) -> Path:
    shutil.copytree(source, target)
    if drop:
        shutil.rmtree(target / drop)
    if add:
        shutil.copytree(source / "basophil", target / add)
    return target


@pytest.mark.parametrize("split, change, message", [
    ("val_data", {"drop": "monocyte"}, r"--val .*lacks monocyte"),
    ("test_data", {"add": "blast"}, r"--test .*has extra blast"),
])
def test_class_sets_that_differ_are_rejected(tmp_path, split, change, message):
    source = sample_path("val" if split == "val_data" else "test")
    changed = copy_split(source, tmp_path / "changed", **change)
    config = make_config(tmp_path, **{split: str(changed)})
    with pytest.raises(DataError, match=message) as error:
        plan(config)
    assert "\n" not in str(error.value)


def test_synthetic_folder_problems_are_rejected(tmp_path, synthetic_dir):
    extra = copy_split(synthetic_dir, tmp_path / "extra", add="blast")
    with pytest.raises(DataError, match=r"--synthetic .*blast are not training classes"):
        plan(make_config(tmp_path, synthetic=str(extra)))
    missing = copy_split(synthetic_dir, tmp_path / "missing", drop="ig")
    with pytest.raises(DataError, match=r"class 'ig' has no images; 3 synthetic images are needed"):
        plan(make_config(tmp_path, out=str(tmp_path / "exp2"), synthetic=str(missing), synthetic_ratio=0.125))
    with pytest.raises(DataError, match=r"class 'basophil' has only 10; 12 synthetic images are needed"):
        plan(make_config(tmp_path, out=str(tmp_path / "exp3"), synthetic=str(synthetic_dir)))
    with pytest.raises(ConfigError, match="need --synthetic DIR or --synthetic-from RUN"):
        plan(make_config(tmp_path, out=str(tmp_path / "exp4")))


def test_option_errors(tmp_path):
    with pytest.raises(DataError, match="--limit-class: unknown class 'blast'"):
        plan(make_config(tmp_path, limit_class={"blast": 0.5}))
    with pytest.raises(DataError, match="--positive 'blast' is not a training class"):
        plan(make_config(tmp_path, mode="binary", positive="blast", arms="baseline"))
    with pytest.raises(ConfigError, match="limit_class: basophil=1.5 must be a fraction"):
        make_config(tmp_path, limit_class={"basophil": 1.5})
    with pytest.raises(ConfigError, match="arms: unknown arm"):
        make_config(tmp_path, arms="baseline,gan")
    with pytest.raises(ConfigError, match="binary' needs the positive class"):
        make_config(tmp_path, mode="binary")
