"""What every study shares: the stage loop, its bookkeeping and the saved settings.

:class:`StudyBase` runs the stages of :data:`cellgen.study.config.STAGES` in order through the
subclass's ``stage_<name>`` methods, records each finished stage in ``stages/<name>.json`` (a re-run
skips it), refuses to continue a study directory with other settings, and clears the outputs of
the re-run stages (``--from``: :meth:`StudyBase.owned_outputs`). The augmentation study
(:class:`cellgen.study.pipeline.Study`) and the attribute study
(:class:`cellgen.study.attribute_study.AttributeStudy`) are its subclasses.
"""

from __future__ import annotations

import abc
import datetime as _dt
import shutil
import time
from pathlib import Path
from typing import Any

from cellgen.config import ConfigError, to_toml
from cellgen.runs import read_json, write_json
from cellgen.study import stages
from cellgen.study.config import STAGES, StudyConfig


def resolve_sample_paths(config: StudyConfig) -> StudyConfig:
    """Replaces ``sample:SPLIT`` data paths by the embedded sample's folders (works when installed)."""
    from cellgen.sample_data import sample_path

    changes = {}
    for name in ("train", "val", "test"):
        value = getattr(config, name)
        if value.startswith("sample:"):
            changes[name] = str(sample_path(value.split(":", 1)[1]))
    return config.replace(**changes) if changes else config


def require_paths(config: StudyConfig, names) -> None:
    """Raises a one-line ConfigError for the first of the ``names`` fields that is empty or names no file."""
    for name in names:
        value = getattr(config, name)
        if not value:
            raise ConfigError(f"study: {name} data is not set (give --{name} or set it in the config)")
        if not Path(value).exists():
            raise ConfigError(f"study: {name} data not found: {value}")


class StudyError(RuntimeError):
    """A study stage failed or the study is misconfigured; the message names the stage."""


def _timestamp() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


class StudyBase(abc.ABC):
    """The stage loop of a study in ``directory`` (see the module docstring).

    Subclasses give ``check()`` (validates before anything trains), ``owned_outputs()`` and one
    ``stage_<name>()`` per stage, returning the outputs recorded in ``stages/<name>.json``.
    """

    def __init__(self, config: StudyConfig, directory: str | Path):
        self.config = config
        self.directory = Path(directory)
        self.stage_dir = self.directory / "stages"

    @abc.abstractmethod
    def check(self) -> Any:
        """Validates everything that can be checked before training (raises ConfigError)."""

    @abc.abstractmethod
    def owned_outputs(self) -> dict[str, list[Path]]:
        """The folders each stage writes (removed when the stage is re-run with ``--from``)."""

    # Bookkeeping ---------------------------------------------------------
    def is_done(self, stage: str) -> bool:
        return (self.stage_dir / f"{stage}.json").is_file()

    def stage_record(self, stage: str) -> dict[str, Any]:
        return read_json(self.stage_dir / f"{stage}.json")

    def _mark_done(self, stage: str, started: float, outputs: dict[str, Any]) -> None:
        write_json(self.stage_dir / f"{stage}.json", {
            "stage": stage, "finished": _timestamp(), "seconds": round(time.time() - started, 1),
            "outputs": outputs})

    @property
    def commands(self) -> stages.CommandLog:
        """``commands.sh``: every stage's equivalent command line, in the order they ran."""
        return stages.CommandLog(self.directory / "commands.sh")

    # Running ---------------------------------------------------------------
    def run(self, from_stage: str | None = None, until: str | None = None) -> Path:
        """Runs the pending stages (all from ``from_stage`` when given); returns the report path."""
        if from_stage is not None and from_stage not in STAGES:
            raise ConfigError(f"--from: unknown stage {from_stage!r}; stages: {', '.join(STAGES)}")
        if until is not None and until not in STAGES:
            raise ConfigError(f"--until: unknown stage {until!r}; stages: {', '.join(STAGES)}")
        self.check()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._save_config(allow_changes=from_stage is not None)
        if from_stage is not None:
            for stage in STAGES[STAGES.index(from_stage):]:
                (self.stage_dir / f"{stage}.json").unlink(missing_ok=True)
            self._clear_outputs(from_stage)
        for stage in STAGES:
            if self.is_done(stage):
                print(f"[study] stage {stage}: done before, skipped")
            else:
                print(f"[study] stage {stage}: running")
                started = time.time()
                try:
                    outputs = getattr(self, f"stage_{stage}")()
                except StudyError:
                    raise
                except Exception as error:
                    message = str(error).strip() or type(error).__name__
                    raise StudyError(f"stage {stage!r} failed: {message}") from error
                self._mark_done(stage, started, outputs)
            if stage == until:
                break
        return self.directory / "report.md"

    def _save_config(self, allow_changes: bool = False) -> None:
        values = self.config.to_dict()
        config_path = self.directory / "study.toml"
        if config_path.is_file() and not allow_changes:
            saved = read_json(self.directory / "study.json")
            # A field added after the study started (absent from study.json) had its default then.
            defaults = type(self.config)().to_dict()
            changed = sorted(key for key in values
                             if key not in ("out",) and saved.get(key, defaults.get(key)) != values[key])
            if changed:
                raise ConfigError(f"study: {self.directory} was started with different settings "
                                  f"({', '.join(changed)}); use another --out, or --from STAGE to re-run from the first stage they affect")
        write_json(self.directory / "study.json", values)
        config_path.write_text(to_toml(values), encoding="utf-8")

    def _clear_outputs(self, from_stage: str) -> None:
        """Removes the outputs of the stages that are re-run, so they start clean."""
        owned = self.owned_outputs()
        for stage in STAGES[STAGES.index(from_stage):]:
            for path in owned.get(stage, []):
                if path.exists():
                    shutil.rmtree(path)

    def _precision_overrides(self) -> dict[str, str]:
        """``{"precision": P}`` when the study forces one; nothing when each preset keeps its own."""
        return {} if self.config.precision == "preset" else {"precision": self.config.precision}
