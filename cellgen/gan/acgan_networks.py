"""The AC-GAN's networks: heads around a pre-trained Vanilla-GAN (Klang & Carlberg 2020, sections 3.13, 4.5, 5.2).

Networks (K&C Figures 24-25)::

    generator:      [z (latent_dim), one-hot class (C)] -> concat
                      -> Dense(100, ReLU) x (head_layers - 1) -> Dense(latent_dim, "generator_head_output")
                      -> backbone generator (frozen)                          -> image
    discriminator:  image -> backbone convolution trunk (frozen) -> features
                      -> backbone "d_realness" (trainable)                   -> realness logit
                      -> Dense(100, ReLU) x head_layers -> Dense(C) softmax  -> class probabilities

Example:
    >>> generator, discriminator, backbone_config = load_gan_models("runs/gan")          # doctest: +SKIP
    >>> freeze_backbone_networks(generator, discriminator)                                # doctest: +SKIP
    >>> acgan_g, acgan_d = build_acgan_networks(generator, discriminator, num_classes=8,
    ...                                         config=ACGANConfig(backbone="runs/gan"))  # doctest: +SKIP
    >>> images = acgan_g([latents, keras.ops.one_hot(labels, 8)], training=False)         # doctest: +SKIP
"""

from __future__ import annotations

import keras

from cellgen.config import ConfigError
from cellgen.gan.acgan_config import ACGANConfig
from cellgen.gan.networks import REALNESS_LAYER, discriminator_trunk

ACGAN_GENERATOR = "acgan_generator"
ACGAN_DISCRIMINATOR = "acgan_discriminator"
CLASS_OUTPUT = "aux_class"


def freeze_backbone_networks(generator: keras.Model, discriminator: keras.Model) -> None:
    """Freezes the backbone generator and the discriminator's convolution trunk (K&C section 4.5).

    ``trainable=False`` also puts batch normalization in inference mode (Keras 3), so
    moving statistics stay those of the Vanilla-GAN. The realness layer stays trainable.
    """
    generator.trainable = False
    for layer in discriminator.layers:
        layer.trainable = layer.name == REALNESS_LAYER


def build_acgan_networks(generator: keras.Model, discriminator: keras.Model, num_classes: int,
                         config: ACGANConfig) -> tuple[keras.Model, keras.Model]:
    """Wraps a Vanilla-GAN's networks into the AC-GAN generator and discriminator.

    Call inside ``strategy.scope()``; freeze the backbone first with
    :func:`freeze_backbone_networks` when ``config.freeze_backbone``.

    Args:
        generator: backbone generator, input (latent_dim,), output (H, W, 3).
        discriminator: backbone discriminator with ``d_features`` and ``d_realness`` layers.
        num_classes: classes of the auxiliary classifier (from the data).
        config: head sizes and activations.

    Returns:
        ``(acgan_generator, acgan_discriminator)``: the generator takes ``[latent, one_hot]``;
        the discriminator returns ``[realness_logit (N, 1), class_probabilities (N, C)]``.
    """
    if num_classes < 2:
        raise ConfigError(f"an AC-GAN needs at least 2 classes in the training data, got {num_classes}")
    latent_dim = int(generator.input_shape[-1])
    latent = keras.Input((latent_dim,), name="latent")
    one_hot = keras.Input((num_classes,), name="class_one_hot")
    x = keras.layers.Concatenate(name="g_head_concat")([latent, one_hot])
    for index in range(config.head_layers - 1):
        x = keras.layers.Dense(config.head_units, activation="relu", name=f"g_head_{index}")(x)
    x = keras.layers.Dense(latent_dim, activation=config.generator_head_output,
                           name=f"g_head_{config.head_layers - 1}")(x)
    image = generator(x)
    acgan_generator = keras.Model([latent, one_hot], image, name=ACGAN_GENERATOR)

    trunk = discriminator_trunk(discriminator)
    image_in = keras.Input(tuple(discriminator.input_shape[1:]), name="image")
    features = trunk(image_in)
    # The pre-trained realness layer, shared with the backbone discriminator (trainable, K&C 4.5).
    realness = discriminator.get_layer(REALNESS_LAYER)(features)
    h = features
    for index in range(config.head_layers):
        h = keras.layers.Dense(config.head_units, activation="relu", name=f"d_head_{index}")(h)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="aux_logits")(h)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name=CLASS_OUTPUT)(logits)
    acgan_discriminator = keras.Model(image_in, [realness, probabilities], name=ACGAN_DISCRIMINATOR)
    return acgan_generator, acgan_discriminator
