"""Self-describing run directories, seeding, resumable checkpoints and callbacks.

A run directory looks like::

    RUN/
      config.toml, config.json   resolved config (``kind`` says which stage wrote it)
      classes.json               class names in id order
      environment.json           versions, devices, git commit, command line
      logs/                      history.csv, TensorBoard events, run.log
      checkpoints/epoch-0003/    resumable state: weights of every model and optimizer
      models/                    saved ``.keras`` models kept for generation/fine-tuning
      samples/                   sample grids (PNG)
      metrics/                   JSON numbers and their plots

Example:
    >>> run = RunDir.create("runs/gan1", config)          # doctest: +SKIP
    >>> state = TrainingState(run.checkpoints, generator=g, g_optimizer=opt)  # doctest: +SKIP
    >>> start_epoch = state.restore_latest()              # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import keras
import numpy as np

from cellgen.config import CommonConfig, ConfigError, to_toml


class RunError(RuntimeError):
    """A run directory cannot be created, read or resumed; the message says why."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


def set_seed(seed: int) -> None:
    """Seeds Python, NumPy and TensorFlow (through keras.utils.set_random_seed)."""
    import keras

    random.seed(seed)
    np.random.seed(seed)
    keras.utils.set_random_seed(seed)


def _git_commit() -> str | None:
    try:
        root = Path(__file__).resolve().parent.parent
        result = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=5)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def environment_info() -> dict[str, Any]:
    """Versions, devices and machine facts for reproducibility."""
    info: dict[str, Any] = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "command": sys.argv,
        "git_commit": _git_commit(),
    }
    for module_name in ("tensorflow", "keras", "numpy", "cv2", "scipy"):
        try:
            module = __import__(module_name)
            info[module_name] = getattr(module, "__version__", "unknown")
        except ImportError:
            info[module_name] = None
    try:
        import tensorflow as tf

        info["devices"] = [device.name for device in tf.config.list_logical_devices()]
    except Exception as error:  # device listing must never break a run
        info["devices"] = f"unavailable: {error}"
    return info


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def write_json(path: str | os.PathLike, value: Any) -> Path:
    """Writes JSON atomically (a half-written metrics file is worse than none)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, default=_json_default)
        handle.write("\n")
    os.replace(temporary, path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


class _Subdir:
    """A run folder's sub-folder of the same name: ``run.logs`` is ``run.path / "logs"`` (read-only)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, run: "RunDir | None", owner: type | None = None) -> Path:
        if run is None:
            return self  # type: ignore[return-value]  (looked up on the class)
        return run.path / self.name

    def __set__(self, run: "RunDir", value: Any) -> None:
        raise AttributeError(f"RunDir.{self.name} is read-only")


