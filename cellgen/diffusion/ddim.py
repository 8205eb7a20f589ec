"""The diffusion model: training step, EMA copy, validation and sampling.

:class:`DiffusionModel` follows the keras-io DDIM example (and N&Z 2023, which
derives from it): continuous diffusion time, a U-Net that predicts the noise
from the noisy image and the noise variance, an MAE noise loss, AdamW, and an
exponential moving average (EMA) of the network weights used for validation and
sampling. A discrete mode (``time_mode = "discrete"``) trains on T integer steps
with DDPM's linear betas and samples ancestrally over all T steps, to reproduce
the DDPM of Matos (2025). Options beyond the theses (issue 16): class conditioning
with label dropout and classifier-free guidance, velocity / image prediction targets,
Min-SNR loss weighting, dihedral augmentation, and the DPM-Solver++(2M) and Heun
samplers of :mod:`cellgen.diffusion.solvers`.

Example:
    >>> config = DiffusionConfig(image_size=32, depth=3, base_width=8, epochs=1)
    >>> model = DiffusionModel(config)
    >>> model.compile(optimizer=make_optimizer(config))
    >>> model.fit(images, epochs=1)                                  # doctest: +SKIP
    >>> samples = model.generate(16, steps=20, eta=0.0, seed=1)       # doctest: +SKIP
    >>> # class-conditional: fit on (images, labels), sample a class with guidance
    >>> config = config.replace(conditional=True, class_names=["basophil", "neutrophil"])
    >>> model = DiffusionModel(config)
    >>> samples = model.generate(8, labels="basophil", guidance=2.0, sampler="dpmpp_2m")  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cellgen.config import ConfigError, config_from_dict
from cellgen.data.attributes import no_value_ids, request_ids
from cellgen.diffusion.config import SAMPLERS as _CONFIG_SAMPLERS
from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.schedules import DiscreteSchedule, schedule_from_config
from cellgen.diffusion.solvers import (continuous_rate_sequence, ddpm_solve, discrete_rate_sequence, sample_with,
                                      thresholded_denoiser)
from cellgen.diffusion.unet import unet_from_config
from cellgen.precision import wrap_optimizer

# Samplers a call may name ("auto" is only a config value, resolved by DiffusionModel.resolve_sampler).
SAMPLERS = tuple(name for name in _CONFIG_SAMPLERS if name != "auto")


def apply_contrast(images, contrast: float):
    """N&Z 2023 section 6.2: ``image * (c / 127 + 1) - c`` on the 0-255 scale, clipped.

    Args:
        images: float images in [-1, 1] (NumPy or tensor).
        contrast: c (the thesis used 20); 0 returns the images unchanged.

    Returns:
        Images in [-1, 1] of the same type.
    """
    if not contrast:
        return images
    pixels = (images + 1.0) * 127.5
    pixels = pixels * (contrast / 127.0 + 1.0) - contrast
    if isinstance(images, np.ndarray):
        return np.clip(pixels / 127.5 - 1.0, -1.0, 1.0).astype(np.float32)
    return ops.clip(pixels / 127.5 - 1.0, -1.0, 1.0)


def make_optimizer(config: DiffusionConfig) -> keras.optimizers.Optimizer:
    """AdamW (N&Z: lr 3e-4, weight decay 1e-4) or Adam (Matos), wrapped for the precision policy."""
    if config.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate=config.learning_rate, weight_decay=config.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate=config.learning_rate)
    return wrap_optimizer(optimizer)


@keras.saving.register_keras_serializable(package="cellgen")
class DiffusionModel(keras.Model):
    """Denoising diffusion model with an EMA copy of its U-Net.

    Holds two U-Nets of identical architecture: ``network`` (trained) and
    ``ema_network`` (its exponential moving average, used by ``test_step`` and
    ``generate``), and the per-channel mean and std that standardise the images
    (keras-io's Normalization layer; identity when ``normalize_images`` is off).

    **Prediction targets** (``config.prediction``), with ``alpha = signal_rate``,
    ``sigma = noise_rate``, ``x_t = alpha x0 + sigma eps`` and ``alpha**2 + sigma**2 = 1``;
    every output is converted to ``(pred_noise, pred_image)`` for the samplers:

    - ``noise``: the network predicts ``eps`` (Ho et al. 2020; keras-io, N&Z);
      ``x0_hat = (x_t - sigma eps_hat) / alpha``.
    - ``velocity``: ``v = alpha eps - sigma x0`` (Salimans & Ho 2022, "Progressive
      Distillation for Fast Sampling of Diffusion Models", arXiv 2202.00512, section 4 and
      Appendix D); ``x0_hat = alpha x_t - sigma v_hat`` and ``eps_hat = sigma x_t + alpha v_hat``.
    - ``image``: ``x0`` itself; ``eps_hat = (x_t - alpha x0_hat) / sigma``.

    The training loss (``config.loss``, MAE or MSE) is taken on the predicted quantity.
    **Loss weighting** ``min_snr`` (Hang et al. 2023, "Efficient Diffusion Training via
    Min-SNR Weighting Strategy", arXiv 2303.09556) weights the x0 error by
    ``min(SNR, gamma)`` with ``SNR = alpha**2 / sigma**2``; since the eps error is ``SNR``
    times and the v error ``SNR + 1`` times the (squared) x0 error, the per-example weight
    is ``min(SNR, gamma) / SNR`` for ``noise``, ``min(SNR, gamma) / (SNR + 1)`` for
    ``velocity`` and ``min(SNR, gamma)`` for ``image`` (as Hang et al. state them for the
    three targets; with MAE the same weights multiply the absolute error, a heuristic).
    ``uniform`` weights every example 1. The ``noise_loss`` metric is always the unweighted
    MAE/MSE of the implied noise (comparable across targets); ``loss``, the optimised
    objective, is logged as well when it differs from ``noise_loss``.

    **Class conditioning** (``config.conditional``): the U-Net takes class ids (ids into
    ``config.class_names``; ``num_classes`` is "no class"). Training replaces each label by
    "no class" with probability ``label_dropout`` and samples use classifier-free guidance
    (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", arXiv 2207.12598, eq. 6,
    ``(1 + w) eps_c - w eps_u``, written with our ``w`` = their ``w + 1``)::

        eps_hat = eps_uncond + w * (eps_cond - eps_uncond)

    with both halves in one batched network call; ``w = 0`` is the unconditional and
    ``w = 1`` the plain conditional model (each then needs only one half). The guidance is
    applied to the network output; all targets convert to eps linearly with the same
    coefficients, so guiding v or x0 is the same as guiding eps.

    **Attribute conditioning** (``config.attributes``, e.g. WBCAtt's ``nucleus_shape``): the U-Net
    also takes attribute ids ``(B, A)`` (each attribute's "no value" id is its number of values).
    Training drops the class and each attribute independently with probability ``label_dropout``,
    and all of them together with probability ``label_dropout`` as well, so the network learns
    every subset of conditions and the fully unconditional prediction about as often as a
    class-only model does. Guidance takes the requested class and attributes (the others "no
    value") for the conditional half and no class and no attribute for the unconditional half.

    **Augmentation** ``dihedral``: each training image goes through one of the 8 symmetries
    of the square (transpose, left-right and up-down flips, each with probability 1/2),
    drawn in the training step from the model's seed generator.

    The seed generator's state is saved with the model's own variables, so a checkpoint
    restores it and a resumed run draws the same noise, levels, label drops and flips as
    an uninterrupted one.

    Args:
        config: a :class:`DiffusionConfig` (or its dict) describing the network, schedule and loss.

    Example:
        >>> model = DiffusionModel(DiffusionConfig(image_size=32, depth=3, base_width=8))
        >>> model.compile(optimizer=keras.optimizers.AdamW(3e-4))
        >>> images = model.generate(4, steps=5, seed=0)
        >>> images.shape
        (4, 32, 32, 3)
        >>> conditional = DiffusionModel(DiffusionConfig(image_size=32, depth=3, base_width=8, conditional=True,
        ...                                              class_names=["basophil", "neutrophil"]))
        >>> conditional.generate(4, labels="basophil", guidance=2.0, sampler="dpmpp_2m", steps=10).shape
        (4, 32, 32, 3)
    """

    def __init__(self, config: DiffusionConfig | dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = config_from_dict(DiffusionConfig, config)
        if config.conditional and not config.class_names:
            raise ConfigError("conditional = true needs class_names (the training loop sets them from the data's "
                              "classes: config.with_data_classes(reader.classes))")
        if config.attributes and not config.attribute_values:
            raise ConfigError("attributes need attribute_values (the training loop sets them from the attribute "
                              "table: config.with_data_attributes(reader.attribute_vocabulary))")
        self.config = config
        self.num_classes = config.num_classes
        self.attribute_vocabulary = config.attribute_vocabulary() if config.conditional else {}
        self.no_value_ids = no_value_ids(self.attribute_vocabulary)
        self.network = unet_from_config(config, name="network")
        self.ema_network = unet_from_config(config, name="ema_network")
        self.ema_network.set_weights(self.network.get_weights())
        self.image_mean = self.add_weight(shape=(3,), initializer="zeros", trainable=False, name="image_mean")
        self.image_std = self.add_weight(shape=(3,), initializer="ones", trainable=False, name="image_std")
        self.schedule = schedule_from_config(config)
        self.discrete_schedule = DiscreteSchedule(config.timesteps, config.beta_start, config.beta_end)
        self.seed_generator = keras.random.SeedGenerator(config.seed)
        self.noise_loss_tracker = keras.metrics.Mean(name="noise_loss")
        self.image_loss_tracker = keras.metrics.Mean(name="image_loss")
        # The optimised objective, when it is not the plain noise loss.
        self._objective_differs = config.prediction != "noise" or config.loss_weighting != "uniform"
        self.loss_tracker = keras.metrics.Mean(name="loss") if self._objective_differs else None
        self._sample_functions: dict = {}
        self.built = True

    # Configuration --------------------------------------------------------
    def get_config(self):
        return {"config": self.config.to_dict(), "name": self.name, "trainable": self.trainable}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def is_discrete(self) -> bool:
        return self.config.time_mode == "discrete"

    @property
    def is_conditional(self) -> bool:
        return self.num_classes > 0

    @property
    def has_attributes(self) -> bool:
        """Whether the network is conditioned on attributes (``config.attributes``)."""
        return bool(self.attribute_vocabulary)

    @property
    def null_label(self) -> int:
        """The "no class" id of a conditional network (``num_classes``)."""
        return self.num_classes

    @property
    def sample_classes(self) -> list[str] | None:
        """Classes this model draws by name: a one-class fine-tune's class, every class of a
        conditional base model, ``None`` for an unconditional base model."""
        if self.config.class_name:
            return [self.config.class_name]
        return list(self.config.class_names) if self.is_conditional else None

    @property
    def metrics(self):
        trackers = [self.noise_loss_tracker, self.image_loss_tracker]
        return trackers + ([self.loss_tracker] if self.loss_tracker is not None else [])

    # The seed generator's state travels with the model's own variables (checkpoints and .keras files).
    _SEED_KEY = "seed_generator_state"

    def save_own_variables(self, store):
        super().save_own_variables(store)
        store[self._SEED_KEY] = keras.ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store):
        keys = set(store.keys())
        own = self._trainable_variables + self._non_trainable_variables
        indexed = sorted(key for key in keys if key != self._SEED_KEY)
        if len(indexed) != len(own):
            raise ValueError(f"DiffusionModel {self.name!r} expected {len(own)} own variables "
                             f"({[v.name for v in own]}), the file has {len(indexed)}")
        for index, variable in enumerate(own):
            variable.assign(store[f"{index}"])
        if self._SEED_KEY in keys:  # absent in files written before it was saved: keep the fresh state
            self.seed_generator.state.assign(np.asarray(store[self._SEED_KEY]))

    # Image normalisation --------------------------------------------------
    def adapt_normalizer(self, batches: Iterable) -> dict[str, list[float]]:
        """Sets the per-channel mean and std from images (batches of [-1, 1] NHWC arrays).

        Batches may be ``(images, labels)`` tuples. Identity (0 and 1) when
        ``normalize_images`` is off. Returns the statistics.
        """
        if not self.config.normalize_images:
            return {"mean": [0.0] * 3, "std": [1.0] * 3}
        total = np.zeros(3, np.float64)
        total_squares = np.zeros(3, np.float64)
        count = 0
        for batch in batches:
            images = np.asarray(batch[0] if isinstance(batch, (tuple, list)) else batch, np.float64)
            pixels = images.reshape(-1, images.shape[-1])
            total += pixels.sum(axis=0)
            total_squares += np.square(pixels).sum(axis=0)
            count += len(pixels)
        if count == 0:
            raise ValueError("adapt_normalizer: no images")
        mean = total / count
        std = np.sqrt(np.maximum(total_squares / count - mean ** 2, 0.0))
        std = np.maximum(std, 1e-3)  # a constant channel must not divide by zero
        self.image_mean.assign(mean.astype(np.float32))
        self.image_std.assign(std.astype(np.float32))
        return {"mean": mean.tolist(), "std": std.tolist()}

    def normalize(self, images):
        images = ops.cast(images, "float32")
        return (images - ops.reshape(self.image_mean, (1, 1, 1, 3))) / ops.reshape(self.image_std, (1, 1, 1, 3))

    def denormalize(self, images):
        images = ops.reshape(self.image_std, (1, 1, 1, 3)) * images + ops.reshape(self.image_mean, (1, 1, 1, 3))
        return ops.clip(images, -1.0, 1.0)

    # Diffusion -------------------------------------------------------------
    def _replica_seed(self):
        """A fresh stateless seed, different on every replica (the generator state is shared)."""
        seed = tf.cast(self.seed_generator.next(), tf.int32)
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        return seed + tf.stack([tf.cast(replica, tf.int32) * 1_000_003, 0])

    def sample_rates(self, batch_size, seed):
        """Random noise levels for a training batch: ``(signal_rates, noise_rates)`` of shape (B, 1, 1, 1)."""
        if self.is_discrete:
            steps = tf.random.stateless_uniform([batch_size, 1, 1, 1], seed=seed, minval=0,
                                                maxval=self.config.timesteps, dtype=tf.int32)
            return self.discrete_schedule.rates(steps)
        times = tf.random.stateless_uniform([batch_size, 1, 1, 1], seed=seed)
        return self.schedule(times)

    def augment(self, images, seed):
        """Dihedral augmentation: a random one of the 8 symmetries of the square per image.

        Transposing, flipping left-right and flipping up-down, each with probability 1/2,
        gives each element of the dihedral group D4 with probability 1/8. A stained cell has
        no orientation, so these images are as real as the originals.
        """
        bits = tf.random.stateless_uniform([tf.shape(images)[0], 3], seed=seed, minval=0, maxval=2, dtype=tf.int32)
        masks = [tf.reshape(tf.cast(bits[:, index], tf.bool), [-1, 1, 1, 1]) for index in range(3)]
        images = tf.where(masks[0], tf.transpose(images, [0, 2, 1, 3]), images)
        images = tf.where(masks[1], tf.reverse(images, axis=[2]), images)
        return tf.where(masks[2], tf.reverse(images, axis=[1]), images)

    def drop_labels(self, labels, seed):
        """Replaces each label by the "no class" id with probability ``label_dropout`` (Ho & Salimans 2022)."""
        drop = tf.random.stateless_uniform(tf.shape(labels), seed=seed) < self.config.label_dropout
        return tf.where(drop, tf.fill(tf.shape(labels), tf.constant(self.null_label, labels.dtype)), labels)

    def drop_attributes(self, labels, attributes, seed):
        """Attribute dropout: each attribute id becomes "no value" with probability ``label_dropout``,
        independently; then, with probability ``label_dropout`` per example, the class and every
        attribute are dropped together (the unconditional half of guidance). Returns
        ``(labels, attributes)``."""
        rate = self.config.label_dropout
        no_values = tf.broadcast_to(tf.constant(self.no_value_ids), tf.shape(attributes))
        drop = tf.random.stateless_uniform(tf.shape(attributes), seed=seed) < rate
        attributes = tf.where(drop, no_values, attributes)
        joint = tf.random.stateless_uniform(tf.shape(labels), seed=tf.random.experimental.stateless_fold_in(seed, 1))
        joint = joint < rate
        labels = tf.where(joint, tf.fill(tf.shape(labels), tf.constant(self.null_label, labels.dtype)), labels)
        return labels, tf.where(joint[:, None], no_values, attributes)

    def _split_batch(self, data, step: str):
        """``(images, labels, attribute ids)`` of a batch: labels are required by conditional and ignored
        by unconditional models; attribute ids ``(B, A)`` (the third element) by models with attributes."""
        if isinstance(data, (tuple, list)):
            images = data[0]
            labels = data[1] if len(data) > 1 else None
            attributes = data[2] if len(data) > 2 else None
        else:
            images, labels, attributes = data, None, None
        if not self.is_conditional:
            return images, None, None
        if labels is None:
            raise ValueError(f"{step}: this diffusion model is class-conditional (classes "
                             f"{', '.join(self.config.class_names)}); give (images, labels) batches with int "
                             "label ids into config.class_names")
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        if not self.has_attributes:
            return images, labels, None
        if attributes is None:
            raise ValueError(f"{step}: this diffusion model is conditioned on attributes "
                             f"({', '.join(self.attribute_vocabulary)}); give (images, labels, attribute_ids) "
                             "batches")
        return images, labels, tf.reshape(tf.cast(attributes, tf.int32), [-1, len(self.no_value_ids)])

    def _noise_batch(self, images, augment: bool = False):
        """Normalised images, noises, noisy images, rates and the step's seed for a loss evaluation."""
        seed = self._replica_seed()
        if augment and self.config.augment == "dihedral":
            images = self.augment(ops.cast(images, "float32"), tf.random.experimental.stateless_fold_in(seed, 2))
        images = self.normalize(images)
        batch_size = tf.shape(images)[0]
        noises = tf.random.stateless_normal(tf.shape(images), seed=seed)
        signal_rates, noise_rates = self.sample_rates(batch_size, seed + tf.constant([0, 1]))
        noisy_images = signal_rates * images + noise_rates * noises
        return images, noises, noisy_images, signal_rates, noise_rates, seed

    def _per_example_loss(self, target, prediction):
        error = target - prediction
        error = tf.abs(error) if self.config.loss == "mae" else tf.square(error)
        return tf.reduce_mean(error, axis=[1, 2, 3])

    def _network_inputs(self, noisy_images, noise_variances, labels, attributes=None):
        if self.has_attributes:
            if attributes is None:  # no attribute requested: "no value" for every one
                attributes = tf.broadcast_to(tf.constant(self.no_value_ids),
                                             tf.stack([tf.shape(labels)[0], len(self.no_value_ids)]))
            return [noisy_images, noise_variances, labels, attributes]
        if self.is_conditional:
            return [noisy_images, noise_variances, labels]
        return [noisy_images, noise_variances]

    def prediction_target(self, images, noises, signal_rates, noise_rates):
        """What the network learns to output for ``x_t = alpha images + sigma noises`` (see the class docs)."""
        if self.config.prediction == "velocity":
            return signal_rates * noises - noise_rates * images  # Salimans & Ho 2022, v = alpha eps - sigma x
        if self.config.prediction == "image":
            return images
        return noises

    def split_prediction(self, output, noisy_images, signal_rates, noise_rates):
        """``(pred_noise, pred_image)`` of a network output for the prediction target (float32)."""
        output = tf.cast(output, tf.float32)
        if self.config.prediction == "velocity":
            # Salimans & Ho 2022, Appendix D: x = alpha z - sigma v, eps = sigma z + alpha v (alpha^2 + sigma^2 = 1).
            return (noise_rates * noisy_images + signal_rates * output,
                    signal_rates * noisy_images - noise_rates * output)
        if self.config.prediction == "image":
            return (noisy_images - signal_rates * output) / noise_rates, output
        return output, (noisy_images - noise_rates * output) / signal_rates

    def loss_weights(self, signal_rates, noise_rates):
        """Per-example loss weights of ``loss_weighting`` (None for ``uniform``), shape (B,).

        Min-SNR-gamma (Hang et al. 2023): ``min(SNR, gamma)`` on the x0 error, i.e.
        ``min(SNR, gamma) / SNR`` on the eps error and ``min(SNR, gamma) / (SNR + 1)`` on the v error.
        """
        if self.config.loss_weighting == "uniform":
            return None
        snr = tf.reshape(tf.square(signal_rates) / tf.square(noise_rates), [-1])
        clipped = tf.minimum(snr, self.config.min_snr_gamma)
        if self.config.prediction == "noise":
            return clipped / snr
        if self.config.prediction == "velocity":
            return clipped / (snr + 1.0)
        return clipped

    def denoise(self, noisy_images, signal_rates, noise_rates, training: bool = False, network=None, labels=None,
                attributes=None):
        """Predicts noises and clean images (keras-io ``denoise``); the EMA network unless training.

        ``labels`` (int ids, "no class" = ``num_classes``) are needed by conditional models;
        ``attributes`` (int ids ``(B, A)``; default every one "no value") by models with attributes.
        """
        network = network or (self.network if training else self.ema_network)
        if self.is_conditional and labels is None:
            raise ValueError("denoise: a class-conditional model needs labels")
        inputs = self._network_inputs(noisy_images, noise_rates ** 2, labels, attributes)
        return self.split_prediction(network(inputs, training=training), noisy_images, signal_rates, noise_rates)

    def guided_prediction(self, noisy_images, noise_variances, labels, guidance, network=None, attributes=None):
        """Classifier-free guidance, both halves in one batched call (Ho & Salimans 2022).

        ``output = out_uncond + w * (out_cond - out_uncond)`` where ``out_cond`` is the network's
        output for ``labels`` (and ``attributes``, ids ``(B, A)``, for a model with attributes) and
        ``out_uncond`` for "no class" (and no attribute), computed on the concatenation of the batch
        with itself (float32).
        """
        network = network or self.ema_network
        labels = tf.reshape(tf.cast(labels, tf.int32), [-1])
        nulls = tf.fill(tf.shape(labels), self.null_label)
        inputs = [tf.concat([noisy_images, noisy_images], 0), tf.concat([noise_variances, noise_variances], 0),
                  tf.concat([labels, nulls], 0)]
        if self.has_attributes:
            no_values = tf.broadcast_to(tf.constant(self.no_value_ids),
                                        tf.stack([tf.shape(labels)[0], len(self.no_value_ids)]))
            attributes = no_values if attributes is None else tf.reshape(tf.cast(attributes, tf.int32),
                                                                         tf.shape(no_values))
            inputs.append(tf.concat([attributes, no_values], 0))
        outputs = tf.cast(network(inputs, training=False), tf.float32)
        conditional, unconditional = tf.split(outputs, 2, axis=0)
        return unconditional + tf.cast(guidance, tf.float32) * (conditional - unconditional)

    # Training -------------------------------------------------------------
    # No Python control flow depends on tensors here: skipping autograph halves the tracing time.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        """One optimizer step on ``images`` or ``(images, labels)`` (labels: int ids into ``class_names``)."""
        images, labels, attributes = self._split_batch(data, "train_step")
        images, noises, noisy_images, signal_rates, noise_rates, seed = self._noise_batch(images, augment=True)
        if labels is not None:
            labels = self.drop_labels(labels, tf.random.experimental.stateless_fold_in(seed, 1))
        if attributes is not None:
            labels, attributes = self.drop_attributes(labels, attributes,
                                                      tf.random.experimental.stateless_fold_in(seed, 3))
        inputs = self._network_inputs(noisy_images, noise_rates ** 2, labels, attributes)
        with tf.GradientTape() as tape:
            output = tf.cast(self.network(inputs, training=True), tf.float32)
            target = self.prediction_target(images, noises, signal_rates, noise_rates)
            per_example = self._per_example_loss(target, output)
            weights = self.loss_weights(signal_rates, noise_rates)
            objective = per_example if weights is None else per_example * weights
            # Sum over the replica's examples / global batch size: the optimizer sums replicas' gradients.
            loss = tf.nn.compute_average_loss(objective)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.network.trainable_weights)
        self.optimizer.apply(gradients, self.network.trainable_weights)
        self.update_ema()
        self._update_metrics(images, noises, noisy_images, signal_rates, noise_rates, output, per_example, objective)
        return {metric.name: metric.result() for metric in self.metrics}

    def _update_metrics(self, images, noises, noisy_images, signal_rates, noise_rates, output, per_example,
                        objective):
        predicted_noises, predicted_images = self.split_prediction(output, noisy_images, signal_rates, noise_rates)
        if self.config.prediction == "noise":
            self.noise_loss_tracker.update_state(per_example)
        else:
            self.noise_loss_tracker.update_state(self._per_example_loss(noises, predicted_noises))
        self.image_loss_tracker.update_state(tf.reduce_mean(tf.abs(images - predicted_images), axis=[1, 2, 3]))
        if self.loss_tracker is not None:
            self.loss_tracker.update_state(objective)

    def ema_decay(self):
        """The EMA decay of this step: ``ema``, or ``min(ema, (1 + n) / (10 + n))`` with warm-up."""
        decay = tf.constant(self.config.ema, tf.float32)
        if self.config.ema_warmup and self.optimizer is not None:
            step = tf.cast(self.optimizer.iterations, tf.float32)
            decay = tf.minimum(decay, (1.0 + step) / (10.0 + step))
        return decay

    def update_ema(self, decay=None):
        """``ema_weight = decay * ema_weight + (1 - decay) * weight`` for every weight (incl. batch-norm
        statistics, as keras-io), in cross-replica context so that mirrored copies stay identical."""
        decay = self.ema_decay() if decay is None else tf.cast(decay, tf.float32)
        pairs = [(ema.value, online.value) for ema, online in zip(self.ema_network.weights, self.network.weights)]

        def average(ema, online):
            return ema.assign(decay * ema + (1.0 - decay) * tf.cast(online, ema.dtype))

        if not tf.distribute.has_strategy():
            # One device: plain assignments (the distribution machinery costs seconds of tracing).
            for ema, online in pairs:
                average(ema, online)
            return

        def update(strategy, pairs):
            for ema, online in pairs:
                strategy.extended.update(ema, average, args=(online,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(update, tf.distribute.get_strategy(), pairs)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        """EMA-network losses on ``images`` or ``(images, labels)`` (no label dropout, no augmentation)."""
        images, labels, attributes = self._split_batch(data, "test_step")
        normalized, noises, noisy_images, signal_rates, noise_rates, _ = self._noise_batch(images)
        output = tf.cast(self.ema_network(self._network_inputs(noisy_images, noise_rates ** 2, labels, attributes),
                                          training=False), tf.float32)
        target = self.prediction_target(normalized, noises, signal_rates, noise_rates)
        per_example = self._per_example_loss(target, output)
        weights = self.loss_weights(signal_rates, noise_rates)
        objective = per_example if weights is None else per_example * weights
        self._update_metrics(normalized, noises, noisy_images, signal_rates, noise_rates, output, per_example,
                             objective)
        return {metric.name: metric.result() for metric in self.metrics}

    # Sampling -------------------------------------------------------------
    def _rates_for(self, steps: int):
        if self.is_discrete:
            return discrete_rate_sequence(self.discrete_schedule, steps)
        return continuous_rate_sequence(self.schedule, steps)

    def _denoiser(self, labels, guidance, mode: str, attributes=None):
        """The sampling denoiser of the EMA network: ``plain`` (unconditional network, or one conditional
        call with ``labels`` and ``attributes``) or ``guided`` (classifier-free guidance with weight
        ``guidance``)."""

        def denoise(x, signal_rate, noise_rate):
            variances = tf.fill([tf.shape(x)[0], 1, 1, 1], noise_rate * noise_rate)
            if mode == "guided":
                output = self.guided_prediction(x, variances, labels, guidance, attributes=attributes)
            else:
                output = self.ema_network(self._network_inputs(x, variances, labels, attributes), training=False)
            return self.split_prediction(output, x, signal_rate, noise_rate)

        # Pixel values -1 and 1 in normalised space: the range thresholding keeps x0_hat inside.
        mean, std = ops.reshape(self.image_mean, (1, 1, 1, 3)), ops.reshape(self.image_std, (1, 1, 1, 3))
        return thresholded_denoiser(denoise, self.config.sample_threshold, (-1.0 - mean) / std, (1.0 - mean) / std,
                                    self.config.threshold_percentile)

    def _sample_graph(self, initial_noise, signal_rates, noise_rates, eta, seed, labels, guidance,
                      solver: str = "ddim", mode: str = "plain", attributes=None):
        """Reverse process in normalised space, then back to [-1, 1] (graph-friendly)."""
        denoise = self._denoiser(labels if self.is_conditional else None, guidance, mode,
                                 attributes if self.has_attributes else None)
        if solver == "ddpm":
            images = ddpm_solve(denoise, initial_noise, self.discrete_schedule, seed)
        else:
            images = sample_with(solver, denoise, initial_noise, signal_rates, noise_rates, eta, seed)
        return self.denormalize(images)

    def _compiled_sampler(self, solver: str, mode: str = "plain"):
        key = (solver, mode, self.config.sample_threshold, self.config.threshold_percentile)
        if key not in self._sample_functions:
            def run(initial_noise, signal_rates, noise_rates, eta, seed, labels, guidance, attributes):
                return self._sample_graph(initial_noise, signal_rates, noise_rates, eta, seed, labels, guidance,
                                          solver=solver, mode=mode, attributes=attributes)

            self._sample_functions[key] = tf.function(run, reduce_retracing=True, autograph=False)
        return self._sample_functions[key]

    def default_method(self) -> str:
        """The config's ``sampler``; ``auto``: ``ddpm`` for discrete-time runs (ancestral, all T steps),
        else ``ddim``."""
        return self.resolve_sampler(None)

    def resolve_sampler(self, sampler: str | None) -> str:
        """The solver name a sampling call uses (``sampler``, else the config's), ``auto`` resolved."""
        name = self.config.sampler if sampler is None else sampler
        if name == "auto":
            return "ddpm" if self.is_discrete else "ddim"
        valid = tuple(SAMPLERS)
        if name not in valid:
            raise ConfigError(f"unknown sampler {name!r}; valid samplers: {', '.join(valid)}")
        if name == "ddpm" and not self.is_discrete:
            raise ConfigError("DDPM ancestral sampling needs a discrete-time run (time_mode = 'discrete')")
        return name

    def class_ids(self, labels, count: int) -> np.ndarray | None:
        """int32 network ids of ``labels`` for ``count`` images (None for unconditional models).

        ``labels``: None ("no class": the unconditional mode of a conditional model, or a one-class
        fine-tune's class), one class name or id for all images, or a sequence of ``count`` names / ids.

        Raises:
            ConfigError: labels for an unconditional model, an unknown name, an id out of range or a
                sequence of the wrong length.
        """
        if not self.is_conditional:
            if labels is not None:
                raise ConfigError("labels / a class need a class-conditional model (conditional = true); "
                                  "this diffusion model is unconditional")
            return None
        if labels is None:
            default = self.config.class_name
            return np.full(count, self.config.class_names.index(default) if default else self.null_label, np.int32)
        if isinstance(labels, (str, int, np.integer)):
            labels = [labels] * count
        labels = list(labels.tolist() if isinstance(labels, np.ndarray) else labels)
        if len(labels) != count:
            raise ConfigError(f"got {len(labels)} labels for {count} images")
        ids = []
        for label in labels:
            if isinstance(label, str):
                if label not in self.config.class_names:
                    raise ConfigError(f"unknown class {label!r}; this model's classes: "
                                      f"{', '.join(self.config.class_names)}")
                ids.append(self.config.class_names.index(label))
            else:
                if not 0 <= int(label) <= self.null_label:
                    raise ConfigError(f"class id {label} out of range [0, {self.null_label}] "
                                      f"({self.null_label} = no class)")
                ids.append(int(label))
        return np.asarray(ids, np.int32)

    def attribute_ids(self, attributes, count: int) -> np.ndarray:
        """int32 (count, A) attribute ids of a request (A = 0 for a model without attributes).

        ``attributes``: None (none requested: every attribute "no value"), ``["column=value", ...]``
        or ``{column: value}`` (the same for every image; attributes not named get "no value"), or an
        int array of ids, ``(A,)`` or ``(count, A)``.

        Raises:
            ConfigError: attributes for a model without them, an unknown attribute or value (the
                message lists the valid ones), or ids of the wrong shape or range.
        """
        if attributes is None or (isinstance(attributes, (list, tuple, dict)) and not attributes):
            return np.tile(self.no_value_ids, (count, 1)).reshape(count, len(self.no_value_ids)).astype(np.int32)
        if not self.has_attributes:
            raise ConfigError("attributes need a diffusion model conditioned on attributes (config attributes = "
                              "[...]); this one has none")
        if isinstance(attributes, np.ndarray) and attributes.dtype.kind in "iu":
            ids = np.broadcast_to(attributes.astype(np.int32), (count, len(self.no_value_ids))).copy() \
                if attributes.shape in ((len(self.no_value_ids),), (count, len(self.no_value_ids))) else None
            if ids is None:
                raise ConfigError(f"attribute ids of shape {attributes.shape}; expected ({len(self.no_value_ids)},) "
                                  f"or ({count}, {len(self.no_value_ids)})")
            if (ids < 0).any() or (ids > self.no_value_ids).any():
                raise ConfigError(f"attribute ids out of range [0, {self.no_value_ids.tolist()}] (the last: no value)")
            return ids
        ids = request_ids(attributes, self.attribute_vocabulary, option="attributes", error=ConfigError)
        return np.tile(ids, (count, 1)).astype(np.int32)

    def generate_from_noise(self, initial_noise, steps: int | None = None, eta: float = 0.0, seed: int = 0,
                            labels=None, guidance: float | None = None, sampler: str | None = None,
                            method: str | None = None, contrast: float = 0.0,
                            batch_size: int | None = None, attributes=None) -> np.ndarray:
        """Runs the reverse process from given standard-normal noise (e.g. the fixed noise of sample grids).

        Args:
            initial_noise: (N, S, S, 3) float array of N(0, 1) noise.
            steps: solver steps (default ``config.diffusion_steps``; ignored by ``ddpm``).
            eta: 0 deterministic ... 1 stochastic DDIM (``ddim`` only).
            seed: seed of the per-step noise (eta > 0 or ``ddpm``).
            labels: conditional models: None (no class; a one-class fine-tune: its class), a class name
                or id for every image, or one per image (see :meth:`class_ids`).
            guidance: classifier-free guidance weight w (default ``config.guidance``; 0 = unconditional,
                1 = conditional). Ignored by unconditional models.
            sampler: ``ddim``, ``dpmpp_2m``, ``heun`` or ``ddpm`` (discrete-time runs); default the
                config's ``sampler`` (``auto``: ``ddpm`` for discrete-time runs, else ``ddim``).
            method: older name of ``sampler`` (used when ``sampler`` is None).
            contrast: N&Z section 6.2 contrast c applied to the result (0 = off).
            batch_size: images per network call (default: all at once; guidance doubles the batch).
            attributes: models with attributes: the requested values, e.g.
                ``["nucleus_shape=segmented-multilobed"]`` (see :meth:`attribute_ids`); the others
                are "no value". Guidance conditions on the class and these, against neither.

        Returns:
            float32 NumPy images in [-1, 1].
        """
        solver = self.resolve_sampler(sampler if sampler is not None else method)
        steps = self.config.diffusion_steps if steps is None else int(steps)
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1], got {eta}")
        if eta and solver in ("dpmpp_2m", "heun"):
            raise ConfigError(f"eta={eta}: the {solver} sampler is deterministic (eta applies to ddim only)")
        if self.is_discrete and solver != "ddpm" and steps > self.config.timesteps:
            raise ConfigError(f"steps must be <= timesteps ({self.config.timesteps}) for a discrete-time run")
        initial_noise = np.asarray(initial_noise, np.float32)
        ids = self.class_ids(labels, len(initial_noise))
        attribute_ids = self.attribute_ids(attributes, len(initial_noise))
        guidance = float(self.config.guidance if guidance is None else guidance)
        if guidance < 0:
            raise ConfigError(f"guidance must be >= 0, got {guidance}")
        mode = "plain"
        if ids is not None:
            conditioned = bool(np.any(ids != self.null_label)) or bool(np.any(attribute_ids != self.no_value_ids))
            if guidance == 0.0:
                ids = np.full_like(ids, self.null_label)  # w = 0: the unconditional prediction, one call
                attribute_ids = self.attribute_ids(None, len(initial_noise))
            elif guidance != 1.0 and conditioned:
                mode = "guided"  # w = 1 is the plain conditional prediction, one call
        else:
            ids = np.zeros(len(initial_noise), np.int32)  # unused by unconditional networks
        signal_rates, noise_rates = self._rates_for(steps)
        function = self._compiled_sampler(solver, mode)
        batch_size = batch_size or max(1, len(initial_noise))
        outputs = []
        for index, begin in enumerate(range(0, len(initial_noise), batch_size)):
            chunk = tf.constant(initial_noise[begin:begin + batch_size])
            outputs.append(function(chunk, signal_rates, noise_rates, tf.constant(float(eta)),
                                    tf.constant([int(seed) % (2 ** 31 - 1), index], tf.int32),
                                    tf.constant(ids[begin:begin + batch_size]), tf.constant(guidance),
                                    tf.constant(attribute_ids[begin:begin + batch_size])).numpy())
        images = np.concatenate(outputs) if outputs else np.zeros((0,) + initial_noise.shape[1:], np.float32)
        return apply_contrast(images.astype(np.float32), contrast)

    def generate(self, n: int, steps: int | None = None, eta: float = 0.0, seed: int = 0, labels=None,
                 guidance: float | None = None, sampler: str | None = None, method: str | None = None,
                 contrast: float = 0.0, batch_size: int | None = None, attributes=None) -> np.ndarray:
        """Generates ``n`` images with the EMA network; deterministic for a ``seed``.

        Args:
            n: number of images.
            steps: solver steps (default ``config.diffusion_steps``, N&Z: 20).
            eta: 0 = deterministic DDIM, 1 = stochastic.
            seed: seeds the initial noise and the per-step noise.
            labels, guidance, sampler, method, attributes: as for :meth:`generate_from_noise`.
            contrast: N&Z section 6.2 contrast post-processing (0 = off).
            batch_size: images per network call.

        Returns:
            float32 NumPy array (n, S, S, 3) in [-1, 1].
        """
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        size = self.config.image_size
        noise = tf.random.stateless_normal((n, size, size, 3), seed=[int(seed) % (2 ** 31 - 1), 7]).numpy()
        return self.generate_from_noise(noise, steps=steps, eta=eta, seed=seed, labels=labels, guidance=guidance,
                                        sampler=sampler, method=method, contrast=contrast, batch_size=batch_size,
                                        attributes=attributes)

    def generate_class_grid(self, noise, steps: int | None = None, eta: float = 0.0, seed: int = 0,
                            guidance: float | None = None, sampler: str | None = None,
                            batch_size: int | None = None) -> tuple[np.ndarray, list[str]]:
        """A sample grid with one row per class, the same noise in every row (columns = ``len(noise)``).

        Returns ``(images, row_names)``: images row-major (``len(row_names) * len(noise)``), rows in the
        order of :attr:`sample_classes`. An unconditional model gives one row, ``["all"]``.
        """
        noise = np.asarray(noise, np.float32)
        classes = self.sample_classes if self.is_conditional else None
        if not classes:
            return self.generate_from_noise(noise, steps=steps, eta=eta, seed=seed, sampler=sampler,
                                            batch_size=batch_size), ["all"]
        tiled = np.concatenate([noise] * len(classes))
        labels = [name for name in classes for _ in range(len(noise))]
        images = self.generate_from_noise(tiled, steps=steps, eta=eta, seed=seed, labels=labels, guidance=guidance,
                                          sampler=sampler, batch_size=batch_size)
        return images, list(classes)
