"""The noise-prediction U-Net of the diffusion model.

Follows N&Z 2023 section 4.3 (derived from the keras-io DDIM example): the inputs
are the noisy images and the noise variance; the variance goes through a
sinusoidal embedding (dims 32, max frequency 1000) that is broadcast over the
image and concatenated with a 1x1 convolution of the noisy images; the encoder
has ``depth`` levels whose width doubles per level (N&Z: depth 5, 16 features,
so 16-32-64-128-256), each followed by max pooling except the last (the
bottleneck); the decoder up-samples bilinearly, concatenates the (optionally
attention-gated, Oktay et al. 2018) skip connection and applies the same kind of
block. The last 1x1 convolution is zero-initialised, so the untrained network
predicts zero noise (keras-io), and runs in float32.

A class-conditional network (``num_classes > 0``) has a third input, integer class ids
in ``[0, num_classes]`` where ``num_classes`` is "no class" (the unconditional half of
classifier-free guidance, Ho & Salimans 2022). A learned class embedding (float32) is
joined to the noise embedding and an MLP (two float32 swish dense layers) turns them into
the conditioning vector; every block's output is then scaled and shifted per channel by a
zero-initialised dense projection of it (:class:`~cellgen.diffusion.blocks.FiLM`; the
AdaGN / FiLM conditioning of Dhariwal & Nichol 2021). With ``num_classes = 0`` the
network is exactly the unconditional one (same layers, same initialisation order).

A network conditioned on morphological attributes (``attribute_sizes``, e.g. WBCAtt's
``nucleus_shape`` with 6 values) has a fourth input, int32 ids ``(B, A)``: attribute ``a``
takes ids in ``[0, attribute_sizes[a]]``, the last one "no value" (not annotated, or dropped
for guidance). :class:`AttributeEmbedding` looks each attribute up in its own learned table
and the vectors join the class and noise embeddings in front of the conditioning MLP, so the
FiLM layers see class and attributes together. Without attributes the network is exactly the
class-conditional one.

Images whose side is not a multiple of ``2 ** (depth - 1)`` (28 px with the
deeper Matos U-Net) are zero-padded to the next multiple and the output is
cropped back.

Example:
    >>> network = build_unet(32, widths=[8, 16, 32], block_kind="r2")
    >>> noise = network([np.zeros((2, 32, 32, 3), "float32"), np.ones((2, 1, 1, 1), "float32")])
    >>> noise.shape
    TensorShape([2, 32, 32, 3])
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np
from keras import layers, ops

from cellgen.diffusion.blocks import AttentionGate, FiLM, SinusoidalEmbedding, make_block


@keras.saving.register_keras_serializable(package="cellgen")
class AttributeEmbedding(layers.Layer):
    """One learned embedding table per attribute: ids ``(B, A)`` -> concatenated vectors ``(B, A * dims)``.

    Attribute ``a`` has ``sizes[a] + 1`` rows, the last one "no value". The tables are stored as
    one weight (rows of attribute ``a`` start at ``sum(sizes[:a] + 1)``), initialised like
    ``keras.layers.Embedding`` (uniform in [-0.05, 0.05]).

    Args:
        sizes: number of values of each attribute.
        output_dim: embedding size of every attribute.

    Example:
        >>> layer = AttributeEmbedding([3, 2], 4)
        >>> layer(np.array([[0, 2], [3, 0]])).shape   # ids 3 and 2: "no value"
        TensorShape([2, 8])
    """

    def __init__(self, sizes: Sequence[int], output_dim: int, **kwargs):
        super().__init__(**kwargs)
        self.sizes = [int(size) for size in sizes]
        self.output_dim = int(output_dim)
        if not self.sizes or min(self.sizes) < 1 or self.output_dim < 1:
            raise ValueError(f"AttributeEmbedding needs sizes >= 1 and output_dim >= 1, got {sizes}, {output_dim}")
        self.offsets = np.cumsum([0] + [size + 1 for size in self.sizes[:-1]]).astype(np.int32)

    def build(self, input_shape):
        self.table = self.add_weight(shape=(sum(size + 1 for size in self.sizes), self.output_dim),
                                     initializer=keras.initializers.RandomUniform(-0.05, 0.05), name="table")
        super().build(input_shape)

    def call(self, ids):
        rows = ops.cast(ids, "int32") + ops.convert_to_tensor(self.offsets, "int32")
        vectors = ops.take(self.table, rows, axis=0)  # (B, A, dims)
        return ops.reshape(vectors, (-1, len(self.sizes) * self.output_dim))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], len(self.sizes) * self.output_dim)

    def get_config(self):
        return {**super().get_config(), "sizes": self.sizes, "output_dim": self.output_dim}


def padding_for(image_size: int, levels: int) -> tuple[int, int]:
    """(before, after) zero padding that makes ``image_size`` divisible by ``2 ** (levels - 1)``."""
    factor = 2 ** (levels - 1)
    total = -image_size % factor
    return total // 2, total - total // 2


def build_unet(image_size: int, widths: Sequence[int] = (16, 32, 64, 128, 256), block_kind: str = "r2",
               block_depth: int = 1, recurrence: int = 2, attention_gates: bool = True, pooling: str = "max",
               normalization: str = "batch", batch_norm_momentum: float = 0.99, group_norm_groups: int = 8,
               embedding_dims: int = 32, embedding_max_frequency: float = 1000.0, channels: int = 3,
               num_classes: int = 0, class_embedding_dims: int = 32, condition_dims: int = 128,
               attribute_sizes: Sequence[int] = (), name: str = "unet") -> keras.Model:
    """Builds the U-Net ``[noisy_images, noise_variances(, class_ids(, attribute_ids))] -> prediction``.

    Args:
        image_size: side of the square images.
        widths: features per level; the last one is the bottleneck.
        block_kind: ``r2``, ``residual`` or ``plain`` (see blocks.py).
        block_depth: blocks per level in the encoder and the decoder.
        recurrence: recurrent steps of ``r2`` blocks.
        attention_gates: gate each skip connection with the coarser decoder features.
        pooling: ``max`` or ``average``.
        normalization, batch_norm_momentum, group_norm_groups: normalisation inside the blocks.
        embedding_dims, embedding_max_frequency: sinusoidal embedding of the noise variance.
        channels: image channels.
        num_classes: 0 (unconditional) or the number of classes; then a third input ``(B,)``
            int32 takes class ids, ``num_classes`` meaning "no class".
        class_embedding_dims, condition_dims: class embedding size and conditioning MLP width.
        attribute_sizes: values of each conditioning attribute (needs ``num_classes``); then a fourth
            input ``(B, A)`` int32 takes attribute ids, ``attribute_sizes[a]`` meaning "no value".
            Each attribute's embedding has ``class_embedding_dims`` entries.
        name: model name.

    Returns:
        A functional model with inputs ``(B, S, S, channels)``, ``(B, 1, 1, 1)`` (and ``(B,)``
        class ids when conditional) and a float32 output of shape ``(B, S, S, channels)``.
    """
    widths = [int(width) for width in widths]
    attribute_sizes = [int(size) for size in attribute_sizes]
    if attribute_sizes and not num_classes:
        raise ValueError("attribute conditioning needs a class-conditional U-Net (num_classes > 0)")
    if not widths:
        raise ValueError("the U-Net needs at least one level (widths is empty)")
    if pooling not in ("max", "average"):
        raise ValueError(f"pooling must be 'max' or 'average', got {pooling!r}")
    levels = len(widths)
    before, after = padding_for(image_size, levels)
    padded_size = image_size + before + after
    block_options = {"normalization": normalization, "momentum": batch_norm_momentum, "groups": group_norm_groups}

    noisy_images = keras.Input((image_size, image_size, channels), name="noisy_images")
    noise_variances = keras.Input((1, 1, 1), name="noise_variances")

    inputs = [noisy_images, noise_variances]
    noise_embedding = SinusoidalEmbedding(embedding_dims, embedding_max_frequency,
                                          name="noise_embedding")(noise_variances)
    embedding = layers.UpSampling2D(padded_size, interpolation="nearest", dtype="float32",
                                    name="broadcast_embedding")(noise_embedding)
    condition = None
    if num_classes:
        class_ids = keras.Input((), dtype="int32", name="class_ids")
        inputs.append(class_ids)
        # One extra id, num_classes, is "no class" (dropped labels; the unconditional prediction).
        class_embedding = layers.Embedding(num_classes + 1, class_embedding_dims, dtype="float32",
                                           name="class_embedding")(class_ids)
        class_embedding = layers.Reshape((1, 1, class_embedding_dims), dtype="float32",
                                         name="class_embedding_reshape")(class_embedding)
        embeddings = [noise_embedding, class_embedding]
        if attribute_sizes:
            attribute_ids = keras.Input((len(attribute_sizes),), dtype="int32", name="attribute_ids")
            inputs.append(attribute_ids)
            vectors = AttributeEmbedding(attribute_sizes, class_embedding_dims, dtype="float32",
                                         name="attribute_embedding")(attribute_ids)
            embeddings.append(layers.Reshape((1, 1, len(attribute_sizes) * class_embedding_dims), dtype="float32",
                                             name="attribute_embedding_reshape")(vectors))
        condition = layers.Concatenate(dtype="float32", name="concat_condition")(embeddings)
        for index in range(2):
            condition = layers.Dense(condition_dims, activation="swish", dtype="float32",
                                     name=f"condition_dense{index}")(condition)

    def modulate(x, width: int, block_name: str):
        """FiLM of a block's output by the conditioning vector (identity for unconditional networks)."""
        if condition is None:
            return x
        parameters = layers.Dense(2 * width, kernel_initializer="zeros", dtype="float32",
                                  name=f"{block_name}_film_dense")(condition)
        return FiLM(name=f"{block_name}_film")([x, parameters])

    x = noisy_images
    if before or after:
        x = layers.ZeroPadding2D(((before, after), (before, after)), name="pad")(x)
    x = layers.Conv2D(widths[0], 1, name="input_conv")(x)
    x = layers.Concatenate(name="concat_embedding")([x, embedding])

    skips = []
    for level, width in enumerate(widths[:-1]):
        for index in range(block_depth):
            x = make_block(block_kind, width, recurrence, name=f"down{level}_block{index}", **block_options)(x)
            x = modulate(x, width, f"down{level}_block{index}")
        skips.append(x)
        pool = layers.MaxPooling2D if pooling == "max" else layers.AveragePooling2D
        x = pool(2, name=f"down{level}_pool")(x)
    for index in range(block_depth):
        x = make_block(block_kind, widths[-1], recurrence, name=f"bottleneck_block{index}", **block_options)(x)
        x = modulate(x, widths[-1], f"bottleneck_block{index}")
    for level in reversed(range(levels - 1)):
        skip = skips[level]
        if attention_gates:
            skip = AttentionGate(name=f"up{level}_attention")([skip, x])
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"up{level}_upsample")(x)
        x = layers.Concatenate(name=f"up{level}_concat")([x, skip])
        for index in range(block_depth):
            x = make_block(block_kind, widths[level], recurrence, name=f"up{level}_block{index}", **block_options)(x)
            x = modulate(x, widths[level], f"up{level}_block{index}")

    x = layers.Conv2D(channels, 1, kernel_initializer="zeros", dtype="float32", name="output_conv")(x)
    if before or after:
        x = layers.Cropping2D(((before, after), (before, after)), dtype="float32", name="crop")(x)
    return keras.Model(inputs, x, name=name)


def unet_from_config(config, name: str = "unet") -> keras.Model:
    """The U-Net of a :class:`~cellgen.diffusion.config.DiffusionConfig`."""
    return build_unet(
        config.image_size, widths=config.widths_resolved(), block_kind=config.block_kind,
        block_depth=config.block_depth, recurrence=config.recurrence, attention_gates=config.attention_gates,
        pooling=config.pooling, normalization=config.normalization, batch_norm_momentum=config.batch_norm_momentum,
        group_norm_groups=config.group_norm_groups, embedding_dims=config.embedding_dims,
        embedding_max_frequency=config.embedding_max_frequency, num_classes=config.num_classes,
        class_embedding_dims=config.class_embedding_dims, condition_dims=config.condition_dims,
        attribute_sizes=[len(values) for values in config.attribute_vocabulary().values()] if config.conditional
        else (), name=name)
