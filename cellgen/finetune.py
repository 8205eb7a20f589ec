"""Resolving a training run's config: new, resumed or fine-tuned from a base run.

Shared by every trainer. N&Z 2023 trained one base model on all cells and fine-tuned
a copy per abnormality; a fine-tuned run therefore keeps the base run's
architecture (the weights must fit), and a resumed run keeps everything that
decides what it is (architecture, base run, class).

A resumed run's ``--set`` and flags apply to that session only: the run directory's
``config.json`` keeps the values the run was started with, so a one-off change
(say a learning rate tried once) does not follow every later resume.

Example:
    >>> config = resolve_run_config(DiffusionConfig, RunRequest(preset="ddim_fast", out="runs/d",  # doctest: +SKIP
    ...     overrides={"data": "train"}), rules)
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, TypeVar

from cellgen.config import CommonConfig, ConfigError, RunRequest, config_from_request, require_fields
from cellgen.runs import RunDir, RunError

C = TypeVar("C", bound=CommonConfig)


def parse_finetune_source(text: str) -> tuple[Path, int]:
    """``RUN`` or ``RUN/EPOCH`` -> (run directory, epoch; 0 = latest saved).

    Raises:
        RunError: neither ``RUN`` nor the parent of ``RUN/EPOCH`` is a run directory.
    """
    path = Path(text)
    if (path / "config.json").is_file():
        return path, 0
    if path.name.isdigit() and (path.parent / "config.json").is_file():
        return path.parent, int(path.name)
    raise RunError(f"--finetune-from {text}: not a run directory (no config.json); give RUN or RUN/EPOCH")


@dataclasses.dataclass(frozen=True)
class FinetuneRules:
    """What a stage fixes when fine-tuning and resuming.

    Attributes:
        fixed_fields: fields a fine-tuned or resumed run takes from its base or saved run
            (architecture, and whatever else the saved weights depend on).
        resume_fixed: further fields a resumed run may not change (besides ``fixed_fields``,
            the class and the base run).
        load_base_config: reads a base run's saved config (raises RunError for another kind);
            None for stages that do not fine-tune.
        resolve_epoch: the saved epoch to start from (0: the latest); raises RunError.
    """

    fixed_fields: tuple[str, ...] = ()
    resume_fixed: tuple[str, ...] = ()
    load_base_config: Callable[[RunDir], CommonConfig] | None = None
    resolve_epoch: Callable[[RunDir, int], int] | None = None

    @property
    def finetunes(self) -> bool:
        """Whether the stage can start from a base run (``--finetune-from``)."""
        return self.load_base_config is not None


def apply_finetune_base(config: C, explicit: set[str], rules: FinetuneRules) -> C:
    """Takes the fixed fields (and, unless given, the data) from the base run of ``finetune_from``."""
    base_path, epoch = parse_finetune_source(config.finetune_from)
    base_run = RunDir.open(base_path, option="--finetune-from")
    base = rules.load_base_config(base_run)
    epoch = rules.resolve_epoch(base_run, epoch or config.finetune_epoch)
    changes = {}
    for name in rules.fixed_fields:
        ours, theirs = getattr(config, name), getattr(base, name)
        if ours != theirs:
            if name in explicit:
                raise ConfigError(f"{name}={ours} differs from the base run's {name}={theirs} "
                                  f"({base_run.path}); fine-tuning keeps the base architecture")
            changes[name] = theirs
    if changes:
        print("fine-tuning keeps the base run's architecture: "
              + ", ".join(f"{name}={value}" for name, value in changes.items()))
    if not config.data:
        changes["data"] = base.data
    return config.replace(finetune_from=str(base_path), finetune_epoch=epoch, **changes)


def _resumed_config(config_class: type[C], request: RunRequest, rules: FinetuneRules) -> C:
    out = request.out
    saved = RunDir.open(out).load_config(config_class)
    config = config_from_request(config_class, request, base=saved)
    if request.finetune_from is not None:
        base_path, epoch = parse_finetune_source(request.finetune_from)
        if str(base_path) != saved.finetune_from or (epoch and epoch != saved.finetune_epoch):
            raise ConfigError(f"--resume continues {out}, which was fine-tuned from "
                              f"{saved.finetune_from or 'nothing'}; drop --finetune-from")
    if request.class_name is not None and request.class_name != saved.class_name:
        raise ConfigError(f"--resume cannot change --class ({out} trains on {saved.class_name or 'every class'})")
    fixed = rules.fixed_fields + rules.resume_fixed
    if rules.finetunes:
        fixed += ("class_name", "finetune_from", "finetune_epoch")
    changed = [name for name in dict.fromkeys(fixed) if getattr(config, name) != getattr(saved, name)]
    if changed:
        raise ConfigError(f"--resume cannot change {', '.join(changed)}; start a new run instead")
    return config


def is_resume(request: RunRequest) -> bool:
    """True when the request resumes an existing run (``--resume`` and ``out`` holds a config)."""
    return bool(request.resume and request.out and (Path(request.out) / "config.json").is_file())


def resolve_run_config(config_class: type[C], request: RunRequest, rules: FinetuneRules | None = None) -> C:
    """The run's config from a training request.

    - a new run: defaults, then the preset, then the overrides;
    - ``finetune_from=RUN[/EPOCH]`` (stages with ``rules``): the same, but the fixed fields come
      from the base run (setting one to another value explicitly is an error) and ``data``
      defaults to the base run's; without a preset the base run's config is the start;
    - ``resume`` with an existing ``out``: the saved config plus the overrides, with the fixed
      fields (``rules.fixed_fields``/``resume_fixed``), the class and the base run unchangeable.

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    rules = rules or FinetuneRules()
    if (request.finetune_from or request.class_name) and not rules.finetunes:
        raise ConfigError("this stage does not fine-tune: --finetune-from and --class do not apply")
    if is_resume(request):
        config = _resumed_config(config_class, request, rules)
    else:
        if request.finetune_from is not None and not request.preset:
            # No preset: continue with the base run's own settings (then the overrides).
            base_path, _ = parse_finetune_source(request.finetune_from)
            base = rules.load_base_config(RunDir.open(base_path, option="--finetune-from")).replace(out="", finetune_epoch=0)
            config = config_from_request(config_class, request, base=base)
        else:
            config = config_from_request(config_class, request)
        flags = {}
        if request.class_name is not None:
            flags["class_name"] = request.class_name
        if request.finetune_from is not None:
            flags["finetune_from"] = request.finetune_from
        if flags:
            config = config.replace(**flags)
        if rules.finetunes and config.finetune_from:
            config = apply_finetune_base(config, request.explicit_fields(), rules)
    require_fields(config, data="no training data: pass --data DIR (or set data in the config)",
                   out="no run directory: pass --out DIR")
    return config
