"""CVAE library: network shapes, loss terms, training, sampling, serialization, distribution."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import ConfigError, apply_overrides, load_config
from cellgen.runs import RunError
from cellgen.vae.config import MATOS2025_CVAE_GRID, CVAEConfig
from cellgen.vae.cvae import CVAE, bernoulli_cross_entropy, kl_divergence
from cellgen.vae.networks import build_decoder, build_encoder, decoder_start_size
from cellgen.vae.sampling import CVAESampler

TINY = dict(latent_dim=8, filters=(8, 16, 32))


def _tiny_real_batch(count=16, size=28):
    from cellgen.data_reader import DataReader
    from cellgen.sample_data import sample_path

    reader = DataReader(sample_path("train"), image_size=size, batch_size=count, shuffle=True, seed=0, workers=0)
    images, labels = next(iter(reader.epoch(0)))
    return images, labels, reader.classes


@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("num_classes", [0, 8])
def test_encoder_and_decoder_shapes(size, num_classes):
    encoder = build_encoder(size, num_classes=num_classes, **TINY)
    decoder = build_decoder(size, num_classes=num_classes, **TINY)
    images = np.zeros((3, size, size, 3), np.float32)
    labels = np.array([0, 1, 2], np.int32)
    mean, log_variance = encoder([images, labels] if num_classes else images)
    assert mean.shape == (3, 8) and log_variance.shape == (3, 8)
    logits = decoder([np.zeros((3, 8), np.float32), labels] if num_classes else np.zeros((3, 8), np.float32))
    assert logits.shape == (3, size, size, 3)
    assert len(encoder.inputs) == (2 if num_classes else 1)


def test_matos_layout_at_28_px():
    # Matos' decoder: dense -> 3x3x128, three stride-2 transposed convolutions to 24 px, 5x5 "valid" to 28.
    decoder = build_decoder(28, latent_dim=64)
    assert decoder_start_size(28, 3) == 3
    assert decoder.get_layer("reshape").output.shape[1:] == (3, 3, 128)
    assert decoder.get_layer("deconv3").output.shape[1:3] == (24, 24)
    assert decoder.get_layer("logits").kernel.shape[:2] == (5, 5)
    encoder = build_encoder(28, latent_dim=64)
    assert [encoder.get_layer(f"conv{i}").filters for i in (1, 2, 3)] == [32, 64, 128]


def test_kl_divergence_is_non_negative_and_matches_closed_form():
    rng = np.random.default_rng(0)
    mean = rng.normal(0, 2, (64, 16)).astype(np.float32)
    log_variance = rng.normal(0, 2, (64, 16)).astype(np.float32)
    kl = keras.ops.convert_to_numpy(kl_divergence(mean, log_variance))
    assert kl.shape == (64,) and np.all(kl >= 0)
    variance = np.exp(log_variance.astype(np.float64))
    expected = 0.5 * np.sum(mean.astype(np.float64) ** 2 + variance - 1.0 - log_variance, axis=-1)
    np.testing.assert_allclose(kl, expected, rtol=1e-5)
    zero = keras.ops.convert_to_numpy(kl_divergence(np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32)))
    np.testing.assert_allclose(zero, 0.0, atol=1e-7)


def test_bernoulli_cross_entropy_matches_keras_and_is_stable():
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, (4, 6, 6, 3)).astype(np.float32)
    logits = rng.normal(0, 3, (4, 6, 6, 3)).astype(np.float32)
    ours = keras.ops.convert_to_numpy(bernoulli_cross_entropy(images, logits))
    reference = keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(
        ((images + 1) / 2).reshape(4, -1), logits.reshape(4, -1), from_logits=True)) * 6 * 6 * 3
    np.testing.assert_allclose(ours, reference, rtol=1e-4)
    extreme = keras.ops.convert_to_numpy(bernoulli_cross_entropy(np.ones((1, 2, 2, 3), np.float32),
                                                                 np.full((1, 2, 2, 3), -200.0, np.float32)))
    assert np.isfinite(extreme).all() and extreme[0] == pytest.approx(200.0 * 12, rel=1e-5)


def _entropy_floor(images):
    """Smallest possible BCE per image: the targets' own entropy (they are not binary)."""
    targets = np.clip((images.astype(np.float64) + 1) / 2, 1e-7, 1 - 1e-7)
    entropy = -(targets * np.log(targets) + (1 - targets) * np.log(1 - targets))
    return entropy.reshape(len(images), -1).sum(axis=1).mean()


