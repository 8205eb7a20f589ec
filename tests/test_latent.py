"""Image-to-latent encoder and latent-space experiments (K&C 2020, sections 4.6 and 5.3)."""

from __future__ import annotations

import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from cellgen.cli.explore_latent import main as explore_main
from cellgen.cli.train_latent_encoder import main as encoder_main
from cellgen.cli.train_vanilla_gan import main as gan_main
from cellgen.config import load_config
from cellgen.data_reader import DataReader
from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.networks import build_discriminator, build_gan_networks, discriminator_conv_layers
from cellgen.gan.vanilla import generate_images
from cellgen.images import read_rgb
from cellgen.latent import (LatentEncoderConfig, LatentEncoderTrainer, build_encoder, interpolate_latents,
                            load_encoder, load_encoder_run, perturb_latents, reconstruct)
from cellgen.runs import RunError, read_json, write_json

OLD_RUNS = Path(__file__).resolve().parent / "fixtures" / "old_runs"

BACKBONE = ["--config", "gan_fast", "--set", "depth_g=32", "--set", "depth_d=8", "--batch-size", "32",
            "--set", "sample_count=4", "--epochs", "1", "--quiet"]


def tiny_gan_config() -> VanillaGANConfig:
    return load_config(VanillaGANConfig, "gan_fast", {"depth_g": 32, "depth_d": 8})


@pytest.fixture(scope="module")
def data_dir() -> Path:
    from cellgen.sample_data import sample_path

    return sample_path("train")


@pytest.fixture(scope="module")
def images(data_dir) -> np.ndarray:
    reader = DataReader(data_dir, image_size=32, batch_size=8, shuffle=True, seed=2)
    return next(iter(reader.epoch(0)))[0]


@pytest.fixture(scope="module")
def networks():
    """A fresh encoder and a random generator whose output depends on z: Glorot weights and batch-norm
    moving statistics matched to its own activations (a fresh one's unit variances flatten every image)."""
    keras.utils.set_random_seed(0)
    config = tiny_gan_config().replace(init_std=0.0)
    generator, _ = build_gan_networks(config)
    for seed in range(30):
        generator(np.random.default_rng(seed).standard_normal((64, 100)).astype(np.float32), training=True)
    generator.trainable = False
    return build_encoder(config), generator


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory, data_dir) -> Path:
    """A one-epoch Vanilla-GAN and a one-epoch encoder on it, written by the scripts (do not modify)."""
    root = tmp_path_factory.mktemp("latent")
    assert gan_main(BACKBONE + ["--data", str(data_dir), "--out", str(root / "gan")]) == 0
    assert encoder_main(["--generator", str(root / "gan"), "--data", str(data_dir), "--out", str(root / "encoder"),
                         "--epochs", "1", "--batch-size", "32", "--set", "learning_rate=1e-4",
                         "--set", "sample_count=4", "--quiet"]) == 0
    return root / "encoder"


def test_encoder_is_shaped_like_the_discriminator():
    config = tiny_gan_config()
    encoder, discriminator = build_encoder(config), build_discriminator(config)
    assert encoder.output_shape == (None, config.latent_dim)
    assert encoder.get_layer("e_latent").dtype_policy.compute_dtype == "float32"
    assert [(layer.filters, layer.kernel_size, layer.strides) for layer in discriminator_conv_layers(encoder)] == \
        [(layer.filters, layer.kernel_size, layer.strides) for layer in discriminator_conv_layers(discriminator)]
    assert build_encoder(config, depth=4).get_layer("d_conv_1").filters == 8


