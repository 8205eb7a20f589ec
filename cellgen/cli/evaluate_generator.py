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
from typing import Sequence

from cellgen.cli.common import guarded


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
    from cellgen.evaluate.tasks import evaluate_generator, summary_lines

    options = options_from_args(args)
    result = evaluate_generator(options)
    for line in summary_lines(result, options.out):
        print(line)
    return 0


def options_from_args(args: argparse.Namespace):
    """The :class:`~cellgen.evaluate.tasks.GeneratorEvaluation` of parsed options."""
    from cellgen.evaluate.tasks import GeneratorEvaluation

    return GeneratorEvaluation(
        real=args.real, out=args.out, generated=args.generated, run=args.run, extractor=args.extractor, n=args.n,
        seeds=args.seeds, class_name=args.class_name, size=args.size, crop=args.crop, train=args.train,
        memorization=not args.no_memorization, memorization_n=args.memorization_n,
        memorization_quantile=args.memorization_quantile, pixel_size=args.pixel_size, nearest_k=args.nearest_k,
        kid_subset_size=args.kid_subset_size, kid_subsets=args.kid_subsets, fid_infinity=args.fid_infinity,
        inception_weights=args.inception_weights, extractor_size=args.extractor_size, precision=args.precision,
        batch_size=args.batch_size, workers=args.workers, cache_dir=args.cache_dir, cache=not args.no_cache,
        overwrite=args.overwrite, progress=not args.quiet, epoch=args.epoch, steps=args.steps, eta=args.eta,
        contrast=args.contrast)
