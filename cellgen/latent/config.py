"""Config of the image-to-latent encoder (Klang & Carlberg 2020, section 4.6), run kind ``latent_encoder``.

Example:
    >>> config = LatentEncoderConfig(generator="runs/gan", data="train", out="runs/enc", image_size=32)
    >>> config.learning_rate
    1e-05
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import GeneratorRunConfig, above, at_least, between

# Fields that decide the encoder's weights or what it inverts: a resumed run keeps them.
FIXED_ON_RESUME = ("image_size", "generator", "generator_epoch", "depth", "dropout")


@dataclasses.dataclass
class LatentEncoderConfig(GeneratorRunConfig):
    """Config of ``train_latent_encoder.py`` (run kind ``latent_encoder``).

    Attributes:
        generator: the ``vanilla_gan`` run whose frozen generator decodes the latents.
        generator_epoch: its saved epoch (0: the latest; the run records the resolved one).
        learning_rate: Adam learning rate (K&C section 4.6: 1e-5).
        beta_1: Adam first-moment decay (Keras default 0.9; not given by K&C).
        depth: filters of the encoder's first convolution (0: the generator run's ``depth_d``).
        dropout: dropout after each encoder convolution (0: none).
        sample_count: real images (fixed, the first of the data) shown with their reconstructions each epoch.
        sample_every, save_every, checkpoint_every, keep_checkpoints: see :class:`cellgen.config.GeneratorRunConfig`.
    """

    kind: ClassVar[str] = "latent_encoder"
    ranges = {
        "learning_rate": above(0),
        **dict.fromkeys(("beta_1", "dropout"), between(0, 1, high_open=True)),
        "depth": at_least(0, note="0 = the discriminator's depth_d"),
        "generator_epoch": at_least(0, note="0 = latest"),
        "sample_count": at_least(1),
    }

    image_size: int = 256
    batch_size: int = 32
    epochs: int = 10
    generator: str = ""
    generator_epoch: int = 0
    learning_rate: float = 1e-5
    beta_1: float = 0.9
    depth: int = 0
    dropout: float = 0.0
    sample_count: int = 8

