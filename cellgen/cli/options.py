"""The scripts' shared command-line options, turned into a typed :class:`~cellgen.config.RunRequest`.

The library never sees argparse: a script parses its options here and hands the
library a ``RunRequest`` (or a resolved config).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
from pathlib import Path
from typing import Any, Callable

from cellgen.config import ConfigError, RunRequest, parse_set_options

# Common flags -> config fields (a flag wins over --set of the same field).
FLAG_TO_FIELD = {
    "data": "data", "size": "image_size", "epochs": "epochs",
    "batch_size": "batch_size", "seed": "seed", "precision": "precision", "strategy": "strategy",
    "classes": "classes",
}


def add_common_arguments(parser: argparse.ArgumentParser, config_required: bool = False) -> None:
    """Adds ``--config --set`` and the common flags to a stage's argument parser."""
    parser.add_argument("--config", required=config_required, help="TOML preset (path or name under configs/)")
    parser.add_argument("--data", help="training data: class folder, CSV, flat folder or tfds:NAME")
    parser.add_argument("--out", help="run directory to create")
    parser.add_argument("--size", type=int, help="image size (overrides image_size)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16", "auto"])
    parser.add_argument("--strategy", help="auto, default, mirrored, multiworker or cpu:N")
    parser.add_argument("--classes", help="comma-separated expected class names: a label outside them is an error")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config field (repeatable)")
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's start-up and device log lines (also: CELLGEN_VERBOSE=1)")


def add_run_arguments(parser: argparse.ArgumentParser, finetune_help: str | None = None) -> None:
    """Adds ``--resume`` and ``--quiet`` (and, given ``finetune_help``, ``--finetune-from`` and ``--class``)."""
    if finetune_help:
        parser.add_argument("--finetune-from", metavar="RUN[/EPOCH]", help=finetune_help)
        parser.add_argument("--class", dest="class_name", metavar="NAME",
                            help="train on this class only (e.g. the rare class to fine-tune on)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its latest checkpoint (its saved config is reused; "
                             "--set and the flags apply to this session only, a longer --epochs is kept)")
    parser.add_argument("--keep-set", action="store_true",
                        help="with --resume: write this session's --set values and flags into the run's "
                             "config.json, so that later resumes use them too")
    parser.add_argument("--quiet", action="store_true", help="one log line per epoch instead of progress bars")


def request_from_args(args: argparse.Namespace, **fields: Any) -> RunRequest:
    """The :class:`RunRequest` of parsed options: ``--set`` first, then the common flags, then ``fields``
    (a stage's own flags, given as config field -> value; None values are skipped)."""
    overrides: dict[str, Any] = dict(parse_set_options(getattr(args, "set", []) or []))
    for flag, field in FLAG_TO_FIELD.items():
        value = getattr(args, flag, None)
        if value is not None:
            overrides[field] = value
    overrides.update({key: value for key, value in fields.items() if value is not None})
    return RunRequest(preset=getattr(args, "config", None), overrides=overrides, out=getattr(args, "out", None),
                      resume=bool(getattr(args, "resume", False)),
                      finetune_from=getattr(args, "finetune_from", None),
                      class_name=getattr(args, "class_name", None))


def verbosity(args: argparse.Namespace) -> int:
    """Keras ``fit`` verbosity: 2 (one line per epoch) with ``--quiet``, else 1 (progress bars)."""
    return 2 if getattr(args, "quiet", False) else 1


