"""The class-conditional DDIM (issue 16) under a wall-clock training budget: domain FID, precision /
recall and class fidelity over guidance weights, FID against sampler steps, against ``ddim_fast``.

Trains ``--preset`` (default ``configs/ddim_cond32.toml``) on ``--data`` (default
``../shared/data/pbc128/train``) at ``--size`` px for ``--budget-minutes`` of wall-clock time
(the first call trains one epoch to measure the speed, later calls resume with as many epochs
as fit, as ``compare_generators.py`` does; set-up time counts), and, unless ``--baseline none``,
the unconditional ``ddim_fast`` for the same budget in the same run. Then:

- a **domain classifier** (``configs/classifier_fast.toml``, the project's small CNN) is trained
  on the real training images only (validated on ``--val``). Its penultimate features are the
  domain features of FID (Heusel et al. 2017, :mod:`cellgen.evaluate.fid`) and precision /
  recall (Kynkaanniemi et al. 2019, k = 5, :mod:`cellgen.evaluate.prdc`), each against every
  image of ``--val``; its predictions give the **class fidelity**: the fraction of generated
  images of each requested class that it assigns to that class (its accuracy on real
  validation images of each class is the reference);
- ``--samples`` class-balanced images (the same number per class) through the sampler interface
  the classifier study uses (:func:`cellgen.sampling.load_sampler`'s ``DiffusionSampler``) at
  each guidance weight of ``--guidance`` (default 0, 1, 2, 4; 0 = unconditional model,
  1 = plain conditional) with the run's sampler and steps, once per x0 threshold of
  ``--thresholds`` (default: the run's ``sample_threshold``; ``none static dynamic`` compares
  them, see :func:`cellgen.diffusion.solvers.thresholded_denoiser`);
- FID against steps (``--steps``) for each sampler of ``--samplers`` at the run's guidance
  (network calls: steps, Heun 2 x steps - 1; guidance doubles the batch of each call);
- the baseline's FID / precision / recall from as many unconditional samples, and its
  predicted-class histogram;
- the floor: FID / precision / recall of as many real training images against ``--val``;
- a PNG per model: for each class a row of generated images next to a row of real ones.

Every figure comes with the machine (CPU model, bf16 or not), the date and the command line.

Usage:
    python bench/bench_ddim_cond.py                                   # 25 min each, pbc128 at 32 px
    python bench/bench_ddim_cond.py --budget-minutes 10 --baseline none --set prediction=velocity
    python bench/bench_ddim_cond.py --data cellgen/sample_data/pbc-64/train \\
        --val cellgen/sample_data/pbc-64/val --size 16 --budget-minutes 1 --samples 64 \\
        --guidance 0 2 --steps 5 10 --classifier-epochs 1 --set depth=2 --set base_width=8   # smoke
    python bench/bench_ddim_cond.py --out runs/ddim-cond-2026-12-02 --reuse --baseline none \
        --guidance 1 2 3 --thresholds none static dynamic --samplers dpmpp_2m --steps 20   # re-judge trained runs
Writes OUT (default runs/ddim-cond-<date>/: run directories, the classifier, grids) and
bench/results/ddim-cond-<date>.json (or --name).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
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
    parser.add_argument("--data", default=str(DATA / "train"), help="training images (class folders)")
    parser.add_argument("--val", default=str(DATA / "val"), help="real images FID / precision / recall compare to")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--preset", default="ddim_cond32")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a field of --preset (repeatable)")
    parser.add_argument("--baseline", default="ddim_fast", help="unconditional preset trained alike, or 'none'")
    parser.add_argument("--baseline-set", action="append", default=[], metavar="KEY=VALUE")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--budget-minutes", type=float, default=25.0, help="wall-clock training budget per model")
    length.add_argument("--epochs", type=int, default=None, help="train this many epochs instead of a budget")
    parser.add_argument("--samples", type=int, default=1000, help="generated images per measurement (class-balanced)")
    parser.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0, 4.0])
    parser.add_argument("--thresholds", nargs="+", default=None, choices=["none", "static", "dynamic"],
                        help="x0 thresholds of the guidance sweep (default: the run's sample_threshold)")
    parser.add_argument("--reuse", action="store_true",
                        help="judge the finished runs already in --out instead of training them again")
    parser.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp_2m", "heun"])
    parser.add_argument("--steps", type=int, nargs="+", default=[5, 10, 20, 40])
    parser.add_argument("--sample-batch", type=int, default=125)
    parser.add_argument("--classifier-epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default=None, help="training precision (default: the presets')")
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default=None, help="results file name (default ddim-cond-<date>)")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


# Training ----------------------------------------------------------------------


def diffusion_config(preset: str, overrides: list[str], data: str, out: Path, size: int, seed: int,
                     precision: str | None):
    from cellgen.config import load_config, parse_set_options
    from cellgen.diffusion.config import DiffusionConfig

    values = {**parse_set_options(overrides), "data": data, "out": str(out), "image_size": size, "seed": seed}
    if precision:
        values["precision"] = precision
    return load_config(DiffusionConfig, preset, values)


def train_for_budget(config, budget_seconds: float | None, epochs: int | None, verbose: int) -> dict:
    """Trains ``config`` through the library's training function for a wall-clock budget (or epochs).

    With a budget: one epoch first, then resumed calls with as many epochs as the measured
    speed says fit (:func:`cellgen.study.compare.epochs_that_fit`).
    """
    from cellgen.diffusion.train_lib import train
    from cellgen.study.compare import _last_epoch_seconds, epochs_that_fit

    calls, total, done = [], 0.0, 0

    def call(target: int) -> None:
        nonlocal total, done
        started = time.perf_counter()
        train(config.replace(epochs=target), resume=done > 0, verbose=verbose)
        seconds = time.perf_counter() - started
        entry = {"epochs_from": done, "epochs_to": target, "seconds": seconds}
        if target - done >= 2:
            entry["epoch_seconds"] = _last_epoch_seconds(Path(config.out))
        calls.append(entry)
        total += seconds
        done = target

    if budget_seconds is None:
        call(epochs)
    else:
        call(1)
        while True:
            more, per_epoch = epochs_that_fit(calls, budget_seconds - total)
            if more < 1:
                break
            print(f"  {more} more epoch(s) at ~{per_epoch:.0f} s each ({(budget_seconds - total) / 60:.1f} min left)",
                  flush=True)
            call(done + more)
    return {"train_seconds": total, "epochs": done, "calls": calls,
            "over_budget": budget_seconds is not None and total > budget_seconds}


# Judging -----------------------------------------------------------------------


def domain_classifier(train: str, val: str, size: int, out: Path, epochs: int, seed: int):
    """The project's small CNN (classifier_fast) trained on the real training images only."""
    from cellgen.classify.config import ClassifierConfig
    from cellgen.classify.train_lib import run_experiment
    from cellgen.config import load_config

    found = sorted(out.rglob("best.keras"))
    if not found:
        config = load_config(ClassifierConfig, "classifier_fast", {
            "data": train, "val_data": val, "test_data": val, "out": str(out), "arms": ["baseline"], "seeds": 1,
            "image_size": size, "epochs": epochs, "seed": seed})
        run_experiment(config, verbose=2)
        found = sorted(out.rglob("best.keras"))
    from cellgen.data import load_classes

    return found[0], load_classes(out / "classes.json")