@pytest.mark.parametrize("conditional", [True, False])
def test_loss_decreases_on_a_tiny_real_batch(conditional):
    images, labels, classes = _tiny_real_batch()
    keras.utils.set_random_seed(0)
    model = CVAE.from_sizes(28, num_classes=len(classes) if conditional else 0, kl_weight=0.75, seed=0, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), jit_compile=False)
    losses, kls = [], []
    for _ in range(40):
        logs = model.train_on_batch(images, labels, return_dict=True)
        losses.append(logs["loss"])
        kls.append(logs["kl_loss"])
        model.reset_metrics()
    floor = _entropy_floor(images)
    assert losses[0] > floor
    # The loss above its floor (the targets' entropy) at least halves in 40 steps.
    assert np.mean(losses[-5:]) - floor < 0.5 * (losses[0] - floor)
    assert min(kls) >= 0 and np.all(np.isfinite(losses))


def test_generated_images_are_in_range_and_deterministic():
    decoder = build_decoder(28, num_classes=3, **TINY)
    sampler = CVAESampler(decoder, ["a", "b", "c"], 28)
    images = sampler.sample(10, seed=4, batch_size=3)
    assert images.shape == (10, 28, 28, 3) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    np.testing.assert_array_equal(images, sampler.sample(10, seed=4, batch_size=3))
    # Another batch size only changes oneDNN's summation order.
    np.testing.assert_allclose(images, sampler.sample(10, seed=4), atol=1e-5)
    assert not np.array_equal(images, sampler.sample(10, seed=5))
    # Same latent vectors (same seed), another class: the condition changes the image.
    assert not np.allclose(sampler.sample(4, seed=1, class_name="a"), sampler.sample(4, seed=1, class_name="c"))
    with pytest.raises(RunError, match="'d' is not one of"):
        sampler.sample(1, seed=0, class_name="d")
    unconditional = CVAESampler(build_decoder(28, **TINY), ["a", "b"], 28)
    assert unconditional.classes is None
    with pytest.raises(RunError, match="unconditional"):
        unconditional.sample(1, seed=0, class_name="a")


def test_classes_are_uniform_without_a_class_name():
    sampler = CVAESampler(build_decoder(28, num_classes=4, **TINY), list("abcd"), 28)
    z, labels = sampler.latents(2000, seed=9)
    assert z.shape == (2000, 8) and abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    counts = np.bincount(labels, minlength=4)
    assert counts.min() > 430 and counts.max() < 570  # 500 expected each
    _, fixed = sampler.latents(50, seed=9, class_name="c")
    assert np.all(fixed == 2)


def test_model_round_trip_with_safe_mode(tmp_path):
    model = CVAE.from_sizes(32, num_classes=2, kl_weight=0.5, seed=3, **TINY)
    images = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    labels = np.array([0, 1, 0, 1], np.int32)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False, run_eagerly=True)
    model.fit(images, labels, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "cvae.keras")
    model.decoder.save(tmp_path / "decoder.keras")
    loaded = keras.saving.load_model(tmp_path / "cvae.keras", safe_mode=True)
    decoder = keras.saving.load_model(tmp_path / "decoder.keras", safe_mode=True)
    assert isinstance(loaded, CVAE) and loaded.kl_weight == 0.5 and loaded.conditional
    z = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    expected = keras.ops.convert_to_numpy(model.decode(z, labels))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded.decode(z, labels)), expected)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(decoder([z, labels])), expected)


