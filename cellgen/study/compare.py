"""The Matos (2025) comparison (CVAE, DCGAN, DDPM) plus the cellgen DDIM, as a library.

:func:`run_comparison` trains every model of a :class:`Comparison` on the same data at
one size (28 px: BloodMNIST is the PBC dataset at 28 x 28) through its trainer's typed
entry points (``resolve_config(RunRequest)`` + ``train``, see :mod:`cellgen.study.stages`),
under equal epochs or an equal wall-clock budget per model; times the sampling of
1,000 images; evaluates each with the evaluation library (FID, KID, precision, recall;
mean and std over seeds, as Matos section 3.4); and writes ``OUT/table.md`` and
``OUT/table.json`` (Matos Table 4 with training time, sampling speed, KID, precision and
recall) and one grid per model next to real images (``OUT/grids/``).

Features come by default from a *domain* classifier trained on the real training
images (``extractor="domain"``), which needs no download; ``extractor="inception"``
needs InceptionV3's ImageNet weights (in the Keras cache, downloadable, or a local
file), checked before anything trains.

Layout of OUT: ``runs/<model>/`` (each model's run directory), ``extractor/`` (the
domain classifier), ``eval/<model>/`` (the evaluation report), ``grids/<model>.png``
and ``grids/all_models.png``, ``results/<model>.json`` (one finished model; ``resume``
reuses them), ``table.md``, ``table.json`` and ``commands.sh`` (every training call's
equivalent command line).

Example:
    >>> comparison = Comparison(data="pbc128/train", out="runs/compare28", epochs=2,
    ...                         models=("cvae", "dcgan"))
    >>> table = run_comparison(comparison)                              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import time
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from cellgen.config import ConfigError, Range, RunRequest, above, at_least, check_ranges, option_flag
from cellgen.study import stages

Printer = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One model of the comparison.

    Attributes:
        name: short name used on the command line and for folders.
        label: name in the table.
        kind: run kind its trainer writes (:data:`cellgen.study.stages.GENERATOR_TRAINERS`,
            and the sampler registry key).
        preset: its TOML preset under ``configs/``.
        sampler_options: options for :func:`cellgen.sampling.load_sampler`.
        paper_fid: Matos' FID of this preset's setting (mean, std), or None.
        sampling: how it samples, for the table.
    """

    name: str
    label: str
    kind: str
    preset: str
    sampler_options: tuple[tuple[str, Any], ...] = ()
    paper_fid: tuple[float, float] | None = None
    sampling: str = ""

    @property
    def trainer(self) -> str:
        """The module that trains it."""
        return stages.GENERATOR_TRAINERS[self.kind][1]


# Matos (2025) FIDs (mean +- std over 5 runs, BloodMNIST, pytorch-fid) of the settings the presets
# reproduce: Table 4 (each model's best) and, for the baseline DDPM U-Net, Table 3 (T = 500, 100 epochs).
PAPER_FID: dict[str, tuple[float, float]] = {
    "matos2025_cvae28": (170.05, 0.64),
    "matos2025_dcgan28": (166.85, 0.56),
    "matos2025_ddpm28_deep": (122.26, 0.76),
    "matos2025_ddpm28": (238.40, 0.62),
}

MODELS: tuple[ModelSpec, ...] = (
    ModelSpec("cvae", "Convolutional VAE (Matos 4.1)", "cvae", "matos2025_cvae28", (),
              PAPER_FID["matos2025_cvae28"], "decoder, one pass"),
    ModelSpec("dcgan", "DCGAN (Matos 4.2)", "vanilla_gan", "matos2025_dcgan28", (),
              PAPER_FID["matos2025_dcgan28"], "generator, one pass"),
    ModelSpec("ddpm", "DDPM, T = 500 (Matos 4.3)", "ddim", "matos2025_ddpm28_deep", (),
              PAPER_FID["matos2025_ddpm28_deep"], "ancestral, all T steps"),
    ModelSpec("ddim", "DDIM, 20 steps (cellgen)", "ddim", "ddim_fast", (("steps", 20), ("eta", 0.0)), None,
              "DDIM, 20 steps, eta 0"),
)
MODEL_NAMES = tuple(spec.name for spec in MODELS)
# The feature classifier of extractor="domain" (``--set extractor:KEY=VALUE`` tunes it).
EXTRACTOR = "extractor"
EXTRACTOR_PRESET = "classifier_fast"


