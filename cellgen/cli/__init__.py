"""The scripts' logic: one module per script (``train_ddim.py`` runs :func:`cellgen.cli.train_ddim.main`).

Every script imports this package before TensorFlow, so it decides what TensorFlow prints when it
starts: its start-up lines ("oneDNN custom operations are on ...", "WARNING: All log messages
before absl::InitializeLog() is called ...", "This TensorFlow binary is optimized ...") are kept
out of the scripts' output. ``TF_CPP_MIN_LOG_LEVEL=2`` (set by :mod:`cellgen` unless the user set
it) silences TensorFlow's own log; the oneDNN and absl lines ignore it, so while ``tensorflow`` is
first imported the process's stderr goes to a temporary file and comes back without them
(everything else, e.g. warnings and errors, is written out unchanged once the import is done).

The lines are shown with ``--verbose``, ``CELLGEN_VERBOSE=1``, or when the user sets
``TF_CPP_MIN_LOG_LEVEL`` themselves. ``TF_ENABLE_ONEDNN_OPTS`` is never touched: it changes numerics.
The library (``import cellgen``) is not affected by this package.
"""

from __future__ import annotations

import os as _os
import re as _re
import sys as _sys

import cellgen as _cellgen

# Lines TensorFlow prints while it loads (absl's pre-initialisation notice, INFO lines in absl's
# format such as oneDNN's, the CPU-instructions notice, and the CUDA plugins' double registrations).
_STARTUP_LINE = _re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|I\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ \S+:\d+\] "
    r"|.*(This TensorFlow binary is optimized|To enable the following instructions:"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation placer already registered)")


def _verbose() -> bool:
    return (_os.environ.get("CELLGEN_VERBOSE", "").strip() not in ("", "0")
            or "--verbose" in _sys.argv[1:])


def _import_with_filtered_stderr(exec_module, module) -> None:
    import tempfile

    try:
        _sys.stderr.flush()
        saved = _os.dup(2)
    except (OSError, ValueError, AttributeError):  # no usable stderr: nothing to filter
        exec_module(module)
        return
    with tempfile.TemporaryFile() as capture:
        _os.dup2(capture.fileno(), 2)
        try:
            exec_module(module)
        finally:
            try:
                _sys.stderr.flush()
            except (OSError, ValueError):
                pass
            _os.dup2(saved, 2)
            _os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            kept = "".join(line for line in text.splitlines(keepends=True) if not _STARTUP_LINE.match(line))
            if kept:
                _sys.stderr.write(kept)
                _sys.stderr.flush()


class _QuietTensorFlowImport:
    """A one-shot meta path finder: the first ``import tensorflow`` runs with stderr filtered."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        if self in _sys.meta_path:
            _sys.meta_path.remove(self)
        for finder in list(_sys.meta_path):
            find_spec = getattr(finder, "find_spec", None)
            spec = find_spec(name, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is not None and hasattr(loader, "exec_module"):
            exec_module = loader.exec_module
            loader.exec_module = lambda module: _import_with_filtered_stderr(exec_module, module)
        return spec


def _quiet_tensorflow_startup() -> None:
    if _verbose():
        if not _cellgen._TF_LOG_LEVEL_FROM_USER and "tensorflow" not in _sys.modules:
            _os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # TensorFlow's default: everything
        return
    if _cellgen._TF_LOG_LEVEL_FROM_USER:
        return
    _os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" not in _sys.modules and not any(isinstance(finder, _QuietTensorFlowImport)
                                                    for finder in _sys.meta_path):
        _sys.meta_path.insert(0, _QuietTensorFlowImport())


_quiet_tensorflow_startup()
