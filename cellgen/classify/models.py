"""Classifier networks: a ``keras.applications`` backbone, global average pooling, softmax.

Both theses fine-tune an ImageNet network: Klang & Carlberg (2020, section 4.7)
use Xception (Chollet 2017), Nilsson & Zettergren (2023, section 4.4) use
MobileNetV2 with width multiplier alpha = 0.75 (Sandler et al. 2018) followed by
"a global average pooling layer and a dense layer with a softmax activation".
``smallcnn`` is a small batch-normalised CNN for CPU demos and fast tests; it
goes through exactly the same training code.

cellgen images are float32 in [-1, 1]; :class:`BackbonePreprocess` maps them to
what each backbone's own ``preprocess_input`` would produce from uint8 pixels
(for MobileNetV2 and Xception, Keras' "tf" mode, that is [-1, 1] itself).

Example:
    >>> model = build_classifier("mobilenetv2", num_classes=8, image_size=64, alpha=0.35,
    ...                          weights=None)       # doctest: +SKIP
    >>> model.output_shape                           # doctest: +SKIP
    (None, 8)
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from cellgen.config import ConfigError

# ImageNet channel statistics of Keras' "torch" and "caffe" preprocessing modes
# (keras.applications.imagenet_utils).
_IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
_IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="cellgen")
class BackbonePreprocess(keras.layers.Layer):
    """Maps cellgen images in [-1, 1] to a backbone's expected input.

    ``mode`` is the ``keras.applications.imagenet_utils.preprocess_input`` mode of
    the backbone: ``tf`` (scale to [-1, 1]: the identity here), ``torch`` (ImageNet
    mean/std on [0, 1]) or ``caffe`` (RGB to BGR, subtract the ImageNet mean on
    [0, 255]). Computing it inside the model keeps saved models self-contained.

    Args:
        mode: ``tf``, ``torch`` or ``caffe``.

    Example:
        >>> layer = BackbonePreprocess("torch")
        >>> layer(np.zeros((1, 4, 4, 3), "float32")).shape
        TensorShape([1, 4, 4, 3])
    """

    MODES = ("tf", "torch", "caffe")

    def __init__(self, mode: str = "tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"BackbonePreprocess: unknown mode {mode!r}; choose one of {', '.join(self.MODES)}")
        self.mode = mode

    def call(self, images):
        images = keras.ops.cast(images, self.compute_dtype)
        if self.mode == "tf":
            return images
        pixels = (images + 1.0) * 127.5  # back to [0, 255]
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(_IMAGENET_MEAN_RGB, dtype=self.compute_dtype)
            std = keras.ops.convert_to_tensor(_IMAGENET_STD_RGB, dtype=self.compute_dtype)
            return (pixels / 255.0 - mean) / std
        bgr = keras.ops.flip(pixels, axis=-1)
        return bgr - keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, dtype=self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    """What cellgen needs to know about a backbone.

    Attributes:
        name: the config name.
        min_size: smallest input side the network accepts.
        preprocess_mode: mode of :class:`BackbonePreprocess`.
        build: ``(image_size, weights, alpha, cnn_width, cnn_blocks) -> keras.Model`` without a top.
        imagenet: whether ImageNet weights exist.
    """

    name: str
    min_size: int
    preprocess_mode: str
    build: Callable[..., keras.Model]
    imagenet: bool = True


# keras.applications.MobileNetV2 publishes ImageNet weights for these widths and sides.
MOBILENETV2_IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
MOBILENETV2_IMAGENET_SIZES = (96, 128, 160, 192, 224)


def _build_mobilenetv2(image_size: int, weights, alpha: float, **_) -> keras.Model:
    with warnings.catch_warnings():
        # Keras warns that 224-px weights are loaded for other sides; build_classifier says it once.
        warnings.filterwarnings("ignore", message=".*Weights for input shape.*")
        warnings.filterwarnings("ignore", message=".*input_shape.*undefined.*")
        return keras.applications.MobileNetV2(input_shape=(image_size, image_size, 3), alpha=alpha,
                                              include_top=False, weights=weights, pooling=None, name="backbone")


def _build_xception(image_size: int, weights, **_) -> keras.Model:
    return keras.applications.Xception(input_shape=(image_size, image_size, 3), include_top=False,
                                       weights=weights, pooling=None, name="backbone")


def _build_smallcnn(image_size: int, weights, cnn_width: int = 32, cnn_blocks: int = 4, **_) -> keras.Model:
    """Blocks of conv-BN-ReLU (stride 1) then conv-BN-ReLU (stride 2), doubling the width."""
    inputs = keras.Input((image_size, image_size, 3))
    features = inputs
    for block in range(cnn_blocks):
        filters = cnn_width * 2 ** block
        for stride in (1, 2):
            features = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                                           name=f"block{block}_conv{stride}")(features)
            features = keras.layers.BatchNormalization(name=f"block{block}_bn{stride}")(features)
            features = keras.layers.ReLU(name=f"block{block}_relu{stride}")(features)
    model = keras.Model(inputs, features, name="backbone")
    if weights is not None:
        model.load_weights(weights)
    return model


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenetv2": BackboneSpec("mobilenetv2", 32, "tf", _build_mobilenetv2),
    "xception": BackboneSpec("xception", 71, "tf", _build_xception),
    "smallcnn": BackboneSpec("smallcnn", 16, "tf", _build_smallcnn, imagenet=False),
}


def resolve_weights(weights: str | None) -> str | None:
    """Config ``weights`` as the ``keras.applications`` argument: ``imagenet``, None or an existing path."""
    if weights is None or str(weights).strip().lower() in ("", "none", "null", "random"):
        return None
    if weights == "imagenet":
        return "imagenet"
    path = Path(os.path.expanduser(weights))
    if not path.is_file():
        raise ConfigError(f"weights: file not found: {weights} (use imagenet, none or a weights file)")
    return str(path)


def check_backbone(backbone: str, image_size: int, weights: str | None, alpha: float = 1.0,
                   cnn_blocks: int = 4) -> BackboneSpec:
    """Validates a backbone choice and returns its spec; raises ConfigError naming the option."""
    if backbone not in BACKBONES:
        raise ConfigError(f"backbone: unknown backbone {backbone!r}; choose one of {', '.join(sorted(BACKBONES))}")
    spec = BACKBONES[backbone]
    minimum = max(spec.min_size, 2 ** cnn_blocks) if backbone == "smallcnn" else spec.min_size
    if image_size < minimum:
        raise ConfigError(f"image_size {image_size} is below the {backbone} minimum of {minimum} px "
                          "(use --size or a smaller backbone)")
    if weights == "imagenet":
        if not spec.imagenet:
            raise ConfigError(f"weights: {backbone} has no ImageNet weights; use --weights none or a file")
        if backbone == "mobilenetv2" and alpha not in MOBILENETV2_IMAGENET_ALPHAS:
            raise ConfigError(f"alpha {alpha} has no ImageNet weights for mobilenetv2; choose one of "
                              f"{', '.join(str(a) for a in MOBILENETV2_IMAGENET_ALPHAS)} or --weights none")
    return spec


def set_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Sets the momentum of every BatchNormalization layer (nested models too); returns how many."""
    count = 0
    for layer in _all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            count += 1
    return count


