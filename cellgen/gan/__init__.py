"""Vanilla-GAN of Klang & Carlberg (2020) and Nilsson & Zettergren (2023), with FreezeD fine-tuning,
K&C's AC-GAN on its frozen networks, and DiffAugment/ADA for small training sets.

Modules:

- :mod:`cellgen.gan.config`: :class:`VanillaGANConfig` (run kind ``vanilla_gan``) and
  :class:`AdversarialConfig`, the fields both GAN configs share (``augment``, ``ada``);
- :mod:`cellgen.gan.networks`: :func:`build_generator`, :func:`build_discriminator`,
  :func:`discriminator_trunk` and the layers they use;
- :mod:`cellgen.gan.adversarial`: :class:`AdversarialModel`, the base of both training models
  (two optimizers, stateless noise seeds, augmentation of the discriminator's inputs);
- :mod:`cellgen.gan.vanilla`: :class:`VanillaGAN` (``compile`` with two optimizers,
  ``train_step``) and its losses;
- :mod:`cellgen.gan.diffaugment`: DiffAugment (Zhao et al. 2020) and ADA's adaptive probability;
- :mod:`cellgen.gan.freeze`: FreezeD (:func:`apply_freezed`);
- :mod:`cellgen.gan.sampling`: :func:`load_gan_models` for later stages and the
  ``generate.py`` sampler;
- :mod:`cellgen.gan.train_lib`: the Vanilla-GAN stage of the shared training loop
  (``train_vanilla_gan.py``), and :class:`GANStage`, what both GAN stages share;
- AC-GAN: :mod:`~cellgen.gan.acgan_config` (:class:`ACGANConfig`), :mod:`~cellgen.gan.acgan_networks`
  (heads around the backbone, freezing), :mod:`~cellgen.gan.acgan_model` (:class:`ACGAN`),
  :mod:`~cellgen.gan.acgan_sampling` (the ``generate.py`` sampler) and
  :mod:`~cellgen.gan.acgan_train` (``resolve_config``/``train`` behind ``train_acgan.py``).

Example (building on a trained run, e.g. an AC-GAN head on the frozen trunk)::

    from cellgen.gan import load_gan_models, discriminator_trunk
    generator, discriminator, config = load_gan_models("runs/gan", epoch=50)
    trunk = discriminator_trunk(discriminator)        # (None, features)
    trunk.trainable = False
    print(config.latent_dim, config.image_size)
"""

import importlib

# Names exported lazily, so that ``import cellgen.gan.config`` (argument parsing, presets)
# does not load TensorFlow.
_EXPORTS = {
    "ARCHITECTURE_FIELDS": "config", "VanillaGANConfig": "config",
    "apply_freezed": "freeze", "select_discriminator_layers": "freeze",
    "build_discriminator": "networks", "build_gan_networks": "networks", "build_generator": "networks",
    "discriminator_conv_layers": "networks", "discriminator_trunk": "networks",
    "GanSampler": "sampling", "load_gan_config": "sampling", "load_gan_models": "sampling",
    "resolve_epoch": "sampling", "saved_epochs": "sampling",
    "VanillaGAN": "vanilla", "discriminator_loss": "vanilla", "generator_loss": "vanilla",
    "AdversarialConfig": "config", "AUGMENT_POLICIES": "config", "diff_augment": "diffaugment",
    "ACGANConfig": "acgan_config", "ACGAN": "acgan_model", "build_acgan_networks": "acgan_networks",
    "freeze_backbone_networks": "acgan_networks", "ACGANSampler": "acgan_sampling",
    "generate_class_images": "acgan_sampling",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"cellgen.gan.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cellgen.gan' has no attribute {name!r}")
