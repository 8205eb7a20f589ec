"""The diffusion model: training step, EMA copy, validation and sampling.

:class:`DiffusionModel` follows the keras-io DDIM example (and N&Z 2023, which
derives from it): continuous diffusion time, a U-Net that predicts the noise
from the noisy image and the noise variance, an MAE noise loss, AdamW, and an
exponential moving average (EMA) of the network weights used for validation and
sampling. A discrete mode (``time_mode = "discrete"``) trains on T integer steps
with DDPM's linear betas and samples ancestrally over all T steps, to reproduce
the DDPM of Matos (2025).

Example:
    >>> config = DiffusionConfig(image_size=32, depth=3, base_width=8, epochs=1)
    >>> model = DiffusionModel(config)
    >>> model.compile(optimizer=make_optimizer(config))
    >>> model.fit(images, epochs=1)                                  # doctest: +SKIP
    >>> samples = model.generate(16, steps=20, eta=0.0, seed=1)       # doctest: +SKIP
"""

from __future__ import annotations

from typing import Iterable

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cellgen.config import ConfigError, config_from_dict
from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.schedules import DiscreteSchedule, schedule_from_config
from cellgen.diffusion.solvers import (continuous_rate_sequence, ddim_sample, ddpm_sample,
                                       discrete_rate_sequence)
