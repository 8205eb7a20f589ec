"""Training a diffusion run: the DDIM stage of the shared training loop (:mod:`cellgen.training`).

:func:`resolve_config` turns a :class:`~cellgen.config.RunRequest` into a config (a preset and
overrides; the saved config on resume; the base run's architecture when fine-tuning) and
:func:`train` runs it, writing the run directory::

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/      online + EMA networks, image statistics, optimizer, noise seeds
    RUN/models/diffusion-epoch-NNNN.keras   every save_every epochs and the last (generate.py, fine-tuning)
    RUN/samples/epoch-NNNN.png       grids from fixed noise (epoch-0000: the base model, when fine-tuning)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json, metrics/normalizer.json

A class-conditional run (``conditional = true``) records its classes in the config
(``class_names``) and trains on ``(image, label)`` pairs; fine-tuning it on one class
keeps the base run's class ids. A run conditioned on attributes (``attributes``, from the
attribute table ``attributes_csv``) records their vocabulary (``attribute_values``) too and
trains on ``(image, label, attribute ids)``. ``select`` trains on a subset named by
attribute values (N&Z's fine-tune on one abnormality, ``--finetune-from RUN --select
nucleus_shape=segmented-multilobed``).

Example:
    >>> config = load_config(DiffusionConfig, "ddim_fast", {"data": "train", "out": "runs/d"})  # doctest: +SKIP
    >>> run = train(config)                                                                     # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np

from cellgen.config import ConfigError, RunRequest
from cellgen.diffusion.config import ARCHITECTURE_FIELDS, DiffusionConfig
from cellgen.finetune import FinetuneRules, resolve_run_config
from cellgen.runs import RunDir, RunError
from cellgen.training import Built, TrainingStage, reader_options, run_training, training_reader

# The image statistics come with the base weights, so the fields that decide them are fixed too.
_FINETUNE_FIXED = ARCHITECTURE_FIELDS + ("crop",)
MODEL_KIND = "diffusion"


def _finetune_rules() -> FinetuneRules:
    from cellgen.diffusion.sampling import load_diffusion_config, resolve_epoch

    return FinetuneRules(fixed_fields=_FINETUNE_FIXED, resume_fixed=("time_mode", "timesteps"),
                         load_base_config=load_diffusion_config, resolve_epoch=resolve_epoch)


def resolve_config(request: RunRequest) -> DiffusionConfig:
    """The run's config for a ``train_ddim.py`` request.

    New, fine-tuning (``request.finetune_from``) and resumed runs as in
    :func:`cellgen.finetune.resolve_run_config` (the architecture and image statistics
    come from the base run when fine-tuning; a resumed run also keeps its time mode).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    config = resolve_run_config(DiffusionConfig, request, _finetune_rules())
    config = _with_attribute_table(config, request)
    if config.kid_encoder != "none" and not config.val_data:
        raise ConfigError(f"kid_encoder={config.kid_encoder!r} needs val_data (KID compares generated and "
                          "validation images): --set val_data=DIR")
    return config


def _is_table(data: str) -> bool:
    """Whether ``data`` is an attribute table CSV (``class,file`` columns) rather than a folder or ``path,label``."""
    from cellgen.data.attributes import is_table_header

    path = Path(data)
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    import csv

    with open(path, newline="", encoding="utf-8-sig") as handle:
        return is_table_header(next(csv.reader(handle), None) or [])


def _with_attribute_table(config: DiffusionConfig, request: RunRequest) -> DiffusionConfig:
    """Checks that ``select`` and ``attributes`` have an attribute table; a fine-tune on its base run's
    data (not given again) also takes the base run's ``attributes_csv``."""
    if not (config.select or config.attributes) or config.attributes_csv or _is_table(config.data):
        return config
    if config.finetune_from and "attributes_csv" not in request.explicit_fields():
        from cellgen.diffusion.sampling import load_diffusion_config

        base = load_diffusion_config(config.finetune_from)
        if base.attributes_csv and base.data == config.data:
            return config.replace(attributes_csv=base.attributes_csv)
    needs = "select" if config.select else "attributes"
    raise ConfigError(f"{needs} needs an attribute table: --attributes-csv CSV (WBCAtt's layout, "
                      "split,class,file,<attributes>) or data = such a CSV")