class RunDir:
    """A training run's directory. Create with :meth:`create`, reopen with :meth:`open`."""

    SUBDIRS = ("logs", "checkpoints", "models", "samples", "metrics")
    # Layout: one attribute per sub-folder of SUBDIRS.
    logs = _Subdir()
    checkpoints = _Subdir()
    models = _Subdir()
    samples = _Subdir()
    metrics = _Subdir()

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # Creation -----------------------------------------------------------
    @classmethod
    def create(cls, path: str | os.PathLike, config: CommonConfig, classes: Iterable[str] | None = None,
               resume: bool = False, overwrite: bool = False) -> "RunDir":
        """Creates (or, with ``resume``, reopens) a run directory and records the config.

        A new run writes ``config.json``/``config.toml``. A resumed session keeps the saved
        config (a ``--set`` given with ``--resume`` holds for that session only; the session's
        own config goes to ``logs/session-TIMESTAMP.json``), except that ``epochs`` grows when
        the session trains longer. A resumed session removes ``COMPLETE.json`` until it
        finishes, so a stage that fails is never taken for done. A folder left by an attempt
        that stopped before its first checkpoint (say a data error in the first epoch) is
        started over. The run directory is locked for this process (:meth:`lock`).

        Raises:
            RunError: ``path`` holds another run and neither ``resume`` nor ``overwrite`` is set,
                ``resume`` is set and the saved config's kind differs, or another process holds
                the run's lock.
        """
        if not str(path):
            raise RunError("no output directory given (--out)")
        run = cls(path)
        config_file = run.path / "config.json"
        if run.path.exists() and not run.path.is_dir():
            raise RunError(f"{run.path}: exists and is not a directory")
        if config_file.exists():
            run.lock()
            if resume:
                saved = run.config_dict()
                if saved.get("kind") != config.kind:
                    raise RunError(f"{run.path}: cannot resume a {saved.get('kind')!r} run as {config.kind!r}")
            elif overwrite or run._is_empty_attempt():
                if not overwrite:
                    print(f"note: {run.path}: an earlier attempt stopped before its first checkpoint; "
                          "starting over")
                run.unlock()
                shutil.rmtree(run.path)
            else:
                raise RunError(f"{run.path}: a run already exists here; pass --resume to continue it "
                               "or choose another --out")
        elif resume:
            if run.path.exists() and any(run.path.iterdir()):
                raise RunError(f"{run.path}: --resume given but this is not a cellgen run (no config.json)")
            print(f"note: --resume given but {run.path} holds no run yet; starting a new one")
            resume = False
        for name in cls.SUBDIRS:
            (run.path / name).mkdir(parents=True, exist_ok=True)
        run.lock()
        if resume:
            (run.path / "COMPLETE.json").unlink(missing_ok=True)
            run._record_session(config)
        else:
            run.save_config(config)
        if classes is not None and not (resume and (run.path / "classes.json").is_file()):
            run.save_classes(classes)
        env_name = "environment.json" if not resume else f"environment-resume-{_timestamp()}.json"
        write_json(run.path / env_name, environment_info())
        return run

    # Whether a resumed session's own settings go into config.json (see keeping_session_settings).
    _keep_session_settings = False

    @classmethod
    @contextlib.contextmanager
    def keeping_session_settings(cls, keep: bool = True):
        """Within this context a resumed session's settings (the ``--set`` values and flags given with
        ``--resume``) are written into the run's ``config.json`` for every later session
        (``--keep-set``), instead of holding for this session only."""
        previous = cls._keep_session_settings
        cls._keep_session_settings = bool(keep)
        try:
            yield
        finally:
            cls._keep_session_settings = previous

    def _record_session(self, config: CommonConfig) -> None:
        """A resumed session: logs (and says) which settings differ from the saved config, keeps
        them in ``config.json`` only inside :meth:`keeping_session_settings`; ``epochs`` grows
        with a longer session either way. The session's full config goes to ``logs/session-*.json``."""
        saved = self.config_dict()
        session = json.loads(json.dumps(config.to_dict(), default=_json_default))
        changed = {key: value for key, value in session.items()
                   if key not in ("out", "epochs") and saved.get(key) != value}
        settings = ", ".join(f"{key}={value!r} (saved: {saved.get(key)!r})" for key, value in changed.items())
        if RunDir._keep_session_settings:
            self._write_config_values(session)
            self.log(f"resumed; kept in config.json: {settings or 'no changed settings'}")
        else:
            if int(session.get("epochs", 0)) > int(saved.get("epochs", 0)):
                saved["epochs"] = session["epochs"]
                self._write_config_values(saved)
            if changed:
                self.log(f"resumed; for this session only: {settings}")
                print(f"note: {', '.join(f'{key}={value}' for key, value in changed.items())} "
                      f"hold(s) for this session only ({self.path / 'config.json'} keeps "
                      f"{', '.join(f'{key}={saved.get(key)}' for key in changed)}); "
                      "pass --keep-set to keep them")
            else:
                self.log("resumed with the saved settings")
        write_json(self.logs / f"session-{_timestamp()}.json", session)

    _STANDARD_ENTRIES = frozenset(("config.json", "config.toml", "classes.json", "environment.json", ".lock",
                                   "logs", "checkpoints", "models", "samples", "metrics"))

    def _is_empty_attempt(self) -> bool:
        """A run folder with nothing worth keeping: no checkpoint, no model, not complete."""
        entries = {path.name for path in self.path.iterdir()}
        if not entries <= self._STANDARD_ENTRIES:
            return False
        return not any(any((self.path / name).iterdir()) for name in ("checkpoints", "models")
                       if (self.path / name).is_dir())

    # Locking ------------------------------------------------------------
    _held_locks: dict[str, Any] = {}

    def lock(self) -> None:
        """Locks the run for this process (released by :meth:`unlock` or at exit).

        Two processes training into one folder would interleave ``history.csv`` rows and
        overwrite each other's checkpoints; the second one stops with a RunError instead.
        """
        import fcntl

        key = str(self.path.resolve())
        if key in RunDir._held_locks:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        handle = open(self.path / ".lock", "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunError(f"{self.path}: in use by {holder}; wait for it to finish (or stop it) "
                           "before starting or resuming this run") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()}\n")
        handle.flush()
        RunDir._held_locks[key] = handle

    def unlock(self) -> None:
        handle = RunDir._held_locks.pop(str(self.path.resolve()), None)
        if handle is not None:
            handle.close()

    @classmethod
    def open(cls, path: str | os.PathLike, option: str | None = None) -> "RunDir":
        """Opens an existing run (for generation, fine-tuning or evaluation).

        ``option`` names the command-line option the path came from (``--backbone``), so that the
        error says which of several run paths is wrong.
        """
        run = cls(path)
        if not (run.path / "config.json").is_file():
            given = f"{option} {path}" if option else str(run.path)
            raise RunError(f"{given}: not a cellgen run directory (no config.json)")
        return run

    # Records ------------------------------------------------------------
    def save_config(self, config: CommonConfig) -> None:
        self._write_config_values(config.to_dict())

    def _write_config_values(self, values: dict[str, Any]) -> None:
        write_json(self.path / "config.json", values)
        (self.path / "config.toml").write_text(
            f"# resolved config written by cellgen on {_timestamp()}\n" + to_toml(values), encoding="utf-8")

    def config_dict(self) -> dict[str, Any]:
        """The saved ``config.json``; RunError (naming the file) when it is unreadable or damaged."""
        path = self.path / "config.json"
        try:
            values = read_json(path)
        except FileNotFoundError:
            raise RunError(f"{self.path}: not a cellgen run directory (no config.json)") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RunError(f"{path}: damaged or unreadable run config ({error})") from None
        if not isinstance(values, dict):
            raise RunError(f"{path}: damaged run config (not a JSON object)")
        return values

    @property
    def kind(self) -> str:
        return self.config_dict().get("kind", "unknown")

    def load_config(self, config_class):
        """The run's saved config as ``config_class`` (checks the kind)."""
        from cellgen.config import config_from_dict

        values = self.config_dict()
        if values.get("kind") != config_class.kind:
            raise RunError(f"{self.path}: is a {values.get('kind')!r} run, expected {config_class.kind!r}")
        try:
            return config_from_dict(config_class, values)
        except ConfigError as error:
            raise RunError(f"{self.path}/config.json: {error}") from None

    def save_classes(self, classes: Iterable[str]) -> None:
        write_json(self.path / "classes.json", list(classes))

    @property
    def classes(self) -> list[str]:
        path = self.path / "classes.json"
        if not path.is_file():
            raise RunError(f"{self.path}: no classes.json")
        return list(read_json(path))

    # Saved models -------------------------------------------------------
    def model_path(self, kind: str, epoch: int) -> Path:
        """``models/KIND-epoch-NNNN.keras``: the ``kind`` network kept after ``epoch`` epochs."""
        return self.models / f"{kind}-epoch-{int(epoch):04d}.keras"

    def save_model(self, model, kind: str, epoch: int) -> Path:
        """Saves ``model`` as :meth:`model_path` atomically (a half-written file never looks complete)."""
        final = self.model_path(kind, epoch)
        final.parent.mkdir(parents=True, exist_ok=True)
        temporary = final.with_name(".tmp-" + final.name)
        model.save(temporary)
        _test_kill_point("model")
        os.replace(temporary, final)
        return final

    def saved_epochs(self, kind: str, together_with: Sequence[str] = ()) -> list[int]:
        """Epochs for which ``kind`` (and every network in ``together_with``) was kept, ascending."""
        if not self.models.is_dir():
            return []
        prefix, suffix = f"{kind}-epoch-", ".keras"
        epochs = []
        for path in self.models.iterdir():
            name = path.name
            if name.startswith(prefix) and name.endswith(suffix) and name[len(prefix):-len(suffix)].isdigit():
                epoch = int(name[len(prefix):-len(suffix)])
                if all(self.model_path(other, epoch).is_file() for other in together_with):
                    epochs.append(epoch)
        return sorted(epochs)

    def resolve_epoch(self, kind: str, epoch: int | None = None, together_with: Sequence[str] = (),
                      what: str = "model") -> int:
        """``epoch`` if it was kept, else the latest kept epoch when ``epoch`` is None or 0.

        Raises:
            RunError: nothing kept, or not that epoch (the message lists the kept ones).
        """
        epochs = self.saved_epochs(kind, together_with)
        if not epochs:
            raise RunError(f"{self.path}: no saved {what} in {self.models} (has the run finished an epoch?)")
        if not epoch:
            return epochs[-1]
        if int(epoch) not in epochs:
            raise RunError(f"{self.path}: no {what} saved for epoch {epoch}; saved epochs: "
                           f"{', '.join(map(str, epochs))}")
        return int(epoch)

    def write_metrics(self, name: str, values: dict[str, Any]) -> Path:
        return write_json(self.metrics / f"{name}.json", values)

    def log(self, message: str) -> None:
        """Appends a timestamped line to logs/run.log."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with open(self.logs / "run.log", "a", encoding="utf-8") as handle:
            handle.write(f"{_timestamp()} {message}\n")

    def mark_complete(self, **details: Any) -> None:
        write_json(self.path / "COMPLETE.json", {"finished": _timestamp(), **details})

    @property
    def is_complete(self) -> bool:
        return (self.path / "COMPLETE.json").is_file()


def load_model_file(path: str | os.PathLike, compile: bool = False):
    """Loads a ``.keras`` file with ``safe_mode=True`` (registered cellgen layers only, no code).

    Raises:
        RunError: the file is missing, damaged or truncated (not a complete ``.keras`` zip), or
            does not load; the message names the file.
    """
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise RunError(f"{path}: damaged or truncated model file (not a complete .keras archive); "
                       "use another saved epoch (--epoch) or re-train")
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=compile)
    except (ValueError, OSError, TypeError, KeyError, zipfile.BadZipFile) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise RunError(f"{path}: cannot load ({first})") from None


def _timestamp() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


# Test hook, for tests/test_kill_resume.py only: CELLGEN_TEST_KILL_AT=WHAT:N makes the process kill
# itself with SIGKILL (as `kill -9` would) at the N-th WHAT of the process: "batch" (after a training
# batch), "checkpoint" (halfway through writing a checkpoint: some of its files are in the temporary
# folder, nothing is renamed yet) or "model" (a model file written to its temporary name, not yet
# renamed). Unset, it costs one environment lookup.
TEST_KILL_VARIABLE = "CELLGEN_TEST_KILL_AT"
_test_kill_counts: dict[str, int] = {}


def _test_kill_point(what: str) -> None:
    spec = os.environ.get(TEST_KILL_VARIABLE)
    if not spec:
        return
    name, _, count = spec.partition(":")
    if name.strip() != what:
        return
    _test_kill_counts[what] = _test_kill_counts.get(what, 0) + 1
    if _test_kill_counts[what] >= int(count or 1):
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


# Checkpoints ---------------------------------------------------------------


class TrainingState:
    """Resumable training state: weights of models and optimizers plus a JSON dict.

    Each save writes ``DIRECTORY/epoch-NNNN/`` atomically (written to a temporary
    folder, then renamed), so an interrupted save never corrupts the previous one, and
    a damaged newest checkpoint falls back to the previous one. Besides the weights it
    stores every model's random seed generators (dropout masks, diffusion noise,
    augmentation), so a resumed run draws the same numbers as an uninterrupted one.

    Why not ``tf.train.Checkpoint``: it does not see Keras 3 ``SeedGenerator`` states
    (``tf.train.list_variables`` of a checkpoint of a model with dropout omits them), so a
    run resumed from it would not be the same run.
    Optimizers must be built before saving/restoring (call ``optimizer.build(vars)``
    or take one training step); :meth:`restore` builds them when needed.

    Args:
        directory: where checkpoints go (``run.checkpoints``).
        keep: how many most recent checkpoints to keep (``None`` keeps all).
        **objects: named Keras models and optimizers.

    Example:
        >>> state = TrainingState(run.checkpoints, generator=g, g_optimizer=g_opt)  # doctest: +SKIP
        >>> state.save(epoch=3, extra={"step": 300})                                 # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, keep: int | None = 2, **objects: Any):
        self.directory = Path(directory)
        self.keep = keep
        self.objects = objects
        self.restored_path: Path | None = None

    def checkpoint_paths(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(path for path in self.directory.glob("epoch-*") if path.is_dir()
                      and (path / "state.json").is_file())

    def latest(self) -> Path | None:
        paths = self.checkpoint_paths()
        return paths[-1] if paths else None

    def save(self, epoch: int, extra: dict[str, Any] | None = None) -> Path:
        """Saves every object; ``epoch`` is the number of completed epochs."""
        import keras

        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"epoch-{epoch:04d}"
        temporary = self.directory / f".tmp-epoch-{epoch:04d}"
        if temporary.exists():
            shutil.rmtree(temporary)
        temporary.mkdir()
        steps = {}
        for name, obj in self.objects.items():
            if isinstance(obj, keras.optimizers.Optimizer):
                store: dict[str, np.ndarray] = {}
                obj.save_own_variables(store)
                np.savez(temporary / f"{name}.optimizer.npz", **{str(k): v for k, v in store.items()})
                steps[name] = int(np.asarray(obj.iterations))
            else:
                obj.save_weights(str(temporary / f"{name}.weights.h5"))
                seeds = seed_generator_variables(obj)
                if seeds:
                    np.savez(temporary / f"{name}.seeds.npz",
                             **{str(i): keras.ops.convert_to_numpy(v) for i, v in enumerate(seeds)})
            if name == next(iter(self.objects)):
                _test_kill_point("checkpoint")  # halfway: the first object's files are written
        # Optimizer steps say how long a run trained better than epochs do when batch sizes differ.
        write_json(temporary / "state.json", {"epoch": epoch, **({"optimizer_steps": steps} if steps else {}),
                                              **(extra or {})})
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)
        self._prune()
        return final

    def _prune(self) -> None:
        if self.keep is None:
            return
        for old in self.checkpoint_paths()[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def restore(self, path: str | os.PathLike) -> dict[str, Any]:
        """Loads every object from ``path``; returns the saved state dict (with ``epoch``)."""
        import keras

        path = Path(path)
        if not (path / "state.json").is_file():
            raise RunError(f"{path}: not a checkpoint (no state.json)")
        for name, obj in self.objects.items():
            if isinstance(obj, keras.optimizers.Optimizer):
                file = path / f"{name}.optimizer.npz"
                if not file.is_file():
                    raise RunError(f"{path}: checkpoint has no optimizer {name!r}")
                with np.load(file) as archive:
                    store = {key: archive[key] for key in archive.files}
                try:
                    obj.load_own_variables(store)
                except ValueError as error:
                    raise RunError(f"{file}: optimizer state does not match ({error}); build the "
                                   "optimizer (optimizer.build(model.trainable_variables)) before restoring") from None
            else:
                file = path / f"{name}.weights.h5"
                if not file.is_file():
                    raise RunError(f"{path}: checkpoint has no weights for {name!r}")
                try:
                    obj.load_weights(str(file))
                except (OSError, ValueError, KeyError) as error:
                    raise RunError(f"{file}: cannot load ({str(error).splitlines()[0] if str(error) else error})"
                                   ) from None
                seeds_file = path / f"{name}.seeds.npz"
                if seeds_file.is_file():
                    _restore_seed_generators(obj, seeds_file)
        return read_json(path / "state.json")

    def optimizer_steps(self, path: str | os.PathLike | None = None) -> dict[str, int]:
        """Steps taken by each optimizer saved in checkpoint ``path`` (default: the latest).

        Read from ``state.json``; for checkpoints written before it recorded them, from each
        optimizer's saved variables (Keras 3 saves ``iterations`` first). Empty when there is
        no checkpoint or no optimizer in it.
        """
        path = Path(path) if path is not None else self.latest()
        if path is None:
            return {}
        state = read_json(path / "state.json")
        if "optimizer_steps" in state:
            return {str(name): int(value) for name, value in state["optimizer_steps"].items()}
        steps = {}
        for file in sorted(path.glob("*.optimizer.npz")):
            with np.load(file) as archive:
                if "0" in archive.files and archive["0"].size == 1:
                    steps[file.name[:-len(".optimizer.npz")]] = int(archive["0"])
        return steps

    def restore_latest(self, log: Callable[[str], None] | None = None) -> dict[str, Any] | None:
        """Restores the newest checkpoint that loads, or returns None when there is none.

        A damaged newest checkpoint (a truncated file after a crash) is reported and the
        previous kept one is restored instead.

        Raises:
            RunError: checkpoints exist but none of them loads.
        """
        problems = []
        for path in reversed(self.checkpoint_paths()):
            try:
                restored = self.restore(path)
            except (RunError, OSError, ValueError, json.JSONDecodeError) as error:
                problems.append(f"{path.name}: {error}")
                if log is not None:
                    log(f"warning: checkpoint {path} is damaged ({error}); trying the previous one")
                continue
            self.restored_path = path
            return restored
        if problems:
            raise RunError(f"{self.directory}: no checkpoint loads ({'; '.join(problems)})")
        return None


def seed_generator_variables(model) -> list:
    """The state variables of every ``keras.random.SeedGenerator`` of ``model`` and its layers,
    in a fixed order (``save_weights`` does not store them)."""
    return [variable for variable in model.variables if variable.path.endswith("seed_generator_state")]


def _restore_seed_generators(model, file: Path) -> None:
    variables = seed_generator_variables(model)
    with np.load(file) as archive:
        if len(archive.files) != len(variables):
            raise RunError(f"{file}: {len(archive.files)} seed generator states for {len(variables)} in the model")
        for index, variable in enumerate(variables):
            variable.assign(archive[str(index)])


# Callbacks -----------------------------------------------------------------


def make_callbacks(run: RunDir, state: TrainingState | None = None, checkpoint_every: int = 1,
                   tensorboard: bool = True, initial_epoch: int = 0,
                   extra_state=None) -> list:
    """The standard callbacks of a run: NaN guard, CSV log, TensorBoard, checkpoints.

    Args:
        run: the run directory.
        state: when given, a resumable checkpoint is written every ``checkpoint_every`` epochs
            and after the last epoch.
        extra_state: callable ``epoch -> dict`` stored with each checkpoint.
    """
    import keras

    callbacks = [StopOnNonFiniteLoss(run)]
    callbacks.append(keras.callbacks.CSVLogger(str(run.logs / "history.csv"), append=initial_epoch > 0))
    if tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(run.logs / "tensorboard"),
                                                     write_graph=False, profile_batch=0))
    if state is not None:
        callbacks.append(CheckpointEveryEpoch(state, every=checkpoint_every, extra_state=extra_state))
    return callbacks


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first NaN/inf in any logged loss and records why.

    Placed first in the callback list so that the checkpoint callback of the same
    epoch sees ``model.stop_training`` and does not save the broken weights.
    Training scripts call :func:`raise_if_stopped_on_nan` after ``fit``.
    """

    def __init__(self, run: RunDir | None = None):
        super().__init__()
        self.run = run
        self.failure: str | None = None
        self.epoch = 0

    def on_train_begin(self, logs=None):
        self.model._cellgen_nan_failure = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _check(self, logs, where: str) -> None:
        for key, value in (logs or {}).items():
            if "loss" in key and not _is_finite(value):
                self.failure = f"{key} became {float(value)} at {where}"
                self.model.stop_training = True
                self.model._cellgen_nan_failure = self.failure
                if self.run is not None:
                    self.run.log(f"stopped: {self.failure}")
                return

    def on_train_batch_end(self, batch, logs=None):
        if self.failure is None:
            self._check(logs, f"epoch {self.epoch + 1}, batch {batch + 1}")
        _test_kill_point("batch")

    def on_epoch_end(self, epoch, logs=None):
        if self.failure is None:
            self._check(logs, f"end of epoch {epoch + 1}")


class CheckpointEveryEpoch(keras.callbacks.Callback):
    """Saves a :class:`TrainingState` every ``every`` epochs (and at the end of training)."""

    def __init__(self, state: TrainingState, every: int = 1, extra_state=None):
        super().__init__()
        self.state = state
        self.every = max(1, int(every))
        self.extra_state = extra_state
        self.last_saved: int | None = None
        self.last_completed: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        if _nan_guard_failed(self.model):
            return
        completed = epoch + 1
        self.last_completed = completed
        if completed % self.every == 0:
            self._save(completed)

    def on_train_end(self, logs=None):
        if _nan_guard_failed(self.model):
            return
        if self.last_completed is not None and self.last_saved != self.last_completed:
            self._save(self.last_completed)

    def _save(self, completed: int) -> None:
        extra = self.extra_state(completed) if self.extra_state else None
        self.state.save(completed, extra)
        self.last_saved = completed


def _nan_guard_failed(model) -> bool:
    return bool(getattr(model, "_cellgen_nan_failure", None))


def resume_training(state: "TrainingState", run: "RunDir", resume: bool, epochs: int,
                    learning_rates: Sequence[tuple[Any, float]] = (),
                    printer: Callable[[str], None] = print) -> tuple[int, float, dict[str, Any] | None]:
    """Restores the latest good checkpoint when ``resume`` is set; shared by every trainer.

    Args:
        state: the run's TrainingState (models and optimizers to restore).
        run: the run directory (for the log; ``logs/history.csv`` keeps only the epochs the
            restored checkpoint had completed, so a resumed run does not repeat rows).
        resume: False starts at epoch 0 whatever is on disk.
        epochs: the configured epochs (a note is printed when nothing is left to train).
        learning_rates: ``(optimizer, rate)`` pairs set after restoring: Keras 3 keeps the learning
            rate among the optimizer's variables, so the checkpoint restores the old one, but the
            config (perhaps changed with ``--set`` on resume) must decide.

    Returns:
        ``(initial_epoch, previous_train_seconds, restored)``; ``restored`` is the checkpoint's
        extra state (None when nothing was restored).
    """
    initial_epoch, previous_seconds, restored = 0, 0.0, None
    if resume:
        restored = state.restore_latest(log=lambda message: (printer(message), run.log(message)))
        if restored is not None:
            initial_epoch = int(restored["epoch"])
            previous_seconds = float(restored.get("train_seconds", 0.0))
            for optimizer, rate in learning_rates:
                optimizer.learning_rate = rate
            printer(f"resuming {run.path} after epoch {initial_epoch} ({state.restored_path.name})")
            run.log(f"resumed from {state.restored_path}")
        else:
            printer(f"note: {run.path} has no checkpoint yet; training from the start")
        truncate_history(run.logs / "history.csv", initial_epoch)
    if initial_epoch >= epochs:
        printer(f"{run.path}: already trained for {initial_epoch} epochs (>= epochs={epochs}); "
                "pass --epochs N to train longer")
    return initial_epoch, previous_seconds, restored


def truncate_history(path: str | os.PathLike, completed_epochs: int) -> None:
    """Keeps the rows of ``history.csv`` for epochs before ``completed_epochs`` (Keras counts from 0)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    index = header.index("epoch") if "epoch" in header else None
    kept = [row for row in body if index is None or (row and row[index].strip().isdigit()
                                                     and int(row[index]) < completed_epochs)]
    if len(kept) == len(body):
        return
    temporary = path.with_suffix(".csv.tmp")
    with open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept)
    os.replace(temporary, path)


def raise_if_stopped_on_nan(callbacks: list, state: TrainingState | None = None) -> None:
    """Raises :class:`NonFiniteLossError` with a clear message if the NaN guard fired."""
    for callback in callbacks:
        if isinstance(callback, StopOnNonFiniteLoss) and callback.failure:
            latest = state.latest() if state is not None else None
            where = f"; last good checkpoint: {latest}" if latest else "; no checkpoint was saved"
            raise NonFiniteLossError(f"training stopped: {callback.failure}{where}. Lower the learning "
                                     "rate, or try --precision fp32")


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """Reads a Keras CSVLogger file into column lists."""
    columns: dict[str, list[float]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    columns.setdefault(key, []).append(float("nan"))
    return columns


def clean_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """:func:`read_history` without the columns that hold no finite value (CSVLogger writes empty
    ``val_*`` columns when there is no validation data); empty when the file is missing."""
    path = Path(path)
    if not path.is_file() or not path.stat().st_size:
        return {}
    return {key: values for key, values in read_history(path).items()
            if values and not all(math.isnan(value) for value in values)}
