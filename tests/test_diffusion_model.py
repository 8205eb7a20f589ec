"""DiffusionModel: every preset builds and trains a step, EMA, sampling, saving, bf16 and cpu:2."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import CONFIG_DIR, ConfigError, load_config
from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.ddim import DiffusionModel, make_optimizer
from cellgen.runs import TrainingState

PRESETS = sorted(path.stem for path in CONFIG_DIR.glob("*.toml")
                 if 'kind = "ddim"' in path.read_text(encoding="utf-8"))
TINY = dict(image_size=16, depth=2, base_width=4, block_kind="r2", attention_gates=True, batch_size=4, seed=3)


def _images(count, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


def _randomize_output(model):
    """The output convolution starts at zero (predicts no noise); give it weights so samples differ."""
    layer = model.network.get_layer("output_conv")
    layer.kernel.assign(np.random.default_rng(5).normal(0, 0.2, layer.kernel.shape).astype(np.float32))
    model.update_ema(decay=0.0)


def _max_difference(first, second):
    return max(float(np.abs(a - b).max()) for a, b in zip(first, second))


def test_all_presets_are_found():
    assert {"nz2023_ddim_base", "nz2023_ddim_finetune", "kerasio_ddim64", "matos2025_ddpm28",
            "matos2025_ddpm28_deep", "ddim_fast", "ddim_cond32", "ddim_cond64", "nz2023_ddim_cond"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_builds_and_takes_one_step(preset):
    config = load_config(DiffusionConfig, preset)
    # A conditional preset takes its class names from the data, as the training loop does.
    config = config.with_data_classes(["basophil", "lymphocyte", "neutrophil"])
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    size = config.image_size
    images = _images(2, size)
    assert tuple(model.network.output_shape) == (None, size, size, 3)
    inputs = [(None, size, size, 3), (None, 1, 1, 1)] + ([(None,)] if config.conditional else [])
    assert [tuple(shape) for shape in model.network.input_shape] == inputs
    before = [weight.numpy() for weight in model.network.trainable_weights]
    # eager: the same code as in fit, without tracing; conditional presets need (images, labels)
    batch = (tf.constant(images), tf.constant([0, 2])) if config.conditional else tf.constant(images)
    logs = model.train_step(batch)
    assert np.isfinite(float(logs["noise_loss"])) and float(logs["noise_loss"]) > 0
    assert _max_difference(before, [weight.numpy() for weight in model.network.trainable_weights]) > 0


def test_nz2023_preset_is_table_7():
    config = load_config(DiffusionConfig, "nz2023_ddim_base")
    assert (config.learning_rate, config.batch_size, config.depth, config.base_width, config.weight_decay) == (
        3e-4, 20, 5, 16, 1e-4)
    assert (config.epochs, config.diffusion_steps, config.embedding_dims, config.embedding_max_frequency) == (
        60, 20, 32, 1000.0)
    assert (config.schedule, config.schedule_start, config.schedule_end, config.schedule_tau) == (
        "sigmoid", 0.0, 3.0, 0.6)
    assert (config.min_signal_rate, config.max_signal_rate, config.block_kind, config.attention_gates) == (
        0.01, 0.95, "r2", True)
    assert config.widths_resolved() == [16, 32, 64, 128, 256] and config.image_size == 192
    assert load_config(DiffusionConfig, "nz2023_ddim_finetune").min_signal_rate == 0.008  # Table 8


def test_ema_starts_equal_then_lags_and_follows_the_formula():
    model = DiffusionModel(DiffusionConfig(**TINY, ema=0.9))
    model.compile(optimizer=make_optimizer(model.config))
    assert _max_difference(model.network.get_weights(), model.ema_network.get_weights()) == 0.0
    model.train_step(tf.constant(_images(4, 16)))
    online, ema = model.network.get_weights(), model.ema_network.get_weights()
    assert _max_difference(online, ema) > 0
    previous_ema = [weight.copy() for weight in ema]
    model.update_ema(decay=0.9)
    for new, old, current in zip(model.ema_network.get_weights(), previous_ema, online):
        np.testing.assert_allclose(new, 0.9 * old + 0.1 * current, rtol=1e-5, atol=1e-7)


def test_ema_warmup_decay():
    model = DiffusionModel(DiffusionConfig(**TINY, ema=0.999, ema_warmup=True))
    model.compile(optimizer=make_optimizer(model.config))
    assert float(model.ema_decay()) == pytest.approx(0.1)
    model.optimizer.iterations.assign(10_000)
    assert float(model.ema_decay()) == pytest.approx(0.999)


def test_generate_is_deterministic_for_a_seed_and_uses_eta():
    model = DiffusionModel(DiffusionConfig(**TINY))
    _randomize_output(model)
    first = model.generate(3, steps=4, eta=0.0, seed=11)
    assert first.shape == (3, 16, 16, 3) and first.dtype == np.float32
    assert first.min() >= -1.0 and first.max() <= 1.0
    np.testing.assert_array_equal(first, model.generate(3, steps=4, eta=0.0, seed=11))
    np.testing.assert_array_equal(first[:2], model.generate(2, steps=4, eta=0.0, seed=11))
    assert np.abs(first - model.generate(3, steps=4, eta=0.0, seed=12)).max() > 1e-3
    stochastic = model.generate(3, steps=4, eta=1.0, seed=11)
    np.testing.assert_array_equal(stochastic, model.generate(3, steps=4, eta=1.0, seed=11))
    assert np.abs(stochastic - first).max() > 1e-3
    with pytest.raises(ConfigError, match="eta"):
        model.generate(1, eta=2.0)
    with pytest.raises(ConfigError, match="discrete-time"):
        model.generate(1, method="ddpm")


def test_discrete_ddpm_mode_samples_over_all_steps():
    config = DiffusionConfig(**TINY, time_mode="discrete", timesteps=20, loss="mse", optimizer="adam", ema=0.0)
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    logs = model.train_step(tf.constant(_images(4, 16)))
    assert np.isfinite(float(logs["noise_loss"]))
    _randomize_output(model)
    assert model.default_method() == "ddpm"
    ancestral = model.generate(2, seed=1)
    np.testing.assert_array_equal(ancestral, model.generate(2, seed=1))
    assert np.abs(ancestral - model.generate(2, seed=2)).max() > 1e-3
    strided = model.generate(2, steps=5, method="ddim", seed=1)
    assert strided.shape == (2, 16, 16, 3) and np.abs(strided - ancestral).max() > 1e-3
    # generate.py: a discrete run samples ancestrally over all T steps unless --steps asks for DDIM.
    from cellgen.diffusion.sampling import DiffusionSampler

    default = DiffusionSampler(model)
    assert (default.method, default.steps) == ("ddpm", 20)
    np.testing.assert_array_equal(default.sample(2, seed=1), ancestral)
    assert (DiffusionSampler(model, steps=5).method, DiffusionSampler(model, steps=5).steps) == ("ddim", 5)


def test_keras_file_and_checkpoint_round_trip_keep_ema_weights(tmp_path):
    config = DiffusionConfig(**TINY)
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    model.adapt_normalizer([_images(4, 16)])
    model.train_step(tf.constant(_images(4, 16)))
    _randomize_output(model)
    model.network.get_layer("output_conv").bias.assign([0.1, -0.2, 0.3])  # EMA and online now differ

    export = DiffusionModel(config)
    export.set_weights(model.get_weights())
    export.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert isinstance(loaded, DiffusionModel)
    assert _max_difference(loaded.ema_network.get_weights(), model.ema_network.get_weights()) == 0.0
    assert _max_difference(loaded.network.get_weights(), model.network.get_weights()) == 0.0
    np.testing.assert_array_equal(loaded.image_std.numpy(), model.image_std.numpy())
    assert loaded.config == config

    optimizer = model.optimizer
    state = TrainingState(tmp_path / "checkpoints", diffusion=model, optimizer=optimizer)
    state.save(epoch=1)
    fresh = DiffusionModel(config)
    fresh_optimizer = make_optimizer(config)
    fresh_optimizer.build(fresh.network.trainable_variables)
    TrainingState(tmp_path / "checkpoints", diffusion=fresh, optimizer=fresh_optimizer).restore_latest()
    assert _max_difference(fresh.get_weights(), model.get_weights()) == 0.0
    assert int(fresh_optimizer.iterations.numpy()) == int(optimizer.iterations.numpy()) == 1


def test_normalizer_standardises_channels():
    model = DiffusionModel(DiffusionConfig(**TINY))
    images = _images(8, 16) * np.array([0.2, 0.5, 1.0], np.float32) + np.array([0.5, 0.2, 0.0], np.float32)
    statistics = model.adapt_normalizer([images[:4], (images[4:], np.zeros(4))])
    np.testing.assert_allclose(statistics["mean"], images.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    normalized = model.normalize(images).numpy()
    np.testing.assert_allclose(normalized.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalized.std(axis=(0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(model.denormalize(normalized).numpy(), images, atol=1e-5)


def test_one_step_under_bf16_keeps_float32_where_needed():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    config = DiffusionConfig(**TINY, precision="bf16")
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    network = model.network
    assert network.get_layer("down0_block0").compute_dtype == "bfloat16"
    for name in ("noise_embedding", "output_conv", "broadcast_embedding"):
        assert network.get_layer(name).compute_dtype == "float32", name
    assert network.get_layer("up0_attention").psi.compute_dtype == "float32"
    output = network([_images(2, 16), np.full((2, 1, 1, 1), 0.5, np.float32)])
    assert output.dtype == tf.float32
    before = network.get_weights()
    logs = model.train_step(tf.constant(_images(4, 16)))
    assert np.isfinite(float(logs["noise_loss"]))
    assert all(weight.dtype == "float32" for weight in network.weights)
    assert _max_difference(before, network.get_weights()) > 0


def test_one_step_under_cpu2_strategy_keeps_replicas_identical():
    from cellgen.distribute import make_strategy

    strategy = make_strategy("cpu:2")
    config = DiffusionConfig(**TINY, strategy="cpu:2")
    with strategy.scope():
        model = DiffusionModel(config)
        optimizer = make_optimizer(config)
        model.compile(optimizer=optimizer)
        optimizer.build(model.network.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices(_images(8, 16)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    assert [tensor.shape[0] for tensor in strategy.experimental_local_results(batch)] == [4, 4]
    before = model.network.get_weights()
    logs = strategy.run(model.train_step, args=(batch,))
    losses = [float(value) for value in strategy.experimental_local_results(logs["noise_loss"])]
    assert all(np.isfinite(losses))
    assert _max_difference(before, model.network.get_weights()) > 0
    for weight in model.network.trainable_weights + model.ema_network.weights:
        copies = [np.asarray(value) for value in strategy.experimental_local_results(weight.value)]
        np.testing.assert_array_equal(copies[0], copies[1])
    assert int(optimizer.iterations.numpy()) == 1