def test_l1_loss_decreases_and_generator_stays_frozen(networks, images):
    import tensorflow as tf

    _, generator = networks
    generator_before = [np.array(v.numpy()) for v in generator.weights]
    # Images the generator can reach (G(z*)), where E must learn to invert G, and real images.
    reachable = generate_images(generator, np.random.default_rng(99).standard_normal((8, 100)).astype(np.float32))
    for batch, required_ratio in ((reachable, 0.85), (images, 1.0)):
        keras.utils.set_random_seed(1)
        encoder = build_encoder(tiny_gan_config().replace(init_std=0.0))
        _, reconstructed = reconstruct(encoder, generator, batch)
        start = float(np.mean(np.abs(batch - reconstructed)))
        trainer = LatentEncoderTrainer(encoder, generator)
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = trainer.fit(tf.data.Dataset.from_tensors(batch).repeat(), steps_per_epoch=20, verbose=0).history
        _, reconstructed = reconstruct(encoder, generator, batch)
        end = float(np.mean(np.abs(batch - reconstructed)))
        assert end < required_ratio * start, (start, end)
        assert np.isfinite(history["l1_loss"][-1])
    assert not generator.trainable and not generator.trainable_variables
    for before, now in zip(generator_before, generator.weights):
        assert np.array_equal(before, now.numpy())


def test_interpolation_endpoints_are_the_generated_images(networks):
    _, generator = networks
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal(100).astype(np.float32), rng.standard_normal(100).astype(np.float32)
    latents = interpolate_latents(z1, z2, steps=8)
    assert latents.shape == (9, 100)
    np.testing.assert_array_equal(latents[0], z1)
    np.testing.assert_array_equal(latents[-1], z2)
    np.testing.assert_allclose(latents[4], (z1 + z2) / 2, atol=1e-6)
    strip = generate_images(generator, latents)
    np.testing.assert_allclose(strip[0], generate_images(generator, z1[None])[0], atol=1e-5)
    np.testing.assert_allclose(strip[-1], generate_images(generator, z2[None])[0], atol=1e-5)
    with pytest.raises(ValueError, match="steps"):
        interpolate_latents(z1, z2, 0)


def test_perturbation_with_sigma_zero_is_the_reconstruction(networks, images):
    encoder, generator = networks
    latents, reconstructions = reconstruct(encoder, generator, images[:2])
    perturbed = perturb_latents(latents[0], count=3, variance=0.0)
    np.testing.assert_array_equal(perturbed, np.repeat(latents[:1], 3, axis=0))
    np.testing.assert_allclose(generate_images(generator, perturbed), np.repeat(reconstructions[:1], 3, axis=0),
                               atol=1e-5)
    # sigma^2 = 0.04 (K&C): the noise has standard deviation 0.2.
    noise = perturb_latents(np.zeros(100), count=400, variance=0.04, seed=1)
    assert abs(noise.std() - 0.2) < 0.005 and abs(noise.mean()) < 0.005


