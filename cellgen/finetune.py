"""Resolving a training run's config: new, resumed or fine-tuned from a base run.

Shared by the Vanilla-GAN and diffusion trainers (``train_vanilla_gan.py``,
``train_ddim.py``). N&Z 2023 trained one base model on all cells and fine-tuned
a copy per abnormality; a fine-tuned run therefore keeps the base run's
architecture (the weights must fit), and a resumed run keeps everything that
decides what it is (architecture, base run, class).

Example:
    >>> config = resolve_run_config(DiffusionConfig, args, FinetuneRules(  # doctest: +SKIP
    ...     fixed_fields=ARCHITECTURE_FIELDS, resume_fixed=("timesteps",),
    ...     load_base_config=load_diffusion_config, resolve_epoch=resolve_epoch))
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Callable, TypeVar

from cellgen.config import (FLAG_TO_FIELD, CommonConfig, ConfigError, config_from_args, parse_set_options,
                            require_fields)
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


def explicit_fields(args: argparse.Namespace) -> set[str]:
    """Config fields set on the command line (``--set`` keys and common flags), not by a preset.

    A preset's architecture silently gives way to the base run's when fine-tuning;
    a value the user typed must not, so it is an error instead.
    """
    fields = set(parse_set_options(getattr(args, "set", []) or []))
    fields.update(field for flag, field in FLAG_TO_FIELD.items() if getattr(args, flag, None) is not None)
    return fields


@dataclasses.dataclass(frozen=True)
class FinetuneRules:
    """What a stage fixes when fine-tuning and resuming.

    Attributes:
        fixed_fields: fields a fine-tuned run takes from its base run (architecture, and
            whatever else the saved weights depend on).
        resume_fixed: further fields a resumed run may not change (besides ``fixed_fields``,
            the class and the base run).
        load_base_config: reads a base run's saved config (raises RunError for another kind).
        resolve_epoch: the saved epoch to start from (0: the latest); raises RunError.
    """

    fixed_fields: tuple[str, ...]
    resume_fixed: tuple[str, ...]
    load_base_config: Callable[[RunDir], CommonConfig]
    resolve_epoch: Callable[[RunDir, int], int]


def apply_finetune_base(config: C, explicit: set[str], rules: FinetuneRules) -> C:
    """Takes the fixed fields (and, unless given, the data) from the base run of ``finetune_from``."""
    base_path, epoch = parse_finetune_source(config.finetune_from)
    base_run = RunDir.open(base_path)
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


def _resumed_config(config_class: type[C], args: argparse.Namespace, flags: dict, rules: FinetuneRules) -> C:
    out = args.out
    saved = RunDir.open(out).load_config(config_class)
    config = config_from_args(config_class, args, base=saved)
    if "finetune_from" in flags:
        base_path, epoch = parse_finetune_source(flags["finetune_from"])
        if str(base_path) != saved.finetune_from or (epoch and epoch != saved.finetune_epoch):
            raise ConfigError(f"--resume continues {out}, which was fine-tuned from "
                              f"{saved.finetune_from or 'nothing'}; drop --finetune-from")
    if "class_name" in flags and flags["class_name"] != saved.class_name:
        raise ConfigError(f"--resume cannot change --class ({out} trains on {saved.class_name or 'every class'})")
    fixed = rules.fixed_fields + ("class_name", "finetune_from", "finetune_epoch") + rules.resume_fixed
    changed = [name for name in dict.fromkeys(fixed) if getattr(config, name) != getattr(saved, name)]
    if changed:
        raise ConfigError(f"--resume cannot change {', '.join(changed)}; start a new run instead")
    return config


def resolve_run_config(config_class: type[C], args: argparse.Namespace, rules: FinetuneRules) -> C:
    """The run's config from a training script's parsed arguments.

    - a new run: defaults, then the ``--config`` preset, ``--set`` and flags;
    - ``--finetune-from RUN[/EPOCH]``: the same, but the fixed fields come from the base
      run (setting one to another value on the command line is an error) and ``data``
      defaults to the base run's; without ``--config`` the base run's config is the start;
    - ``--resume`` with an existing ``--out``: the saved config plus ``--set``/flags, with
      the fixed fields, the class and the base run unchangeable.

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    flags = {}
    if getattr(args, "class_name", None) is not None:
        flags["class_name"] = args.class_name
    if getattr(args, "finetune_from", None) is not None:
        flags["finetune_from"] = args.finetune_from
    out = getattr(args, "out", None)
    if getattr(args, "resume", False) and out and (Path(out) / "config.json").is_file():
        config = _resumed_config(config_class, args, flags, rules)
    else:
        if "finetune_from" in flags and not getattr(args, "config", None):
            # No preset: continue with the base run's own settings (then --set and flags).
            base_path, _ = parse_finetune_source(flags["finetune_from"])
            base = rules.load_base_config(RunDir.open(base_path)).replace(out="", finetune_epoch=0)
            config = config_from_args(config_class, args, base=base)
        else:
            config = config_from_args(config_class, args)
        if flags:
            config = config.replace(**flags)
        if config.finetune_from:
            config = apply_finetune_base(config, explicit_fields(args), rules)
    require_fields(config, data="no training data: pass --data DIR (or set data in the config)",
                   out="no run directory: pass --out DIR")
    return config
