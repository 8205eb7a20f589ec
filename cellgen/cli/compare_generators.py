"""``compare_generators.py``: the Matos (2025) comparison (CVAE, DCGAN, DDPM) plus the cellgen DDIM.

Trains every model on the same data at one size (28 px: BloodMNIST is the PBC
dataset at 28 x 28) through its trainer, under equal epochs or an equal
wall-clock budget per model; times the sampling of 1,000 images; evaluates each
with the evaluation library (FID, KID, precision, recall; mean and std over
seeds, as Matos section 3.4); and writes ``OUT/table.md`` and ``OUT/table.json``
(Matos Table 4 with training time, sampling speed, KID, precision and recall)
and one grid per model next to real images (``OUT/grids/``). The work is
:func:`cellgen.study.compare.run_comparison`; this script parses its options.

Features come by default from a domain classifier (``--extractor domain``: the
``classifier_fast`` CNN trained on the training images at the comparison's size,
tuned with ``--set extractor:KEY=VALUE``), which needs no download. ``--extractor
inception`` needs InceptionV3's ImageNet weights: from the Keras cache, a
download (checked before anything trains) or ``--inception-weights FILE``.

Examples:
    # the paper's settings (each preset's epochs), domain-classifier features, 5 seeds of 10,000 images
    python compare_generators.py --data ../shared/data/pbc128/train --out runs/compare28
    # Inception features as in the paper (ImageNet weights from a local file)
    python compare_generators.py --data DIR --out runs/compare28i --extractor inception \
        --inception-weights ~/weights/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5
    # 20 minutes of training per model, a domain classifier as feature extractor; on a CPU,
    # the DDPM (500 network calls per image) only generates 64 images
    python compare_generators.py --data ../shared/data/pbc128/train --out runs/compare28 \\
        --budget-minutes 20 --extractor runs/clf28/runs/baseline/seed-0/models/best.keras --n 2000 \\
        --seeds 5 --sample-pool 4000 --limit-samples ddpm=64
    # smaller trial: 64 images per class, 2 epochs each, two models
    python compare_generators.py --data DIR --out runs/try --images-per-class 64 --epochs 2 --models cvae,dcgan

Layout of OUT: ``runs/<model>/`` (each model's run directory), ``extractor/`` (the
domain classifier), ``eval/<model>/`` (the evaluation report), ``grids/<model>.png``
and ``grids/all_models.png``, ``results/<model>.json`` (one finished model;
``--resume`` reuses them), ``table.md``, ``table.json``, ``commands.sh`` (every
training call as a command line).
"""

from __future__ import annotations

import argparse
import functools
from typing import Any, Sequence

from cellgen.cli.common import guarded

