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

FIXED_ON_RESUME = ("image_size", "generator", "generator_epoch", "depth", "dropout")


def build_parser() -> argparse.ArgumentParser:
    from cellgen.config import add_common_arguments, add_run_arguments

    parser = argparse.ArgumentParser(prog="train_latent_encoder.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    parser.add_argument("--generator", metavar="RUN", help="trained vanilla_gan run whose generator stays frozen")
    parser.add_argument("--generator-epoch", type=int, help="saved epoch of the generator run (default: latest)")
    add_run_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace):
    """The run's config; a new run takes ``image_size`` from the generator run unless ``--size`` is given."""
    from cellgen.config import parse_set_options, require_fields, resumable_config
    from cellgen.latent.encoder import LatentEncoderConfig

    flags = {"generator": args.generator, "generator_epoch": args.generator_epoch}
    config, resumed = resumable_config(LatentEncoderConfig, args, flags, FIXED_ON_RESUME)
    if resumed:
        return config
    require_fields(config, generator="no generator: pass --generator VANILLA_GAN_RUN")
    size_given = args.size is not None or "image_size" in parse_set_options(args.set or [])
    if not size_given:
        from cellgen.gan.sampling import load_gan_config

        config = config.replace(image_size=load_gan_config(config.generator).image_size)
    require_fields(config, data="no training data: pass --data DIR", out="no run directory: pass --out DIR")
    return config


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.latent.encoder import train

    config = resolve_config(args)
    train(config, resume=args.resume, verbose=2 if args.quiet else 1)
    return 0
