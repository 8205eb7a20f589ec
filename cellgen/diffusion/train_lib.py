"""Training a diffusion run end to end (used by ``train_ddim.py``, the study pipeline and the tests).

:func:`resolve_config` turns the script's arguments into a config (a preset and
overrides; the saved config on ``--resume``; the base run's architecture when
fine-tuning) and :func:`train` runs it, writing the run directory::

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/      online + EMA networks, image statistics, optimizer (``--resume``)
    RUN/models/diffusion-epoch-NNNN.keras   every save_every epochs and the last (generate.py, fine-tuning)
    RUN/samples/epoch-NNNN.png       grids from fixed noise (epoch-0000: the base model, when fine-tuning)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json, metrics/normalizer.json

Example:
    >>> config = load_config(DiffusionConfig, "ddim_fast", {"data": "train", "out": "runs/d"})  # doctest: +SKIP
    >>> run = train(config)                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import keras
import numpy as np

from cellgen.config import ConfigError
from cellgen.diffusion.config import ARCHITECTURE_FIELDS, DiffusionConfig
from cellgen.finetune import FinetuneRules, resolve_run_config
from cellgen.runs import RunDir, RunError

# The image statistics come with the base weights, so the fields that decide them are fixed too.
_FINETUNE_FIXED = ARCHITECTURE_FIELDS + ("crop",)


def _finetune_rules() -> FinetuneRules:
    from cellgen.diffusion.sampling import load_diffusion_config, resolve_epoch

    return FinetuneRules(fixed_fields=_FINETUNE_FIXED, resume_fixed=("time_mode", "timesteps"),
                         load_base_config=load_diffusion_config, resolve_epoch=resolve_epoch)


def resolve_config(args: argparse.Namespace) -> DiffusionConfig:
    """The run's config from parsed ``train_ddim.py`` arguments.

    New, ``--finetune-from RUN[/EPOCH]`` and ``--resume`` runs as in
    :func:`cellgen.finetune.resolve_run_config` (the architecture and image statistics
    come from the base run when fine-tuning; a resumed run also keeps its time mode).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    config = resolve_run_config(DiffusionConfig, args, _finetune_rules())
    if config.kid_encoder != "none" and not config.val_data:
        raise ConfigError(f"kid_encoder={config.kid_encoder!r} needs val_data (KID compares generated and "
                          "validation images): --set val_data=DIR")
    return config


def fixed_noise(config: DiffusionConfig) -> np.ndarray:
    """The noise of the sample grids: the same every epoch (and on resume) for a seed."""
    rng = np.random.default_rng([config.seed, 4242])
    return rng.standard_normal((config.grid_size, config.image_size, config.image_size, 3)).astype(np.float32)


