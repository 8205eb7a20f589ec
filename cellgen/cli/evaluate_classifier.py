"""``evaluate_classifier.py``: F1 of a classifier trained with and without synthetic images.

Trains one classifier per arm and seed (baseline = real images only,
classical = flips and quarter turns (``classical_dihedral``), rotation and zoom,
synthetic = real + generated, classical+synthetic) on the same splits, seeds and
budget, tests each on the test split in inference mode and writes ``OUT/report.json``
(with the paired per-seed differences between arms and their 95 % intervals),
``OUT/report.md``, confusion matrices and a per-class F1 bar chart.

Examples:
    # Klang & Carlberg: Xception, every class +50 % AC-GAN images, four arms, three seeds
    python evaluate_classifier.py --config kc2020_xception --train data/train --val data/val \\
        --test data/test --synthetic synth --out runs/kc-classifier

    # Nilsson & Zettergren: MobileNetV2 0.75, one class against the rest, generated on the fly
    python evaluate_classifier.py --config nz2023_mobilenetv2 --mode binary --positive basophil \\
        --synthetic-from runs/ddim-basophil --synthetic-match-positive --train ... --out runs/nz

    # scarcity study on the shipped sample: keep 25 % of the basophils in every arm
    python evaluate_classifier.py --config classifier_fast --train T --val V --test S --synthetic G \\
        --limit-class basophil=0.25 --arms baseline,synthetic --seeds 3 --out runs/scarce
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded
from cellgen.cli.options import (add_common_arguments, naming_typed_options, request_from_args,
                                 typed_option_names)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evaluate_classifier.py", description=__doc__.split("\n")[0],
                                     epilog=__doc__.split("\n", 2)[2],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--train", help="training split: class folders or a path,label CSV (same as --data)")
    parser.add_argument("--val", help="validation split (picks the epoch with the lowest validation loss)")
    parser.add_argument("--test", help="test split (reported metrics)")
    parser.add_argument("--arms", help="comma-separated: baseline, classical, synthetic, classical+synthetic")
    parser.add_argument("--seeds", type=int, help="repeats of every arm (seeds seed, seed+1, ...)")
    parser.add_argument("--backbone", help="mobilenetv2, xception or smallcnn")
    parser.add_argument("--alpha", type=float, help="MobileNetV2 width multiplier")
    parser.add_argument("--weights", help="imagenet, none, or a backbone weights file")
    parser.add_argument("--mode", choices=["multiclass", "binary"])
    parser.add_argument("--positive", help="positive class of --mode binary (N&Z: the abnormal class)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--synthetic", help="folder with one sub-folder of generated images per class")
    source.add_argument("--synthetic-from", help="generator run (or class=RUN,class2=RUN2) to generate from")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--synthetic-ratio", type=float, help="synthetic images per class, fraction of its real count")
    amount.add_argument("--synthetic-count", type=int, help="synthetic images per class")
    amount.add_argument("--synthetic-match-positive", action="store_true",
                        help="as many synthetic images as real positive images (N&Z)")
    parser.add_argument("--synthetic-classes", help="comma-separated classes that receive synthetic images")
    parser.add_argument("--limit-class", action="append", default=[], metavar="NAME=FRACTION",
                        help="keep a seed-chosen fraction of a class's real training images (repeatable)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted experiment in --out")
    parser.add_argument("--quiet", action="store_true", help="no Keras progress bars")
    return parser


def _limits(items: Sequence[str]) -> dict[str, float]:
    from cellgen.config import ConfigError

    limits: dict[str, float] = {}
    for item in items:
        name, separator, fraction = item.partition("=")
        if not separator or not name.strip():
            raise ConfigError(f"--limit-class expects NAME=FRACTION, got {item!r}")
        try:
            limits[name.strip()] = float(fraction)
        except ValueError:
            raise ConfigError(f"--limit-class {item}: {fraction!r} is not a number") from None
    return limits


# Script flag -> config field.
FLAG_FIELDS = (("train", "data"), ("val", "val_data"), ("test", "test_data"), ("arms", "arms"), ("seeds", "seeds"),
               ("backbone", "backbone"), ("alpha", "alpha"), ("weights", "weights"), ("mode", "mode"),
               ("positive", "positive"), ("synthetic", "synthetic"), ("synthetic_from", "synthetic_from"),
               ("synthetic_classes", "synthetic_classes"))


def script_fields(args: argparse.Namespace) -> dict:
    """This script's flags as config fields (None: not given)."""
    fields = {field: getattr(args, flag) for flag, field in FLAG_FIELDS}
    # the three amount options exclude each other: the one given replaces the preset's choice
    if args.synthetic_ratio is not None:
        fields.update(synthetic_ratio=args.synthetic_ratio, synthetic_count=0, synthetic_match_positive=False)
    if args.synthetic_count is not None:
        fields.update(synthetic_count=args.synthetic_count, synthetic_match_positive=False)
    if args.synthetic_match_positive:
        fields.update(synthetic_match_positive=True, synthetic_count=0)
    if args.synthetic is not None:
        fields["synthetic_from"] = ""
    if args.synthetic_from is not None:
        fields["synthetic"] = ""
    if args.limit_class:
        fields["limit_class"] = _limits(args.limit_class)
    return fields


def config_from_arguments(args: argparse.Namespace):
    """The experiment config: preset, then ``--set``, then the common flags, then this script's flags."""
    from cellgen.classify.config import ClassifierConfig
    from cellgen.config import config_from_request

    return config_from_request(ClassifierConfig, request_from_args(args, **script_fields(args)))


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    names = {**typed_option_names(args), **{field: "--" + flag.replace("_", "-") for flag, field in FLAG_FIELDS
                                           if getattr(args, flag) is not None}}
    with naming_typed_options(names):  # an error about a field names the option typed (--train, --seeds)
        config = config_from_arguments(args)
        from cellgen.classify.train_lib import run_experiment

        report = run_experiment(config, resume=args.resume, verbose=0 if args.quiet else "auto")
    for arm, summary in report["arms"].items():
        stats = summary["weighted_f1"]
        print(f"{arm:>20}: weighted F1 {stats['mean']:.4f} ± {stats['std']:.4f} over {stats['n']} seed(s)")
    from cellgen.classify.report import interval_text

    for name, comparison in report.get("paired", {}).items():
        print(f"{name:>36}: weighted F1 {interval_text(comparison['weighted_f1'], 4)} "
              "(paired over seeds, 95 % interval)")
    return 0
