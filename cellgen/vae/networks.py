"""Encoder and decoder of the convolutional VAE (Matos 2025, section 4.1).

Encoder: stride-2 convolutions (32, 64, 128 filters, ReLU), flatten, then two
dense layers giving the mean and the log-variance of q(z|x). Decoder: a dense
layer maps z to a (s, s, 128) feature map with s = image_size // 2**depth, then
stride-2 transposed convolutions (ReLU) double it ``depth`` times and a last
transposed convolution produces the 3-channel logits at exactly image_size
(at 28 px: 3 -> 6 -> 12 -> 24, then a 5x5 "valid" layer to 28, as in the paper's
code). With ``num_classes > 0`` the model is a conditional VAE (Sohn et al. 2015,
"Learning Structured Output Representation using Deep Conditional Generative
Models"): a one-hot label is concatenated to the encoder's flattened features
and to z.

Deliberate differences from Matos' code: "same" padding in the encoder (28 ->
14 -> 7 -> 4 instead of 3), and the last upsampling layer keeps
``encoder_filters[0]`` channels instead of squeezing through a 3-channel ReLU.
The decoder returns logits in float32; the sigmoid is applied by the loss
(``from_logits``, numerically stable) and by :func:`logits_to_images`.

Example:
    >>> encoder = build_encoder(28, latent_dim=64, num_classes=8)   # doctest: +SKIP
    >>> mean, log_variance = encoder([images, labels])               # doctest: +SKIP
    >>> decoder = build_decoder(28, latent_dim=64, num_classes=8)   # doctest: +SKIP
    >>> logits = decoder([z, labels])                                 # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import layers


def decoder_start_size(image_size: int, depth: int) -> int:
    """Side of the decoder's first feature map: ``image_size // 2**depth`` (3 at 28 px, depth 3)."""
    start = image_size // (2 ** depth)
    if start < 1:
        raise ValueError(f"image_size {image_size} is too small for {depth} stride-2 layers")
    return start


def _conditioned(features, num_classes: int):
    """``(features joined with a one-hot class label, the labels input)``; ``(features, None)``
    when ``num_classes`` is 0 (an unconditional network)."""
    if not num_classes:
        return features, None
    labels = keras.Input((), dtype="int32", name="labels")
    one_hot = layers.CategoryEncoding(num_classes, output_mode="one_hot", name="label_one_hot")(labels)
    return layers.Concatenate(name="condition")([features, one_hot]), labels


def build_encoder(image_size: int, latent_dim: int = 64, filters: Sequence[int] = (32, 64, 128),
                  num_classes: int = 0, kernel_size: int = 4, name: str = "cvae_encoder") -> keras.Model:
    """The encoder q(z | x[, y]) as a functional model.

    Args:
        image_size: side of the square RGB input images (in [-1, 1]).
        latent_dim: size of z.
        filters: filters of the stride-2 convolutions, one per halving.
        num_classes: classes of the one-hot condition; 0 builds an unconditional encoder.
        kernel_size: convolution kernel.
        name: model name.

    Returns:
        A model mapping ``images`` (or ``[images, labels]`` when conditional; labels int32
        of shape (batch,)) to ``[mean, log_variance]``, both float32 (batch, latent_dim).
    """
    images = keras.Input((image_size, image_size, 3), name="images")
    features = images
    for index, count in enumerate(filters):
        features = layers.Conv2D(count, kernel_size, strides=2, padding="same", activation="relu",
                                 name=f"conv{index + 1}")(features)
    features, labels = _conditioned(layers.Flatten(name="flatten")(features), num_classes)
    # The Gaussian's parameters enter the KL loss: keep them in float32 under mixed precision.
    mean = layers.Dense(latent_dim, dtype="float32", name="mean")(features)
    log_variance = layers.Dense(latent_dim, dtype="float32", name="log_variance")(features)
    return keras.Model([images, labels] if num_classes else images, [mean, log_variance], name=name)


def build_decoder(image_size: int, latent_dim: int = 64, filters: Sequence[int] = (32, 64, 128),
                  num_classes: int = 0, kernel_size: int = 4, name: str = "cvae_decoder") -> keras.Model:
    """The decoder p(x | z[, y]) as a functional model returning float32 logits.

    Args:
        image_size: side of the square RGB output.
        latent_dim: size of z.
        filters: the *encoder's* filters; the decoder mirrors them (128 -> 64 -> 32).
        num_classes: classes of the one-hot condition; 0 builds an unconditional decoder.
        kernel_size: transposed-convolution kernel.
        name: model name.

    Returns:
        A model mapping ``z`` (or ``[z, labels]``) to logits (batch, image_size, image_size, 3);
        ``sigmoid(logits)`` is the Bernoulli mean in [0, 1] (see :func:`logits_to_images`).
    """
    filters = list(filters)
    depth = len(filters)
    start = decoder_start_size(image_size, depth)
    z = keras.Input((latent_dim,), name="z")
    features, labels = _conditioned(z, num_classes)
    # Linear projection, as in Matos' decoder (the first transposed convolution adds the ReLU).
    features = layers.Dense(start * start * filters[-1], name="project")(features)
    features = layers.Reshape((start, start, filters[-1]), name="reshape")(features)
    upsampling_filters = filters[-2::-1] + [filters[0]]
    for index, count in enumerate(upsampling_filters):
        features = layers.Conv2DTranspose(count, kernel_size, strides=2, padding="same", activation="relu",
                                          name=f"deconv{index + 1}")(features)
    reached = start * 2 ** depth
    if reached < image_size:
        # A "valid" transposed convolution adds kernel - 1 pixels: 24 + 5 - 1 = 28 at 28 px.
        logits = layers.Conv2DTranspose(3, image_size - reached + 1, padding="valid", dtype="float32",
                                        name="logits")(features)
    else:
        logits = layers.Conv2DTranspose(3, 3, padding="same", dtype="float32", name="logits")(features)
    return keras.Model([z, labels] if num_classes else z, logits, name=name)


def logits_to_images(logits):
    """Decoder logits -> images in [-1, 1] (sigmoid in float32, then 2p - 1)."""
    probabilities = keras.ops.sigmoid(keras.ops.cast(logits, "float32"))
    return probabilities * 2.0 - 1.0