@dataclasses.dataclass
class Comparison:
    """Settings of a generator comparison (the options of ``compare_generators.py``).

    Attributes:
        data: training images, one sub-folder per class.
        out: output folder.
        size: image size of every model.
        budget_minutes, epochs: an equal wall-clock budget per model, or equal epochs
            (neither: each preset's own epochs).
        models: names of :data:`MODELS` to train, in order.
        presets: model -> another preset.
        overrides: model -> {config field: value}.
        images_per_class: train (and evaluate) on the first N images of each class.
        real: real images to compare with (default: the training images, as Matos).
        seed, train_precision: every model's training seed and precision.
        seeds, n: evaluation seeds and images per set and seed.
        sampling_images: images whose generation is timed.
        sample_pool: generate this many once and draw each seed's ``n`` from them (0: new per seed).
        sample_batch_size: images per generator call.
        limit_samples: model -> only N images generated (timed, and its whole evaluated set).
        extractor: ``domain`` (a classifier trained on the real training images, no download),
            ``inception``, or a classifier ``.keras`` file / run directory.
        extractor_preset, extractor_overrides: the domain classifier's preset and overrides.
        extractor_val: images that pick the domain classifier's epoch (default: the real images).
        inception_weights, extractor_size, eval_precision: InceptionV3 options.
        kid_subset_size, cache_dir, grid_images: evaluation and grid settings.
        resume: reuse finished models and continue unfinished runs.
        quiet: one line per epoch instead of progress bars.
    """

    ranges: ClassVar[dict[str, Range]] = {
        "size": at_least(8),
        **dict.fromkeys(("seeds", "n", "sampling_images", "sample_batch_size", "grid_images", "kid_subset_size",
                         "epochs", "images_per_class"), at_least(1)),
        "budget_minutes": above(0),
    }

    data: str
    out: str
    size: int = 28
    budget_minutes: float | None = None
    epochs: int | None = None
    models: tuple[str, ...] = MODEL_NAMES
    presets: dict[str, str] = dataclasses.field(default_factory=dict)
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    images_per_class: int | None = None
    real: str | None = None
    seed: int = 0
    train_precision: str = "fp32"
    seeds: int = 5
    n: int = 10_000
    sampling_images: int = 1000
    sample_pool: int = 0
    sample_batch_size: int = 250
    limit_samples: dict[str, int] = dataclasses.field(default_factory=dict)
    extractor: str = "domain"
    extractor_preset: str = EXTRACTOR_PRESET
    extractor_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    extractor_val: str | None = None
    inception_weights: str = "imagenet"
    extractor_size: int | None = None
    eval_precision: str = "fp32"
    kid_subset_size: int = 1000
    cache_dir: str | None = None
    grid_images: int = 64
    resume: bool = False
    quiet: bool = False

    def specs(self) -> list[ModelSpec]:
        """The chosen models with their presets (see :func:`selected_models`)."""
        return selected_models(self.models, self.presets)

    def check(self) -> None:
        """Raises ConfigError naming the first bad option; RunError for a missing stage."""
        specs = self.specs()
        for option, mapping in (("--set", self.overrides), ("--limit-samples", self.limit_samples)):
            unknown = [name for name in mapping if name not in MODEL_NAMES]
            if unknown:
                raise ConfigError(f"{option}: unknown model(s) {', '.join(unknown)}; "
                                  f"choose from {', '.join(MODEL_NAMES)}")
        for name, limit in self.limit_samples.items():
            if limit < 8:  # precision/recall need more than k = 5 neighbours
                raise ConfigError(f"--limit-samples {name}={limit}: N must be >= 8")
        check_ranges(self, self.ranges, label=option_flag)
        if self.epochs is not None and self.budget_minutes is not None:
            raise ConfigError("give --epochs or --budget-minutes, not both")
        if self.sample_pool and self.sample_pool < self.n:
            raise ConfigError(f"--sample-pool {self.sample_pool} must be at least --n {self.n}")
        if not Path(self.data).is_dir():
            raise ConfigError(f"--data: {self.data} is not a folder")
        if self.real is not None and not Path(self.real).exists():
            raise ConfigError(f"--real: {self.real} not found")
        if self.extractor_val is not None and not Path(self.extractor_val).exists():
            raise ConfigError(f"--extractor-val: {self.extractor_val} not found")
        check_stages_available(specs)
        check_extractor(self)

    def describe_extractor(self) -> str:
        if self.extractor == "inception":
            return (f"InceptionV3 ({self.inception_weights} weights, {self.extractor_size or 299} px, "
                    f"{self.eval_precision})")
        if self.extractor == "domain":
            return (f"domain classifier: {self.extractor_preset} trained on the training images at "
                    f"{self.size} px ({Path(self.out) / EXTRACTOR})")
        return f"classifier {self.extractor}"


