"""Backwards-compatible name of :mod:`cellgen.data` (the reader was one module before issue 15).

Everything public is re-exported from the package; new code imports ``cellgen.data``.
"""

from cellgen.data import *  # noqa: F401,F403
from cellgen.data import __all__  # noqa: F401
# Private helpers that benchmarks (bench/bench_reader.py) import from the old module.
from cellgen.data.pixels import _center_crop, _decode_entry, _resize  # noqa: F401
