"""Error types of the evaluation stage.

Both derive from :class:`cellgen.data.DataError`, so the scripts'
``guarded`` wrapper prints them as a one-line ``error: ...`` (exit status 2).
"""

from __future__ import annotations

from cellgen.data import DataError


class EvaluationError(DataError):
    """Bad evaluation input: an answer sheet, a kit, an extractor file or a feature set.

    The message names the file or option at fault.
    """


class MetricError(EvaluationError, ArithmeticError):
    """A metric cannot be computed reliably (e.g. a matrix square root with a large imaginary part)."""
