"""``expert_test.py``: make a real-vs-synthetic test kit for an expert, then score the answers.

``make`` picks real and synthetic images (half each unless told otherwise), gives
them random numbers, writes them as PNG files of one size into KIT/expert/images
with an answer sheet KIT/expert/answers.csv, and keeps the key apart in
KIT/key/. Hand KIT/expert to the expert; they are not told the ratio.

``score`` reads the filled answer sheet and prints the confusion matrix,
accuracy, recall (real called real) and specificity (synthetic called
synthetic), per class when the kit covers several classes, in the layout of
Nilsson & Zettergren's Tables 9-14 (and Klang & Carlberg's Table 2).

Examples:
    python expert_test.py make --real data/pbc128/val --synthetic synth/ --n 100 --out kits/k1 --seed 7
    python expert_test.py make --real data/pbc128/val --synthetic synth/basophil --class basophil \\
        --n 60 --out kits/basophil
    python expert_test.py score kits/k1 kits/k1/expert/answers.csv --name "Medical expert"
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded


def _counts(text: str) -> dict[str, int]:
    from cellgen.evaluate.tasks import parse_counts

    return parse_counts(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="expert_test.py", description=__doc__.split("\n")[0],
                                     epilog="Examples:" + __doc__.split("Examples:")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make", help="make a kit")
    make.add_argument("--real", required=True, help="real images (class folders, a flat folder or a CSV)")
    make.add_argument("--synthetic", required=True,
                      help="synthetic images; with class sub-folders the kit covers (and scores) each class")
    make.add_argument("--n", type=int, default=100, help="images in the kit (default 100)")
    make.add_argument("--out", required=True, help="kit folder to create")
    make.add_argument("--seed", type=int, default=0, help="the same seed makes the same kit")
    make.add_argument("--real-share", type=float, default=0.5, help="share of real images (default 0.5)")
    make.add_argument("--size", type=int, default=None, help="side of the kit images (default: the synthetic size)")
    make.add_argument("--real-crop", type=float, default=None,
                      help="center crop of the real images (pixels > 1 or a fraction), as in the generator's training")
    make.add_argument("--class", dest="class_name", default=None,
                      help="real class to use when --synthetic is a flat folder")
    make.add_argument("--counts", type=_counts, default=None,
                      help="images per class instead of --n, e.g. hypersegmented=40,dohle=30")
    make.add_argument("--overwrite", action="store_true", help="replace an existing kit folder")
    score = commands.add_parser("score", help="score a filled answer sheet")
    score.add_argument("kit", help="kit folder made by 'make'")
    score.add_argument("answers", help="filled answers.csv (columns id,answer with real/synthetic)")
    score.add_argument("--out", default=None, help="results folder (default KIT/results/<answers name>)")
    score.add_argument("--name", default="expert", help="who answered, for the table titles")
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.evaluate.expert import format_tables, score_kit
    from cellgen.evaluate.tasks import make_expert_kit

    if args.command == "make":
        kit = make_expert_kit(kit_options_from_args(args))
        print(f"kit written to {kit}: give {kit / 'expert'} to the expert; keep {kit / 'key'} apart")
        return 0
    result = score_kit(args.kit, args.answers, out=args.out, name=args.name)
    print(format_tables(result))
    print(f"wrote {result['out']}")
    return 0


def kit_options_from_args(args: argparse.Namespace):
    """The :class:`~cellgen.evaluate.tasks.ExpertKitOptions` of parsed ``make`` options."""
    from cellgen.evaluate.tasks import ExpertKitOptions

    return ExpertKitOptions(real=args.real, synthetic=args.synthetic, out=args.out, n=args.n, seed=args.seed,
                            real_share=args.real_share, size=args.size, real_crop=args.real_crop,
                            class_name=args.class_name, counts=args.counts, overwrite=args.overwrite)
