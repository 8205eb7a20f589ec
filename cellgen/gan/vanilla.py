"""The Vanilla-GAN training model: two Adam optimizers, BCE losses, update ratios.

Losses (Goodfellow et al. 2014, eq. 1, as used by Klang & Carlberg 2020, section 4.4),
with D(.) = sigmoid(logit):

- discriminator: BCE(real_label, D(x)) + BCE(fake_label, D(G(z))), with
  ``real_label`` / ``fake_label`` 1 / 0, or 0.9 / 0.1 with label smoothing (Matos 2025);
- generator, non-saturating form: BCE(1, D(G(z))) = -log D(G(z)).

Each example's loss is summed and divided by the *global* batch size
(``tf.nn.compute_average_loss``), so gradients summed over the replicas of a
``tf.distribute`` strategy equal the full-batch gradient. One ``train_step``
takes one real batch and makes ``d_steps`` discriminator updates on it (each
with a fresh fake batch; N&Z's "discriminator update ratio") and then
``g_steps`` generator updates (Matos' 3:1). Latent noise is drawn with
stateless RNG keyed by (seed, step, draw, replica), so replicas draw different
noise and a resumed run continues the same noise sequence.

With ``augment`` (DiffAugment, Zhao et al. 2020; :mod:`cellgen.gan.diffaugment`) every
image the discriminator sees, real or generated, in its own update and in the
generator's loss, is augmented with the same policy (independent random draws for
the real and the fake batch, keyed like the noise); with ``ada_target`` the
strength adapts (ADA, Karras et al. 2020) and ``ada_p`` is logged.

Example:
    >>> gan = VanillaGAN(generator, discriminator, latent_dim=100)                 # doctest: +SKIP
    >>> gan.compile(g_optimizer=keras.optimizers.Adam(1e-5, beta_1=0.5),
    ...             d_optimizer=keras.optimizers.Adam(1e-5, beta_1=0.5))         # doctest: +SKIP
    >>> gan.fit(dataset, epochs=75, steps_per_epoch=len(reader))                  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf

from cellgen.gan.adversarial import AdversarialModel

# Metric names logged in history.csv and TensorBoard.
METRIC_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


def discriminator_loss(real_logits, fake_logits, real_label: float = 1.0, fake_label: float = 0.0):
    """Per-example discriminator BCE (float32): BCE(real_label, D(x)) + BCE(fake_label, D(G(z)))."""
    real_logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
    fake_logits = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    real_term = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(real_logits), real_label),
                                                        logits=real_logits)
    fake_term = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(fake_logits), fake_label),
                                                        logits=fake_logits)
    return real_term + fake_term


def generator_loss(fake_logits):
    """Per-example non-saturating generator loss -log D(G(z)) (Goodfellow et al. 2014, section 3)."""
    fake_logits = tf.reshape(tf.cast(fake_logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(fake_logits), logits=fake_logits)


def global_mean(per_example_loss):
    """Sum over this replica's examples divided by the global batch (replica batch x replicas)."""
    return tf.nn.compute_average_loss(per_example_loss)


