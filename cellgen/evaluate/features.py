"""Feature extractors for FID/KID/precision-recall, streaming extraction and a real-set cache.

Two kinds of extractor map images (float32 NHWC in [-1, 1], any size; they are
resized inside) to feature vectors:

- :class:`InceptionExtractor`: InceptionV3 (Szegedy et al. 2016) average-pool
  features (2048) at 299 x 299, the network FID was defined with (Heusel et al.
  2017) and the one N&Z (section 4.4) and Matos (section 3.4) use. Weights are
  ``"imagenet"`` (downloaded once by Keras), a local weights file of the
  network without its top, or ``None`` (random: for tests and timing only).
- :class:`ClassifierExtractor`: any saved Keras classifier; the features are
  the input of its last Dense layer (the penultimate activations), e.g. a
  MobileNetV2 trained on blood cells by ``evaluate_classifier.py``.

Real-set features are cached (:class:`FeatureCache`) in a file keyed by the
data path and its file list (names, sizes, modification times), the image
size, the crop, the class filter and the extractor (its name, input size,
precision and a hash of its weights), so they are computed once.

Example:
    >>> extractor = InceptionExtractor(weights=None, input_size=75)            # doctest: +SKIP
    >>> real = features_of_source("pbc128/val", extractor, image_size=64)      # doctest: +SKIP
    >>> real.features.shape                                                    # doctest: +SKIP
    (1706, 2048)
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib
import json
import os
import pkgutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from cellgen.evaluate.errors import EvaluationError

INCEPTION_SIZE = 299
INCEPTION_MIN_SIZE = 75  # keras.applications.InceptionV3 refuses smaller inputs
CACHE_VERSION = 1
CLASSIFIER_FILE_NAMES = ("model.keras", "best.keras")
# What keras.applications.InceptionV3(include_top=False, weights="imagenet") downloads.
IMAGENET_NOTOP_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
IMAGENET_NOTOP_URL = ("https://storage.googleapis.com/tensorflow/keras-applications/inception_v3/"
                      + IMAGENET_NOTOP_FILE)
IMAGENET_NOTOP_MD5 = "bcbd6486424b2319ff4ef7d526e38f63"


def default_cache_dir() -> Path:
    """``$CELLGEN_CACHE_DIR/features``, else ``~/.cache/cellgen/features``."""
    root = os.environ.get("CELLGEN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cellgen")
    return Path(root) / "features"


# ---------------------------------------------------------------------------
# Extractors


class FeatureExtractor:
    """Maps images in [-1, 1] (N, H, W, 3) to float32 features (N, D) with a Keras model.

    Images of another size are resized (bilinear, antialiased) to ``input_size``
    inside a compiled function. Subclasses set the model; this class does the
    batching, resizing and fingerprinting.

    Args:
        model: a Keras model from images (input_size, 3) to (D,) features.
        name: short description used in reports and cache keys.
        input_size: (height, width) the model takes.
        batch_size: images per forward pass.

    Example:
        >>> inputs = keras.Input((32, 32, 3))                                        # doctest: +SKIP
        >>> model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs))  # doctest: +SKIP
        >>> FeatureExtractor(model, "mean-colour", (32, 32))(np.zeros((2, 64, 64, 3))).shape  # doctest: +SKIP
        (2, 3)
    """

    def __init__(self, model, name: str, input_size: tuple[int, int], batch_size: int = 32,
                 precision: str = "fp32"):
        import tensorflow as tf

        self.model = model
        self.name = name
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.batch_size = int(batch_size)
        self.precision = precision
        self.feature_dim = int(model.output_shape[-1])
        self._fingerprint: str | None = None
        size = self.input_size
        signature = [tf.TensorSpec((None, None, None, 3), tf.float32)]

        def forward(images):
            return tf.cast(model(images, training=False), tf.float32)

        def resize_and_forward(images):
            return forward(tf.image.resize(images, size, method="bilinear", antialias=True))

        self._forward = tf.function(forward, input_signature=signature)
        self._resize_and_forward = tf.function(resize_and_forward, input_signature=signature)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Features of a batch of images (float in [-1, 1] or uint8), as float32 (N, D)."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3:
            raise EvaluationError(f"{self.name}: expected images (N, H, W, 3), got shape {images.shape}")
        if images.dtype == np.uint8:
            images = images.astype(np.float32) / 127.5 - 1.0
        images = images.astype(np.float32, copy=False)
        function = self._forward if tuple(images.shape[1:3]) == self.input_size else self._resize_and_forward
        outputs = [function(images[start:start + self.batch_size]).numpy()
                   for start in range(0, len(images), self.batch_size)]
        if not outputs:
            return np.zeros((0, self.feature_dim), dtype=np.float32)
        return np.concatenate(outputs).reshape(len(images), -1)

    def fingerprint(self) -> str:
        """A hash of the name, input size, precision and every weight (changes with the weights)."""
        if self._fingerprint is None:
            digest = hashlib.sha1()
            digest.update(json.dumps([type(self).__name__, self.name, self.input_size, self.precision]).encode())
            for weight in self.model.weights:
                digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "type": type(self).__name__, "input_size": list(self.input_size),
                "feature_dim": self.feature_dim, "precision": self.precision, "fingerprint": self.fingerprint()}


def _build_with_precision(precision: str, build):
    """Builds a model under the Keras policy of ``precision`` and restores the previous policy."""
    import keras

    from cellgen.precision import MODES, resolve_mode

    try:
        resolved = resolve_mode(precision)
    except ValueError as error:
        raise EvaluationError(f"--precision: {error}") from None
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(MODES[resolved])
    try:
        return build(), resolved
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _keras_model_dirs() -> list[Path]:
    """Where Keras keeps downloaded weights: ``$KERAS_HOME/models`` or ``~/.keras/models`` (or /tmp/.keras)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return [Path(home) / "models", Path(tempfile.gettempdir()) / ".keras" / "models"]


