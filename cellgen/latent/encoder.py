"""Training the image-to-latent encoder E so that G(E(x)) reconstructs x (Klang & Carlberg 2020, section 4.6).

K&C's procedure: draw real images, map them to latents with E, generate G(E(x))
with the frozen Vanilla-GAN generator, take the L1 norm between real and
generated images and update E only (Adam; learning rate 1e-5). It approximates
equation (41), z~ = argmin_z ||I - G(z)||_1, with one forward pass instead of a
per-image optimisation. The per-example loss is the mean absolute pixel error,
reduced over the global batch.

Run directory of ``train_latent_encoder.py``: config (with the generator run and
its resolved epoch), classes.json, resumable checkpoints (encoder + optimizer),
``models/encoder-epoch-NNNN.keras``, ``samples/epoch-NNNN.png`` (rows of real
images above their reconstructions), ``logs/history.csv`` + TensorBoard,
``metrics/loss_curves.png`` and ``metrics/train.json``.

Example:
    >>> config = LatentEncoderConfig(generator="runs/gan", data="pbc128/train", out="runs/enc", image_size=256)  # doctest: +SKIP
    >>> run = train(config)                                                                                        # doctest: +SKIP
    >>> encoder, generator, config = load_encoder_run("runs/enc")                                                   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import tensorflow as tf

from cellgen.config import CommonConfig, ConfigError
from cellgen.runs import RunDir, RunError

_EPOCH_FILE = re.compile(r"^encoder-epoch-(\d+)\.keras$")


@dataclasses.dataclass
class LatentEncoderConfig(CommonConfig):
    """Config of ``train_latent_encoder.py`` (run kind ``latent_encoder``).

    Attributes:
        generator: the ``vanilla_gan`` run whose frozen generator decodes the latents.
        generator_epoch: its saved epoch (0: the latest; the run records the resolved one).
        learning_rate: Adam learning rate (K&C section 4.6: 1e-5).
        beta_1: Adam first-moment decay (Keras default 0.9; not given by K&C).
        depth: filters of the encoder's first convolution (0: the generator run's ``depth_d``).
        dropout: dropout after each encoder convolution (0: none).
        sample_count: real images (fixed, the first of the data) shown with their reconstructions each epoch.
        sample_every, save_every, checkpoint_every, keep_checkpoints: periods in epochs, checkpoints kept.
    """

    kind: ClassVar[str] = "latent_encoder"

    image_size: int = 256
    batch_size: int = 32
    epochs: int = 10
    generator: str = ""
    generator_epoch: int = 0
    learning_rate: float = 1e-5
    beta_1: float = 0.9
    depth: int = 0
    dropout: float = 0.0
    sample_count: int = 8
    sample_every: int = 1
    save_every: int = 1
    checkpoint_every: int = 1
    keep_checkpoints: int = 2

    def validate(self) -> None:
        super().validate()
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0 <= self.beta_1 < 1:
            raise ConfigError(f"beta_1 must be in [0, 1), got {self.beta_1}")
        if self.depth < 0:
            raise ConfigError(f"depth must be >= 0 (0 = the discriminator's depth_d), got {self.depth}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.generator_epoch < 0:
            raise ConfigError(f"generator_epoch must be >= 0 (0 = latest), got {self.generator_epoch}")
        for name in ("sample_count", "sample_every", "save_every", "checkpoint_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


def l1_reconstruction_loss(real, reconstructed):
    """Per-example mean absolute pixel error |x - G(E(x))| (float32)."""
    difference = tf.abs(tf.cast(real, tf.float32) - tf.cast(reconstructed, tf.float32))
    return tf.reduce_mean(tf.reshape(difference, [tf.shape(difference)[0], -1]), axis=-1)


class LatentEncoderTrainer(keras.Model):
    """Trains ``encoder`` through a frozen ``generator`` with the L1 reconstruction loss.

    The generator runs in inference mode (moving batch-norm statistics) and is
    set ``trainable=False``; only the encoder's variables are updated.

    Args:
        encoder: image -> latent.
        generator: latent -> image (frozen here).

    Example:
        >>> trainer = LatentEncoderTrainer(encoder, generator)                          # doctest: +SKIP
        >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-5))                      # doctest: +SKIP
        >>> trainer.fit(reader.as_tf_dataset(with_labels=False), steps_per_epoch=len(reader))  # doctest: +SKIP
    """

    def __init__(self, encoder: keras.Model, generator: keras.Model, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.generator = generator
        self.generator.trainable = False
        self.loss_tracker = keras.metrics.Mean(name="l1_loss")
        self.built = True

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, images, training=False):
        return self.generator(self.encoder(images, training=training), training=False)

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.cast(real, tf.float32)
        variables = self.encoder.trainable_variables
        with tf.GradientTape() as tape:
            reconstructed = self.generator(self.encoder(real, training=True), training=False)
            per_example = l1_reconstruction_loss(real, reconstructed)
            loss = self.optimizer.scale_loss(tf.nn.compute_average_loss(per_example))
        gradients = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(gradients, variables))
        self.loss_tracker.update_state(tf.reduce_mean(per_example))
        return {"l1_loss": self.loss_tracker.result()}


def reconstruct(encoder: keras.Model, generator: keras.Model, images: np.ndarray,
                batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """``(latents E(x), reconstructions G(E(x)))`` in inference mode; images float32 in [-1, 1]."""
    from cellgen.gan.vanilla import generate_images

    latents = [np.asarray(keras.ops.convert_to_numpy(encoder(images[start:start + batch_size], training=False)),
                          dtype=np.float32) for start in range(0, len(images), batch_size)]
    latents = np.concatenate(latents) if latents else np.zeros((0, int(encoder.output_shape[-1])), np.float32)
    return latents, np.clip(generate_images(generator, latents, batch_size), -1.0, 1.0)


def model_file(epoch: int) -> str:
    return f"encoder-epoch-{epoch:04d}.keras"


def saved_epochs(run: RunDir) -> list[int]:
    if not run.models.is_dir():
        return []
    return sorted(int(match.group(1)) for match in map(_EPOCH_FILE.match, os.listdir(run.models)) if match)


def load_encoder_run(run: RunDir | str | os.PathLike, epoch: int | None = None
                     ) -> tuple[keras.Model, keras.Model, LatentEncoderConfig]:
    """The encoder of a ``latent_encoder`` run (``safe_mode=True``), its frozen generator, and its config.

    Raises:
        RunError: not a ``latent_encoder`` run, no saved encoder (for ``epoch``), or the generator
            run it was trained with is gone.
    """
    from cellgen.gan.sampling import load_gan_models

    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = run.load_config(LatentEncoderConfig)
    epochs = saved_epochs(run)
    if not epochs:
        raise RunError(f"{run.path}: no saved encoder in {run.models} (has the run finished an epoch?)")
    chosen = epoch or epochs[-1]
    if chosen not in epochs:
        raise RunError(f"{run.path}: no encoder saved for epoch {chosen}; saved epochs: {', '.join(map(str, epochs))}")
    path = run.models / model_file(chosen)
    try:
        encoder = keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError) as error:
        raise RunError(f"{path}: cannot load ({error})") from None
    generator, _, _ = load_gan_models(config.generator, config.generator_epoch)
    generator.trainable = False
    return encoder, generator, config


class ReconstructionSnapshots(keras.callbacks.Callback):
    """Every ``sample_every`` epochs a grid of fixed real images (top row) over G(E(x)) (bottom row);
    every ``save_every`` epochs (and the last) ``models/encoder-epoch-NNNN.keras``."""

    def __init__(self, run: RunDir, encoder, generator, images: np.ndarray, save_every: int, sample_every: int,
                 last_epoch: int):
        super().__init__()
        self.run, self.encoder, self.generator, self.images = run, encoder, generator, images
        self.save_every, self.sample_every, self.last_epoch = save_every, sample_every, last_epoch

    def write_grid(self, name: str) -> Path:
        from cellgen.plots import save_image_grid

        _, reconstructed = reconstruct(self.encoder, self.generator, self.images)
        scale = max(1, 64 // self.images.shape[1])
        return save_image_grid(np.concatenate([self.images, reconstructed]), self.run.samples / f"{name}.png",
                               columns=len(self.images), row_labels=["real", "G(E(x))"], scale=scale)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "_cellgen_nan_failure", None):
            return
        completed = epoch + 1
        last = completed >= self.last_epoch
        if completed % self.sample_every == 0 or last:
            self.write_grid(f"epoch-{completed:04d}")
        if completed % self.save_every == 0 or last:
            final = self.run.models / model_file(completed)
            temporary = final.with_name(".tmp-" + final.name)
            self.encoder.save(temporary)
            os.replace(temporary, final)


def resolve_generator(config: LatentEncoderConfig) -> LatentEncoderConfig:
    """Checks the generator run against the config and records its resolved epoch.

    Raises:
        ConfigError: no generator run given, or image_size differs from the generator's.
        RunError: the generator run is missing or has no saved networks.
    """
    from cellgen.gan.sampling import load_gan_config, resolve_epoch

    if not config.generator:
        raise ConfigError("no generator: pass --generator VANILLA_GAN_RUN")
    gan_run = RunDir.open(config.generator)
    gan_config = load_gan_config(gan_run)
    if config.image_size != gan_config.image_size:
        raise ConfigError(f"image_size={config.image_size} differs from the generator run's "
                          f"image_size={gan_config.image_size} ({gan_run.path})")
    return config.replace(generator=str(gan_run.path), generator_epoch=resolve_epoch(gan_run, config.generator_epoch))


def train(config: LatentEncoderConfig, resume: bool = False, verbose: int = 1) -> RunDir:
    """Trains (or resumes) the encoder and writes its run directory (see the module docstring).

    Raises:
        NonFiniteLossError: the loss became NaN/inf (the last good checkpoint is kept).
        ConfigError, RunError, DataError: bad input, one line naming the option or file.
    """
    from cellgen.cli.common import crop_option, prepare_runtime
    from cellgen.data_reader import DataReader
    from cellgen.gan.sampling import load_gan_config, load_gan_models
    from cellgen.latent.networks import build_encoder
    from cellgen.plots import plot_history
    from cellgen.precision import wrap_optimizer
    from cellgen.runs import TrainingState, make_callbacks, raise_if_stopped_on_nan, read_history, resume_training

    config = resolve_generator(config)
    gan_config = load_gan_config(config.generator)
    strategy, precision = prepare_runtime(config)
    reader = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                        batch_size=config.batch_size, shuffle=True, seed=config.seed, on_error=config.on_error,
                        workers=config.workers, drop_remainder=True)
    run = RunDir.create(config.out, config, reader.classes, resume=resume)
    run.log(f"latent_encoder: generator {config.generator} epoch {config.generator_epoch}, "
            f"{reader.num_images} images, precision {precision}")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    with strategy.scope():
        generator, _, _ = load_gan_models(config.generator, config.generator_epoch)
        encoder = build_encoder(gan_config, depth=config.depth, dropout=config.dropout)
        optimizer = wrap_optimizer(keras.optimizers.Adam(config.learning_rate, beta_1=config.beta_1))
        trainer = LatentEncoderTrainer(encoder, generator)
        trainer.compile(optimizer=optimizer)
        optimizer.build(encoder.trainable_variables)

    state = TrainingState(run.checkpoints, keep=config.keep_checkpoints, encoder=encoder, optimizer=optimizer)
    initial_epoch, _, _ = resume_training(state, run, resume, config.epochs, [(optimizer, config.learning_rate)])
    fixed = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                       batch_size=config.sample_count, shuffle=False, on_error=config.on_error, workers=0)
    fixed_images = next(iter(fixed.epoch(0)))[0]
    snapshots = ReconstructionSnapshots(run, encoder, generator, fixed_images, config.save_every,
                                        config.sample_every, config.epochs)
    if initial_epoch == 0:
        snapshots.write_grid("epoch-0000")
    started = time.perf_counter()
    callbacks = make_callbacks(run, state, checkpoint_every=config.checkpoint_every, initial_epoch=initial_epoch)
    callbacks.append(snapshots)
    if initial_epoch < config.epochs:
        trainer.fit(reader.as_tf_dataset(start_epoch=initial_epoch, with_labels=False), steps_per_epoch=len(reader),
                    epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                    shuffle=False)
    raise_if_stopped_on_nan(callbacks, state)
    history_path = run.logs / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    history = {key: values for key, values in history.items() if values and not all(v != v for v in values)}
    if any(key != "epoch" for key in history):
        plot_history(history, run.metrics / "loss_curves.png", title="image-to-latent encoder: L1 |x - G(E(x))|")
    _, reconstructed = reconstruct(encoder, generator, fixed_images)
    run.write_metrics("train", {
        "epochs": max(initial_epoch, config.epochs),
        "session_seconds": time.perf_counter() - started,
        "training_images": reader.num_images,
        "steps_per_epoch": len(reader),
        "generator": {"run": str(Path(config.generator).resolve()), "epoch": config.generator_epoch},
        "parameters": {"encoder": encoder.count_params()},
        "precision": precision,
        "sample_l1": float(np.mean(np.abs(fixed_images - reconstructed))),
        "saved_epochs": saved_epochs(run),
        "final": {key: values[-1] for key, values in history.items() if key != "epoch" and values},
    })
    run.mark_complete(epochs=max(initial_epoch, config.epochs))
    print(f"trained {max(initial_epoch, config.epochs)} epoch(s); run directory: {run.path}")
    return run
