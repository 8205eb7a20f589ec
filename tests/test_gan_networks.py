"""Vanilla-GAN networks, custom layers, presets and FreezeD layer selection."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import ConfigError, load_config
from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.freeze import apply_freezed, select_discriminator_layers
from cellgen.gan.networks import (FloatMaskDropout, FusedBatchNormalization, MatmulConv2DTranspose, MaxLeakyReLU,
                                  SmallMapConv2D, build_discriminator, build_gan_networks, build_generator,
                                  discriminator_trunk)
from cellgen.gan.vanilla import VanillaGAN

TINY = {"image_size": 32, "depth_g": 32, "depth_d": 8, "d_layers": 3, "kernel_size": 4}


def tiny_config(**changes) -> VanillaGANConfig:
    return load_config(VanillaGANConfig, "gan_fast", {**TINY, **changes})


def conv_filters(model, prefix):
    return [layer.filters for layer in model.layers if layer.name.startswith(prefix)]


def compiled_gan(config, **compile_options):
    generator, discriminator = build_gan_networks(config)
    gan = VanillaGAN(generator, discriminator, config.latent_dim, d_steps=config.d_steps, g_steps=config.g_steps,
                     real_label=config.real_label, fake_label=config.fake_label)
    gan.compile(g_optimizer=keras.optimizers.Adam(config.g_learning_rate, beta_1=config.g_beta_1),
                d_optimizer=keras.optimizers.Adam(config.d_learning_rate, beta_1=config.d_beta_1), **compile_options)
    return gan


def take_one_step(gan, config, batch=2):
    images = np.random.default_rng(0).uniform(-1, 1, (batch, config.image_size, config.image_size, 3))
    before = [w.copy() for w in gan.generator.get_weights()[:1] + gan.discriminator.get_weights()[:1]]
    logs = gan.train_on_batch(images.astype("float32"), return_dict=True)
    after = gan.generator.get_weights()[:1] + gan.discriminator.get_weights()[:1]
    assert set(logs) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(np.isfinite(value) for value in logs.values()), logs
    assert all(not np.array_equal(b, a) for b, a in zip(before, after)), "a step must change both networks"
    return logs


@pytest.mark.parametrize("preset, generator_depths, discriminator_depths", [
    ("gan_fast", [32, 16, 3], [16, 32, 64]),
    ("matos2025_dcgan28", [128, 3], [32, 64, 128]),
])
def test_small_presets_build_documented_shapes_and_train(preset, generator_depths, discriminator_depths):
    config = load_config(VanillaGANConfig, preset)
    gan = compiled_gan(config, run_eagerly=True)  # the graph-mode step is exercised by the training tests
    size = config.image_size
    assert gan.generator.output_shape == (None, size, size, 3)
    assert gan.generator.input_shape == (None, config.latent_dim)
    assert gan.discriminator.output_shape == (None, 1)
    assert conv_filters(gan.generator, "g_up_") == generator_depths
    assert conv_filters(gan.discriminator, "d_conv_") == discriminator_depths
    take_one_step(gan, config)


def test_kc2020_preset_is_table_1_and_takes_a_step_at_256px():
    config = load_config(VanillaGANConfig, "kc2020_vanilla_gan", {"precision": "bf16"})
    assert (config.image_size, config.batch_size, config.epochs, config.latent_dim) == (256, 20, 75, 100)
    assert (config.g_learning_rate, config.d_learning_rate, config.kernel_size) == (1e-5, 1e-5, 5)
    assert (config.depth_g, config.depth_d, config.upsampling) == (1024, 64, "transposed")
    # bf16 keeps this 36M-parameter step fast on CPUs with AMX; the networks are the preset's.
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    gan = compiled_gan(config, run_eagerly=True)
    assert gan.generator.output_shape == (None, 256, 256, 3)
    assert conv_filters(gan.generator, "g_up_") == [512, 256, 128, 64, 32, 3]
    assert conv_filters(gan.discriminator, "d_conv_") == [64, 128, 256, 512, 1024]
    assert gan.generator.get_layer("g_project").units == 4 * 4 * 1024
    take_one_step(gan, config)


def test_nz2023_base_and_finetune_presets_take_a_step_at_256px():
    config = load_config(VanillaGANConfig, "nz2023_gan_base", {"precision": "bf16"})
    assert (config.kernel_size, config.upsampling, config.epochs, config.d_steps) == (6, "nearest", 150, 1)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    gan = compiled_gan(config, run_eagerly=True)
    assert gan.generator.output_shape == (None, 256, 256, 3)
    assert conv_filters(gan.generator, "g_conv_") == [512, 256, 128, 64, 32, 3]
    assert [layer.name for layer in gan.generator.layers if "upsample" in layer.name][0] == "g_upsample_0"
    take_one_step(gan, config)

    # Table 6 on the same (base) networks: FreezeD on the two last convolutions, generator BN frozen.
    finetune = load_config(VanillaGANConfig, "nz2023_gan_finetune")
    assert (finetune.g_learning_rate, finetune.batch_size, finetune.d_steps) == (3e-6, 16, 2)
    assert (finetune.freeze_d_layers, finetune.freeze_d_side, finetune.freeze_g_batchnorm) == (2, "output", True)
    summary = apply_freezed(gan.generator, gan.discriminator, finetune.freeze_d_layers, finetune.freeze_d_side,
                            finetune.freeze_g_batchnorm)
    assert summary["frozen_discriminator_layers"] == ["d_conv_3", "d_conv_4"]
    assert len(summary["frozen_generator_layers"]) == 6
    tuned = VanillaGAN(gan.generator, gan.discriminator, config.latent_dim, d_steps=finetune.d_steps)
    tuned.compile(g_optimizer=keras.optimizers.Adam(finetune.g_learning_rate),
                  d_optimizer=keras.optimizers.Adam(finetune.d_learning_rate), run_eagerly=True)
    frozen = gan.discriminator.get_layer("d_conv_4").get_weights()[0].copy()
    take_one_step(tuned, config)
    np.testing.assert_array_equal(gan.discriminator.get_layer("d_conv_4").get_weights()[0], frozen)
    assert int(tuned.d_optimizer.iterations.numpy()) == 2 and int(tuned.g_optimizer.iterations.numpy()) == 1


def test_output_and_logit_stay_float32_under_bf16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    generator, discriminator = build_gan_networks(tiny_config())
    assert generator.get_layer("g_up_0").compute_dtype == "bfloat16"
    assert generator.get_layer("g_output").compute_dtype == "float32"
    assert discriminator.get_layer("d_realness").compute_dtype == "float32"
    images = generator(np.zeros((2, 100), "float32"), training=False)
    assert images.dtype == tf.float32
    assert discriminator(images).dtype == tf.float32
    assert all(variable.dtype == "float32" for variable in generator.weights)


def test_nearest_upsampling_generator_and_image_range():
    config = tiny_config(upsampling="nearest", kernel_size=6, image_size=64, d_layers=4)
    generator = build_generator(config)
    names = [layer.name for layer in generator.layers]
    assert "g_upsample_0" in names and "g_conv_3" in names and not any(name.startswith("g_up_") for name in names)
    images = keras.ops.convert_to_numpy(generator(np.random.default_rng(1).normal(size=(3, 100)), training=False))
    assert images.shape == (3, 64, 64, 3)
    assert images.min() >= -1 and images.max() <= 1


def assert_same_layer_and_gradients(native, custom, input_shape):
    """Same outputs and gradients (inputs and kernel) for two layers holding the same weights."""
    inputs = tf.constant(np.random.default_rng(len(input_shape)).normal(size=input_shape), tf.float32)
    native.build(inputs.shape)
    custom.build(inputs.shape)
    custom.set_weights([np.random.default_rng(3).normal(size=w.shape) for w in native.get_weights()])
    native.set_weights(custom.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(inputs)
        expected, actual = native(inputs), custom(inputs)
        weights = tf.constant(np.random.default_rng(4).normal(size=expected.shape), tf.float32)
        expected_loss, actual_loss = tf.reduce_sum(expected * weights), tf.reduce_sum(actual * weights)
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), atol=1e-4, rtol=1e-4)
    for ours, theirs in ((inputs, inputs), (custom.kernel, native.kernel), (custom.bias, native.bias)):
        np.testing.assert_allclose(tape.gradient(actual_loss, ours).numpy(),
                                   tape.gradient(expected_loss, theirs).numpy(), atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("kernel", [3, 4, 5, 6])
@pytest.mark.parametrize("height, width", [(2, 2), (4, 4), (3, 4)])
def test_matmul_transposed_convolution_equals_keras(kernel, height, width):
    native = keras.layers.Conv2DTranspose(5, kernel, strides=2, padding="same")
    custom = MatmulConv2DTranspose(5, kernel, strides=2, padding="same", matmul_max_pixels=16)
    assert custom._use_matmul(tf.zeros((1, height, width, 7)))
    assert_same_layer_and_gradients(native, custom, (2, height, width, 7))


@pytest.mark.parametrize("kernel", [4, 5])
def test_matrix_product_kernel_gradients_equal_keras(kernel):
    native_t = keras.layers.Conv2DTranspose(6, kernel, strides=2, padding="same")
    custom_t = MatmulConv2DTranspose(6, kernel, strides=2, padding="same", matmul_max_pixels=0,
                                     filter_grad_max_pixels=64)
    assert not custom_t._use_matmul(tf.zeros((1, 8, 8, 5))) and custom_t._use_matmul_filter_grad(tf.zeros((1, 8, 8, 5)))
    assert_same_layer_and_gradients(native_t, custom_t, (2, 8, 8, 5))
    for strides, size in ((2, 8), (2, 7), (1, 6)):
        native = keras.layers.Conv2D(6, kernel, strides=strides, padding="same")
        custom = SmallMapConv2D(6, kernel, strides=strides, padding="same", filter_grad_max_pixels=64)
        assert custom._use_matmul_filter_grad(tf.zeros((1, size, size, 5)))
        assert_same_layer_and_gradients(native, custom, (2, size, size, 5))


def test_matrix_product_paths_follow_the_dtype_defaults():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    conv, transposed = SmallMapConv2D(4, 5, strides=2, padding="same"), MatmulConv2DTranspose(4, 5, strides=2,
                                                                                              padding="same")
    assert conv._use_matmul_filter_grad(tf.zeros((1, 16, 16, 3)))        # 8 x 8 outputs
    assert not conv._use_matmul_filter_grad(tf.zeros((1, 32, 32, 3)))
    assert transposed._use_matmul_filter_grad(tf.zeros((1, 16, 16, 3)))
    keras.mixed_precision.set_global_policy("float32")
    assert not SmallMapConv2D(4, 5, strides=2, padding="same")._use_matmul_filter_grad(tf.zeros((1, 16, 16, 3)))
    assert not MatmulConv2DTranspose(4, 5, strides=2, padding="same")._use_matmul_filter_grad(
        tf.zeros((1, 8, 8, 3)))


def test_matmul_transposed_convolution_uses_the_native_kernel_on_large_inputs():
    layer = MatmulConv2DTranspose(4, 5, strides=2, padding="same")
    assert not layer._use_matmul(tf.zeros((1, 8, 8, 3)))
    assert layer._use_matmul(tf.zeros((1, 4, 4, 3)))


def test_fused_batch_norm_matches_keras_and_freezes():
    inputs = tf.constant(np.random.default_rng(0).normal(2.0, 3.0, size=(4, 5, 5, 6)), tf.float32)
    reference, fused = keras.layers.BatchNormalization(momentum=0.9), FusedBatchNormalization(momentum=0.9)
    for layer in (reference, fused):
        layer.build(inputs.shape)
    np.testing.assert_allclose(fused(inputs, training=True).numpy(), reference(inputs, training=True).numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), reference.moving_mean.numpy(), atol=1e-5)
    count = 4 * 5 * 5  # the fused kernel keeps the unbiased variance in the moving average
    unbiased = 0.9 + 0.1 * (reference.moving_variance.numpy() - 0.9) / 0.1 * count / (count - 1)
    np.testing.assert_allclose(fused.moving_variance.numpy(), unbiased, rtol=1e-4)
    np.testing.assert_allclose(fused(inputs, training=False).numpy(),
                               keras.layers.BatchNormalization.call(fused, inputs, training=False).numpy(), atol=1e-5)
    # Keras 3 semantics: a frozen layer normalizes with its moving statistics and keeps them.
    fused.trainable = False
    mean_before = fused.moving_mean.numpy().copy()
    frozen_output = fused(inputs, training=True).numpy()
    np.testing.assert_array_equal(fused.moving_mean.numpy(), mean_before)
    np.testing.assert_allclose(frozen_output, fused(inputs, training=False).numpy(), atol=1e-6)
    bf16 = fused(tf.cast(inputs, tf.bfloat16), training=False)
    assert bf16.dtype == tf.float32  # the layer's own (float32) policy decides the output dtype


def test_float_mask_dropout_is_the_same_in_float32_and_bfloat16():
    inputs = np.ones((4, 64), "float32")
    masks = []
    for dtype in ("float32", "mixed_bfloat16"):
        keras.utils.set_random_seed(5)
        layer = FloatMaskDropout(0.3, dtype=dtype)
        masks.append(keras.ops.convert_to_numpy(keras.ops.cast(layer(inputs, training=True), "float32")) > 0)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert 0.55 < masks[0].mean() < 0.85
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(FloatMaskDropout(0.3)(inputs)), inputs)


def test_max_leaky_relu_equals_leaky_relu():
    values = np.linspace(-3, 3, 13).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(MaxLeakyReLU(negative_slope=0.2)(values)),
                               keras.ops.convert_to_numpy(keras.layers.LeakyReLU(negative_slope=0.2)(values)))


def test_saved_networks_reload_in_safe_mode(tmp_path):
    config = tiny_config(d_batch_norm=True)
    generator, discriminator = build_gan_networks(config)
    latents = np.random.default_rng(0).normal(size=(2, 100)).astype("float32")
    generator(latents, training=True)  # move the batch-norm statistics away from their initial values
    for model in (generator, discriminator):
        model.save(tmp_path / f"{model.name}.keras")
    loaded_g = keras.saving.load_model(tmp_path / "generator.keras", safe_mode=True)
    loaded_d = keras.saving.load_model(tmp_path / "discriminator.keras", safe_mode=True)
    assert isinstance(loaded_g.get_layer("g_bn_0"), FusedBatchNormalization)
    assert isinstance(loaded_g.get_layer("g_up_0"), MatmulConv2DTranspose)
    assert isinstance(loaded_d.get_layer("d_dropout_0"), FloatMaskDropout)
    images = generator(latents, training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded_g(latents, training=False)),
                                  keras.ops.convert_to_numpy(images))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded_d(images)),
                                  keras.ops.convert_to_numpy(discriminator(images)))


def test_discriminator_trunk_shares_weights_and_gives_features():
    config = tiny_config()
    discriminator = build_discriminator(config)
    trunk = discriminator_trunk(discriminator)
    assert trunk.output_shape == (None, 4 * 4 * 32)
    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    features = trunk(images)
    dense = discriminator.get_layer("d_realness")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(dense(features)),
                               keras.ops.convert_to_numpy(discriminator(images)), rtol=1e-5, atol=1e-6)
    trunk.trainable = False
    assert not discriminator.get_layer("d_conv_0").trainable and dense.trainable


def test_freezing_sides_select_the_intended_layers():
    discriminator = build_discriminator(tiny_config(d_layers=4, d_batch_norm=True))
    assert select_discriminator_layers(discriminator, 2, "input") == ["d_conv_0", "d_conv_1"]
    assert select_discriminator_layers(discriminator, 2, "output") == ["d_conv_2", "d_conv_3"]
    assert select_discriminator_layers(discriminator, 0, "output") == []
    generator = build_generator(tiny_config())
    summary = apply_freezed(generator, discriminator, 2, "output", freeze_g_batchnorm=False)
    # A frozen convolution takes its batch norm with it.
    assert summary["frozen_discriminator_layers"] == ["d_conv_2", "d_bn_2", "d_conv_3", "d_bn_3"]
    assert discriminator.get_layer("d_conv_1").trainable and discriminator.get_layer("d_bn_1").trainable
    assert all(layer.trainable for layer in generator.layers)
    with pytest.raises(ConfigError, match="freeze_d_layers=5"):
        select_discriminator_layers(discriminator, 5, "input")
    with pytest.raises(ConfigError, match="freeze_d_side"):
        select_discriminator_layers(discriminator, 1, "middle")


@pytest.mark.parametrize("changes, message", [
    ({"image_size": 48}, "power of two"),
    ({"image_size": 256, "depth_g": 8}, "depth_g 8 is too small"),
    ({"upsampling": "bilinear"}, "upsampling must be one of"),
    ({"freeze_d_layers": 4}, "freeze_d_layers"),
    ({"freeze_d_side": "last"}, "freeze_d_side"),
    ({"real_label": 1.5}, "real_label"),
    ({"d_steps": 0}, "d_steps"),
])
def test_invalid_configs_name_the_key(changes, message):
    with pytest.raises(ConfigError, match=message):
        tiny_config(**changes)
