"""``explore_latent.py``: latent-space experiments of Klang & Carlberg (2020), sections 4.6 and 5.3.

Subcommands (each writes a PNG strip or grid to --out, and with --save-images DIR each image):

    reconstruct   real images next to their reconstructions G(E(x))
    interpolate   G(z^_k), z^_k = z1 + (z2 - z1) k / n, k = 0..n (equation 40), between the latents
                  of two real images (--images A B, encoded by E; the real images frame the strip)
                  or two random latents (--seeds S1 S2)
    perturb       G(z~ + eps), eps ~ N(0, sigma^2 I) (equation 42, sigma^2 = 0.04 by default) around the
                  reconstructing latent z~ = E(x) of each image; rows: real, G(z~), perturbations

Examples:
    python explore_latent.py reconstruct --encoder runs/encoder --images a.jpg b.jpg --out pairs.png
    python explore_latent.py reconstruct --encoder runs/encoder --data ../shared/data/pbc128/val --n 8 --out pairs.png
    python explore_latent.py interpolate --encoder runs/encoder --images A.jpg B.jpg --steps 8 --out strip.png
    python explore_latent.py interpolate --generator runs/gan --seeds 1 2 --steps 8 --out strip.png
    python explore_latent.py perturb --encoder runs/encoder --images a.jpg --count 5 --sigma2 0.04 --out grid.png \\
        --save-images perturbed/
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cellgen.cli.common import guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="explore_latent.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, generator_allowed: bool = False) -> None:
        source = sub.add_mutually_exclusive_group(required=True)
        source.add_argument("--encoder", metavar="RUN", help="latent_encoder run (its generator run decodes)")
        if generator_allowed:
            source.add_argument("--generator", metavar="RUN", help="vanilla_gan run (with --seeds; no encoder needed)")
        sub.add_argument("--epoch", type=int, default=None, help="saved epoch of the encoder (default: latest)")
        sub.add_argument("--out", required=True, help="PNG file to write")
        sub.add_argument("--save-images", metavar="DIR", help="also write every image of the strip/grid here")

    reconstruct = commands.add_parser("reconstruct", help="real images next to G(E(x))")
    common(reconstruct)
    images = reconstruct.add_mutually_exclusive_group(required=True)
    images.add_argument("--images", nargs="+", metavar="FILE", help="image files")
    images.add_argument("--data", metavar="DIR", help="a data folder: its first --n images (file order)")
    reconstruct.add_argument("--n", type=int, default=8, help="images taken from --data")

    interpolate = commands.add_parser("interpolate", help="linear interpolation between two latents (eq. 40)")
    common(interpolate, generator_allowed=True)
    ends = interpolate.add_mutually_exclusive_group(required=True)
    ends.add_argument("--images", nargs=2, metavar=("A", "B"), help="two real images (needs --encoder)")
    ends.add_argument("--seeds", nargs=2, type=int, metavar=("S1", "S2"), help="two random latents N(0, I)")
    interpolate.add_argument("--steps", type=int, default=8, help="n: the strip shows G(z^_0) .. G(z^_n)")

    perturb = commands.add_parser("perturb", help="G(E(x) + eps), eps ~ N(0, sigma^2 I) (eq. 42)")
    common(perturb)
    perturb.add_argument("--images", nargs="+", required=True, metavar="FILE", help="image files")
    perturb.add_argument("--count", type=int, default=5, help="perturbations per image (K&C Figure 19: 5)")
    perturb.add_argument("--sigma2", type=float, default=0.04, help="noise variance sigma^2 (K&C: 0.04)")
    perturb.add_argument("--seed", type=int, default=0)
    return parser


def _load(args):
    """(encoder or None, generator, image_size, crop, latent_dim)."""
    from cellgen.data import crop_option

    if getattr(args, "encoder", None):
        from cellgen.latent.sampling import load_encoder_run

        encoder, generator, config = load_encoder_run(args.encoder, args.epoch)
        return encoder, generator, config.image_size, crop_option(config.crop), int(generator.input_shape[-1])
    from cellgen.gan.sampling import load_gan_models

    generator, _, gan_config = load_gan_models(args.generator)
    return None, generator, gan_config.image_size, crop_option(gan_config.crop), gan_config.latent_dim


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    import numpy as np

    from cellgen.config import ConfigError
    from cellgen.gan.vanilla import fixed_latents, generate_images
    from cellgen.latent.explore import interpolate_latents, load_image_files, perturb_latents, save_strip
    from cellgen.latent.sampling import reconstruct

    if args.command == "interpolate" and args.images and not args.encoder:
        raise ConfigError("interpolate --images needs --encoder RUN (real images are encoded first)")
    if args.command == "interpolate" and args.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {args.steps}")
    if args.command == "perturb" and (args.count < 0 or args.sigma2 < 0):
        raise ConfigError(f"--count and --sigma2 must be >= 0, got {args.count} and {args.sigma2}")
    if args.command == "reconstruct" and args.data and args.n < 1:
        raise ConfigError(f"--n must be >= 1, got {args.n}")
    encoder, generator, image_size, crop, latent_dim = _load(args)
    save_dir = args.save_images

    def decode(latents):
        return np.clip(generate_images(generator, np.asarray(latents, np.float32)), -1.0, 1.0)

    if args.command == "reconstruct":
        if args.images:
            real = load_image_files(args.images, image_size, crop)
            names = [Path(path).stem for path in args.images]
        else:
            from cellgen.data import DataReader

            reader = DataReader(args.data, image_size=image_size, crop=crop, batch_size=args.n, shuffle=False)
            real = next(iter(reader.epoch(0)))[0]
            names = [Path(path).stem for path in reader.files[:len(real)]]
        _, reconstructed = reconstruct(encoder, generator, real)
        pairs = np.stack([real, reconstructed], axis=1).reshape((-1,) + real.shape[1:])
        path = save_strip(pairs, args.out, columns=2, row_labels=names, title="real | G(E(x))",
                          individual_dir=save_dir, prefix="pair")
        print(f"mean L1 |x - G(E(x))| = {float(np.mean(np.abs(real - reconstructed))):.4f}")
    elif args.command == "interpolate":
        if args.images:
            real = load_image_files(args.images, image_size, crop)
            latents, _ = reconstruct(encoder, generator, real)
            z1, z2 = latents
        else:
            z1, z2 = fixed_latents(1, latent_dim, args.seeds[0])[0], fixed_latents(1, latent_dim, args.seeds[1])[0]
        strip = decode(interpolate_latents(z1, z2, args.steps))
        if save_dir is not None:
            save_strip(strip, Path(save_dir) / "strip.png", columns=len(strip), individual_dir=save_dir,
                       prefix="step")
        if args.images:
            # The real images frame the interpolation of their reconstructions.
            strip = np.concatenate([real[:1], strip, real[1:]])
        path = save_strip(strip, args.out, columns=len(strip),
                          title=f"{args.steps}-step interpolation" + (" (real images at the ends)" if args.images else ""))
    else:
        real = load_image_files(args.images, image_size, crop)
        latents, reconstructed = reconstruct(encoder, generator, real)
        rows = []
        for index, latent in enumerate(latents):
            perturbed = decode(perturb_latents(latent, args.count, args.sigma2, seed=args.seed + index))
            rows.append(np.concatenate([real[index:index + 1], reconstructed[index:index + 1], perturbed]))
        grid = np.concatenate(rows)
        path = save_strip(grid, args.out, columns=args.count + 2, row_labels=[Path(p).stem for p in args.images],
                          title=f"real | G(E(x)) | G(E(x) + eps), sigma^2 = {args.sigma2}",
                          individual_dir=save_dir, prefix="perturb")
    print(f"wrote {path}")
    return 0
