import numpy as np
import pytest

import cellgen.sampling as sampling
from cellgen.cli.generate import main as generate_main
from cellgen.images import from_uint8, read_rgb, to_uint8
from cellgen.plots import plot_confusion_matrix, plot_grouped_bars, plot_history, save_image_grid, tile_images
from cellgen.runs import RunDir


def test_uint8_round_trip_and_clipping():
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    np.testing.assert_array_equal(to_uint8(from_uint8(pixels)), pixels)
    assert from_uint8(pixels).min() == -1.0 and from_uint8(pixels).max() == 1.0
    assert to_uint8(np.array([-3.0, 3.0])).tolist() == [0, 255]


def test_tile_places_images_row_major():
    images = np.stack([np.full((4, 4, 3), value, np.uint8) for value in (10, 20, 30)])
    grid = tile_images(images, columns=2, padding=1)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3)
    assert grid[1, 1, 0] == 10 and grid[1, 6, 0] == 20 and grid[6, 1, 0] == 30 and grid[6, 6, 0] == 255


def test_pictures_are_written(tmp_path):
    images = np.random.default_rng(0).uniform(-1, 1, size=(6, 8, 8, 3)).astype("float32")
    assert read_rgb(save_image_grid(images, tmp_path / "grid.png", columns=3)).shape == (2 * 10 + 2, 3 * 10 + 2, 3)
    labelled = save_image_grid(images, tmp_path / "labelled.png", columns=3, row_labels=["a", "b"], title="t")
    assert read_rgb(labelled).shape[0] > 20
    plot_history({"epoch": [0, 1, 2], "loss": [3, 2, 1], "val_loss": [3, 2.5, 2], "acc": [0.1, 0.5, 0.7]},
                 tmp_path / "curves.png")
    plot_confusion_matrix(np.array([[5, 1], [0, 4]]), ["a", "b"], tmp_path / "cm.png")
    plot_grouped_bars({"baseline": {"a": 0.5, "b": 0.7}, "synthetic": {"a": 0.6, "b": 0.7}}, tmp_path / "bars.png")
    for name in ("curves.png", "cm.png", "bars.png"):
        assert read_rgb(tmp_path / name).shape[2] == 3


class _ConstantSampler:
    """A deterministic test sampler: image value depends on seed and class."""

    kind = "toy_generator"
    image_size = 8

    def __init__(self, classes):
        self.classes = classes

    def sample(self, count, seed, class_name=None, batch_size=64):
        offset = 0 if class_name is None else self.classes.index(class_name)
        value = ((seed * 7 + offset * 3) % 10) / 10.0
        return np.full((count, 8, 8, 3), value, dtype=np.float32)


def _register(monkeypatch, tmp_path, classes):
    from cellgen.config import CommonConfig

    class ToyConfig(CommonConfig):
        kind = "toy_generator"

    run = RunDir.create(tmp_path / "run", ToyConfig(), classes=classes or ["x"])
    module = type(sampling)("cellgen_test_toy_sampler")
    module.load = lambda run_dir, **options: (sampling.reject_options("toy", options) or _ConstantSampler(classes))
    monkeypatch.setitem(__import__("sys").modules, "cellgen_test_toy_sampler", module)
    monkeypatch.setitem(sampling.SAMPLER_LOADERS, "toy_generator", "cellgen_test_toy_sampler:load")
    return run


def test_generate_script_writes_images_per_class(monkeypatch, tmp_path, capsys):
    run = _register(monkeypatch, tmp_path, ["basophil", "ig"])
    assert generate_main(["--run", str(run.path), "--per-class", "3", "--out", str(tmp_path / "synth"),
                          "--batch-size", "2", "--quiet"]) == 0
    for class_name in ("basophil", "ig"):
        files = sorted((tmp_path / "synth" / class_name).glob("*.png"))
        assert len(files) == 3
        assert read_rgb(files[0]).shape == (8, 8, 3)


def test_generate_errors_are_one_line(monkeypatch, tmp_path, capsys):
    run = _register(monkeypatch, tmp_path, None)
    assert generate_main(["--run", str(run.path), "--per-class", "3", "--out", str(tmp_path / "o")]) == 2
    assert "unconditional" in capsys.readouterr().err
    assert generate_main(["--run", str(run.path), "--n", "2", "--steps", "5", "--out", str(tmp_path / "o")]) == 2
    assert "--steps" in capsys.readouterr().err
    assert generate_main(["--run", str(tmp_path / "nowhere"), "--n", "2", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "nowhere" in err and "Traceback" not in err


def test_write_samples_is_reproducible(tmp_path):
    sampler = _ConstantSampler(["a", "b"])
    first = sampling.write_samples(sampler, 5, tmp_path / "one", seed=3, class_name="b", batch_size=2, progress=False)
    second = sampling.write_samples(sampler, 5, tmp_path / "two", seed=3, class_name="b", batch_size=2, progress=False)
    assert len(first) == 5
    for a, b in zip(first, second):
        np.testing.assert_array_equal(read_rgb(a), read_rgb(b))
    with pytest.raises(Exception, match="not one of"):
        sampling.write_samples(sampler, 1, tmp_path / "x", class_name="zebra", progress=False)


def test_history_columns_without_a_finite_value_are_not_plotted(tmp_path):
    # A run without validation data logs val_* as NA: those columns must not be drawn (or listed).
    nan = float("nan")
    plot_history({"epoch": [0, 1], "loss": [2.0, 1.0], "val_loss": [nan, nan]}, tmp_path / "curves.png")
    assert read_rgb(tmp_path / "curves.png").shape[2] == 3
    with pytest.raises(ValueError, match="nothing to plot"):
        plot_history({"epoch": [0, 1], "val_loss": [nan, nan]}, tmp_path / "empty.png")