def _quiet_model(num_classes, weights=None):
    """A model whose posterior variance is ~0, so the update does not depend on the noise draw."""
    model = CVAE.from_sizes(28, num_classes=num_classes, kl_weight=0.75, seed=0, **TINY)
    if weights is not None:
        model.set_weights(weights)
    layer = model.encoder.get_layer("log_variance")
    layer.kernel.assign(np.zeros(layer.kernel.shape, np.float32))
    layer.bias.assign(np.full(layer.bias.shape, -40.0, np.float32))
    return model


def test_two_replicas_give_the_same_update_as_one_device():
    from cellgen.distribute import make_strategy

    images, labels, classes = _tiny_real_batch(8)
    single = _quiet_model(len(classes))
    weights = single.get_weights()
    single.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False, run_eagerly=True)
    single.fit(images, labels, batch_size=8, epochs=1, verbose=0, shuffle=False)

    strategy = make_strategy("cpu:2")
    with strategy.scope():
        mirrored = _quiet_model(len(classes), weights)
        mirrored.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False, run_eagerly=True)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    logs = mirrored.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    assert np.isfinite(logs["loss"][0])
    # Per-replica sums divided by the global batch: summed gradients equal the single-device ones.
    for ours, reference in zip(mirrored.get_weights(), single.get_weights()):
        np.testing.assert_allclose(ours, reference, rtol=2e-4, atol=2e-6)
    changed = [not np.allclose(after, before) for after, before in zip(mirrored.get_weights(), weights)]
    assert any(changed)


def test_bf16_keeps_losses_and_outputs_in_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = CVAE.from_sizes(28, num_classes=8, seed=0, **TINY)
    assert model.encoder.get_layer("conv1").compute_dtype == "bfloat16"
    mean, log_variance = model.encode(np.zeros((2, 28, 28, 3), np.float32), np.array([0, 1]))
    assert mean.dtype == "float32" and log_variance.dtype == "float32"
    assert model.decode(np.zeros((2, 8), np.float32), np.array([0, 1])).dtype == "float32"
    images, labels, _ = _tiny_real_batch(4)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=False, run_eagerly=True)
    history = model.fit(images, labels, batch_size=4, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"]))


def test_preset_is_the_papers_best_setting_and_takes_one_step():
    config = load_config(CVAEConfig, "matos2025_cvae28")
    assert (config.image_size, config.latent_dim, config.kl_weight, config.learning_rate, config.batch_size,
            config.epochs, config.encoder_filters) == (28, 64, 0.75, 1e-3, 128, 100, [32, 64, 128])
    images, labels, classes = _tiny_real_batch(2)
    model = CVAE.from_sizes(config.image_size, config.latent_dim, config.encoder_filters, len(classes),
                            config.kernel_size, config.kl_weight, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=False, run_eagerly=True)
    before = [weight.copy() for weight in model.decoder.get_weights()]
    model.fit(images, labels, batch_size=2, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(model.decoder.get_weights(), before))


def test_papers_grid_entries_are_valid_configs():
    base = load_config(CVAEConfig, "matos2025_cvae28")
    names = set()
    for entry in MATOS2025_CVAE_GRID:
        config = apply_overrides(base, entry["overrides"])
        names.add(entry["name"])
        assert config.latent_dim in (32, 64, 128) and config.learning_rate in (1e-4, 1e-3, 5e-3)
    assert len(names) == 9
    best = min(MATOS2025_CVAE_GRID, key=lambda entry: entry["fid"])
    assert apply_overrides(base, best["overrides"]) == base


@pytest.mark.parametrize("override, message", [
    ({"latent_dim": 0}, "latent_dim"),
    ({"kl_weight": -1}, "kl_weight"),
    ({"image_size": 8, "encoder_filters": [4, 4, 4, 4]}, "image_size 8 is too small"),
    ({"encoder_filters": "[]"}, "encoder_filters"),
    ({"learning_rate": 0}, "learning_rate"),
])
def test_bad_config_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(CVAEConfig(), override)
