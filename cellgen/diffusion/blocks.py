"""Layers of the diffusion U-Net: noise embedding, convolution blocks, attention gate.

All layers are registered serializable (package ``cellgen``) and build their
sub-layers in ``build`` so that saved models reload with ``safe_mode=True``.

- :class:`SinusoidalEmbedding`: the keras-io DDIM embedding of the noise variance
  (N&Z 2023 section 3.11; Vaswani et al. 2017), always float32.
- :class:`R2Block`: recurrent residual convolutional unit of R2U-Net
  (Alom et al. 2018, "Recurrent Residual Convolutional Neural Network based on
  U-Net (R2U-Net) for Medical Image Segmentation", arXiv 1802.06955, Fig. 4(d)).
- :class:`ResidualBlock`: the keras-io DDIM residual block.
- :class:`PlainBlock`: two convolutions, as in the original U-Net (Ronneberger et al. 2015).
- :class:`FiLM`: per-channel scale and shift by the noise-level and class embedding (Perez et al. 2018).
- :class:`AttentionGate`: additive attention gate of Oktay et al. (2018), "Attention
  U-Net: Learning Where to Look for the Pancreas", arXiv 1804.03999, eq. 1-2 / Fig. 2.

Example:
    >>> block = R2Block(16, recurrence=2)
    >>> block(np.zeros((2, 8, 8, 3), "float32")).shape
    TensorShape([2, 8, 8, 16])
"""

from __future__ import annotations

import math

import keras
from keras import layers, ops

# The shared fused batch norm (issue 15) with this module's old defaults and registered name
# ("cellgen.diffusion>FusedBatchNormalization"), under its old name here.
from cellgen.layers import UNetBatchNormalization as FusedBatchNormalization

_PACKAGE = "cellgen.diffusion"


def _as_shape(shape) -> tuple:
    return tuple(shape)


def _with_channels(shape, channels: int) -> tuple:
    return (*tuple(shape)[:-1], channels)


