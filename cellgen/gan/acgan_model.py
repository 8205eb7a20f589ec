"""The AC-GAN training model: two Adam optimizers and the objective of Odena, Olah & Shlens (2017).

Objective (K&C 2020, equation 33)::

    L_S = E[log P(S=real | x_real)] + E[log P(S=fake | x_fake)]
    L_C = E[log P(C=c | x_real)]    + E[log P(C=c | x_fake)]

The discriminator maximises L_S + L_C, i.e. minimises ``d_loss = BCE_S + CE_C``
over real and fake batches. The generator maximises L_C - L_S; as in Odena et
al.'s implementation we use the non-saturating form of the -L_S term (minimise
-log P(S=real | x_fake), Goodfellow et al. 2014), so ``g_loss = BCE(1, D_S(G(z, c)))
+ CE(c, D_C(G(z, c)))``. Losses are per-example and reduced over the global batch.

With ``augment`` (DiffAugment) the discriminator sees every real and generated image
augmented, in its own update and in the generator's loss; the class head sees the
same augmented images.

Example:
    >>> acgan = ACGAN(acgan_g, acgan_d, latent_dim=100, num_classes=8)             # doctest: +SKIP
    >>> acgan.compile(g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
    ...               d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))       # doctest: +SKIP
    >>> acgan.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader))            # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from cellgen.gan.adversarial import AdversarialModel
from cellgen.gan.vanilla import global_mean

METRIC_NAMES = ("d_loss", "g_loss", "d_source_loss", "d_class_loss", "aux_acc_real", "aux_acc_fake")


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


class ACGAN(AdversarialModel):
    """The AC-GAN training model.

    Args:
        generator: AC-GAN generator (``[latent, one_hot] -> image``).
        discriminator: AC-GAN discriminator (``image -> [realness_logit, class_probabilities]``).
        latent_dim: size of z.
        num_classes: classes of the auxiliary classifier.
        noise_seed: seed of the stateless latent, label (and augmentation) draws.
        augment, ada_target, ada_kimg: DiffAugment policies and ADA (see
            :class:`~cellgen.gan.adversarial.AdversarialModel`).
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, latent_dim: int, num_classes: int,
                 noise_seed: int = 0, augment: Sequence[str] = (), ada_target: float | None = None,
                 ada_kimg: float = 10.0, **kwargs):
        super().__init__(noise_seed=noise_seed, augment=augment, ada_target=ada_target, ada_kimg=ada_kimg,
                         **kwargs)
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = int(latent_dim)
        self.num_classes = int(num_classes)
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        self.built = True

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    def _draw(self, batch_size, seed):
        """Stateless latents and uniform class labels of a draw's seed (see :meth:`draw_seed`)."""
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

        seed = self.draw_seed(step, 2, 0)
        latent, fake_labels = self._draw(batch_size, seed)
        fake = tf.stop_gradient(self.generator([latent, tf.one_hot(fake_labels, self.num_classes)], training=True))
        d_variables = self.discriminator.trainable_variables
        with tf.GradientTape() as tape:
            real_logit, real_probabilities = self.discriminator(self.augment_images(real, seed, 0), training=True)
            fake_logit, fake_probabilities = self.discriminator(self.augment_images(fake, seed, 1), training=True)
            # -(L_S + L_C), per example (K&C eq. 33).
            source_terms = source_loss(real_logit, 1.0) + source_loss(fake_logit, 0.0)
            class_terms = class_loss(real_labels, real_probabilities) + class_loss(fake_labels, fake_probabilities)
            d_loss = self.d_optimizer.scale_loss(global_mean(source_terms + class_terms))
        gradients = tape.gradient(d_loss, d_variables)
        self.d_optimizer.apply_gradients(zip(gradients, d_variables))

        seed = self.draw_seed(step, 2, 1)
        latent, fake_labels = self._draw(batch_size, seed)
        g_variables = self.generator.trainable_variables
        with tf.GradientTape() as tape:
            generated = self.generator([latent, tf.one_hot(fake_labels, self.num_classes)], training=True)
            logit, probabilities = self.discriminator(self.augment_images(generated, seed, 1), training=True)
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
        logs = {name: tracker.result() for name, tracker in self.trackers.items()}
        logs.update(self.adapt_augmentation(real_logit))
        return logs
