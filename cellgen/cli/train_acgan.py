"""``train_acgan.py``: the AC-GAN of Klang & Carlberg (2020) on a frozen Vanilla-GAN; run kind ``acgan``.

Examples:
    python train_acgan.py --config kc2020_acgan --backbone runs/gan --data ../shared/data/pbc128/train --out runs/acgan
    python train_acgan.py --config acgan_fast --backbone runs/gan-fast --data DIR --out runs/acgan-fast
    python train_acgan.py --config kc2020_acgan --backbone runs/gan --data DIR --out runs/acgan-scratch \\
        --set freeze_backbone=false          # K&C's from-scratch comparison
    python train_acgan.py --config acgan_fast --backbone runs/gan-fast --data DIR --out runs/acgan-aug \\
        --set augment=color,translation,cutout   # DiffAugment on the discriminator's inputs
    python train_acgan.py --out runs/acgan --resume --epochs 3
    python generate.py --run runs/acgan --per-class 100 --out synth   # one folder per class

The image and latent sizes follow the backbone run unless --size (or --set latent_dim=N)
is given, which must then agree with it. The number of classes comes from --data. The run
directory gets the resolved config, classes.json, resumable checkpoints, a class grid per
epoch in samples/ (one row per class, fixed latents), the networks in models/,
logs/history.csv + TensorBoard and metrics/.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import base_run_options, run_trainer, training_parser


def build_parser() -> argparse.ArgumentParser:
    return training_parser("train_acgan.py", __doc__,
                           stage_options=base_run_options("backbone", "trained vanilla_gan run to build on"))


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    return run_trainer(args, "cellgen.gan.acgan_train", backbone=args.backbone, backbone_epoch=args.backbone_epoch)
