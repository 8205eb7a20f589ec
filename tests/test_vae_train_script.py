"""train_cvae.py end to end: run directory, resume, NaN guard, bad input, sampling through generate.py."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest

from cellgen.cli.train_cvae import main
from cellgen.images import read_rgb
from cellgen.runs import read_history
from cellgen.sample_data import sample_path
from cellgen.sampling import load_sampler

TINY = ["--size", "28", "--batch-size", "48", "--set", "latent_dim=8", "--set", "encoder_filters=[8,16,32]",
        "--set", "samples_per_class=4", "--set", "sample_every=1"]


def _train(out, *extra, epochs=2, data=None):
    return main(["--config", "matos2025_cvae28", "--data", str(data or sample_path("train")), "--out", str(out),
                 "--epochs", str(epochs), "--quiet", *TINY, *extra])


def _decoder_weights(run):
    model = keras.saving.load_model(run / "models" / "decoder.keras", safe_mode=True, compile=False)
    return model.get_weights()


def test_run_directory_sampler_and_generate(tmp_path, capsys):
    run = tmp_path / "cvae"
    assert _train(run, "--set", f"val_data={sample_path('val')}", "--set", "save_every=2") == 0
    for name in ("config.toml", "config.json", "classes.json", "environment.json", "COMPLETE.json",
                 "logs/history.csv", "logs/run.log", "metrics/train.json", "metrics/loss_curves.png",
                 "models/decoder.keras", "models/encoder.keras", "models/decoder-epoch-0002.keras",
                 "samples/epoch-0001.png", "samples/epoch-0002.png",
                 "samples/reconstructions.png", "checkpoints/epoch-0002/decoder.weights.h5",
                 "checkpoints/epoch-0002/optimizer.optimizer.npz"):
        assert (run / name).is_file(), name
    assert any((run / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    assert not (run / "models" / "decoder-epoch-0001.keras").exists()  # save_every=2
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "cvae" and config["kl_weight"] == 0.75 and config["image_size"] == 28
    classes = json.loads((run / "classes.json").read_text())
    assert len(classes) == 8 and classes[0] == "basophil"
    history = read_history(run / "logs" / "history.csv")
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["val_loss"]))
    metrics = json.loads((run / "metrics" / "train.json").read_text())
    assert metrics["epochs"] == 2 and metrics["train_seconds"] > 0 and metrics["training_images"] == 192
    assert np.isfinite(metrics["final"]["loss"]) and metrics["final"]["kl_loss"] >= 0
    grid = read_rgb(run / "samples" / "epoch-0002.png")  # the last epoch's grid
    assert grid.shape[0] > grid.shape[1] / 2  # 8 class rows of 4 images, plus labels

    sampler = load_sampler(run)
    assert sampler.kind == "cvae" and sampler.classes == classes and sampler.image_size == 28
    images = sampler.sample(6, seed=1, class_name="monocyte")
    assert images.shape == (6, 28, 28, 3) and -1 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(load_sampler(run, epoch=2).sample(3, seed=2), sampler.sample(3, seed=2))

    from cellgen.cli.generate import main as generate

    out = tmp_path / "synthetic"
    assert generate(["--run", str(run), "--out", str(out), "--per-class", "2", "--quiet"]) == 0
    written = sorted(out.rglob("*.png"))
    assert len(written) == 16 and {path.parent.name for path in written} == set(classes)
    assert read_rgb(written[0]).shape == (28, 28, 3)
    assert generate(["--run", str(run), "--out", str(out), "--n", "1", "--steps", "5"]) == 2
    assert "--steps" in capsys.readouterr().err


def test_resume_continues_from_the_checkpoint(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train(straight, "--set", "sample_every=0", epochs=2) == 0
    assert _train(resumed, "--set", "sample_every=0", epochs=1) == 0
    assert main(["--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    history = read_history(resumed / "logs" / "history.csv")
    assert history["epoch"] == [0.0, 1.0]
    np.testing.assert_allclose(history["loss"], read_history(straight / "logs" / "history.csv")["loss"], rtol=1e-4)
    for ours, reference in zip(_decoder_weights(resumed), _decoder_weights(straight)):
        np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-6)
    assert sorted(path.name for path in (resumed / "checkpoints").iterdir()) == ["epoch-0001", "epoch-0002"]
    assert json.loads((resumed / "metrics" / "train.json").read_text())["epochs"] == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "cvae"
    assert _train(run, epochs=1) == 0
    good = (run / "checkpoints" / "epoch-0001" / "decoder.weights.h5").read_bytes()
    # A learning rate given on resume replaces the checkpoint's; this one blows the weights up.
    code = main(["--out", str(run), "--resume", "--epochs", "3", "--quiet", "--set", "learning_rate=1e30"])
    assert code == 3
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: training stopped:") and "epoch 2" in error
    assert "last good checkpoint" in error and "epoch-0001" in error
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["epoch-0001"]
    assert (run / "checkpoints" / "epoch-0001" / "decoder.weights.h5").read_bytes() == good


def test_two_replica_strategy_run(tmp_path):
    run = tmp_path / "cvae"
    assert _train(run, "--strategy", "cpu:2", "--set", "sample_every=0", epochs=1) == 0
    assert json.loads((run / "metrics" / "train.json").read_text())["replicas"] == 2
    assert np.isfinite(read_history(run / "logs" / "history.csv")["loss"][0])


@pytest.mark.parametrize("argv, expected", [
    (["--data", "/nonexistent/cells"], "/nonexistent/cells"),
    (["--set", "latent_dim=0"], "latent_dim"),
    (["--set", "no_such_key=1"], "no_such_key"),
    (["--config", "no_such_preset"], "no_such_preset"),
    (["--precision", "fp32", "--set", "kl_weight=abc"], "kl_weight"),
])
def test_bad_input_gives_a_one_line_error(tmp_path, capsys, argv, expected):
    base = ["--config", "matos2025_cvae28", "--data", str(sample_path("train")), "--out", str(tmp_path / "run")]
    code = main(base + argv)
    error = capsys.readouterr().err.strip()
    assert code == 2
    assert error.startswith("error: ") and len(error.splitlines()) == 1 and expected in error


def test_missing_data_and_architecture_change_on_resume(tmp_path, capsys):
    assert main(["--out", str(tmp_path / "run")]) == 2
    assert "--data" in capsys.readouterr().err
    run = tmp_path / "cvae"
    assert _train(run, "--set", "sample_every=0", epochs=1) == 0
    assert main(["--out", str(run), "--resume", "--set", "latent_dim=16"]) == 2
    assert "latent_dim" in capsys.readouterr().err
    assert _train(run, epochs=1) == 2  # the run exists and --resume was not given
    assert "--resume" in capsys.readouterr().err


def test_unconditional_run_samples_without_classes(tmp_path):
    run = tmp_path / "vae"
    assert _train(run, "--set", "conditional=false", "--set", "sample_every=0", epochs=1) == 0
    sampler = load_sampler(run)
    assert sampler.classes is None
    assert sampler.sample(3, seed=0).shape == (3, 28, 28, 3)



def test_a_run_without_saved_models_samples_from_its_checkpoint(tmp_path):
    run = tmp_path / "cvae"
    assert _train(run, "--set", "sample_every=0", epochs=1) == 0
    expected = load_sampler(run).sample(3, seed=4, class_name="basophil")
    for path in (run / "models").iterdir():
        path.unlink()
    np.testing.assert_allclose(load_sampler(run).sample(3, seed=4, class_name="basophil"), expected, atol=1e-6)

OLD_RUN = Path(__file__).resolve().parent / "fixtures" / "old_runs" / "cvae"


def test_a_run_written_by_the_old_code_still_generates(tmp_path):
    """tests/fixtures/old_runs/cvae was written before the shared training loop (issue 15)."""
    from cellgen.cli.generate import main as generate

    out = tmp_path / "generated"
    assert generate(["--run", str(OLD_RUN), "--n", "2", "--out", str(out), "--quiet"]) == 0
    written = sorted(out.rglob("*.png"))
    assert len(written) == 2 and read_rgb(written[0]).shape == (16, 16, 3)
    np.testing.assert_array_equal(load_sampler(OLD_RUN, epoch=1).sample(2, seed=0),
                                  load_sampler(OLD_RUN).sample(2, seed=0))
