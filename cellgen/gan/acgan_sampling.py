"""Class-conditional images from an AC-GAN run: the saved generator, its epochs, the ``generate.py`` sampler.

An ``acgan`` run keeps ``models/acgan_generator-epoch-NNNN.keras`` and
``models/acgan_discriminator-epoch-NNNN.keras``; :func:`load_acgan_sampler` is registered
in ``cellgen.sampling.SAMPLER_LOADERS``.

Example:
    >>> sampler = load_acgan_sampler(RunDir.open("runs/acgan"))     # doctest: +SKIP
    >>> sampler.sample(4, seed=0, class_name="basophil").shape        # doctest: +SKIP
    (4, 256, 256, 3)
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from cellgen.gan.acgan_config import ACGANConfig
from cellgen.gan.acgan_networks import ACGAN_GENERATOR
from cellgen.gan.sampling import load_saved_model
from cellgen.gan.vanilla import fixed_latents
from cellgen.runs import RunDir, RunError

KIND = ACGANConfig.kind


def generate_class_images(generator: keras.Model, latents: np.ndarray, labels: np.ndarray, num_classes: int,
                          batch_size: int = 64) -> np.ndarray:
    """Runs the AC-GAN generator in inference mode; float32 images in [-1, 1]."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"class ids must be in [0, {num_classes}), got {labels.min()}..{labels.max()}")
    outputs = []
    for start in range(0, len(latents), batch_size):
        one_hot = np.eye(num_classes, dtype=np.float32)[labels[start:start + batch_size]]
        batch = generator([latents[start:start + batch_size], one_hot], training=False)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(batch), dtype=np.float32))
    if not outputs:
        return np.zeros((0,) + tuple(generator.output_shape[1:]), dtype=np.float32)
    return np.clip(np.concatenate(outputs), -1.0, 1.0)


def saved_epochs(run: RunDir) -> list[int]:
    """Epochs with a saved AC-GAN generator (what sampling needs), ascending."""
    return run.saved_epochs(ACGAN_GENERATOR)


def resolve_epoch(run: RunDir, epoch: int | None = None) -> int:
    """``epoch`` if it was saved, else the latest saved one (None or 0). Raises RunError."""
    return run.resolve_epoch(ACGAN_GENERATOR, epoch, what="AC-GAN generator")


def load_acgan_generator(run: RunDir | str | os.PathLike, epoch: int | None = None
                         ) -> tuple[keras.Model, ACGANConfig, list[str], int]:
    """The saved AC-GAN generator of a run (``safe_mode=True``), its config, classes and epoch."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = run.load_config(ACGANConfig)
    chosen = resolve_epoch(run, epoch)
    generator = load_saved_model(run.model_path(ACGAN_GENERATOR, chosen))
    return generator, config, run.classes, chosen


class ACGANSampler:
    """Class-conditional images from an AC-GAN run (the :class:`cellgen.sampling.Sampler` interface).

    Args:
        generator: the AC-GAN generator.
        classes: class names in id order.
        latent_dim: size of z.
        epoch: the saved epoch it came from.
    """

    kind = KIND

    def __init__(self, generator: keras.Model, classes: list[str], latent_dim: int, epoch: int | None = None):
        self.generator = generator
        self.classes = list(classes)
        self.latent_dim = int(latent_dim)
        self.image_size = int(generator.output_shape[1])
        self.epoch = epoch

    def sample(self, count: int, seed: int, class_name: str | None = None, batch_size: int = 64) -> np.ndarray:
        """``count`` images of ``class_name`` (None: classes in turn), float32 in [-1, 1]; seed-deterministic."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if class_name is None:
            labels = np.arange(count) % len(self.classes)
        elif class_name in self.classes:
            labels = np.full(count, self.classes.index(class_name))
        else:
            raise RunError(f"class {class_name!r} is not one of this AC-GAN's classes: {', '.join(self.classes)}")
        latents = fixed_latents(count, self.latent_dim, seed)
        return generate_class_images(self.generator, latents, labels, len(self.classes), max(1, int(batch_size)))


def load_acgan_sampler(run: RunDir, epoch: int | None = None, **options: Any) -> ACGANSampler:
    """Sampler loader of ``acgan`` runs (registered in ``cellgen.sampling.SAMPLER_LOADERS``)."""
    from cellgen.sampling import reject_options

    reject_options(KIND, options)
    generator, config, classes, chosen = load_acgan_generator(run, epoch)
    return ACGANSampler(generator, classes, config.latent_dim, epoch=chosen)
