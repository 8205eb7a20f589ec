"""Loading a diffusion run's saved models, and its sampler for ``generate.py``.

A ``ddim`` run keeps ``models/diffusion-epoch-NNNN.keras`` (online network, EMA
network and image statistics in one file) for the epochs it saved. Sampling
always uses the EMA network.

- :func:`load_diffusion_model` returns the model of a saved epoch and the run's config;
- :func:`load_sampler` is registered in ``cellgen.sampling.SAMPLER_LOADERS`` under
  ``ddim`` and accepts ``steps``, ``eta``, ``contrast``, ``epoch``, ``guidance`` and
  ``sampler``. For a discrete-time (DDPM, Matos 2025) run it samples ancestrally over
  all T steps unless ``steps`` is given, which selects DDIM over ``steps`` strided steps.
  A class-conditional run's sampler lists its classes (``.classes``) and draws each with
  classifier-free guidance (``.sample(count, seed, class_name=...)``); a conditional run
  fine-tuned on one class lists and draws that class. A run conditioned on attributes also
  takes ``attributes=["nucleus_shape=segmented-multilobed", ...]`` (``generate.py --attr``):
  every image is drawn with those values, guided against no class and no attribute.

Example:
    >>> sampler = load_sampler(RunDir.open("runs/ddim-basophil"), steps=20, eta=0.0)  # doctest: +SKIP
    >>> images = sampler.sample(9, seed=0)     # float32 (9, S, S, 3) in [-1, 1]        # doctest: +SKIP
    >>> sampler = load_sampler(RunDir.open("runs/ddim-cond"), guidance=2.0, sampler="dpmpp_2m")  # doctest: +SKIP
    >>> sampler.classes, sampler.sample(9, seed=0, class_name="basophil").shape                # doctest: +SKIP
    >>> sampler = load_sampler(RunDir.open("runs/ddim-attr"),                                   # doctest: +SKIP
    ...                        attributes=["nucleus_shape=segmented-multilobed"])
    >>> sampler.sample(9, seed=0, class_name="neutrophil").shape                                # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from cellgen.config import ConfigError
from cellgen.data.attributes import describe_ids, request_ids
from cellgen.diffusion.config import DiffusionConfig
from cellgen.runs import RunDir, RunError

KIND = DiffusionConfig.kind
_EPOCH_FILE = re.compile(r"^diffusion-epoch-(\d+)\.keras$")


def model_file(epoch: int) -> str:
    """File name of the model saved after ``epoch`` epochs."""
    return f"diffusion-epoch-{int(epoch):04d}.keras"


def _as_run(run: RunDir | str | os.PathLike) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def saved_epochs(run: RunDir | str | os.PathLike) -> list[int]:
    """Epochs whose model was saved, ascending."""
    run = _as_run(run)
    if not run.models.is_dir():
        return []
    return sorted(int(match.group(1)) for match in map(_EPOCH_FILE.match, os.listdir(run.models)) if match)


def resolve_epoch(run: RunDir | str | os.PathLike, epoch: int | None = None) -> int:
    """``epoch`` if saved, else the latest saved epoch when ``epoch`` is None or 0.

    Raises:
        RunError: nothing saved, or not that epoch (the message lists the saved ones).
    """
    run = _as_run(run)
    epochs = saved_epochs(run)
    if not epochs:
        raise RunError(f"{run.path}: no saved diffusion model in {run.models} (has the run finished an epoch?)")
    if not epoch:
        return epochs[-1]
    if int(epoch) not in epochs:
        raise RunError(f"{run.path}: no model saved for epoch {epoch}; saved epochs: {', '.join(map(str, epochs))}")
    return int(epoch)


def load_diffusion_config(run: RunDir | str | os.PathLike) -> DiffusionConfig:
    """The run's saved config (raises RunError for a run of another kind)."""
    return _as_run(run).load_config(DiffusionConfig)


def _load_keras(path: Path):
    import cellgen.diffusion.ddim  # noqa: F401  (registers DiffusionModel and the layers)
    from cellgen.runs import load_model_file

    return load_model_file(path)  # a truncated file is reported as damaged


