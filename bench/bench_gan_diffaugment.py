"""DiffAugment against a discriminator that memorises (issue 19): FreezeD fine-tunes of a rare class
with and without it at equal steps, and the Matos DCGAN at 28 px for N minutes with and without it.

Part ``freezed`` (N&Z's route on a scarce class):

1. the kept training set: ``--class`` (basophils) cut to ``--limit`` of its images (10 %: 85 of
   849 on pbc128), chosen with the seed as the study does, written to ``OUT/data/train_kept.csv``;
2. a Vanilla-GAN base on the kept set at ``--size`` (32 px; ``--base-preset``, default gan_fast),
   or an existing one (``--base RUN``);
3. two FreezeD fine-tunes on the kept images of the class (``--finetune-preset``,
   default nz2023_gan_finetune: the two output-side discriminator convolutions and the
   generator's batch norm frozen), the same epochs, batch and images, so the same number of
   steps: ``augment = []`` and ``augment = --augment`` (DiffAugment: colour, translation,
   cutout); ``--ada`` adds a third with ADA;
4. each evaluated against the validation images of the class with a domain extractor (the
   penultimate layer of a classifier trained on the kept images, ``--extractor`` or trained
   here with classifier_fast): FID, KID, precision and recall over ``--seeds`` seeds of
   ``--n`` images (capped at the real count).

Part ``dcgan`` (the 25-minute comparison's collapse): ``matos2025_dcgan28`` on the full
training set for ``--dcgan-minutes`` of wall-clock training per arm (epochs are added by
resuming while the budget lasts; set-up time counts), without and with DiffAugment,
evaluated against the validation set (all classes) with the same extractor; the table gives
the steps each arm took, the final mean D(real) and D(fake) (0.5 and 0.5 with a recall near 0
is the collapse).

The measured goals (issue 19): basophil domain FID with DiffAugment at most half of
without; DCGAN after 10 minutes with DiffAugment recall >= 0.3 and domain FID <= 61.

Usage:
    python bench/bench_gan_diffaugment.py --data ../shared/data/pbc128/train --val ../shared/data/pbc128/val \\
        --out runs/bench-diffaugment
    python bench/bench_gan_diffaugment.py ... --parts freezed --base runs/gan-base32 --extractor runs/clf32
    python bench/bench_gan_diffaugment.py --smoke --out /tmp/bench-da     # the shipped sample, a few minutes
Writes OUT/report.json (and, unless --smoke, bench/results/gan-diffaugment-<date>.json) and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as _dt
import gc
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
DIFFAUGMENT = "color,translation,cutout"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", default=str(SHARED / "pbc128" / "train"), help="training split (class folders)")
    parser.add_argument("--val", default=str(SHARED / "pbc128" / "val"), help="validation split (the real set)")
    parser.add_argument("--out", required=True, help="folder for the runs and report.json")
    parser.add_argument("--parts", default="freezed,dcgan", help="comma-separated: freezed, dcgan")
    parser.add_argument("--size", type=int, default=32, help="image size of the FreezeD part")
    parser.add_argument("--class", dest="class_name", default="basophil", help="the scarce class")
    parser.add_argument("--limit", type=float, default=0.1, help="fraction (or count) of the class kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    parser.add_argument("--augment", default=DIFFAUGMENT, help="the DiffAugment policy of the augmented arms")
    parser.add_argument("--ada", action="store_true", help="also an arm with ADA (adaptive probability)")
    parser.add_argument("--base", help="existing base vanilla_gan run (skips training one)")
    parser.add_argument("--base-preset", default="gan_fast")
    parser.add_argument("--base-epochs", type=int, default=30)
    parser.add_argument("--base-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--finetune-preset", default="nz2023_gan_finetune")
    parser.add_argument("--finetune-epochs", type=int, default=200,
                        help="epochs of every fine-tune (85 images, batch 16: 5 steps an epoch)")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                        help="fine-tune override (default: learning rates 1e-4, half the gan_fast base's; "
                             "N&Z's 3e-6 is for their 1024-wide network)")
    parser.add_argument("--dcgan-preset", default="matos2025_dcgan28")
    parser.add_argument("--dcgan-minutes", type=float, help="training budget of each DCGAN arm (default 10)")
    parser.add_argument("--dcgan-set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--extractor", help="domain classifier (.keras or run) for the features "
                                            "(default: train classifier_fast on the kept images)")
    parser.add_argument("--classifier-epochs", type=int, default=10)
    parser.add_argument("--n", type=int, default=1000, help="images per set and seed (capped at the real count)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true",
                        help="tiny settings on the shipped sample (checks the script, measures nothing)")
    args = parser.parse_args(argv)
    if args.smoke:
        from cellgen.sample_data import sample_path

        args.data, args.val = str(sample_path("train")), str(sample_path("val"))
        args.limit, args.base_epochs, args.finetune_epochs, args.classifier_epochs = 0.5, 1, 1, 1
        args.base_set = ["depth_g=32", "depth_d=8", "batch_size=16"] + args.base_set
        args.finetune_set = ["batch_size=8"] + args.finetune_set
        args.dcgan_set = ["depth_g=32", "depth_d=8", "batch_size=32"] + args.dcgan_set
        args.dcgan_minutes = 0.3 if args.dcgan_minutes is None else args.dcgan_minutes
        args.n, args.seeds = 12, 1
    if args.dcgan_minutes is None:
        args.dcgan_minutes = 10.0
    if not args.finetune_set or all(not item.startswith(("g_learning_rate", "d_learning_rate"))
                                    for item in args.finetune_set):
        args.finetune_set = ["g_learning_rate=1e-4", "d_learning_rate=1e-4"] + args.finetune_set
    return args


def settings(items) -> dict:
    return dict(item.split("=", 1) for item in items)


def log(message: str) -> None:
    print(f"[{_dt.datetime.now():%H:%M:%S}] {message}", flush=True)


def reset_keras() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


def train_gan(request, resume: bool = False):
    """Trains (or resumes) a Vanilla-GAN run through the library; returns the run directory."""
    from cellgen.gan.train_lib import resolve_config, train

    request = dataclasses.replace(request, resume=resume)
    run = train(resolve_config(request), resume=resume, verbose=2)
    reset_keras()
    return run


def train_for_minutes(request, minutes: float) -> dict:
    """One epoch, then resumed sessions with as many epochs as the rest of the budget holds
    (estimated from the epochs so far and the last session's set-up time)."""
    from cellgen.runs import read_json

    budget, started = minutes * 60, time.perf_counter()
    first = dataclasses.replace(request, overrides={**request.overrides, "epochs": 1})
    run = train_gan(first)
    done, sessions = 1, 1
    while True:
        elapsed = time.perf_counter() - started
        fit_seconds = float(read_json(run.path / "metrics" / "train.json")["train_seconds"])
        per_epoch = fit_seconds / done
        overhead = max(0.0, elapsed - fit_seconds) / sessions
        more = int((budget - elapsed - overhead) // per_epoch) if per_epoch > 0 else 0
        if more < 1:
            break
        resumed = dataclasses.replace(request, overrides={"epochs": done + more}, preset=None)
        run = train_gan(resumed, resume=True)
        done, sessions = done + more, sessions + 1
    return {"epochs": done, "sessions": sessions, "wall_seconds": time.perf_counter() - started}


def run_summary(run_path: Path) -> dict:
    from cellgen.runs import read_json

    metrics = read_json(run_path / "metrics" / "train.json")
    return {"epochs": metrics["epochs"], "steps": metrics["optimizer_iterations"],
            "batch_size": metrics["batch_size"], "training_images": metrics["training_images"],
            "train_seconds": metrics["train_seconds"], "final": metrics["final"],
            "augment": metrics.get("augment"), "ada": metrics.get("ada")}


def write_kept_csv(args, out: Path) -> Path:
    from cellgen.data import DataReader

    limit = int(args.limit) if args.limit >= 1 else args.limit
    kept = DataReader(args.data, image_size=args.size, batch_size=1, shuffle=False, seed=args.seed,
                      class_limits={args.class_name: limit})
    path = out / "data" / "train_kept.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        for file, label in kept.kept_files():
            writer.writerow([str(Path(file).resolve()), label])
    log(f"kept training set: {kept.class_counts()} -> {path}")
    return path


def domain_extractor(args, kept_csv: Path, out: Path) -> str:
    """``--extractor``, or a classifier_fast trained (once) on the kept images at ``--size``."""
    if args.extractor:
        return args.extractor
    folder = out / "feature_classifier"
    found = sorted(folder.rglob("best.keras")) if folder.is_dir() else []
    if not found:
        from cellgen.cli.evaluate_classifier import main as classifier_main

        log("training the domain classifier on the kept images")
        code = classifier_main(["--config", "classifier_fast", "--train", str(kept_csv), "--val", args.val,
                                "--test", args.val, "--out", str(folder), "--size", str(args.size),
                                "--arms", "baseline", "--seeds", "1", "--seed", str(args.seed),
                                "--epochs", str(args.classifier_epochs), "--precision", args.precision,
                                "--set", "save_models=true", "--quiet"])
        reset_keras()
        found = sorted(folder.rglob("best.keras"))
        if code != 0 or not found:
            raise SystemExit(f"the domain classifier in {folder} failed (exit {code})")
    return str(found[0])


def evaluate(run_path: Path, real: str, extractor: str, args, class_name: str | None, train=None) -> dict:
    from cellgen.evaluate.generated import evaluate_generated
    from cellgen.sampling import load_sampler

    result = evaluate_generated(real, load_sampler(run_path), extractor, n=args.n, seeds=args.seeds,
                                class_name=class_name, train=train, memorization=train is not None,
                                kid_subset_size=min(1000, args.n), kid_subsets=20, progress=False,
                                out_dir=run_path.parent.parent / "eval" / run_path.name)
    reset_keras()
    summary = {name: values["mean"] for name, values in result["summary"].items()}
    summary.update({f"{name}_std": values["std"] for name, values in result["summary"].items()})
    summary["n_used"] = result["settings"]["n_used"]
    summary["notes"] = result["notes"]
    return summary


def arms(args) -> dict[str, dict]:
    chosen = {"none": {"augment": ""}, "diffaugment": {"augment": args.augment}}
    if args.ada:
        chosen["ada"] = {"augment": args.augment, "ada": "true"}
    return chosen


def part_freezed(args, out: Path, common: dict) -> dict:
    from cellgen.config import RunRequest

    kept_csv = write_kept_csv(args, out)
    base = Path(args.base) if args.base else out / "runs" / "base"
    if not args.base and not (base / "COMPLETE.json").is_file():
        log(f"training the base Vanilla-GAN ({args.base_preset}, {args.base_epochs} epochs, {args.size} px)")
        request = RunRequest(preset=args.base_preset, out=str(base), overrides={
            **common, "data": str(kept_csv), "image_size": args.size, "epochs": args.base_epochs,
            **settings(args.base_set)})
        train_gan(request, resume=(base / "config.json").is_file())
    extractor = domain_extractor(args, kept_csv, out)
    results = {}
    for arm, fields in arms(args).items():
        run_path = out / "runs" / f"freezed-{arm}"
        if not (run_path / "COMPLETE.json").is_file():
            log(f"FreezeD fine-tune '{arm}' on the kept {args.class_name} images ({args.finetune_epochs} epochs)")
            request = RunRequest(preset=args.finetune_preset, out=str(run_path), finetune_from=str(base),
                                 class_name=args.class_name, overrides={
                                     **common, "data": str(kept_csv), "epochs": args.finetune_epochs,
                                     "sample_count": 16, **fields, **settings(args.finetune_set)})
            train_gan(request, resume=(run_path / "config.json").is_file())
        log(f"evaluating '{arm}' against the validation {args.class_name} images")
        results[arm] = {**run_summary(run_path),
                        **evaluate(run_path, args.val, extractor, args, args.class_name, train=str(kept_csv))}
    return {"kept_csv": str(kept_csv), "base": str(base), "extractor": extractor, "arms": results}


def part_dcgan(args, out: Path, common: dict, extractor: str | None) -> dict:
    from cellgen.config import RunRequest

    if extractor is None:
        extractor = domain_extractor(args, write_kept_csv(args, out), out)
    results = {}
    for arm, fields in arms(args).items():
        run_path = out / "runs" / f"dcgan-{arm}"
        timing = None
        if not (run_path / "COMPLETE.json").is_file():
            log(f"DCGAN '{arm}' ({args.dcgan_preset}) for {args.dcgan_minutes:g} min")
            request = RunRequest(preset=args.dcgan_preset, out=str(run_path), overrides={
                **common, "data": args.data, **fields, **settings(args.dcgan_set)})
            timing = train_for_minutes(request, args.dcgan_minutes)
        log(f"evaluating DCGAN '{arm}' against the validation set")
        results[arm] = {**run_summary(run_path), "budget": timing,
                        **evaluate(run_path, args.val, extractor, args, None)}
    return {"minutes": args.dcgan_minutes, "extractor": extractor, "arms": results}


def table(report: dict) -> str:
    lines = []
    for part in ("freezed", "dcgan"):
        if part not in report:
            continue
        lines.append(f"\n{part}: {'FreezeD fine-tune, equal steps' if part == 'freezed' else 'DCGAN 28 px, equal minutes'}")
        lines.append(f"{'arm':>12} {'steps (G/D)':>12} {'fit min':>8} {'FID':>9} {'KID':>8} {'precision':>9} "
                     f"{'recall':>7} {'D(real)':>8} {'D(fake)':>8}")
        for arm, row in report[part]["arms"].items():
            steps = row["steps"]
            steps_text = f"{steps['generator']}/{steps['discriminator']}" if isinstance(steps, dict) else str(steps)
            final = row.get("final", {})
            lines.append(f"{arm:>12} {steps_text:>12} {row['train_seconds'] / 60:>8.1f} {row['fid']:>9.2f} "
                         f"{row['kid']:>8.4f} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                         f"{final.get('d_real', float('nan')):>8.3f} {final.get('d_fake', float('nan')):>8.3f}")
        base = report[part]["arms"].get("none")
        if base and base["fid"] > 0:
            for arm, row in report[part]["arms"].items():
                if arm != "none":
                    lines.append(f"  FID {arm} / none: {row['fid'] / base['fid']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    from cellgen.runs import environment_info

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    unknown = [part for part in parts if part not in ("freezed", "dcgan")]
    if unknown:
        raise SystemExit(f"--parts: unknown {', '.join(unknown)} (choose freezed, dcgan)")
    common = {"seed": args.seed, "precision": args.precision}
    started = time.perf_counter()
    report: dict = {"benchmark": "gan_diffaugment", "date": _dt.datetime.now().isoformat(timespec="seconds"),
                    "machine": environment_info(), "smoke": args.smoke,
                    "settings": {key: value for key, value in vars(args).items()}}
    extractor = None
    if "freezed" in parts:
        report["freezed"] = part_freezed(args, out, common)
        extractor = report["freezed"]["extractor"]
    if "dcgan" in parts:
        report["dcgan"] = part_dcgan(args, out, common, extractor)
    report["seconds"] = time.perf_counter() - started
    text = json.dumps(report, indent=2, default=float) + "\n"
    (out / "report.json").write_text(text, encoding="utf-8")
    print(table(report))
    if not args.smoke:
        RESULTS.mkdir(parents=True, exist_ok=True)
        result = RESULTS / f"gan-diffaugment-{_dt.datetime.now():%Y-%m-%d}.json"
        result.write_text(text, encoding="utf-8")
        print(f"wrote {result}")
    print(f"wrote {out / 'report.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