def make_norm(kind: str, channels: int, momentum: float = 0.99, groups: int = 8, dtype=None,
              name: str | None = None):
    """A normalisation layer without affine parameters (keras-io's ``center=False, scale=False``).

    ``kind``: ``batch`` (:class:`FusedBatchNormalization`), ``group`` (the number of groups
    is reduced to divide ``channels``) or ``none`` (returns None).
    """
    if kind == "batch":
        return FusedBatchNormalization(momentum=momentum, center=False, scale=False, dtype=dtype, name=name)
    if kind == "group":
        return layers.GroupNormalization(groups=math.gcd(groups, channels), center=False, scale=False,
                                         dtype=dtype, name=name)
    if kind == "none":
        return None
    raise ValueError(f"unknown normalization {kind!r}; choose batch, group or none")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SinusoidalEmbedding(layers.Layer):
    """Sinusoidal embedding of a scalar per image (the noise variance), float32 under any policy.

    ``frequencies = exp(linspace(log(min_frequency), log(max_frequency), dims // 2))`` and the
    embedding is ``[sin(2 pi f x), cos(2 pi f x)]`` (keras-io DDIM; N&Z Table 7: dims 32, max 1000).

    Args:
        dims: output size (even).
        max_frequency: largest frequency; decides how small a change of the variance is resolved.
        min_frequency: smallest frequency.

    Input shape ``(batch, 1, 1, 1)``; output ``(batch, 1, 1, dims)``.

    Example:
        >>> SinusoidalEmbedding(32, 1000.0)(np.full((2, 1, 1, 1), 0.5, "float32")).shape
        TensorShape([2, 1, 1, 32])
    """

    def __init__(self, dims: int = 32, max_frequency: float = 1000.0, min_frequency: float = 1.0, **kwargs):
        kwargs["dtype"] = "float32"  # the noise level needs full precision (DEVELOPERS.md)
        super().__init__(**kwargs)
        if dims < 2 or dims % 2:
            raise ValueError(f"embedding dims must be even and >= 2, got {dims}")
        self.dims = int(dims)
        self.max_frequency = float(max_frequency)
        self.min_frequency = float(min_frequency)

    def call(self, inputs):
        frequencies = ops.exp(ops.linspace(math.log(self.min_frequency), math.log(self.max_frequency),
                                           self.dims // 2))
        angular_speeds = ops.cast(2.0 * math.pi * frequencies, "float32")
        inputs = ops.cast(inputs, "float32")
        return ops.concatenate([ops.sin(angular_speeds * inputs), ops.cos(angular_speeds * inputs)], axis=-1)

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.dims)

    def get_config(self):
        return {**super().get_config(), "dims": self.dims, "max_frequency": self.max_frequency,
                "min_frequency": self.min_frequency}


class _NormalizedBlock(layers.Layer):
    """Shared options of the convolution blocks."""

    def __init__(self, width: int, normalization: str = "batch", momentum: float = 0.99, groups: int = 8,
                 activation: str = "swish", **kwargs):
        super().__init__(**kwargs)
        if width < 1:
            raise ValueError(f"block width must be >= 1, got {width}")
        self.width = int(width)
        self.normalization = normalization
        self.momentum = float(momentum)
        self.groups = int(groups)
        self.activation = activation
        self._activation = keras.activations.get(activation)

    def _conv(self, kernel: int, name: str, use_bias: bool = True, **kwargs):
        return layers.Conv2D(self.width, kernel, padding="same", use_bias=use_bias, dtype=self.dtype_policy,
                             name=name, **kwargs)

    def _norm(self, channels: int, name: str):
        return make_norm(self.normalization, channels, self.momentum, self.groups, dtype=self.dtype_policy,
                         name=name)

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.width)

    def get_config(self):
        return {**super().get_config(), "width": self.width, "normalization": self.normalization,
                "momentum": self.momentum, "groups": self.groups, "activation": self.activation}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class R2Block(_NormalizedBlock):
    """Recurrent residual convolutional unit (RRCU) of R2U-Net (Alom et al. 2018).

    A 1x1 convolution maps the input to ``width`` features ``x``; two recurrent
    convolutional layers (RCL) follow and their output is added to ``x``
    (Alom et al. Fig. 4(d), eq. 3: ``x_{l+1} = x_l + F(x_l, w_l)``). An RCL unrolled
    for ``recurrence`` steps computes (Alom et al. eq. 1-2, separate feed-forward and
    recurrent kernels)::

        h(0) = act(norm(conv_f(x)))
        h(k) = act(norm(conv_f(x) + conv_r(h(k - 1))))   for k = 1 .. recurrence

    ``conv_f(x)`` is computed once. Each time step has its own normalisation layer
    (the statistics of ``h(0)`` and ``h(k)`` differ). The activation is swish, as in
    the keras-io DDIM network, rather than R2U-Net's ReLU.

    Args:
        width: output features.
        recurrence: recurrent steps t (Alom et al.: t = 2).
        normalization: ``batch``, ``group`` or ``none``.
        momentum: batch-norm momentum.
        groups: group-norm groups.

    Example:
        >>> R2Block(8, recurrence=2)(np.zeros((1, 4, 4, 3), "float32")).shape
        TensorShape([1, 4, 4, 8])
    """

    RCL_UNITS = 2

    def __init__(self, width: int, recurrence: int = 2, **kwargs):
        super().__init__(width, **kwargs)
        if recurrence < 1:
            raise ValueError(f"recurrence must be >= 1, got {recurrence}")
        self.recurrence = int(recurrence)
        self.input_projection = layers.Conv2D(self.width, 1, dtype=self.dtype_policy, name="input_projection")
        self.feedforward = [self._conv(3, f"rcl{unit}_feedforward") for unit in range(self.RCL_UNITS)]
        # The normalisation that follows a convolution makes its bias redundant.
        self.recurrent = [self._conv(3, f"rcl{unit}_recurrent", use_bias=False) for unit in range(self.RCL_UNITS)]
        self.norms = [[self._norm(self.width, f"rcl{unit}_norm{step}") for step in range(self.recurrence + 1)]
                      for unit in range(self.RCL_UNITS)]

    def build(self, input_shape):
        input_shape = _as_shape(input_shape)
        self.input_projection.build(input_shape)
        hidden = _with_channels(input_shape, self.width)
        for unit in range(self.RCL_UNITS):
            self.feedforward[unit].build(hidden)
            self.recurrent[unit].build(hidden)
            for norm in self.norms[unit]:
                if norm is not None:
                    norm.build(hidden)
        self.built = True

    def _normalize(self, norm, x, training):
        return x if norm is None else norm(x, training=training)

    def call(self, inputs, training=None):
        x = self.input_projection(inputs)
        hidden = x
        for unit in range(self.RCL_UNITS):
            feedforward = self.feedforward[unit](hidden)
            state = self._activation(self._normalize(self.norms[unit][0], feedforward, training))
            for step in range(1, self.recurrence + 1):
                state = self._activation(
                    self._normalize(self.norms[unit][step], feedforward + self.recurrent[unit](state), training))
            hidden = state
        return x + hidden

    def get_config(self):
        return {**super().get_config(), "recurrence": self.recurrence}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(_NormalizedBlock):
    """keras-io DDIM residual block: ``skip + conv(act(conv(norm(x))))``.

    The skip is the input itself when it already has ``width`` channels, else a 1x1
    convolution of it.

    Example:
        >>> ResidualBlock(8)(np.zeros((1, 4, 4, 8), "float32")).shape
        TensorShape([1, 4, 4, 8])
    """

    def __init__(self, width: int, **kwargs):
        super().__init__(width, **kwargs)
        self.skip = None
        self.norm = None
        self.conv1 = self._conv(3, "conv1")
        self.conv2 = self._conv(3, "conv2")

    def build(self, input_shape):
        input_shape = _as_shape(input_shape)
        if input_shape[-1] != self.width:
            self.skip = layers.Conv2D(self.width, 1, dtype=self.dtype_policy, name="skip")
            self.skip.build(input_shape)
        self.norm = self._norm(int(input_shape[-1]), "norm")
        if self.norm is not None:
            self.norm.build(input_shape)
        self.conv1.build(input_shape)
        self.conv2.build(_with_channels(input_shape, self.width))
        self.built = True

    def call(self, inputs, training=None):
        residual = inputs if self.skip is None else self.skip(inputs)
        x = inputs if self.norm is None else self.norm(inputs, training=training)
        x = self._activation(self.conv1(x))
        return self.conv2(x) + residual


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PlainBlock(_NormalizedBlock):
    """Two 3x3 convolutions, each followed by normalisation and the activation (U-Net).

    Example:
        >>> PlainBlock(8)(np.zeros((1, 4, 4, 3), "float32")).shape
        TensorShape([1, 4, 4, 8])
    """

    def __init__(self, width: int, **kwargs):
        super().__init__(width, **kwargs)
        has_norm = self.normalization != "none"
        self.conv1 = self._conv(3, "conv1", use_bias=not has_norm)
        self.conv2 = self._conv(3, "conv2", use_bias=not has_norm)
        self.norm1 = self._norm(self.width, "norm1")
        self.norm2 = self._norm(self.width, "norm2")

    def build(self, input_shape):
        input_shape = _as_shape(input_shape)
        hidden = _with_channels(input_shape, self.width)
        self.conv1.build(input_shape)
        self.conv2.build(hidden)
        for norm in (self.norm1, self.norm2):
            if norm is not None:
                norm.build(hidden)
        self.built = True

    def call(self, inputs, training=None):
        x = self.conv1(inputs)
        if self.norm1 is not None:
            x = self.norm1(x, training=training)
        x = self._activation(x)
        x = self.conv2(x)
        if self.norm2 is not None:
            x = self.norm2(x, training=training)
        return self._activation(x)


