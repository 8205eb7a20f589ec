"""DiffAugment and ADA (issue 19): the operations, the GAN steps that use them, and resuming with ADA."""

from __future__ import annotations

import csv
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.cli.train_vanilla_gan import main as train_main
from cellgen.config import ConfigError, load_config
from cellgen.distribute import make_strategy
from cellgen.gan.config import AUGMENT_POLICIES, VanillaGANConfig
from cellgen.gan.diffaugment import AdaptiveStrength, diff_augment, rand_cutout, rand_translation
from cellgen.gan.networks import build_gan_networks
from cellgen.gan.sampling import load_gan_models
from cellgen.gan.vanilla import VanillaGAN
from cellgen.runs import read_json

SEED = tf.constant([7, 11], tf.int64)


def images(count: int = 4, size: int = 16, seed: int = 0) -> np.ndarray:
    """Images in [-1, 1] with no exact zeros (so cut-out pixels are recognisable)."""
    values = np.random.default_rng(seed).uniform(0.05, 1.0, (count, size, size, 3))
    signs = np.where(np.random.default_rng(seed + 1).random((count, size, size, 3)) < 0.5, -1.0, 1.0)
    return (values * signs).astype(np.float32)


def tiny_config(**changes) -> VanillaGANConfig:
    return load_config(VanillaGANConfig, "gan_fast", {"depth_g": 32, "depth_d": 8, **changes})


# The operations --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", [[name] for name in AUGMENT_POLICIES] + [list(AUGMENT_POLICIES)])
def test_augmentation_is_differentiable(policy):
    x = tf.Variable(images())
    weights = tf.constant(np.random.default_rng(3).normal(size=x.shape).astype(np.float32))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(diff_augment(x, policy, SEED) * weights)
    gradient = tape.gradient(loss, x)
    assert gradient is not None
    assert np.count_nonzero(gradient.numpy()) > 0.3 * gradient.numpy().size


def test_shape_dtype_and_range_are_kept():
    x = images(6, 32)
    for policy in ([], ["translation"], ["cutout"], ["translation", "cutout"]):
        y = diff_augment(tf.constant(x), policy, SEED).numpy()
        assert y.shape == x.shape and y.dtype == np.float32
        assert y.min() >= min(x.min(), 0) and y.max() <= max(x.max(), 0)  # moved or zeroed, never new values
    # color: brightness shifts an image's mean by at most 0.5; saturation and contrast keep it.
    y = diff_augment(tf.constant(x), ["color"], SEED).numpy()
    assert y.shape == x.shape and np.all(np.isfinite(y))
    shift = y.mean(axis=(1, 2, 3)) - x.mean(axis=(1, 2, 3))
    assert np.all(np.abs(shift) <= 0.5 + 1e-5) and np.ptp(shift) > 0  # per image, and different per image
    bf16 = diff_augment(tf.constant(x, tf.bfloat16), list(AUGMENT_POLICIES), SEED)
    assert bf16.dtype == tf.bfloat16 and bf16.shape == x.shape


def test_translation_shifts_each_image_by_at_most_an_eighth():
    x = images(8, 32)
    y = rand_translation(tf.constant(x), SEED).numpy()
    shifts = []
    for original, moved in zip(x, y):
        found = None
        for dy in range(-4, 5):
            for dx in range(-4, 5):
                expected = np.zeros_like(original)
                source = original[max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)]
                expected[max(-dy, 0):max(-dy, 0) + source.shape[0], max(-dx, 0):max(-dx, 0) + source.shape[1]] = source
                if np.array_equal(expected, moved):
                    found = (dy, dx)
        assert found is not None
        shifts.append(found)
    assert len(set(shifts)) > 1


def test_cutout_zeroes_one_square_of_half_the_side_at_most():
    x = images(8, 16)
    y = rand_cutout(tf.constant(x), SEED).numpy()
    for original, cut in zip(x, y):
        zeroed = np.all(cut == 0, axis=-1)
        assert 0 < zeroed.sum() <= 8 * 8
        rows, columns = np.nonzero(zeroed)
        assert rows.max() - rows.min() < 8 and columns.max() - columns.min() < 8
        assert zeroed.sum() == (rows.max() - rows.min() + 1) * (columns.max() - columns.min() + 1)  # a rectangle
        np.testing.assert_array_equal(cut[~zeroed], original[~zeroed])


def test_empty_policy_is_the_identity_and_seeds_decide():
    x = tf.constant(images())
    assert diff_augment(x, [], SEED) is x
    everything = list(AUGMENT_POLICIES)
    first = diff_augment(x, everything, SEED).numpy()
    np.testing.assert_array_equal(first, diff_augment(x, everything, SEED).numpy())
    np.testing.assert_array_equal(first, diff_augment(x, ["cutout", "translation", "color"], SEED).numpy())
    assert not np.array_equal(first, diff_augment(x, everything, tf.constant([7, 12], tf.int64)).numpy())
    # A probability of 0 (ADA's start) leaves every image alone; 1 is plain DiffAugment.
    np.testing.assert_array_equal(diff_augment(x, everything, SEED, probability=0.0).numpy(), x.numpy())
    np.testing.assert_allclose(diff_augment(x, everything, SEED, probability=1.0).numpy(), first)
    with pytest.raises(ValueError, match="rotate"):
        diff_augment(x, ["rotate"], SEED)