class Judge:
    """Domain features and class predictions of one classifier, against the real validation set."""

    def __init__(self, classifier_path: Path, classes: list[str], val: str, size: int):
        import keras

        from cellgen.data import DataReader
        from cellgen.evaluate.features import ClassifierExtractor, _register_cellgen_layers

        _register_cellgen_layers()
        self.model = keras.saving.load_model(str(classifier_path), safe_mode=True, compile=False)
        self.extractor = ClassifierExtractor(self.model)
        self.classes = classes
        reader = DataReader(val, image_size=size, batch_size=256, shuffle=False)
        images, labels = reader.load_all()
        names = [reader.classes[label] for label in labels]
        self.real_features = self.extractor(images)
        predicted = self.predict(images)
        self.real_accuracy = {name: float(np.mean([p == name for p, n in zip(predicted, names) if n == name]))
                              for name in classes if name in names}
        self.val_images = len(images)

    def predict(self, images) -> list[str]:
        probabilities = []
        for start in range(0, len(images), 256):
            probabilities.append(np.asarray(self.model(images[start:start + 256], training=False)))
        return [self.classes[index] for index in np.concatenate(probabilities).argmax(axis=1)]

    def score(self, images, requested: list[str] | None = None) -> dict:
        from cellgen.evaluate.fid import fid_from_features
        from cellgen.evaluate.prdc import precision_recall_density_coverage

        features = self.extractor(images)
        result = {"images": len(images), "fid": fid_from_features(self.real_features, features),
                  **precision_recall_density_coverage(self.real_features, features, nearest_k=5)}
        predicted = self.predict(images)
        if requested is not None:
            per_class = {name: float(np.mean([p == name for p, r in zip(predicted, requested) if r == name]))
                         for name in dict.fromkeys(requested)}
            result["fidelity"] = per_class
            result["fidelity_mean"] = float(np.mean(list(per_class.values())))
        else:
            result["predicted_classes"] = {name: predicted.count(name) for name in self.classes}
        return result


