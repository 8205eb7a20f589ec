"""``train_cvae.py``: train the convolutional (conditional) VAE of Matos (2025), run kind ``cvae``.

Examples:
    python train_cvae.py --config matos2025_cvae28 --data ../shared/data/pbc128/train --out runs/cvae28
    python train_cvae.py --config matos2025_cvae28 --data DIR --out runs/cvae28 --set kl_weight=1 --set latent_dim=32
    python train_cvae.py --out runs/cvae28 --resume --epochs 150      # continue (or extend) a run

The run directory gets the resolved config, classes.json, resumable checkpoints
(encoder, decoder, optimizer), sample grids (one row per class), a reconstruction
grid, logs/history.csv + TensorBoard, a loss-curve PNG and metrics/train.json;
``models/decoder.keras`` is what ``generate.py`` samples from.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import run_trainer, training_parser


def build_parser() -> argparse.ArgumentParser:
    return training_parser("train_cvae.py", __doc__)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    return run_trainer(args, "cellgen.vae.train_lib")
