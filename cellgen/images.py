"""Image file I/O and pixel-range conversions shared by every stage.

cellgen keeps images as float32 NHWC arrays in [-1, 1] inside models, and as
uint8 RGB on disk. OpenCV is used for decoding because it is fast and handles
16-bit PNGs; file bytes are read through NumPy so that non-ASCII paths work on
every platform (``cv2.imread`` fails on them on Windows).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
    """An image file could not be decoded; the message names the file."""


def is_image_file(path: str | os.PathLike) -> bool:
    """True when the file name has one of the image extensions cellgen reads."""
    return str(path).lower().endswith(IMAGE_EXTENSIONS)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file as uint8 RGB (H, W, 3).

    Grayscale is replicated to three channels, an alpha channel is composited
    on white (a transparent background is the slide background, not black),
    and 16-bit images are scaled to 8 bits.

    Raises:
        ImageReadError: the file is missing, empty, truncated or not an image.
    """
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as error:
        raise ImageReadError(f"{path}: cannot read file ({error.strerror or error})") from None
    return decode_rgb(data, path)


def decode_rgb(data: np.ndarray | bytes, source: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decodes encoded image bytes (JPEG, PNG, ...) to uint8 RGB (H, W, 3).

    The conversions are those of :func:`read_rgb` (which reads the file and
    calls this): grayscale is replicated, alpha is composited on white and
    16-bit samples are scaled to 8 bits. Useful when the bytes come from a
    record file rather than from an image file.

    Args:
        data: the encoded file content, as bytes or a uint8 array.
        source: the name used in error messages (a path or a record name).

    Raises:
        ImageReadError: the bytes are empty, truncated or not an image.
    """
    path = source  # the name shown in error messages
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(data, dtype=np.uint8)
    if data.size == 0:
        raise ImageReadError(f"{path}: file is empty (0 bytes)")
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    if image.dtype == np.uint16:
        image = (image.astype(np.float32) / 257.0 + 0.5).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    channels = image.shape[2]
    if channels == 1:
        return cv2.cvtColor(image[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 4:
        colour = image[:, :, :3].astype(np.float32)
        alpha = image[:, :, 3:4].astype(np.float32) / 255.0
        composited = colour * alpha + 255.0 * (1.0 - alpha)
        return cv2.cvtColor(np.clip(composited + 0.5, 0, 255).astype(np.uint8), cv2.COLOR_BGR2RGB)
    if channels == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    raise ImageReadError(f"{path}: unsupported channel count {channels}")


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Writes a uint8 RGB (H, W, 3) or grayscale image; the format follows the suffix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise TypeError(f"write_rgb expects uint8 pixels, got {image.dtype}; use to_uint8() first")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode this file type")
    encoded.tofile(str(path))


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Maps model images in [-1, 1] to uint8 [0, 255] (values outside are clipped)."""
    images = np.asarray(images, dtype=np.float32)
    return np.clip(np.rint(images * 127.5 + 127.5), 0, 255).astype(np.uint8)


def from_uint8(images: np.ndarray) -> np.ndarray:
    """Maps uint8 pixels to float32 in [-1, 1] with (p - 127.5) / 127.5 (K&C section 4.2)."""
    return (np.asarray(images, dtype=np.float32) - 127.5) / 127.5
