"""Dataclass configs loaded from TOML presets, with command-line overrides.

Every stage defines a dataclass that subclasses :class:`CommonConfig`; the thesis
hyperparameter tables live in TOML presets under ``configs/`` and any field can
be overridden with ``--set key=value`` or one of the common flags
(``--data --out --size --epochs --batch-size --seed --precision --strategy``).

Configs are flat (one level of keys) so that every key can be set from the
command line; list values are written as TOML arrays (``--set kernel=[5,5]``) or
comma-separated (``--set arms=baseline,synthetic``).

Example:
    >>> @dataclasses.dataclass
    ... class MyConfig(CommonConfig):
    ...     kind: ClassVar[str] = "my_model"
    ...     learning_rate: float = 1e-4
    >>> cfg = load_config(MyConfig, None, ["learning_rate=3e-4", "epochs=2"])
    >>> cfg.learning_rate, cfg.epochs
    (0.0003, 2)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence, TypeVar

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


class ConfigError(ValueError):
    """A preset file or override is invalid; the message names the key or file."""


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a config option may take: numbers between bounds, or a set of choices.

    Build one with :func:`at_least`, :func:`above`, :func:`at_most`, :func:`between`,
    :func:`one_of` (and :func:`every` for the items of a list); ``str(range)`` is what the
    error message says (``>= 1``, ``in [0, 1)``, ``one of raise, skip``), with the ``note``
    in parentheses, and :meth:`check` raises ``KEY must be RANGE, got VALUE`` (for example
    ``ema must be in [0, 1), got 1.5``). A NaN is outside every numeric range.

    Example:
        >>> ema = between(0, 1, high_open=True)
        >>> str(ema), ema.contains(0.999), ema.contains(1.5)
        ('in [0, 1)', True, False)
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    note: str = ""
    each: bool = False

    def contains(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if self.low is not None and not (value > self.low if self.low_open else value >= self.low):
            return False
        return self.high is None or bool(value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.choices is not None:
            text = "one of " + ", ".join(map(str, self.choices))
        elif self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high}"
        return f"{text} ({self.note})" if self.note else text

    def check(self, key: str, value: Any, error: type[Exception] = ConfigError) -> None:
        """Raises ``error`` naming ``key`` when ``value`` (with ``each``: an item of it) is outside."""
        for item in (value if self.each else (value,)):
            if not self.contains(item):
                raise error(f"{key}{' entries' if self.each else ''} must be {self}, got {item!r}")


def at_least(low: float, note: str = "") -> Range:
    return Range(low=low, note=note)


def above(low: float, note: str = "") -> Range:
    return Range(low=low, low_open=True, note=note)


def at_most(high: float, note: str = "") -> Range:
    return Range(high=high, note=note)


def between(low: float, high: float, low_open: bool = False, high_open: bool = False, note: str = "") -> Range:
    """``[low, high]``; ``low_open``/``high_open`` leave a bound out (``between(0, 1, high_open=True)`` is [0, 1))."""
    return Range(low=low, high=high, low_open=low_open, high_open=high_open, note=note)


def one_of(*choices: Any, note: str = "") -> Range:
    return Range(choices=tuple(choices), note=note)


def every(allowed: Range) -> Range:
    """``allowed`` for each item of a list option (``every(at_least(1))`` for a list of widths)."""
    return dataclasses.replace(allowed, each=True)


def option_flag(key: str) -> str:
    """The script option of a field: ``kid_subsets`` -> ``--kid-subsets``."""
    return "--" + key.replace("_", "-")


def check_ranges(target: Any, ranges: dict[str, Range], error: type[Exception] = ConfigError,
                 label: Callable[[str], str] = str) -> None:
    """Checks ``getattr(target, key)`` against each ``ranges[key]``; None (an unset option) is not checked.

    ``label`` turns a key into the name the message gives (:func:`option_flag` for the
    options of a script); ``error`` is the exception raised.
    """
    for key, allowed in ranges.items():
        value = getattr(target, key)
        if value is not None:
            allowed.check(label(key), value, error)


@dataclasses.dataclass
class CommonConfig:
    """Fields every training stage has.

    Attributes:
        data: training data (class folder, CSV, flat folder or ``tfds:NAME``).
        out: run directory to create.
        image_size: side of the square images the models see.
        crop: optional center crop before resizing: pixels (> 1) or a fraction of the shorter side.
        epochs: training epochs.
        batch_size: global batch size (split across replicas under tf.distribute).
        seed: seeds Python, NumPy and TensorFlow.
        precision: ``fp32``, ``bf16``, ``fp16`` or ``auto`` (see cellgen.precision).
        strategy: ``auto``, ``default``, ``mirrored``, ``multiworker`` or ``cpu:N`` (see cellgen.distribute).
        on_error: what the data reader does with an unreadable image: ``raise`` or ``skip``.
        workers: image-decoding threads of the data reader.
        classes: the expected class names (empty: whatever the data holds). A folder or CSV
            label outside them is an error naming it, so a typo such as ``basophill`` never
            becomes a class of its own.
        description: free text recorded in the run directory.

    ``ranges`` declares the allowed values of fields (see :class:`Range`); a subclass's
    ``ranges`` adds entries or overrides its bases' (:meth:`declared_ranges` merges them along
    the MRO) and :meth:`validate` checks them all, so a subclass's ``validate`` only adds
    the checks that relate several fields. ``precision`` is checked against ``precisions``.
    """

    kind: ClassVar[str] = "common"
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16", "auto")
    ranges: ClassVar[dict[str, Range]] = {
        "image_size": between(8, 4096),  # a typo such as --size 1000000 fails here, not in an allocation
        "epochs": at_least(0),
        "seed": between(0, 2**31, high_open=True),
        "workers": at_least(0),
        "batch_size": at_least(1),
        "on_error": one_of("raise", "skip"),
        "crop": at_least(0, note="0 = no crop"),
    }

    data: str = ""
    out: str = ""
    image_size: int = 64
    crop: float = 0.0
    epochs: int = 1
    batch_size: int = 16
    seed: int = 0
    precision: str = "fp32"
    strategy: str = "auto"
    on_error: str = "raise"
    workers: int = 2
    classes: list[str] = dataclasses.field(default_factory=list)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain dict, with its ``kind`` first."""
        return {"kind": self.kind, **dataclasses.asdict(self)}

    def replace(self, **changes: Any):
        """A copy with some fields changed (validated like overrides)."""
        return apply_overrides(self, changes)

    @classmethod
    def declared_ranges(cls) -> dict[str, Range]:
        """The ``ranges`` of the class and its bases (a subclass's entry wins), ``precision`` first."""
        merged = {"precision": one_of(*cls.precisions)}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("ranges", {}))
        unknown = set(merged) - {field.name for field in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__}.ranges names no field: {', '.join(sorted(unknown))}")
        return merged

    def validate(self) -> None:
        """Checks the :meth:`declared_ranges`; subclasses extend it with checks that relate fields."""
        check_ranges(self, self.declared_ranges())


