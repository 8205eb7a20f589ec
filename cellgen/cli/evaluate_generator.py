"""``evaluate_generator.py``: FID, KID, precision/recall, density/coverage and a memorisation check.

Compares generated images (a folder, or new samples from a generator run) with
real images, over several seeds (mean and standard deviation, as Matos 2025,
section 3.4), with InceptionV3 features or the penultimate layer of a blood-cell
classifier (a "domain" network; see ``cellgen.evaluate`` for why it matters).
Writes ``metrics.json``, ``report.md``, ``real_vs_generated.png`` and the closest
generated/training pairs (``memorization_*.png``) to ``--out``.

Examples:
    python evaluate_generator.py --real data/pbc128/val --generated synth/basophil --class basophil \\
        --train data/pbc128/train --extractor inception --n 1000 --seeds 5 --out eval/basophil
    python evaluate_generator.py --real data/pbc128/val --run runs/ddim-basophil --class basophil \\
        --extractor runs/classifier --n 500 --seeds 3 --steps 20 --out eval/ddim
    # quick look on a CPU: a smaller Inception input, bfloat16
    python evaluate_generator.py --real data/pbc128/val --generated synth --extractor-size 150 \\
        --precision bf16 --n 500 --out eval/quick
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from cellgen.cli.common import crop_option, guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate_generator.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("Examples:")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--real", required=True, help="real images: class folders, a flat folder or a CSV")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--generated", help="folder of generated images")
    source.add_argument("--run", help="generator run directory: draws --n new images per seed")
    parser.add_argument("--extractor", default="inception",
                        help="'inception' or a classifier: a .keras file or a run directory with "
                             "model.keras / best.keras (default: inception)")
    parser.add_argument("--out", required=True, help="output folder for metrics.json, report.md and PNGs")
    parser.add_argument("--n", type=int, default=10_000, help="images per set and seed (default 10000)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    parser.add_argument("--class", dest="class_name", default=None,
                        help="real class to compare with (and the class a conditional run draws)")
    parser.add_argument("--size", type=int, default=None,
                        help="resolution images are compared at (default: the generated images' size)")
    parser.add_argument("--crop", type=float, default=None,
                        help="center crop of the real images: pixels (> 1) or a fraction; default: the run's "
                             "training crop with --run, else none")
    parser.add_argument("--train", default=None,
                        help="training images for the memorisation check (default: the run's training data "
                             "with --run, else --real)")
    parser.add_argument("--no-memorization", action="store_true", help="skip the memorisation check")
    parser.add_argument("--memorization-n", type=int, default=2000, help="generated images checked (default 2000)")
    parser.add_argument("--memorization-quantile", type=float, default=0.05,
                        help="quantile of training nearest-neighbour distances used as threshold (default 0.05)")
    parser.add_argument("--pixel-size", type=int, default=32, help="side for pixel-space distances (default 32)")
    parser.add_argument("--nearest-k", type=int, default=5, help="k of precision/recall/density/coverage (default 5)")
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--kid-subsets", type=int, default=100)
    parser.add_argument("--fid-infinity", action="store_true",
                        help="also extrapolate FID to infinitely many images (Chong & Forsyth 2020)")
    parser.add_argument("--inception-weights", default="imagenet",
                        help="'imagenet' (downloaded once by Keras), a local InceptionV3 no-top weights file, "
                             "or 'none' (random weights: timing and tests only)")
    parser.add_argument("--extractor-size", type=int, default=None,
                        help="InceptionV3 input side (default 299; smaller is faster but not comparable)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                        help="InceptionV3 compute precision (bf16 is 2-4x faster on AMX CPUs; default fp32)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="image-decoding threads")
    parser.add_argument("--cache-dir", default=None,
                        help="real-feature cache (default $CELLGEN_CACHE_DIR/features or ~/.cache/cellgen/features)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    parser.add_argument("--overwrite", action="store_true", help="replace the results in an existing --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    runs = parser.add_argument_group("generator run options (--run)")
    runs.add_argument("--epoch", type=int, default=None, help="saved epoch to use (default: the final model)")
    runs.add_argument("--steps", type=int, default=None, help="diffusion: sampling steps")
    runs.add_argument("--eta", type=float, default=None, help="diffusion: 0 = deterministic DDIM, 1 = stochastic")
    runs.add_argument("--contrast", type=float, default=None, help="diffusion: contrast post-processing")
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.config import ConfigError
    from cellgen.evaluate.generated import evaluate_generated
    from cellgen.runs import RunDir, set_seed

    out = Path(args.out)
    if (out / "metrics.json").exists() and not args.overwrite:
        raise ConfigError(f"--out {out}: holds results already; pass --overwrite or choose another folder")
    for option in ("n", "seeds", "batch_size", "memorization_n", "pixel_size", "nearest_k", "kid_subsets"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.size is not None and args.size < 8:
        raise ConfigError(f"--size must be at least 8, got {args.size}")
    for path, option in ((args.real, "--real"), (args.generated, "--generated"), (args.train, "--train")):
        if path is not None and not str(path).startswith("tfds:") and not Path(path).exists():
            raise ConfigError(f"{option}: {path} not found")
    crop = crop_option(args.crop) if args.crop is not None else None
    train = args.train
    if args.run is not None:
        from cellgen.sampling import load_sampler

        options = {"epoch": args.epoch, "steps": args.steps, "eta": args.eta, "contrast": args.contrast}
        generated = load_sampler(args.run, **{key: value for key, value in options.items() if value is not None})
        run_config = RunDir.open(args.run).config_dict()
        if args.crop is None:
            crop = crop_option(float(run_config.get("crop", 0) or 0))
        if train is None and run_config.get("data") and Path(run_config["data"]).exists():
            train = run_config["data"]
        if args.class_name is None and getattr(generated, "classes", None):
            raise ConfigError(f"{args.run} is a conditional run; pass --class (one of {', '.join(generated.classes)})")
    else:
        if any(value is not None for value in (args.epoch, args.steps, args.eta, args.contrast)):
            raise ConfigError("--epoch/--steps/--eta/--contrast apply to --run only")
        generated = args.generated
    set_seed(0)  # random Inception weights (--inception-weights none) and sampler set-up stay reproducible
    weights = None if str(args.inception_weights).lower() in ("none", "random") else args.inception_weights
    result = evaluate_generated(
        args.real, generated, args.extractor, n=args.n, seeds=args.seeds, image_size=args.size, crop=crop,
        class_name=args.class_name, train=train, nearest_k=args.nearest_k, kid_subset_size=args.kid_subset_size,
        kid_subsets=args.kid_subsets, memorization=not args.no_memorization, memorization_n=args.memorization_n,
        memorization_quantile=args.memorization_quantile, pixel_size=args.pixel_size,
        with_fid_infinity=args.fid_infinity, batch_size=args.batch_size, cache_dir=args.cache_dir,
        use_cache=not args.no_cache, workers=args.workers, progress=not args.quiet, out_dir=out,
        inception_weights=weights, extractor_size=args.extractor_size, precision=args.precision)
    print(f"{'metric':<12}{'mean':>12}{'std':>12}")
    for name, values in result["summary"].items():
        print(f"{name:<12}{values['mean']:>12.4g}{values['std']:>12.2g}")
    memorization = result.get("memorization")
    if memorization:
        for space in ("features", "pixels"):
            part = memorization[space]
            print(f"memorisation ({space}): {100 * part['share_below']:.1f}% of generated images closer to a "
                  f"training image than {100 * part['expected_share']:.0f}% of training images are to theirs")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {out / 'metrics.json'} and {out / 'report.md'}")
    return 0