def cached_imagenet_weights() -> Path | None:
    """InceptionV3's ImageNet no-top weights file when Keras has downloaded it before, else None."""
    for folder in _keras_model_dirs():
        if (folder / IMAGENET_NOTOP_FILE).is_file():
            return folder / IMAGENET_NOTOP_FILE
    return None


def _download_imagenet_weights() -> str:
    import keras

    return keras.utils.get_file(IMAGENET_NOTOP_FILE, IMAGENET_NOTOP_URL, cache_subdir="models",
                                file_hash=IMAGENET_NOTOP_MD5)


def require_inception_weights(weights: str | os.PathLike | None) -> None:
    """Makes sure InceptionV3 can get ``weights`` before anything long starts.

    ``"imagenet"`` is taken from the Keras cache, or downloaded now (once); when that fails
    (no internet), a one-line error says what to pass instead. A file must exist;
    ``None``/``"none"`` (random weights) needs nothing.

    Raises:
        EvaluationError: the weights cannot be had, naming the option.
    """
    if weights is None or str(weights).lower() in ("none", "random"):
        return
    if str(weights) != "imagenet":
        if not Path(os.path.expanduser(os.fspath(weights))).is_file():
            raise EvaluationError(f"--inception-weights: file not found: {weights} (use imagenet or a "
                                  "local InceptionV3 no-top weights file)")
        return
    if cached_imagenet_weights() is not None:
        return
    try:
        _download_imagenet_weights()
    except Exception as error:  # Keras raises a bare Exception("URL fetch failure ...") offline
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise EvaluationError(
            f"--inception-weights imagenet: InceptionV3's ImageNet weights are not on this machine "
            f"({_keras_model_dirs()[0] / IMAGENET_NOTOP_FILE}) and cannot be downloaded ({reason}); pass "
            f"--inception-weights FILE (a copy of {IMAGENET_NOTOP_FILE}), or use the domain extractor "
            "(a classifier trained on the real images)") from None