def _all_layers(model: keras.Model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def build_classifier(backbone: str, num_classes: int, image_size: int, weights: str | None = "imagenet",
                     alpha: float = 1.0, bn_momentum: float = 0.9, freeze_backbone: bool = False,
                     dropout: float = 0.0, cnn_width: int = 32, cnn_blocks: int = 4) -> keras.Model:
    """Builds ``preprocess -> backbone -> global average pooling -> [dropout] -> softmax``.

    Args:
        backbone: ``mobilenetv2``, ``xception`` or ``smallcnn``.
        num_classes: outputs of the softmax layer (2 in binary mode).
        image_size: input side; at least the backbone's minimum (MobileNetV2 32, Xception 71).
        weights: ``imagenet``, ``None``/``"none"`` or a weights file of the backbone without top.
        alpha: MobileNetV2 width multiplier.
        bn_momentum: momentum of every batch norm of the backbone (see ``ClassifierConfig``).
        freeze_backbone: make the backbone non-trainable; its batch norms then run in inference mode.
        dropout: dropout rate before the softmax layer.
        cnn_width, cnn_blocks: ``smallcnn`` size.

    Returns:
        A functional model mapping (N, S, S, 3) images in [-1, 1] to float32 class probabilities.

    Raises:
        ConfigError: unknown backbone, missing weights file, input below the minimum, or an
            ImageNet request the backbone has no weights for.
    """
    weights = resolve_weights(weights)
    spec = check_backbone(backbone, image_size, weights, alpha, cnn_blocks)
    if num_classes < 2:
        raise ConfigError(f"a classifier needs at least 2 classes, got {num_classes}")
    if (weights == "imagenet" and backbone == "mobilenetv2" and image_size not in MOBILENETV2_IMAGENET_SIZES):
        print(f"note: mobilenetv2 has ImageNet weights trained at {MOBILENETV2_IMAGENET_SIZES}; "
              f"the 224-px weights are used for {image_size} px")
    try:
        base = spec.build(image_size=image_size, weights=weights, alpha=alpha, cnn_width=cnn_width,
                          cnn_blocks=cnn_blocks)
    except ValueError as error:
        if weights not in (None, "imagenet"):
            raise ConfigError(f"weights: {weights} does not fit the {backbone} backbone "
                              f"({str(error).splitlines()[0]})") from None
        raise
    except Exception as error:
        # keras.utils.get_file raises a bare Exception("URL fetch failure on ...") when offline
        if weights == "imagenet" and "URL fetch failure" in str(error):
            raise ConfigError(f"weights: cannot download the ImageNet weights of {backbone} "
                              f"({str(error).splitlines()[0]}); check the network or the Keras cache "
                              "(~/.keras/models), or use --weights none or a weights file") from None
        raise
    set_batchnorm_momentum(base, bn_momentum)
    if freeze_backbone:
        base.trainable = False
    inputs = keras.Input((image_size, image_size, 3), name="image")
    features = BackbonePreprocess(spec.preprocess_mode, name="preprocess")(inputs)
    features = base(features)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(features)
    if dropout > 0:
        features = keras.layers.Dropout(dropout, name="dropout")(features)
    # float32 softmax: probabilities and the loss stay exact under mixed precision.
    probabilities = keras.layers.Dense(num_classes, activation="softmax", dtype="float32",
                                       name="probabilities")(features)
    return keras.Model(inputs, probabilities, name=f"{backbone}_classifier")


def build_classifier_from_config(config, num_classes: int) -> keras.Model:
    """:func:`build_classifier` with the fields of a ``ClassifierConfig``."""
    return build_classifier(config.backbone, num_classes, config.image_size, weights=config.weights,
                            alpha=config.alpha, bn_momentum=config.bn_momentum,
                            freeze_backbone=config.freeze_backbone, dropout=config.dropout,
                            cnn_width=config.cnn_width, cnn_blocks=config.cnn_blocks)


def backbone_of(model: keras.Model) -> keras.Model:
    """The nested backbone model of a classifier built here."""
    return model.get_layer("backbone")


def load_classifier(path: str | os.PathLike) -> keras.Model:
    """Loads a saved ``.keras`` classifier with ``safe_mode=True``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model file not found: {path}")
    from cellgen.runs import load_model_file

    return load_model_file(path, compile=True)  # a truncated file is reported as damaged


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities in inference mode (batch norm uses its moving statistics)."""
    return np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)