def load_diffusion_model(run: RunDir | str | os.PathLike, epoch: int | None = None, rebuild: bool = False):
    """The diffusion model saved after ``epoch`` (default: the latest) and the run's config.

    Args:
        run: a ``ddim`` run directory.
        epoch: a saved epoch (None or 0: the latest).
        rebuild: True builds a fresh model from the run's config under the *current* dtype
            policy (and distribution scope) and copies every saved weight into it (online, EMA,
            batch-norm statistics, image mean/std); False returns the stored model.

    Raises:
        RunError: not a ``ddim`` run, nothing saved for ``epoch``, or a file that does not load.
    """
    from cellgen.diffusion.ddim import DiffusionModel

    run = _as_run(run)
    config = load_diffusion_config(run)
    chosen = resolve_epoch(run, epoch)
    stored = _load_keras(run.models / model_file(chosen))
    if not isinstance(stored, DiffusionModel):
        raise RunError(f"{run.models / model_file(chosen)}: not a cellgen DiffusionModel")
    if not rebuild:
        return stored, config
    fresh = DiffusionModel(stored.config)
    try:
        fresh.set_weights(stored.get_weights())
    except ValueError as error:
        raise RunError(f"{run.path}: saved model of epoch {chosen} does not match its config ({error})") from None
    return fresh, config


class DiffusionSampler:
    """Draws images from a diffusion model's EMA network (the :class:`cellgen.sampling.Sampler` interface).

    Args:
        model: a :class:`~cellgen.diffusion.ddim.DiffusionModel`.
        steps: solver steps (None: the config's ``diffusion_steps``, or all T ancestral steps for
            a discrete-time run sampled with ``ddpm``).
        eta: 0 deterministic DDIM, 1 stochastic (``ddim`` only).
        contrast: N&Z section 6.2 contrast c (0 = off).
        classes: ``[class]`` for an unconditional model fine-tuned on one class, ``None`` for an
            unconditional base model. Conditional models name their classes themselves
            (``model.sample_classes``: every class, or a one-class fine-tune's class).
        epoch: the saved epoch (for records).
        guidance: classifier-free guidance weight of conditional models (None: the config's).
        sampler: ``ddim``, ``dpmpp_2m``, ``heun`` or ``ddpm`` (None: the config's ``sampler``;
            ``auto`` is ``ddpm`` over all T steps for a discrete-time run without ``steps``, else ``ddim``).
        attributes: models with attributes: values every image is drawn with, ``["column=value", ...]``
            (the others "no value"; see :meth:`DiffusionModel.attribute_ids`).

    Example:
        >>> sampler = DiffusionSampler(model, steps=20)      # doctest: +SKIP
        >>> sampler.sample(4, seed=1).shape                   # doctest: +SKIP
        (4, 64, 64, 3)
        >>> sampler.sample(4, seed=1, class_name="basophil")  # a conditional model    # doctest: +SKIP
    """

    kind = KIND

    def __init__(self, model, steps: int | None = None, eta: float = 0.0, contrast: float = 0.0,
                 classes: list[str] | None = None, epoch: int | None = None, guidance: float | None = None,
                 sampler: str | None = None, attributes=None):
        self.model = model
        self.attribute_ids = model.attribute_ids(attributes, 1)[0]  # checks the request (ConfigError)
        self.attributes = list(describe_ids(self.attribute_ids, model.attribute_vocabulary))
        self.image_size = int(model.config.image_size)
        self.conditional = bool(model.is_conditional)
        self.classes = model.sample_classes if self.conditional else classes
        self.epoch = epoch
        self.eta = float(eta)
        self.contrast = float(contrast)
        self.guidance = float(model.config.guidance if guidance is None else guidance) if self.conditional else None
        name = model.config.sampler if sampler is None else sampler
        if name == "auto":
            name = "ddpm" if model.is_discrete and steps is None else "ddim"
        self.method = model.resolve_sampler(name)
        if self.method == "ddpm":
            self.steps = int(model.config.timesteps)
        else:
            self.steps = int(model.config.diffusion_steps if steps is None else steps)

    def sample(self, count: int, seed: int, class_name: str | None = None, batch_size: int = 64) -> np.ndarray:
        """``count`` images, float32 (count, S, S, 3) in [-1, 1]; the same for the same seed.

        A conditional model draws ``class_name`` with classifier-free guidance; without a class,
        a one-class fine-tune draws its class and a base model its unconditional ("no class") mode.
        """
        if class_name is not None and class_name not in (self.classes or []):
            if self.conditional:
                raise RunError(f"class {class_name!r} cannot be chosen: this conditional diffusion model draws "
                               f"{', '.join(self.classes)}")
            trained = f"was fine-tuned on class {self.classes[0]!r}" if self.classes else "is unconditional"
            raise RunError(f"class {class_name!r} cannot be chosen: this diffusion model {trained}; fine-tune "
                           "one model per class (train_ddim.py --finetune-from RUN --class NAME) or train a "
                           "conditional one (--set conditional=true)")
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        labels = class_name if self.conditional else None
        attributes = self.attribute_ids if self.model.has_attributes else None
        return self.model.generate(count, steps=self.steps, eta=self.eta, seed=seed, labels=labels,
                                   guidance=self.guidance, sampler=self.method, contrast=self.contrast,
                                   batch_size=max(1, int(batch_size)), attributes=attributes)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "steps": self.steps, "eta": self.eta,
                "contrast": self.contrast, "epoch": self.epoch, "classes": self.classes,
                "conditional": self.conditional, "guidance": self.guidance,
                **({"attributes": self.attributes} if self.model.has_attributes else {})}


