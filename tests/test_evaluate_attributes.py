"""The attribute classifier of issue 18 (item 5): trained on real training images only, scored on real
validation images, and the share of generated images it calls the requested value."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellgen.data import DataError
from cellgen.evaluate.attributes import (AttributeClassifier, attribute_fidelity, evaluate_real,
                                         fidelity_markdown, train_attribute_classifier, write_binary_file_list)
from cellgen.evaluate.errors import EvaluationError
from cellgen.images import to_uint8, write_rgb
from cellgen.sample_data import sample_path

TINY = {"image_size": 16, "epochs": 6, "cnn_width": 8, "cnn_blocks": 2, "batch_size": 16, "learning_rate": 3e-3}


def _cells(value: str, count: int, seed: int) -> np.ndarray:
    """Images whose ``tint`` attribute shows: value ``red`` or ``blue`` dominates, with noise."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(-0.6, 0.2, (count, 16, 16, 3)).astype(np.float32)
    images[..., 0 if value == "red" else 2] += 0.8
    return np.clip(images, -1, 1)


@pytest.fixture(scope="module")
def tinted(tmp_path_factory):
    """A class folder tree (train, val) of 'neutrophil' and 'platelet' images and its attribute table:
    neutrophils have tint red (36 train, 8 val) or blue (12 train, 8 val); platelets no value."""
    root = tmp_path_factory.mktemp("tinted")
    rows = ["split,class,file,tint,size"]
    for split, counts, seed in (("train", {"red": 36, "blue": 12}, 0), ("val", {"red": 8, "blue": 8}, 1)):
        for value, count in counts.items():
            for index, image in enumerate(to_uint8(_cells(value, count, seed + len(value)))):
                name = f"{split}_{value}_{index:03d}.png"
                write_rgb(root / split / "neutrophil" / name, image)
                rows.append(f"{split},neutrophil,{name},{value},big")
        for index in range(4):
            write_rgb(root / split / "platelet" / f"{split}_p_{index}.png", to_uint8(_cells("red", 1, 9 + index))[0])
            rows.append(f"{split},platelet,{split}_p_{index}.png,,")
    (root / "table.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def classifier(tinted):
    return train_attribute_classifier(tinted / "train", "tint", tinted / "table.csv", select=["class=neutrophil"],
                                      overrides=TINY, seed=1)


def test_the_classifier_learns_the_attribute_from_real_training_images(classifier, tinted):
    assert classifier.values == ["blue", "red"] and classifier.training_counts == {"blue": 12, "red": 36}
    real = evaluate_real(classifier, tinted / "val", tinted / "table.csv")
    assert real["images"] == 16 and real["other_values"] == {}
    assert real["per_value"]["blue"]["support"] == 8 and real["per_value"]["blue"]["called"] >= 0.875
    assert real["accuracy"] >= 0.875
    # Generated images are scored by the share called the requested value.
    blue = attribute_fidelity(classifier, _cells("blue", 20, 7), "blue")
    assert blue["images"] == 20 and blue["called_requested"] >= 0.85
    assert abs(sum(blue["called"].values()) - 1.0) < 1e-9
    assert attribute_fidelity(classifier, _cells("red", 20, 8), "blue")["called_requested"] <= 0.15
    # A folder of images works as well, and real validation images score their own recall.
    folder = attribute_fidelity(classifier, tinted / "val" / "neutrophil", "blue")
    assert folder["images"] == 16
    table = fidelity_markdown({"blue-tinted": blue}, real)
    assert "| blue-tinted | 20 |" in table and "| real validation images with blue | 8 |" in table


def test_fidelity_of_real_images_agrees_with_evaluate_real(classifier, tinted):
    from cellgen.data import DataReader

    real = evaluate_real(classifier, tinted / "val", tinted / "table.csv")
    reader = DataReader(tinted / "val", image_size=16, shuffle=False, attributes=tinted / "table.csv",
                        select=["class=neutrophil", "tint=blue"])
    images, _ = reader.load_all()
    share = attribute_fidelity(classifier, images, "blue")["called_requested"]
    assert share == pytest.approx(real["per_value"]["blue"]["called"])
    # Larger generated images are resized to the classifier's input.
    big = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)
    assert attribute_fidelity(classifier, big, "blue")["images"] == len(images)


def test_save_and_load(classifier, tmp_path):
    classifier.save(tmp_path / "clf")
    loaded = AttributeClassifier.load(tmp_path / "clf")
    assert (loaded.attribute, loaded.values, loaded.image_size, loaded.select) == (
        "tint", ["blue", "red"], 16, ["class=neutrophil"])
    images = _cells("blue", 4, 3)
    np.testing.assert_allclose(loaded.probabilities(images), classifier.probabilities(images), atol=1e-6)
    with pytest.raises(EvaluationError, match="not an attribute classifier"):
        AttributeClassifier.load(tmp_path)


