"""Class lists: ``classes.json`` files (:func:`save_classes`, :func:`load_classes`) and their checks."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from cellgen.data.errors import DataError

UNLABELLED_CLASS = "unlabelled"
CLASSES_FILE_NAME = "classes.json"


def save_classes(path: str | os.PathLike, classes: Sequence[str]) -> Path:
    """Writes a class list as ``classes.json`` (a JSON list of names, index = class id).

    Args:
        path: the JSON file to write (parent folders are created).
        classes: class names in id order.

    Returns:
        The path written.
    """
    names = _check_class_names(classes, "classes")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(names, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def load_classes(path: str | os.PathLike) -> list[str]:
    """Reads a class list written by :func:`save_classes`.

    Raises:
        DataError: the file is missing, not JSON, or not a list of unique non-empty names.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: classes file not found") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read classes file ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not a JSON classes file ({error})") from None
    return _check_class_names(data, str(path))


def _check_class_names(names, what: str) -> list[str]:
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise DataError(f"{what}: expected a list of class names, got {type(names).__name__}")
    names = list(names)
    if not names:
        raise DataError(f"{what}: the class list is empty")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise DataError(f"{what}: class names must be non-empty strings, got {name!r}")
    duplicates = sorted(name for name, count in Counter(names).items() if count > 1)
    if duplicates:
        raise DataError(f"{what}: duplicate class name(s): {', '.join(duplicates)}")
    return names
