"""Training a CVAE run: the CVAE stage of the shared training loop (:mod:`cellgen.training`).

:func:`resolve_config` turns a :class:`~cellgen.config.RunRequest` into a config (a preset and
overrides; the saved config on resume, whose architecture cannot change) and :func:`train`
runs it, writing the run directory::

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/            encoder, decoder, optimizer, reparameterisation noise state
    RUN/models/decoder-epoch-NNNN.keras    every save_every epochs and the last
    RUN/models/decoder.keras, encoder.keras   the final networks (``generate.py`` samples decoder.keras)
    RUN/samples/epoch-NNNN.png             grids from fixed latents, one row per class (conditional)
    RUN/samples/reconstructions.png        validation (or training) images over their reconstructions
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json

Example:
    >>> config = resolve_config(RunRequest(preset="matos2025_cvae28", overrides={"data": "train"},  # doctest: +SKIP
    ...                                    out="runs/cvae28"))
    >>> run = train(config)                                                                        # doctest: +SKIP
"""

from __future__ import annotations

import os

import numpy as np

from cellgen.config import RunRequest
from cellgen.finetune import FinetuneRules, resolve_run_config
from cellgen.runs import RunDir
from cellgen.training import Built, TrainingStage, reader_options, run_training
from cellgen.vae.config import CVAEConfig
from cellgen.vae.sampling import DECODER_FILE, ENCODER_FILE, MODEL_KIND

# Fields that fix the shapes of the networks' weights: a resumed run must keep them.
ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "encoder_filters", "kernel_size", "conditional")