@dataclasses.dataclass
class GeneratorRunConfig(CommonConfig):
    """Fields of every generator trainer's run directory (the training loop's snapshots and checkpoints).

    Attributes:
        sample_every: write a sample grid every this many epochs (0: only after the last epoch).
        save_every: keep the networks of every this many epochs under ``models/`` (0: only the
            last epoch's; the last is always kept).
        checkpoint_every: resumable checkpoint every this many epochs (and after the last).
        keep_checkpoints: resumable checkpoints kept (older ones are deleted).
    """

    ranges = {
        **dict.fromkeys(("sample_every", "save_every"), at_least(0, note="0 = after the last epoch only")),
        **dict.fromkeys(("checkpoint_every", "keep_checkpoints"), at_least(1)),
    }

    sample_every: int = 1
    save_every: int = 1
    checkpoint_every: int = 1
    keep_checkpoints: int = 2


@dataclasses.dataclass
class FinetuneConfig(GeneratorRunConfig):
    """A generator that can train on one class and start from a base run (N&Z's per-abnormality fine-tune).

    Attributes:
        class_name: train on this class only (``--class``).
        finetune_from: base run directory whose networks start the training (``--finetune-from RUN[/EPOCH]``).
        finetune_epoch: saved epoch of the base run that was loaded (0: its latest).
    """

    ranges = {"finetune_epoch": at_least(0, note="0 = latest")}

    class_name: str = ""
    finetune_from: str = ""
    finetune_epoch: int = 0


C = TypeVar("C", bound=CommonConfig)