class InceptionExtractor(FeatureExtractor):
    """InceptionV3 average-pool features (2048) at ``input_size`` (299 as in FID).

    Args:
        weights: ``"imagenet"`` (Keras downloads the file once into ~/.keras/models),
            a path to a local weights file of InceptionV3 without top
            (``inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``), or ``None``
            for random weights (tests and timing only: the numbers mean nothing).
        input_size: side the images are resized to; 299 is the standard. Smaller sides
            (>= 75) run much faster on a CPU but give FIDs that are not comparable.
        batch_size: images per forward pass.
        precision: ``fp32`` (reference) or ``bf16`` (2-4x faster on CPUs with AMX;
            features differ slightly, so compare FIDs computed with the same precision).

    Example:
        >>> extractor = InceptionExtractor(weights=None, input_size=75)      # doctest: +SKIP
        >>> extractor(np.zeros((2, 64, 64, 3), "float32")).shape            # doctest: +SKIP
        (2, 2048)
    """

    def __init__(self, weights: str | os.PathLike | None = "imagenet", input_size: int = INCEPTION_SIZE,
                 batch_size: int = 32, precision: str = "fp32"):
        import keras

        if not isinstance(input_size, int) or input_size < INCEPTION_MIN_SIZE:
            raise EvaluationError(f"--extractor-size: InceptionV3 needs at least {INCEPTION_MIN_SIZE} px, "
                                  f"got {input_size}")
        require_inception_weights(weights)
        if weights is None or str(weights).lower() in ("none", "random"):
            weights_argument, label = None, "random"
        elif str(weights) == "imagenet":
            weights_argument, label = "imagenet", "imagenet"
        else:
            path = Path(os.path.expanduser(os.fspath(weights)))
            weights_argument, label = str(path), path.name

        def build():
            return keras.applications.InceptionV3(include_top=False, weights=weights_argument, pooling="avg",
                                                  input_shape=(input_size, input_size, 3))

        try:
            model, resolved = _build_with_precision(precision, build)
        except ValueError as error:
            if weights_argument not in (None, "imagenet"):
                raise EvaluationError(f"--inception-weights: {weights} does not fit InceptionV3 without top "
                                      f"({str(error).splitlines()[0]})") from None
            raise
        except OSError as error:
            raise EvaluationError(f"--inception-weights: cannot get the {label} weights ({error}); "
                                  "download them elsewhere and pass the file") from None
        super().__init__(model, f"inception-{label}-{input_size}", (input_size, input_size),
                         batch_size=batch_size, precision=resolved)
        self.weights = label


def _register_cellgen_layers() -> None:
    """Imports cellgen's model modules so that their serializable layers are registered."""
    for package_name in ("cellgen.classify",):
        try:
            package = importlib.import_module(package_name)
        except ImportError:
            continue
        for module in pkgutil.iter_modules(package.__path__, package_name + "."):
            try:
                importlib.import_module(module.name)
            except ImportError:
                pass