def load_sampler(run: RunDir, steps: int | None = None, eta: float | None = None, contrast: float | None = None,
                 epoch: int | None = None, guidance: float | None = None, sampler: str | None = None,
                 attributes=None, **options: Any) -> DiffusionSampler:
    """The sampler of a ``ddim`` run (registered in ``cellgen.sampling.SAMPLER_LOADERS``).

    Args:
        run: the run directory.
        steps: sampling steps (default: the run's ``diffusion_steps``; all T ancestral steps
            for a discrete-time DDPM run).
        eta: DDIM eta (default: the run's ``sample_eta``).
        contrast: N&Z contrast c (default: the run's ``contrast``, 0 = off).
        epoch: a saved epoch (default: the latest).
        guidance: classifier-free guidance weight (conditional runs; default: the run's ``guidance``).
        sampler: ``ddim``, ``dpmpp_2m``, ``heun`` or ``ddpm`` (default: the run's ``sampler``).
        attributes: runs conditioned on attributes: ``["column=value", ...]`` every image is drawn with.
        **options: other generate.py options; any that is not None is rejected.

    Raises:
        RunError: not a ddim run / nothing saved / an option that does not apply (``attributes`` for
            a run without them).
        ConfigError: a bad ``steps``, ``eta``, ``contrast``, ``guidance``, ``sampler`` or attribute value.
    """
    from cellgen.diffusion.config import SAMPLERS
    from cellgen.sampling import reject_options

    reject_options(KIND, options)
    run = _as_run(run)
    config = load_diffusion_config(run)
    if steps is not None and int(steps) < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    if steps is not None and config.time_mode == "discrete" and int(steps) > config.timesteps:
        raise ConfigError(f"--steps must be <= {config.timesteps} (the run's timesteps)")
    deterministic = (sampler or config.sampler) in ("dpmpp_2m", "heun")
    if eta is not None and float(eta) and deterministic:
        raise ConfigError(f"--eta {eta}: the {sampler or config.sampler} sampler is deterministic "
                          "(eta applies to ddim only)")
    eta = (0.0 if deterministic else config.sample_eta) if eta is None else float(eta)
    if not 0.0 <= eta <= 1.0:
        raise ConfigError(f"--eta must be in [0, 1], got {eta}")
    contrast = config.contrast if contrast is None else float(contrast)
    if not 0.0 <= contrast < 127.0:
        raise ConfigError(f"--contrast must be in [0, 127), got {contrast}")
    if guidance is not None:
        if not config.conditional:
            raise RunError(f"--guidance needs a class-conditional diffusion run; {run.path} is unconditional")
        if float(guidance) < 0:
            raise ConfigError(f"--guidance must be >= 0, got {guidance}")
    if sampler is not None:
        if sampler not in SAMPLERS:
            raise ConfigError(f"--sampler must be one of {', '.join(SAMPLERS)}; got {sampler!r}")
        if sampler == "ddpm" and config.time_mode != "discrete":
            raise ConfigError(f"--sampler ddpm needs a discrete-time run; {run.path} is continuous-time")
    if attributes:
        if not config.attributes:
            raise RunError(f"--attr needs a diffusion run conditioned on attributes; {run.path} has none "
                           "(train one with --set attributes=COLUMN,... --attributes-csv CSV)")
        request_ids(attributes, config.attribute_vocabulary(), option="--attr", error=ConfigError)
    chosen = resolve_epoch(run, epoch)
    model, _ = load_diffusion_model(run, chosen)
    classes = [config.class_name] if config.class_name else None
    return DiffusionSampler(model, steps=steps, eta=eta, contrast=contrast, classes=classes, epoch=chosen,
                            guidance=guidance, sampler=sampler, attributes=attributes or None)


def model_path(run: RunDir | str | os.PathLike, epoch: int) -> Path:
    """Path of the model saved after ``epoch`` epochs."""
    return _as_run(run).models / model_file(epoch)
