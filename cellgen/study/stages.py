"""The typed stage calls the study and the generator comparison are made of.

Each call runs a stage through its library entry point and first appends the
equivalent command line to a :class:`CommandLog` (``commands.sh``), so a user can
rerun any stage by hand:

- :func:`train_generator`: a generator trainer's ``resolve_config(request)`` and
  ``train(config, resume=...)`` (``train_ddim.py``, ``train_vanilla_gan.py``, ``train_cvae.py``,
  ``train_acgan.py``: its request names the ``backbone`` run);
- :func:`generate_images`: :func:`cellgen.sampling.load_sampler` + :func:`~cellgen.sampling.write_samples`
  (``generate.py``);
- :func:`run_classifier_experiment`: :func:`cellgen.classify.train_lib.run_experiment`
  (``evaluate_classifier.py``), and :func:`train_domain_extractor`, a classifier trained
  on real images whose penultimate features feed FID/KID;
- :func:`evaluate_generated_images` and :func:`make_expert_kit`: :mod:`cellgen.evaluate.tasks`
  (``evaluate_generator.py``, ``expert_test.py``).

Example:
    >>> log = CommandLog("study/commands.sh")                                         # doctest: +SKIP
    >>> request = RunRequest("ddim_fast", {"data": "train.csv"}, out="study/generators/base")
    >>> run = train_generator("ddim", request, log=log)                               # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from cellgen.config import RunRequest

Printer = Callable[[str], None]

# Generator run kind -> (training script, trainer module with resolve_config(request) and train(config, ...),
# the config class that module trains).
GENERATOR_TRAINERS: dict[str, tuple[str, str, str]] = {
    "ddim": ("train_ddim", "cellgen.diffusion.train_lib", "DiffusionConfig"),
    "vanilla_gan": ("train_vanilla_gan", "cellgen.gan.train_lib", "VanillaGANConfig"),
    "cvae": ("train_cvae", "cellgen.vae.train_lib", "CVAEConfig"),
    "acgan": ("train_acgan", "cellgen.gan.acgan_train", "ACGANConfig"),
}
CLASSIFIER_SCRIPT = "evaluate_classifier"
# generate.py's default batch: the study writes the same images as its command line.
GENERATE_BATCH_SIZE = 32


class CommandLog:
    """Appends stage command lines (``python SCRIPT.py ARGS``) to a shell file.

    Args:
        path: the file (``commands.sh``); created with its folder on the first line.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def record(self, script: str, argv: Sequence[Any]) -> str:
        """Appends ``python SCRIPT.py ARGV`` (shell-quoted); returns the line."""
        line = f"python {script}.py {shlex.join(str(arg) for arg in argv)}".rstrip()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        return line

    def note(self, text: str) -> None:
        """Appends a comment line (a step that has no command of its own)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(f"# {text}\n")


def _record(log: CommandLog | None, script: str, argv: Sequence[Any]) -> None:
    if log is not None:
        log.record(script, argv)


def fresh_session() -> None:
    """Stages share one process: each starts from an empty Keras session in float32."""
    import keras

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")


# Generators ----------------------------------------------------------------------


def trainer_module(kind: str):
    """The trainer module of a generator kind (``resolve_config(request)``, ``train(config, ...)``)."""
    if kind == "ddim":
        from cellgen.diffusion import train_lib
    elif kind == "vanilla_gan":
        from cellgen.gan import train_lib
    elif kind == "cvae":
        from cellgen.vae import train_lib
    elif kind == "acgan":
        from cellgen.gan import acgan_train as train_lib
    else:
        from cellgen.config import ConfigError

        raise ConfigError(f"no trainer for generator kind {kind!r} (kinds: {', '.join(GENERATOR_TRAINERS)})")
    return train_lib


def generator_config_class(kind: str):
    """The config dataclass of a generator kind (for checks before anything trains)."""
    return getattr(trainer_module(kind), GENERATOR_TRAINERS[kind][2])


# Fields a training script takes as options of their own (``train_ddim.py --attributes-csv CSV --select
# COLUMN=VALUE ...``): commands.sh writes them so rather than as ``--set``.
SCRIPT_FLAGS: dict[str, dict[str, str]] = {"ddim": {"attributes_csv": "--attributes-csv", "select": "--select"}}


def training_argv(kind: str, request: RunRequest) -> list[str]:
    """The training script's command line of ``request`` (``RunRequest.to_argv``, with the fields of
    :data:`SCRIPT_FLAGS` as the script's own options: ``--select`` repeated per item)."""
    flags = SCRIPT_FLAGS.get(kind, {})
    own = {key: value for key, value in request.overrides.items() if key in flags}
    if not own:
        return request.to_argv()
    rest = dataclasses.replace(request, overrides={key: value for key, value in request.overrides.items()
                                                   if key not in flags})
    argv = rest.to_argv()
    extra: list[str] = []
    for key, value in own.items():
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            extra += [flags[key], str(item)]
    cut = argv.index("--out") if "--out" in argv else len(argv)
    return argv[:cut] + extra + argv[cut:]


