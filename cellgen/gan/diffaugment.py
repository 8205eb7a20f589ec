"""Differentiable augmentation of the discriminator's inputs: DiffAugment and its adaptive strength.

DiffAugment (Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN
Training", NeurIPS 2020) applies the same random policy to the real and the generated
images every time the discriminator sees them, in the discriminator's update and in the
generator's loss, with gradients through the augmentation to the generator. A discriminator
trained on a few dozen images then cannot memorise them, because it never sees the same
image twice, and the generator is not pushed to produce augmented images, because the
augmentation is applied to its output too. The policies follow the authors' TensorFlow code
(``DiffAugment_tf.py``), on images in [-1, 1]:

- ``color``: brightness + U(-0.5, 0.5); saturation (x - mean over channels) * U(0, 2) + mean;
  contrast (x - mean over the image) * U(0.5, 1.5) + mean; per image;
- ``translation``: an integer shift of up to 1/8 of the side in each direction, per image,
  the uncovered border filled with 0;
- ``cutout``: a square of half the side (centre uniform over the image, clipped at its
  border) set to 0.

Values are not clipped, as in the authors' code: the discriminator sees both kinds of image
augmented alike. Policies run in the order above whatever the order of the list.

ADA (Karras, Aittala, Hellsten, Laine, Lehtinen & Aila, "Training Generative Adversarial
Networks with Limited Data", NeurIPS 2020) makes the strength adaptive: each policy is
applied to an image with probability p, and after every step p moves by
``sign(r_t - target) * images / (ada_kimg * 1000)`` (clipped to [0, 1]), where
r_t = E[sign(D(real))] over the step's real batch (all replicas) measures how sure the
discriminator is of the real images. :class:`AdaptiveStrength` holds p.

Randomness is stateless (``tf.random.stateless_*``) and keyed by the caller's seed: the
GANs key it by (noise seed, optimizer step, draw, replica), so a resumed run draws the same
augmentations as an uninterrupted one, and replicas draw different ones.

Example:
    >>> seed = tf.constant([3, 0], tf.int64)
    >>> augmented = diff_augment(images, ["color", "translation", "cutout"], seed)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from cellgen.gan.config import AUGMENT_POLICIES

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _uniform(seed, shape, minval: float = 0.0, maxval: float = 1.0):
    return tf.random.stateless_uniform(shape, seed=seed, minval=minval, maxval=maxval, dtype=tf.float32)


def _per_image(x, values):
    return tf.reshape(tf.cast(values, x.dtype), [-1, 1, 1, 1])


def rand_brightness(x, seed):
    """Adds U(-0.5, 0.5) to every pixel of an image."""
    return x + _per_image(x, _uniform(seed, [tf.shape(x)[0]], -0.5, 0.5))


def rand_saturation(x, seed):
    """Scales each pixel's deviation from its mean over the channels by U(0, 2)."""
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    return (x - mean) * _per_image(x, _uniform(seed, [tf.shape(x)[0]], 0.0, 2.0)) + mean


