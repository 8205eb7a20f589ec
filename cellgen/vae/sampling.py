"""Drawing images from a trained CVAE run: z ~ N(0, I) through the decoder.

Registered in :data:`cellgen.sampling.SAMPLER_LOADERS` under ``cvae``, so
``generate.py``, the classifier and the evaluation stages use it through
:func:`cellgen.sampling.load_sampler`.

Example:
    >>> sampler = load_sampler(RunDir.open("runs/cvae28"))            # doctest: +SKIP
    >>> images = sampler.sample(16, seed=0, class_name="basophil")    # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from cellgen.runs import RunDir, RunError, TrainingState
from cellgen.sampling import reject_options
from cellgen.vae.config import CVAEConfig

DECODER_FILE = "decoder.keras"  # the final decoder (models/decoder-epoch-NNNN.keras: kept epochs)
ENCODER_FILE = "encoder.keras"
MODEL_KIND = "decoder"


class CVAESampler:
    """Samples images from a CVAE decoder.

    Args:
        decoder: the decoder model (``z`` or ``[z, labels]`` -> logits).
        classes: the run's class names (used when the decoder is conditional).
        image_size: side of the images.

    Attributes:
        classes: class names the sampler can be conditioned on, or ``None`` when unconditional.

    Example:
        >>> sampler = CVAESampler(decoder, ["basophil", "eosinophil"], 28)   # doctest: +SKIP
        >>> sampler.sample(8, seed=1).shape                                    # doctest: +SKIP
        (8, 28, 28, 3)
    """

    kind = "cvae"

    def __init__(self, decoder: keras.Model, classes: list[str] | None, image_size: int):
        self.decoder = decoder
        self.conditional = len(decoder.inputs) > 1
        self.classes = list(classes) if self.conditional and classes else None
        if self.conditional and not self.classes:
            raise RunError("a conditional CVAE decoder needs the run's class list (classes.json)")
        self.image_size = int(image_size)
        self.latent_dim = int(decoder.inputs[0].shape[-1])

    def latents(self, count: int, seed: int, class_name: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """The latent vectors and labels :meth:`sample` decodes: z ~ N(0, I); labels uniform over
        the classes unless ``class_name`` is given (``None`` for an unconditional decoder)."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((count, self.latent_dim)).astype(np.float32)
        if class_name is not None:
            if not self.conditional:
                raise RunError(f"class {class_name!r} requested, but this CVAE run is unconditional")
            if class_name not in self.classes:
                raise RunError(f"class {class_name!r} is not one of this run's classes: {', '.join(self.classes)}")
            return z, np.full((count,), self.classes.index(class_name), dtype=np.int32)
        if self.conditional:
            return z, rng.integers(0, len(self.classes), size=count).astype(np.int32)
        return z, None

    def sample(self, count: int, seed: int, class_name: str | None = None, batch_size: int = 64) -> np.ndarray:
        """``count`` images (float32, [-1, 1]); without ``class_name`` classes are drawn uniformly.

        Deterministic for ``seed`` (see :meth:`latents`).
        """
        from cellgen.vae.networks import logits_to_images

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        z, labels = self.latents(count, seed, class_name)
        images = np.empty((count, self.image_size, self.image_size, 3), dtype=np.float32)
        for start in range(0, count, batch_size):
            stop = min(count, start + batch_size)
            inputs = [z[start:stop], labels[start:stop]] if self.conditional else z[start:stop]
            logits = self.decoder(inputs, training=False)
            images[start:stop] = keras.ops.convert_to_numpy(logits_to_images(logits))
        return images


def load_decoder(run: RunDir, epoch: int | None = None) -> keras.Model:
    """The run's decoder: a saved ``.keras`` file, else the weights of a resumable checkpoint.

    The checkpoint fallback lets an interrupted run (or a budget-limited one that
    never reached the end) still generate.
    """
    path = run.models / DECODER_FILE if epoch is None else run.model_path(MODEL_KIND, epoch)
    if path.is_file():
        from cellgen.runs import load_model_file

        return load_model_file(path)  # a truncated file is reported as damaged
    config = run.load_config(CVAEConfig)
    checkpoints = TrainingState(run.checkpoints).checkpoint_paths()
    if epoch is not None:
        checkpoints = [checkpoint for checkpoint in checkpoints if checkpoint.name == f"epoch-{epoch:04d}"]
    if not checkpoints:
        saved = sorted(item.name for item in run.models.glob("decoder*.keras")) if run.models.is_dir() else []
        what = "the final model" if epoch is None else f"epoch {epoch}"
        raise RunError(f"{run.path}: no saved decoder for {what} (models/: {', '.join(saved) or 'empty'}; "
                       "no matching checkpoint)")
    from cellgen.vae.networks import build_decoder

    num_classes = len(run.classes) if config.conditional else 0
    decoder = build_decoder(config.image_size, config.latent_dim, config.encoder_filters, num_classes,
                            config.kernel_size)
    weights = Path(checkpoints[-1]) / "decoder.weights.h5"
    if not weights.is_file():
        raise RunError(f"{checkpoints[-1]}: checkpoint has no decoder weights")
    decoder.load_weights(str(weights))
    return decoder


def load_sampler(run: RunDir, epoch: int | None = None, **options) -> CVAESampler:
    """Sampler loader for ``cvae`` runs (see :func:`cellgen.sampling.load_sampler`).

    Args:
        run: the run directory.
        epoch: a saved epoch (``models/decoder-epoch-NNNN.keras`` or its checkpoint); default the final model.
        **options: other samplers' options; any that is not ``None`` is an error.
    """
    reject_options("cvae", options)
    config = run.load_config(CVAEConfig)
    decoder = load_decoder(run, epoch)
    classes = run.classes if config.conditional else None
    return CVAESampler(decoder, classes, config.image_size)
