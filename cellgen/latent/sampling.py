"""Using a trained encoder: loading a ``latent_encoder`` run and reconstructing images through it.

Example:
    >>> encoder, generator, config = load_encoder_run("runs/enc")      # doctest: +SKIP
    >>> latents, reconstructions = reconstruct(encoder, generator, images)  # doctest: +SKIP
"""

from __future__ import annotations

import os

import keras
import numpy as np

from cellgen.latent.config import LatentEncoderConfig
from cellgen.runs import RunDir, RunError

MODEL_KIND = "encoder"


def reconstruct(encoder: keras.Model, generator: keras.Model, images: np.ndarray,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(latents E(x), reconstructions G(E(x)))`` in inference mode; images float32 in [-1, 1]."""
    from cellgen.gan.vanilla import generate_images

    latents = [np.asarray(keras.ops.convert_to_numpy(encoder(images[start:start + batch_size], training=False)),
                          dtype=np.float32) for start in range(0, len(images), batch_size)]
    latents = np.concatenate(latents) if latents else np.zeros((0, int(encoder.output_shape[-1])), np.float32)
    return latents, np.clip(generate_images(generator, latents, batch_size), -1.0, 1.0)


def _as_run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def load_encoder(run: RunDir | str | os.PathLike, epoch: int | None = None
                 ) -> tuple[keras.Model, LatentEncoderConfig]:
    """The saved encoder of a ``latent_encoder`` run (``safe_mode=True``) and the run's config.

    Needs nothing but the run itself (not the generator run it was trained with).

    Raises:
        RunError: not a ``latent_encoder`` run, or no encoder saved (for ``epoch``).
    """
    run = _as_run(run)
    config = run.load_config(LatentEncoderConfig)
    path = run.model_path(MODEL_KIND, run.resolve_epoch(MODEL_KIND, epoch, what="encoder"))
    from cellgen.runs import load_model_file

    return load_model_file(path), config  # a truncated file is reported as damaged


def load_encoder_run(run: RunDir | str | os.PathLike, epoch: int | None = None
                     ) -> tuple[keras.Model, keras.Model, LatentEncoderConfig]:
    """The encoder of a ``latent_encoder`` run, its frozen generator, and its config.

    Raises:
        RunError: not a ``latent_encoder`` run, no saved encoder (for ``epoch``), or the generator
            run it was trained with is gone.
    """
    from cellgen.gan.sampling import load_gan_models

    encoder, config = load_encoder(run, epoch)
    try:
        generator, _, _ = load_gan_models(config.generator, config.generator_epoch)
    except RunError as error:
        raise RunError(f"{_as_run(run).path}: cannot load the generator it was trained with ({error})") from None
    generator.trainable = False
    return encoder, generator, config
