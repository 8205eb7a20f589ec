"""The encoder's training model: E trained through the frozen Vanilla-GAN generator G (K&C 2020, section 4.6).

K&C's procedure: draw real images, map them to latents with E, generate G(E(x))
with the frozen generator, take the L1 norm between real and generated images
and update E only (Adam; learning rate 1e-5). It approximates equation (41),
z~ = argmin_z ||I - G(z)||_1, with one forward pass instead of a per-image
optimisation. The per-example loss is the mean absolute pixel error, reduced
over the global batch.

Example:
    >>> trainer = LatentEncoderTrainer(encoder, generator)                          # doctest: +SKIP
    >>> trainer.compile(optimizer=keras.optimizers.Adam(1e-5))                      # doctest: +SKIP
    >>> trainer.fit(reader.as_tf_dataset(with_labels=False), steps_per_epoch=len(reader))  # doctest: +SKIP
"""

from __future__ import annotations

import keras
import tensorflow as tf


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
