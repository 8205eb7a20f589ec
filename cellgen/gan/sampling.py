"""Loading a Vanilla-GAN run's networks, and its sampler for ``generate.py``.

A ``vanilla_gan`` run keeps ``models/generator-epoch-NNNN.keras`` and
``models/discriminator-epoch-NNNN.keras`` for the epochs it saved (the theses
picked the visually best epoch, e.g. N&Z's epoch 50). Later stages build on
them:

- :func:`load_gan_models` returns both networks of a chosen epoch and the
  run's config (``config.latent_dim``, ``config.image_size``);
- :func:`cellgen.gan.networks.discriminator_trunk` gives the discriminator's
  convolution features for new heads (AC-GAN, image-to-latent encoder);
- :func:`load_sampler` is registered in ``cellgen.sampling.SAMPLER_LOADERS``.

Example:
    >>> generator, discriminator, config = load_gan_models("runs/gan", epoch=50)  # doctest: +SKIP
    >>> sampler = load_sampler(RunDir.open("runs/gan"), epoch=50)                 # doctest: +SKIP
    >>> images = sampler.sample(9, seed=0)                                        # float32 (9, H, W, 3)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.vanilla import fixed_latents, generate_images
from cellgen.runs import RunDir, RunError

KIND = VanillaGANConfig.kind
MODEL_KINDS = ("generator", "discriminator")


def _as_run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def saved_epochs(run: RunDir | str | os.PathLike) -> list[int]:
    """Epochs for which both networks were saved, ascending."""
    return _as_run(run).saved_epochs("generator", together_with=("discriminator",))


def resolve_epoch(run: RunDir | str | os.PathLike, epoch: int | None = None) -> int:
    """``epoch`` if its networks were saved, else the latest saved epoch when ``epoch`` is None or 0.

    Raises:
        RunError: no networks saved, or not for that epoch (the message lists the saved ones).
    """
    return _as_run(run).resolve_epoch("generator", epoch, together_with=("discriminator",), what="networks")


def load_gan_config(run: RunDir | str | os.PathLike) -> VanillaGANConfig:
    """The run's saved config (raises RunError for a run of another kind)."""
    return _as_run(run).load_config(VanillaGANConfig)


def load_saved_model(path: Path) -> keras.Model:
    """A network saved under ``models/`` (``safe_mode=True``, not compiled); RunError if it cannot load."""
    import cellgen.gan.networks  # noqa: F401  (registers the layers the networks are saved with)
    from cellgen.runs import load_model_file

    return load_model_file(path)  # a truncated file is reported as damaged


def load_gan_models(run: RunDir | str | os.PathLike, epoch: int | None = None,
                    rebuild: bool = True) -> tuple[keras.Model, keras.Model, VanillaGANConfig]:
    """The generator and discriminator of a run at a saved epoch, and the run's config.

    Args:
        run: a ``vanilla_gan`` run directory.
        epoch: a saved epoch (None or 0: the latest).
        rebuild: True builds fresh networks from the run's config under the *current*
            dtype policy (and ``strategy.scope()`` if the caller is in one) and copies
            the saved weights, including batch-norm moving statistics; every layer is
            trainable. False returns the saved models as stored (their own dtype
            policies and trainable flags).

    Raises:
        RunError: not a ``vanilla_gan`` run, or no networks saved for ``epoch``.
    """
    from cellgen.gan.networks import build_gan_networks

    run = _as_run(run)
    config = load_gan_config(run)
    epoch = resolve_epoch(run, epoch)
    saved = [load_saved_model(run.model_path(kind, epoch)) for kind in MODEL_KINDS]
    if not rebuild:
        return saved[0], saved[1], config
    generator, discriminator = build_gan_networks(config)
    for fresh, stored in zip((generator, discriminator), saved):
        try:
            fresh.set_weights(stored.get_weights())
        except ValueError as error:
            raise RunError(f"{run.path}: saved {fresh.name} of epoch {epoch} does not match the run's "
                           f"config ({error})") from None
    return generator, discriminator, config


class GanSampler:
    """Draws images from a Vanilla-GAN generator (the :class:`cellgen.sampling.Sampler` interface).

    Args:
        generator: the generator network.
        latent_dim: size of z.
        classes: ``[class_name]`` for a generator trained on one class (fine-tuned),
            ``None`` for one trained on every class (unconditional).
        epoch: the saved epoch it came from (for records).

    Example:
        >>> sampler = GanSampler(generator, latent_dim=100)   # doctest: +SKIP
        >>> sampler.sample(4, seed=1).shape                    # doctest: +SKIP
        (4, 256, 256, 3)
    """

    kind = KIND

    def __init__(self, generator: keras.Model, latent_dim: int, classes: list[str] | None = None,
                 epoch: int | None = None):
        self.generator = generator
        self.latent_dim = int(latent_dim)
        self.image_size = int(generator.output_shape[1])
        self.classes = classes
        self.epoch = epoch

    def sample(self, count: int, seed: int, class_name: str | None = None, batch_size: int = 64) -> np.ndarray:
        """``count`` images, float32 (count, H, W, 3) in [-1, 1]; the same for the same seed."""
        if class_name is not None and class_name not in (self.classes or []):
            trained = f"was trained on class {self.classes[0]!r}" if self.classes else "is unconditional"
            raise RunError(f"class {class_name!r} cannot be chosen: this vanilla GAN {trained}; fine-tune one "
                           "generator per class (train_vanilla_gan.py --finetune-from RUN --class NAME)")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        latents = fixed_latents(count, self.latent_dim, seed)
        return np.clip(generate_images(self.generator, latents, max(1, int(batch_size))), -1.0, 1.0)


def load_sampler(run: RunDir, epoch: int | None = None, **options: Any) -> GanSampler:
    """The sampler of a ``vanilla_gan`` run (registered in ``cellgen.sampling.SAMPLER_LOADERS``).

    Args:
        run: the run directory.
        epoch: a saved epoch (default: the latest saved).
        **options: other generate.py options; any that is not None is rejected.
    """
    from cellgen.sampling import reject_options

    reject_options(KIND, options)
    run = _as_run(run)
    config = load_gan_config(run)
    chosen = resolve_epoch(run, epoch)
    generator = load_saved_model(run.model_path("generator", chosen))
    classes = [config.class_name] if config.class_name else None
    return GanSampler(generator, config.latent_dim, classes=classes, epoch=chosen)