def train_generator(kind: str, request: RunRequest, verbose: int = 1, log: CommandLog | None = None,
                    strategy=None):
    """Resolves and trains (or resumes, or fine-tunes) a generator run; returns its RunDir.

    The request's command line (:func:`training_argv`) is logged before training starts.

    Raises:
        ConfigError, DataError, RunError, NonFiniteLossError: as the trainer's ``train``.
    """
    trainer = trainer_module(kind)
    config = trainer.resolve_config(request)
    _record(log, GENERATOR_TRAINERS[kind][0], training_argv(kind, request))
    fresh_session()
    return trainer.train(config, resume=request.resume, verbose=verbose, strategy=strategy)


@dataclasses.dataclass
class GenerationRequest:
    """Images to write from a generator run (the flags of ``generate.py --n``; ``guidance`` and
    ``sampler`` for a class-conditional DDIM; ``attributes``, ``COLUMN=VALUE`` items, for a DDIM
    conditioned on attributes: ``--attr``)."""

    run: str
    out: str
    count: int
    seed: int = 0
    class_name: str | None = None
    steps: int | None = None
    batch_size: int = GENERATE_BATCH_SIZE
    guidance: float | None = None
    sampler: str | None = None
    attributes: list[str] = dataclasses.field(default_factory=list)

    def to_argv(self) -> list[str]:
        argv = ["--run", self.run, "--n", str(self.count), "--out", self.out, "--seed", str(self.seed),
                "--batch-size", str(self.batch_size), "--quiet"]
        if self.class_name is not None:
            argv += ["--class", self.class_name]
        if self.steps is not None:
            argv += ["--steps", str(self.steps)]
        if self.guidance is not None:
            argv += ["--guidance", str(self.guidance)]
        if self.sampler is not None:
            argv += ["--sampler", self.sampler]
        for item in self.attributes:
            argv += ["--attr", item]
        return argv

    def sampler_options(self) -> dict[str, Any]:
        """The options of :func:`cellgen.sampling.load_sampler` (those given)."""
        options = {"steps": self.steps, "guidance": self.guidance, "sampler": self.sampler,
                   "attributes": list(self.attributes) or None}
        return {key: value for key, value in options.items() if value is not None}


def generate_images(request: GenerationRequest, log: CommandLog | None = None) -> list[Path]:
    """Writes ``request.count`` images of a run as PNG files (as ``generate.py`` does); returns the paths."""
    from cellgen.sampling import load_sampler, write_samples

    _record(log, "generate", request.to_argv())
    fresh_session()
    sampler = load_sampler(request.run, **request.sampler_options())
    return write_samples(sampler, request.count, request.out, seed=request.seed, class_name=request.class_name,
                         batch_size=request.batch_size, progress=False)


# Classifiers -----------------------------------------------------------------------


def classifier_config(request: RunRequest):
    """The classifier experiment's config of a request, as ``evaluate_classifier.py`` resolves it
    (on resume, :func:`~cellgen.classify.train_lib.run_experiment` keeps the saved run's)."""
    from cellgen.classify.config import ClassifierConfig
    from cellgen.config import config_from_request

    return config_from_request(ClassifierConfig, request)


def run_classifier_experiment(request: RunRequest, verbose: int | str = 0, log: CommandLog | None = None,
                              printer: Printer = print) -> dict[str, Any]:
    """Runs the classifier arms of ``request`` (``evaluate_classifier.py``); returns the report."""
    from cellgen.classify.train_lib import run_experiment

    config = classifier_config(request)
    _record(log, CLASSIFIER_SCRIPT, request.to_argv())
    fresh_session()
    return run_experiment(config, resume=request.resume, verbose=verbose, printer=printer)


