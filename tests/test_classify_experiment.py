"""The classifier experiment end to end: report files, cpu:2, resume, NaN guard, --synthetic-from, CLI errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import pytest

from cellgen import sampling
from cellgen import training
from cellgen.classify import mixing, prepare, train_lib
from cellgen.classify.config import ClassifierConfig
from cellgen.classify.models import build_classifier
from cellgen.cli.evaluate_classifier import main
from cellgen.config import CommonConfig, ConfigError, load_config
from cellgen.distribute import make_strategy
from cellgen.images import write_rgb
from cellgen.runs import RunDir, read_history, read_json, write_json
from cellgen.sample_data import sample_path

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]
TINY = ["--size", "32", "--set", "cnn_width=4", "--set", "cnn_blocks=2", "--batch-size", "32"]


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for name in CLASSES:
        for index in range(4):
            write_rgb(root / name / f"gen_{index}.png", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    return root


def splits() -> list[str]:
    return ["--train", str(sample_path("train")), "--val", str(sample_path("val")), "--test", str(sample_path("test"))]


def tiny_config(tmp_path, **changes) -> ClassifierConfig:
    values = {"data": str(sample_path("train")), "val_data": str(sample_path("val")),
              "test_data": str(sample_path("test")), "out": str(tmp_path / "exp"), "image_size": 32,
              "cnn_width": 4, "cnn_blocks": 2, "epochs": 1, "arms": "baseline", "seeds": 1}
    values.update(changes)
    return load_config(ClassifierConfig, "classifier_fast", values)


def test_end_to_end_two_arms_under_cpu2_writes_the_report(tmp_path, synthetic_dir, capsys):
    out = tmp_path / "exp"
    code = main(["--config", "classifier_fast", *splits(), *TINY, "--epochs", "1", "--arms", "baseline,synthetic",
                 "--seeds", "1", "--synthetic", str(synthetic_dir), "--synthetic-count", "3", "--weights", "none",
                 "--strategy", "cpu:2", "--set", "class_weights=balanced", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    assert "2 replica(s)" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["classes"] == CLASSES and set(report["arms"]) == {"baseline", "synthetic"}
    for arm, summary in report["arms"].items():
        assert set(summary["weighted_f1"]) == {"mean", "std", "n"} and 0 <= summary["weighted_f1"]["mean"] <= 1
        assert set(summary["per_class"]) == set(CLASSES)
        assert set(summary["per_class"]["basophil"]) >= {"precision", "recall", "f1", "specificity", "accuracy"}
        assert np.asarray(summary["confusion_matrix"]).sum() == 64  # the whole test split, once
        (run,) = summary["runs"]
        run_dir = Path(run["run_dir"])
        assert (run_dir / "COMPLETE.json").is_file() and (run_dir / "models" / "best.keras").is_file()
        assert read_json(run_dir / "config.json")["class_weights"] == "balanced"
        assert read_history(run_dir / "logs" / "history.csv")["epoch"] == [0.0]
        for name in ("metrics/loss_curves.png", "metrics/train.json", "metrics/test.json", "metrics/confusion_matrix.png", "samples/first_batch.png",
                     "checkpoints/epoch-0001/state.json", "config.toml", "classes.json"):
            assert (run_dir / name).is_file(), name
        predictions = (run_dir / "metrics" / "test_predictions.csv").read_text().splitlines()
        assert len(predictions) == 65
    assert report["arms"]["synthetic"]["runs"][0]["train_images"] == 192 + 8 * 3
    assert report["arms"]["baseline"]["runs"][0]["train_images"] == 192
    assert "delta_vs_baseline" in report["arms"]["synthetic"]
    for name in ("report.md", "confusion_baseline.png", "confusion_synthetic.png", "f1_by_arm.png",
                 "samples/real_examples.png", "samples/synthetic_examples.png", "classes.json"):
        assert (out / name).is_file(), name
    markdown = (out / "report.md").read_text()
    assert "| synthetic |" in markdown and "## Per-class F1" in markdown
    # the saved classifier reloads in safe mode and agrees with the reported predictions
    model = keras.saving.load_model(str(Path(report["arms"]["baseline"]["runs"][0]["run_dir"]) / "models/best.keras"),
                                    safe_mode=True)
    assert model.output_shape == (None, 8)


def test_loss_is_averaged_over_the_global_batch_under_cpu2():
    # one SGD step on the same batch must give the same weights on 1 and on 2 replicas; a loss
    # averaged per replica and summed across replicas would double the step
    images = np.random.default_rng(3).uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    labels = np.arange(8, dtype="int32") % 4
    weights = []
    for strategy in (make_strategy("default"), make_strategy("cpu:2")):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            # frozen backbone: batch norm in inference mode, so per-replica statistics do not differ
            model = build_classifier("smallcnn", 4, 32, weights=None, freeze_backbone=True, cnn_width=4,
                                     cnn_blocks=2)
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy())
        if weights:
            model.set_weights(initial)
        initial = [weight.copy() for weight in model.get_weights()]
        model.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)
        weights.append(model.get_layer("probabilities").get_weights()[0])
    assert not np.allclose(weights[0], initial[-2])
    np.testing.assert_allclose(weights[1], weights[0], rtol=1e-4, atol=1e-6)


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_epoch: int):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise KeyboardInterrupt


class _ExplodeLearningRate(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.model.optimizer.learning_rate.assign(1e30)


def add_callback(monkeypatch, callback):
    original = training.make_callbacks

    def patched(*args, **kwargs):
        return original(*args, **kwargs) + [callback]

    monkeypatch.setattr(training, "make_callbacks", patched)


def plan_one_run(config, out):
    data = prepare.prepare_data(config, out, printer=lambda message: None)
    sets = prepare.write_training_sets(config, data, out, [config.seed], progress=False)
    return data, sets.csv[config.seed]["baseline"]


def test_resumed_run_continues_from_its_checkpoint(tmp_path, monkeypatch):
    config = tiny_config(tmp_path, epochs=2)
    out = Path(config.out)
    data, train_csv = plan_one_run(config, out)
    run_path = out / "runs" / "baseline" / "seed-0"
    add_callback(monkeypatch, _Interrupt(at_epoch=1))
    with pytest.raises(KeyboardInterrupt):
        train_lib.train_classifier_run(config, "baseline", train_csv, data.val_csv, data.test_csv, data.classes,
                                       run_path, verbose=0)
    monkeypatch.undo()
    assert read_json(run_path / "checkpoints" / "epoch-0001" / "state.json")["epoch"] == 1
    first_epoch = read_history(run_path / "logs" / "history.csv")
    messages = []
    result = train_lib.train_classifier_run(config, "baseline", train_csv, data.val_csv, data.test_csv,
                                            data.classes, run_path, resume=True, verbose=0,
                                            printer=messages.append)
    assert any("after epoch 1" in message for message in messages)
    history = read_history(run_path / "logs" / "history.csv")
    assert history["epoch"] == [0.0, 1.0]  # epoch 0 was not trained again
    assert history["loss"][0] == first_epoch["loss"][0]
    steps = result["steps_per_epoch"]
    with np.load(run_path / "checkpoints" / "epoch-0002" / "optimizer.optimizer.npz") as archive:
        assert int(archive["0"]) == 2 * steps  # the optimizer's iteration counter carried over
    assert result["epochs_trained"] == 2 and (run_path / "COMPLETE.json").is_file()
    # a complete run is read back, not retrained
    again = train_lib.train_classifier_run(config, "baseline", train_csv, data.val_csv, data.test_csv,
                                           data.classes, run_path, resume=True, verbose=0)
    assert again["weighted_f1"] == result["weighted_f1"]


def test_a_run_ended_by_early_stopping_resumes_to_its_test_only(tmp_path):
    config = tiny_config(tmp_path, epochs=1)
    out = Path(config.out)
    data, train_csv = plan_one_run(config, out)
    run_path = out / "runs" / "baseline" / "seed-0"
    args = ("baseline", train_csv, data.val_csv, data.test_csv, data.classes, run_path)
    train_lib.train_classifier_run(config, *args, verbose=0)
    # As if early stopping had ended it after epoch 1 and the process died before the test.
    state_file = run_path / "checkpoints" / "epoch-0001" / "state.json"
    state = read_json(state_file)
    assert state["stopped_early"] is False and state["epochs_without_improvement"] == 0
    write_json(state_file, {**state, "stopped_early": True})
    (run_path / "COMPLETE.json").unlink()
    (run_path / "metrics" / "test.json").unlink()
    result = train_lib.train_classifier_run(config.replace(epochs=3), *args, resume=True, verbose=0)
    assert read_history(run_path / "logs" / "history.csv")["epoch"] == [0.0]  # not trained further
    assert result["epochs_trained"] == 1 and result["stopped_early_at"] == 1
    assert (run_path / "COMPLETE.json").is_file() and (run_path / "metrics" / "test.json").is_file()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    add_callback(monkeypatch, _ExplodeLearningRate())  # finite epoch 1, NaN in epoch 2
    out = tmp_path / "exp"
    code = main(["--config", "classifier_fast", *splits(), *TINY, "--epochs", "3", "--arms", "baseline",
                 "--seeds", "1", "--out", str(out), "--quiet"])
    error = capsys.readouterr().err
    assert code == 3
    assert error.startswith("error: training stopped: loss became nan") and error.count("\n") == 1
    checkpoints = out / "runs" / "baseline" / "seed-0" / "checkpoints"
    assert f"last good checkpoint: {checkpoints / 'epoch-0001'}" in error
    assert sorted(path.name for path in checkpoints.glob("epoch-*")) == ["epoch-0001"]
    assert not (out / "report.json").exists()


@dataclasses.dataclass
class FakeGeneratorConfig(CommonConfig):
    kind: ClassVar[str] = "fake_generator_for_tests"


class FakeSampler:
    """A conditional 'generator' whose images are a class-specific colour plus seeded noise."""

    kind = "fake_generator_for_tests"
    image_size = 32

    def __init__(self, classes):
        self.classes = classes

    def sample(self, count, seed, class_name=None, batch_size=64):
        rng = np.random.default_rng(seed)
        shade = -1.0 if class_name is None else -1.0 + 2.0 * self.classes.index(class_name) / len(self.classes)
        noise = rng.uniform(-0.1, 0.1, (count, 32, 32, 3))
        return np.clip(shade + noise, -1, 1).astype("float32")


def load_fake_sampler(run, **options):
    return FakeSampler(run.classes if (run.path / "classes.json").is_file() else None)


@pytest.fixture
def fake_generator_kind(monkeypatch):
    monkeypatch.setitem(sampling.SAMPLER_LOADERS, FakeGeneratorConfig.kind, f"{__name__}:load_fake_sampler")


def test_synthetic_from_a_generator_run(tmp_path, fake_generator_kind):
    conditional = RunDir.create(tmp_path / "acgan", FakeGeneratorConfig(), CLASSES)
    config = tiny_config(tmp_path, arms="baseline,synthetic", synthetic_from=str(conditional.path),
                         synthetic_count=3, synthetic_classes="basophil,monocyte")
    out = Path(config.out)
    data = prepare.prepare_data(config, out, printer=lambda message: None)
    sets = prepare.write_training_sets(config, data, out, [0], progress=False)
    for name in ("basophil", "monocyte"):
        assert len(list((out / "synthetic" / name).glob("*.png"))) == 3
    assert not (out / "synthetic" / "ig").exists()
    rows = mixing.read_rows(sets.csv[0]["synthetic"])
    synthetic = [(Path(path), label) for path, label, origin in rows if origin == mixing.SYNTHETIC]
    assert sorted(label for _, label in synthetic) == ["basophil"] * 3 + ["monocyte"] * 3
    assert all(path.parent == out / "synthetic" / label for path, label in synthetic)
    assert not any(origin == mixing.SYNTHETIC for _, _, origin in mixing.read_rows(sets.csv[0]["baseline"]))

    # an unconditional run can serve a single class, or one run per class
    unconditional = RunDir.create(tmp_path / "ddim", FakeGeneratorConfig())
    config = config.replace(out=str(tmp_path / "exp2"), synthetic_from=str(unconditional.path))
    with pytest.raises(ConfigError, match="unconditional generator cannot make images for 2 classes"):
        prepare.write_training_sets(config, data, Path(config.out), [0], progress=False)
    config = config.replace(synthetic_from=f"basophil={unconditional.path},monocyte={unconditional.path}")
    sets = prepare.write_training_sets(config, data, Path(config.out), [0], progress=False)
    assert mixing.count_rows(mixing.read_rows(sets.csv[0]["synthetic"]))[mixing.SYNTHETIC] == \
        {"basophil": 3, "monocyte": 3}


@pytest.mark.parametrize("arguments, message", [
    (["--backbone", "resnet9"], "backbone: unknown backbone 'resnet9'"),
    (["--backbone", "xception", "--size", "64"], "(image_size|--size) 64 is below the xception minimum of 71 px"),
    (["--weights", "/nonexistent/backbone.weights.h5"], "weights: file not found: /nonexistent/backbone.weights.h5"),
    (["--val", "CHANGED_VAL"], "--val .*: class set differs from --train .* \\(lacks platelet\\)"),
    (["--arms", "baseline,synthetic"], "arm\\(s\\) synthetic need --synthetic DIR or --synthetic-from RUN"),
    (["--limit-class", "basophil"], "--limit-class expects NAME=FRACTION"),
])
def test_bad_input_gives_one_line_errors(tmp_path, capsys, arguments, message):
    import re
    import shutil

    if "CHANGED_VAL" in arguments:
        changed = tmp_path / "val"
        shutil.copytree(sample_path("val"), changed)
        shutil.rmtree(changed / "platelet")
        arguments = [str(changed) if item == "CHANGED_VAL" else item for item in arguments]
    code = main(["--config", "classifier_fast", *splits(), "--out", str(tmp_path / "exp"), "--quiet", *arguments])
    error = capsys.readouterr().err
    assert code == 2
    assert error.startswith("error: ") and error.count("\n") == 1, error
    assert re.search(message, error), error


def test_best_weights_are_kept_and_early_stopping_waits_for_patience(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    keep = train_lib.KeepBestWeights(tmp_path / "best.weights.h5", patience=2)
    keep.set_model(model)
    model.stop_training = False  # what fit() sets before the first epoch
    snapshots = {}
    for epoch, val_loss in enumerate([1.0, 0.8, 0.9, 0.95, 0.7]):
        model.set_weights([np.full_like(weight, epoch) for weight in model.get_weights()])
        snapshots[epoch + 1] = [weight.copy() for weight in model.get_weights()]
        keep.on_epoch_end(epoch, {"val_loss": val_loss})
        if model.stop_training:
            break
    assert keep.stopped_early_at == 4 and keep.best_epoch == 2 and keep.best == pytest.approx(0.8)
    assert keep.state() == {"best_val_loss": pytest.approx(0.8), "best_epoch": 2, "epochs_without_improvement": 2}
    assert keep.restore_best(model)
    for expected, actual in zip(snapshots[2], model.get_weights()):
        np.testing.assert_array_equal(expected, actual)
    # a resumed run compares against the recorded best, not against infinity
    resumed = train_lib.KeepBestWeights(tmp_path / "best.weights.h5", patience=2, wait=2)
    assert resumed.best == pytest.approx(0.8) and resumed.best_epoch == 2 and resumed.wait == 2


def test_balanced_class_weights():
    weights = mixing.balanced_class_weights({"a": 30, "b": 10, "c": 0}, ["a", "b", "c"])
    assert weights == {0: pytest.approx(40 / 60), 1: pytest.approx(40 / 20), 2: 0.0}


def test_jobs_2_trains_runs_side_by_side_with_the_results_of_one_at_a_time(tmp_path, capfd):
    """jobs=2 runs each (arm, seed) in its own spawned process; every run seeds itself, so the
    losses and test metrics equal those of the runs trained one after the other."""
    changes = {"arms": "baseline,classical", "epochs": 2}
    one = train_lib.run_experiment(tiny_config(tmp_path / "one", **changes), verbose=0, printer=lambda line: None)
    lines = []
    two = train_lib.run_experiment(tiny_config(tmp_path / "two", jobs=2, **changes), verbose=0, printer=lines.append)
    assert any("2 at a time (jobs=2)" in line for line in lines)
    # Each run says when it starts and prints one prefixed line per epoch (no interleaved bars).
    printed = capfd.readouterr().out
    assert "[1/2] arm baseline, seed 0:" in printed and "[2/2] arm classical, seed 0:" in printed
    assert "    [classical, seed 0] epoch 2/2 (" in printed and "\x08" not in printed
    for arm in ("baseline", "classical"):
        (run_one,), (run_two,) = one["arms"][arm]["runs"], two["arms"][arm]["runs"]
        assert Path(run_two["run_dir"]).parent.parent.parent == tmp_path / "two" / "exp"
        assert (Path(run_two["run_dir"]) / "COMPLETE.json").is_file()
        history_one = read_history(Path(run_one["run_dir"]) / "logs" / "history.csv")
        history_two = read_history(Path(run_two["run_dir"]) / "logs" / "history.csv")
        np.testing.assert_allclose(history_two["loss"], history_one["loss"], rtol=1e-4)
        assert run_two["weighted_f1"] == pytest.approx(run_one["weighted_f1"], abs=1e-6)
    assert read_json(tmp_path / "two" / "exp" / "config.json")["jobs"] == 2


def test_jobs_above_1_with_a_multi_replica_strategy_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="jobs=2 trains single-device runs side by side; with 2 replica"):
        train_lib.run_experiment(tiny_config(tmp_path, jobs=2, strategy="cpu:2"), verbose=0)


def test_jobs_above_1_with_a_gpu_visible_trains_one_run_at_a_time_with_a_warning(tmp_path, monkeypatch):
    import tensorflow as tf

    real = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    monkeypatch.setattr(train_lib, "_train_runs_in_processes",
                        lambda *args, **kwargs: pytest.fail("processes started although a GPU is visible"))
    lines = []
    report = train_lib.run_experiment(tiny_config(tmp_path, jobs=2, arms="baseline", epochs=1, precision="fp32"),
                                      strategy=tf.distribute.get_strategy(), verbose=0, printer=lines.append)
    assert any(line.startswith("warning: jobs=2 is for CPU-only machines") for line in lines)
    assert len(report["arms"]["baseline"]["runs"]) == 1
