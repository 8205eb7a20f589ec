"""The Matos (2025) comparison on this machine: CVAE, DCGAN, DDPM (T = 500) and DDIM (20 steps)
at 28 px under an equal wall-clock training budget, through ``compare_generators.py``.

ImageNet weights for InceptionV3 cannot be downloaded here, so the features come
from a domain classifier: the project's ``smallcnn`` (configs/classifier_fast.toml)
trained at 28 px on ``--train`` for a few epochs with ``evaluate_classifier.py``
(its validation split doubles as its test split: the classifier only serves as a
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
    """Trains (or reuses) the 28-px smallcnn; returns its best.keras."""
    found = sorted(out.rglob("best.keras"))
    if found:
        return found[0]
    from cellgen.cli.evaluate_classifier import main

    code = main(["--config", "classifier_fast", "--train", train, "--val", val, "--test", val,
                 "--arms", "baseline", "--seeds", "1", "--size", "28", "--epochs", str(epochs),
                 "--out", str(out), "--quiet"])
    found = sorted(out.rglob("best.keras"))
    if code != 0 or not found:
        raise SystemExit(f"training the domain classifier failed (exit status {code})")
    return found[0]


def main(argv=None) -> int:
    import keras

    from cellgen.cli.compare_generators import main as compare
    from cellgen.runs import read_json, write_json

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
        keras.backend.clear_session()
    argv = ["--data", args.train, "--out", str(out / "comparison"), "--real", args.train,
            "--models", args.models, "--seeds", str(args.seeds),
            "--n", str(args.n), "--sample-pool", str(args.pool), "--sampling-images", str(args.pool),
            "--kid-subset-size", str(min(1000, args.n)), "--extractor", extractor,
            "--inception-weights", args.inception_weights, "--quiet"]
    argv += ["--epochs", str(args.epochs)] if args.epochs else ["--budget-minutes", str(args.budget_minutes)]
    for preset in (args.preset if args.preset is not None else ["ddpm=matos2025_ddpm28"]):
        argv += ["--preset", preset]
    for limit in (args.limit_samples if args.limit_samples is not None else ["ddpm=16"]):
        argv += ["--limit-samples", limit]
    if args.images_per_class:
        argv += ["--images-per-class", str(args.images_per_class)]
    if args.resume:
        argv.append("--resume")
    code = compare(argv)
    if code != 0:
        raise SystemExit(f"compare_generators.py failed with exit status {code}")
    table = read_json(out / "comparison" / "table.json")
    summary = {"benchmark": "compare_generators", "date": _dt.datetime.now().isoformat(timespec="seconds"),
               "arguments": vars(args), "extractor": extractor, "classifier_seconds": classifier_seconds,
               "total_seconds": time.perf_counter() - started, **table}
    path = write_json(RESULTS / f"{out.name}.json", summary)
    print(f"total {summary['total_seconds'] / 60:.1f} min; wrote {path} and {out / 'comparison' / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