class DiffusionSnapshots(keras.callbacks.Callback):
    """Writes sample grids from fixed noise and keeps ``.keras`` models of chosen epochs.

    Saving goes through an uncompiled copy of the model (built once), so the files hold the
    online network, the EMA network and the image statistics, but no optimizer.

    Args:
        run: the run directory.
        model: the training :class:`~cellgen.diffusion.ddim.DiffusionModel`.
        noise: fixed initial noise of the grids.
        config: the run's config (``sample_every``, ``save_every``, ``epochs``, sampling settings).
    """

    def __init__(self, run: RunDir, model, noise: np.ndarray, config: DiffusionConfig):
        super().__init__()
        self.run = run
        self.diffusion = model
        self.noise = noise
        self.config = config
        self._export = None

    def write_grid(self, name: str, title: str) -> Path:
        from cellgen.plots import save_image_grid

        images = self.diffusion.generate_from_noise(self.noise, steps=self.config.diffusion_steps,
                                                    eta=self.config.sample_eta, seed=self.config.seed)
        columns = max(1, int(math.ceil(math.sqrt(len(images)))))
        return save_image_grid(images, self.run.samples / f"{name}.png", columns=columns, title=title,
                               scale=max(1, 96 // self.config.image_size))

    def save_model(self, epoch: int) -> Path:
        from cellgen.diffusion.ddim import DiffusionModel
        from cellgen.diffusion.sampling import model_file

        if self._export is None:
            self._export = DiffusionModel(self.diffusion.config, name="diffusion_model")
        self._export.set_weights(self.diffusion.get_weights())
        path = self.run.models / model_file(epoch)
        temporary = path.with_name(path.stem + ".tmp.keras")
        self._export.save(temporary)
        temporary.replace(path)  # a half-written model file must never look complete
        return path

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "_cellgen_nan_failure", None):
            return
        completed = epoch + 1
        last = completed >= self.config.epochs
        if last or (self.config.sample_every and completed % self.config.sample_every == 0):
            method = "DDIM" if self.config.sample_eta == 0 else f"DDIM eta={self.config.sample_eta}"
            self.write_grid(f"epoch-{completed:04d}",
                            f"epoch {completed}: {self.config.diffusion_steps} {method} steps, EMA network")
        if last or (self.config.save_every and completed % self.config.save_every == 0):
            self.save_model(completed)


class ValidationKID(keras.callbacks.Callback):
    """Adds ``val_kid`` to the epoch logs: KID between validation images and a few-step DDIM sample.

    keras-io computes KID inside ``test_step`` per batch with InceptionV3 at 75 px on
    ``kid_diffusion_steps``-step samples; here it is computed once per epoch over
    ``kid_images`` validation images (their features are extracted once) and as many
    generated ones, with the project's KID (:mod:`cellgen.evaluate.kid`). Placed before the
    CSV logger so that ``val_kid`` reaches ``history.csv``.

    Args:
        model: the training DiffusionModel.
        extractor: a :class:`cellgen.evaluate.features.FeatureExtractor`.
        real_images: validation images in [-1, 1].
        steps: DDIM steps of the generated images.
        seed: seed of the generated images (the same every epoch).
    """

    def __init__(self, model, extractor, real_images: np.ndarray, steps: int, seed: int):
        super().__init__()
        self.diffusion = model
        self.extractor = extractor
        self.real_features = extractor(real_images)
        self.count = len(real_images)
        self.steps = steps
        self.seed = seed

    def compute(self) -> float:
        from cellgen.evaluate.kid import kernel_inception_distance

        generated = self.diffusion.generate(self.count, steps=self.steps, eta=0.0, seed=self.seed)
        result = kernel_inception_distance(self.real_features, self.extractor(generated),
                                           subset_size=self.count, subsets=1, seed=self.seed)
        return result["kid"]

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and not getattr(self.model, "_cellgen_nan_failure", None):
            logs["val_kid"] = self.compute()


def _make_readers(config: DiffusionConfig):
    from cellgen.cli.common import crop_option
    from cellgen.data_reader import DataError, DataReader

    class_filter = [config.class_name] if config.class_name else None
    common = dict(image_size=config.image_size, crop=crop_option(config.crop), seed=config.seed,
                  on_error=config.on_error, workers=config.workers, class_filter=class_filter)
    # Full batches only: a static batch splits evenly over replicas and batch statistics of a
    # one-image remainder are meaningless. A class smaller than the batch trains on one smaller batch.
    try:
        reader = DataReader(config.data, batch_size=config.batch_size, shuffle=True, drop_remainder=True, **common)
    except DataError:
        # Fewer images than one batch (or a real data problem, which the second attempt reports).
        reader = DataReader(config.data, batch_size=config.batch_size, shuffle=True, drop_remainder=False, **common)
    val_reader = None
    if config.val_data:
        try:
            val_reader = DataReader(config.val_data, batch_size=config.batch_size, shuffle=False, **common)
        except DataError as error:
            raise DataError(f"val_data: {error}") from None
    return reader, val_reader


def build_model(config: DiffusionConfig, load_base: bool = True):
    """The compiled DiffusionModel of ``config`` and its built optimizer (call inside ``strategy.scope()``).

    With ``config.finetune_from`` and ``load_base``, every weight of the base run's saved model
    (online and EMA networks, batch-norm statistics, image mean and std) is copied in; the
    optimizer starts fresh.
    """
    from cellgen.diffusion.ddim import DiffusionModel, make_optimizer
    from cellgen.diffusion.sampling import load_diffusion_model

    model = DiffusionModel(config, name="diffusion_model")
    if config.finetune_from and load_base:
        base, _ = load_diffusion_model(config.finetune_from, config.finetune_epoch)
        try:
            model.set_weights(base.get_weights())
        except ValueError as error:
            raise RunError(f"{config.finetune_from}: base model does not fit this config ({error})") from None
    optimizer = make_optimizer(config)
    model.compile(optimizer=optimizer, run_eagerly=config.run_eagerly)
    # Slots exist before restoring, and no variable is created inside the traced train step.
    optimizer.build(model.network.trainable_variables)
    return model, optimizer


def train(config: DiffusionConfig, resume: bool = False, verbose: int = 1) -> RunDir:
    """Trains (or resumes, or fine-tunes) a diffusion model and writes its run directory.

    Args:
        config: a resolved config (see :func:`resolve_config`).
        resume: continue the run in ``config.out`` from its latest checkpoint.
        verbose: Keras verbosity (1 progress bars, 2 one line per epoch, 0 silent).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
        DataError, ConfigError, RunError: bad input, with a one-line message.
    """
    from cellgen.cli.common import prepare_runtime

    strategy, precision = prepare_runtime(config)

    from cellgen.diffusion.sampling import saved_epochs
    from cellgen.plots import plot_history
    from cellgen.runs import TrainingState, make_callbacks, raise_if_stopped_on_nan, read_history, resume_training

    reader, val_reader = _make_readers(config)
    classes = [config.class_name] if config.class_name else reader.classes
    run = RunDir.create(config.out, config, classes, resume=resume)
    run.log(f"ddim: {reader.num_images} training images ({', '.join(classes)}), precision {precision}, "
            f"{strategy.num_replicas_in_sync} replica(s)")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    has_checkpoint = resume and TrainingState(run.checkpoints).latest() is not None
    with strategy.scope():
        model, optimizer = build_model(config, load_base=not has_checkpoint)

    state = TrainingState(run.checkpoints, diffusion=model, optimizer=optimizer)
    initial_epoch, previous_seconds, _ = resume_training(state, run, resume, config.epochs,
                                                         [(optimizer, config.learning_rate)])
    if initial_epoch == 0 and not config.finetune_from:
        # keras-io adapts its Normalization layer to the training set; fine-tuning keeps the base's statistics.
        batches = (images for _, (images, _labels) in zip(range(config.normalizer_batches), reader.epoch(0)))
        statistics = model.adapt_normalizer(batches)
        run.write_metrics("normalizer", statistics)

    snapshots = DiffusionSnapshots(run, model, fixed_noise(config), config)
    if initial_epoch == 0 and config.finetune_from:
        snapshots.write_grid("epoch-0000", f"base model {config.finetune_from} (epoch {config.finetune_epoch})")
    fit_started = time.perf_counter()

    def elapsed_seconds() -> float:
        return previous_seconds + time.perf_counter() - fit_started

    callbacks = make_callbacks(run, state, checkpoint_every=config.checkpoint_every, initial_epoch=initial_epoch,
                               extra_state=lambda epoch: {"train_seconds": elapsed_seconds()})
    if config.kid_encoder != "none" and val_reader is not None:
        callbacks.insert(1, _make_kid_callback(config, model, val_reader))
    callbacks.append(snapshots)
    fit_options = {}
    if val_reader is not None:
        fit_options = {"validation_data": val_reader.as_tf_dataset(with_labels=False),
                       "validation_steps": len(val_reader)}
    if initial_epoch < config.epochs:
        model.fit(reader.as_tf_dataset(start_epoch=initial_epoch, with_labels=False), steps_per_epoch=len(reader),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False, **fit_options)  # the reader shuffles (per epoch, seed-deterministic)
    raise_if_stopped_on_nan(callbacks, state)
    session_seconds = time.perf_counter() - fit_started
    epochs_done = max(initial_epoch, config.epochs)
    if epochs_done not in saved_epochs(run) and epochs_done > 0 and initial_epoch < config.epochs:
        snapshots.save_model(epochs_done)

    history_path = run.logs / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    history = {key: values for key, values in history.items() if values and not all(v != v for v in values)}
    if any(key != "epoch" for key in history):
        plot_history(history, run.metrics / "loss_curves.png",
                     title="DDIM: noise loss (MAE/MSE of the predicted noise), image loss; val_ = EMA network")
    trained_images = (epochs_done - initial_epoch) * len(reader) * reader.batch_size
    run.write_metrics("train", {
        "epochs": epochs_done,
        "train_seconds": elapsed_seconds(),
        "images_per_second_this_session": trained_images / session_seconds if trained_images else None,
        "training_images": reader.num_images,
        "validation_images": val_reader.num_images if val_reader is not None else 0,
        "steps_per_epoch": len(reader),
        "classes": classes,
        "parameters": {"network": model.network.count_params()},
        "precision": precision,
        "replicas": strategy.num_replicas_in_sync,
        "optimizer_iterations": int(optimizer.iterations.numpy()),
        "saved_epochs": saved_epochs(run),
        "final": {key: values[-1] for key, values in history.items() if key != "epoch" and values},
        "finetune_from": config.finetune_from or None,
        "finetune_epoch": config.finetune_epoch if config.finetune_from else None,
    })
    run.mark_complete(epochs=epochs_done, train_seconds=elapsed_seconds())
    print(f"trained {epochs_done} epochs; run directory: {run.path}")
    return run


def _make_kid_callback(config: DiffusionConfig, model, val_reader) -> ValidationKID:
    from cellgen.evaluate.features import load_extractor

    weights = None if config.kid_weights.lower() in ("none", "random") else config.kid_weights
    extractor = load_extractor(config.kid_encoder, input_size=config.kid_image_size if config.kid_encoder ==
                               "inception" else None, inception_weights=weights, batch_size=config.batch_size)
    real = []
    for images, _ in val_reader.epoch(0):
        real.append(images)
        if sum(len(chunk) for chunk in real) >= config.kid_images:
            break
    real_images = np.concatenate(real)[:config.kid_images]
    if len(real_images) < 2:
        raise ConfigError(f"val_data: KID needs at least 2 validation images, got {len(real_images)}")
    return ValidationKID(model, extractor, real_images, config.kid_diffusion_steps, config.seed + 1)
