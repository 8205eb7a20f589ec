"""Generator and discriminator of the Vanilla-GAN (DCGAN family), with stable layer names.

Generator (Klang & Carlberg 2020, section 4.3 and Figure 11; Radford et al. 2016)::

    z (latent_dim) -> Dense "g_project" -> Reshape (start, start, depth_g) -> BN -> act
      -> up-sampling layer 0 (depth_g / 2) -> BN -> act
      -> ...                                        (depth halves per layer)
      -> up-sampling layer n-1 (3 channels) -> tanh "g_output" (float32)

An up-sampling layer is either a stride-2 transposed convolution "g_up_i" (K&C)
or nearest-neighbour x2 "g_upsample_i" followed by a stride-1 convolution
"g_conv_i" (Nilsson & Zettergren 2023, section 4.2: Odena et al.'s fix for
checkerboard artefacts).

Discriminator (K&C Figure 12)::

    image -> [Conv "d_conv_i" stride 2 (depth_d * 2**i) -> (BN "d_bn_i") -> LeakyReLU -> Dropout] x d_layers
      -> Flatten "d_features" -> Dense "d_realness" (1 logit, float32; the sigmoid is in the loss)

The names make "the first k" or "the last k" discriminator convolutions well
defined for FreezeD (:mod:`cellgen.gan.freeze`), and :func:`discriminator_trunk`
exposes the features before the realness layer for models built on top (AC-GAN
heads, the image-to-latent encoder).

The layers are drop-in subclasses of the Keras ones (same weights and outputs,
registered for ``safe_mode`` loading) that avoid slow paths measured on a
2-core AMX CPU with oneDNN (bench/bench_gan.py):

- :class:`~cellgen.layers.FusedBatchNormalization` (shared, in :mod:`cellgen.layers`):
  TensorFlow's fused kernel; Keras' generic batch norm took most of a GAN step
  (5-10x slower, worse in bfloat16);
- :class:`MatmulConv2DTranspose` and :class:`SmallMapConv2D`: matrix products
  for tiny, wide maps (4 x 4 x 1024) and for kernel gradients of small maps,
  where oneDNN's bfloat16 convolution kernels run at a fraction of the
  matrix-multiply rate;
- :class:`FloatMaskDropout`: dropout masks drawn in float32, identical in
  float32 and bfloat16 runs (so their losses can be compared step by step);
- :class:`MaxLeakyReLU`: avoids a TensorFlow graph-rewrite failure on
  Conv2D + BiasAdd + LeakyRelu.

Example:
    >>> config = VanillaGANConfig(image_size=32, depth_g=64, depth_d=16, d_layers=3)
    >>> generator, discriminator = build_generator(config), build_discriminator(config)
    >>> generator.output_shape, discriminator.output_shape
    ((None, 32, 32, 3), (None, 1))
"""

from __future__ import annotations

import keras

from cellgen.gan.config import VanillaGANConfig
# The shared fused batch norm (issue 15); it keeps this module's old registered name
# "cellgen>FusedBatchNormalization", and stays importable from here.
from cellgen.layers import FusedBatchNormalization  # noqa: F401

GENERATOR_NAME = "generator"
DISCRIMINATOR_NAME = "discriminator"
FEATURES_LAYER = "d_features"
REALNESS_LAYER = "d_realness"
OUTPUT_LAYER = "g_output"


def _default_filter_grad_pixels(dtype: str, sixteen_bit: int, full: int) -> int:
    return sixteen_bit if dtype in ("bfloat16", "float16") else full


def _patch_product(patch_source, other, kernel, strides: int):
    """``patches(patch_source)^T @ other`` reshaped to ``kernel``'s shape: the kernel gradient of a
    "SAME" convolution (``patch_source`` = inputs, ``other`` = output gradient) or of its transpose
    (the other way round); ``patch_source`` has ``kernel.shape[2]`` channels, ``other`` ``kernel.shape[3]``."""
    import tensorflow as tf

    kernel_h, kernel_w, channels, other_channels = kernel.shape
    patches = tf.image.extract_patches(patch_source, [1, kernel_h, kernel_w, 1], [1, strides, strides, 1],
                                       [1, 1, 1, 1], "SAME")
    product = tf.matmul(tf.reshape(patches, [-1, kernel_h * kernel_w * channels]),
                        tf.reshape(other, [-1, other_channels]), transpose_a=True)
    return tf.reshape(product, tf.shape(kernel))


