"""The Matos (2025) comparison on this machine: CVAE, DCGAN, DDPM (T = 500) and DDIM (20 steps)
at 28 px under an equal wall-clock training budget, through :func:`cellgen.study.compare.run_comparison`
(what ``compare_generators.py`` runs).

ImageNet weights for InceptionV3 cannot be downloaded here, so the features come
from a domain classifier: the project's ``smallcnn`` (configs/classifier_fast.toml)
trained at 28 px on all of ``--train`` for a few epochs (:func:`cellgen.study.stages.train_domain_extractor`;
its validation split doubles as its test split: the classifier only serves as a
feature extractor; the held-out test split stays unused). Pass ``--extractor
inception --inception-weights FILE`` where a local InceptionV3 weights file exists.

Defaults fit in about 10-15 minutes on 2 CPU cores: 200 training images per class,
1 minute of training per model, one pool of 250 generated images per model (timed)
from which 5 evaluation seeds draw 250 each against 250 real images; the DDPM (500
ancestral steps per image) generates only 16 images (``--limit-samples``), and its
smaller U-Net preset is used (``--preset``). The numbers are a smoke-scale
comparison, not the paper's (hundreds of epochs on a GPU).

Usage:
    python bench/bench_compare_generators.py
    python bench/bench_compare_generators.py --budget-minutes 5 --images-per-class 0 --n 1000 --pool 1000
    python bench/bench_compare_generators.py --epochs 15 --n 500 --pool 500 --limit-samples ddpm=64
Writes OUT (default runs/compare28-<date>/: the classifier, every model's run directory,
comparison/table.md, table.json and grids) and bench/results/<name of OUT>.json
(table.json plus the benchmark settings).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = Path(__file__).resolve().parent.parent / "runs"  # git-ignored: run directories are large
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default=str(DATA / "train"))
    parser.add_argument("--val", default=str(DATA / "val"))
    parser.add_argument("--out", default=None)
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--budget-minutes", type=float, default=1.0,
                        help="equal wall-clock training budget per model (default 1)")
    budget.add_argument("--epochs", type=int, default=None,
                        help="equal number of epochs per model instead of a time budget: independent of "
                             "the machine's load")
    parser.add_argument("--images-per-class", type=int, default=200, help="0: all training images")
    parser.add_argument("--n", type=int, default=250, help="images per evaluation seed")
    parser.add_argument("--pool", type=int, default=250, help="generated images per model (timed)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--models", default="cvae,dcgan,ddpm,ddim")
    parser.add_argument("--preset", action="append", default=None, metavar="MODEL=PRESET",
                        help="passed to compare_generators.py (default: ddpm=matos2025_ddpm28, the baseline "
                             "U-Net: the deeper one samples too slowly for a CPU benchmark)")
    parser.add_argument("--extractor", default=None,
                        help="feature extractor (default: train the 28-px domain classifier)")
    parser.add_argument("--limit-samples", action="append", default=None, metavar="MODEL=N",
                        help="passed to compare_generators.py (default: ddpm=16: 500 network calls per image take "
                             "minutes per batch on a CPU)")
    parser.add_argument("--inception-weights", default="imagenet")
    parser.add_argument("--classifier-epochs", type=int, default=6)
    parser.add_argument("--resume", action="store_true")
    return parser.parse_args(argv)


def domain_classifier(train: str, val: str, out: Path, epochs: int) -> Path:
    """Trains (or reuses) the 28-px smallcnn on all training images; returns its best.keras."""
    from cellgen.study import stages

    request = stages.domain_extractor_request("classifier_fast", {"epochs": epochs}, train, val, out, 28, 0)
    return stages.train_domain_extractor(request, log=stages.CommandLog(out.parent / "commands.sh"))


def _assignments(items, separator: str = "=") -> dict[str, str]:
    pairs = [item.partition(separator) for item in items]
    bad = [item for item, (_, found, _) in zip(items, pairs) if not found]
    if bad:
        raise SystemExit(f"error: expected MODEL{separator}VALUE, got {bad[0]!r}")
    return {model.strip(): value.strip() for model, _, value in pairs}


def main(argv=None) -> int:
    from cellgen.runs import write_json
    from cellgen.study import stages
    from cellgen.study.compare import Comparison, run_comparison

    args = parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise SystemExit(f"error: --epochs must be >= 1, got {args.epochs}")
    stamp = _dt.date.today().isoformat()
    out = Path(args.out) if args.out else RUNS / f"compare28-{stamp}"
    started = time.perf_counter()
    extractor = args.extractor
    classifier_seconds = 0.0
    if extractor is None:
        extractor = str(domain_classifier(args.train, args.val, out / "classifier28", args.classifier_epochs))
        classifier_seconds = time.perf_counter() - started
        stages.fresh_session()
    presets = _assignments(args.preset if args.preset is not None else ["ddpm=matos2025_ddpm28"])
    limits = {name: int(value) for name, value in
              _assignments(args.limit_samples if args.limit_samples is not None else ["ddpm=16"]).items()}
    models = tuple(name.strip() for name in args.models.split(",") if name.strip())
    comparison = Comparison(
        data=args.train, out=str(out / "comparison"), real=args.train, models=models, seeds=args.seeds, n=args.n,
        sample_pool=args.pool, sampling_images=args.pool, kid_subset_size=min(1000, args.n), extractor=extractor,
        inception_weights=args.inception_weights, quiet=True, presets=presets,
        limit_samples={name: value for name, value in limits.items() if name in models},
        epochs=args.epochs, budget_minutes=None if args.epochs else args.budget_minutes,
        images_per_class=args.images_per_class or None, resume=args.resume)
    try:
        table = run_comparison(comparison, printer=lambda line: print(line, flush=True))
    except (ValueError, RuntimeError, OSError) as error:  # ConfigError, DataError, RunError: one line
        raise SystemExit(f"error: compare: {error}") from None
    summary = {"benchmark": "compare_generators", "date": _dt.datetime.now().isoformat(timespec="seconds"),
               "arguments": vars(args), "extractor": extractor, "classifier_seconds": classifier_seconds,
               "total_seconds": time.perf_counter() - started, **table}
    path = write_json(RESULTS / f"{out.name}.json", summary)
    print(f"total {summary['total_seconds'] / 60:.1f} min; wrote {path} and {out / 'comparison' / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