def balanced(sampler, classes: list[str], total: int, seed: int, batch: int):
    """``total // len(classes)`` images of every class (class-balanced), their names, and the seconds."""
    per_class = max(1, total // len(classes))
    started = time.perf_counter()
    images = [sampler.sample(per_class, seed=seed + 1009 * index, class_name=name, batch_size=batch)
              for index, name in enumerate(classes)]
    seconds = time.perf_counter() - started
    return np.concatenate(images), [name for name in classes for _ in range(per_class)], seconds


def class_rows(generated, generated_names, real_images, real_names, classes, columns: int = 8):
    """Per class: a row of generated images, then a row of real ones (row labels say which)."""
    rows, labels = [], []
    for name in classes:
        for images, names, kind in ((generated, generated_names, "gen"), (real_images, real_names, "real")):
            chosen = [image for image, label in zip(images, names) if label == name][:columns]
            chosen += [np.full_like(images[0], -1.0)] * (columns - len(chosen))
            rows.extend(chosen)
            labels.append(f"{name} {kind}")
    return np.stack(rows), labels


# Main --------------------------------------------------------------------------


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    from cellgen.data import DataReader
    from cellgen.diffusion.sampling import DiffusionSampler, load_diffusion_model
    from cellgen.diffusion.solvers import network_calls
    from cellgen.plots import save_image_grid
    from cellgen.runs import environment_info, write_json

    stamp = _dt.date.today().isoformat()
    out = Path(args.out) if args.out else RUNS / f"ddim-cond-{stamp}"
    out.mkdir(parents=True, exist_ok=True)
    budget = None if args.epochs is not None else args.budget_minutes * 60.0
    verbose = 2 if args.quiet else 1
    load_at_start = os.getloadavg()
    report = {"benchmark": "ddim_cond", "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join([sys.executable, *sys.argv]), "arguments": vars(args),
              "machine": environment_info(), "load_average_start": load_at_start, "models": {}}

    models = {"conditional": (args.preset, args.set)}
    if args.baseline.lower() != "none":
        models["baseline"] = (args.baseline, args.baseline_set)
    runs = {}
    for role, (preset, overrides) in models.items():
        runs[role] = out / role
        if args.reuse and (out / role / "COMPLETE.json").exists():
            print(f"reusing the finished {role} run in {out / role}", flush=True)
            report["models"][role] = {"preset": preset, "overrides": overrides, "reused": str(out / role)}
            continue
        config = diffusion_config(preset, overrides, args.data, out / role, args.size, args.seed, args.precision)
        print(f"training {role} ({preset}) for "
              + (f"{args.budget_minutes:g} min" if budget is not None else f"{args.epochs} epochs"), flush=True)
        timing = train_for_budget(config, budget, args.epochs, verbose)
        report["models"][role] = {"preset": preset, "overrides": overrides, **timing}
        keras.backend.clear_session()

    print("training the domain classifier on real images ...", flush=True)
    classifier_path, classes = domain_classifier(args.data, args.val, args.size, out / "classifier",
                                                 args.classifier_epochs, args.seed)
    judge = Judge(classifier_path, classes, args.val, args.size)
    report["classifier"] = {"path": str(classifier_path), "classes": classes,
                            "real_val_accuracy_per_class": judge.real_accuracy, "val_images": judge.val_images}

    # The floor: real training images, class-balanced, against the validation set.
    train_reader = DataReader(args.data, image_size=args.size, batch_size=256, shuffle=False)
    real_images, real_labels = train_reader.load_all()
    real_names = [train_reader.classes[label] for label in real_labels]
    rng = np.random.default_rng(args.seed)
    per_class = max(1, args.samples // len(train_reader.classes))
    chosen = np.concatenate([rng.permutation(np.flatnonzero(real_labels == index))[:per_class]
                             for index in range(len(train_reader.classes))])
    report["real_train_vs_val"] = judge.score(real_images[chosen], [real_names[i] for i in chosen])
    print(f"real train vs val: FID {report['real_train_vs_val']['fid']:.4g}, "
          f"precision {report['real_train_vs_val']['precision']:.2f}, "
          f"recall {report['real_train_vs_val']['recall']:.2f}, "
          f"fidelity {report['real_train_vs_val']['fidelity_mean']:.2f}", flush=True)

    model, config = load_diffusion_model(runs["conditional"])
    if not model.is_conditional:
        raise SystemExit(f"error: {args.preset} is not a conditional preset (conditional = true)")
    sample_classes = model.sample_classes
    default_sampler = model.resolve_sampler(None)
    default = {"sampler": default_sampler, "steps": config.diffusion_steps, "guidance": config.guidance}
    report["models"]["conditional"]["sampling_defaults"] = default

    guidance_rows = []
    run_threshold = config.sample_threshold
    for threshold, weight in [(t, w) for t in (args.thresholds or [run_threshold]) for w in args.guidance]:
        model.config.sample_threshold = threshold  # read when the sampler graph is built (one per setting)
        sampler = DiffusionSampler(model, steps=config.diffusion_steps, guidance=weight, sampler=default_sampler)
        images, names, seconds = balanced(sampler, sample_classes, args.samples, args.seed, args.sample_batch)
        row = {"guidance": weight, "threshold": threshold, "sampler": default_sampler,
               "steps": config.diffusion_steps, "images_per_second": len(images) / seconds,
               **judge.score(images, names)}
        guidance_rows.append(row)
        print(f"  guidance {weight:g}, threshold {threshold}: FID {row['fid']:.4g}, precision {row['precision']:.2f}, "
              f"recall {row['recall']:.2f}, fidelity {row['fidelity_mean']:.2f} "
              f"({row['images_per_second']:.1f} img/s)", flush=True)
        if weight == config.guidance and threshold == run_threshold:
            grid, labels = class_rows(images, names, real_images, real_names, sample_classes)
            save_image_grid(grid, out / "conditional_grid.png", columns=8, row_labels=labels,
                            title=f"{args.preset}: generated (w={weight:g}, {default_sampler} "
                                  f"{config.diffusion_steps}) and real", scale=max(1, 64 // args.size))
    report["guidance_sweep"] = guidance_rows
    model.config.sample_threshold = run_threshold

    steps_rows = []
    for solver in args.samplers:
        for steps in args.steps:
            sampler = DiffusionSampler(model, steps=steps, guidance=config.guidance, sampler=solver)
            images, names, seconds = balanced(sampler, sample_classes, args.samples, args.seed + 7, args.sample_batch)
            row = {"sampler": solver, "steps": steps, "network_calls": network_calls(solver, steps),
                   "guidance": config.guidance, "images_per_second": len(images) / seconds,
                   **judge.score(images, names)}
            steps_rows.append(row)
            print(f"  {solver} {steps} steps ({row['network_calls']} calls): FID {row['fid']:.4g}, "
                  f"precision {row['precision']:.2f}, recall {row['recall']:.2f}, "
                  f"fidelity {row['fidelity_mean']:.2f} ({row['images_per_second']:.1f} img/s)", flush=True)
    report["steps_sweep"] = steps_rows
    del model
    keras.backend.clear_session()

    if "baseline" in runs:
        baseline, baseline_config = load_diffusion_model(runs["baseline"])
        sampler = DiffusionSampler(baseline)
        count = max(1, args.samples // len(classes)) * len(classes)
        started = time.perf_counter()
        images = np.concatenate([sampler.sample(min(args.sample_batch, count - start), seed=args.seed + start,
                                                batch_size=args.sample_batch)
                                 for start in range(0, count, args.sample_batch)])
        seconds = time.perf_counter() - started
        row = {"sampler": sampler.method, "steps": sampler.steps, "images_per_second": len(images) / seconds,
               **judge.score(images)}
        report["baseline"] = row
        print(f"  baseline {args.baseline}: FID {row['fid']:.4g}, precision {row['precision']:.2f}, "
              f"recall {row['recall']:.2f}", flush=True)
        save_image_grid(images[:64], out / "baseline_grid.png", columns=8,
                        title=f"{args.baseline} (unconditional)", scale=max(1, 64 // args.size))

    # Figures against the goals (25 minutes at 32 px on all of pbc128/train).
    chosen_row = next((row for row in guidance_rows if row["guidance"] == config.guidance
                       and row["threshold"] == run_threshold), guidance_rows[-1])
    goals = {"fid <= 50": chosen_row["fid"],
             "precision >= 0.7": chosen_row["precision"], "recall >= 0.7": chosen_row["recall"],
             "class fidelity >= 0.85 (mean over classes)": chosen_row["fidelity_mean"]}
    if "baseline" in report:
        goals["fid <= baseline fid / 3"] = {"conditional": chosen_row["fid"],
                                            "baseline / 3": report["baseline"]["fid"] / 3}
    report["goals"] = goals
    report["load_average_end"] = os.getloadavg()

    print(f"\n{'guidance':>8} {'x0 clip':>8} {'FID':>8} {'prec':>6} {'recall':>6} {'fidelity':>8}   per class")
    for row in guidance_rows:
        per_class = " ".join(f"{name[:4]}={value:.2f}" for name, value in row["fidelity"].items())
        print(f"{row['guidance']:>8g} {row['threshold']:>8} {row['fid']:>8.4g} {row['precision']:>6.2f} {row['recall']:>6.2f} "
              f"{row['fidelity_mean']:>8.2f}   {per_class}")
    print(f"\n{'sampler':>9} {'steps':>5} {'calls':>5} {'FID':>8} {'prec':>6} {'recall':>6} {'img/s':>7}")
    for row in steps_rows:
        print(f"{row['sampler']:>9} {row['steps']:>5} {row['network_calls']:>5} {row['fid']:>8.4g} "
              f"{row['precision']:>6.2f} {row['recall']:>6.2f} {row['images_per_second']:>7.1f}")
    print("real accuracy of the classifier per class: "
          + ", ".join(f"{name} {value:.2f}" for name, value in judge.real_accuracy.items()))
    for name, value in goals.items():
        print(f"  goal {name}: {value}")
    path = write_json(RESULTS / f"{args.name or out.name}.json", report)
    print(f"wrote {path}; run directories and grids in {out}")
    return 0


import numpy as np  # noqa: E402  (after the sys.path set-up, like the other imports)

if __name__ == "__main__":
    raise SystemExit(main())
