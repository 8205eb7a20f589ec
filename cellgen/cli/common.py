"""Shared plumbing of the per-stage scripts: error reporting and run set-up.

Scripts print a one-line ``error: ...`` on stderr and exit with status 2 for bad
input (files, options, configs; also running out of memory for the sizes asked for),
3 when training stopped on a NaN loss, and 130 on Ctrl-C; a traceback is only shown
with ``CELLGEN_DEBUG=1``.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable, Sequence

# Moved to cellgen.data (issue 15); re-exported until the imports are swept.
from cellgen.data import crop_option  # noqa: F401

EXIT_BAD_INPUT = 2
EXIT_NON_FINITE = 3


def _expected_errors() -> tuple[type[BaseException], ...]:
    from cellgen.config import ConfigError
    from cellgen.distribute import StrategyError
    from cellgen.images import ImageReadError
    from cellgen.runs import RunError

    errors: list[type[BaseException]] = [ConfigError, StrategyError, ImageReadError, RunError,
                                         FileNotFoundError, NotADirectoryError, PermissionError]
    try:
        from cellgen.data_reader import DataError

        errors.append(DataError)
    except ImportError:
        pass
    return tuple(errors)


def guarded(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wraps a script's ``main(argv)`` so expected failures become one-line errors."""

    @functools.wraps(main)
    def wrapper(argv: Sequence[str] | None = None) -> int:
        if os.environ.get("CELLGEN_DEBUG"):
            return main(argv)
        try:
            return main(argv)
        except KeyboardInterrupt:
            print("interrupted; resume with --resume", file=sys.stderr)
            return 130
        except Exception as error:
            # Imported only on failure: they pull in TensorFlow, which --help should not wait for.
            from cellgen.runs import NonFiniteLossError

            if isinstance(error, NonFiniteLossError):
                print(f"error: {error}", file=sys.stderr)
                return EXIT_NON_FINITE
            if isinstance(error, MemoryError) or type(error).__name__ == "ResourceExhaustedError":
                detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
                print(f"error: out of memory ({detail}); try a smaller --batch-size or --size",
                      file=sys.stderr)
                return EXIT_BAD_INPUT
            if not isinstance(error, _expected_errors()):
                raise
            message = str(error).strip() or type(error).__name__
            if isinstance(error, OSError) and getattr(error, "filename", None) and error.filename not in message:
                message = f"{error.filename}: {message}"
            print(f"error: {message}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return wrapper
