"""AC-GAN on a frozen, pre-trained Vanilla-GAN (Klang & Carlberg 2020, sections 3.13, 4.5, 5.2).

Networks (K&C Figures 24-25)::

    generator:      [z (latent_dim), one-hot class (C)] -> concat
                      -> Dense(100, ReLU) x (head_layers - 1) -> Dense(latent_dim, "generator_head_output")
                      -> backbone generator (frozen)                          -> image
    discriminator:  image -> backbone convolution trunk (frozen) -> features
                      -> backbone "d_realness" (trainable)                   -> realness logit
                      -> Dense(100, ReLU) x head_layers -> Dense(C) softmax  -> class probabilities

Objective (Odena, Olah & Shlens 2017; K&C equation 33)::

    L_S = E[log P(S=real | x_real)] + E[log P(S=fake | x_fake)]
    L_C = E[log P(C=c | x_real)]    + E[log P(C=c | x_fake)]

The discriminator maximises L_S + L_C, i.e. minimises ``d_loss = BCE_S + CE_C``
over real and fake batches. The generator maximises L_C - L_S; as in Odena et
al.'s implementation we use the non-saturating form of the -L_S term (minimise
-log P(S=real | x_fake), Goodfellow et al. 2014), so ``g_loss = BCE(1, D_S(G(z, c)))
+ CE(c, D_C(G(z, c)))``. Losses are per-example and reduced over the global batch.

Example:
    >>> generator, discriminator, backbone_config = load_gan_models("runs/gan")          # doctest: +SKIP
    >>> acgan_g, acgan_d = build_acgan_networks(generator, discriminator, num_classes=8,
    ...                                         config=ACGANConfig(backbone="runs/gan"))  # doctest: +SKIP
    >>> images = acgan_g([latents, keras.ops.one_hot(labels, 8)], training=False)         # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from cellgen.config import ConfigError
from cellgen.gan.acgan_config import ACGANConfig
from cellgen.gan.adversarial import AdversarialModel
from cellgen.gan.networks import REALNESS_LAYER, discriminator_trunk
from cellgen.gan.vanilla import fixed_latents, global_mean
from cellgen.runs import RunDir, RunError

KIND = ACGANConfig.kind
ACGAN_GENERATOR = "acgan_generator"
ACGAN_DISCRIMINATOR = "acgan_discriminator"
CLASS_OUTPUT = "aux_class"
METRIC_NAMES = ("d_loss", "g_loss", "d_source_loss", "d_class_loss", "aux_acc_real", "aux_acc_fake")
_EPOCH_FILE = re.compile(r"^acgan_generator-epoch-(\d+)\.keras$")


# Networks ---------------------------------------------------------------------------------------


def check_backbone_compatible(config: ACGANConfig, backbone_config, backbone_path: str) -> None:
    """Raises a one-line ConfigError when the AC-GAN's image or latent size differs from the backbone's."""
    for name in ("image_size", "latent_dim"):
        ours, theirs = getattr(config, name), getattr(backbone_config, name)
        if ours != theirs:
            raise ConfigError(f"{name}={ours} differs from the backbone run's {name}={theirs} ({backbone_path}); "
                              f"an AC-GAN keeps its Vanilla-GAN's {name} (drop the option or train a new backbone)")


def freeze_backbone_networks(generator: keras.Model, discriminator: keras.Model) -> None:
    """Freezes the backbone generator and the discriminator's convolution trunk (K&C section 4.5).

    ``trainable=False`` also puts batch normalization in inference mode (Keras 3), so
    moving statistics stay those of the Vanilla-GAN. The realness layer stays trainable.
    """
    generator.trainable = False
    for layer in discriminator.layers:
        layer.trainable = layer.name == REALNESS_LAYER


def build_acgan_networks(generator: keras.Model, discriminator: keras.Model, num_classes: int,
                         config: ACGANConfig) -> tuple[keras.Model, keras.Model]:
    """Wraps a Vanilla-GAN's networks into the AC-GAN generator and discriminator.

    Call inside ``strategy.scope()``; freeze the backbone first with
    :func:`freeze_backbone_networks` when ``config.freeze_backbone``.

    Args:
        generator: backbone generator, input (latent_dim,), output (H, W, 3).
        discriminator: backbone discriminator with ``d_features`` and ``d_realness`` layers.
        num_classes: classes of the auxiliary classifier (from the data).
        config: head sizes and activations.

    Returns:
        ``(acgan_generator, acgan_discriminator)``: the generator takes ``[latent, one_hot]``;
        the discriminator returns ``[realness_logit (N, 1), class_probabilities (N, C)]``.
    """
    if num_classes < 2:
        raise ConfigError(f"an AC-GAN needs at least 2 classes in the training data, got {num_classes}")
    latent_dim = int(generator.input_shape[-1])
    latent = keras.Input((latent_dim,), name="latent")
    one_hot = keras.Input((num_classes,), name="class_one_hot")
    x = keras.layers.Concatenate(name="g_head_concat")([latent, one_hot])
    for index in range(config.head_layers - 1):
        x = keras.layers.Dense(config.head_units, activation="relu", name=f"g_head_{index}")(x)
    x = keras.layers.Dense(latent_dim, activation=config.generator_head_output,
                           name=f"g_head_{config.head_layers - 1}")(x)
    image = generator(x)
    acgan_generator = keras.Model([latent, one_hot], image, name=ACGAN_GENERATOR)

    trunk = discriminator_trunk(discriminator)
    image_in = keras.Input(tuple(discriminator.input_shape[1:]), name="image")
    features = trunk(image_in)
    # The pre-trained realness layer, shared with the backbone discriminator (trainable, K&C 4.5).
    realness = discriminator.get_layer(REALNESS_LAYER)(features)
    h = features
    for index in range(config.head_layers):
        h = keras.layers.Dense(config.head_units, activation="relu", name=f"d_head_{index}")(h)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="aux_logits")(h)
    probabilities = keras.layers.Activation("softmax", dtype="float32", name=CLASS_OUTPUT)(logits)
    acgan_discriminator = keras.Model(image_in, [realness, probabilities], name=ACGAN_DISCRIMINATOR)
    return acgan_generator, acgan_discriminator


# Losses -----------------------------------------------------------------------------------------


def source_loss(logits, target: float):
    """Per-example BCE of the realness logit against a constant target (float32)."""
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), target), logits=logits)


def class_loss(labels, probabilities):
    """Per-example -log P(C = c | x) of the auxiliary classifier (float32)."""
    return keras.losses.sparse_categorical_crossentropy(tf.cast(labels, tf.int32),
                                                        tf.cast(probabilities, tf.float32))


def class_accuracy(labels, probabilities):
    predicted = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
    return tf.reduce_mean(tf.cast(tf.equal(predicted, tf.cast(labels, tf.int32)), tf.float32))


# Training model ---------------------------------------------------------------------------------


class ACGAN(AdversarialModel):
    """The AC-GAN training model: two Adam optimizers and the objective of Odena et al. (2017).

    Args:
        generator: AC-GAN generator (``[latent, one_hot] -> image``).
        discriminator: AC-GAN discriminator (``image -> [realness_logit, class_probabilities]``).
        latent_dim: size of z.
        num_classes: classes of the auxiliary classifier.
        noise_seed: seed of the stateless latent and label draws.

    Example:
        >>> acgan = ACGAN(acgan_g, acgan_d, latent_dim=100, num_classes=8)             # doctest: +SKIP
        >>> acgan.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        ...               d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))       # doctest: +SKIP
        >>> acgan.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader))            # doctest: +SKIP
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, num_classes: int,
                 noise_seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.noise_seed = int(noise_seed)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _draw(self, batch_size, step, draw: int):
        """Stateless latents and uniform class labels keyed by (seed, step, draw, replica)."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        counter = (tf.cast(step, tf.int64) * 2 + draw) * replicas + tf.cast(replica, tf.int64)
        seed = tf.stack([tf.constant(self.noise_seed, tf.int64), counter])
        latent = tf.random.stateless_normal((batch_size, self.latent_dim), seed=seed, dtype=tf.float32)
        labels = tf.random.stateless_uniform((batch_size,), seed=seed + [0, 7_919], minval=0,
                                             maxval=self.num_classes, dtype=tf.int32)
        return latent, labels

    def train_step(self, data):
        real, real_labels = data
        real = tf.cast(real, tf.float32)
        real_labels = tf.cast(real_labels, tf.int32)
        batch_size = tf.shape(real)[0]
        step = self.d_optimizer.iterations

        latent, fake_labels = self._draw(batch_size, step, 0)
        fake = tf.stop_gradient(self.generator([latent, tf.one_hot(fake_labels, self.num_classes)], training=True))
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real_logit, real_probabilities = self.discriminator(real, training=True)
            fake_logit, fake_probabilities = self.discriminator(fake, training=True)
            # -(L_S + L_C), per example (K&C eq. 33).
            source_terms = source_loss(real_logit, 1.0) + source_loss(fake_logit, 0.0)
            class_terms = class_loss(real_labels, real_probabilities) + class_loss(fake_labels, fake_probabilities)
            d_loss = self.d_optimizer.scale_loss(global_mean(source_terms + class_terms))
        gradients = tape.gradient(d_loss, d_variables)
        self.d_optimizer.apply_gradients(zip(gradients, d_variables))

        latent, fake_labels = self._draw(batch_size, step, 1)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator([latent, tf.one_hot(fake_labels, self.num_classes)], training=True)
            logit, probabilities = self.discriminator(generated, training=True)
            # -(L_C - L_S) with the non-saturating source term.
            g_terms = source_loss(logit, 1.0) + class_loss(fake_labels, probabilities)
            g_loss = self.g_optimizer.scale_loss(global_mean(g_terms))
        gradients = tape.gradient(g_loss, g_variables)
        self.g_optimizer.apply_gradients(zip(gradients, g_variables))

        self.trackers["d_loss"].update_state(tf.reduce_mean(source_terms + class_terms))
        self.trackers["g_loss"].update_state(tf.reduce_mean(g_terms))
        self.trackers["d_source_loss"].update_state(tf.reduce_mean(source_terms))
        self.trackers["d_class_loss"].update_state(tf.reduce_mean(class_terms))
        self.trackers["aux_acc_real"].update_state(class_accuracy(real_labels, real_probabilities))
        self.trackers["aux_acc_fake"].update_state(class_accuracy(fake_labels, fake_probabilities))
        return {name: tracker.result() for name, tracker in self.trackers.items()}


# Generation -------------------------------------------------------------------------------------


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


def model_file(kind: str, epoch: int) -> str:
    """``acgan_generator-epoch-0001.keras`` / ``acgan_discriminator-epoch-0001.keras``."""
    return f"{kind}-epoch-{epoch:04d}.keras"


class ACGANSnapshots(keras.callbacks.Callback):
    """Per-epoch class grid (one row per class, fixed latents) and saved ``.keras`` networks.

    Args:
        run: the run directory.
        generator, discriminator: AC-GAN networks.
        classes: class names (row labels).
        latents: fixed latents, ``samples_per_class`` of them, reused for every row.
        save_every, sample_every: periods in epochs.
        last_epoch: the final epoch of this fit (always saved).
    """

    def __init__(self, run: RunDir, generator, discriminator, classes: list[str], latents: np.ndarray,
                 save_every: int, sample_every: int, last_epoch: int):
        super().__init__()
        self.run = run
        self.generator = generator
        self.discriminator = discriminator
        self.classes = list(classes)
        self.latents = latents
        self.save_every = save_every
        self.sample_every = sample_every
        self.last_epoch = last_epoch

    def write_grid(self, name: str) -> Path:
        from cellgen.plots import save_image_grid

        columns = len(self.latents)
        latents = np.tile(self.latents, (len(self.classes), 1))
        labels = np.repeat(np.arange(len(self.classes)), columns)
        images = generate_class_images(self.generator, latents, labels, len(self.classes))
        scale = max(1, 64 // images.shape[1])
        return save_image_grid(images, self.run.samples / f"{name}.png", columns=columns, row_labels=self.classes,
                               title=f"AC-GAN {name}: one row per class", scale=scale)

    def save_models(self, epoch: int) -> None:
        for kind, model in ((ACGAN_GENERATOR, self.generator), (ACGAN_DISCRIMINATOR, self.discriminator)):
            final = self.run.models / model_file(kind, epoch)
            temporary = final.with_name(".tmp-" + final.name)
            model.save(temporary)
            os.replace(temporary, final)

    def on_epoch_end(self, epoch, logs=None):
        if getattr(self.model, "_cellgen_nan_failure", None):
            return
        completed = epoch + 1
        last = completed >= self.last_epoch
        if completed % self.sample_every == 0 or last:
            self.write_grid(f"epoch-{completed:04d}")
        if completed % self.save_every == 0 or last:
            self.save_models(completed)


# Loading and the generate.py sampler ------------------------------------------------------------


def saved_epochs(run: RunDir) -> list[int]:
    """Epochs with a saved AC-GAN generator, ascending."""
    if not run.models.is_dir():
        return []
    return sorted(int(match.group(1)) for match in map(_EPOCH_FILE.match, os.listdir(run.models)) if match)


def resolve_epoch(run: RunDir, epoch: int | None = None) -> int:
    epochs = saved_epochs(run)
    if not epochs:
        raise RunError(f"{run.path}: no saved AC-GAN generator in {run.models} (has the run finished an epoch?)")
    if not epoch:
        return epochs[-1]
    if epoch not in epochs:
        raise RunError(f"{run.path}: no AC-GAN generator saved for epoch {epoch}; saved epochs: "
                       f"{', '.join(map(str, epochs))}")
    return int(epoch)


def load_acgan_generator(run: RunDir | str | os.PathLike, epoch: int | None = None
                         ) -> tuple[keras.Model, ACGANConfig, list[str], int]:
    """The saved AC-GAN generator of a run (``safe_mode=True``), its config, classes and epoch."""
    run = run if isinstance(run, RunDir) else RunDir.open(run)
    config = run.load_config(ACGANConfig)
    chosen = resolve_epoch(run, epoch)
    path = run.models / model_file(ACGAN_GENERATOR, chosen)
    try:
        generator = keras.saving.load_model(path, safe_mode=True, compile=False)
    except (ValueError, OSError) as error:
        raise RunError(f"{path}: cannot load ({error})") from None
    return generator, config, run.classes, chosen


class ACGANSampler:
    """Class-conditional images from an AC-GAN run (the :class:`cellgen.sampling.Sampler` interface).

    Args:
        generator: the AC-GAN generator.
        classes: class names in id order.
        latent_dim: size of z.
        epoch: the saved epoch it came from.

    Example:
        >>> sampler = load_acgan_sampler(RunDir.open("runs/acgan"))     # doctest: +SKIP
        >>> sampler.sample(4, seed=0, class_name="basophil").shape        # doctest: +SKIP
        (4, 256, 256, 3)
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


