"""Keras layers shared by several stages (registered serializable for ``safe_mode`` loading).

- :class:`FusedBatchNormalization`: ``keras.layers.BatchNormalization`` computed
  with TensorFlow's fused kernel (``FusedBatchNormV3``). Used by the GAN networks
  (:mod:`cellgen.gan.networks`) and, through :class:`UNetBatchNormalization`, by
  the diffusion U-Net (:mod:`cellgen.diffusion.blocks`).
- :class:`UNetBatchNormalization`: the same layer with the U-Net's defaults (no
  affine parameters, moving statistics averaged over replicas), registered under
  the name the U-Net's own layer had before issue 15
  (``cellgen.diffusion>FusedBatchNormalization``).

The two stages had their own fused batch norms until issue 15; the options
``moving_update`` and ``average_across_replicas`` keep each stage's arithmetic
bit for bit, and both old registered names still load:
``cellgen>FusedBatchNormalization`` (the GAN's, now this module's
:class:`FusedBatchNormalization`) and ``cellgen.diffusion>FusedBatchNormalization``.

Example:
    >>> layer = FusedBatchNormalization(momentum=0.9)
    >>> layer(np.random.rand(4, 8, 8, 16).astype("float32"), training=True).shape
    TensorShape([4, 8, 8, 16])
"""

from __future__ import annotations

import keras

MOVING_UPDATES = ("fused", "assign")


@keras.saving.register_keras_serializable(package="cellgen")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Batch normalization of NHWC feature maps with TensorFlow's fused kernel.

    Same weights, config and Keras 3 semantics as ``keras.layers.BatchNormalization``
    (``training=True`` normalises with the batch statistics and updates the moving
    ones; ``trainable=False`` also means inference mode), but on 4-D inputs with the
    TensorFlow backend it calls ``FusedBatchNormV3``, which computes the batch
    statistics in one pass in float32 and accepts bfloat16/float16 activations
    without an up-cast copy: 5-10x faster than Keras' generic moments + arithmetic on
    a CPU with oneDNN (bench/bench_gan.py). The moving variance is updated with the
    unbiased batch variance (as ``tf.keras`` 2 did); Keras 3's generic layer uses the
    biased one, a difference of a factor n / (n - 1) with n = batch x height x width.
    Without ``center`` / ``scale`` the kernel gets a zero offset / unit scale. Other
    inputs (masks, renorm, synchronized, other axes, ``epsilon < 1.001e-5``) fall
    back to the parent.

    Args:
        moving_update: how the moving statistics follow the batch ones (the same
            maths, different rounding): ``"fused"`` (default, the GAN's) lets the
            kernel compute ``momentum * moving + (1 - momentum) * batch``;
            ``"assign"`` (the U-Net's) computes ``moving - (1 - momentum) * (moving - batch)``
            after the kernel.
        average_across_replicas: create the moving statistics with
            ``aggregation="mean"``, so that under ``tf.distribute`` every replica
            keeps the same (averaged) statistics; Keras' BatchNormalization (the
            default, False) lets them drift apart.
        Others: those of ``keras.layers.BatchNormalization``.

    Example:
        >>> layer = FusedBatchNormalization(momentum=0.9)
        >>> outputs = layer(keras.ops.ones((2, 4, 4, 8)), training=True)
    """

    def __init__(self, *args, moving_update: str = "fused", average_across_replicas: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        if moving_update not in MOVING_UPDATES:
            raise ValueError(f"moving_update must be one of {MOVING_UPDATES}, got {moving_update!r}")
        self.moving_update = moving_update
        self.average_across_replicas = bool(average_across_replicas)

    def add_weight(self, *args, **kwargs):
        # The parent's build creates the moving statistics as the non-trainable weights.
        if getattr(self, "average_across_replicas", False) and not kwargs.get("trainable", True):
            kwargs["aggregation"] = "mean"
        return super().add_weight(*args, **kwargs)

    def _use_fused(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and not self.renorm
                and not self.synchronized and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and self.epsilon >= 1.001e-5)

    def call(self, inputs, training=None, mask=None):
        if not self._use_fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        if inputs.dtype not in (tf.float32, tf.bfloat16, tf.float16):
            inputs = tf.cast(inputs, tf.float32)
        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        beta = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        if training and self.trainable:
            if self.moving_update == "fused":
                outputs, new_mean, new_variance = tf.compat.v1.nn.fused_batch_norm(
                    inputs, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=self.epsilon,
                    is_training=True, exponential_avg_factor=1.0 - self.momentum)
                self.moving_mean.assign(new_mean)
                self.moving_variance.assign(new_variance)
            else:
                outputs, batch_mean, batch_variance = tf.compat.v1.nn.fused_batch_norm(
                    inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
                decay = 1.0 - self.momentum
                self.moving_mean.assign(self.moving_mean - decay * (self.moving_mean - batch_mean))
                self.moving_variance.assign(self.moving_variance - decay * (self.moving_variance - batch_variance))
        else:
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs, gamma, beta, mean=moving_mean, variance=moving_variance, epsilon=self.epsilon,
                is_training=False)
        return tf.cast(outputs, self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "moving_update": self.moving_update,
                "average_across_replicas": self.average_across_replicas}


@keras.saving.register_keras_serializable(package="cellgen.diffusion", name="FusedBatchNormalization")
class UNetBatchNormalization(FusedBatchNormalization):
    """:class:`FusedBatchNormalization` with the diffusion U-Net's defaults.

    No affine parameters (keras-io's DDIM uses ``center=False, scale=False``), moving
    statistics updated by ``"assign"`` and averaged over replicas: exactly the layer
    that ``cellgen.diffusion.blocks`` defined before issue 15, whose registered name
    (``cellgen.diffusion>FusedBatchNormalization``) this class keeps, so that configs
    written then (which hold only ``momentum``, ``epsilon``, ``center``, ``scale``)
    load with the same behaviour.

    Example:
        >>> norm = UNetBatchNormalization(momentum=0.9)
        >>> norm(np.random.rand(4, 8, 8, 16).astype("float32"), training=True).shape
        TensorShape([4, 8, 8, 16])
    """

    def __init__(self, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = False, scale: bool = False,
                 moving_update: str = "assign", average_across_replicas: bool = True, **kwargs):
        super().__init__(momentum=momentum, epsilon=epsilon, center=center, scale=scale,
                         moving_update=moving_update, average_across_replicas=average_across_replicas, **kwargs)