# Set-up and checks -----------------------------------------------------------


def selected_models(names: Sequence[str], presets: Mapping[str, str] | None = None) -> list[ModelSpec]:
    """The models named in ``names``, with ``presets`` (model -> preset) applied."""
    names = [name.strip() for name in names if name.strip()]
    unknown = [name for name in names if name not in MODEL_NAMES]
    if unknown or not names:
        raise ConfigError(f"--models: unknown model(s) {', '.join(unknown) or '(none)'}; "
                          f"choose from {', '.join(MODEL_NAMES)}")
    if len(set(names)) != len(names):
        raise ConfigError(f"--models: {','.join(names)!r} names a model twice")
    presets = dict(presets or {})
    wrong = [name for name in presets if name not in MODEL_NAMES]
    if wrong:
        raise ConfigError(f"--preset expects MODEL=PRESET with MODEL one of {', '.join(MODEL_NAMES)}; "
                          f"got {', '.join(wrong)}")
    specs = {spec.name: spec for spec in MODELS}
    chosen = []
    for name in names:
        spec = specs[name]
        if name in presets and presets[name] != spec.preset:
            # Another preset: the paper's number applies only if it is one of Matos' settings.
            spec = dataclasses.replace(spec, preset=presets[name], paper_fid=PAPER_FID.get(presets[name]))
        chosen.append(spec)
    return chosen