BLOCKS = {"r2": R2Block, "residual": ResidualBlock, "plain": PlainBlock}


def make_block(kind: str, width: int, recurrence: int = 2, name: str | None = None, **options):
    """The block ``kind`` (``r2``, ``residual`` or ``plain``) with ``width`` output features."""
    if kind not in BLOCKS:
        raise ValueError(f"unknown block kind {kind!r}; choose one of {', '.join(BLOCKS)}")
    if kind == "r2":
        return R2Block(width, recurrence=recurrence, name=name, **options)
    return BLOCKS[kind](width, name=name, **options)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AttentionGate(layers.Layer):
    """Additive attention gate on a U-Net skip connection (Oktay et al. 2018, eq. 1-2).

    With the skip features ``x`` (H x W) and the gating signal ``g`` from the coarser
    decoder level (H/2 x W/2)::

        q = psi(relu(W_x x + W_g g + b_g)) + b_psi      (W_x: 2x2 stride-2 conv, W_g, psi: 1x1 convs)
        alpha = sigmoid(q)                              (float32, one weight per pixel)
        output = x * upsample(alpha)                    (bilinear, back to H x W)

    Args:
        inter_channels: features of the joint space (Oktay et al.: half the skip's channels; 0 = that).

    Call with ``[x, g]``; returns ``x`` re-weighted. :meth:`attention` returns the map itself.

    Example:
        >>> gate = AttentionGate()
        >>> gate([np.ones((1, 8, 8, 4), "float32"), np.ones((1, 4, 4, 8), "float32")]).shape
        TensorShape([1, 8, 8, 4])
    """

    def __init__(self, inter_channels: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.inter_channels = int(inter_channels)
        self.theta_x = None
        self.phi_g = None
        # The attention coefficients are a sigmoid output: computed in float32.
        self.psi = layers.Conv2D(1, 1, dtype="float32", name="psi")
        self.upsample = layers.UpSampling2D(2, interpolation="bilinear", dtype="float32", name="upsample")

    def build(self, input_shape):
        x_shape, g_shape = (_as_shape(shape) for shape in input_shape)
        inter = self.inter_channels or max(1, int(x_shape[-1]) // 2)
        self.theta_x = layers.Conv2D(inter, 2, strides=2, use_bias=False, dtype=self.dtype_policy, name="theta_x")
        self.phi_g = layers.Conv2D(inter, 1, dtype=self.dtype_policy, name="phi_g")
        self.theta_x.build(x_shape)
        self.phi_g.build(g_shape)
        self.psi.build(_with_channels(g_shape, inter))
        self.upsample.build(_with_channels(g_shape, 1))
        self.built = True

    def attention(self, x, g):
        """The attention map ``alpha`` at the skip's resolution, float32 in (0, 1)."""
        joint = ops.relu(self.theta_x(x) + self.phi_g(g))
        alpha = ops.sigmoid(self.psi(joint))
        return self.upsample(alpha)

    def call(self, inputs):
        x, g = inputs
        alpha = self.attention(x, g)
        return x * ops.cast(alpha, x.dtype)

    def compute_output_shape(self, input_shape):
        return _as_shape(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "inter_channels": self.inter_channels}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FiLM(layers.Layer):
    """Feature-wise linear modulation of a block's output by the conditioning vector.

    Perez et al. (2018), "FiLM: Visual Reasoning with a General Conditioning Layer",
    arXiv 1709.07871, eq. 1-2, in the ``1 + gamma`` form of the diffusion U-Nets that
    condition on time and class (Dhariwal & Nichol 2021's AdaGN, "Diffusion Models Beat
    GANs on Image Synthesis", section 3)::

        output = x * (1 + scale) + shift        [scale, shift] = parameters (per image, per channel)

    ``parameters`` come from a float32 dense layer of the conditioning vector (the joined
    noise-level and class embeddings, see unet.py), zero-initialised so that an untrained
    conditional network computes what the unconditional one does. The modulation itself
    runs in the block's compute dtype.

    Call with ``[x, parameters]``: ``x`` (B, H, W, C) and ``parameters`` (B, 1, 1, 2C).

    Example:
        >>> FiLM()([np.ones((2, 4, 4, 3), "float32"), np.zeros((2, 1, 1, 6), "float32")]).shape
        TensorShape([2, 4, 4, 3])
    """

    def build(self, input_shape):
        x_shape, parameter_shape = (_as_shape(shape) for shape in input_shape)
        if parameter_shape[-1] != 2 * x_shape[-1]:
            raise ValueError(f"FiLM: parameters need 2 x {x_shape[-1]} channels, got {parameter_shape[-1]}")
        self.built = True

    def call(self, inputs):
        x, parameters = inputs
        parameters = ops.cast(parameters, x.dtype)
        scale, shift = ops.split(parameters, 2, axis=-1)
        return x * (1.0 + scale) + shift

    def compute_output_shape(self, input_shape):
        return _as_shape(input_shape[0])
