"""The data errors: :class:`DataError` (bad input or option) and :class:`BadFileError` (one file)."""

from __future__ import annotations


class DataError(ValueError):
    """Bad input data or a bad reader option. The one-line message names the file or option."""


class BadFileError(DataError):
    """One image file (or record) cannot be used.

    Attributes:
        path: the file path (or TFDS record name).
        reason: what is wrong with it, without the path.
    """

    def __init__(self, path: str, reason: str, origin: str = ""):
        self.path = path
        self.reason = reason
        where = f" ({origin})" if origin else ""
        super().__init__(f"{path}: {reason}{where}")
