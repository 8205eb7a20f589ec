"""The (conditional) convolutional VAE as a ``keras.Model`` with its own train step.

Loss per image, Matos (2025) equation 1 (after Kingma & Welling 2014,
"Auto-Encoding Variational Bayes", appendix B for the Gaussian KL)::

    L = BCE(x_hat, x) + beta * KL(q(z|x) || N(0, I))
    BCE = sum over pixels and channels of -[t log p + (1 - t) log(1 - p)],  t = (x + 1) / 2
    KL  = -1/2 * sum_j (1 + log_var_j - mean_j**2 - exp(log_var_j))

Matos sums both terms over the whole batch (PyTorch ``reduction="sum"``); here
the per-image sums are averaged over the *global* batch
(``tf.nn.compute_average_loss``), which is the same objective divided by the
batch size, so the numbers logged do not depend on the batch or the number of
replicas. Adam is invariant to that constant factor (up to its epsilon).

Example:
    >>> model = CVAE.from_sizes(28, latent_dim=64, num_classes=8)    # doctest: +SKIP
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))         # doctest: +SKIP
    >>> model.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader), epochs=100)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from cellgen.vae.networks import build_decoder, build_encoder, logits_to_images


def kl_divergence(mean, log_variance):
    """KL(N(mean, exp(log_variance)) || N(0, I)) per example, summed over latent dimensions.

    Kingma & Welling (2014), appendix B. Always >= 0; 0 only for mean 0, log-variance 0.
    """
    mean = ops.cast(mean, "float32")
    log_variance = ops.cast(log_variance, "float32")
    return -0.5 * ops.sum(1.0 + log_variance - ops.square(mean) - ops.exp(log_variance), axis=-1)


def bernoulli_cross_entropy(images, logits):
    """Per-example BCE between images in [-1, 1] (as targets (x + 1) / 2) and decoder logits.

    Summed over pixels and channels. Uses the stable form
    ``max(l, 0) - l * t + log(1 + exp(-|l|))``.
    """
    targets = (ops.cast(images, "float32") + 1.0) * 0.5
    logits = ops.cast(logits, "float32")
    per_value = ops.maximum(logits, 0.0) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    return ops.sum(ops.reshape(per_value, (ops.shape(per_value)[0], -1)), axis=-1)


@keras.saving.register_keras_serializable(package="cellgen")
class CVAE(keras.Model):
    """Variational autoencoder trained with BCE + beta * KL; conditional when the networks take labels.

    Args:
        encoder: model ``images`` or ``[images, labels]`` -> ``[mean, log_variance]``
            (see :func:`cellgen.vae.networks.build_encoder`).
        decoder: model ``z`` or ``[z, labels]`` -> logits (see :func:`cellgen.vae.networks.build_decoder`).
        kl_weight: beta of Matos' equation 1 (0.75 in the paper's best run).
        seed: seed of the reparameterisation noise.

    Training data are ``(images, labels)`` batches with images in [-1, 1]; an
    unconditional model ignores the labels.

    Example:
        >>> model = CVAE.from_sizes(28, latent_dim=64, num_classes=8, kl_weight=0.75)  # doctest: +SKIP
        >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))                       # doctest: +SKIP
        >>> images = model.generate(z, labels)                                          # doctest: +SKIP
    """

    def __init__(self, encoder: keras.Model, decoder: keras.Model, kl_weight: float = 0.75,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.kl_weight = float(kl_weight)
        self.seed = seed
        self.conditional = len(encoder.inputs) > 1
        if self.conditional != (len(decoder.inputs) > 1):
            raise ValueError("encoder and decoder must both be conditional (take labels) or both not")
        self.latent_dim = int(decoder.inputs[0].shape[-1])
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")
        # The sub-models are built functional models, so this model is too; marking it
        # stops fit() from tracing call() on the images alone (a conditional VAE needs labels).
        self.built = True

    @classmethod
    def from_sizes(cls, image_size: int, latent_dim: int = 64, filters: Sequence[int] = (32, 64, 128),
                   num_classes: int = 0, kernel_size: int = 4, kl_weight: float = 0.75,
                   seed: int | None = None) -> "CVAE":
        """Builds the encoder and decoder of :mod:`cellgen.vae.networks` and wraps them."""
        encoder = build_encoder(image_size, latent_dim, filters, num_classes, kernel_size)
        decoder = build_decoder(image_size, latent_dim, filters, num_classes, kernel_size)
        return cls(encoder, decoder, kl_weight=kl_weight, seed=seed)

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    # Forward passes -----------------------------------------------------
    def encode(self, images, labels=None, training: bool = False):
        """Returns ``(mean, log_variance)`` of q(z | x[, y])."""
        images = ops.convert_to_tensor(images)
        inputs = [images, self._labels(labels, images)] if self.conditional else images
        mean, log_variance = self.encoder(inputs, training=training)
        return mean, log_variance

    def decode(self, z, labels=None, training: bool = False):
        """Returns the decoder logits for latent vectors ``z``."""
        z = ops.convert_to_tensor(z, "float32")
        inputs = [z, self._labels(labels, z)] if self.conditional else z
        return self.decoder(inputs, training=training)

    def generate(self, z, labels=None):
        """Images in [-1, 1] decoded from ``z`` (float32)."""
        return logits_to_images(self.decode(z, labels))

    def reconstruct(self, images, labels=None) -> np.ndarray:
        """Images in [-1, 1] decoded from the posterior means of ``images`` (NumPy, float32)."""
        labels = labels if self.conditional else None
        mean, _ = self.encode(images, labels)
        return ops.convert_to_numpy(self.generate(mean, labels))

    def _labels(self, labels, reference):
        if labels is None:
            raise ValueError("this VAE is conditional: pass class labels")
        return ops.reshape(ops.cast(labels, "int32"), (ops.shape(reference)[0],))

    def reparameterize(self, mean, log_variance):
        """z = mean + exp(log_variance / 2) * eps, eps ~ N(0, I) (Kingma & Welling 2014, eq. 10)."""
        noise = keras.random.normal(ops.shape(mean), dtype="float32", seed=self.noise_seed)
        return mean + ops.exp(0.5 * log_variance) * noise

    def call(self, inputs, training: bool = False):
        """Reconstruction logits of ``images`` or ``(images, labels)``; z is sampled in training, the mean otherwise."""
        images, labels = (inputs if isinstance(inputs, (tuple, list)) else (inputs, None))
        mean, log_variance = self.encode(images, labels, training=training)
        z = self.reparameterize(mean, log_variance) if training else mean
        return self.decode(z, labels, training=training)

    # Losses and steps ---------------------------------------------------
    def per_example_losses(self, images, labels=None, training: bool = False):
        """``(total, reconstruction, kl)`` per example, all float32 of shape (batch,)."""
        mean, log_variance = self.encode(images, labels, training=training)
        z = self.reparameterize(mean, log_variance)
        logits = self.decode(z, labels, training=training)
        reconstruction = bernoulli_cross_entropy(images, logits)
        kl = kl_divergence(mean, log_variance)
        return reconstruction + self.kl_weight * kl, reconstruction, kl

    def _unpack(self, data):
        if isinstance(data, (tuple, list)):
            images = data[0]
            labels = data[1] if len(data) > 1 else None
        else:
            images, labels = data, None
        return images, labels

    def _update_trackers(self, total, reconstruction, kl):
        # Local means; Keras averages the replicas' metric results under tf.distribute.
        self.loss_tracker.update_state(total)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        images, labels = self._unpack(data)
        with tf.GradientTape() as tape:
            total, reconstruction, kl = self.per_example_losses(images, labels, training=True)
            # Sum over this replica divided by the *global* batch: summing the replicas'
            # gradients then gives the gradient of the global mean.
            loss = tf.nn.compute_average_loss(total)
            scaled_loss = self.optimizer.scale_loss(loss)
        gradients = tape.gradient(scaled_loss, self.trainable_variables)
        self.optimizer.apply(gradients, self.trainable_variables)
        return self._update_trackers(total, reconstruction, kl)

    def test_step(self, data):
        images, labels = self._unpack(data)
        total, reconstruction, kl = self.per_example_losses(images, labels, training=False)
        return self._update_trackers(total, reconstruction, kl)

    # Serialization ------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "kl_weight": self.kl_weight,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        encoder = keras.saving.deserialize_keras_object(config.pop("encoder"))
        decoder = keras.saving.deserialize_keras_object(config.pop("decoder"))
        return cls(encoder, decoder, **config)
