"""Vanilla-GAN training: train step, distribution, precision, run directory, resume, FreezeD, generation."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import cellgen.sampling as sampling
from cellgen.cli.generate import main as generate_main
from cellgen.cli.train_vanilla_gan import main as train_main
from cellgen.config import load_config
from cellgen.data_reader import DataReader
from cellgen.distribute import make_strategy
from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.networks import build_gan_networks
from cellgen.gan.sampling import load_gan_models
from cellgen.gan.vanilla import VanillaGAN, discriminator_loss, generator_loss, global_mean
from cellgen.images import read_rgb
from cellgen.runs import RunDir, RunError, read_json

# gan_fast shrunk further: the same code path as every preset, a few milliseconds per step.
FAST = ["--config", "gan_fast", "--set", "depth_g=32", "--set", "depth_d=8", "--batch-size", "16",
        "--set", "save_every=1", "--set", "sample_count=4", "--quiet"]
EPOCHS = 2


def tiny_config(**changes) -> VanillaGANConfig:
    return load_config(VanillaGANConfig, "gan_fast", {"depth_g": 32, "depth_d": 8, **changes})


def real_batch(data: Path, count: int = 16, size: int = 32) -> np.ndarray:
    reader = DataReader(data, image_size=size, batch_size=count, shuffle=False)
    return next(iter(reader.epoch(0)))[0]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    """The tiny PBC subset (128 px, 16 per class) when ../shared/data exists, else the packaged sample."""
    from cellgen.sample_data import sample_path

    tiny = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128-tiny"
    return tiny if tiny.is_dir() else sample_path("train")


@pytest.fixture(scope="module")
def base_run(tmp_path_factory, data_dir) -> Path:
    """A two-epoch run written by the training script (shared by the tests below; do not modify)."""
    out = tmp_path_factory.mktemp("gan") / "base"
    assert train_main(FAST + ["--data", str(data_dir), "--out", str(out), "--epochs", str(EPOCHS)]) == 0
    return out


def history_rows(run: Path) -> list[dict]:
    with open(run / "logs" / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


# Train step ------------------------------------------------------------------------------------


def test_losses_follow_the_formulas_with_label_smoothing():
    real, fake = tf.constant([[2.0], [-1.0]]), tf.constant([[0.5], [-3.0]])
    sigmoid = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731

    def bce(target, logit):
        return -(target * np.log(sigmoid(logit)) + (1 - target) * np.log(1 - sigmoid(logit)))

    expected = [bce(0.9, 2.0) + bce(0.1, 0.5), bce(0.9, -1.0) + bce(0.1, -3.0)]
    np.testing.assert_allclose(discriminator_loss(real, fake, 0.9, 0.1).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(generator_loss(fake).numpy(), [-np.log(sigmoid(0.5)), -np.log(sigmoid(-3.0))],
                               rtol=1e-5)


def test_losses_are_reduced_over_the_global_batch_under_cpu2():
    strategy = make_strategy("cpu:2")
    logits = np.random.default_rng(0).normal(size=(8, 1)).astype("float32")
    single_device = float(tf.reduce_mean(discriminator_loss(logits, -logits)))
    dataset = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices(logits).batch(8))
    per_replica = strategy.run(lambda batch: global_mean(discriminator_loss(batch, -batch)),
                               args=(next(iter(dataset)),))
    assert len(strategy.experimental_local_results(per_replica)) == 2
    # Summing the replicas' losses (what gradient all-reduce does) gives the full-batch mean.
    summed = float(strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None))
    assert summed == pytest.approx(single_device, rel=1e-6)


def test_update_ratios_and_the_discriminator_learns_on_a_real_batch(sample_data):
    config = tiny_config(d_steps=2, g_steps=3, d_learning_rate=1e-3, dropout=0.0)
    generator, discriminator = build_gan_networks(config)
    gan = VanillaGAN(generator, discriminator, config.latent_dim, d_steps=2, g_steps=3)
    gan.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
                d_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.5), run_eagerly=True)
    images = real_batch(sample_data)
    history = []
    for _ in range(6):
        gan.reset_metrics()
        history.append(gan.train_on_batch(images, return_dict=True))
    assert int(gan.d_optimizer.iterations.numpy()) == 12 and int(gan.g_optimizer.iterations.numpy()) == 18
    assert all(np.isfinite(list(logs.values())).all() for logs in history)
    # On a fixed batch of real cells the discriminator separates them from the early fakes
    # (d_loss starts at 2 log 2 = 1.386 and falls to about 0.8 in six steps).
    assert history[-1]["d_loss"] < history[0]["d_loss"] - 0.2
    assert history[-1]["d_real"] > history[-1]["d_fake"]


def test_one_step_under_the_cpu2_strategy(sample_data):
    config = tiny_config()
    strategy = make_strategy("cpu:2")
    with strategy.scope():
        generator, discriminator = build_gan_networks(config)
        gan = VanillaGAN(generator, discriminator, config.latent_dim)
        # Eager: the same train_step per replica, without tracing a mirrored graph (slow on 2 cores).
        gan.compile(g_optimizer=keras.optimizers.Adam(2e-4), d_optimizer=keras.optimizers.Adam(2e-4),
                    run_eagerly=True)
    assert gan.distribute_strategy.num_replicas_in_sync == 2
    before = generator.get_layer("g_up_0").get_weights()[0].copy()
    dataset = tf.data.Dataset.from_tensors(real_batch(sample_data, count=4)).repeat()
    history = gan.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert int(gan.g_optimizer.iterations.numpy()) == 1
    assert not np.array_equal(generator.get_layer("g_up_0").get_weights()[0], before)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_one_step_in_mixed_precision(precision, sample_data):
    from cellgen.precision import set_precision, wrap_optimizer

    set_precision(precision)
    config = tiny_config()
    generator, discriminator = build_gan_networks(config)
    gan = VanillaGAN(generator, discriminator, config.latent_dim)
    gan.compile(g_optimizer=wrap_optimizer(keras.optimizers.Adam(2e-4)),
                d_optimizer=wrap_optimizer(keras.optimizers.Adam(2e-4)), run_eagerly=True)
    if precision == "fp16":
        assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
    before = discriminator.get_layer("d_conv_0").get_weights()[0].copy()
    logs = gan.train_on_batch(real_batch(sample_data, count=4), return_dict=True)
    assert all(np.isfinite(value) for value in logs.values())
    assert generator.get_layer("g_up_0").compute_dtype == {"bf16": "bfloat16", "fp16": "float16"}[precision]
    assert not np.array_equal(discriminator.get_layer("d_conv_0").get_weights()[0], before)


# Training script and run directory ------------------------------------------------------------------


def test_run_directory_is_complete(base_run):
    run = RunDir.open(base_run)
    assert run.kind == "vanilla_gan" and run.is_complete
    config = run.load_config(VanillaGANConfig)
    assert (config.image_size, config.depth_g, config.epochs) == (32, 32, EPOCHS)
    assert len(run.classes) == 8
    for name in ("config.toml", "environment.json", "classes.json"):
        assert (base_run / name).is_file()
    rows = history_rows(base_run)
    assert len(rows) == EPOCHS
    for row in rows:
        for key in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert np.isfinite(float(row[key]))
        assert 0 < float(row["d_real"]) < 1 and 0 < float(row["d_fake"]) < 1
    assert list((base_run / "logs" / "tensorboard").rglob("events.out.tfevents.*"))
    for epoch in range(EPOCHS + 1):
        grid = read_rgb(base_run / "samples" / f"epoch-{epoch:04d}.png")
        assert grid.ndim == 3 and grid.shape[2] == 3
    for epoch in range(1, EPOCHS + 1):
        assert (base_run / "models" / f"generator-epoch-{epoch:04d}.keras").is_file()
        assert (base_run / "models" / f"discriminator-epoch-{epoch:04d}.keras").is_file()
        assert (base_run / "checkpoints" / f"epoch-{epoch:04d}" / "state.json").is_file()
    assert read_rgb(base_run / "metrics" / "loss_curves.png").shape[2] == 3
    metrics = read_json(base_run / "metrics" / "train.json")
    steps = metrics["steps_per_epoch"]
    assert metrics["optimizer_iterations"] == {"generator": EPOCHS * steps, "discriminator": EPOCHS * steps}
    assert metrics["saved_epochs"] == list(range(1, EPOCHS + 1))
    assert set(metrics["final"]) == {"d_loss", "g_loss", "d_real", "d_fake"}


def test_load_gan_models_for_later_stages(base_run):
    generator, discriminator, config = load_gan_models(base_run, epoch=1)
    assert (config.latent_dim, config.image_size) == (100, 32)
    saved, _, _ = load_gan_models(base_run, epoch=1, rebuild=False)
    latents = np.random.default_rng(0).normal(size=(2, 100)).astype("float32")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(generator(latents, training=False)),
                                  keras.ops.convert_to_numpy(saved(latents, training=False)))
    assert discriminator.output_shape == (None, 1) and all(layer.trainable for layer in discriminator.layers)
    with pytest.raises(RunError, match="saved epochs: 1, 2"):
        load_gan_models(base_run, epoch=9)


def test_sampler_and_generate_script(base_run, tmp_path, capsys):
    sampler = sampling.load_sampler(base_run)
    assert (sampler.kind, sampler.image_size, sampler.classes, sampler.epoch) == ("vanilla_gan", 32, None, EPOCHS)
    images = sampler.sample(3, seed=4, batch_size=2)
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert -1 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, sampler.sample(3, seed=4, batch_size=2))
    np.testing.assert_allclose(images, sampler.sample(3, seed=4), atol=1e-5)
    assert not np.array_equal(images, sampling.load_sampler(base_run, epoch=1).sample(3, seed=4))
    files = sampling.write_samples(sampler, 5, tmp_path / "synthetic", seed=1, batch_size=2, progress=False)
    assert len(files) == 5 and read_rgb(files[0]).shape == (32, 32, 3) and read_rgb(files[0]).dtype == np.uint8
    with pytest.raises(RunError, match="do not apply"):
        sampling.load_sampler(base_run, steps=20)
    with pytest.raises(RunError, match="unconditional"):
        sampler.sample(1, seed=0, class_name="basophil")

    assert generate_main(["--run", str(base_run), "--epoch", "1", "--n", "3", "--out", str(tmp_path / "cli"),
                          "--quiet"]) == 0
    assert len(list((tmp_path / "cli").glob("*.png"))) == 3
    assert generate_main(["--run", str(base_run), "--epoch", "5", "--n", "3", "--out", str(tmp_path / "x")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "epoch 5" in error and len(error.splitlines()) == 1


def interrupt_after_first_epoch(run: Path, out: Path) -> None:
    """Copies a finished two-epoch run as it was when killed during epoch 2."""
    shutil.copytree(run, out)
    for name in ("COMPLETE.json", "metrics/train.json", "metrics/loss_curves.png", "samples/epoch-0002.png",
                 "models/generator-epoch-0002.keras", "models/discriminator-epoch-0002.keras"):
        (out / name).unlink()
    shutil.rmtree(out / "checkpoints" / "epoch-0002")
    lines = (out / "logs" / "history.csv").read_text().splitlines(keepends=True)
    (out / "logs" / "history.csv").write_text("".join(lines[:2]))


def test_resume_continues_like_an_uninterrupted_run(base_run, tmp_path):
    assert EPOCHS == 2
    out = tmp_path / "resumed"
    interrupt_after_first_epoch(base_run, out)
    first_model = out / "models" / "generator-epoch-0001.keras"
    first_state = out / "checkpoints" / "epoch-0001" / "state.json"
    stamps = (first_model.stat().st_mtime_ns, first_state.stat().st_mtime_ns)
    assert train_main(["--out", str(out), "--resume", "--quiet"]) == 0
    assert (first_model.stat().st_mtime_ns, first_state.stat().st_mtime_ns) == stamps
    resumed, uninterrupted = read_json(out / "metrics" / "train.json"), read_json(base_run / "metrics" / "train.json")
    assert resumed["optimizer_iterations"] == uninterrupted["optimizer_iterations"]
    assert len(history_rows(out)) == EPOCHS and (out / "samples" / "epoch-0002.png").is_file()
    assert (out / "checkpoints" / "epoch-0002" / "state.json").is_file()
    # Data order, latent noise, dropout seeds and optimizer state all continue from the checkpoint.
    resumed_g, resumed_d, _ = load_gan_models(out, rebuild=False)
    base_g, base_d, _ = load_gan_models(base_run, rebuild=False)
    for ours, theirs in zip(resumed_g.get_weights() + resumed_d.get_weights(),
                            base_g.get_weights() + base_d.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    # A finished run says so instead of training again.
    assert train_main(["--out", str(out), "--resume", "--quiet"]) == 0


def test_freezed_finetuning_on_one_class(base_run, tmp_path):
    out = tmp_path / "basophil"
    assert train_main(["--finetune-from", f"{base_run}/1", "--class", "basophil", "--out", str(out), "--epochs", "1",
                       "--batch-size", "8", "--set", "freeze_d_layers=2", "--set", "freeze_d_side=output",
                       "--set", "freeze_g_batchnorm=true", "--set", "g_learning_rate=1e-3", "--quiet"]) == 0
    run = RunDir.open(out)
    config = run.load_config(VanillaGANConfig)
    assert (config.finetune_from, config.finetune_epoch, config.class_name) == (str(base_run), 1, "basophil")
    assert config.depth_g == 32 and config.image_size == 32  # the base run's architecture
    assert run.classes == ["basophil"]
    record = read_json(out / "metrics" / "freezed.json")
    assert record["frozen_discriminator_layers"] == ["d_conv_1", "d_conv_2"]

    base_g, base_d, _ = load_gan_models(base_run, epoch=1, rebuild=False)
    tuned_g, tuned_d, _ = load_gan_models(out, rebuild=False)

    def same(name, base, tuned):
        return all(np.array_equal(a, b) for a, b in zip(base.get_layer(name).get_weights(),
                                                          tuned.get_layer(name).get_weights()))

    assert same("d_conv_1", base_d, tuned_d) and same("d_conv_2", base_d, tuned_d)
    assert not same("d_conv_0", base_d, tuned_d) and not same("d_realness", base_d, tuned_d)
    batch_norms = [layer.name for layer in base_g.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert batch_norms and all(same(name, base_g, tuned_g) for name in batch_norms)  # gamma, beta, moving stats
    assert not same("g_up_0", base_g, tuned_g) and not same("g_project", base_g, tuned_g)

    sampler = sampling.load_sampler(out)
    assert sampler.classes == ["basophil"]
    assert sampler.sample(2, seed=0, class_name="basophil").shape == (2, 32, 32, 3)


def test_freezed_finetuning_with_diffaugment_on_a_class_smaller_than_the_batch(base_run, data_dir, tmp_path):
    """Issue 19 item 3: 16 basophils and batch 32 train on one batch of all 16 per step, and the log says so."""
    small = tmp_path / "small" / "basophil"
    small.mkdir(parents=True)
    for path in sorted((data_dir / "basophil").iterdir())[:16]:
        shutil.copy2(path, small / path.name)
    out = tmp_path / "basophil"
    assert train_main(["--config", "nz2023_gan_finetune", "--finetune-from", str(base_run), "--class", "basophil",
                       "--data", str(small.parent), "--out", str(out), "--epochs", "2", "--batch-size", "32",
                       "--set", "sample_count=4", "--set", "augment=color,translation,cutout", "--quiet"]) == 0
    log = (out / "logs" / "run.log").read_text()
    assert "16 training images are fewer than batch_size=32" in log
    metrics = read_json(out / "metrics" / "train.json")
    assert (metrics["training_images"], metrics["steps_per_epoch"]) == (16, 1)
    assert metrics["optimizer_iterations"] == {"generator": 2, "discriminator": 4}  # nz2023: 2 D updates per step
    assert metrics["augment"] == ["color", "translation", "cutout"]
    assert all(np.isfinite(float(row["d_loss"])) for row in history_rows(out))
    assert sampling.load_sampler(out).sample(2, seed=0, class_name="basophil").shape == (2, 32, 32, 3)


@pytest.mark.parametrize("name", ["gan", "acgan"])
def test_runs_written_by_the_old_code_still_generate(name, tmp_path):
    """tests/fixtures/old_runs (written before the shared training loop) generate with generate.py."""
    from tests.golden_runs import OLD_RUNS

    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)
    assert generate_main(["--run", str(run), "--n", "2", "--out", str(tmp_path / "images"), "--quiet"]) == 0
    files = sorted((tmp_path / "images").rglob("*.png"))
    assert len(files) == 2 and read_rgb(files[0]).shape == (16, 16, 3)


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(base_run, tmp_path, capsys):
    out = tmp_path / "diverging"
    shutil.copytree(base_run, out)
    code = train_main(["--out", str(out), "--resume", "--epochs", str(EPOCHS + 1), "--set", "d_learning_rate=1e35",
                       "--set", "g_learning_rate=1e35", "--quiet"])
    assert code == 3
    error = capsys.readouterr().err
    assert "training stopped" in error and f"epoch-{EPOCHS:04d}" in error
    assert not (out / "checkpoints" / f"epoch-{EPOCHS + 1:04d}").exists()
    assert not (out / "models" / f"generator-epoch-{EPOCHS + 1:04d}.keras").exists()
    assert "stopped:" in (out / "logs" / "run.log").read_text()


# Bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("arguments, message", [
    (["--data", "{tmp}/missing"], "missing"),
    (["--data", "{data}", "--set", "depth=3"], "unknown config key 'depth'"),
    (["--data", "{data}", "--class", "dragon"], "dragon"),
    (["--data", "{data}", "--set", "augment=color,rotation"], "valid: color, translation, cutout"),
    (["--data", "{data}", "--size", "48"], "power of two"),
    (["--finetune-from", "{tmp}/nothing"], "--finetune-from"),
    (["--data", "{data}", "--config", "nz2023_gan_finetune"], "only apply when fine-tuning"),
    (["--finetune-from", "{base}", "--size", "64"], "image_size=64 differs from the base run"),
])
def test_bad_input_gives_one_line_errors(arguments, message, base_run, data_dir, tmp_path, capsys):
    arguments = [part.format(tmp=tmp_path, data=data_dir, base=base_run) for part in arguments]
    assert train_main(["--config", "gan_fast", "--out", str(tmp_path / "run")] + arguments) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and message in error and len(error.splitlines()) == 1, error


def test_resume_refuses_architecture_changes(base_run, tmp_path, capsys):
    out = tmp_path / "copy"
    shutil.copytree(base_run, out)
    assert train_main(["--out", str(out), "--resume", "--set", "depth_g=64"]) == 2
    assert "--resume cannot change depth_g" in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["depth_g"] == 32