def resolve_config(request: RunRequest) -> CVAEConfig:
    """The run's config for a ``train_cvae.py`` request: the preset and overrides, or on resume the
    saved config plus the overrides (the architecture fields cannot change).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    return resolve_run_config(CVAEConfig, request, FinetuneRules(fixed_fields=ARCHITECTURE_FIELDS))


def grid_latents(config: CVAEConfig, latent_dim: int, classes) -> tuple[np.ndarray, np.ndarray | None]:
    """The fixed latents (and labels) of the sample grids: one row per class of a conditional model
    (else 8 rows) of ``samples_per_class`` images; the same every epoch and session for a seed."""
    rows = len(classes) if classes else 8
    rng = np.random.default_rng([config.seed, 7919])
    z = rng.standard_normal((rows * config.samples_per_class, latent_dim)).astype(np.float32)
    labels = np.repeat(np.arange(rows, dtype=np.int32), config.samples_per_class) if classes else None
    return z, labels


class CVAEStage(TrainingStage):
    """The (conditional) VAE stage of the shared loop.

    Args:
        config: the resolved config.
        resume: a resumed session reads the training data with the run's saved class ids.
    """

    name = "cvae"
    history_title = "CVAE losses per image"

    def __init__(self, config: CVAEConfig, resume: bool = False):
        super().__init__(config)
        self.resume = resume

    def make_readers(self):
        from cellgen.data import DataError, DataReader

        config = self.config
        saved_classes = None
        saved = RunDir(config.out) / "classes.json"
        if self.resume and saved.is_file():
            saved_classes = RunDir(config.out).classes
        common = dict(reader_options(config), batch_size=config.batch_size)
        common["classes"] = saved_classes or common["classes"]
        reader = DataReader(config.data, shuffle=True, **common)
        val_reader = None
        if config.val_data:
            try:
                val_reader = DataReader(config.val_data, shuffle=False, allow_missing_classes=True,
                                        **{**common, "classes": reader.classes})
            except DataError as error:
                raise DataError(f"val_data: {error}") from None
        return reader, val_reader

    def log_line(self) -> str:
        return f"{self.reader.num_images} training images, {len(self.reader.classes)} classes"

    def train_dataset(self, reader, start_epoch: int):
        return reader.as_tf_dataset(start_epoch=start_epoch)  # (images, labels): labels condition the VAE

    def fit_options(self, val_reader):
        if val_reader is None:
            return {}
        return {"validation_data": val_reader.as_tf_dataset(), "validation_steps": len(val_reader)}

    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        import keras

        from cellgen.precision import wrap_optimizer
        from cellgen.vae.cvae import CVAE

        config = self.config
        num_classes = len(self.reader.classes) if config.conditional else 0
        self.model = model = CVAE.from_sizes(config.image_size, config.latent_dim, config.encoder_filters,
                                             num_classes, config.kernel_size, kl_weight=config.kl_weight,
                                             seed=config.seed)
        optimizer = wrap_optimizer(keras.optimizers.Adam(config.learning_rate, beta_1=config.adam_beta_1))
        # XLA ("auto" picks it on TensorFlow) made this small model 2-4x slower per step on
        # this CPU (bench/bench_cvae.py) and adds seconds of compilation to every run.
        model.compile(optimizer=optimizer, jit_compile=False)
        # Built before restoring so that the checkpoint's slots have somewhere to go.
        optimizer.build(model.trainable_variables)
        # The checkpoint keeps the two networks apart (vae/sampling.py falls back to the decoder's
        # weights); the CVAE's own noise seed goes into state.json (checkpoint_state).
        return Built(model, {"encoder": model.encoder, "decoder": model.decoder, "optimizer": optimizer},
                     learning_rates=[(optimizer, config.learning_rate)],
                     parameters={"encoder": model.encoder.count_params(),
                                 "decoder": model.decoder.count_params()})

    def checkpoint_state(self) -> dict:
        import keras

        return {"noise_seed_state": keras.ops.convert_to_numpy(self.model.noise_seed.state).tolist()}

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        if restored is not None and "noise_seed_state" in restored:
            # The reparameterisation noise continues where it stopped, so a resumed run
            # matches an uninterrupted one.
            state = self.model.noise_seed.state
            state.assign(np.asarray(restored["noise_seed_state"], dtype=state.dtype))
        self.grid_classes = list(self.reader.classes) if self.config.conditional else None
        self.grid_z, self.grid_labels = grid_latents(self.config, self.model.latent_dim, self.grid_classes)

    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        import keras

        from cellgen.plots import save_image_grid

        images = keras.ops.convert_to_numpy(self.model.generate(self.grid_z, self.grid_labels))
        save_image_grid(images, run.samples / f"{name}.png", columns=self.config.samples_per_class,
                        row_labels=self.grid_classes, scale=max(1, 64 // self.config.image_size))

    def save_models(self, run: RunDir, epoch: int) -> None:
        run.save_model(self.model.decoder, MODEL_KIND, epoch)

    def saved_epochs(self, run: RunDir) -> list[int]:
        return run.saved_epochs(MODEL_KIND)

    def after_fit(self, run: RunDir) -> None:
        from cellgen.plots import save_image_grid

        for network, name in ((self.model.decoder, DECODER_FILE), (self.model.encoder, ENCODER_FILE)):
            temporary = run.models / f".tmp-{name}"
            network.save(temporary)
            os.replace(temporary, run.models / name)
        shown = self.val_reader if self.val_reader is not None else self.reader
        images, labels = next(iter(shown.epoch(0)))
        count = min(len(images), self.config.samples_per_class)
        reconstruction = self.model.reconstruct(images[:count], labels[:count])
        save_image_grid(np.concatenate([images[:count], reconstruction]), run.samples / "reconstructions.png",
                        columns=count, row_labels=["real", "reconstructed"],
                        scale=max(1, 64 // self.config.image_size))


def train(config: CVAEConfig, resume: bool = False, verbose: int = 1, strategy=None) -> RunDir:
    """Trains (or resumes) a CVAE of a resolved config (:func:`resolve_config`) and writes its run
    directory (see the module docstring); the arguments and errors are those of
    :func:`cellgen.training.run_training` (``resume`` also fixes the class ids to the run's)."""
    return run_training(CVAEStage(config, resume=resume), resume=resume, verbose=verbose, strategy=strategy)
