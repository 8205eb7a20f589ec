"""FreezeD fine-tuning: freeze some discriminator convolutions and, optionally, the generator's batch norm.

FreezeD (Mo, Cho & Shin 2020, "Freeze the Discriminator: a Simple Baseline for
Fine-Tuning GANs") fine-tunes a GAN trained on a large set on a small one with
the *lower* (input-side) discriminator layers frozen and everything else
trainable. Nilsson & Zettergren (2023, section 5.1) write that they froze "the
two last convolutional layers in the discriminator" and "all batch
normalization layers" of the generator. Both readings are supported:
``side="input"`` (the paper, the default) and ``side="output"`` (N&Z's text).

A frozen discriminator convolution takes its batch norm with it (only
discriminators with ``d_batch_norm`` have one). In Keras 3, ``trainable=False``
on a batch-normalization layer also puts it in inference mode: it normalizes
with its moving statistics and stops updating them, which is what freezing
the generator's batch norm means here.

Example:
    >>> summary = apply_freezed(generator, discriminator, freeze_d_layers=2, side="output",
    ...                         freeze_g_batchnorm=True)                       # doctest: +SKIP
    >>> summary["frozen_discriminator_layers"]                                  # doctest: +SKIP
    ['d_conv_3', 'd_conv_4']
"""

from __future__ import annotations

import keras

from cellgen.config import ConfigError
from cellgen.gan.config import FREEZE_SIDES
from cellgen.gan.networks import discriminator_conv_layers


def select_discriminator_layers(discriminator: keras.Model, count: int, side: str = "input") -> list[str]:
    """Names of the ``count`` discriminator convolutions nearest the input or the output.

    Raises:
        ConfigError: ``count`` is negative or larger than the number of convolutions, or ``side`` is unknown.
    """
    if side not in FREEZE_SIDES:
        raise ConfigError(f"freeze_d_side must be 'input' or 'output', got {side!r}")
    convs = [layer.name for layer in discriminator_conv_layers(discriminator)]
    if not 0 <= count <= len(convs):
        raise ConfigError(f"freeze_d_layers={count}, but the discriminator has {len(convs)} convolutions")
    if count == 0:
        return []
    return convs[:count] if side == "input" else convs[-count:]


def _block_layers(discriminator: keras.Model, conv_name: str) -> list[keras.layers.Layer]:
    """A convolution and its batch norm (``d_conv_i`` and ``d_bn_i``)."""
    index = conv_name.rsplit("_", 1)[1]
    names = {conv_name, f"d_bn_{index}"}
    return [layer for layer in discriminator.layers if layer.name in names]


def freeze_discriminator_layers(discriminator: keras.Model, count: int, side: str = "input") -> list[str]:
    """Sets ``trainable=False`` on the chosen convolutions (and their batch norms); returns their names."""
    chosen = select_discriminator_layers(discriminator, count, side)
    frozen = []
    for conv_name in chosen:
        for layer in _block_layers(discriminator, conv_name):
            layer.trainable = False
            frozen.append(layer.name)
    return frozen


def generator_batchnorm_layers(generator: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in generator.layers if isinstance(layer, keras.layers.BatchNormalization)]


def freeze_generator_batchnorm(generator: keras.Model) -> list[str]:
    """Freezes every batch norm of the generator (weights fixed, inference mode); returns their names."""
    layers = generator_batchnorm_layers(generator)
    for layer in layers:
        layer.trainable = False
    return [layer.name for layer in layers]


def apply_freezed(generator: keras.Model, discriminator: keras.Model, freeze_d_layers: int, side: str = "input",
                  freeze_g_batchnorm: bool = False) -> dict:
    """Applies FreezeD before compiling; returns what was frozen (for the run's records).

    Args:
        generator, discriminator: the networks loaded from the base run.
        freeze_d_layers: how many discriminator convolutions to freeze.
        side: ``input`` (Mo et al. 2020) or ``output`` (N&Z 2023 section 5.1).
        freeze_g_batchnorm: also freeze every generator batch norm (N&Z).
    """
    frozen_d = freeze_discriminator_layers(discriminator, freeze_d_layers, side)
    frozen_g = freeze_generator_batchnorm(generator) if freeze_g_batchnorm else []
    return {
        "freeze_d_side": side,
        "frozen_discriminator_layers": frozen_d,
        "frozen_generator_layers": frozen_g,
        "trainable_discriminator_weights": int(sum(int(keras.ops.size(v)) for v in discriminator.trainable_weights)),
        "trainable_generator_weights": int(sum(int(keras.ops.size(v)) for v in generator.trainable_weights)),
    }
