"""``compare_generators.py``: the Matos (2025) comparison (CVAE, DCGAN, DDPM) plus the cellgen DDIM.

Trains every model on the same data at one size (28 px: BloodMNIST is the PBC
dataset at 28 x 28) through its own training script, under equal epochs or an
equal wall-clock budget per model; times the sampling of 1,000 images; evaluates
each with the evaluation library (FID, KID, precision, recall; mean and std over
seeds, as Matos section 3.4); and writes ``OUT/table.md`` and ``OUT/table.json``
(Matos Table 4 with training time, sampling speed, KID, precision and recall)
and one grid per model next to real images (``OUT/grids/``).

Examples:
    # the paper's settings (each preset's epochs), Inception features, 5 seeds of 10,000 images
    python compare_generators.py --data ../shared/data/pbc128/train --out runs/compare28
    # 20 minutes of training per model, a domain classifier as feature extractor; on a CPU,
    # the DDPM (500 network calls per image) only generates 64 images
    python compare_generators.py --data ../shared/data/pbc128/train --out runs/compare28 \\
        --budget-minutes 20 --extractor runs/clf28/runs/baseline/seed-0/models/best.keras --n 2000 \\
        --seeds 5 --sample-pool 4000 --limit-samples ddpm=64
    # smaller trial: 64 images per class, 2 epochs each, two models
    python compare_generators.py --data DIR --out runs/try --images-per-class 64 --epochs 2 --models cvae,dcgan

Layout of OUT: ``runs/<model>/`` (each model's run directory), ``eval/<model>/``
(the evaluation report), ``grids/<model>.png`` and ``grids/all_models.png``,
``results/<model>.json`` (one finished model; ``--resume`` reuses them),
``table.md``, ``table.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from cellgen.cli.common import guarded


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the comparison.

    Attributes:
        name: short name used on the command line and for folders.
        label: name in the table.
        script: module whose ``main(argv)`` trains it (``--config --data --out --epochs --resume``).
        preset: its TOML preset under ``configs/``.
        kind: run kind its training script writes (the sampler registry key).
        sampler_options: options for :func:`cellgen.sampling.load_sampler`.
        paper_fid: Matos' FID of this preset's setting (mean, std), or None.
        sampling: how it samples, for the table.
    """

    name: str
    label: str
    script: str
    preset: str
    kind: str
    sampler_options: tuple[tuple[str, Any], ...] = ()
    paper_fid: tuple[float, float] | None = None
    sampling: str = ""


# Matos (2025) FIDs (mean +- std over 5 runs, BloodMNIST, pytorch-fid) of the settings the presets
# reproduce: Table 4 (each model's best) and, for the baseline DDPM U-Net, Table 3 (T = 500, 100 epochs).
PAPER_FID: dict[str, tuple[float, float]] = {
    "matos2025_cvae28": (170.05, 0.64),
    "matos2025_dcgan28": (166.85, 0.56),
    "matos2025_ddpm28_deep": (122.26, 0.76),
    "matos2025_ddpm28": (238.40, 0.62),
}

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("cvae", "Convolutional VAE (Matos 4.1)", "cellgen.cli.train_cvae", "matos2025_cvae28", "cvae",
              (), PAPER_FID["matos2025_cvae28"], "decoder, one pass"),
    ModelSpec("dcgan", "DCGAN (Matos 4.2)", "cellgen.cli.train_vanilla_gan", "matos2025_dcgan28", "vanilla_gan",
              (), PAPER_FID["matos2025_dcgan28"], "generator, one pass"),
    ModelSpec("ddpm", "DDPM, T = 500 (Matos 4.3)", "cellgen.cli.train_ddim", "matos2025_ddpm28_deep", "ddim",
              (), PAPER_FID["matos2025_ddpm28_deep"], "ancestral, all T steps"),
    ModelSpec("ddim", "DDIM, 20 steps (cellgen)", "cellgen.cli.train_ddim", "ddim_fast", "ddim",
              (("steps", 20), ("eta", 0.0)), None, "DDIM, 20 steps, eta 0"),
)
MODEL_NAMES = tuple(spec.name for spec in MODELS)


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
                        help="override a config key of one model (repeatable), e.g. cvae:latent_dim=32")
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
    parser.add_argument("--extractor", default="inception",
                        help="'inception' or a classifier (.keras file or run directory) for the features")
    parser.add_argument("--inception-weights", default="imagenet",
                        help="'imagenet', a local InceptionV3 no-top weights file, or 'none' (tests only)")
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


