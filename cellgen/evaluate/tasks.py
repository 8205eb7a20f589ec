"""The evaluation scripts' work as typed library calls, each with its equivalent command line.

- :class:`GeneratorEvaluation` + :func:`evaluate_generator`: what ``evaluate_generator.py``
  does (checks the options, opens a generator run's sampler with its training crop and
  data, runs :func:`cellgen.evaluate.generated.evaluate_generated`, writes the report);
- :class:`ExpertKitOptions` + :func:`make_expert_kit`: ``expert_test.py make`` (scoring is
  :func:`cellgen.evaluate.expert.score_kit`).

The scripts parse their options into these objects; the study builds them directly and
writes ``to_argv()`` to its ``commands.sh``, so a user can rerun a stage by hand.

Example:
    >>> options = GeneratorEvaluation(real="pbc128/val", out="eval/b", generated="synth/basophil",
    ...                               class_name="basophil", n=500, seeds=3)
    >>> options.to_argv()[:4]
    ['--real', 'pbc128/val', '--out', 'eval/b']
    >>> result = evaluate_generator(options)                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Mapping

from cellgen.config import ConfigError, Range, at_least, check_ranges, option_flag


def options_argv(options: Any, flags: Mapping[str, str] | None = None,
                 inverted: Mapping[str, str] | None = None) -> list[str]:
    """The command-line options of a dataclass of script options.

    Fields without a default are always written; the others only when they differ from
    their default (None: not given). A field's flag is ``--name-with-dashes`` unless
    ``flags`` names another; a boolean is a switch, or, in ``inverted``, the switch that
    turns its default True off (``memorization=False`` -> ``--no-memorization``).
    """
    flags, inverted = dict(flags or {}), dict(inverted or {})
    argv: list[str] = []
    for field in dataclasses.fields(options):
        value = getattr(options, field.name)
        has_default = field.default is not dataclasses.MISSING
        if value is None or (has_default and value == field.default):
            continue
        flag = flags.get(field.name, option_flag(field.name))
        if isinstance(value, bool):
            if field.name in inverted:
                if not value:
                    argv.append(inverted[field.name])
            elif value:
                argv.append(flag)
        elif isinstance(value, Mapping):
            argv += [flag, ",".join(f"{key}={item}" for key, item in value.items())]
        else:
            argv += [flag, str(value)]
    return argv


# Generator evaluation ------------------------------------------------------------


@dataclasses.dataclass
class GeneratorEvaluation:
    """Options of a generator evaluation (the flags of ``evaluate_generator.py``).

    Attributes:
        real: real images (class folders, a flat folder or a CSV).
        out: folder for ``metrics.json``, ``report.md`` and the PNGs.
        generated, run: a folder of generated images, or a generator run that draws ``n``
            new images per seed (exactly one).
        extractor: ``inception`` or a classifier (``.keras`` file or run directory).
        n, seeds: images per set and seed, and the number of seeds.
        class_name: the real class to compare with (and the class a conditional run draws).
        size: comparison resolution (default: the generated images' size).
        crop: center crop of the real images (default: the run's training crop with ``run``).
        train: training images of the memorisation check (default: the run's data, or ``real``).
        memorization, memorization_n, memorization_quantile, pixel_size: the memorisation check.
        nearest_k, kid_subset_size, kid_subsets, fid_infinity: metric settings.
        inception_weights, extractor_size, precision: InceptionV3 (see
            :func:`cellgen.evaluate.features.load_extractor`).
        batch_size, workers: batches and image-decoding threads.
        cache_dir, cache: the real-feature cache, and whether to use it.
        overwrite: replace results in an existing ``out``.
        progress: progress bars.
        epoch, steps, eta, contrast: sampler options of ``run``.
    """

    ranges: ClassVar[dict[str, Range]] = {
        **dict.fromkeys(("n", "seeds", "batch_size", "memorization_n", "pixel_size", "nearest_k", "kid_subsets"),
                        at_least(1)),
        "size": at_least(8),
    }

    real: str
    out: str
    generated: str | None = None
    run: str | None = None
    extractor: str = "inception"
    n: int = 10_000
    seeds: int = 5
    class_name: str | None = None
    size: int | None = None
    crop: float | None = None
    train: str | None = None
    memorization: bool = True
    memorization_n: int = 2000
    memorization_quantile: float = 0.05
    pixel_size: int = 32
    nearest_k: int = 5
    kid_subset_size: int = 1000
    kid_subsets: int = 100
    fid_infinity: bool = False
    inception_weights: str = "imagenet"
    extractor_size: int | None = None
    precision: str = "fp32"
    batch_size: int = 64
    workers: int = 2
    cache_dir: str | None = None
    cache: bool = True
    overwrite: bool = False
    progress: bool = True
    epoch: int | None = None
    steps: int | None = None
    eta: float | None = None
    contrast: float | None = None

    def to_argv(self) -> list[str]:
        """The equivalent options of ``evaluate_generator.py``."""
        return options_argv(self, {"class_name": "--class"},
                            {"memorization": "--no-memorization", "cache": "--no-cache", "progress": "--quiet"})

    def sampler_options(self) -> dict[str, Any]:
        values = {"epoch": self.epoch, "steps": self.steps, "eta": self.eta, "contrast": self.contrast}
        return {key: value for key, value in values.items() if value is not None}

    def check(self) -> None:
        """Raises ConfigError naming the first bad option (before anything is loaded)."""
        if (self.generated is None) == (self.run is None):
            raise ConfigError("give exactly one of --generated DIR or --run RUN")
        if (Path(self.out) / "metrics.json").exists() and not self.overwrite:
            raise ConfigError(f"--out {self.out}: holds results already; pass --overwrite or choose another folder")
        check_ranges(self, self.ranges, label=option_flag)
        for path, option in ((self.real, "--real"), (self.generated, "--generated"), (self.train, "--train")):
            if path is not None and not str(path).startswith("tfds:") and not Path(path).exists():
                raise ConfigError(f"{option}: {path} not found")
        if self.run is None and self.sampler_options():
            raise ConfigError("--epoch/--steps/--eta/--contrast apply to --run only")


def evaluate_generator(options: GeneratorEvaluation) -> dict[str, Any]:
    """Evaluates generated images (a folder, or new samples of a run) against real ones.

    Writes ``metrics.json``, ``report.md``, ``real_vs_generated.png`` and the memorisation
    grids to ``options.out``; returns the result of
    :func:`cellgen.evaluate.generated.evaluate_generated`.

    Raises:
        ConfigError, EvaluationError, RunError: bad options or inputs (one-line messages).
    """
    from cellgen.data import crop_option
    from cellgen.evaluate.generated import evaluate_generated
    from cellgen.runs import RunDir, set_seed

    options.check()
    crop = crop_option(options.crop) if options.crop is not None else None
    train = options.train
    if options.run is not None:
        from cellgen.sampling import load_sampler

        generated = load_sampler(options.run, **options.sampler_options())
        run_config = RunDir.open(options.run).config_dict()
        if options.crop is None:
            crop = crop_option(float(run_config.get("crop", 0) or 0))
        if train is None and run_config.get("data") and Path(run_config["data"]).exists():
            train = run_config["data"]
        if options.class_name is None and getattr(generated, "classes", None):
            raise ConfigError(f"{options.run} is a conditional run; pass --class "
                              f"(one of {', '.join(generated.classes)})")
    else:
        generated = options.generated
    set_seed(0)  # random Inception weights (--inception-weights none) and sampler set-up stay reproducible
    weights = None if str(options.inception_weights).lower() in ("none", "random") else options.inception_weights
    return evaluate_generated(
        options.real, generated, options.extractor, n=options.n, seeds=options.seeds, image_size=options.size,
        crop=crop, class_name=options.class_name, train=train, nearest_k=options.nearest_k,
        kid_subset_size=options.kid_subset_size, kid_subsets=options.kid_subsets,
        memorization=options.memorization, memorization_n=options.memorization_n,
        memorization_quantile=options.memorization_quantile, pixel_size=options.pixel_size,
        with_fid_infinity=options.fid_infinity, batch_size=options.batch_size, cache_dir=options.cache_dir,
        use_cache=options.cache, workers=options.workers, progress=options.progress, out_dir=options.out,
        inception_weights=weights, extractor_size=options.extractor_size, precision=options.precision)


def summary_lines(result: Mapping[str, Any], out: str | Path | None = None) -> list[str]:
    """The metrics table, the memorisation shares and the notes of an evaluation, as printed lines."""
    lines = [f"{'metric':<12}{'mean':>12}{'std':>12}"]
    for name, values in result["summary"].items():
        lines.append(f"{name:<12}{values['mean']:>12.4g}{values['std']:>12.2g}")
    memorization = result.get("memorization")
    if memorization:
        for space in ("features", "pixels"):
            part = memorization[space]
            lines.append(f"memorisation ({space}): {100 * part['share_below']:.1f}% of generated images closer "
                         f"to a training image than {100 * part['expected_share']:.0f}% of training images are "
                         "to theirs")
    lines += [f"note: {note}" for note in result["notes"]]
    if out is not None:
        lines.append(f"wrote {Path(out) / 'metrics.json'} and {Path(out) / 'report.md'}")
    return lines


# Expert kit ----------------------------------------------------------------------


def parse_counts(text: str) -> dict[str, int]:
    """``hypersegmented=40,dohle=30`` -> images per class (``--counts``)."""
    counts = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError(f"--counts expects class=N pairs, got {part!r}")
        name, value = part.split("=", 1)
        try:
            counts[name.strip()] = int(value)
        except ValueError:
            raise ConfigError(f"--counts: {value!r} is not an integer (in {part!r})") from None
        if counts[name.strip()] < 0:
            raise ConfigError(f"--counts: {part!r} is negative")
    return counts


@dataclasses.dataclass
class ExpertKitOptions:
    """Options of a blinded real-vs-synthetic kit (the flags of ``expert_test.py make``).

    Attributes: as :func:`cellgen.evaluate.expert.make_kit` (``size`` is its ``image_size``,
    ``real_crop`` a config-style crop: pixels > 1 or a fraction, 0/None = none).
    """

    real: str
    synthetic: str
    out: str
    n: int = 100
    seed: int = 0
    real_share: float = 0.5
    size: int | None = None
    real_crop: float | None = None
    class_name: str | None = None
    counts: dict[str, int] | None = None
    overwrite: bool = False

    def to_argv(self) -> list[str]:
        """The equivalent command line of ``expert_test.py`` (``make`` and its options)."""
        return ["make"] + options_argv(self, {"class_name": "--class"})


def make_expert_kit(options: ExpertKitOptions) -> Path:
    """Builds the kit of ``options``; returns its folder (see :func:`cellgen.evaluate.expert.make_kit`)."""
    from cellgen.data import crop_option
    from cellgen.evaluate.expert import make_kit

    return make_kit(options.real, options.synthetic, options.out, n=options.n, seed=options.seed,
                    real_share=options.real_share, image_size=options.size,
                    real_crop=crop_option(options.real_crop) if options.real_crop else None,
                    class_name=options.class_name, counts=options.counts, overwrite=options.overwrite)