def check_stages_available(models: Sequence[ModelSpec]) -> None:
    """Raises a one-line RunError naming the first stage (trainer, preset or sampler) that is missing."""
    from cellgen.config import resolve_preset_path
    from cellgen.runs import RunError
    from cellgen.sampling import SAMPLER_LOADERS

    for spec in models:
        if importlib.util.find_spec(spec.trainer) is None:
            raise RunError(f"the {spec.name} stage is not available: its trainer {spec.trainer} is "
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


def check_extractor(comparison: Comparison) -> None:
    """The features can be had before anything trains: ImageNet weights (cached, downloadable or a file),
    a classifier file, or the domain classifier's preset and overrides."""
    if comparison.extractor == "inception":
        from cellgen.evaluate.features import require_inception_weights

        require_inception_weights(comparison.inception_weights)
    elif comparison.extractor == "domain":
        from cellgen.classify.config import ClassifierConfig
        from cellgen.config import config_from_request

        request = stages.domain_extractor_request(comparison.extractor_preset, comparison.extractor_overrides,
                                                  comparison.data, comparison.data, Path(comparison.out) / EXTRACTOR,
                                                  comparison.size, comparison.seed)
        try:
            config_from_request(ClassifierConfig, request)
        except ConfigError as error:
            raise ConfigError(f"--set {EXTRACTOR}:...: {error}") from None
    else:
        from cellgen.evaluate.features import resolve_classifier_path

        resolve_classifier_path(comparison.extractor)


def link_subset(data: Path, out: Path, per_class: int) -> Path:
    """``out/<class>/`` with links to the first ``per_class`` images (sorted by name) of each class."""
    import shutil

    from cellgen.data import DataError
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


def training_request(spec: ModelSpec, run_dir: Path, data: str, size: int, seed: int, precision: str,
                     overrides: Mapping[str, Any], epochs: int | None, resume: bool) -> RunRequest:
    """One training call of a model: its preset, then its overrides, then the comparison's settings."""
    values = {**overrides, "data": data, "image_size": size, "seed": seed, "precision": precision}
    if epochs is not None:
        values["epochs"] = epochs
    return RunRequest(preset=spec.preset, overrides=values, out=str(run_dir), resume=resume)


def train_model(spec: ModelSpec, run_dir: Path, data: str, size: int, seed: int, precision: str,
                overrides: Mapping[str, Any], epochs: int | None, budget_seconds: float | None, resume: bool,
                quiet: bool, log: Printer = print, commands: stages.CommandLog | None = None) -> dict[str, Any]:
    """Trains one model through its trainer; returns ``{"seconds", "epochs", "calls", "over_budget"}``.

    With a budget, the first call trains one epoch; later calls resume the run with
    as many more epochs as the slowest epoch so far predicts will fit in what is left
    (each call's set-up time counts against the budget, as for a user).
    """
    from cellgen.runs import read_json

    timing_file = run_dir / "compare_timing.json"
    timing = read_json(timing_file) if resume and timing_file.is_file() else {"seconds": 0.0, "calls": []}
    done = _completed_epochs(run_dir)
    resuming = resume and (run_dir / "config.json").is_file()

    def call(target_epochs: int | None) -> None:
        nonlocal resuming, done
        request = training_request(spec, run_dir, data, size, seed, precision, overrides, target_epochs, resuming)
        started = time.perf_counter()
        stages.train_generator(spec.kind, request, verbose=2 if quiet else 1, log=commands)
        seconds = time.perf_counter() - started
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
                break  # the trainer trained nothing more: do not loop
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
              "Training time is the wall clock of the trainer's calls (config, data, build and fit). "
              "Sampling speed excludes loading and the first (tracing) call.", ""]
    return "\n".join(lines)


# Running ---------------------------------------------------------------------------


def _settings(comparison: Comparison, models: Sequence[ModelSpec], data: Path, reader, real: str,
              budget_seconds: float | None) -> dict[str, Any]:
    from cellgen.runs import environment_info

    overrides = {name: values for name, values in comparison.overrides.items() if values and
                 name in {spec.name for spec in models}}
    settings = {
        "data": f"{data} ({reader.num_images} images, {len(reader.classes)} classes)",
        "real images": real,
        "size": f"{comparison.size} px",
        "training": (f"equal wall-clock budget of {comparison.budget_minutes:g} min per model" if budget_seconds
                     else f"{comparison.epochs} epochs per model" if comparison.epochs else "each preset's epochs"),
        "training precision": comparison.train_precision,
        "extractor": comparison.describe_extractor(),
        "evaluation": (f"{comparison.seeds} seeds x {comparison.n} real and {comparison.n} generated images"
                       + (f" (generated drawn from one pool of {comparison.sample_pool})" if comparison.sample_pool
                          else " (new samples per seed)")),
        "sampling timed on": (f"{max(comparison.sampling_images, comparison.sample_pool)} images per model, "
                              f"batches of {comparison.sample_batch_size}"),
        "sample limits": ", ".join(f"{name}: {count} images (timed and evaluated)"
                                   for name, count in comparison.limit_samples.items()
                                   if name in {spec.name for spec in models}) or "none",
        "presets": ", ".join(f"{spec.name}={spec.preset}" for spec in models),
        "overrides": "; ".join(f"{name}: {', '.join(f'{key}={value}' for key, value in values.items())}"
                               for name, values in overrides.items()) or "none",
    }
    environment = environment_info()
    settings["machine"] = f"{environment['cpu']} ({environment['cpu_count']} cores), {environment['platform']}"
    settings["date"] = environment["date"]
    return settings


