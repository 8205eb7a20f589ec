"""``train_acgan.py``: the AC-GAN of Klang & Carlberg (2020) on a frozen Vanilla-GAN; run kind ``acgan``.

Examples:
    python train_acgan.py --config kc2020_acgan --backbone runs/gan --data ../shared/data/pbc128/train --out runs/acgan
    python train_acgan.py --config acgan_fast --backbone runs/gan-fast --data DIR --out runs/acgan-fast
    python train_acgan.py --config kc2020_acgan --backbone runs/gan --data DIR --out runs/acgan-scratch \\
        --set freeze_backbone=false          # K&C's from-scratch comparison
    python train_acgan.py --out runs/acgan --resume --epochs 3
    python generate.py --run runs/acgan --per-class 100 --out synth   # one folder per class

The number of classes comes from --data. The run directory gets the resolved config,
classes.json, resumable checkpoints, a class grid per epoch in samples/ (one row per class,
fixed latents), the networks in models/, logs/history.csv + TensorBoard and metrics/.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded

# Fields a resumed run keeps from its saved config.
FIXED_ON_RESUME = ("image_size", "latent_dim", "backbone", "backbone_epoch", "freeze_backbone", "head_layers",
                   "head_units", "generator_head_output")


def build_parser() -> argparse.ArgumentParser:
    from cellgen.config import add_common_arguments, add_run_arguments

    parser = argparse.ArgumentParser(prog="train_acgan.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--backbone", metavar="RUN", help="trained vanilla_gan run to build on")
    parser.add_argument("--backbone-epoch", type=int, help="saved epoch of the backbone (default: latest)")
    add_run_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace):
    """The run's config: preset, ``--set``, flags; on ``--resume`` the saved config plus overrides."""
    from cellgen.config import require_fields, resumable_config
    from cellgen.gan.acgan_config import ACGANConfig

    flags = {"backbone": args.backbone, "backbone_epoch": args.backbone_epoch}
    config, _ = resumable_config(ACGANConfig, args, flags, FIXED_ON_RESUME)
    require_fields(config, backbone="no backbone: pass --backbone VANILLA_GAN_RUN",
                   data="no training data: pass --data DIR", out="no run directory: pass --out DIR")
    return config


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.gan.acgan import train

    config = resolve_config(args)
    train(config, resume=args.resume, verbose=2 if args.quiet else 1)
    return 0