def domain_extractor_request(preset: str, overrides: dict[str, Any], train: str, val: str, out: str | Path,
                             image_size: int, seed: int) -> RunRequest:
    """The request of a feature classifier: one baseline arm, one seed, its best model saved.

    ``val`` picks its epoch and doubles as its test split: it only serves as a feature
    extractor, so no held-out split is spent on it.
    """
    values = {**overrides, "image_size": image_size, "data": train, "val_data": val, "test_data": val,
              "arms": ["baseline"], "seeds": 1, "seed": seed, "save_models": True}
    out = Path(out)
    return RunRequest(preset=preset, overrides=values, out=str(out), resume=(out / "config.json").is_file())


def trained_extractor(out: str | Path) -> Path | None:
    """The ``best.keras`` a finished feature-classifier experiment in ``out`` saved, or None."""
    out = Path(out)
    if not (out / "COMPLETE.json").is_file():
        return None
    found = sorted(out.rglob("best.keras"))
    return found[0] if found else None


def train_domain_extractor(request: RunRequest, log: CommandLog | None = None, printer: Printer = print) -> Path:
    """Trains (once) a classifier on real images; returns its ``best.keras`` for
    :func:`cellgen.evaluate.features.load_extractor`.

    It sees only the images of ``request`` (the kept real training images in a study),
    never synthetic or test images.

    Raises:
        RunError: the experiment saved no ``best.keras``.
    """
    from cellgen.runs import RunError

    out = Path(request.out)
    found = trained_extractor(out)
    if found is not None:
        return found
    run_classifier_experiment(request, verbose=0, log=log, printer=printer)
    found = trained_extractor(out)
    if found is None:
        raise RunError(f"the feature classifier in {out} saved no best.keras (save_models=true)")
    return found


# Evaluation ------------------------------------------------------------------------


def evaluate_generated_images(options, log: CommandLog | None = None, printer: Printer = print) -> dict[str, Any]:
    """Runs :func:`cellgen.evaluate.tasks.evaluate_generator` (``evaluate_generator.py``) and prints its summary."""
    from cellgen.evaluate.tasks import evaluate_generator, summary_lines

    _record(log, "evaluate_generator", options.to_argv())
    fresh_session()
    result = evaluate_generator(options)
    for line in summary_lines(result, options.out):
        printer(line)
    return result


def make_expert_kit(options, log: CommandLog | None = None) -> Path:
    """Runs :func:`cellgen.evaluate.tasks.make_expert_kit` (``expert_test.py make``)."""
    from cellgen.evaluate import tasks

    _record(log, "expert_test", options.to_argv())
    return tasks.make_expert_kit(options)


# Attribute fidelity (no script of its own: commands.sh gets the library call as a comment) -------------


@dataclasses.dataclass
class AttributeClassifierRequest:
    """An attribute classifier to train on real training images
    (:func:`cellgen.evaluate.attributes.train_attribute_classifier`), saved in ``out``."""

    data: str
    attribute: str
    attributes_csv: str
    select: list[str]
    out: str
    preset: str = "classifier_fast"
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0

    def call_text(self) -> str:
        """The equivalent Python call (for ``commands.sh``)."""
        return (f"train_attribute_classifier({self.data!r}, {self.attribute!r}, {self.attributes_csv!r}, "
                f"select={self.select!r}, preset={self.preset!r}, overrides={self.overrides!r}, "
                f"seed={self.seed}).save({self.out!r})")


def train_attribute_classifier(request: AttributeClassifierRequest, log: CommandLog | None = None):
    """Trains (once; a saved one in ``request.out`` is read back) and saves an attribute classifier.

    Raises:
        DataError, ConfigError: as :func:`cellgen.evaluate.attributes.train_attribute_classifier`.
    """
    from cellgen.evaluate import attributes

    out = Path(request.out)
    if (out / attributes.INFO_FILE).is_file():
        return attributes.AttributeClassifier.load(out)
    if log is not None:
        log.note(f"python: from cellgen.evaluate.attributes import train_attribute_classifier; "
                 f"{request.call_text()}")
    fresh_session()
    classifier = attributes.train_attribute_classifier(
        request.data, request.attribute, request.attributes_csv, select=request.select, preset=request.preset,
        overrides=request.overrides, seed=request.seed)
    classifier.save(out)
    return classifier
