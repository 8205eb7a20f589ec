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
from cellgen.cli.options import add_common_arguments, add_run_arguments, request_from_args, verbosity


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train_acgan.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--backbone", metavar="RUN", help="trained vanilla_gan run to build on")
    parser.add_argument("--backbone-epoch", type=int, help="saved epoch of the backbone (default: latest)")
    add_run_arguments(parser)
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.gan.acgan_train import resolve_config, train

    request = request_from_args(args, backbone=args.backbone, backbone_epoch=args.backbone_epoch)
    train(resolve_config(request), resume=request.resume, verbose=verbosity(args))
    return 0