class VanillaGAN(AdversarialModel):
    """Unconditional GAN training wrapper around a generator and a discriminator.

    The networks stay separate Keras models (saved, loaded and frozen on their
    own); this model only owns the training step. ``model(z)`` runs the generator.

    Args:
        generator: latent (B, latent_dim) -> images (B, H, W, 3) in [-1, 1].
        discriminator: images -> one logit per image.
        latent_dim: size of z.
        d_steps: discriminator updates per train step (per generator update).
        g_steps: generator updates per train step (per discriminator update).
        real_label, fake_label: discriminator targets (label smoothing: 0.9 / 0.1).
        noise_seed: seed of the latent noise (and augmentation) drawn during training.
        augment, ada_target, ada_kimg: DiffAugment policies and ADA (see
            :class:`~cellgen.gan.adversarial.AdversarialModel`).

    Example:
        >>> gan = VanillaGAN(build_generator(cfg), build_discriminator(cfg), cfg.latent_dim)  # doctest: +SKIP
        >>> gan.compile(g_optimizer=keras.optimizers.Adam(1e-4), d_optimizer=keras.optimizers.Adam(1e-4))  # doctest: +SKIP
        >>> logs = gan.train_on_batch(images, return_dict=True)   # doctest: +SKIP
        >>> sorted(logs)                                          # doctest: +SKIP
        ['d_fake', 'd_loss', 'd_real', 'g_loss']
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, d_steps: int = 1,
                 g_steps: int = 1, real_label: float = 1.0, fake_label: float = 0.0, noise_seed: int = 0,
                 augment: Sequence[str] = (), ada_target: float | None = None, ada_kimg: float = 10.0, **kwargs):
        super().__init__(noise_seed=noise_seed, augment=augment, ada_target=ada_target, ada_kimg=ada_kimg,
                         **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.d_steps = int(d_steps)
        self.g_steps = int(g_steps)
        self.real_label = float(real_label)
        self.fake_label = float(fake_label)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        # Both networks are built functional models, so this wrapper has all its variables; without
        # this, fit() under a tf.distribute strategy would try to build it by calling it on images.
        self.built = True

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def call(self, latent, training=False):
        return self.generator(latent, training=training)

    def _seed(self, step, draw: int):
        return self.draw_seed(step, self.d_steps + self.g_steps, draw)

    def _noise(self, batch_size, seed):
        """Stateless N(0, 1) latents of a draw's seed (see :meth:`draw_seed`)."""
        return tf.random.stateless_normal((batch_size, self.latent_dim), seed=seed, dtype=tf.float32)

    @staticmethod
    def _update(optimizer, scaled_loss, tape, variables):
        gradients = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(gradients, variables))

    def train_step(self, data):
        real = data[0] if isinstance(data, (tuple, list)) else data
        real = tf.cast(real, tf.float32)
        batch_size = tf.shape(real)[0]
        # d_optimizer.iterations counts d_steps per train step; it is checkpointed, so the noise
        # of a resumed run continues where it stopped.
        step = self.d_optimizer.iterations // self.d_steps
        d_variables = self.discriminator.trainable_variables
        g_variables = self.generator.trainable_variables

        for draw in range(self.d_steps):
            seed = self._seed(step, draw)
            fake = self.generator(self._noise(batch_size, seed), training=True)
            fake = tf.stop_gradient(fake)
            with tf.GradientTape() as tape:
                real_logits = self.discriminator(self.augment_images(real, seed, 0), training=True)
                fake_logits = self.discriminator(self.augment_images(fake, seed, 1), training=True)
                per_example = discriminator_loss(real_logits, fake_logits, self.real_label, self.fake_label)
                # scale_loss is recorded by the tape: fp16's LossScaleOptimizer unscales the gradients.
                d_loss = self.d_optimizer.scale_loss(global_mean(per_example))
            self._update(self.d_optimizer, d_loss, tape, d_variables)
            # Trackers get this replica's mean; Keras averages them over replicas.
            self.d_loss_tracker.update_state(tf.reduce_mean(per_example))
            self.d_real_tracker.update_state(tf.reduce_mean(tf.sigmoid(tf.cast(real_logits, tf.float32))))
            self.d_fake_tracker.update_state(tf.reduce_mean(tf.sigmoid(tf.cast(fake_logits, tf.float32))))

        for draw in range(self.g_steps):
            seed = self._seed(step, self.d_steps + draw)
            latent = self._noise(batch_size, seed)
            with tf.GradientTape() as tape:
                generated = self.augment_images(self.generator(latent, training=True), seed, 1)
                fake_logits = self.discriminator(generated, training=True)
                per_example = generator_loss(fake_logits)
                g_loss = self.g_optimizer.scale_loss(global_mean(per_example))
            self._update(self.g_optimizer, g_loss, tape, g_variables)
            self.g_loss_tracker.update_state(tf.reduce_mean(per_example))

        logs = {metric.name: metric.result() for metric in self.metrics}
        # ADA: r_t from the last discriminator update's real logits (of augmented images).
        logs.update(self.adapt_augmentation(real_logits))
        return logs


def fixed_latents(count: int, latent_dim: int, seed: int) -> np.ndarray:
    """A reproducible batch of N(0, 1) latent vectors (NumPy, float32)."""
    return np.random.default_rng(seed).standard_normal((count, latent_dim)).astype(np.float32)


def generate_images(generator: keras.Model, latents: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Runs the generator in inference mode (moving batch statistics) on ``latents``; float32 [-1, 1]."""
    outputs = []
    for start in range(0, len(latents), batch_size):
        batch = generator(latents[start:start + batch_size], training=False)
        outputs.append(np.asarray(keras.ops.convert_to_numpy(batch), dtype=np.float32))
    if not outputs:
        return np.zeros((0,) + tuple(generator.output_shape[1:]), dtype=np.float32)
    return np.concatenate(outputs)