def rand_contrast(x, seed):
    """Scales each pixel's deviation from the image mean by U(0.5, 1.5)."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * _per_image(x, _uniform(seed, [tf.shape(x)[0]], 0.5, 1.5)) + mean


def _shift_axis(x, shift, axis: int):
    """``out[..., i, ...] = x[..., i + shift, ...]`` along ``axis`` (1 or 2) per image, 0 outside."""
    size = tf.shape(x)[axis]
    source = tf.range(size)[tf.newaxis, :] + shift  # (B, size)
    inside = (source >= 0) & (source < size)
    gathered = tf.gather(x, tf.clip_by_value(source, 0, size - 1), axis=axis, batch_dims=1)
    mask_shape = [-1, size, 1, 1] if axis == 1 else [-1, 1, size, 1]
    return gathered * tf.cast(tf.reshape(inside, mask_shape), x.dtype)


def rand_translation(x, seed, ratio: float = TRANSLATION_RATIO):
    """Shifts each image by up to ``ratio`` of its side in each direction (integer pixels, zero fill)."""
    batch = tf.shape(x)[0]
    sizes = tf.cast(tf.shape(x)[1:3], tf.float32)
    shifts = tf.cast(sizes * ratio + 0.5, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    down = tf.random.stateless_uniform([batch, 1], seed=seeds[0], minval=-shifts[0], maxval=shifts[0] + 1,
                                       dtype=tf.int32)
    right = tf.random.stateless_uniform([batch, 1], seed=seeds[1], minval=-shifts[1], maxval=shifts[1] + 1,
                                        dtype=tf.int32)
    return _shift_axis(_shift_axis(x, down, 1), right, 2)


def rand_cutout(x, seed, ratio: float = CUTOUT_RATIO):
    """Sets a square of ``ratio`` times the side to 0; its centre is uniform over the image."""
    batch = tf.shape(x)[0]
    height, width = tf.shape(x)[1], tf.shape(x)[2]
    cut = tf.cast(tf.cast(tf.stack([height, width]), tf.float32) * ratio + 0.5, tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, 2)
    # As the authors' code: offsets in [0, size + (1 - cut % 2)), the square starts cut // 2 before.
    top = tf.random.stateless_uniform([batch, 1, 1], seed=seeds[0], minval=0,
                                      maxval=height + (1 - cut[0] % 2), dtype=tf.int32) - cut[0] // 2
    left = tf.random.stateless_uniform([batch, 1, 1], seed=seeds[1], minval=0,
                                       maxval=width + (1 - cut[1] % 2), dtype=tf.int32) - cut[1] // 2
    rows = tf.range(height)[tf.newaxis, :, tf.newaxis]
    columns = tf.range(width)[tf.newaxis, tf.newaxis, :]
    inside = (rows >= top) & (rows < top + cut[0]) & (columns >= left) & (columns < left + cut[1])
    return x * tf.cast(~inside, x.dtype)[..., tf.newaxis]


OPERATIONS = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(images, policy: Sequence[str], seed, probability=None):
    """Applies the DiffAugment ``policy`` to a batch, differentiably.

    Args:
        images: (B, H, W, C) images in [-1, 1] (any float dtype; the result keeps it).
        policy: any of ``color``, ``translation``, ``cutout`` (applied in that order); empty:
            ``images`` is returned unchanged.
        seed: a shape-(2,) integer tensor; the same seed gives the same augmentation.
        probability: None applies every operation to every image (DiffAugment); a scalar p
            applies each operation to each image with probability p (ADA).

    Raises:
        ValueError: an unknown policy name.
    """
    unknown = [name for name in policy if name not in OPERATIONS]
    if unknown:
        raise ValueError(f"unknown augment policy {', '.join(unknown)}; valid: {', '.join(AUGMENT_POLICIES)}")
    chosen = [name for name in AUGMENT_POLICIES if name in policy]
    if not chosen:
        return images
    x = images
    seed = tf.cast(seed, tf.int64)
    index = 0
    for name in chosen:
        for operation in OPERATIONS[name]:
            op_seed = tf.random.experimental.stateless_fold_in(seed, index)
            augmented = operation(x, op_seed)
            if probability is not None:
                draw = _uniform(tf.random.experimental.stateless_fold_in(seed, 1000 + index), [tf.shape(x)[0]])
                apply = tf.reshape(draw < tf.cast(probability, tf.float32), [-1, 1, 1, 1])
                augmented = tf.where(apply, augmented, x)
            x = augmented
            index += 1
    return x


class AdaptiveStrength:
    """The ADA probability p (a non-trainable float32 variable) and its update rule.

    Create it inside ``strategy.scope()``. The GAN's ``train_step`` calls :meth:`update` with
    the step's real logits; p is the same on every replica (r_t is reduced over all of them).
    p is not a network weight: the training stage saves it with each checkpoint and sets it
    back when resuming (:meth:`assign`).

    Args:
        target: the r_t the discriminator is held at (Karras et al.: 0.6).
        kimg: thousands of real images over which p can move from 0 to 1.
        initial: starting p (Karras et al.: 0).
    """

    def __init__(self, target: float = 0.6, kimg: float = 10.0, initial: float = 0.0):
        self.target = float(target)
        self.kimg = float(kimg)
        self.p = keras.Variable(float(initial), dtype="float32", trainable=False, aggregation="mean", name="ada_p")

    def value(self) -> float:
        return float(keras.ops.convert_to_numpy(self.p))

    def assign(self, value: float) -> None:
        self.p.assign(float(value))

    def update(self, real_logits):
        """Moves p by ``sign(r_t - target) * global_batch / (kimg * 1000)``; returns r_t."""
        logits = tf.reshape(tf.cast(real_logits, tf.float32), [-1])
        signs = tf.stack([tf.reduce_sum(tf.sign(logits)), tf.cast(tf.size(logits), tf.float32)])
        context = tf.distribute.get_replica_context()
        if context is not None:
            signs = context.all_reduce(tf.distribute.ReduceOp.SUM, signs)
        r_t = signs[0] / tf.maximum(signs[1], 1.0)
        adjust = tf.sign(r_t - self.target) * signs[1] / (self.kimg * 1000.0)
        self.p.assign(tf.clip_by_value(self.p + adjust, 0.0, 1.0))
        return r_t
