"""The part every cellgen GAN shares: a generator, a discriminator and one optimizer for each.

``VanillaGAN`` and ``ACGAN`` subclass :class:`AdversarialModel`; each writes its own
``train_step``. The optimizers are separate because the two networks train with their own
learning rates (and, in FreezeD or the AC-GAN, different sets of trainable variables).
"""

from __future__ import annotations

import keras


class AdversarialModel(keras.Model):
    """A ``keras.Model`` compiled with a generator and a discriminator optimizer.

    Subclasses set ``self.generator`` and ``self.discriminator`` before ``compile``.
    """

    g_optimizer: keras.optimizers.Optimizer | None = None
    d_optimizer: keras.optimizers.Optimizer | None = None

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