def test_script_run_resume_and_explore(encoder_run, data_dir, tmp_path, capsys):
    run = encoder_run
    config = read_json(run / "config.json")
    assert config["kind"] == "latent_encoder" and config["image_size"] == 32 and config["generator_epoch"] == 1
    for name in ("samples/epoch-0000.png", "samples/epoch-0001.png", "models/encoder-epoch-0001.keras",
                 "checkpoints/epoch-0001/state.json", "metrics/train.json", "metrics/loss_curves.png",
                 "classes.json"):
        assert (run / name).is_file(), name
    encoder, generator, _ = load_encoder_run(run)
    assert encoder.output_shape == (None, 100) and not generator.trainable

    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    assert encoder_main(["--out", str(resumed), "--resume", "--epochs", "2", "--quiet"]) == 0
    assert len((resumed / "logs" / "history.csv").read_text().splitlines()) == 3
    assert read_json(resumed / "checkpoints" / "epoch-0002" / "state.json")["epoch"] == 2

    files = sorted(str(path) for path in (data_dir / "basophil").iterdir())[:2]
    out = tmp_path / "explore"
    assert explore_main(["reconstruct", "--encoder", str(run), "--images", *files, "--out", str(out / "pairs.png"),
                         "--save-images", str(out / "pairs")]) == 0
    assert len(list((out / "pairs").glob("*.png"))) == 4 and (out / "pairs.png").is_file()
    assert explore_main(["reconstruct", "--encoder", str(run), "--data", str(data_dir), "--n", "3",
                         "--out", str(out / "pairs3.png")]) == 0
    assert explore_main(["interpolate", "--encoder", str(run), "--images", *files, "--steps", "4",
                         "--out", str(out / "strip.png"), "--save-images", str(out / "strip")]) == 0
    assert len(list((out / "strip").glob("step_*.png"))) == 5
    strip = read_rgb(out / "strip.png")
    # One row: 4 steps + 1 = 5 interpolated images between the 2 real ones, 32 px shown at 64 px.
    assert strip.shape[1] >= 7 * 64 and strip.shape[1] > 3 * strip.shape[0]
    assert explore_main(["interpolate", "--generator", str(run.parent / "gan"), "--seeds", "1", "2",
                         "--steps", "3", "--out", str(out / "seeds.png")]) == 0
    assert explore_main(["perturb", "--encoder", str(run), "--images", files[0], "--count", "3",
                         "--out", str(out / "perturb.png"), "--save-images", str(out / "perturb")]) == 0
    assert len(list((out / "perturb").glob("*.png"))) == 5  # real, reconstruction, 3 perturbations
    capsys.readouterr()

    # Bad input: one-line errors naming the file or option.
    assert explore_main(["perturb", "--encoder", str(run), "--images", str(tmp_path / "nope.jpg"),
                         "--out", str(out / "x.png")]) == 2
    error = capsys.readouterr().err.strip()
    assert "nope.jpg" in error and "\n" not in error
    assert explore_main(["interpolate", "--generator", str(run.parent / "gan"), "--images", *files,
                         "--out", str(out / "x.png")]) == 2
    assert "--encoder" in capsys.readouterr().err
    assert encoder_main(["--generator", str(run.parent / "gan"), "--data", str(data_dir), "--out",
                         str(tmp_path / "bad"), "--size", "64"]) == 2
    error = capsys.readouterr().err.strip()
    assert "image_size" in error and "gan" in error and "\n" not in error


def test_default_config_builds_and_takes_one_step():
    """The K&C defaults (lr 1e-5, on the kc2020 Vanilla-GAN at 256 px) build and take one step."""
    import tensorflow as tf

    config = LatentEncoderConfig()
    assert config.learning_rate == 1e-5 and config.image_size == 256
    gan_config = load_config(VanillaGANConfig, "kc2020_vanilla_gan")
    generator, _ = build_gan_networks(gan_config)
    encoder = build_encoder(gan_config, depth=config.depth, dropout=config.dropout)
    trainer = LatentEncoderTrainer(encoder, generator)
    trainer.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    images = np.random.default_rng(0).uniform(-1, 1, (2, 256, 256, 3)).astype(np.float32)
    before = encoder.get_layer("e_latent").kernel.numpy().copy()
    logs = trainer.fit(tf.data.Dataset.from_tensors(images).repeat(), steps_per_epoch=1, verbose=0).history
    assert np.isfinite(logs["l1_loss"][-1])
    assert not np.array_equal(before, encoder.get_layer("e_latent").kernel.numpy())


def test_an_encoder_run_written_by_the_old_code_loads(data_dir, tmp_path):
    """tests/fixtures/old_runs/encoder was written before the shared training loop; its generator run is gone."""
    encoder, config = load_encoder(OLD_RUNS / "encoder")
    assert config.image_size == 16 and config.generator_epoch == 1
    real = next(iter(DataReader(data_dir, image_size=16, batch_size=4, shuffle=False).epoch(0)))[0]
    latents = keras.ops.convert_to_numpy(encoder(real, training=False))
    assert latents.shape == (4, 100) and np.all(np.isfinite(latents))
    with pytest.raises(RunError, match="generator it was trained with"):
        load_encoder_run(OLD_RUNS / "encoder")
    # Pointed at a generator run of the old code, it reconstructs.
    run = tmp_path / "encoder"
    shutil.copytree(OLD_RUNS / "encoder", run)
    write_json(run / "config.json", {**read_json(run / "config.json"), "generator": str(OLD_RUNS / "gan")})
    encoder, generator, _ = load_encoder_run(run)
    latents, reconstructed = reconstruct(encoder, generator, real)
    assert latents.shape == (4, 100) and reconstructed.shape == real.shape
    assert np.all(np.abs(reconstructed) <= 1)
