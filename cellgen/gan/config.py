"""Hyperparameters of the unconditional DCGAN-style "Vanilla-GAN" and its FreezeD fine-tuning.

Sources:

- Klang & Carlberg (2020), sections 4.3-4.4 and Table 1: a DCGAN (Radford et al.
  2016) at 256 px, transposed convolutions with 5x5 kernels and stride 2, batch
  norm and LeakyReLU in the generator, LeakyReLU and dropout in the
  discriminator, latent 100, depth 1024 (generator) / 64 (discriminator), Adam
  1e-5 for both networks, batch 20, 75 epochs.
- Nilsson & Zettergren (2023), section 4.2, Tables 5-6: the same network with
  nearest up-sampling + stride-1 convolution and 6x6 kernels (the checkerboard
  fix of Odena et al. 2016), a discriminator update ratio, and FreezeD
  fine-tuning (Mo et al. 2020) of a base model on one class.
- Matos (2025), section 4.2: a 28 px DCGAN with ReLU generator, batch-normalized
  discriminator, Adam 1e-3 / beta_1 0.5, label smoothing 0.9 / 0.1 and three
  generator updates per discriminator update.

The presets in ``configs/`` (``kc2020_vanilla_gan``, ``nz2023_gan_base``,
``nz2023_gan_finetune``, ``matos2025_dcgan28``, ``gan_fast``) set these fields.

Example:
    >>> config = VanillaGANConfig(image_size=64, depth_g=128, depth_d=32, d_layers=3)
    >>> config.upsampling_layers
    4
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

from cellgen.config import ConfigError, FinetuneConfig, GeneratorRunConfig, above, at_least, between, one_of
from cellgen.config import load_config  # noqa: F401  (doctest)

UPSAMPLING_KINDS = ("transposed", "nearest")
# DiffAugment policies (Zhao et al. 2020), applied in this order: see cellgen.gan.diffaugment.
AUGMENT_POLICIES = ("color", "translation", "cutout")
ACTIVATIONS = ("leaky_relu", "relu")
FREEZE_SIDES = ("input", "output")

# Fields that fix the networks' layers and weight shapes. A resumed run and a
# fine-tuning run keep them from the run they continue.
ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "start_size", "depth_g", "depth_d", "kernel_size",
                       "upsampling", "d_layers", "d_batch_norm", "g_activation")


@dataclasses.dataclass
class AdversarialConfig(GeneratorRunConfig):
    """What every cellgen GAN config has besides :class:`CommonConfig`: differentiable augmentation.

    Subclasses: :class:`VanillaGANConfig`, :class:`cellgen.gan.acgan_config.ACGANConfig`.

    Attributes:
        g_learning_rate, d_learning_rate: Adam learning rates of the generator and the discriminator.
        g_beta_1, d_beta_1: Adam first-moment decays (0.5, DCGAN).
        sample_every: write ``samples/epoch-NNNN.png`` (from fixed latents) every this many epochs.
        save_every: keep the networks under ``models/`` every this many epochs (and the last).
        jit_compile: compile the train step with XLA (off: on CPUs oneDNN's bf16 kernels are faster).
        augment: DiffAugment policies (Zhao et al. 2020) applied to every image the
            discriminator sees, real and generated, in its own update and in the generator's
            loss (never to saved or shown images): any of ``color`` (brightness, saturation,
            contrast), ``translation`` (up to 1/8 of the side, zero fill) and ``cutout`` (a
            square of half the side set to 0); empty: off.
        ada: adaptive augmentation strength (Karras et al. 2020, ADA): each policy is applied to
            an image with probability p, which starts at 0 and follows the discriminator's
            over-confidence on real images; needs ``augment``. p is logged as ``ada_p``.
        ada_target: target of r_t = E[sign(D(real))] (Karras et al.: 0.6); p rises while r_t
            is above it and falls while below.
        ada_kimg: thousands of real images over which p can move from 0 to 1 (Karras et al.
            use 500 for runs of millions of images; 10 suits the few-thousand-step fine-tunes
            of rare classes here).
    """

    ranges = {
        **dict.fromkeys(("g_learning_rate", "d_learning_rate"), above(0)),
        **dict.fromkeys(("g_beta_1", "d_beta_1"), between(0, 1, high_open=True)),
        "ada_target": between(0, 1, low_open=True, high_open=True),
        "ada_kimg": above(0),
    }

    g_learning_rate: float = 2e-4
    d_learning_rate: float = 2e-4
    g_beta_1: float = 0.5
    d_beta_1: float = 0.5
    jit_compile: bool = False
    augment: list[str] = dataclasses.field(default_factory=list)
    ada: bool = False
    ada_target: float = 0.6
    ada_kimg: float = 10.0

    def validate(self) -> None:
        super().validate()
        # A list option: the message names every unknown policy (not only the first, as a range would).
        unknown = [name for name in self.augment if name not in AUGMENT_POLICIES]
        if unknown:
            raise ConfigError(f"augment: unknown polic{'ies' if len(unknown) > 1 else 'y'} "
                              f"{', '.join(map(repr, unknown))}; valid: {', '.join(AUGMENT_POLICIES)}")
        if self.ada and not self.augment:
            raise ConfigError("ada adapts the probability of the augment policies: set augment too "
                              f"(e.g. --set augment={','.join(AUGMENT_POLICIES)})")


@dataclasses.dataclass
class VanillaGANConfig(AdversarialConfig, FinetuneConfig):
    """Config of ``train_vanilla_gan.py`` (run kind ``vanilla_gan``).

    Defaults are Klang & Carlberg's Table 1 where the table gives a value.

    Attributes:
        latent_dim: size of the Gaussian latent vector z (K&C, N&Z: 100).
        start_size: side of the generator's first feature map (after the dense
            projection). ``image_size`` must be ``start_size * 2**n`` with n >= 1;
            n is the number of stride-2 up-sampling layers.
        depth_g: channels of the generator's first feature map (K&C "Depth_G" 1024);
            each up-sampling layer halves it, the last one outputs RGB.
        depth_d: filters of the discriminator's first convolution (K&C "Depth_D" 64);
            each further convolution doubles it.
        d_layers: stride-2 convolutions of the discriminator.
        kernel_size: kernel of every (transposed) convolution (K&C 5, N&Z 6).
        upsampling: ``transposed`` (stride-2 transposed convolution, K&C) or
            ``nearest`` (nearest-neighbour x2 then a stride-1 convolution, N&Z).
        g_activation: ``leaky_relu`` (K&C, N&Z) or ``relu`` (Matos) in the generator.
        leaky_slope: negative slope of LeakyReLU.
        dropout: dropout rate after every discriminator convolution (0 disables it).
        d_batch_norm: batch norm after every discriminator convolution but the
            first (DCGAN and Matos; K&C and N&Z have none).
        bn_momentum: momentum of the moving batch statistics that sampling uses.
        init_std: standard deviation of the normal weight initializer (DCGAN:
            0.02); 0 keeps Keras' Glorot-uniform default.
        g_learning_rate, d_learning_rate: Adam learning rates (K&C Table 1: 1e-5).
        real_label, fake_label: discriminator targets (label smoothing, Matos: 0.9 / 0.1).
        d_steps: discriminator updates per generator update (N&Z "discriminator update ratio");
            each sees the step's real batch with a fresh fake batch, so an epoch is still one
            pass over the real images.
        g_steps: generator updates per discriminator update (Matos 3:1).
        save_every: keep ``models/{generator,discriminator}-epoch-NNNN.keras`` every
            this many epochs (the last epoch is always kept).
        sample_count: images in a sample grid.
        class_name: train on this class only (fine-tuning on a rare class).
        finetune_from: base run directory whose generator and discriminator start the training.
        finetune_epoch: saved epoch of the base run (0: its latest saved epoch).
        freeze_d_layers: discriminator convolutions (with their batch norm) frozen when fine-tuning.
        freeze_d_side: ``input`` freezes the first ``freeze_d_layers`` (FreezeD, Mo et al. 2020),
            ``output`` the last ones (what N&Z section 5.1 writes they did).
        freeze_g_batchnorm: freeze every generator batch norm (gamma, beta and moving statistics;
            inference mode), as N&Z did when fine-tuning.
        g_beta_1, d_beta_1, sample_every, checkpoint_every, keep_checkpoints, jit_compile, augment, ada,
            ada_target, ada_kimg: see :class:`AdversarialConfig`.

    Example:
        >>> config = load_config(VanillaGANConfig, "nz2023_gan_base", ["image_size=128"])
        >>> config.generator_depths()
        [1024, 512, 256, 128, 64, 3]
    """

    kind: ClassVar[str] = "vanilla_gan"
    ranges = {
        **dict.fromkeys(("latent_dim", "start_size", "depth_g", "depth_d", "d_layers", "kernel_size", "d_steps",
                         "g_steps", "sample_count"), at_least(1)),
        "upsampling": one_of(*UPSAMPLING_KINDS),
        "g_activation": one_of(*ACTIVATIONS),
        "leaky_slope": at_least(0),
        **dict.fromkeys(("dropout", "bn_momentum"), between(0, 1, high_open=True)),
        "init_std": at_least(0, note="0 = Glorot uniform"),
        **dict.fromkeys(("real_label", "fake_label"), between(0, 1)),
        "freeze_d_side": one_of(*FREEZE_SIDES, note="input: FreezeD, Mo et al. 2020; output: N&Z section 5.1"),
    }

    image_size: int = 256
    epochs: int = 75
    batch_size: int = 20
    latent_dim: int = 100
    start_size: int = 4
    depth_g: int = 1024
    depth_d: int = 64
    d_layers: int = 5
    kernel_size: int = 5
    upsampling: str = "transposed"
    g_activation: str = "leaky_relu"
    leaky_slope: float = 0.2
    dropout: float = 0.3
    d_batch_norm: bool = False
    bn_momentum: float = 0.9
    init_std: float = 0.02
    g_learning_rate: float = 1e-5  # K&C Table 1 (AdversarialConfig's 2e-4 is DCGAN's)
    d_learning_rate: float = 1e-5
    real_label: float = 1.0
    fake_label: float = 0.0
    d_steps: int = 1
    g_steps: int = 1
    save_every: int = 5
    sample_count: int = 16
    freeze_d_layers: int = 0
    freeze_d_side: str = "input"
    freeze_g_batchnorm: bool = False

    @property
    def upsampling_layers(self) -> int:
        """Stride-2 up-sampling layers of the generator: log2(image_size / start_size)."""
        return int(round(math.log2(self.image_size / self.start_size)))

    def generator_depths(self) -> list[int]:
        """Channels of the projection and of every up-sampling layer (the last is RGB)."""
        layers = self.upsampling_layers
        return [self.depth_g // 2 ** index for index in range(layers)] + [3]

    def discriminator_depths(self) -> list[int]:
        return [self.depth_d * 2 ** index for index in range(self.d_layers)]

    def validate(self) -> None:
        super().validate()
        ratio = self.image_size / self.start_size
        if ratio < 2 or not float(ratio).is_integer() or int(ratio) & (int(ratio) - 1):
            raise ConfigError(f"image_size {self.image_size} must be start_size {self.start_size} times a power "
                              f"of two (>= 2); e.g. start_size=4 for 32-256 px, start_size=7 for 28 px")
        smallest = self.depth_g // 2 ** (self.upsampling_layers - 1)
        if smallest < 1:
            raise ConfigError(f"depth_g {self.depth_g} is too small for {self.upsampling_layers} up-sampling "
                              f"layers that halve it (needs at least {2 ** (self.upsampling_layers - 1)})")
        if self.image_size < 2 ** self.d_layers:
            raise ConfigError(f"image_size {self.image_size} is too small for d_layers={self.d_layers} "
                              f"stride-2 convolutions")
        if not 0 <= self.freeze_d_layers <= self.d_layers:
            raise ConfigError(f"freeze_d_layers must be between 0 and d_layers={self.d_layers}, "
                              f"got {self.freeze_d_layers}")
