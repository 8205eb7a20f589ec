"""Training the image-to-latent encoder: the encoder stage of the shared training loop (:mod:`cellgen.training`).

E is trained so that G(E(x)) reconstructs x under an L1 loss while the generator G of a
``vanilla_gan`` run stays frozen (Klang & Carlberg 2020, section 4.6; see
:mod:`cellgen.latent.model`). :func:`resolve_config` turns a :class:`~cellgen.config.RunRequest`
into a config (the image size defaults to the generator run's; a resumed run keeps its
generator and architecture) and :func:`train` runs it, writing the run directory::

    RUN/config.toml|json (with the generator run and its resolved epoch), classes.json
    RUN/checkpoints/epoch-NNNN/          encoder + optimizer (``--resume``)
    RUN/models/encoder-epoch-NNNN.keras  every save_every epochs and the last
    RUN/samples/epoch-NNNN.png           fixed real images (top row) over G(E(x)) (epoch-0000: untrained)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json

Example:
    >>> config = resolve_config(RunRequest(overrides={"generator": "runs/gan", "data": "train"},  # doctest: +SKIP
    ...                                    out="runs/enc"))
    >>> run = train(config)                                                                       # doctest: +SKIP
    >>> encoder, generator, config = load_encoder_run(run)                                        # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellgen.config import ConfigError, RunRequest
from cellgen.finetune import FinetuneRules, is_resume, resolve_run_config
from cellgen.latent.config import FIXED_ON_RESUME, LatentEncoderConfig
from cellgen.latent.sampling import MODEL_KIND, reconstruct
from cellgen.runs import RunDir
from cellgen.training import Built, TrainingStage, reader_options, run_training, training_reader


def resolve_generator(config: LatentEncoderConfig) -> LatentEncoderConfig:
    """Checks the generator run against the config and records its resolved epoch.

    Raises:
        ConfigError: no generator run given, or image_size differs from the generator's.
        RunError: the generator run is missing or has no saved networks.
    """
    from cellgen.gan.sampling import load_gan_config, resolve_epoch

    if not config.generator:
        raise ConfigError("no generator: pass --generator VANILLA_GAN_RUN")
    gan_run = RunDir.open(config.generator, option="--generator")
    gan_config = load_gan_config(gan_run)
    if config.image_size != gan_config.image_size:
        raise ConfigError(f"image_size={config.image_size} differs from the generator run's "
                          f"image_size={gan_config.image_size} ({gan_run.path})")
    return config.replace(generator=str(gan_run.path), generator_epoch=resolve_epoch(gan_run, config.generator_epoch))


def resolve_config(request: RunRequest) -> LatentEncoderConfig:
    """The run's config for a ``train_latent_encoder.py`` request.

    A new run takes ``image_size`` from the generator run unless the request sets it; a resumed
    run keeps its saved config (:data:`FIXED_ON_RESUME` cannot change). The generator run is
    checked and its epoch resolved (:func:`resolve_generator`).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    config = resolve_run_config(LatentEncoderConfig, request, FinetuneRules(fixed_fields=FIXED_ON_RESUME))
    if not config.generator:
        raise ConfigError("no generator: pass --generator VANILLA_GAN_RUN")
    if not is_resume(request) and "image_size" not in request.overrides:
        from cellgen.gan.sampling import load_gan_config

        config = config.replace(image_size=load_gan_config(RunDir.open(config.generator, option="--generator")).image_size)
    return resolve_generator(config)


class EncoderStage(TrainingStage):
    """The image-to-latent encoder stage of the shared loop."""

    name = "latent_encoder"
    history_title = "image-to-latent encoder: L1 |x - G(E(x))|"
    initial_grid = True

    def make_readers(self):
        self.config = config = resolve_generator(self.config)
        return training_reader(config.data, config.batch_size, **reader_options(config)), None

    def log_line(self) -> str:
        config = self.config
        return (f"generator {config.generator} epoch {config.generator_epoch}, "
                f"{self.reader.num_images} images")

    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        import keras

        from cellgen.gan.sampling import load_gan_config, load_gan_models
        from cellgen.latent.model import LatentEncoderTrainer
        from cellgen.latent.networks import build_encoder
        from cellgen.precision import wrap_optimizer

        config = self.config
        self.generator, _, _ = load_gan_models(config.generator, config.generator_epoch)
        self.encoder = build_encoder(load_gan_config(config.generator), depth=config.depth, dropout=config.dropout)
        optimizer = wrap_optimizer(keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1))
        trainer = LatentEncoderTrainer(self.encoder, self.generator)
        trainer.compile(optimizer=optimizer)
        # Slots exist before restoring, so the checkpoint's optimizer state has somewhere to go.
        optimizer.build(self.encoder.trainable_variables)
        return Built(trainer, {"encoder": self.encoder, "optimizer": optimizer},
                     learning_rates=[(optimizer, config.learning_rate)],
                     parameters={"encoder": self.encoder.count_params()})

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        from cellgen.data import DataReader, crop_option

        config = self.config
        # The first sample_count images of the data in file order: the same in every session.
        fixed = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                           batch_size=config.sample_count, shuffle=False, on_error=config.on_error, workers=0)
        self.images = next(iter(fixed.epoch(0)))[0]

    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        from cellgen.plots import save_image_grid

        _, reconstructed = reconstruct(self.encoder, self.generator, self.images)
        save_image_grid(np.concatenate([self.images, reconstructed]), run.samples / f"{name}.png",
                        columns=len(self.images), row_labels=["real", "G(E(x))"],
                        scale=max(1, 64 // self.images.shape[1]))

    def save_models(self, run: RunDir, epoch: int) -> None:
        run.save_model(self.encoder, MODEL_KIND, epoch)

    def saved_epochs(self, run: RunDir) -> list[int]:
        return run.saved_epochs(MODEL_KIND)

    def summary(self, run: RunDir) -> dict:
        _, reconstructed = reconstruct(self.encoder, self.generator, self.images)
        return {"generator": {"run": str(Path(self.config.generator).resolve()),
                              "epoch": self.config.generator_epoch},
                "sample_l1": float(np.mean(np.abs(self.images - reconstructed)))}


def train(config: LatentEncoderConfig, resume: bool = False, verbose: int = 1, strategy=None) -> RunDir:
    """Trains (or resumes) the encoder of a resolved config (:func:`resolve_config`) and writes its run
    directory (see the module docstring); the arguments and errors are those of
    :func:`cellgen.training.run_training`."""
    return run_training(EncoderStage(config), resume=resume, verbose=verbose, strategy=strategy)
