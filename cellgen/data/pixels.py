"""The pixel pipeline of one image: decode, center crop, resize (and the one-pass :func:`_inspect`)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from cellgen.data.entries import _Entry
from cellgen.data.errors import BadFileError
from cellgen.images import ImageReadError, decode_rgb


def _crop_side(crop: int | float, height: int, width: int) -> int:
    if isinstance(crop, int):
        return crop
    return max(1, int(round(crop * min(height, width))))


def _center_crop(image: np.ndarray, crop, entry: _Entry) -> np.ndarray:
    if crop is None:
        return image
    height, width = image.shape[:2]
    side = _crop_side(crop, height, width)
    if side > height or side > width:
        raise BadFileError(entry.key, f"image is {width}x{height} px, smaller than the {side} px crop",
                           entry.origin)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def _resize(image: np.ndarray, size_hw: tuple[int, int] | None) -> np.ndarray:
    height, width = image.shape[:2]
    if size_hw is None or (height, width) == tuple(size_hw):
        return np.ascontiguousarray(image)
    target_h, target_w = size_hw
    shrinking = target_h <= height and target_w <= width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (target_w, target_h), interpolation=interpolation)


def _decode_entry(source, entry: _Entry) -> np.ndarray:
    data = source.read_bytes(entry)
    try:
        return decode_rgb(data, entry.key)
    except ImageReadError as error:
        reason = str(error)
        if reason.startswith(f"{entry.key}: "):
            reason = reason[len(entry.key) + 2:]
        raise BadFileError(entry.key, reason, entry.origin) from None


@dataclass
class _Inspection:
    error: BadFileError | None = None
    native_hw: tuple[int, int] | None = None
    cropped_hw: tuple[int, int] | None = None
    image: np.ndarray | None = None


def _inspect(source, entry: _Entry, crop, size_hw, keep_image: bool) -> _Inspection:
    """Decodes and crops one entry (and resizes it when size_hw is given); keeps the result if asked."""
    try:
        image = _decode_entry(source, entry)
        cropped = _center_crop(image, crop, entry)
        prepared = _resize(cropped, size_hw) if keep_image or size_hw is not None else None
        return _Inspection(None, image.shape[:2], cropped.shape[:2], prepared if keep_image else None)
    except BadFileError as error:
        return _Inspection(error)

def _size_text(height_width) -> str:
    height, width = height_width
    return f"{width}x{height}"