def conv2d_matmul_filter_grad(inputs, kernel, strides: int):
    """``tf.nn.conv2d(inputs, kernel, strides, "SAME")`` whose kernel gradient is one matrix product.

    The kernel gradient is ``patches(inputs)^T @ d_outputs``: oneDNN's bfloat16
    filter-gradient kernels are several times slower than a matrix product on
    small, wide feature maps (8 x 8 x 256 and smaller). The input gradient is the
    usual transposed convolution.
    """
    import tensorflow as tf

    @tf.custom_gradient
    def convolve(x, w):
        outputs = tf.nn.conv2d(x, w, strides, "SAME")

        def gradient(d_outputs):
            d_inputs = tf.nn.conv2d_transpose(d_outputs, w, tf.shape(x), strides, "SAME")
            return d_inputs, _patch_product(x, d_outputs, w, strides)

        return outputs, gradient

    # Tensors, not variables: the variable read stays outside, on the caller's tape.
    return convolve(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


def conv2d_transpose_matmul_filter_grad(inputs, kernel, strides: int):
    """``tf.nn.conv2d_transpose`` ("SAME", output = input x strides) with a matrix-product kernel gradient.

    ``kernel`` has the transposed layout ``(k, k, C_out, C_in)``; its gradient is
    ``patches(d_outputs)^T @ inputs`` (see :func:`conv2d_matmul_filter_grad`).
    """
    import tensorflow as tf

    channels_out = kernel.shape[2]
    height, width = inputs.shape[1], inputs.shape[2]

    @tf.custom_gradient
    def convolve(x, w):
        shape = tf.stack([tf.shape(x)[0], height * strides, width * strides, channels_out])
        outputs = tf.nn.conv2d_transpose(x, w, shape, strides, "SAME")

        def gradient(d_outputs):
            d_inputs = tf.nn.conv2d(d_outputs, w, strides, "SAME")
            return d_inputs, _patch_product(d_outputs, x, w, strides)

        return outputs, gradient

    # Tensors, not variables: the variable read stays outside, on the caller's tape.
    return convolve(tf.convert_to_tensor(inputs), tf.convert_to_tensor(kernel))


@keras.saving.register_keras_serializable(package="cellgen")
class SmallMapConv2D(keras.layers.Conv2D):
    """``Conv2D`` whose kernel gradient is a matrix product when the output map is small.

    Same weights, config and outputs as ``keras.layers.Conv2D``; only the kernel
    gradient of "same"-padded, undilated, ungrouped convolutions with at most
    ``filter_grad_max_pixels`` output pixels is computed differently (see
    :func:`conv2d_matmul_filter_grad`; the discriminator's last convolutions).

    Args:
        filter_grad_max_pixels: largest output height x width that uses the matrix
            product; None picks what measured faster on oneDNN (64 in bfloat16/float16,
            16 in float32); 0 disables it.
        Others: those of ``keras.layers.Conv2D``.

    Example:
        >>> layer = SmallMapConv2D(512, 5, strides=2, padding="same")
        >>> layer(keras.ops.ones((2, 8, 8, 256))).shape
        (2, 4, 4, 512)
    """

    def __init__(self, *args, filter_grad_max_pixels: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.filter_grad_max_pixels = filter_grad_max_pixels

    def get_config(self):
        return {**super().get_config(), "filter_grad_max_pixels": self.filter_grad_max_pixels}

    def _use_matmul_filter_grad(self, inputs) -> bool:
        limit = self.filter_grad_max_pixels
        if limit is None:
            limit = _default_filter_grad_pixels(self.compute_dtype, 64, 16)
        height, width = inputs.shape[1], inputs.shape[2]
        strides = tuple(self.strides)
        return (keras.backend.backend() == "tensorflow" and self.data_format == "channels_last"
                and self.padding == "same" and tuple(self.dilation_rate) == (1, 1) and self.groups == 1
                and strides[0] == strides[1] and height is not None and width is not None
                and -(-height // strides[0]) * -(-width // strides[1]) <= limit)

    def convolution_op(self, inputs, kernel):
        if self._use_matmul_filter_grad(inputs):
            return conv2d_matmul_filter_grad(inputs, kernel, self.strides[0])
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="cellgen")
class MatmulConv2DTranspose(keras.layers.Conv2DTranspose):
    """``Conv2DTranspose`` built from matrix products where oneDNN's kernels are slow.

    Same weights (kernel ``(k, k, filters, in_channels)``), config and outputs as
    ``keras.layers.Conv2DTranspose``. For stride-2 "same" layers:

    - inputs of at most ``matmul_max_pixels`` pixels (the generator's first layer,
      4 x 4 x 1024 -> 8 x 8 x 512 in K&C's network) are computed entirely as a
      matrix product: every input pixel times the whole kernel,
      ``(B*H*W, C_in) @ (C_in, k*k*C_out)``, then the k x k output patches are
      overlap-added at stride 2 (col2im). In bfloat16 this is five times faster
      than oneDNN's transposed convolution on such tiny, wide maps;
    - inputs of at most ``filter_grad_max_pixels`` pixels keep oneDNN's forward
      pass but take the kernel gradient as one matrix product
      (:func:`conv2d_transpose_matmul_filter_grad`).

    Other strides, paddings or dilations use the parent's convolution.

    Args:
        matmul_max_pixels: largest input height x width computed by the matrix product (0 disables it).
        filter_grad_max_pixels: largest input height x width whose kernel gradient is a matrix
            product; None picks what measured faster (256 in bfloat16/float16, off in float32).
        Others: those of ``keras.layers.Conv2DTranspose``.

    Example:
        >>> layer = MatmulConv2DTranspose(512, 5, strides=2, padding="same")
        >>> layer(keras.ops.ones((2, 4, 4, 1024))).shape
        (2, 8, 8, 512)
    """

    def __init__(self, *args, matmul_max_pixels: int = 16, filter_grad_max_pixels: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul_max_pixels = int(matmul_max_pixels)
        self.filter_grad_max_pixels = filter_grad_max_pixels

    def get_config(self):
        return {**super().get_config(), "matmul_max_pixels": self.matmul_max_pixels,
                "filter_grad_max_pixels": self.filter_grad_max_pixels}

    def _stride2_same(self, inputs) -> bool:
        return (keras.backend.backend() == "tensorflow" and self.data_format == "channels_last"
                and tuple(self.strides) == (2, 2) and self.padding == "same" and self.output_padding is None
                and tuple(self.dilation_rate) == (1, 1) and min(self.kernel_size) >= 2
                and inputs.shape[1] is not None and inputs.shape[2] is not None)

    def _use_matmul(self, inputs) -> bool:
        return self._stride2_same(inputs) and inputs.shape[1] * inputs.shape[2] <= self.matmul_max_pixels

    def _use_matmul_filter_grad(self, inputs) -> bool:
        limit = self.filter_grad_max_pixels
        if limit is None:
            limit = _default_filter_grad_pixels(self.compute_dtype, 256, 0)
        return self._stride2_same(inputs) and inputs.shape[1] * inputs.shape[2] <= limit

    def _finish(self, outputs):
        if self.use_bias:
            outputs = outputs + keras.ops.cast(self.bias, outputs.dtype)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def call(self, inputs):
        if not self._use_matmul(inputs):
            if self._use_matmul_filter_grad(inputs):
                kernel = keras.ops.cast(self.kernel, inputs.dtype)
                return self._finish(conv2d_transpose_matmul_filter_grad(inputs, kernel, 2))
            return super().call(inputs)
        import tensorflow as tf

        kernel_h, kernel_w = self.kernel_size
        height, width, channels = inputs.shape[1], inputs.shape[2], inputs.shape[3]
        batch = tf.shape(inputs)[0]
        kernel = tf.cast(self.kernel, inputs.dtype)
        # columns[b, i, j, ty, tx, :] = inputs[b, i, j, :] @ kernel[ty, tx, :, :]^T; the kernel's
        # (k*k*C_out, C_in) view is used transposed by the product, never copied.
        weights = tf.reshape(kernel, [kernel_h * kernel_w * self.filters, channels])
        columns = tf.matmul(tf.reshape(inputs, [-1, channels]), weights, transpose_b=True)
        columns = tf.reshape(columns, [batch, height, width, kernel_h, kernel_w, self.filters])
        # Tap (ty, tx) of input pixel (i, j) lands on full-output pixel (2i + ty, 2j + tx). Group the
        # taps by parity: ty = 2a + py adds columns[..., i, ...] at parity-grid row i + a.
        taps_h, taps_w = (kernel_h + 1) // 2, (kernel_w + 1) // 2
        grids = []
        for parity_y in (0, 1):
            row = []
            for parity_x in (0, 1):
                terms = [tf.pad(columns[:, :, :, 2 * a + parity_y, 2 * b + parity_x, :],
                                [[0, 0], [a, taps_h - 1 - a], [b, taps_w - 1 - b], [0, 0]])
                         for a in range((kernel_h - parity_y + 1) // 2)
                         for b in range((kernel_w - parity_x + 1) // 2)]
                row.append(tf.add_n(terms))
            grids.append(tf.stack(row, axis=3))
        grid_h, grid_w = height + taps_h - 1, width + taps_w - 1
        full = tf.reshape(tf.stack(grids, axis=2), [batch, 2 * grid_h, 2 * grid_w, self.filters])
        # "same" crops the full output like TensorFlow: pad_before = (k - 2) // 2 for stride 2.
        top, left = (kernel_h - 2) // 2, (kernel_w - 2) // 2
        return self._finish(full[:, top:top + 2 * height, left:left + 2 * width, :])


@keras.saving.register_keras_serializable(package="cellgen")
class FloatMaskDropout(keras.layers.Dropout):
    """``Dropout`` whose random mask is drawn in float32 whatever the compute dtype.

    Keras' dropout draws its uniform numbers in the input's dtype, so the same
    seed gives different masks in float32 and bfloat16 (and bfloat16 uniforms
    are coarse); drawing them in float32 makes mixed-precision runs comparable
    with float32 runs step by step, and is also faster on CPUs.

    Args:
        Those of ``keras.layers.Dropout``.

    Example:
        >>> layer = FloatMaskDropout(0.3, seed=1)
        >>> outputs = layer(keras.ops.ones((2, 8)), training=True)
    """

    def call(self, inputs, training=False):
        if not training or self.rate <= 0 or self.noise_shape is not None:
            return super().call(inputs, training=training)
        uniform = keras.random.uniform(keras.ops.shape(inputs), dtype="float32", seed=self.seed_generator)
        keep = keras.ops.cast(uniform >= self.rate, inputs.dtype)
        return inputs * keep * keras.ops.cast(1.0 / (1.0 - self.rate), inputs.dtype)


@keras.saving.register_keras_serializable(package="cellgen")
class MaxLeakyReLU(keras.layers.LeakyReLU):
    """``LeakyReLU`` computed as ``max(x, slope * x)`` (the same function for 0 <= slope <= 1).

    TensorFlow's graph optimizer fuses Conv2D + BiasAdd + LeakyRelu and then
    fails on the training graph ("remapper failed: ... LeakyReluGrad ... missing
    node BiasAdd"), logging an error and skipping its other rewrites of that
    graph. ``max`` is not fused, costs the same, and keeps the log clean.

    Args:
        Those of ``keras.layers.LeakyReLU``.

    Example:
        >>> MaxLeakyReLU(negative_slope=0.2)(keras.ops.convert_to_tensor([-1.0, 2.0]))  # [-0.2, 2.0]
    """

    def call(self, inputs):
        if not 0 <= self.negative_slope <= 1:
            return super().call(inputs)
        return keras.ops.maximum(inputs, inputs * keras.ops.cast(self.negative_slope, inputs.dtype))


def _kernel_initializer(config: VanillaGANConfig):
    if config.init_std > 0:
        return keras.initializers.RandomNormal(0.0, config.init_std)
    return "glorot_uniform"


def _activation(config: VanillaGANConfig, name: str) -> keras.layers.Layer:
    if config.g_activation == "relu":
        return keras.layers.ReLU(name=name)
    return MaxLeakyReLU(negative_slope=config.leaky_slope, name=name)


def _batch_norm(config: VanillaGANConfig, name: str) -> keras.layers.Layer:
    gamma = keras.initializers.RandomNormal(1.0, config.init_std) if config.init_std > 0 else "ones"
    return FusedBatchNormalization(momentum=config.bn_momentum, gamma_initializer=gamma, name=name)


def build_generator(config: VanillaGANConfig) -> keras.Model:
    """The generator: latent (latent_dim,) -> image (image_size, image_size, 3) in [-1, 1].

    Layer names: ``g_project``, ``g_bn_project``, ``g_act_project``, then per
    up-sampling layer i ``g_up_i`` (transposed) or ``g_upsample_i`` + ``g_conv_i``
    (nearest), ``g_bn_i`` and ``g_act_i`` except on the last, and ``g_output``.
    """
    depths = config.generator_depths()
    initializer = _kernel_initializer(config)
    latent = keras.Input((config.latent_dim,), name="latent")
    x = keras.layers.Dense(config.start_size * config.start_size * depths[0], use_bias=False,
                           kernel_initializer=initializer, name="g_project")(latent)
    x = keras.layers.Reshape((config.start_size, config.start_size, depths[0]), name="g_reshape")(x)
    x = _batch_norm(config, "g_bn_project")(x)
    x = _activation(config, "g_act_project")(x)
    layers = config.upsampling_layers
    for index in range(layers):
        last = index == layers - 1
        filters = depths[index + 1]
        # Batch norm follows every layer but the last, so those convolutions need no bias.
        if config.upsampling == "transposed":
            x = MatmulConv2DTranspose(filters, config.kernel_size, strides=2, padding="same", use_bias=last,
                                      kernel_initializer=initializer, name=f"g_up_{index}")(x)
        else:
            x = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"g_upsample_{index}")(x)
            x = SmallMapConv2D(filters, config.kernel_size, strides=1, padding="same", use_bias=last,
                               kernel_initializer=initializer, name=f"g_conv_{index}")(x)
        if not last:
            x = _batch_norm(config, f"g_bn_{index}")(x)
            x = _activation(config, f"g_act_{index}")(x)
    # tanh in float32: the images leave the network in full precision under mixed policies.
    image = keras.layers.Activation("tanh", dtype="float32", name=OUTPUT_LAYER)(x)
    return keras.Model(latent, image, name=GENERATOR_NAME)


def build_discriminator(config: VanillaGANConfig) -> keras.Model:
    """The discriminator: image (image_size, image_size, 3) -> one realness logit (float32).

    Layer names: per convolution i ``d_conv_i``, ``d_bn_i`` (``d_batch_norm``, i > 0),
    ``d_act_i``, ``d_dropout_i``; then ``d_features`` (flatten) and ``d_realness``.
    """
    initializer = _kernel_initializer(config)
    image = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = image
    for index, filters in enumerate(config.discriminator_depths()):
        with_norm = config.d_batch_norm and index > 0  # DCGAN: no batch norm on the input layer
        x = SmallMapConv2D(filters, config.kernel_size, strides=2, padding="same", use_bias=not with_norm,
                           kernel_initializer=initializer, name=f"d_conv_{index}")(x)
        if with_norm:
            x = _batch_norm(config, f"d_bn_{index}")(x)
        x = MaxLeakyReLU(negative_slope=config.leaky_slope, name=f"d_act_{index}")(x)
        if config.dropout > 0:
            x = FloatMaskDropout(config.dropout, name=f"d_dropout_{index}")(x)
    features = keras.layers.Flatten(name=FEATURES_LAYER)(x)
    # The logit in float32: the loss applies the sigmoid in full precision.
    logit = keras.layers.Dense(1, dtype="float32", kernel_initializer=initializer, name=REALNESS_LAYER)(features)
    return keras.Model(image, logit, name=DISCRIMINATOR_NAME)


def build_gan_networks(config: VanillaGANConfig) -> tuple[keras.Model, keras.Model]:
    """Both networks under the current dtype policy (call inside ``strategy.scope()``)."""
    return build_generator(config), build_discriminator(config)


def discriminator_conv_layers(discriminator: keras.Model) -> list[keras.layers.Layer]:
    """The discriminator's convolutions ``d_conv_0, d_conv_1, ...`` from input to output."""
    convs = [layer for layer in discriminator.layers if layer.name.startswith("d_conv_")]
    return sorted(convs, key=lambda layer: int(layer.name.rsplit("_", 1)[1]))


def discriminator_trunk(discriminator: keras.Model, name: str = "discriminator_trunk") -> keras.Model:
    """The discriminator up to its flattened convolution features (before ``d_realness``).

    The trunk shares layers and weights with ``discriminator``: freeze it with
    ``trunk.trainable = False`` and put new dense layers on top (AC-GAN auxiliary
    classifier, image-to-latent encoder).

    Example:
        >>> trunk = discriminator_trunk(discriminator)            # doctest: +SKIP
        >>> trunk.output_shape                                      # doctest: +SKIP
        (None, 65536)
    """
    return keras.Model(discriminator.input, discriminator.get_layer(FEATURES_LAYER).output, name=name)


def conv_flops(model: keras.Model) -> int:
    """Multiply-add FLOPs (2 per MAC) of one forward pass of one example through the
    model's dense, convolution and transposed-convolution layers (the rest is negligible)."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            _, height, width, channels_in = layer.input.shape
            kernel_h, kernel_w = layer.kernel_size
            total += 2 * height * width * kernel_h * kernel_w * channels_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            _, height, width, channels_out = layer.output.shape
            kernel_h, kernel_w = layer.kernel_size
            total += 2 * height * width * kernel_h * kernel_w * layer.input.shape[-1] * channels_out
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)
