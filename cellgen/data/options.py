"""Checks of the reader's options (one-line :class:`DataError` naming the option) and :func:`crop_option`."""

from __future__ import annotations

import numbers
from typing import Sequence

from cellgen.data.errors import DataError

ON_ERROR_CHOICES = ("raise", "skip")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_int(value, option: str, minimum: int) -> int:
    if not _is_int(value) or value < minimum:
        raise DataError(f"{option} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_image_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if _is_int(image_size) and image_size > 0:
        return int(image_size), int(image_size)
    if (isinstance(image_size, (tuple, list)) and len(image_size) == 2
            and all(_is_int(side) and side > 0 for side in image_size)):
        return int(image_size[0]), int(image_size[1])
    raise DataError(f"image_size must be None, a positive int or (height, width), got {image_size!r}")


def _check_crop(crop) -> int | float | None:
    if crop is None:
        return None
    if _is_int(crop):
        if crop > 1:
            return int(crop)
    elif _is_real(crop) and 0 < crop <= 1:
        return float(crop)
    raise DataError(f"crop must be an int > 1 (pixels) or a float in (0, 1] "
                    f"(fraction of the shorter side), got {crop!r}")


def _check_choice(value, option: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise DataError(f"{option} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def _check_known(names, option: str, classes: list[str]):
    for name in names:
        if name not in classes:
            raise DataError(f"{option}: unknown class {name!r} (classes: {', '.join(classes)})")


def _check_class_filter(class_filter, classes: list[str]) -> list[int]:
    if class_filter is None:
        return list(range(len(classes)))
    names = [class_filter] if isinstance(class_filter, str) else class_filter
    if not isinstance(names, (list, tuple, set, frozenset)) or not names:
        raise DataError(f"class_filter must be a class name or a non-empty list of names, got {class_filter!r}")
    _check_known(names, "class_filter", classes)
    return sorted(classes.index(name) for name in set(names))


def _class_items(mapping, option: str, what: str, classes: list[str]) -> list[tuple[int, str, object]]:
    """``(class id, class name, value)`` of an option that maps class names to values (None: none)."""
    if mapping is None:
        return []
    if not isinstance(mapping, dict):
        raise DataError(f"{option} must be a dict class -> {what}, got {mapping!r}")
    _check_known(mapping, option, classes)
    return [(classes.index(name), name, value) for name, value in mapping.items()]


def _check_class_limits(class_limits, classes: list[str]) -> dict[int, int | float]:
    limits = {}
    for index, name, limit in _class_items(class_limits, "class_limits", "count or fraction", classes):
        if _is_int(limit) and limit >= 1:
            limits[index] = int(limit)
        elif _is_real(limit) and not _is_int(limit) and 0 < limit <= 1:
            limits[index] = float(limit)
        else:
            raise DataError(f"class_limits[{name!r}] must be a count >= 1 or a fraction in (0, 1], got {limit!r}")
    return limits


def _check_oversample(oversample, classes: list[str]) -> dict[int, int]:
    targets = {}
    for index, name, target in _class_items(oversample, "oversample", "target count", classes):
        if not _is_int(target) or target < 1:
            raise DataError(f"oversample[{name!r}] must be a target count >= 1, got {target!r}")
        targets[index] = int(target)
    return targets


def crop_option(crop: float) -> int | float | None:
    """Config ``crop`` (0 = none, > 1 = pixels, (0, 1] = fraction) as the reader's argument."""
    if not crop:
        return None
    return int(crop) if crop > 1 else float(crop)
