"""Vanilla-GAN of Klang & Carlberg (2020) and Nilsson & Zettergren (2023), with FreezeD fine-tuning.

Modules:

- :mod:`cellgen.gan.config`: :class:`VanillaGANConfig` (run kind ``vanilla_gan``);
- :mod:`cellgen.gan.networks`: :func:`build_generator`, :func:`build_discriminator`,
  :func:`discriminator_trunk` and the layers they use;
- :mod:`cellgen.gan.vanilla`: :class:`VanillaGAN` (``compile`` with two optimizers,
  ``train_step``), the losses and the snapshot callback;
- :mod:`cellgen.gan.freeze`: FreezeD (:func:`apply_freezed`);
- :mod:`cellgen.gan.sampling`: :func:`load_gan_models` for later stages and the
  ``generate.py`` sampler;
- :mod:`cellgen.gan.train_lib`: the training run behind ``train_vanilla_gan.py``.

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
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"cellgen.gan.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'cellgen.gan' has no attribute {name!r}")