from cellgen.study.compare import EXTRACTOR, MODEL_NAMES  # no TensorFlow: --help stays fast


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare_generators.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="training images: one sub-folder per class")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--size", type=int, default=28, help="image size of every model (default 28, BloodMNIST)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--budget-minutes", type=float, default=None,
                        help="equal wall-clock training budget per model, in minutes")
    length.add_argument("--epochs", type=int, default=None,
                        help="equal number of epochs for every model (default: each preset's own epochs)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help=f"comma-separated subset of {', '.join(MODEL_NAMES)} (default: all)")
    parser.add_argument("--preset", action="append", default=[], metavar="MODEL=PRESET",
                        help="train MODEL from another preset (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL:KEY=VALUE",
                        help="override a config key of one model (repeatable), e.g. cvae:latent_dim=32; "
                             f"{EXTRACTOR}:KEY=VALUE sets the domain classifier's")
    parser.add_argument("--images-per-class", type=int, default=None,
                        help="train (and evaluate) on the first N images of each class (linked under OUT/data)")
    parser.add_argument("--real", default=None,
                        help="real images to compare with (default: the training images, as Matos)")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every model")
    parser.add_argument("--train-precision", choices=["fp32", "bf16", "auto"], default="fp32")
    parser.add_argument("--seeds", type=int, default=5, help="evaluation seeds (default 5, as Matos)")
    parser.add_argument("--n", type=int, default=10_000,
                        help="real and generated images per evaluation seed (default 10000, as Matos)")
    parser.add_argument("--sampling-images", type=int, default=1000,
                        help="images whose generation is timed (default 1000)")
    parser.add_argument("--sample-pool", type=int, default=0,
                        help="generate this many images once (timed) and draw each seed's n from them; "
                             "0 (default) draws n new images per seed, as Matos")
    parser.add_argument("--sample-batch-size", type=int, default=250, help="images per generator call")
    parser.add_argument("--limit-samples", action="append", default=[], metavar="MODEL=N",
                        help="generate only N images with MODEL (timed, and evaluated as its whole generated set): "
                             "for samplers too slow for the machine, e.g. ddpm=64 (500 network calls per image)")
    parser.add_argument("--extractor", default="domain",
                        help="'domain' (default: a classifier trained here on the training images; no download), "
                             "'inception' (ImageNet weights), or a classifier (.keras file or run directory)")
    parser.add_argument("--extractor-preset", default="classifier_fast",
                        help="preset of the domain classifier (default classifier_fast)")
    parser.add_argument("--extractor-val", default=None,
                        help="images that pick the domain classifier's epoch (default: the real images)")
    parser.add_argument("--inception-weights", default="imagenet",
                        help="'imagenet' (Keras cache or a download), a local InceptionV3 no-top weights file, "
                             "or 'none' (tests only)")
    parser.add_argument("--extractor-size", type=int, default=None, help="InceptionV3 input side (default 299)")
    parser.add_argument("--eval-precision", choices=["fp32", "bf16", "auto"], default="fp32",
                        help="InceptionV3 compute precision")
    parser.add_argument("--kid-subset-size", type=int, default=1000)
    parser.add_argument("--cache-dir", default=None, help="real-feature cache folder of the evaluation")
    parser.add_argument("--grid-images", type=int, default=64, help="images per model in the grids")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished models (OUT/results) and continue unfinished runs")
    parser.add_argument("--quiet", action="store_true", help="one line per epoch instead of progress bars")
    return parser


def _pairs(items: Sequence[str], option: str, separator: str, usage: str, targets: Sequence[str]) -> list[tuple[str, str]]:
    """``MODEL<separator>REST`` items as (model, rest), with a one-line error naming ``option``."""
    from cellgen.config import ConfigError

    pairs = []
    for item in items:
        model, found, rest = item.partition(separator)
        if not found or model.strip() not in targets or not rest.strip():
            raise ConfigError(f"{option} expects {usage} with MODEL one of {', '.join(targets)}; got {item!r}")
        pairs.append((model.strip(), rest.strip()))
    return pairs


def parse_overrides(items: Sequence[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """``--set MODEL:KEY=VALUE`` -> (model -> {key: value}, the domain classifier's {key: value})."""
    from cellgen.config import ConfigError, parse_set_options

    models: dict[str, dict[str, Any]] = {}
    extractor: dict[str, Any] = {}
    for model, assignment in _pairs(items, "--set", ":", "MODEL:KEY=VALUE", MODEL_NAMES + (EXTRACTOR,)):
        if "=" not in assignment:
            raise ConfigError(f"--set expects MODEL:KEY=VALUE; got {model}:{assignment!r}")
        values = parse_set_options([assignment])
        (extractor if model == EXTRACTOR else models.setdefault(model, {})).update(values)
    return models, extractor


def parse_limits(items: Sequence[str]) -> dict[str, int]:
    """``--limit-samples MODEL=N`` -> model -> N (N >= 8: precision/recall need more than k = 5 neighbours)."""
    from cellgen.config import ConfigError

    limits = {}
    for item in items:
        model, separator, count = item.partition("=")
        try:
            value = int(count)
        except ValueError:
            value = 0
        if not separator or model.strip() not in MODEL_NAMES or value < 8:
            raise ConfigError(f"--limit-samples expects MODEL=N with MODEL one of {', '.join(MODEL_NAMES)} and "
                              f"N >= 8; got {item!r}")
        limits[model.strip()] = value
    return limits


def comparison_from_args(args: argparse.Namespace):
    """The :class:`~cellgen.study.compare.Comparison` of parsed options."""
    from cellgen.study.compare import Comparison

    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    presets = dict(_pairs(args.preset, "--preset", "=", "MODEL=PRESET", MODEL_NAMES))
    overrides, extractor_overrides = parse_overrides(args.set)
    limits = {name: value for name, value in parse_limits(args.limit_samples).items() if name in models}
    overrides = {name: values for name, values in overrides.items() if name in models}
    return Comparison(
        data=args.data, out=args.out, size=args.size, budget_minutes=args.budget_minutes, epochs=args.epochs,
        models=models, presets=presets, overrides=overrides, images_per_class=args.images_per_class,
        real=args.real, seed=args.seed, train_precision=args.train_precision, seeds=args.seeds, n=args.n,
        sampling_images=args.sampling_images, sample_pool=args.sample_pool,
        sample_batch_size=args.sample_batch_size, limit_samples=limits, extractor=args.extractor,
        extractor_preset=args.extractor_preset, extractor_overrides=extractor_overrides,
        extractor_val=args.extractor_val,
        inception_weights=args.inception_weights, extractor_size=args.extractor_size,
        eval_precision=args.eval_precision, kid_subset_size=args.kid_subset_size, cache_dir=args.cache_dir,
        grid_images=args.grid_images, resume=args.resume, quiet=args.quiet)


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    comparison = comparison_from_args(args)
    from pathlib import Path

    from cellgen.study.compare import run_comparison

    run_comparison(comparison, printer=functools.partial(print, flush=True))
    out = Path(comparison.out)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'} and {out / 'grids'}")
    return 0