def feature_extractor(comparison: Comparison, data: Path, real: str, commands: stages.CommandLog,
                      printer: Printer = print) -> str:
    """The extractor spec the evaluation uses; trains the domain classifier first when asked for."""
    if comparison.extractor != "domain":
        return comparison.extractor
    out = Path(comparison.out) / EXTRACTOR
    if stages.trained_extractor(out) is None:
        printer(f"== feature extractor: {comparison.extractor_preset} on {data} ({comparison.size} px) ==")
    request = stages.domain_extractor_request(comparison.extractor_preset, comparison.extractor_overrides,
                                              str(data), comparison.extractor_val or real, out, comparison.size,
                                              comparison.seed)
    path = str(stages.train_domain_extractor(request, log=commands, printer=printer))
    stages.fresh_session()
    return path


def run_comparison(comparison: Comparison, printer: Printer = print) -> dict[str, Any]:
    """Trains, times and evaluates every model; writes ``OUT/table.md``, ``table.json`` and the grids.

    Returns:
        ``{"settings", "environment", "rows"}`` as written to ``table.json``.

    Raises:
        ConfigError: a bad option (checked before anything trains), or ``out`` holds a
            comparison and ``resume`` is off.
        RunError: a model's trainer, preset or sampler is missing.
    """
    import numpy as np

    from cellgen.data import DataReader
    from cellgen.runs import environment_info, read_json, write_json

    comparison.check()
    models = comparison.specs()
    out = Path(comparison.out)
    if (out / "table.json").is_file() and not comparison.resume:
        raise ConfigError(f"--out {out}: holds a comparison already; pass --resume to continue it or choose "
                          "another folder")
    out.mkdir(parents=True, exist_ok=True)
    commands = stages.CommandLog(out / "commands.sh")
    data = Path(comparison.data)
    if comparison.images_per_class:
        data = link_subset(data, out / "data", comparison.images_per_class)
    real = str(comparison.real or data)
    reader = DataReader(str(data), image_size=comparison.size, batch_size=comparison.sample_batch_size,
                        shuffle=False, workers=2)
    class_counts = reader.class_counts()
    grid_count = min(comparison.grid_images, reader.num_images)
    real_grid = DataReader(real, image_size=comparison.size, batch_size=grid_count, shuffle=True,
                           seed=comparison.seed, workers=2)
    real_images = next(iter(real_grid.epoch(0)))[0][:grid_count]

    budget_seconds = comparison.budget_minutes * 60 if comparison.budget_minutes is not None else None
    settings = _settings(comparison, models, data, reader, real, budget_seconds)
    environment = environment_info()
    extractor = feature_extractor(comparison, data, real, commands, printer)

    rows, generated_for_grid = [], {}
    (out / "results").mkdir(exist_ok=True)
    for index, spec in enumerate(models, start=1):
        result_file = out / "results" / f"{spec.name}.json"
        run_dir = out / "runs" / spec.name
        printer(f"== [{index}/{len(models)}] {spec.label} ({spec.preset}) ==")
        if comparison.resume and result_file.is_file():
            row = read_json(result_file)
            printer(f"reusing {result_file}")
        else:
            training = train_model(spec, run_dir, str(data), comparison.size, comparison.seed,
                                   comparison.train_precision, comparison.overrides.get(spec.name, {}),
                                   comparison.epochs, budget_seconds, comparison.resume, comparison.quiet,
                                   log=printer, commands=commands)
            limit = comparison.limit_samples.get(spec.name)
            commands.note(f"{spec.name}: sampling timed and evaluated in-process (cellgen.study.compare."
                          f"evaluate_model: {comparison.seeds} seeds, n = {comparison.n}); results/{spec.name}.json")
            row = evaluate_model(spec, run_dir, comparison, extractor, real, class_counts, limit, printer)
            row.update({"name": spec.name, "label": spec.label, "preset": spec.preset, "run": str(run_dir),
                        "paper_fid": list(spec.paper_fid) if spec.paper_fid else None,
                        "train_seconds": training["seconds"], "epochs": training["epochs"],
                        "training_calls": training["calls"], "over_budget": training["over_budget"],
                        **training_steps(run_dir),
                        "limited": limit is not None,
                        "sampling": spec.sampling})
            write_json(result_file, row)
        if "optimizer_steps" not in row:  # results written before steps were recorded
            row.update(training_steps(run_dir))
        rows.append(row)
        generated_for_grid[spec.name] = np.load(out / "results" / f"{spec.name}_grid.npy")
        table = {"settings": settings, "environment": environment, "rows": rows}
        write_json(out / "table.json", table)
        (out / "table.md").write_text(markdown_table(settings, rows), encoding="utf-8")
        stages.fresh_session()
    write_grids(real_images, generated_for_grid, {row["name"]: row["label"] for row in rows}, out / "grids",
                comparison.size)
    return {"settings": settings, "environment": environment, "rows": rows}


