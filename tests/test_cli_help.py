"""Every per-stage script answers ``--help`` without importing TensorFlow (which takes seconds)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(path.name for path in ROOT.glob("*.py") if path.name not in ("setup.py", "conftest.py"))

# Runs the script as __main__ with --help, then reports whether TensorFlow or Keras got imported.
PROBE = """
import runpy, sys
sys.argv = [{script!r}, "--help"]
try:
    runpy.run_path({path!r}, run_name="__main__")
except SystemExit as stop:
    code = stop.code
heavy = sorted(name for name in ("tensorflow", "keras") if name in sys.modules)
print("HEAVY=" + ",".join(heavy), "CODE=" + str(code))
"""


def test_every_script_is_listed():
    assert {"train_vanilla_gan.py", "train_ddim.py", "run_study.py", "generate.py",
            "evaluate_classifier.py"} <= set(SCRIPTS)


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_is_fast_and_does_not_import_tensorflow(script):
    path = ROOT / script
    result = subprocess.run([sys.executable, "-c", PROBE.format(script=script, path=str(path))],
                            capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert "usage:" in result.stdout, result.stderr[-2000:]
    last = result.stdout.strip().splitlines()[-1]
    assert last == "HEAVY= CODE=0", f"{script}: {last}"
