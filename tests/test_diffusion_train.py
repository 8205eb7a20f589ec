"""train_ddim.py end to end: run directory, loss, sampler/generate.py, resume, fine-tuning, NaN, bad input.

One base run (3 epochs at 16 px, graph mode, validation with KID) is shared by the tests;
the resumed, fine-tuned and NaN runs set ``run_eagerly`` to skip a second graph trace
(the training step is the same code).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cellgen.cli.train_ddim import main
from cellgen.runs import RunDir, RunError, TrainingState, read_history, read_json

# The resumed and diverging copies skip validation and KID (tested by the base run).
NO_VALIDATION = ["--set", "val_data=", "--set", "kid_encoder=none", "--set", "run_eagerly=true", "--quiet"]
TINY = ["--size", "16", "--batch-size", "16", "--precision", "fp32", "--set", "depth=2", "--set", "base_width=8",
        "--set", "block_kind=r2", "--set", "block_depth=1",
        "--set", "grid_size=4", "--set", "diffusion_steps=3", "--set", "normalizer_batches=2",
        "--set", "learning_rate=5e-3", "--set", "sample_every=1", "--quiet"]


@pytest.fixture(scope="module")
def pbc_train() -> Path:
    """The 128-image tiny PBC subset when ../shared/data is there, else the embedded sample."""
    from cellgen.sample_data import sample_path

    tiny = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128-tiny"
    return tiny if tiny.is_dir() else sample_path("train")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, pbc_train) -> Path:
    from cellgen.sample_data import sample_path

    out = tmp_path_factory.mktemp("ddim") / "base"
    code = main(["--config", "ddim_fast", "--data", str(pbc_train), "--out", str(out), "--epochs", "3", *TINY,
                 "--set", "save_every=2", "--set", f"val_data={sample_path('val')}",
                 "--set", "kid_encoder=inception", "--set", "kid_weights=none", "--set", "kid_images=8",
                 "--set", "kid_diffusion_steps=2"])
    assert code == 0
    return out


def test_run_directory_is_complete(base_run, pbc_train):
    run = RunDir.open(base_run)
    assert run.kind == "ddim" and run.is_complete
    assert run.classes == sorted(path.name for path in pbc_train.iterdir() if path.is_dir())
    assert (base_run / "config.toml").is_file() and (base_run / "environment.json").is_file()
    assert [path.name for path in TrainingState(run.checkpoints).checkpoint_paths()] == ["epoch-0002", "epoch-0003"]
    assert sorted(path.name for path in run.models.iterdir()) == ["diffusion-epoch-0002.keras",
                                                                  "diffusion-epoch-0003.keras"]
    assert sorted(path.name for path in run.samples.iterdir()) == [f"epoch-000{i}.png" for i in (1, 2, 3)]
    assert (run.logs / "tensorboard").is_dir() and (run.metrics / "loss_curves.png").is_file()
    history = read_history(run.logs / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0]
    for key in ("noise_loss", "image_loss", "val_noise_loss", "val_kid"):
        assert len(history[key]) == 3 and np.isfinite(history[key]).all(), key
    metrics = read_json(run.metrics / "train.json")
    assert metrics["epochs"] == 3 and metrics["optimizer_iterations"] == 3 * metrics["steps_per_epoch"]
    normalizer = read_json(run.metrics / "normalizer.json")
    assert all(0.05 < std < 1.0 for std in normalizer["std"])


def test_short_training_lowers_the_noise_loss(base_run):
    history = read_history(base_run / "logs" / "history.csv")
    # An untrained network predicts zero noise: MAE = E|N(0, 1)| = 0.80.
    assert history["noise_loss"][0] < 0.8
    assert history["noise_loss"][-1] < 0.9 * history["noise_loss"][0]


def test_sampler_and_write_samples(base_run, tmp_path):
    from cellgen.images import read_rgb
    from cellgen.sampling import load_sampler, write_samples

    sampler = load_sampler(base_run, steps=2)
    assert sampler.kind == "ddim" and sampler.image_size == 16 and sampler.classes is None
    assert sampler.epoch == 3 and sampler.method == "ddim"
    files = write_samples(sampler, 5, tmp_path / "out", seed=2, batch_size=2, progress=False)
    assert len(files) == 5 and read_rgb(files[0]).shape == (16, 16, 3)
    images = sampler.sample(3, seed=7)
    np.testing.assert_array_equal(images, sampler.sample(3, seed=7))
    contrasted = load_sampler(base_run, steps=2, contrast=20.0, epoch=2).sample(3, seed=7)
    assert contrasted.shape == (3, 16, 16, 3) and np.abs(contrasted - images).max() > 1e-3
    with pytest.raises(RunError, match="unconditional"):
        sampler.sample(1, seed=0, class_name="basophil")
    with pytest.raises(RunError, match="saved epochs: 2, 3"):
        load_sampler(base_run, epoch=1)
    with pytest.raises(RunError, match="--class-name"):
        load_sampler(base_run, class_name="x")


def test_generate_cli(base_run, tmp_path, capsys):
    from cellgen.cli.generate import main as generate

    out = tmp_path / "generated"
    assert generate(["--run", str(base_run), "--n", "3", "--steps", "2", "--eta", "1", "--contrast", "20",
                     "--out", str(out), "--quiet"]) == 0
    assert len(list(out.glob("*.png"))) == 3
    assert generate(["--run", str(base_run), "--n", "1", "--steps", "0", "--out", str(out)]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err


def test_resume_continues_from_the_checkpoint(base_run, tmp_path):
    run_path = tmp_path / "resumed"
    shutil.copytree(base_run, run_path)
    before = read_json(run_path / "metrics" / "train.json")
    assert main(["--out", str(run_path), "--resume", "--epochs", "4", *NO_VALIDATION]) == 0
    history = read_history(run_path / "logs" / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0]
    metrics = read_json(run_path / "metrics" / "train.json")
    assert metrics["optimizer_iterations"] == before["optimizer_iterations"] + metrics["steps_per_epoch"]
    assert (run_path / "models" / "diffusion-epoch-0004.keras").is_file()
    assert "resumed from" in (run_path / "logs" / "run.log").read_text()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(base_run, tmp_path, capsys):
    run_path = tmp_path / "diverged"
    shutil.copytree(base_run, run_path)
    code = main(["--out", str(run_path), "--resume", "--epochs", "5", "--set", "learning_rate=1e30",
                 *NO_VALIDATION])
    assert code == 3
    error = capsys.readouterr().err
    assert "training stopped" in error and "epoch-0003" in error
    assert TrainingState(run_path / "checkpoints").latest().name == "epoch-0003"
    assert not (run_path / "models" / "diffusion-epoch-0004.keras").exists()


def test_finetune_starts_from_exact_base_weights_and_trains_one_class(base_run, tmp_path, pbc_train):
    from cellgen.diffusion.sampling import load_diffusion_model
    from cellgen.diffusion.train_lib import build_model, resolve_config
    from cellgen.cli.train_ddim import build_parser
    from cellgen.sampling import load_sampler

    out = tmp_path / "basophil"
    argv = ["--config", "nz2023_ddim_finetune", "--finetune-from", str(base_run), "--class", "basophil",
            "--out", str(out), "--epochs", "1", "--batch-size", "8", "--set", "run_eagerly=true", "--quiet"]
    from cellgen.cli.options import request_from_args

    config = resolve_config(request_from_args(build_parser().parse_args(argv)))
    # The preset's 192 px R2U-Net gives way to the base run's architecture; Table 8's schedule stays.
    assert (config.image_size, config.depth, config.base_width) == (16, 2, 8)
    assert config.min_signal_rate == 0.008 and config.data == str(pbc_train) and config.finetune_epoch == 3
    model, _ = build_model(config)
    base, _ = load_diffusion_model(base_run)
    for ours, theirs in zip(model.get_weights(), base.get_weights()):
        np.testing.assert_array_equal(ours, theirs)

    assert main(argv) == 0
    run = RunDir.open(out)
    assert run.classes == ["basophil"]
    assert (run.samples / "epoch-0000.png").is_file()  # the base model's samples, before fine-tuning
    metrics = read_json(run.metrics / "train.json")
    assert metrics["training_images"] == len(list((pbc_train / "basophil").iterdir()))
    sampler = load_sampler(out, steps=2)
    assert sampler.classes == ["basophil"]
    assert sampler.sample(2, seed=0, class_name="basophil").shape == (2, 16, 16, 3)
    # Fine-tuning changed the weights it started from.
    tuned, _ = load_diffusion_model(out)
    assert max(float(np.abs(a - b).max()) for a, b in zip(tuned.network.get_weights(), base.network.get_weights())) > 0


@pytest.mark.parametrize("argv, message", [
    (["--config", "ddim_fast", "--data", "/nonexistent/cells", "--out", "{tmp}/r"], "/nonexistent/cells"),
    (["--config", "ddim_fast", "--data", "{data}", "--out", "{tmp}/r", "--set", "blocks=3"], "unknown config key"),
    (["--config", "ddim_fast", "--data", "{data}", "--out", "{tmp}/r", "--set", "schedule=exp"], "schedule"),
    (["--config", "ddim_fast", "--data", "{data}", "--out", "{tmp}/r", "--set", "kid_encoder=inception"],
     "val_data"),
    (["--config", "ddim_fast", "--finetune-from", "{tmp}", "--out", "{tmp}/r"], "--finetune-from"),
    (["--config", "ddim_fast", "--data", "{data}", "--out", "{tmp}/r", "--class", "dragon"], "dragon"),
    (["--config", "missing_preset", "--data", "{data}", "--out", "{tmp}/r"], "missing_preset"),
])
def test_bad_input_gives_one_line_error(argv, message, tmp_path, capsys, pbc_train):
    argv = [item.format(tmp=tmp_path, data=pbc_train) for item in argv]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error
