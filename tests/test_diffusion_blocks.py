"""U-Net layers: noise embedding, R2 block, attention gate, fused batch norm, serialization."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.diffusion.blocks import (AttentionGate, FusedBatchNormalization, PlainBlock, R2Block, ResidualBlock,
                                      SinusoidalEmbedding)
from cellgen.diffusion.unet import build_unet, padding_for


def _conv(x, layer):
    kernel = layer.kernel.numpy()
    out = tf.nn.conv2d(x, kernel, strides=layer.strides, padding=layer.padding.upper()).numpy()
    return out + layer.bias.numpy() if layer.use_bias else out


def _swish(x):
    return x / (1.0 + np.exp(-x))


def test_sinusoidal_embedding_formula_and_float32_under_bf16():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    layer = SinusoidalEmbedding(32, 1000.0)
    variances = np.array([0.0, 0.25, 0.9], np.float32).reshape(3, 1, 1, 1)
    output = layer(variances)
    assert output.dtype == tf.float32 and output.shape == (3, 1, 1, 32)
    frequencies = np.exp(np.linspace(math.log(1.0), math.log(1000.0), 16))
    angles = 2 * np.pi * frequencies * variances.reshape(3, 1)
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    # float32 angles reach 2 pi * 1000 * 0.9 ~ 5655 rad (ulp ~5e-4); in bfloat16 the error would be ~20 rad.
    np.testing.assert_allclose(output.numpy().reshape(3, 32), expected, atol=1e-3)


def test_r2_block_follows_alom_equations():
    """x = 1x1(input); RCL: h0 = act(f(x)), h_k = act(f(x) + r(h_{k-1})); output x + RCL2(RCL1(x))."""
    block = R2Block(6, recurrence=2, normalization="none")
    inputs = np.random.default_rng(0).standard_normal((2, 8, 8, 3)).astype(np.float32)
    block.build(inputs.shape)
    for weight in block.weights:  # non-trivial weights (the recurrent kernels are used)
        weight.assign(np.random.default_rng(len(weight.path)).normal(0, 0.3, weight.shape).astype(np.float32))
    x = _conv(inputs, block.input_projection)
    hidden = x
    for unit in range(2):
        feedforward = _conv(hidden, block.feedforward[unit])
        state = _swish(feedforward)
        for _ in range(2):
            state = _swish(feedforward + _conv(state, block.recurrent[unit]))
        hidden = state
    np.testing.assert_allclose(block(inputs).numpy(), x + hidden, rtol=1e-4, atol=1e-4)
    # Recurrence re-uses the kernels: t = 3 has the same parameters but computes something else.
    deeper = R2Block(6, recurrence=3, normalization="none")
    deeper.build(inputs.shape)
    deeper.set_weights(block.get_weights())
    assert deeper.count_params() == block.count_params()
    assert np.abs(deeper(inputs).numpy() - block(inputs).numpy()).max() > 1e-3


def test_r2_block_has_a_normalisation_per_time_step():
    block = R2Block(8, recurrence=2, normalization="batch")
    block.build((None, 4, 4, 3))
    norms = [layer for layer in block._flatten_layers() if isinstance(layer, FusedBatchNormalization)]
    assert len(norms) == 2 * 3


def test_attention_gate_matches_oktay_formula():
    gate = AttentionGate(inter_channels=4)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
    g = rng.standard_normal((2, 4, 4, 10)).astype(np.float32)
    output = gate([x, g]).numpy()
    joint = np.maximum(_conv(x, gate.theta_x) + _conv(g, gate.phi_g), 0.0)
    alpha = 1.0 / (1.0 + np.exp(-_conv(joint, gate.psi)))
    alpha_up = tf.image.resize(alpha, (8, 8), method="bilinear").numpy()
    np.testing.assert_allclose(output, x * alpha_up, rtol=1e-4, atol=1e-5)
    attention = gate.attention(x, g).numpy()
    assert attention.shape == (2, 8, 8, 1) and 0.0 < attention.min() and attention.max() < 1.0
    # The gating signal decides the weights: another g gives another map.
    assert np.abs(gate.attention(x, -g).numpy() - attention).max() > 1e-3
    # A strongly negative psi bias closes the gate.
    gate.psi.bias.assign([-30.0])
    assert np.abs(gate([x, g]).numpy()).max() < 1e-6


def test_fused_batch_norm_matches_keras_and_freezes_as_keras():
    rng = np.random.default_rng(2)
    images = rng.normal(3.0, 2.0, (16, 5, 5, 4)).astype(np.float32)
    fused = FusedBatchNormalization(momentum=0.9)
    reference = keras.layers.BatchNormalization(momentum=0.9, center=False, scale=False)
    out_fused = fused(images, training=True).numpy()
    out_reference = reference(images, training=True).numpy()
    np.testing.assert_allclose(out_fused, out_reference, atol=1e-4)
    np.testing.assert_allclose(out_fused.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.1 * images.mean(axis=(0, 1, 2)), rtol=1e-5)
    count = images.shape[0] * images.shape[1] * images.shape[2]
    unbiased = images.var(axis=(0, 1, 2)) * count / (count - 1)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * unbiased, rtol=1e-5)
    # Inference uses the moving statistics.
    mean, variance = fused.moving_mean.numpy(), fused.moving_variance.numpy()
    np.testing.assert_allclose(fused(images, training=False).numpy(), (images - mean) / np.sqrt(variance + 1e-3),
                               rtol=1e-4, atol=1e-4)
    # Keras 3 convention: a frozen layer runs in inference mode and keeps its statistics.
    fused.trainable = False
    frozen = fused(images, training=True).numpy()
    np.testing.assert_array_equal(fused.moving_mean.numpy(), mean)
    np.testing.assert_allclose(frozen, (images - mean) / np.sqrt(variance + 1e-3), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("block_class", [ResidualBlock, PlainBlock, R2Block])
def test_blocks_output_width(block_class):
    block = block_class(12)
    assert block(np.zeros((2, 8, 8, 5), np.float32), training=True).shape == (2, 8, 8, 12)


def test_unet_pads_odd_sizes_and_round_trips_through_keras_file(tmp_path):
    assert padding_for(28, 4) == (2, 2) and padding_for(32, 3) == (0, 0)
    network = build_unet(28, widths=[8, 16, 16, 32], block_kind="r2", attention_gates=True, embedding_dims=8)
    for weight in network.weights:  # the zero-initialised output conv would hide differences
        if weight.trainable:
            weight.assign(np.random.default_rng(3).normal(0, 0.1, weight.shape).astype(np.float32))
    inputs = [np.random.default_rng(4).standard_normal((2, 28, 28, 3)).astype(np.float32),
              np.full((2, 1, 1, 1), 0.3, np.float32)]
    output = network(inputs).numpy()
    assert output.shape == (2, 28, 28, 3)
    network.save(tmp_path / "unet.keras")
    loaded = keras.saving.load_model(tmp_path / "unet.keras", safe_mode=True)
    np.testing.assert_allclose(loaded(inputs).numpy(), output, atol=1e-5)


def test_fresh_unet_predicts_zero_noise():
    network = build_unet(16, widths=[4, 8], block_kind="residual", attention_gates=False)
    output = network([np.ones((1, 16, 16, 3), np.float32), np.full((1, 1, 1, 1), 0.5, np.float32)]).numpy()
    np.testing.assert_array_equal(output, 0.0)
