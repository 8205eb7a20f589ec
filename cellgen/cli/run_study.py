"""``run_study.py``: does synthetic data for my rare class improve my classifier?

Runs every stage (prepare, base, finetune, generate, filter, evaluate, classify,
report) in order and writes ``STUDY/report.md``, ``STUDY/report.html`` and
``STUDY/report.json`` (paired verdicts and the share of the scarcity loss won back). Re-running the
same command skips finished stages and resumes an interrupted one.

Examples:
    python run_study.py --config configs/study_demo.toml --out demo_out/study
    python run_study.py --config study_pbc_scarce_basophil --test ../shared/data/pbc128/val --out runs/basophil
    python run_study.py --config ... --out runs/basophil --from classify   # redo the classifier arms
    python run_study.py --config study_demo_acgan --out demo_out/study_acgan  # K&C: AC-GAN on a frozen Vanilla-GAN
    python run_study.py --config study_demo_wbcatt --out demo_out/study_wbcatt  # a WBCAtt morphology (docs/attributes.md)
"""

from __future__ import annotations

import argparse
from typing import Sequence

from cellgen.cli.common import guarded


def build_parser() -> argparse.ArgumentParser:
    from cellgen.study.config import STAGES

    parser = argparse.ArgumentParser(prog="run_study.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="study preset (path or name under configs/)")
    parser.add_argument("--out", required=True, help="study directory")
    parser.add_argument("--train", help="training split (class folders or path,label CSV)")
    parser.add_argument("--val", help="validation split (class folders)")
    parser.add_argument("--test", help="test split (class folders); never tune on it")
    parser.add_argument("--size", type=int, help="image size")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--seeds", type=int, help="classifier repetitions per arm")
    parser.add_argument("--precision", choices=["preset", "fp32", "bf16", "fp16", "auto"],
                        help="force one precision on every stage (default: each preset's own)")
    parser.add_argument("--strategy", help="auto, default, mirrored, multiworker or cpu:N")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a study field")
    parser.add_argument("--from", dest="from_stage", choices=STAGES, help="re-run from this stage on")
    parser.add_argument("--until", choices=STAGES, help="stop after this stage")
    return parser


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.config import apply_overrides, load_config
    from cellgen.study.config import StudyConfig
    from cellgen.study.pipeline import StudyError, run_study

    config = load_config(StudyConfig, args.config, args.set)
    flags = {"train": args.train, "val": args.val, "test": args.test, "image_size": args.size,
             "seed": args.seed, "seeds": args.seeds, "precision": args.precision, "strategy": args.strategy,
             "out": args.out}
    config = apply_overrides(config, {key: value for key, value in flags.items() if value is not None})
    try:
        if config.sweep_caps:
            from cellgen.study.sweep import run_sweep

            report = run_sweep(config, args.out, from_stage=args.from_stage, until=args.until)
        else:
            report = run_study(config, args.out, from_stage=args.from_stage, until=args.until)
    except StudyError as error:
        import sys

        print(f"error: {error}", file=sys.stderr)
        print(f"the outputs of the finished stages are kept in {args.out}; re-run the same command to "
              "resume", file=sys.stderr)
        return 1
    if report.is_file() and report.name == "sweep.md":
        print(f"sweep report: {report} (plot: {report.with_name('sweep_f1.png')})")
    elif report.is_file():
        print(f"study report: {report} (and {report.with_suffix('.html')})")
    return 0