from cellgen.diffusion.unet import unet_from_config
from cellgen.precision import wrap_optimizer


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

    Args:
        config: a :class:`DiffusionConfig` (or its dict) describing the network, schedule and loss.

    Example:
        >>> model = DiffusionModel(DiffusionConfig(image_size=32, depth=3, base_width=8))
        >>> model.compile(optimizer=keras.optimizers.AdamW(3e-4))
        >>> images = model.generate(4, steps=5, seed=0)
        >>> images.shape
        (4, 32, 32, 3)
    """

    def __init__(self, config: DiffusionConfig | dict, **kwargs):
        super().__init__(**kwargs)
        if isinstance(config, dict):
            config = config_from_dict(DiffusionConfig, config)
        self.config = config
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
    def metrics(self):
        return [self.noise_loss_tracker, self.image_loss_tracker]

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

    def _noise_batch(self, images):
        """Normalised images, noises, noisy images and rates for a loss evaluation."""
        images = self.normalize(images)
        batch_size = tf.shape(images)[0]
        seed = self._replica_seed()
        noises = tf.random.stateless_normal(tf.shape(images), seed=seed)
        signal_rates, noise_rates = self.sample_rates(batch_size, seed + tf.constant([0, 1]))
        noisy_images = signal_rates * images + noise_rates * noises
        return images, noises, noisy_images, signal_rates, noise_rates

    def _per_example_loss(self, noises, predicted_noises):
        error = noises - predicted_noises
        error = tf.abs(error) if self.config.loss == "mae" else tf.square(error)
        return tf.reduce_mean(error, axis=[1, 2, 3])

    def denoise(self, noisy_images, signal_rates, noise_rates, training: bool = False, network=None):
        """Predicts noises and clean images (keras-io ``denoise``); the EMA network unless training."""
        network = network or (self.network if training else self.ema_network)
        predicted_noises = tf.cast(network([noisy_images, noise_rates ** 2], training=training), tf.float32)
        predicted_images = (noisy_images - noise_rates * predicted_noises) / signal_rates
        return predicted_noises, predicted_images

    # Training -------------------------------------------------------------
    # No Python control flow depends on tensors here: skipping autograph halves the tracing time.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        images = data[0] if isinstance(data, (tuple, list)) else data
        images, noises, noisy_images, signal_rates, noise_rates = self._noise_batch(images)
        with tf.GradientTape() as tape:
            predicted_noises = tf.cast(self.network([noisy_images, noise_rates ** 2], training=True), tf.float32)
            per_example = self._per_example_loss(noises, predicted_noises)
            # Sum over the replica's examples / global batch size: the optimizer sums replicas' gradients.
            loss = tf.nn.compute_average_loss(per_example)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.network.trainable_weights)
        self.optimizer.apply(gradients, self.network.trainable_weights)
        self.update_ema()
        predicted_images = (noisy_images - noise_rates * predicted_noises) / signal_rates
        self.noise_loss_tracker.update_state(per_example)
        self.image_loss_tracker.update_state(tf.reduce_mean(tf.abs(images - predicted_images), axis=[1, 2, 3]))
        return {metric.name: metric.result() for metric in self.metrics}

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
        images = data[0] if isinstance(data, (tuple, list)) else data
        normalized, noises, noisy_images, signal_rates, noise_rates = self._noise_batch(images)
        predicted_noises, predicted_images = self.denoise(noisy_images, signal_rates, noise_rates, training=False)
        self.noise_loss_tracker.update_state(self._per_example_loss(noises, predicted_noises))
        self.image_loss_tracker.update_state(tf.reduce_mean(tf.abs(normalized - predicted_images), axis=[1, 2, 3]))
        return {metric.name: metric.result() for metric in self.metrics}

    # Sampling -------------------------------------------------------------
    def _network_fn(self, noisy_images, noise_variances):
        return self.ema_network([noisy_images, noise_variances], training=False)

    def _rates_for(self, steps: int):
        if self.is_discrete:
            return discrete_rate_sequence(self.discrete_schedule, steps)
        return continuous_rate_sequence(self.schedule, steps)

    def _sample_graph(self, initial_noise, signal_rates, noise_rates, eta, seed, method: str = "ddim"):
        """Reverse process in normalised space, then back to [-1, 1] (graph-friendly)."""
        if method == "ddpm":
            images = ddpm_sample(self._network_fn, initial_noise, self.discrete_schedule, seed)
        else:
            images = ddim_sample(self._network_fn, initial_noise, signal_rates, noise_rates, eta, seed)
        return self.denormalize(images)

    def _compiled_sampler(self, method: str):
        if method not in self._sample_functions:
            def run(initial_noise, signal_rates, noise_rates, eta, seed):
                return self._sample_graph(initial_noise, signal_rates, noise_rates, eta, seed, method=method)

            self._sample_functions[method] = tf.function(run, reduce_retracing=True, autograph=False)
        return self._sample_functions[method]

    def default_method(self) -> str:
        """``ddpm`` for discrete-time runs (ancestral, all T steps), ``ddim`` otherwise."""
        return "ddpm" if self.is_discrete else "ddim"

    def generate_from_noise(self, initial_noise, steps: int | None = None, eta: float = 0.0, seed: int = 0,
                            method: str | None = None, contrast: float = 0.0,
                            batch_size: int | None = None) -> np.ndarray:
        """Runs the reverse process from given standard-normal noise (e.g. the fixed noise of sample grids).

        Args:
            initial_noise: (N, S, S, 3) float array of N(0, 1) noise.
            steps: DDIM steps (default ``config.diffusion_steps``; ignored by ``ddpm``).
            eta: 0 deterministic ... 1 stochastic DDIM.
            seed: seed of the per-step noise (eta > 0 or ``ddpm``).
            method: ``ddim`` or ``ddpm`` (discrete-time runs only); default :meth:`default_method`.
            contrast: N&Z section 6.2 contrast c applied to the result (0 = off).
            batch_size: images per network call (default: all at once).

        Returns:
            float32 NumPy images in [-1, 1].
        """
        method = method or self.default_method()
        if method not in ("ddim", "ddpm"):
            raise ConfigError(f"sampling method must be 'ddim' or 'ddpm', got {method!r}")
        if method == "ddpm" and not self.is_discrete:
            raise ConfigError("DDPM ancestral sampling needs a discrete-time run (time_mode = 'discrete')")
        steps = self.config.diffusion_steps if steps is None else int(steps)
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta must be in [0, 1], got {eta}")
        if self.is_discrete and method == "ddim" and steps > self.config.timesteps:
            raise ConfigError(f"steps must be <= timesteps ({self.config.timesteps}) for a discrete-time run")
        signal_rates, noise_rates = self._rates_for(steps)
        initial_noise = np.asarray(initial_noise, np.float32)
        sampler = self._compiled_sampler(method)
        batch_size = batch_size or max(1, len(initial_noise))
        outputs = []
        for index, begin in enumerate(range(0, len(initial_noise), batch_size)):
            chunk = tf.constant(initial_noise[begin:begin + batch_size])
            outputs.append(sampler(chunk, signal_rates, noise_rates, tf.constant(float(eta)),
                                   tf.constant([int(seed) % (2 ** 31 - 1), index], tf.int32)).numpy())
        images = np.concatenate(outputs) if outputs else np.zeros((0,) + initial_noise.shape[1:], np.float32)
        return apply_contrast(images.astype(np.float32), contrast)

    def generate(self, n: int, steps: int | None = None, eta: float = 0.0, seed: int = 0,
                 method: str | None = None, contrast: float = 0.0, batch_size: int | None = None) -> np.ndarray:
        """Generates ``n`` images with the EMA network; deterministic for a ``seed``.

        Args:
            n: number of images.
            steps: DDIM steps (default ``config.diffusion_steps``, N&Z: 20).
            eta: 0 = deterministic DDIM, 1 = stochastic.
            seed: seeds the initial noise and the per-step noise.
            method: ``ddim`` or, for discrete-time runs, ``ddpm`` (ancestral over all T steps, the default there).
            contrast: N&Z section 6.2 contrast post-processing (0 = off).
            batch_size: images per network call.

        Returns:
            float32 NumPy array (n, S, S, 3) in [-1, 1].
        """
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        size = self.config.image_size
        noise = tf.random.stateless_normal((n, size, size, 3), seed=[int(seed) % (2 ** 31 - 1), 7]).numpy()
        return self.generate_from_noise(noise, steps=steps, eta=eta, seed=seed, method=method, contrast=contrast,
                                        batch_size=batch_size)