def evaluate_model(spec: ModelSpec, run_dir: Path, comparison: Comparison, extractor: str, real: str,
                   class_counts: dict[str, int], limit: int | None = None,
                   printer: Printer = print) -> dict[str, Any]:
    """Times sampling, evaluates, and keeps grid images (``results/<model>_grid.npy``) of one trained model.

    With ``limit``, only that many images are generated; they are the model's whole
    generated set in every evaluation seed (and ``n`` is capped at ``limit``).
    """
    import numpy as np

    from cellgen.evaluate.generated import evaluate_generated

    out = Path(comparison.out)
    stages.fresh_session()  # training may have left bf16 set
    sampler = open_sampler(spec, run_dir, class_counts)
    timed = max(comparison.sampling_images, comparison.sample_pool)
    if limit is not None:
        timed = min(timed, limit)
    printer(f"timing the sampling of {timed} images ({spec.sampling})")
    images, images_per_second = time_sampling(sampler, timed, comparison.sample_batch_size)
    printer(f"{spec.name}: {images_per_second:.1f} images/s")
    np.save(out / "results" / f"{spec.name}_grid.npy", images[:comparison.grid_images])
    generated = images if (comparison.sample_pool or limit is not None) else sampler
    n = min(comparison.n, limit) if limit is not None else comparison.n
    weights = (None if str(comparison.inception_weights).lower() in ("none", "random")
               else comparison.inception_weights)
    result = evaluate_generated(
        real, generated, extractor, n=n, seeds=comparison.seeds, image_size=comparison.size,
        kid_subset_size=comparison.kid_subset_size, memorization=False,
        batch_size=min(comparison.sample_batch_size, 256), cache_dir=comparison.cache_dir,
        progress=not comparison.quiet, out_dir=out / "eval" / spec.name, inception_weights=weights,
        extractor_size=comparison.extractor_size, precision=comparison.eval_precision)
    summary = {name: values for name, values in result["summary"].items()}
    return {"summary": summary, "images_per_second": images_per_second, "sampled_images": timed, "n": n,
            "evaluation_notes": result["notes"], "evaluation": str(out / "eval" / spec.name)}