def resolve_classifier_path(path: str | os.PathLike) -> Path:
    """A ``.keras`` file, or a folder holding ``model.keras``/``best.keras`` (also under ``models/``)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_file():
        if path.suffix != ".keras":
            raise EvaluationError(f"--extractor: {path} is not a .keras model file")
        return path
    if path.is_dir():
        for folder in (path, path / "models"):
            for name in CLASSIFIER_FILE_NAMES:
                if (folder / name).is_file():
                    return folder / name
        raise EvaluationError(f"--extractor: {path} holds no {' or '.join(CLASSIFIER_FILE_NAMES)} "
                              "(give a .keras file or a classifier run directory)")
    raise EvaluationError(f"--extractor: {path} not found (use 'inception', a .keras file or a classifier run)")


def penultimate_model(model):
    """A model from the classifier's input to the input of its last Dense layer.

    Raises:
        EvaluationError: the model has no top-level Dense layer.
    """
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Dense):
            return keras.Model(model.inputs, layer.input, name=f"{model.name}_features")
    raise EvaluationError(f"{model.name}: no Dense layer at the top level; cannot take penultimate features")


class ClassifierExtractor(FeatureExtractor):
    """Penultimate-layer features of a saved Keras classifier (a "domain" network).

    Args:
        model: a ``keras.Model`` or a path (``.keras`` file or a classifier run directory
            with ``model.keras`` or ``best.keras``). It must take images in [-1, 1],
            cellgen's convention.
        input_size: only for models with an undefined input size.
        batch_size: images per forward pass.

    Example:
        >>> extractor = ClassifierExtractor("runs/classifier/models/best.keras")   # doctest: +SKIP
        >>> extractor.feature_dim                                                  # doctest: +SKIP
        960
    """

    def __init__(self, model, input_size: int | None = None, batch_size: int = 64):
        import keras

        source = None
        if not isinstance(model, keras.Model):
            source = resolve_classifier_path(model)
            _register_cellgen_layers()
            try:
                model = keras.saving.load_model(str(source), safe_mode=True, compile=False)
            except (ValueError, TypeError, OSError, KeyError) as error:
                raise EvaluationError(f"--extractor: cannot load {source} "
                                      f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
        features = penultimate_model(model)
        shape = model.input_shape
        if isinstance(shape, list):
            raise EvaluationError(f"{model.name}: a classifier with several inputs cannot be a feature extractor")
        height, width = shape[1], shape[2]
        if height is None or width is None:
            if input_size is None:
                raise EvaluationError(f"{model.name}: input size undefined; pass --extractor-size")
            height = width = input_size
        elif input_size is not None and (input_size, input_size) != (height, width):
            raise EvaluationError(f"--extractor-size {input_size}: the classifier takes {height}x{width} images")
        label = source.parent.name + "-" + source.stem if source is not None else model.name
        super().__init__(features, f"classifier-{label}-{height}", (height, width), batch_size=batch_size,
                         precision="as saved")
        self.path = str(source) if source is not None else None


def load_extractor(spec, input_size: int | None = None, inception_weights="imagenet", batch_size: int = 32,
                   precision: str = "fp32") -> FeatureExtractor:
    """An extractor from a command-line style spec.

    Args:
        spec: ``"inception"``, a path to a ``.keras`` classifier or its run directory,
            a ``keras.Model`` or a :class:`FeatureExtractor` (returned as is).
        input_size: InceptionV3 resize side (default 299); for a classifier, only checked.
        inception_weights: ``"imagenet"``, a weights file or ``None``.
        batch_size: images per forward pass.
        precision: InceptionV3 compute precision (``fp32`` or ``bf16``).
    """
    if isinstance(spec, FeatureExtractor):
        return spec
    if isinstance(spec, str) and spec.lower() == "inception":
        return InceptionExtractor(weights=inception_weights, input_size=input_size or INCEPTION_SIZE,
                                  batch_size=batch_size, precision=precision)
    return ClassifierExtractor(spec, input_size=input_size, batch_size=max(batch_size, 1))


# ---------------------------------------------------------------------------
# Streaming extraction


def extract_features(extractor: FeatureExtractor, batches: Iterable[np.ndarray], total: int | None = None,
                     description: str = "features", progress: bool = True,
                     keep_images: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Runs the extractor over a stream of image batches with a progress bar.

    Args:
        extractor: the feature extractor.
        batches: iterable of image arrays (B, H, W, 3) in [-1, 1] (or ``(images, labels)`` pairs).
        total: number of images, for the progress bar.
        description: progress-bar label.
        progress: show the bar.
        keep_images: also return the first ``keep_images`` images as uint8.

    Returns:
        ``(features float32 (N, D), kept uint8 images (min(N, keep_images), H, W, 3))``.
    """
    from tqdm import tqdm

    from cellgen.images import to_uint8

    chunks, kept = [], []
    kept_count = 0
    with tqdm(total=total, desc=description, unit="img", disable=not progress, leave=False) as bar:
        for batch in batches:
            images = batch[0] if isinstance(batch, tuple) else batch
            chunks.append(extractor(images))
            if kept_count < keep_images:
                take = to_uint8(images[:keep_images - kept_count])
                kept.append(take)
                kept_count += len(take)
            bar.update(len(images))
    features = np.concatenate(chunks) if chunks else np.zeros((0, extractor.feature_dim), np.float32)
    kept_images = np.concatenate(kept) if kept else np.zeros((0, 1, 1, 3), np.uint8)
    return features.astype(np.float32, copy=False), kept_images


@dataclasses.dataclass
class FeatureSet:
    """Features of the images of one source, row i belonging to ``files[i]``.

    Attributes:
        features: float32 (N, D).
        files: image paths (empty for in-memory images).
        labels: int32 class ids (N,).
        classes: class names.
        source: where the images came from.
        image_size: side the images were read at before the extractor's resize.
        extractor: the extractor's name.
        from_cache: True when loaded from the feature cache.
    """

    features: np.ndarray
    files: list[str]
    labels: np.ndarray
    classes: list[str]
    source: str
    image_size: int
    extractor: str
    from_cache: bool = False

    def __len__(self) -> int:
        return len(self.features)


def _files_fingerprint(files: Sequence[str]) -> str:
    digest = hashlib.sha1()
    for path in files:
        try:
            info = os.stat(path)
            digest.update(f"{os.path.abspath(path)}|{info.st_size}|{info.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{os.path.abspath(path)}|missing\n".encode())
    return digest.hexdigest()


