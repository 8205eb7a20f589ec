"""One entry of a source (:class:`_Entry`: a file or a TFDS record) and the cheap per-file checks and reads."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

import numpy as np

from cellgen.data.errors import BadFileError


@dataclass(frozen=True)
class _Entry:
    key: str  # file path (or TFDS record name): what lists and messages show
    class_name: str
    origin: str = ""  # e.g. "line 7 of labels.csv"
    record: int = -1  # TFDS record number


def _read_file_bytes(entry: _Entry) -> np.ndarray:
    try:
        return np.fromfile(entry.key, dtype=np.uint8)
    except FileNotFoundError:
        raise BadFileError(entry.key, "file not found", entry.origin) from None
    except IsADirectoryError:
        raise BadFileError(entry.key, "is a directory, not an image file", entry.origin) from None
    except PermissionError:
        raise BadFileError(entry.key, "permission denied", entry.origin) from None
    except OSError as error:
        raise BadFileError(entry.key, f"cannot read file ({error.strerror or error})", entry.origin) from None


def _file_problem(path: str) -> str | None:
    """Cheap checks done for every file when the reader is built (no decoding)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as error:
        return f"cannot access file ({error.strerror or error})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "file is empty (0 bytes)"
    if not os.access(path, os.R_OK):
        return "permission denied"
    return None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")