def test_errors(classifier, tinted):
    with pytest.raises(DataError, match="have no tint value .*select annotated classes only"):
        train_attribute_classifier(tinted / "train", "tint", tinted / "table.csv", select=["split=train"],
                                   overrides=TINY)
    with pytest.raises(DataError, match="none of the 4 selected images has a tint value"):
        train_attribute_classifier(tinted / "train", "tint", tinted / "table.csv", select=["class=platelet"],
                                   overrides=TINY)
    with pytest.raises(DataError, match="all have size=big; nothing to tell apart"):
        train_attribute_classifier(tinted / "train", "size", tinted / "table.csv", overrides=TINY)
    with pytest.raises(DataError, match="select: tint has no value 'green'"):
        train_attribute_classifier(tinted / "train", "tint", tinted / "table.csv", select=["tint=green"])
    with pytest.raises(EvaluationError, match="tells apart blue, red, not 'green'"):
        attribute_fidelity(classifier, _cells("red", 2, 0), "green")
    with pytest.raises(EvaluationError, match="give count="):
        attribute_fidelity(classifier, _FakeSampler(), "red")


class _FakeSampler:
    image_size = 16

    def sample(self, count, seed, class_name=None, batch_size=64):
        return _cells("red", count, seed)


def test_a_sampler_is_drawn_from(classifier):
    result = attribute_fidelity(classifier, _FakeSampler(), "red", count=12, seed=3)
    assert result["images"] == 12 and result["called_requested"] >= 0.85


def test_on_the_embedded_sample_neutrophils():
    """The real use: nucleus_shape among the neutrophils of the shipped WBCAtt rows."""
    table = sample_path("train").parent / "wbcatt.csv"
    classifier = train_attribute_classifier(sample_path("train"), "nucleus_shape", table,
                                            overrides={**TINY, "epochs": 1}, seed=0)
    assert classifier.values == ["segmented-bilobed", "segmented-multilobed", "unsegmented-band"]
    assert classifier.training_counts == {"segmented-bilobed": 6, "segmented-multilobed": 4, "unsegmented-band": 14}
    real = evaluate_real(classifier, sample_path("test"), table)
    assert real["images"] == 8 and {name: stats["support"] for name, stats in real["per_value"].items()} == {
        "segmented-bilobed": 3, "segmented-multilobed": 2, "unsegmented-band": 3}
    assert 0.0 <= real["accuracy"] <= 1.0


def test_binary_file_lists_run_the_nz_experiment_with_synthetic_positives(tmp_path, capsys):
    """Multilobed against the other neutrophils of the sample (train 4 / 20; the sample's test folder,
    2 / 6, stands in for validation), with a folder of 'generated' positives in the synthetic arm."""
    import json

    from cellgen.cli.evaluate_classifier import main
    from cellgen.data import DataReader
    from cellgen.images import read_rgb

    table = sample_path("train").parent / "wbcatt.csv"
    lists = {}
    for name, split in (("train", "train"), ("val", "test"), ("test", "test")):
        lists[name] = tmp_path / f"{name}.csv"
        counts = write_binary_file_list(sample_path(split), lists[name], table)
        assert counts == ({"multilobed": 4, "other": 20} if split == "train" else {"multilobed": 2, "other": 6})
    reader = DataReader(lists["train"], image_size=16)
    assert reader.classes == ["multilobed", "other"] and reader.class_counts() == {"multilobed": 4, "other": 20}
    multilobed = {path for path, label in reader.kept_files() if label == "multilobed"}
    selected = DataReader(sample_path("train"), image_size=16, attributes=table,
                          select=["class=neutrophil", "nucleus_shape=segmented-multilobed"])
    assert {Path(path).resolve() for path in multilobed} == {Path(path).resolve() for path in selected.files}
    with pytest.raises(DataError, match="has 0 image\\(s\\) with nucleus_shape=segmented-multilobed and 8 without"):
        write_binary_file_list(sample_path("val"), tmp_path / "none.csv", table)
    with pytest.raises(DataError, match="labels must differ"):
        write_binary_file_list(sample_path("train"), tmp_path / "x.csv", table, positive_label="other")

    synthetic = tmp_path / "synthetic" / "multilobed"
    for index, path in enumerate(sorted(multilobed)):
        write_rgb(synthetic / f"gen_{index}.png", read_rgb(path)[:, ::-1])  # stand-ins for generated positives
    out = tmp_path / "exp"
    assert main(["--config", "classifier_fast", "--train", str(lists["train"]), "--val", str(lists["val"]),
                 "--test", str(lists["test"]), "--size", "16", "--set", "cnn_width=4", "--set", "cnn_blocks=2",
                 "--batch-size", "8", "--epochs", "1", "--arms", "baseline,synthetic", "--seeds", "1",
                 "--set", "mode=binary", "--set", "positive=multilobed", "--set", "synthetic_match_positive=true",
                 "--synthetic", str(tmp_path / "synthetic"), "--weights", "none", "--out", str(out),
                 "--quiet"]) == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["arms"]["synthetic"]["runs"][0]["train_images"] == 24 + 4
    assert set(report["arms"]["baseline"]["per_class"]) == {"multilobed", "not_multilobed"}  # binary mode