# Set-up and checks -----------------------------------------------------------


def selected_models(text: str, presets: Sequence[str]) -> list[ModelSpec]:
    """The models named in ``--models``, with ``--preset MODEL=PRESET`` applied."""
    from cellgen.config import ConfigError

    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise ConfigError(f"--models: unknown model(s) {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(MODEL_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--models: {text!r} names a model twice")
    replacements = {}
    for item in presets:
        model, separator, preset = item.partition("=")
        if not separator or model.strip() not in MODEL_NAMES or not preset.strip():
            raise ConfigError(f"--preset expects MODEL=PRESET with MODEL one of {', '.join(MODEL_NAMES)}; "
                              f"got {item!r}")
        replacements[model.strip()] = preset.strip()
    specs = {spec.name: spec for spec in MODELS}
    chosen = []
    for name in names:
        spec = specs[name]
        if name in replacements and replacements[name] != spec.preset:
            # Another preset: the paper's number applies only if it is one of Matos' settings.
            spec = dataclasses.replace(spec, preset=replacements[name], paper_fid=PAPER_FID.get(replacements[name]))
        chosen.append(spec)
    return chosen


def model_overrides(items: Sequence[str], models: Sequence[ModelSpec]) -> dict[str, list[str]]:
    """``--set MODEL:KEY=VALUE`` grouped by model."""
    from cellgen.config import ConfigError

    chosen = {spec.name for spec in models}
    overrides: dict[str, list[str]] = {spec.name: [] for spec in models}
    for item in items:
        model, separator, assignment = item.partition(":")
        if not separator or "=" not in assignment or model.strip() not in MODEL_NAMES:
            raise ConfigError(f"--set expects MODEL:KEY=VALUE with MODEL one of {', '.join(MODEL_NAMES)}; "
                              f"got {item!r}")
        if model.strip() in chosen:
            overrides[model.strip()].append(assignment.strip())
    return overrides


def check_stages_available(models: Sequence[ModelSpec]) -> None:
    """Raises a one-line RunError naming the first stage (script, preset or sampler) that is missing."""
    from cellgen.config import ConfigError, resolve_preset_path
    from cellgen.runs import RunError
    from cellgen.sampling import SAMPLER_LOADERS

    for spec in models:
        if importlib.util.find_spec(spec.script) is None:
            raise RunError(f"the {spec.name} stage is not available: its training script {spec.script} is "
                           f"missing (leave it out with --models)")
        try:
            resolve_preset_path(spec.preset)
        except ConfigError:
            raise RunError(f"the {spec.name} stage is not available: preset configs/{spec.preset}.toml is "
                           "missing (leave it out with --models, or pass --preset)") from None
        loader = SAMPLER_LOADERS.get(spec.kind, "")
        module = loader.split(":")[0]
        if not module or importlib.util.find_spec(module) is None:
            raise RunError(f"the {spec.name} stage is not available: no sampler for {spec.kind!r} runs "
                           f"({module or 'not registered'} is missing)")
    if importlib.util.find_spec("cellgen.evaluate.generated") is None:
        raise RunError("the evaluation stage is not available: cellgen.evaluate.generated is missing")


