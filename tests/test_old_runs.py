"""Run directories written before the shared training loop (issue 15) still generate images.

``tests/fixtures/old_runs/`` was written by the per-stage loops of the previous code
(``python -m tests.golden_runs record``); only what generation reads was kept.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from cellgen.cli.generate import main as generate_main
from cellgen.images import read_rgb
from tests.golden_runs import OLD_RUNS


@pytest.mark.parametrize("name, options", [("ddim", ["--steps", "2"]), ("gan", []), ("acgan", ["--per-class", "1"]),
                                           ("cvae", ["--per-class", "1"])])
def test_an_old_run_generates_images(tmp_path, name, options):
    run = tmp_path / name
    shutil.copytree(OLD_RUNS / name, run)  # read-only fixtures stay untouched
    out = tmp_path / "images"
    count = [] if "--per-class" in options else ["--n", "2"]
    assert generate_main(["--run", str(run), "--out", str(out), *count, *options, "--quiet"]) == 0
    files = sorted(out.rglob("*.png"))
    assert len(files) >= 2
    image = read_rgb(files[0])
    assert image.ndim == 3 and image.shape[-1] == 3 and np.ptp(image) > 0