class FeatureCache:
    """Feature arrays on disk, one ``.npz`` (+ a readable ``.json``) per key.

    Args:
        directory: cache folder (default :func:`default_cache_dir`).

    Example:
        >>> cache = FeatureCache("/tmp/features")                         # doctest: +SKIP
        >>> key = cache.key(source="pbc128/val", image_size=64)           # doctest: +SKIP
        >>> cache.load(key) is None                                       # doctest: +SKIP
        True
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    @staticmethod
    def key(**parts: Any) -> str:
        return hashlib.sha1(json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True,
                                       default=str).encode()).hexdigest()[:24]

    def path(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {name: archive[name] for name in archive.files}
        except (OSError, ValueError, EOFError):  # a damaged file is recomputed, not trusted
            return None

    def save(self, key: str, arrays: dict[str, np.ndarray], description: dict[str, Any]) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        handle, temporary = tempfile.mkstemp(dir=self.directory, suffix=".npz.tmp")
        os.close(handle)
        try:
            with open(temporary, "wb") as file:
                np.savez(file, **arrays)
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        from cellgen.runs import write_json

        write_json(path.with_suffix(".json"), description)
        return path


def features_of_source(source, extractor: FeatureExtractor, image_size: int, crop=None, class_filter=None,
                       batch_size: int = 64, workers: int = 2, on_error: str = "raise",
                       cache: FeatureCache | None = None, progress: bool = True,
                       description: str = "real features") -> FeatureSet:
    """Features of every image of a folder/CSV source, read with the DataReader at ``image_size``.

    With ``cache``, the result is stored under a key made of the source path, its file
    list (names, sizes and modification times), ``image_size``, ``crop``, ``class_filter``
    and the extractor's fingerprint, and loaded from there the next time.
    """
    from cellgen.data import DataReader

    reader = DataReader(source, image_size=image_size, crop=crop, batch_size=batch_size, shuffle=False,
                        class_filter=class_filter, on_error=on_error, workers=workers)
    files = reader.files
    key = None
    if cache is not None:
        key = cache.key(source=os.path.abspath(os.fspath(source)), files=_files_fingerprint(files),
                        image_size=image_size, crop=crop, class_filter=class_filter,
                        extractor=extractor.fingerprint())
        stored = cache.load(key)
        if stored is not None and len(stored["features"]) == len(files):
            return FeatureSet(stored["features"], files, reader.labels, list(reader.classes), os.fspath(source),
                              image_size, extractor.name, from_cache=True)
    features, _ = extract_features(extractor, reader.epoch(0), total=reader.num_images,
                                   description=description, progress=progress)
    if cache is not None:
        cache.save(key, {"features": features, "labels": reader.labels}, {
            "source": os.path.abspath(os.fspath(source)), "images": len(files), "image_size": image_size,
            "crop": crop, "class_filter": class_filter, "extractor": extractor.describe()})
    return FeatureSet(features, files, reader.labels, list(reader.classes), os.fspath(source), image_size,
                      extractor.name)


def read_files(paths: Sequence[str], image_size: int, crop=None, workers: int = 2) -> np.ndarray:
    """Reads chosen image files through the DataReader pipeline (crop, resize) as uint8 (N, S, S, 3)."""
    from cellgen.data import DataReader
    from cellgen.images import to_uint8

    if not paths:
        return np.zeros((0, image_size, image_size, 3), np.uint8)
    unique = list(dict.fromkeys(os.path.abspath(path) for path in paths))
    with tempfile.TemporaryDirectory(prefix="cellgen-files-") as folder:
        listing = Path(folder) / "files.csv"
        with open(listing, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "label"])
            writer.writerows([path, "image"] for path in unique)
        reader = DataReader(listing, image_size=image_size, crop=crop, batch_size=64, shuffle=False,
                            workers=workers)
        images, _ = reader.load_all()
    by_path = dict(zip(unique, to_uint8(images)))
    return np.stack([by_path[os.path.abspath(path)] for path in paths])


def pixels_of_source(source, image_size: int, crop=None, class_filter=None, batch_size: int = 256,
                     workers: int = 2, progress: bool = True) -> tuple[np.ndarray, list[str]]:
    """Every image of a source as uint8 (N, S, S, 3) at ``image_size`` (for pixel-space distances)."""
    from tqdm import tqdm

    from cellgen.data import DataReader
    from cellgen.images import to_uint8

    reader = DataReader(source, image_size=image_size, crop=crop, batch_size=batch_size, shuffle=False,
                        class_filter=class_filter, workers=workers)
    pixels = np.empty((reader.num_images, image_size, image_size, 3), np.uint8)
    position = 0
    with tqdm(total=reader.num_images, desc="training pixels", unit="img", disable=not progress,
              leave=False) as bar:
        for images, _ in reader.epoch(0):
            pixels[position:position + len(images)] = to_uint8(images)
            position += len(images)
            bar.update(len(images))
    return pixels, reader.files
