"""Hyperparameters of the AC-GAN built on a trained Vanilla-GAN (Klang & Carlberg 2020, sections 4.5, 5.2).

K&C Table 3: batch 32, 1 epoch, latent dimension 100, 19 classes, alpha_G = alpha_D = 2e-4.
Section 5.2: three fully connected layers of 100 ReLU units between the input
(latent + label) and the frozen generator, and three more between the frozen
discriminator's convolutions and the auxiliary classifier. The number of
classes is not a config field: it comes from the training data.

Example:
    >>> config = ACGANConfig(backbone="runs/gan", image_size=32)
    >>> config.head_layers, config.head_units
    (3, 100)
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from cellgen.config import at_least, one_of
from cellgen.gan.config import AdversarialConfig

HEAD_OUTPUT_ACTIVATIONS = ("relu", "linear")


@dataclasses.dataclass
class ACGANConfig(AdversarialConfig):
    """Config of ``train_acgan.py`` (run kind ``acgan``).

    Attributes:
        backbone: the ``vanilla_gan`` run whose generator and discriminator the AC-GAN wraps.
        backbone_epoch: saved epoch of the backbone (0: its latest saved epoch).
        freeze_backbone: True (K&C) freezes the backbone's convolutions and batch norm
            (inference mode) and trains only the dense heads and the realness layer;
            False trains the whole AC-GAN from scratch with the backbone's architecture
            (K&C's first attempts, which they found worse; kept for comparison).
        image_size, latent_dim: the backbone run's; ``train_acgan.py`` takes them from
            ``--backbone`` unless given explicitly (then they must agree with it).
        head_layers: dense layers of each head (K&C: 3).
        head_units: units of each hidden head layer (K&C: 100).
        generator_head_output: activation of the generator head's last layer, which produces
            the backbone's latent vector: ``relu`` (K&C's text: every head layer is ReLU)
            or ``linear`` (lets the head reach the negative half of the N(0, I) latent space).
        samples_per_class: columns of the per-epoch class grid (one row per class).
        g_learning_rate, d_learning_rate (K&C Table 3: 2e-4, the default), g_beta_1, d_beta_1
            (0.5, DCGAN; not in Table 3), sample_every, save_every, checkpoint_every,
            keep_checkpoints, jit_compile, and DiffAugment/ADA on the discriminator's inputs
            (augment, ada, ada_target, ada_kimg): see :class:`cellgen.gan.config.AdversarialConfig`.
    """

    kind: ClassVar[str] = "acgan"
    ranges = {
        **dict.fromkeys(("latent_dim", "head_layers", "head_units", "samples_per_class"), at_least(1)),
        "generator_head_output": one_of(*HEAD_OUTPUT_ACTIVATIONS),
        "backbone_epoch": at_least(0, note="0 = latest"),
    }

    image_size: int = 256
    batch_size: int = 32
    epochs: int = 1
    backbone: str = ""
    backbone_epoch: int = 0
    freeze_backbone: bool = True
    latent_dim: int = 100
    head_layers: int = 3
    head_units: int = 100
    generator_head_output: str = "relu"
    samples_per_class: int = 8

