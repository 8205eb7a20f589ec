"""``generate.py``: write images from any generator run (GAN, AC-GAN, DDIM, CVAE).

Examples:
    python generate.py --run runs/gan --n 500 --out synthetic/neutrophil
    python generate.py --run runs/ddim-basophil --n 200 --steps 20 --eta 0 --out synth/basophil
    python generate.py --run runs/acgan --per-class 100 --out synth   # a folder per class
    python generate.py --run runs/ddim-cond --class basophil --n 200 --guidance 2 --sampler dpmpp_2m \
        --steps 15 --out synth/basophil                                  # class-conditional DDIM
    python generate.py --run runs/ddim-cond --per-class 125 --out synth  # balanced: 125 per class
    python generate.py --run runs/ddim-attr --class neutrophil --attr nucleus_shape=segmented-multilobed \
        --guidance 2 --n 200 --out synth/multilobed          # a DDIM conditioned on WBCAtt attributes
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cellgen.cli.common import guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="generate.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="generator run directory")
    parser.add_argument("--out", required=True, help="output folder for PNG files")
    parser.add_argument("--n", type=int, default=None, help="number of images (unconditional or --class)")
    parser.add_argument("--per-class", type=int, default=None,
                        help="images per class, written to OUT/<class>/ (conditional models)")
    parser.add_argument("--class", dest="class_name", default=None, help="class to generate (conditional models)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epoch", type=int, default=None, help="saved epoch to use (default: the final model)")
    parser.add_argument("--steps", type=int, default=None, help="diffusion: sampling steps")
    parser.add_argument("--eta", type=float, default=None, help="diffusion: 0 = deterministic DDIM, 1 = stochastic")
    parser.add_argument("--contrast", type=float, default=None,
                        help="diffusion: contrast post-processing c of N&Z section 6.2 (0 = off)")
    parser.add_argument("--guidance", type=float, default=None,
                        help="conditional diffusion: classifier-free guidance weight w (0 = unconditional, "
                             "1 = conditional; default: the run's)")
    parser.add_argument("--sampler", default=None, choices=("ddim", "dpmpp_2m", "heun", "ddpm"),
                        help="diffusion: solver (default: the run's; dpmpp_2m = DPM-Solver++(2M), "
                             "heun = Karras et al. with 2 network calls per step)")
    parser.add_argument("--attr", action="append", default=[], metavar="COLUMN=VALUE",
                        help="diffusion run conditioned on attributes: draw every image with this attribute "
                             "value (repeatable, one per attribute; the others are left open)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.config import ConfigError
    from cellgen.sampling import generated_set_seed, load_sampler, write_samples

    if (args.n is None) == (args.per_class is None):
        raise ConfigError("give exactly one of --n N or --per-class N")
    # Counts and seeds are checked before a model is loaded (--n 0 would load it to write nothing).
    for flag, value, minimum in (("--n", args.n, 1), ("--per-class", args.per_class, 1),
                                 ("--batch-size", args.batch_size, 1), ("--seed", args.seed, 0)):
        if value is not None and value < minimum:
            raise ConfigError(f"{flag} must be >= {minimum}, got {value}")
    options = {"epoch": args.epoch, "steps": args.steps, "eta": args.eta, "contrast": args.contrast,
               "guidance": args.guidance, "sampler": args.sampler}
    if args.attr:
        from cellgen.runs import RunDir

        kind = RunDir.open(args.run).kind
        if kind != "ddim":
            raise ConfigError(f"--attr needs a diffusion run conditioned on attributes; {args.run} is a {kind} run")
        options["attributes"] = list(args.attr)
    sampler = load_sampler(args.run, **{key: value for key, value in options.items() if value is not None})
    out = Path(args.out)
    if args.per_class is not None:
        if not sampler.classes:
            raise ConfigError(f"--per-class needs a conditional model; {args.run} is unconditional "
                              "(fine-tune one model per class and use --n)")
        for index, class_name in enumerate(sampler.classes):
            write_samples(sampler, args.per_class, out / class_name, seed=generated_set_seed(args.seed, index),
                          class_name=class_name, batch_size=args.batch_size, prefix=f"synthetic_{class_name}",
                          progress=not args.quiet)
        total = args.per_class * len(sampler.classes)
    else:
        if args.class_name is not None and not sampler.classes:
            raise ConfigError(f"--class needs a conditional model; {args.run} is unconditional "
                              "(train one with --set conditional=true, or fine-tune one model per class)")
        if args.class_name is not None and args.class_name not in sampler.classes:
            raise ConfigError(f"--class {args.class_name}: not a class of {args.run} "
                              f"(classes: {', '.join(sampler.classes)})")
        write_samples(sampler, args.n, out, seed=args.seed, class_name=args.class_name,
                      batch_size=args.batch_size, progress=not args.quiet)
        total = args.n
    print(f"wrote {total} images to {out}")
    return 0
