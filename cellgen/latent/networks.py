"""The image-to-latent encoder of Klang & Carlberg (2020), section 4.6 and Figure 26.

K&C: "Since the problem is quite similar to the one solved by the discriminator in
the Vanilla-GAN model, we adopted a similar architecture, changing the output
from a scalar to a 100-dimensional vector." The encoder is therefore the
Vanilla-GAN discriminator's convolution stack (same kernel, depths and stride-2
layers as the generator run's discriminator) followed by a linear dense layer
with ``latent_dim`` outputs::

    image -> [Conv "d_conv_i" stride 2 -> (BN) -> LeakyReLU -> (Dropout)] x d_layers
          -> Flatten "d_features" -> Dense "e_latent" (latent_dim, linear, float32)

Example:
    >>> gan_config = VanillaGANConfig(image_size=32, depth_g=32, depth_d=8, d_layers=3)
    >>> build_encoder(gan_config).output_shape
    (None, 100)
"""

from __future__ import annotations

import keras

from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.networks import FEATURES_LAYER, build_discriminator

ENCODER_NAME = "encoder"
LATENT_LAYER = "e_latent"


def build_encoder(gan_config: VanillaGANConfig, depth: int = 0, dropout: float = 0.0) -> keras.Model:
    """An encoder shaped like the GAN's discriminator, image (S, S, 3) -> latent (latent_dim,).

    Args:
        gan_config: config of the generator run (image size, latent size, discriminator shape).
        depth: filters of the first convolution (0: the discriminator's ``depth_d``).
        dropout: dropout after each convolution (0 disables it; the encoder is a
            regression, so it is off by default, unlike the discriminator's 0.3).
    """
    shape = gan_config.replace(depth_d=depth or gan_config.depth_d, dropout=dropout)
    trunk = build_discriminator(shape)
    features = trunk.get_layer(FEATURES_LAYER).output
    # Linear output in float32: latents are regression targets compared through G.
    latent = keras.layers.Dense(gan_config.latent_dim, dtype="float32", name=LATENT_LAYER)(features)
    return keras.Model(trunk.input, latent, name=ENCODER_NAME)