def base_run_options(name: str, help: str) -> Callable[[argparse.ArgumentParser], None]:
    """The ``stage_options`` of a stage built on another run: ``--NAME RUN`` and ``--NAME-epoch N``
    (e.g. the AC-GAN's ``--backbone``, the encoder's ``--generator``)."""
    def add(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(f"--{name}", metavar="RUN", help=help)
        parser.add_argument(f"--{name}-epoch", type=int, help=f"saved epoch of the {name} run (default: its latest)")

    return add


def training_parser(prog: str, doc: str, finetune_help: str | None = None,
                    stage_options: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.ArgumentParser:
    """The parser of a training script: its docstring as help, the common and run options, and
    the stage's own options (``stage_options(parser)``, placed before ``--resume``)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
    add_common_arguments(parser)
    if stage_options is not None:
        stage_options(parser)
    add_run_arguments(parser, finetune_help=finetune_help)
    return parser


def check_resume_options(args: argparse.Namespace, request: RunRequest) -> None:
    """``--resume`` and ``--keep-set`` errors that name the options: ``--keep-set`` without
    ``--resume``, ``--resume`` without ``--out``, or on a folder that holds no run when nothing
    (``--data``) says how to start one."""
    keep = bool(getattr(args, "keep_set", False))
    if keep and not request.resume:
        raise ConfigError("--keep-set applies to --resume only (a new run keeps all its settings)")
    if not request.resume:
        return
    if not request.out:
        raise ConfigError("--resume needs --out RUN (the run directory to continue)")
    out = Path(request.out)
    if (out / "config.json").is_file() or "data" in request.overrides or request.finetune_from or request.preset:
        return  # a run to continue, or what a new one needs (a preset may name its data)
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"--resume: {out} is not a cellgen run (no config.json)")
    raise ConfigError(f"--resume: {out} holds no run yet (no config.json); to start one, pass --data "
                      "(and --config) without --resume")


def typed_option_names(args: argparse.Namespace, **stage_fields: Any) -> dict[str, str]:
    """Config field -> the option the user typed for it: the common flags given (``image_size`` ->
    ``--size``), the stage's own flags (``backbone_epoch`` -> ``--backbone-epoch``) and ``--class``
    (also for the reader's ``class_filter``). ``--set KEY=VALUE`` keeps the key's own name."""
    names = {field: "--" + flag.replace("_", "-") for flag, field in FLAG_TO_FIELD.items()
             if getattr(args, flag, None) is not None}
    names.update({field: "--" + field.replace("_", "-") for field, value in stage_fields.items() if value is not None})
    if getattr(args, "class_name", None) is not None:
        names.update(class_name="--class", class_filter="--class")
    return names


def with_option_names(error: BaseException, names: dict[str, str]) -> BaseException:
    """``error`` with a leading config field (``image_size must be ...``, ``class_filter: ...``)
    replaced by the option the user typed (``--size must be ...``); else ``error`` itself."""
    if type(error).__name__ not in ("ConfigError", "DataError"):  # their constructors take a message
        return error
    text = str(error)
    for field, option in names.items():
        if text.startswith(field) and text[len(field):len(field) + 1] in (" ", ":"):
            return type(error)(option + text[len(field):])
    return error


@contextlib.contextmanager
def naming_typed_options(names: dict[str, str]):
    """Re-raises a ConfigError or DataError whose message starts with a config field under the name
    of the option the user typed (see :func:`with_option_names`)."""
    try:
        yield
    except ValueError as error:
        renamed = with_option_names(error, names)
        if renamed is error:
            raise
        raise renamed from None


def run_trainer(args: argparse.Namespace, library: str, **stage_fields: Any) -> int:
    """Resolves the request of parsed ``args`` with ``LIBRARY.resolve_config`` and trains it with
    ``LIBRARY.train`` (the library module is imported only now: ``--help`` stays fast).
    ``--keep-set`` keeps a resumed session's settings in the run's config.json."""
    request = request_from_args(args, **stage_fields)
    check_resume_options(args, request)
    module = importlib.import_module(library)
    from cellgen.runs import RunDir

    with naming_typed_options(typed_option_names(args, **stage_fields)):
        config = module.resolve_config(request)
        with RunDir.keeping_session_settings(bool(getattr(args, "keep_set", False))):
            module.train(config, resume=request.resume, verbose=verbosity(args))
    return 0