def test_config_rejects_unknown_policies_and_ada_without_augment():
    with pytest.raises(ConfigError, match="color, translation, cutout") as error:
        tiny_config(augment=["colour"])
    assert "'colour'" in str(error.value)
    with pytest.raises(ConfigError, match="augment"):
        tiny_config(ada=True)
    assert tiny_config(augment="color,cutout").augment == ["color", "cutout"]
    assert tiny_config().augment == []


# ADA -------------------------------------------------------------------------------------------


def test_ada_probability_rises_when_the_discriminator_is_sure_of_reals_and_falls_otherwise():
    ada = AdaptiveStrength(target=0.6, kimg=0.064)  # 64 images move p from 0 to 1
    confident = tf.constant(np.full((16, 1), 3.0, np.float32))
    for expected in (0.25, 0.5, 0.75, 1.0, 1.0):
        ada.update(confident)  # r_t = 1 > 0.6
        assert ada.value() == pytest.approx(expected)
    unsure = tf.constant(np.r_[np.full(8, 2.0), np.full(8, -2.0)].astype(np.float32).reshape(16, 1))
    ada.update(unsure)  # r_t = 0 < 0.6
    assert ada.value() == pytest.approx(0.75)
    for _ in range(5):
        ada.update(-confident)
    assert ada.value() == 0.0


def test_gan_step_with_ada_logs_p_and_a_confident_discriminator_raises_it(sample_data):
    from tests.test_gan_training import real_batch

    config = tiny_config(dropout=0.0)
    generator, discriminator = build_gan_networks(config)
    gan = VanillaGAN(generator, discriminator, config.latent_dim, augment=AUGMENT_POLICIES, ada_target=0.6,
                     ada_kimg=0.1)
    gan.compile(g_optimizer=keras.optimizers.Adam(1e-5), d_optimizer=keras.optimizers.Adam(2e-3))
    batch = real_batch(sample_data)
    values = [float(gan.train_on_batch(batch, return_dict=True)["ada_p"]) for _ in range(8)]
    assert values[-1] > 0 and values == sorted(values)  # the discriminator quickly tells these reals


def test_gan_step_with_augment_runs_under_the_cpu2_strategy(sample_data):
    from tests.test_gan_training import real_batch

    config = tiny_config()
    strategy = make_strategy("cpu:2")
    with strategy.scope():
        generator, discriminator = build_gan_networks(config)
        gan = VanillaGAN(generator, discriminator, config.latent_dim, augment=AUGMENT_POLICIES, ada_target=0.6,
                         ada_kimg=0.01)
        gan.compile(g_optimizer=keras.optimizers.Adam(2e-4), d_optimizer=keras.optimizers.Adam(2e-4),
                    run_eagerly=True)
    assert gan.distribute_strategy.num_replicas_in_sync == 2
    before = generator.get_layer("g_up_0").get_weights()[0].copy()
    dataset = tf.data.Dataset.from_tensors(real_batch(sample_data, count=4)).repeat()
    history = gan.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, shuffle=False)
    assert all(np.isfinite(values[-1]) for values in history.history.values())
    assert not np.array_equal(generator.get_layer("g_up_0").get_weights()[0], before)
    # p is one number on both replicas, moved by the global batch of 4 per step.
    replicas = [float(value) for value in strategy.experimental_local_results(gan.ada.p.value)]
    assert len(replicas) == 2 and replicas[0] == replicas[1] == pytest.approx(history.history["ada_p"][-1])
    assert min(abs(replicas[0] - value) for value in (0.0, 0.4, 0.8)) < 1e-6  # steps of 4 / (0.01 * 1000)


# A run with ADA, interrupted and resumed -------------------------------------------------------------

ADA_RUN = ["--config", "gan_fast", "--set", "depth_g=32", "--set", "depth_d=8", "--batch-size", "16",
           "--set", "save_every=1", "--set", "sample_count=4", "--set", "augment=color,translation,cutout",
           "--set", "ada=true", "--set", "ada_kimg=1", "--epochs", "2", "--quiet"]


def history(run: Path) -> list[dict]:
    with open(run / "logs" / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_resumed_ada_run_equals_an_uninterrupted_one(sample_data, tmp_path):
    from tests.test_gan_training import interrupt_after_first_epoch

    full = tmp_path / "full"
    assert train_main(ADA_RUN + ["--data", str(sample_data), "--out", str(full)]) == 0
    rows = history(full)
    assert len(rows) == 2 and "ada_p" in rows[0]
    p1 = read_json(full / "checkpoints" / "epoch-0001" / "state.json")["ada_p"]
    assert p1 == pytest.approx(float(rows[0]["ada_p"])) and 0 < p1 < float(rows[1]["ada_p"]) < 1
    metrics = read_json(full / "metrics" / "train.json")
    assert metrics["augment"] == list(AUGMENT_POLICIES) and metrics["ada"]["p"] == pytest.approx(
        float(rows[1]["ada_p"]))

    resumed = tmp_path / "resumed"
    interrupt_after_first_epoch(full, resumed)
    assert train_main(["--out", str(resumed), "--resume", "--quiet"]) == 0
    again = history(resumed)
    assert len(again) == 2
    for key in ("ada_p", "d_loss", "g_loss", "d_real", "d_fake"):
        assert float(again[1][key]) == pytest.approx(float(rows[1][key]), rel=1e-4, abs=1e-6), key
    assert "ada: p = " in (resumed / "logs" / "run.log").read_text()
    resumed_g, resumed_d, _ = load_gan_models(resumed, rebuild=False)
    full_g, full_d, _ = load_gan_models(full, rebuild=False)
    for ours, theirs in zip(resumed_g.get_weights() + resumed_d.get_weights(),
                            full_g.get_weights() + full_d.get_weights()):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
