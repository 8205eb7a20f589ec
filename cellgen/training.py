"""The one training loop every stage uses.

A stage (the DDIM, the Vanilla-GAN, the AC-GAN, the latent encoder, the CVAE,
the classifier) says what differs from the others by subclassing
:class:`TrainingStage`: its readers, its models and optimizers, what a sample
grid draws, which models it keeps, and what its summary adds. The loop does the
rest, in the same order for every stage:

1. runtime: the ``tf.distribute`` strategy first (``cpu:N`` must split the CPU
   before TensorFlow starts), then the seed and the precision policy;
2. readers (so bad data fails before a run directory exists);
3. the run directory (written by the chief worker only; see
   :func:`cellgen.distribute.is_chief`), its classes, the session's settings;
4. models and optimizers, built inside the strategy scope;
5. resume: every model and optimizer, the random seed generators of every
   model (dropout, diffusion noise, augmentation) and the stage's own state are
   restored from the latest good checkpoint;
6. callbacks: NaN guard, the stage's callbacks, CSV and TensorBoard logs,
   checkpoints, and one :class:`Snapshots` callback (grids and kept models);
7. ``fit``; a data error raised inside it becomes a one-line ``DataError``;
8. NaN check, history, loss-curve PNG, ``metrics/train.json`` and the
   completion marker.

Example:
    >>> run = run_training(DiffusionStage(config), resume=False)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np

from cellgen.config import CommonConfig
from cellgen.runs import (RunDir, TrainingState, clean_history, make_callbacks, raise_if_stopped_on_nan,
                          resume_training)


def prepare_runtime(config: CommonConfig) -> tuple[Any, str]:
    """Creates the tf.distribute strategy, seeds everything and sets the precision policy.

    The strategy comes first: ``cpu:N`` must split the CPU before TensorFlow
    initialises its devices. Returns ``(strategy, resolved_precision)``.
    """
    from cellgen.distribute import make_strategy
    from cellgen.precision import set_precision
    from cellgen.runs import set_seed

    strategy = make_strategy(config.strategy)
    set_seed(config.seed)
    precision = set_precision(config.precision)
    return strategy, precision


@dataclasses.dataclass
class Built:
    """What :meth:`TrainingStage.build` returns.

    Attributes:
        model: the ``keras.Model`` whose ``fit`` trains the stage.
        checkpointed: name -> model or optimizer saved in every checkpoint (their random
            seed generators too).
        learning_rates: ``(optimizer, rate)`` pairs set after restoring (the config decides
            the rate of a resumed session, not the checkpoint).
        parameters: name -> parameter count, for ``train.json``.
        optimizer_labels: checkpoint name -> name of an optimizer's step count in ``train.json``
            (default: the checkpoint name; a stage with one optimizer reports a plain number).
    """

    model: Any
    checkpointed: dict[str, Any]
    learning_rates: list[tuple[Any, float]] = dataclasses.field(default_factory=list)
    parameters: dict[str, int] = dataclasses.field(default_factory=dict)
    optimizer_labels: dict[str, str] = dataclasses.field(default_factory=dict)

    def optimizer_iterations(self) -> int | dict[str, int]:
        steps = {self.optimizer_labels.get(name, name): int(np.asarray(optimizer.iterations))
                 for name, optimizer in self.optimizers.items()}
        return next(iter(steps.values())) if len(steps) == 1 else steps

    @property
    def optimizers(self) -> dict[str, Any]:
        import keras

        return {name: obj for name, obj in self.checkpointed.items() if isinstance(obj, keras.optimizers.Optimizer)}


def reader_options(config: CommonConfig) -> dict[str, Any]:
    """The reader arguments every stage takes from its config's common fields (size, crop, seed,
    unreadable-file policy, decoding threads, expected classes)."""
    from cellgen.data import crop_option

    return dict(image_size=config.image_size, crop=crop_option(config.crop), seed=config.seed,
                on_error=config.on_error, workers=config.workers, classes=list(config.classes) or None)


def training_reader(data: str, batch_size: int, printer: Callable[[str], None] = print, **options):
    """The shuffled training reader of a generator: full batches only (a static batch splits evenly
    over replicas, and the batch statistics of a one-image remainder are meaningless); a set
    smaller than one batch (a rare class to fine-tune on) trains on one batch of all its images
    per step, and says so.
    """
    from cellgen.data import DataReader

    # One scan of the data (its warnings once), then the batch rule for what it found.
    reader = DataReader(data, batch_size=batch_size, shuffle=True, drop_remainder=False, **options)
    if reader.num_images >= batch_size:
        reader.drop_remainder = True
        return reader
    note = (f"{reader.num_images} training images are fewer than batch_size={batch_size}: "
            f"each step trains on all {reader.num_images}")
    printer(f"note: {note}")
    reader.notes = [*getattr(reader, "notes", []), note]
    return reader


class TrainingStage:
    """The parts of a training run that differ between stages; the loop calls them in order.

    Subclasses set :attr:`name` and :attr:`history_title` and implement :meth:`make_readers`
    and :meth:`build`; the other hooks have defaults that do nothing.

    Args:
        config: the resolved config of the run.
    """

    name = "stage"
    history_title = ""
    # Whether a grid is drawn before the first epoch (a GAN's untrained generator, a base model).
    initial_grid = False

    def __init__(self, config: CommonConfig):
        self.config = config
        self.reader = None
        self.val_reader = None
        self.built: Built | None = None

    # Data --------------------------------------------------------------
    def make_readers(self):
        """``(training reader, validation reader or None)``."""
        raise NotImplementedError

    def run_classes(self, reader) -> list[str]:
        """The classes recorded in ``classes.json``."""
        return list(reader.classes)

    def train_dataset(self, reader, start_epoch: int):
        """The ``tf.data`` pipeline ``fit`` reads (default: images only)."""
        return reader.as_tf_dataset(start_epoch=start_epoch, with_labels=False)

    def steps_per_epoch(self, reader) -> int:
        return len(reader)

    def fit_options(self, val_reader) -> dict[str, Any]:
        """Extra ``fit`` arguments (validation data, class weights)."""
        return {}

    # Models ------------------------------------------------------------
    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        """Builds the models and optimizers (inside the strategy scope). ``from_checkpoint`` says
        that a checkpoint will be restored, so a base run need not be read."""
        raise NotImplementedError

    def before_fit(self, run: RunDir, initial_epoch: int, restored: dict[str, Any] | None) -> None:
        """After restoring, before the first epoch of this session (e.g. data statistics)."""

    def callbacks(self, run: RunDir) -> list:
        """Stage callbacks, placed after the NaN guard and before the logs and checkpoints."""
        return []

    def checkpoint_state(self) -> dict[str, Any]:
        """JSON-able state saved with every checkpoint (restored by :meth:`before_fit`)."""
        return {}

    # Snapshots ---------------------------------------------------------
    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        """Draws ``samples/NAME.png`` (``epoch`` 0: before training)."""

    def save_models(self, run: RunDir, epoch: int) -> None:
        """Keeps the models of ``epoch`` under ``models/``."""

    def saved_epochs(self, run: RunDir) -> list[int]:
        return []

    def sample_every(self) -> int:
        return int(getattr(self.config, "sample_every", 1) or 0)

    def save_every(self) -> int:
        return int(getattr(self.config, "save_every", 0) or 0)

    # Results -----------------------------------------------------------
    def after_fit(self, run: RunDir) -> None:
        """After training (e.g. final models, reconstructions)."""

    def summary(self, run: RunDir) -> dict[str, Any]:
        """Stage-specific fields of ``metrics/train.json``."""
        return {}

    def log_line(self) -> str:
        """The first line of ``logs/run.log`` about the data."""
        reader = self.reader
        return f"{reader.num_images} training images ({', '.join(self.run_classes(reader))})"


class Snapshots(keras.callbacks.Callback):
    """The one snapshot callback: sample grids every ``sample_every`` epochs and kept models every
    ``save_every`` epochs, both after the last epoch, never for an epoch the NaN guard stopped."""

    def __init__(self, stage: TrainingStage, run: RunDir, last_epoch: int, initial_epoch: int = 0):
        super().__init__()
        self.stage, self.run, self.last_epoch, self.initial_epoch = stage, run, last_epoch, initial_epoch

    def _due(self, completed: int) -> tuple[bool, bool]:
        """Whether epoch ``completed`` gets a grid, and kept models."""
        last = completed >= self.last_epoch
        sample_every, save_every = self.stage.sample_every(), self.stage.save_every()
        return (last or bool(sample_every and completed % sample_every == 0),
                last or bool(save_every and completed % save_every == 0))

    def on_train_begin(self, logs=None):
        # The checkpoint callback runs before this one: a session killed between the checkpoint of
        # epoch N and its snapshots resumes after N without them. The restored state is the state
        # after N, so write what N should have left (a stale temporary file is overwritten).
        completed = self.initial_epoch
        if completed <= 0:
            return
        for stale in self.run.models.glob(".tmp-*"):  # the killed session's half-written model files
            stale.unlink()
        grid, models = self._due(completed)
        if grid and not (self.run.samples / f"epoch-{completed:04d}.png").exists():
            self.stage.write_grid(self.run, f"epoch-{completed:04d}", completed)
        if models and completed not in self.stage.saved_epochs(self.run):
            self.stage.save_models(self.run, completed)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "_cellgen_nan_failure", None):
            return
        completed = epoch + 1
        grid, models = self._due(completed)
        if grid:
            self.stage.write_grid(self.run, f"epoch-{completed:04d}", completed)
        if models:
            self.stage.save_models(self.run, completed)


class EpochLines(keras.callbacks.Callback):
    """One printed line per epoch (``verbose="lines"``): for runs whose output is interleaved with
    others' (classifiers trained side by side, ``jobs > 1``), where Keras' bars would be garbled."""

    def __init__(self, printer: Callable[[str], None], last_epoch: int):
        super().__init__()
        self.printer, self.last_epoch, self.started = printer, last_epoch, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        values = ", ".join(f"{key} {float(value):.4f}" for key, value in sorted((logs or {}).items())
                           if np.ndim(value) == 0)
        self.printer(f"epoch {epoch + 1}/{self.last_epoch} ({time.perf_counter() - self.started:.0f} s): {values}")


def open_run(config: CommonConfig, classes: Sequence[str], resume: bool, strategy=None) -> RunDir:
    """The run directory of a training session: the chief's ``config.out``; another worker of a
    multi-worker run writes into a private temporary folder (TensorFlow's multi-worker guide) and
    resumes from the chief's checkpoints (``run.restore_checkpoints``: ``config.out`` must be on a
    file system every worker reads)."""
    from cellgen.distribute import is_chief, worker_scratch_dir

    if strategy is not None and not is_chief(strategy):
        run = RunDir.create(worker_scratch_dir(config.out, strategy), config, classes, resume=False)
        run.restore_checkpoints = Path(config.out) / "checkpoints"
        return run
    return RunDir.create(config.out, config, classes, resume=resume)


def run_training(stage: TrainingStage, resume: bool = False, verbose: int | str = 1, strategy=None,
                 printer: Callable[[str], None] = print) -> RunDir:
    """Trains (or resumes) ``stage`` and writes its run directory; see the module docstring.

    Args:
        stage: the stage with its resolved config.
        resume: continue the run in ``config.out`` from its latest good checkpoint.
        verbose: Keras verbosity (1 progress bars, 2 one line per epoch, 0 silent), or
            ``"lines"``: one line per epoch through ``printer`` (:class:`EpochLines`).
        strategy: an existing ``tf.distribute`` strategy (then only the seed and precision are
            set); default: made from ``config.strategy``.
        printer: where the loop's own messages go.

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
        DataError, ConfigError, RunError: bad input, with a one-line message.
    """
    config = stage.config
    if strategy is None:
        strategy, precision = prepare_runtime(config)
    else:
        from cellgen.precision import set_precision
        from cellgen.runs import set_seed

        set_seed(config.seed)
        precision = set_precision(config.precision)

    stage.reader, stage.val_reader = stage.make_readers()
    reader, config = stage.reader, stage.config  # a stage may complete its config from the data
    classes = stage.run_classes(reader)
    run = open_run(config, classes, resume, strategy)
    run.log(f"{stage.name}: {stage.log_line()}, precision {precision}, "
            f"{strategy.num_replicas_in_sync} replica(s)")
    for note in getattr(reader, "notes", ()) or ():
        run.log(f"data: {note}")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    try:
        return _train(stage, run, resume, verbose, strategy, precision, printer)
    finally:
        run.unlock()


def _train(stage: TrainingStage, run: RunDir, resume: bool, verbose: int | str, strategy, precision: str,
           printer: Callable[[str], None]) -> RunDir:
    from cellgen.distribute import (check_workers_agree, collective_errors, files_digest, fit_multi_worker,
                                    is_multi_worker)

    config, reader = stage.config, stage.reader
    logged_notes = list(getattr(reader, "notes", ()) or ())
    restore_from = getattr(run, "restore_checkpoints", run.checkpoints)  # the chief's, on another worker
    has_checkpoint = resume and TrainingState(restore_from).latest() is not None
    with strategy.scope():
        stage.built = built = stage.build(run, from_checkpoint=has_checkpoint)
    state = TrainingState(run.checkpoints, keep=getattr(config, "keep_checkpoints", 2), **built.checkpointed)
    source = state if restore_from == run.checkpoints else TrainingState(restore_from, keep=None, **built.checkpointed)
    initial_epoch, previous_seconds, restored = resume_training(source, run, resume, config.epochs,
                                                                built.learning_rates, printer=printer)
    steps = stage.steps_per_epoch(reader)
    multi_worker = is_multi_worker(strategy)
    if multi_worker:
        fit_multi_worker(built.model, strategy)
        check_workers_agree(strategy, resumed_epoch=initial_epoch, steps_per_epoch=steps,
                            training_images=reader.num_images, training_files=files_digest(reader))
    stage.before_fit(run, initial_epoch, restored)
    if initial_epoch == 0 and stage.initial_grid:
        stage.write_grid(run, "epoch-0000", 0)

    fit_started = time.perf_counter()

    def elapsed_seconds() -> float:
        return previous_seconds + time.perf_counter() - fit_started

    callbacks = make_callbacks(run, state, checkpoint_every=getattr(config, "checkpoint_every", 1),
                               initial_epoch=initial_epoch,
                               extra_state=lambda epoch: {"train_seconds": elapsed_seconds(),
                                                          **stage.checkpoint_state()})
    for offset, callback in enumerate(stage.callbacks(run)):
        callbacks.insert(1 + offset, callback)  # after the NaN guard, before the logs and checkpoints
    callbacks.append(Snapshots(stage, run, config.epochs, initial_epoch=initial_epoch))
    if verbose == "lines":
        callbacks.append(EpochLines(printer, config.epochs))
        verbose = 0
    if initial_epoch < config.epochs:
        dataset, options = stage.train_dataset(reader, initial_epoch), stage.fit_options(stage.val_reader)
        if multi_worker:  # every worker reads everything and keeps its part of each global batch
            from cellgen.distribute import shard_by_data

            dataset = shard_by_data(dataset)
            options = {**options, **({"validation_data": shard_by_data(options["validation_data"])}
                                     if "validation_data" in options else {})}
        from cellgen.data import raising_data_errors

        # A file that fails to decode inside fit is a one-line DataError naming it, not a traceback.
        with collective_errors(strategy), raising_data_errors(reader, stage.val_reader):
            built.model.fit(dataset, steps_per_epoch=steps,
                            epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                            verbose=verbose, shuffle=False,  # the reader shuffles (per epoch, seed-deterministic)
                            **options)
    raise_if_stopped_on_nan(callbacks, state)
    for note in getattr(reader, "notes", ()) or ():
        if note not in logged_notes:  # e.g. upscaled images, known once an epoch was read
            run.log(f"data: {note}")
    session_seconds = time.perf_counter() - fit_started
    epochs_done = state_epochs(state, initial_epoch)
    if epochs_done and epochs_done not in stage.saved_epochs(run):
        # Early stopping ended before the last epoch, or a killed process left the last epoch's
        # checkpoint without its model files (then this resumed session trains nothing).
        stage.save_models(run, epochs_done)
    stage.after_fit(run)

    history = clean_history(run.logs / "history.csv")
    if any(key != "epoch" for key in history) and stage.history_title:
        from cellgen.plots import plot_history

        plot_history(history, run.metrics / "loss_curves.png", title=stage.history_title)
    trained_images = (epochs_done - initial_epoch) * steps * config.batch_size
    val_reader = stage.val_reader
    run.write_metrics("train", {
        "epochs": epochs_done,
        "train_seconds": elapsed_seconds(),
        "images_per_second_this_session": trained_images / session_seconds if trained_images else None,
        "training_images": reader.num_images,
        "validation_images": val_reader.num_images if val_reader is not None else 0,
        "steps_per_epoch": steps,
        "batch_size": config.batch_size,
        "classes": stage.run_classes(reader),
        "parameters": built.parameters,
        "precision": precision,
        "replicas": strategy.num_replicas_in_sync,
        "optimizer_iterations": built.optimizer_iterations(),
        "saved_epochs": stage.saved_epochs(run),
        "final": {key: values[-1] for key, values in history.items() if key != "epoch" and values},
        **stage.summary(run),
    })
    if multi_worker:  # all workers finish together (none leaves while another still needs it)
        check_workers_agree(strategy, epochs_done=epochs_done)
    run.mark_complete(epochs=epochs_done, train_seconds=elapsed_seconds())
    printer(f"trained {epochs_done} epoch(s); run directory: {run.path}")
    return run


def state_epochs(state: TrainingState, initial_epoch: int) -> int:
    """Completed epochs: those of the newest checkpoint (never fewer than ``initial_epoch``)."""
    latest = state.latest()
    if latest is None:
        return initial_epoch
    from cellgen.runs import read_json

    return max(initial_epoch, int(read_json(latest / "state.json")["epoch"]))