def sample_limits(items: Sequence[str], models: Sequence[ModelSpec]) -> dict[str, int]:
    """``--limit-samples MODEL=N`` as a dict (N >= 8: precision/recall need more than k = 5 neighbours)."""
    from cellgen.config import ConfigError

    limits: dict[str, int] = {}
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
    return {name: value for name, value in limits.items() if name in {spec.name for spec in models}}


def link_subset(data: Path, out: Path, per_class: int) -> Path:
    """``out/<class>/`` with links to the first ``per_class`` images (sorted by name) of each class."""
    import shutil

    from cellgen.data_reader import DataError
    from cellgen.images import is_image_file

    classes = sorted(entry for entry in data.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        raise DataError(f"--data {data}: --images-per-class needs one sub-folder per class")
    for folder in classes:
        files = sorted(path for path in folder.iterdir() if path.is_file() and is_image_file(path.name))
        if not files:
            raise DataError(f"{folder}: no images")
        target = out / folder.name
        target.mkdir(parents=True, exist_ok=True)
        for path in files[:per_class]:
            link = target / path.name
            if link.exists() or link.is_symlink():
                continue
            try:
                os.symlink(path.resolve(), link)
            except OSError:  # no symlinks (Windows without privileges): copy
                shutil.copy2(path, link)
    return out


# Training ----------------------------------------------------------------------


def _script_main(spec: ModelSpec) -> Callable[[Sequence[str]], int]:
    return importlib.import_module(spec.script).main


def _run_script(spec: ModelSpec, argv: list[str]) -> float:
    """Runs a training script's main(argv); returns its wall-clock seconds; raises on failure."""
    from cellgen.runs import RunError

    started = time.perf_counter()
    code = _script_main(spec)(argv)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RunError(f"training {spec.name} failed (exit status {code}; the error is printed above); "
                       f"fix it and rerun with --resume")
    return seconds


def train_model(spec: ModelSpec, run_dir: Path, data: str, size: int, seed: int, precision: str,
                overrides: Sequence[str], epochs: int | None, budget_seconds: float | None, resume: bool,
                quiet: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Trains one model through its script; returns ``{"seconds", "epochs", "calls", "over_budget"}``.

    With a budget, the first call trains one epoch; later calls resume the run with
    as many more epochs as the slowest epoch so far predicts will fit in what is left
    (each call's set-up time counts against the budget, as for a user).
    """
    from cellgen.runs import read_json

    base = ["--config", spec.preset, "--data", data, "--out", str(run_dir), "--size", str(size),
            "--seed", str(seed), "--precision", precision]
    for assignment in overrides:
        base += ["--set", assignment]
    if quiet:
        base.append("--quiet")
    timing_file = run_dir / "compare_timing.json"
    timing = read_json(timing_file) if resume and timing_file.is_file() else {"seconds": 0.0, "calls": []}
    done = _completed_epochs(run_dir)
    resuming = resume and (run_dir / "config.json").is_file()

    def call(target_epochs: int | None) -> None:
        nonlocal resuming, done
        argv = base + (["--epochs", str(target_epochs)] if target_epochs is not None else [])
        seconds = _run_script(spec, argv + (["--resume"] if resuming else []))
        before, done, resuming = done, _completed_epochs(run_dir), True
        timing["seconds"] += seconds
        entry = {"epochs_from": before, "epochs_to": done, "seconds": seconds}
        if done - before >= 2:
            entry["epoch_seconds"] = _last_epoch_seconds(run_dir)
        timing["calls"].append(entry)
        _write_timing(timing_file, timing)

    over_budget = False
    if budget_seconds is None:
        if not (run_dir / "COMPLETE.json").is_file() or (epochs is not None and done < epochs):
            log(f"training {spec.name}: " + (f"{epochs} epochs" if epochs else "the preset's epochs"))
            call(epochs)
    else:
        if done == 0:
            log(f"training {spec.name}: 1 epoch to measure its speed (budget {budget_seconds / 60:.3g} min)")
            call(1)
        while timing["calls"]:
            remaining = budget_seconds - timing["seconds"]
            more, per_epoch = epochs_that_fit(timing["calls"], remaining)
            if more < 1:
                break
            log(f"training {spec.name}: {more} more epoch(s) at ~{per_epoch:.1f} s each "
                f"({remaining / 60:.1f} min left)")
            previous = done
            call(done + more)
            if done <= previous:
                break  # the script trained nothing more: do not loop
        over_budget = timing["seconds"] > budget_seconds
    return {"seconds": timing["seconds"], "epochs": done, "calls": len(timing["calls"]), "over_budget": over_budget}


def epochs_that_fit(calls: Sequence[dict[str, Any]], remaining_seconds: float,
                    margin: float = 1.05) -> tuple[int, float]:
    """How many more epochs one more training call can run in ``remaining_seconds``.

    Each call costs set-up (data listing, building, tracing) plus its epochs. A call of two
    or more epochs measures one epoch directly (``epoch_seconds``, from its last two
    checkpoints) and its set-up as the rest; else, with calls of different lengths, both
    are fitted (least squares); with one length the set-up is counted in every epoch,
    which under-fills rather than overruns the budget. ``margin`` inflates the estimates
    for timing noise. Returns ``(epochs, seconds per epoch)``.
    """
    import numpy as np

    points = [(entry["epochs_to"] - entry["epochs_from"], entry["seconds"]) for entry in calls
              if entry["epochs_to"] > entry["epochs_from"]]
    if not points:
        return 0, float("inf")
    lengths = np.array([length for length, _ in points], dtype=float)
    seconds = np.array([value for _, value in points], dtype=float)
    per_epoch, setup = float(np.max(seconds / lengths)), 0.0
    measured = [entry for entry in calls if entry.get("epoch_seconds")]
    if measured:
        last = measured[-1]
        per_epoch = float(last["epoch_seconds"])
        setup = max(0.0, last["seconds"] - (last["epochs_to"] - last["epochs_from"]) * per_epoch)
    elif len(set(lengths.tolist())) > 1:
        slope, intercept = np.polyfit(lengths, seconds, 1)
        if slope > 0:
            per_epoch, setup = float(slope), max(0.0, float(intercept))
    per_epoch *= margin
    return max(0, int((remaining_seconds - setup * margin) // per_epoch)), per_epoch


def _last_epoch_seconds(run_dir: Path) -> float | None:
    """Duration of the last epoch: the time between the last two checkpoints (every stage
    checkpoints each epoch through ``cellgen.runs.TrainingState``)."""
    from cellgen.runs import TrainingState

    paths = TrainingState(run_dir / "checkpoints").checkpoint_paths()[-2:]
    if len(paths) < 2:
        return None
    seconds = (paths[1] / "state.json").stat().st_mtime - (paths[0] / "state.json").stat().st_mtime
    return seconds if seconds > 0 else None


def _completed_epochs(run_dir: Path) -> int:
    from cellgen.runs import TrainingState, read_json

    latest = TrainingState(run_dir / "checkpoints").latest()
    return int(read_json(latest / "state.json")["epoch"]) if latest is not None else 0


def training_steps(run_dir: Path) -> dict[str, int | None]:
    """``{"optimizer_steps", "batch_size"}`` of a trained run (None where unknown).

    Steps are the most any of the run's optimizers took: for a GAN that updates its generator
    several times per discriminator update (Matos' 3:1), the generator's.
    Epochs alone mislead across models: 15 epochs are 180 steps of 128 for the DDPM
    preset but 1,500 steps of 16 for ``ddim_fast``.
    """
    from cellgen.runs import TrainingState, read_json

    steps = TrainingState(run_dir / "checkpoints").optimizer_steps()
    config = run_dir / "config.json"
    batch_size = read_json(config).get("batch_size") if config.is_file() else None
    return {"optimizer_steps": max(steps.values()) if steps else None,
            "batch_size": int(batch_size) if batch_size else None}


def _write_timing(path: Path, timing: dict) -> None:
    from cellgen.runs import write_json

    write_json(path, timing)


# Sampling ------------------------------------------------------------------------


class ProportionalSampler:
    """Draws a conditional sampler's classes in given proportions (e.g. the training set's).

    The unconditional models learn the class mix of the data; a conditional model asked
    for "any class" draws them uniformly (``cellgen.sampling``). For a like-for-like
    comparison the CVAE's classes are drawn with the training frequencies instead.

    Args:
        sampler: a conditional sampler (``classes`` not None).
        proportions: class name -> weight (normalised here).

    Example:
        >>> counts = {"basophil": 849, "eosinophil": 2178}
        >>> mixed = ProportionalSampler(load_sampler("runs/cvae"), counts)  # doctest: +SKIP
    """

    def __init__(self, sampler, proportions: dict[str, float]):
        import numpy as np

        self.sampler = sampler
        self.kind = sampler.kind
        self.image_size = sampler.image_size
        self.classes = None
        names = [name for name in sampler.classes if proportions.get(name, 0) > 0]
        if not names:
            raise ValueError("ProportionalSampler: no class of the sampler has a positive proportion")
        weights = np.array([float(proportions[name]) for name in names])
        self.names, self.weights = names, weights / weights.sum()

    def sample(self, count: int, seed: int, class_name: str | None = None, batch_size: int = 64):
        import numpy as np

        if class_name is not None:
            return self.sampler.sample(count, seed, class_name=class_name, batch_size=batch_size)
        rng = np.random.default_rng([seed, 17])
        counts = rng.multinomial(count, self.weights)
        parts = [self.sampler.sample(int(number), seed=seed * 1009 + index, class_name=name, batch_size=batch_size)
                 for index, (name, number) in enumerate(zip(self.names, counts)) if number]
        images = np.concatenate(parts) if parts else np.zeros((0, self.image_size, self.image_size, 3), np.float32)
        return images[rng.permutation(len(images))]


def open_sampler(spec: ModelSpec, run_dir: Path, class_counts: dict[str, int]):
    from cellgen.sampling import load_sampler

    sampler = load_sampler(run_dir, **dict(spec.sampler_options))
    if getattr(sampler, "classes", None) and len(sampler.classes) > 1:
        return ProportionalSampler(sampler, class_counts)
    return sampler


def time_sampling(sampler, count: int, batch_size: int, seed: int = 12345) -> tuple[Any, float]:
    """Generates ``count`` images after two tiny warm-up calls; returns ``(images, images per second)``.

    Two batch sizes, because a ``tf.function(reduce_retracing=True)`` sampler traces a
    shape-generic graph on its second shape; the timed call then traces nothing.
    """
    for size in (2, 3):
        sampler.sample(min(size, count), seed=seed + size, batch_size=min(size, count))
    started = time.perf_counter()
    images = sampler.sample(count, seed=seed, batch_size=batch_size)
    seconds = time.perf_counter() - started
    return images, count / max(seconds, 1e-9)


# Outputs ---------------------------------------------------------------------------


def write_grids(real_images, generated: dict[str, Any], labels: dict[str, str], out: Path, size: int) -> list[Path]:
    """``grids/<model>.png`` (real | model) and ``grids/all_models.png`` (a row of each, Matos Fig. 3)."""
    import numpy as np

    from cellgen.images import to_uint8
    from cellgen.plots import save_image_grid, tile_images

    out.mkdir(parents=True, exist_ok=True)
    scale = max(1, 96 // size)
    real = to_uint8(real_images)
    columns = max(1, int(np.ceil(np.sqrt(len(real)))))
    written = []
    for name, images in generated.items():
        left = tile_images(real, columns)
        right = tile_images(to_uint8(images[:len(real)]), columns)
        height = max(left.shape[0], right.shape[0])
        canvas = np.full((height, left.shape[1] + right.shape[1] + 8, 3), 255, np.uint8)
        canvas[:left.shape[0], :left.shape[1]] = left
        canvas[:right.shape[0], left.shape[1] + 8:] = right
        written.append(save_image_grid(canvas[None], out / f"{name}.png", columns=1, scale=scale,
                                       title=f"left: real   |   right: {labels[name]}"))
    row = min([16, len(real)] + [len(images) for images in generated.values()])
    rows = [real[:row]] + [to_uint8(images[:row]) for images in generated.values()]
    if row > 0:
        written.append(save_image_grid(np.concatenate(rows), out / "all_models.png", columns=row, scale=scale,
                                       row_labels=["real"] + list(generated), title="real and generated images"))
    return written


def _format_mean_std(summary: dict | None, digits: int = 2, scale: float = 1.0) -> str:
    if not summary:
        return "n/a"
    mean, std = summary["mean"] * scale, summary["std"] * scale
    largest = max(abs(mean), abs(std))
    if largest == 0 or largest >= 10 ** -digits:
        return f"{mean:.{digits}f} ± {std:.{digits}f}"
    return f"{mean:.2g} ± {std:.2g}"  # tiny values (random-weight features): significant digits


def _steps_text(row: dict[str, Any]) -> str:
    steps, batch_size = row.get("optimizer_steps"), row.get("batch_size")
    if steps is None:
        return "n/a"
    return f"{steps:,} x {batch_size}" if batch_size else f"{steps:,}"


def _limit_note(row: dict[str, Any]) -> str:
    return f"; {row['sampled_images']} images only, n = {row['n']}" if row.get("limited") else ""


def markdown_table(settings: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """Matos Table 4 with the extra columns, plus the settings it was produced with."""
    lines = ["# Generator comparison (Matos 2025 Table 4, extended)", ""]
    for key, value in settings.items():
        if key != "environment":
            lines.append(f"- {key.replace('_', ' ')}: {value}")
    lines += ["", "| model | Matos FID | FID | KID (x1000) | precision | recall | epochs | steps x batch | "
              "training time | sampling (images/s) | sampling |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for row in rows:
        summary = row["summary"]
        paper = f"{row['paper_fid'][0]:.2f} ± {row['paper_fid'][1]:.2f}" if row.get("paper_fid") else "n/a"
        minutes = row["train_seconds"] / 60
        budget = " (over budget)" if row.get("over_budget") else ""
        lines.append(
            f"| {row['label']}, `{row.get('preset', '')}` | {paper} | {_format_mean_std(summary.get('fid'))} | "
            f"{_format_mean_std(summary.get('kid'), 2, 1000.0)} | {_format_mean_std(summary.get('precision'), 3)} | "
            f"{_format_mean_std(summary.get('recall'), 3)} | {row['epochs']} | {_steps_text(row)} | "
            f"{minutes:.1f} min{budget} | "
            f"{row['images_per_second']:.1f} | {row['sampling']}{_limit_note(row)} |")
    lines += ["", "Mean ± standard deviation over the evaluation seeds. Matos FID: the paper's pytorch-fid on "
              "all of BloodMNIST (10,000 vs 10,000 images) for the preset's setting, after the paper's training "
              "length (n/a: not one of Matos' settings); compare columns only at the same extractor, n and "
              "training length. Steps: the most optimizer steps any of the model's optimizers took "
              "(a GAN with several generator updates per discriminator update counts the generator's). "
              "Training time is the wall clock of the training script(s), set-up included. "
              "Sampling speed excludes loading and the first (tracing) call.", ""]
    return "\n".join(lines)


# Main ------------------------------------------------------------------------------


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # before importing TensorFlow: --help stays fast
    from cellgen.config import ConfigError

    models = selected_models(args.models, args.preset)
    overrides = model_overrides(args.set, models)
    limits = sample_limits(args.limit_samples, models)
    for option in ("size", "seeds", "n", "sampling_images", "sample_batch_size", "grid_images", "kid_subset_size"):
        if getattr(args, option) < 1:
            raise ConfigError(f"--{option.replace('_', '-')} must be >= 1, got {getattr(args, option)}")
    if args.size < 8:
        raise ConfigError(f"--size must be at least 8, got {args.size}")
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    if args.budget_minutes is not None and not args.budget_minutes > 0:
        raise ConfigError(f"--budget-minutes must be > 0, got {args.budget_minutes}")
    if args.images_per_class is not None and args.images_per_class < 1:
        raise ConfigError(f"--images-per-class must be >= 1, got {args.images_per_class}")
    if args.sample_pool and args.sample_pool < args.n:
        raise ConfigError(f"--sample-pool {args.sample_pool} must be at least --n {args.n}")
    data = Path(args.data)
    if not data.is_dir():
        raise ConfigError(f"--data: {data} is not a folder")
    if args.real is not None and not Path(args.real).exists():
        raise ConfigError(f"--real: {args.real} not found")
    check_stages_available(models)

    import numpy as np

    from cellgen.data_reader import DataReader
    from cellgen.runs import environment_info, read_json, write_json

    out = Path(args.out)
    if (out / "table.json").is_file() and not args.resume:
        raise ConfigError(f"--out {out}: holds a comparison already; pass --resume to continue it or choose "
                          "another folder")
    out.mkdir(parents=True, exist_ok=True)
    if args.images_per_class:
        data = link_subset(data, out / "data", args.images_per_class)
    real = str(args.real or data)
    reader = DataReader(str(data), image_size=args.size, batch_size=args.sample_batch_size, shuffle=False,
                        workers=2)
    class_counts = reader.class_counts()
    grid_count = min(args.grid_images, reader.num_images)
    real_grid = DataReader(real, image_size=args.size, batch_size=grid_count, shuffle=True, seed=args.seed,
                           workers=2)
    real_images = next(iter(real_grid.epoch(0)))[0][:grid_count]

    budget_seconds = args.budget_minutes * 60 if args.budget_minutes is not None else None
    settings = {
        "data": f"{data} ({reader.num_images} images, {len(reader.classes)} classes)",
        "real images": real,
        "size": f"{args.size} px",
        "training": (f"equal wall-clock budget of {args.budget_minutes:g} min per model" if budget_seconds
                     else f"{args.epochs} epochs per model" if args.epochs else "each preset's epochs"),
        "training precision": args.train_precision,
        "extractor": (f"InceptionV3 ({args.inception_weights} weights, "
                      f"{args.extractor_size or 299} px, {args.eval_precision})"
                      if args.extractor == "inception" else f"classifier {args.extractor}"),
        "evaluation": (f"{args.seeds} seeds x {args.n} real and {args.n} generated images"
                       + (f" (generated drawn from one pool of {args.sample_pool})" if args.sample_pool else
                          " (new samples per seed)")),
        "sampling timed on": (f"{max(args.sampling_images, args.sample_pool)} images per model, batches of "
                              f"{args.sample_batch_size}"),
        "sample limits": ", ".join(f"{name}: {count} images (timed and evaluated)"
                                   for name, count in limits.items()) or "none",
        "presets": ", ".join(f"{spec.name}={spec.preset}" for spec in models),
        "overrides": "; ".join(f"{name}: {', '.join(values)}" for name, values in overrides.items() if values)
        or "none",
    }
    environment = environment_info()
    settings["machine"] = f"{environment['cpu']} ({environment['cpu_count']} cores), {environment['platform']}"
    settings["date"] = environment["date"]

    rows, generated_for_grid = [], {}
    (out / "results").mkdir(exist_ok=True)
    for index, spec in enumerate(models, start=1):
        result_file = out / "results" / f"{spec.name}.json"
        run_dir = out / "runs" / spec.name
        print(f"== [{index}/{len(models)}] {spec.label} ({spec.preset}) ==", flush=True)
        if args.resume and result_file.is_file():
            row = read_json(result_file)
            print(f"reusing {result_file}")
        else:
            training = train_model(spec, run_dir, str(data), args.size, args.seed, args.train_precision,
                                   overrides[spec.name], args.epochs, budget_seconds, args.resume, args.quiet)
            row = evaluate_model(spec, run_dir, args, real, class_counts, out, limits.get(spec.name))
            row.update({"name": spec.name, "label": spec.label, "preset": spec.preset, "run": str(run_dir),
                        "paper_fid": list(spec.paper_fid) if spec.paper_fid else None,
                        "train_seconds": training["seconds"], "epochs": training["epochs"],
                        "training_calls": training["calls"], "over_budget": training["over_budget"],
                        **training_steps(run_dir),
                        "limited": spec.name in limits,
                        "sampling": spec.sampling})
            write_json(result_file, row)
        if "optimizer_steps" not in row:  # results written before steps were recorded
            row.update(training_steps(run_dir))
        rows.append(row)
        generated_for_grid[spec.name] = np.load(out / "results" / f"{spec.name}_grid.npy")
        table = {"settings": settings, "environment": environment, "rows": rows}
        write_json(out / "table.json", table)
        (out / "table.md").write_text(markdown_table(settings, rows), encoding="utf-8")
        _reset_keras()
    write_grids(real_images, generated_for_grid, {row["name"]: row["label"] for row in rows}, out / "grids",
                args.size)
    print((out / "table.md").read_text(encoding="utf-8"))
    print(f"wrote {out / 'table.md'}, {out / 'table.json'} and {out / 'grids'}")
    return 0


def evaluate_model(spec: ModelSpec, run_dir: Path, args, real: str, class_counts: dict[str, int],
                   out: Path, limit: int | None = None) -> dict[str, Any]:
    """Times sampling, evaluates, and keeps grid images (``results/<model>_grid.npy``) of one trained model.

    With ``limit``, only that many images are generated; they are the model's whole
    generated set in every evaluation seed (and ``n`` is capped at ``limit``).
    """
    import keras
    import numpy as np

    from cellgen.evaluate.generated import evaluate_generated

    keras.mixed_precision.set_global_policy("float32")  # training may have left bf16 set
    sampler = open_sampler(spec, run_dir, class_counts)
    timed = max(args.sampling_images, args.sample_pool)
    if limit is not None:
        timed = min(timed, limit)
    print(f"timing the sampling of {timed} images ({spec.sampling})", flush=True)
    images, images_per_second = time_sampling(sampler, timed, args.sample_batch_size)
    print(f"{spec.name}: {images_per_second:.1f} images/s", flush=True)
    np.save(out / "results" / f"{spec.name}_grid.npy", images[:args.grid_images])
    generated = images if (args.sample_pool or limit is not None) else sampler
    n = min(args.n, limit) if limit is not None else args.n
    weights = None if str(args.inception_weights).lower() in ("none", "random") else args.inception_weights
    result = evaluate_generated(
        real, generated, args.extractor, n=n, seeds=args.seeds, image_size=args.size,
        kid_subset_size=args.kid_subset_size, memorization=False, batch_size=min(args.sample_batch_size, 256),
        cache_dir=args.cache_dir, progress=not args.quiet, out_dir=out / "eval" / spec.name,
        inception_weights=weights, extractor_size=args.extractor_size, precision=args.eval_precision)
    summary = {name: values for name, values in result["summary"].items()}
    return {"summary": summary, "images_per_second": images_per_second, "sampled_images": timed, "n": n,
            "evaluation_notes": result["notes"], "evaluation": str(out / "eval" / spec.name)}


def _reset_keras() -> None:
    import keras

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