def fixed_noise(config: DiffusionConfig) -> np.ndarray:
    """The noise of the sample grids: the same every epoch (and on resume) for a seed."""
    rng = np.random.default_rng([config.seed, 4242])
    count = max(config.grid_size, 4)
    return rng.standard_normal((count, config.image_size, config.image_size, 3)).astype(np.float32)


def is_conditional(config: DiffusionConfig) -> bool:
    return bool(getattr(config, "conditional", False))


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


class DiffusionStage(TrainingStage):
    """The DDIM (and discrete DDPM) stage of the shared loop."""

    name = "ddim"
    history_title = "DDIM: noise loss (MAE/MSE of the predicted noise), image loss; val_ = EMA network"

    def __init__(self, config: DiffusionConfig):
        super().__init__(config)
        self._export = None

    @property
    def initial_grid(self) -> bool:  # the base model's samples, before fine-tuning changes them
        return bool(self.config.finetune_from)

    def _attribute_options(self, for_validation: bool = False) -> dict:
        """The reader's attribute arguments: the table, the conditioning attributes and their
        vocabulary (once known), and the selection (without its ``split`` items for validation data,
        whose folder is the split)."""
        config = self.config
        if not (config.attributes or config.select):
            return {}
        table = config.attributes_csv or (config.data if _is_table(config.data) else None)
        select = list(config.select)
        if for_validation:
            from cellgen.data.attributes import SPLIT_COLUMN, split_item

            select = [item for item in select if split_item(item)[0] != SPLIT_COLUMN]
        return dict(attributes=table, attribute_columns=list(config.attributes),
                    attribute_values=list(config.attribute_values) or None, select=select or None)

    def make_readers(self):
        from cellgen.data import DataError, DataReader

        config = self.config
        common = dict(reader_options(config), class_filter=[config.class_name] if config.class_name else None)
        reader = training_reader(config.data, config.batch_size, **common, **self._attribute_options())
        # A new conditional run's label vocabulary is the data's classes (and the attribute table's
        # values), fixed from then on.
        self.config = config = config.with_data_classes(reader.classes).with_data_attributes(
            reader.attribute_vocabulary)
        val_reader = None
        if config.val_data:
            try:
                val_reader = DataReader(config.val_data, batch_size=config.batch_size, shuffle=False, **common,
                                        **self._attribute_options(for_validation=True))
            except DataError as error:
                raise DataError(f"val_data: {error}") from None
        return reader, val_reader

    def log_line(self) -> str:
        line = super().log_line()
        if self.reader.selection is not None:
            line += f", selected {self.reader.selection}"
        if self.config.attributes:
            line += f", conditioned on attributes {', '.join(self.config.attributes)}"
        return line

    def run_classes(self, reader) -> list[str]:
        return [self.config.class_name] if self.config.class_name else list(reader.classes)

    def _labelled(self, dataset, reader):
        """Maps the reader's label ids to the model's class ids (a one-class fine-tune's 0 is its base id);
        batches of a run with attributes keep their attribute ids as a third element."""
        import tensorflow as tf

        ids = tf.constant(self.config.label_map(reader.classes))
        if self.config.attributes:
            return dataset.map(lambda images, labels, attributes: (images, tf.gather(ids, tf.cast(labels, tf.int32)),
                                                                   attributes))
        return dataset.map(lambda images, labels: (images, tf.gather(ids, tf.cast(labels, tf.int32))))

    def train_dataset(self, reader, start_epoch: int):
        if is_conditional(self.config):
            return self._labelled(reader.as_tf_dataset(start_epoch=start_epoch, with_labels=True,
                                                       with_attributes=bool(self.config.attributes)), reader)
        return reader.as_tf_dataset(start_epoch=start_epoch, with_labels=False)

    def fit_options(self, val_reader):
        if val_reader is None:
            return {}
        if is_conditional(self.config):
            data = self._labelled(val_reader.as_tf_dataset(with_labels=True,
                                                           with_attributes=bool(self.config.attributes)), val_reader)
        else:
            data = val_reader.as_tf_dataset(with_labels=False)
        return {"validation_data": data, "validation_steps": len(val_reader)}

    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        model, optimizer = build_model(self.config, load_base=not from_checkpoint)
        self.model = model
        return Built(model, {"diffusion": model, "optimizer": optimizer},
                     learning_rates=[(optimizer, self.config.learning_rate)],
                     parameters={"network": model.network.count_params()})

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        config = self.config
        if initial_epoch == 0 and not config.finetune_from:
            # keras-io adapts its Normalization layer to the training set; fine-tuning keeps the base's statistics.
            batches = (images for _, (images, _labels) in zip(range(config.normalizer_batches),
                                                              self.reader.epoch(0)))
            run.write_metrics("normalizer", self.model.adapt_normalizer(batches))
        self.noise = fixed_noise(config)

    def callbacks(self, run: RunDir) -> list:
        if self.config.kid_encoder != "none" and self.val_reader is not None:
            return [_make_kid_callback(self.config, self.model, self.val_reader)]
        return []

    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        """Samples from fixed noise with the EMA network; a conditional model draws one row per class
        (the same noise in every row, so the rows differ only by the class)."""
        from cellgen.plots import save_image_grid

        config = self.config
        sampler = self.model.resolve_sampler(None)
        if epoch == 0:
            title = f"base model {config.finetune_from} (epoch {config.finetune_epoch})"
        else:
            method = sampler if config.sample_eta == 0 or sampler != "ddim" else f"ddim eta={config.sample_eta}"
            title = f"epoch {epoch}: {config.diffusion_steps} {method} steps, EMA network"
        options = dict(steps=config.diffusion_steps, eta=config.sample_eta, seed=config.seed)
        if is_conditional(config):
            rows = len(self.model.sample_classes)
            columns = max(4, config.grid_size // rows)
            images, row_names = self.model.generate_class_grid(self.noise[:columns], **options)
            title += f", guidance {config.guidance:g}"
            save_image_grid(images, run.samples / f"{name}.png", columns=columns, row_labels=row_names,
                            title=title, scale=max(1, 64 // config.image_size))
            return
        images = self.model.generate_from_noise(self.noise[:config.grid_size], **options)
        columns = max(1, int(math.ceil(math.sqrt(len(images)))))
        save_image_grid(images, run.samples / f"{name}.png", columns=columns, title=title,
                        scale=max(1, 96 // config.image_size))

    def save_models(self, run: RunDir, epoch: int) -> None:
        # An uncompiled copy (built once): the file holds the online and EMA networks and the image
        # statistics, but no optimizer.
        from cellgen.diffusion.ddim import DiffusionModel

        if self._export is None:
            self._export = DiffusionModel(self.model.config, name="diffusion_model")
        self._export.set_weights(self.model.get_weights())
        run.save_model(self._export, MODEL_KIND, epoch)

    def saved_epochs(self, run: RunDir) -> list[int]:
        return run.saved_epochs(MODEL_KIND)

    def summary(self, run: RunDir) -> dict:
        config = self.config
        return {"finetune_from": config.finetune_from or None,
                "finetune_epoch": config.finetune_epoch if config.finetune_from else None,
                "conditional": is_conditional(config),
                **({"attributes": list(config.attributes)} if config.attributes else {}),
                **({"select": str(self.reader.selection)} if self.reader.selection is not None else {})}


def train(config: DiffusionConfig, resume: bool = False, verbose: int = 1, strategy=None) -> RunDir:
    """Trains (or resumes, or fine-tunes) a diffusion model and writes its run directory.

    Args:
        config: a resolved config (see :func:`resolve_config`).
        resume: continue the run in ``config.out`` from its latest checkpoint.
        verbose: Keras verbosity (1 progress bars, 2 one line per epoch, 0 silent).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
        DataError, ConfigError, RunError: bad input, with a one-line message.
    """
    return run_training(DiffusionStage(config), resume=resume, verbose=verbose, strategy=strategy)


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