# Training run -----------------------------------------------------------------------------------


def load_backbone(config: ACGANConfig):
    """The backbone run, its config (checked against ``config``) and the resolved saved epoch."""
    from cellgen.gan.sampling import load_gan_config, resolve_epoch as resolve_gan_epoch

    if not config.backbone:
        raise ConfigError("no backbone: pass --backbone VANILLA_GAN_RUN")
    backbone_run = RunDir.open(config.backbone)
    backbone_config = load_gan_config(backbone_run)
    check_backbone_compatible(config, backbone_config, str(backbone_run.path))
    epoch = resolve_gan_epoch(backbone_run, config.backbone_epoch)
    return backbone_run, backbone_config, epoch


def train(config: ACGANConfig, resume: bool = False, verbose: int = 1) -> RunDir:
    """Trains (or resumes) an AC-GAN on a Vanilla-GAN backbone and writes its run directory.

    Run directory: config, classes.json, ``checkpoints/`` (both AC-GAN networks and optimizers),
    ``models/acgan_{generator,discriminator}-epoch-NNNN.keras``, ``samples/epoch-NNNN.png``
    (class grids), ``logs/history.csv`` + TensorBoard, ``metrics/loss_curves.png``, ``metrics/train.json``.

    Raises:
        NonFiniteLossError: a loss became NaN/inf (the last good checkpoint is kept).
        ConfigError, RunError, DataError: bad input, one line naming the option or file.
    """
    from cellgen.cli.common import crop_option, prepare_runtime

    backbone_run, backbone_config, backbone_epoch = load_backbone(config)
    strategy, precision = prepare_runtime(config)

    from cellgen.data_reader import DataReader
    from cellgen.gan.networks import build_gan_networks
    from cellgen.gan.sampling import load_gan_models
    from cellgen.plots import plot_history
    from cellgen.precision import wrap_optimizer
    from cellgen.runs import TrainingState, make_callbacks, raise_if_stopped_on_nan, read_history, resume_training

    reader = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                        batch_size=config.batch_size, shuffle=True, seed=config.seed, on_error=config.on_error,
                        workers=config.workers, drop_remainder=True)
    classes = reader.classes
    run = RunDir.create(config.out, config, classes, resume=resume)
    run.log(f"acgan: backbone {backbone_run.path} epoch {backbone_epoch}, {reader.num_images} images, "
            f"{len(classes)} classes, precision {precision}, {strategy.num_replicas_in_sync} replica(s)")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    with strategy.scope():
        if config.freeze_backbone:
            generator, discriminator, _ = load_gan_models(backbone_run, backbone_epoch)
            freeze_backbone_networks(generator, discriminator)
        else:
            generator, discriminator = build_gan_networks(backbone_config)
        acgan_generator, acgan_discriminator = build_acgan_networks(generator, discriminator, len(classes), config)
        g_optimizer = wrap_optimizer(keras.optimizers.Adam(config.g_learning_rate, beta_1=config.g_beta_1))
        d_optimizer = wrap_optimizer(keras.optimizers.Adam(config.d_learning_rate, beta_1=config.d_beta_1))
        acgan = ACGAN(acgan_generator, acgan_discriminator, config.latent_dim, len(classes), noise_seed=config.seed)
        acgan.compile(g_optimizer=g_optimizer, d_optimizer=d_optimizer, jit_compile=config.jit_compile)
        acgan.build_optimizers()

    state = TrainingState(run.checkpoints, keep=config.keep_checkpoints, acgan_generator=acgan_generator,
                          acgan_discriminator=acgan_discriminator, g_optimizer=g_optimizer, d_optimizer=d_optimizer)
    initial_epoch, previous_seconds, _ = resume_training(
        state, run, resume, config.epochs,
        [(g_optimizer, config.g_learning_rate), (d_optimizer, config.d_learning_rate)])

    snapshots = ACGANSnapshots(run, acgan_generator, acgan_discriminator, classes,
                               fixed_latents(config.samples_per_class, config.latent_dim, config.seed + 1),
                               save_every=config.save_every, sample_every=config.sample_every,
                               last_epoch=config.epochs)
    if initial_epoch == 0:
        snapshots.write_grid("epoch-0000")
    started = time.perf_counter()
    callbacks = make_callbacks(run, state, checkpoint_every=config.checkpoint_every, initial_epoch=initial_epoch,
                               extra_state=lambda epoch: {
                                   "train_seconds": previous_seconds + time.perf_counter() - started})
    callbacks.append(snapshots)
    if initial_epoch < config.epochs:
        acgan.fit(reader.as_tf_dataset(start_epoch=initial_epoch), steps_per_epoch=len(reader),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                  shuffle=False)
    raise_if_stopped_on_nan(callbacks, state)
    epochs_done = max(initial_epoch, config.epochs)

    history_path = run.logs / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    history = {key: values for key, values in history.items() if values and not all(v != v for v in values)}
    if any(key != "epoch" for key in history):
        plot_history(history, run.metrics / "loss_curves.png",
                     title="AC-GAN losses and auxiliary accuracy (real / generated)")
    run.write_metrics("train", {
        "epochs": epochs_done,
        "train_seconds": previous_seconds + time.perf_counter() - started,
        "training_images": reader.num_images,
        "steps_per_epoch": len(reader),
        "classes": classes,
        "class_counts": reader.class_counts(),
        "backbone": {"run": str(Path(config.backbone).resolve()), "epoch": backbone_epoch,
                     "frozen": config.freeze_backbone},
        "parameters": {"generator": acgan_generator.count_params(),
                       "generator_trainable": int(sum(np.prod(v.shape) for v in acgan_generator.trainable_weights)),
                       "discriminator": acgan_discriminator.count_params(),
                       "discriminator_trainable": int(sum(np.prod(v.shape)
                                                          for v in acgan_discriminator.trainable_weights))},
        "precision": precision,
        "replicas": strategy.num_replicas_in_sync,
        "saved_epochs": saved_epochs(run),
        "final": {key: values[-1] for key, values in history.items() if key != "epoch" and values},
    })
    run.mark_complete(epochs=epochs_done)
    print(f"trained {epochs_done} epoch(s); run directory: {run.path}")
    return run
