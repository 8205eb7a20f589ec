"""Config of the image-to-latent encoder (Klang & Carlberg 2020, section 4.6), run kind ``latent_encoder``.

Example:
    >>> config = LatentEncoderConfig(generator="runs/gan", data="train", out="runs/enc", image_size=32)
    >>> config.learning_rate
    1e-05
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import CommonConfig, ConfigError

# Fields that decide the encoder's weights or what it inverts: a resumed run keeps them.
FIXED_ON_RESUME = ("image_size", "generator", "generator_epoch", "depth", "dropout")


@dataclasses.dataclass
class LatentEncoderConfig(CommonConfig):
    """Config of ``train_latent_encoder.py`` (run kind ``latent_encoder``).

    Attributes:
        generator: the ``vanilla_gan`` run whose frozen generator decodes the latents.
        generator_epoch: its saved epoch (0: the latest; the run records the resolved one).
        learning_rate: Adam learning rate (K&C section 4.6: 1e-5).
        beta_1: Adam first-moment decay (Keras default 0.9; not given by K&C).
        depth: filters of the encoder's first convolution (0: the generator run's ``depth_d``).
        dropout: dropout after each encoder convolution (0: none).
        sample_count: real images (fixed, the first of the data) shown with their reconstructions each epoch.
        sample_every, save_every, checkpoint_every, keep_checkpoints: periods in epochs, checkpoints kept.
    """

    kind: ClassVar[str] = "latent_encoder"

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
    sample_every: int = 1
    save_every: int = 1
    checkpoint_every: int = 1
    keep_checkpoints: int = 2

    def validate(self) -> None:
        super().validate()
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.beta_1 < 1:
            raise ConfigError(f"beta_1 must be in [0, 1), got {self.beta_1}")
        if self.depth < 0:
            raise ConfigError(f"depth must be >= 0 (0 = the discriminator's depth_d), got {self.depth}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.generator_epoch < 0:
            raise ConfigError(f"generator_epoch must be >= 0 (0 = latest), got {self.generator_epoch}")
        for name in ("sample_count", "sample_every", "save_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