def field_names(config_class: type[CommonConfig]) -> list[str]:
    return [field.name for field in dataclasses.fields(config_class)]


def _field_types(config_class: type[CommonConfig]) -> dict[str, Any]:
    hints = typing.get_type_hints(config_class)
    return {field.name: hints[field.name] for field in dataclasses.fields(config_class)}


def _coerce(key: str, value: Any, target: Any) -> Any:
    """Converts a TOML or command-line value to the field's declared type."""
    origin = typing.get_origin(target)
    if origin in (typing.Union, types.UnionType):
        options = [t for t in typing.get_args(target) if t is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(key, value, options[0])
    if origin in (list, tuple):
        (item_type, *_) = typing.get_args(target) or (str,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise ConfigError(f"{key}: cannot parse list {value!r}") from None
            else:
                value = [part.strip() for part in text.split(",") if part.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        items = [_coerce(key, item, item_type) for item in value]
        return items if origin is list else tuple(items)
    if origin is dict:
        if isinstance(value, str):
            value = _parse_mapping(key, value)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table like name=value,name2=value2, got {value!r}")
        return dict(value)
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if target is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if target is float:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
            if math.isfinite(number):
                return number
        if target is str:
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: expected {getattr(target, '__name__', target)}, got {value!r}") from None
    if target is float:  # nan, inf, 1e999 (a ConfigError raised inside the try would read "expected float")
        raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    return value


def _parse_mapping(key: str, text: str) -> dict[str, Any]:
    """Parses ``a=1,b=0.5`` (or a JSON object) into a dict."""
    text = text.strip()
    if not text:
        return {}
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            raise ConfigError(f"{key}: cannot parse {text!r}") from None
    result: dict[str, Any] = {}
    for part in text.split(","):
        if "=" not in part:
            raise ConfigError(f"{key}: expected name=value pairs, got {part!r}")
        name, raw = part.split("=", 1)
        try:
            result[name.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            result[name.strip()] = raw.strip()
    return result


def apply_overrides(config: C, overrides: dict[str, Any]) -> C:
    """Returns a copy of ``config`` with ``overrides`` applied and validated."""
    types_by_name = _field_types(type(config))
    changes = {}
    for key, value in overrides.items():
        if key == "kind":
            if value != config.kind:
                raise ConfigError(f"this preset is for {value!r}, but the script trains {config.kind!r}")
            continue
        if key not in types_by_name:
            import difflib

            close = difflib.get_close_matches(key, list(types_by_name), n=1, cutoff=0.75)
            hint = f" (did you mean {close[0]!r}?)" if close else ""  # a mistyped key: the one meant first
            valid = ", ".join(sorted(types_by_name))
            raise ConfigError(f"unknown config key {key!r}{hint}; valid keys: {valid}")
        changes[key] = _coerce(key, value, types_by_name[key])
    updated = dataclasses.replace(config, **changes)
    updated.validate()
    return updated


def parse_set_options(items: Sequence[str]) -> dict[str, Any]:
    """Parses ``key=value`` strings from ``--set``; values stay strings (coerced later)."""
    result = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        result[key.strip()] = value.strip()
    return result


def resolve_preset_path(path: str | os.PathLike) -> Path:
    """Finds a preset by path, or by name inside the project's ``configs/`` folder."""
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    for guess in (CONFIG_DIR / candidate, CONFIG_DIR / f"{candidate}.toml"):
        if guess.is_file():
            return guess
    import difflib

    presets = sorted(preset.stem for preset in CONFIG_DIR.glob("*.toml"))
    close = difflib.get_close_matches(candidate.stem, presets, n=3, cutoff=0.6)
    hint = (f"did you mean {', '.join(close)}?" if close else f"presets in {CONFIG_DIR}: {', '.join(presets)}")
    raise ConfigError(f"config file not found: {path} ({hint})")


def read_toml(path: str | os.PathLike) -> dict[str, Any]:
    path = resolve_preset_path(path)
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None


def load_config(
    config_class: type[C],
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] | dict[str, Any] = (),
) -> C:
    """Builds a config from its defaults, an optional TOML preset and overrides.

    Args:
        config_class: the stage's dataclass.
        path: TOML preset (a path, or a name under ``configs/``).
        overrides: ``key=value`` strings or a dict applied after the preset.

    Raises:
        ConfigError: unknown key (the message lists the valid keys), bad value or file.
    """
    config = config_class()
    if path:
        values = read_toml(path)
        nested = [key for key, value in values.items() if isinstance(value, dict) and
                  not typing.get_origin(_field_types(config_class).get(key)) is dict]
        if nested:
            raise ConfigError(f"{path}: configs are flat; unexpected table(s) {', '.join(nested)}")
        try:
            config = apply_overrides(config, values)
        except ConfigError as error:
            raise ConfigError(f"{path}: {error}") from None
    if not isinstance(overrides, dict):
        overrides = parse_set_options(overrides)
    config = apply_overrides(config, overrides)
    return config


@dataclasses.dataclass
class RunRequest:
    """What a user asked a training script for, without the command line.

    The scripts build one from their options (the command-line layer, ``cli/options.py``); the study and
    the generator comparison build one directly, and :meth:`to_argv` gives the equivalent
    command line for ``commands.sh``.

    Attributes:
        preset: TOML preset (path or name under ``configs/``), or None for the defaults.
        overrides: config field -> value (``--set`` and the common flags), applied in order
            after the preset; values may be strings (coerced to the field's type).
        out: the run directory (``--out``); also an override of ``out``.
        resume: continue the run in ``out`` from its latest checkpoint.
        finetune_from: ``RUN`` or ``RUN/EPOCH`` to start from (stages that fine-tune).
        class_name: train on this class only.
    """

    preset: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str | None = None
    resume: bool = False
    finetune_from: str | None = None
    class_name: str | None = None

    def all_overrides(self) -> dict[str, Any]:
        """``overrides`` plus ``out`` (when given)."""
        values = dict(self.overrides)
        if self.out is not None:
            values["out"] = str(self.out)
        return values

    def explicit_fields(self) -> set[str]:
        """Fields the user typed (not from a preset): a fine-tune must not silently drop them."""
        return set(self.all_overrides())

    def to_argv(self) -> list[str]:
        """The equivalent options of a training script (``--config``, ``--set``, ``--out`` ...)."""
        argv: list[str] = []
        if self.preset:
            argv += ["--config", str(self.preset)]
        for key, value in self.overrides.items():
            argv += ["--set", f"{key}={_argv_value(value)}"]
        if self.finetune_from:
            argv += ["--finetune-from", str(self.finetune_from)]
        if self.class_name:
            argv += ["--class", self.class_name]
        if self.out is not None:
            argv += ["--out", str(self.out)]
        if self.resume:
            argv.append("--resume")
        return argv


def _argv_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    if isinstance(value, dict):
        return json.dumps(value)  # read back by _parse_mapping
    return str(value)


def config_from_request(config_class: type[C], request: RunRequest, base: C | None = None) -> C:
    """A config from ``base`` (default: the defaults and ``request.preset``) plus the request's overrides."""
    if base is None:
        return load_config(config_class, request.preset, request.all_overrides())
    return apply_overrides(base, request.all_overrides())


def require_fields(config: CommonConfig, **messages: str) -> None:
    """Raises ConfigError with the message of the first empty field.

    Example:
        >>> require_fields(config, out="no run directory: pass --out DIR")  # doctest: +SKIP
    """
    for name, message in messages.items():
        if not getattr(config, name):
            raise ConfigError(message)


def to_toml(values: dict[str, Any]) -> str:
    """Writes a flat dict as TOML (strings, numbers, booleans, lists and flat tables)."""

    def scalar(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (int, float)):
            return repr(value)
        if isinstance(value, (list, tuple)):
            return "[" + ", ".join(scalar(item) for item in value) + "]"
        if value is None:
            return '""'
        return json.dumps(str(value))

    lines, tables = [], []
    for key, value in values.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f"{key} = {scalar(value)}")
    for key, table in tables:
        lines.append(f"\n[{key}]")
        lines.extend(f"{json.dumps(str(name))} = {scalar(item)}" for name, item in table.items())
    return "\n".join(lines) + "\n"


def config_from_dict(config_class: type[C], values: dict[str, Any]) -> C:
    """Rebuilds a config saved in a run directory (ignores the ``kind`` key)."""
    values = {key: value for key, value in values.items() if key != "kind"}
    return apply_overrides(config_class(), values)
