"""The part every cellgen GAN shares: a generator, a discriminator, one optimizer for each, the
stateless noise seeds, and the differentiable augmentation of the discriminator's inputs.

``VanillaGAN`` and ``ACGAN`` subclass :class:`AdversarialModel`; each writes its own
``train_step``. The optimizers are separate because the two networks train with their own
learning rates (and, in FreezeD or the AC-GAN, different sets of trainable variables).
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from cellgen.gan.config import AUGMENT_POLICIES

# Stream ids that separate the augmentation's random numbers from the latent noise drawn with
# the same (seed, counter) key.
AUGMENT_STREAM = 0x0A06


class AdversarialModel(keras.Model):
    """A ``keras.Model`` compiled with a generator and a discriminator optimizer.

    Subclasses set ``self.generator`` and ``self.discriminator`` before ``compile``.

    Args:
        noise_seed: seed of the stateless latent noise (and augmentation) drawn in training.
        augment: DiffAugment policies applied to every discriminator input
            (:func:`cellgen.gan.diffaugment.diff_augment`); empty: none.
        ada_target: with ``augment``, turns on the adaptive strength (ADA) with this target of
            E[sign(D(real))]; None: every policy is applied to every image.
        ada_kimg: thousands of real images over which the ADA probability can go from 0 to 1.
    """

    g_optimizer: keras.optimizers.Optimizer | None = None
    d_optimizer: keras.optimizers.Optimizer | None = None

    def __init__(self, noise_seed: int = 0, augment: Sequence[str] = (), ada_target: float | None = None,
                 ada_kimg: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.noise_seed = int(noise_seed)
        self.augment = tuple(augment)
        self.ada = None
        unknown = [name for name in self.augment if name not in AUGMENT_POLICIES]
        if unknown:
            raise ValueError(f"unknown augment policy {', '.join(unknown)}; valid: {', '.join(AUGMENT_POLICIES)}")
        if ada_target is not None and self.augment:
            from cellgen.gan.diffaugment import AdaptiveStrength

            self.ada = AdaptiveStrength(ada_target, ada_kimg)

    def compile(self, g_optimizer: keras.optimizers.Optimizer, d_optimizer: keras.optimizers.Optimizer,
                **kwargs):
        """Sets the two optimizers (each with its own learning rate and beta_1).

        Optimizers are used as given: wrap them with ``cellgen.precision.wrap_optimizer``
        for fp16 loss scaling. ``optimizer`` is not accepted: there is no single one.
        """
        if "optimizer" in kwargs:
            raise TypeError(f"{type(self).__name__}.compile takes g_optimizer and d_optimizer, not optimizer")
        super().compile(optimizer=None, **kwargs)
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    def build_optimizers(self) -> None:
        """Creates the optimizers' slots for the currently trainable variables (needed before restoring)."""
        self.g_optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    # Random numbers of a train step --------------------------------------------------------------
    def draw_seed(self, step, draws: int, draw: int):
        """The stateless seed ``[noise_seed, counter]`` of one draw of a step, with
        counter = (step * draws + draw) * replicas + replica: replicas draw different numbers,
        and a resumed run (whose optimizer step is checkpointed) continues the sequence."""
        context = tf.distribute.get_replica_context()
        replica = context.replica_id_in_sync_group if context is not None else 0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        counter = (tf.cast(step, tf.int64) * draws + draw) * replicas + tf.cast(replica, tf.int64)
        return tf.stack([tf.constant(self.noise_seed, tf.int64), counter])

    # Differentiable augmentation ---------------------------------------------------------------
    def augment_images(self, images, seed, stream: int):
        """``images`` augmented with the model's policy (unchanged without one); ``stream``
        separates the real and fake batches that share a draw's seed."""
        if not self.augment:
            return images
        from cellgen.gan.diffaugment import diff_augment

        key = tf.random.experimental.stateless_fold_in(seed, AUGMENT_STREAM + stream)
        return diff_augment(images, self.augment, key, self.ada.p if self.ada is not None else None)

    def adapt_augmentation(self, real_logits) -> dict:
        """ADA: updates p from the step's real logits; returns ``{"ada_p": p}`` for the logs
        (empty without ADA)."""
        if self.ada is None:
            return {}
        self.ada.update(real_logits)
        return {"ada_p": tf.identity(self.ada.p.value)}

    def augmentation_state(self) -> dict:
        """JSON-able augmentation state for a checkpoint: ``{"ada_p": p}`` with ADA, else empty."""
        return {"ada_p": self.ada.value()} if self.ada is not None else {}

    def restore_augmentation_state(self, state: dict | None) -> None:
        """Sets what :meth:`augmentation_state` saved (missing keys are left alone)."""
        if self.ada is not None and state and "ada_p" in state:
            self.ada.assign(state["ada_p"])
