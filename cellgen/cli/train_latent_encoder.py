"""``train_latent_encoder.py``: train the image-to-latent encoder of Klang & Carlberg (2020), section 4.6.

The encoder E (shaped like the Vanilla-GAN discriminator, 100-dimensional linear
output) is trained so that G(E(x)) reconstructs x under an L1 loss while the
generator G of a ``vanilla_gan`` run stays frozen. Run kind ``latent_encoder``.

Examples:
    python train_latent_encoder.py --generator runs/gan --data ../shared/data/pbc128/train --out runs/encoder
    python train_latent_encoder.py --generator runs/gan-fast --data DIR --out runs/enc --size 32 --set learning_rate=1e-4
    python train_latent_encoder.py --out runs/encoder --resume --epochs 20
    python explore_latent.py reconstruct --encoder runs/encoder --images a.jpg b.jpg --out pairs.png

--size defaults to the generator run's image size.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import base_run_options, run_trainer, training_parser


def build_parser() -> argparse.ArgumentParser:
    return training_parser("train_latent_encoder.py", __doc__, stage_options=base_run_options(
        "generator", "trained vanilla_gan run whose generator stays frozen"))


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    return run_trainer(args, "cellgen.latent.train_lib", generator=args.generator, generator_epoch=args.generator_epoch)
