"""tf.distribute strategies by name, including CPU splitting for tests.

- ``auto``: MirroredStrategy over all GPUs when there is more than one, else the
  default (single-device) strategy.
- ``default``: the default strategy.
- ``mirrored``: MirroredStrategy over the local GPUs (or the CPU).
- ``multiworker``: MultiWorkerMirroredStrategy configured from ``TF_CONFIG``, with a
  timeout on every collective (``CELLGEN_COLLECTIVE_TIMEOUT`` seconds, default 300;
  0 waits forever), so that a lost worker stops the others with a
  :class:`StrategyError` instead of a hang.
- ``cpu:N``: splits the CPU into N logical devices and mirrors over them, so the
  distribution code paths (per-replica batches, cross-replica reductions, loss
  scaling by the global batch) run and are tested on a laptop.

Example:
    >>> strategy = make_strategy("cpu:2")  # doctest: +SKIP
    >>> with strategy.scope():             # doctest: +SKIP
    ...     model = build_model()
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import tensorflow as tf


class StrategyError(ValueError):
    """The strategy name is unknown or cannot be set up here."""


def split_cpu(count: int) -> list[str]:
    """Splits the first physical CPU into ``count`` logical devices; returns their names.

    Must run before TensorFlow initialises its devices. If they are already
    initialised with at least ``count`` CPUs this is a no-op.
    """
    if count < 1:
        raise StrategyError(f"cpu:N needs N >= 1, got {count}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError:
        pass  # already initialised: check what we have below
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise StrategyError(
            f"cpu:{count} needs {count} logical CPUs but TensorFlow was initialised with {len(logical)}; "
            "choose the strategy before building any model")
    return [device.name for device in logical[:count]]


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """Returns the tf.distribute strategy called ``name`` (see the module docstring)."""
    name = (name or "auto").strip().lower()
    if name.startswith("cpu:"):
        try:
            count = int(name.split(":", 1)[1])
        except ValueError:
            raise StrategyError(f"strategy {name!r}: expected cpu:N with an integer N") from None
        devices = split_cpu(count)
        if count == 1:
            return tf.distribute.OneDeviceStrategy(devices[0])
        # NCCL is GPU-only; reducing on one device is the portable choice for CPUs.
        return tf.distribute.MirroredStrategy(devices=devices,
                                              cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "auto":
        gpus = tf.config.list_logical_devices("GPU")
        if len(gpus) > 1:
            return tf.distribute.MirroredStrategy()
        return tf.distribute.get_strategy()
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        if tf.config.list_logical_devices("GPU"):
            return tf.distribute.MirroredStrategy()
        return tf.distribute.MirroredStrategy(cross_device_ops=tf.distribute.ReductionToOneDevice())
    if name == "multiworker":
        return _multi_worker_strategy()
    raise StrategyError(f"unknown strategy {name!r}; choose auto, default, mirrored, multiworker or cpu:N")


_MULTI_WORKER: dict[str, tf.distribute.Strategy] = {}


def _multi_worker_strategy() -> tf.distribute.Strategy:
    """The process's MultiWorkerMirroredStrategy: made once (TensorFlow configures the collectives
    and starts the worker's server at the first one; a second would fail), then reused by every
    later stage of the process (a study runs several), as long as ``TF_CONFIG`` is the same."""
    tf_config = json.dumps(check_tf_config(), sort_keys=True)
    if tf_config in _MULTI_WORKER:
        return _MULTI_WORKER[tf_config]
    if _MULTI_WORKER:
        raise StrategyError("TF_CONFIG changed after this process joined a cluster; start a new process")
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=collective_timeout())
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise StrategyError(f"strategy 'multiworker': cannot join the cluster of TF_CONFIG "
                            f"({_first_line(error)}); choose the strategy before building any model") from None
    _MULTI_WORKER[tf_config] = strategy
    return strategy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes run directories (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def worker_scratch_dir(out: str, strategy: tf.distribute.Strategy) -> str:
    """A private folder for a non-chief worker's run directory (TensorFlow's multi-worker guide:
    every worker writes its checkpoints, only the chief's are kept); removed at process exit."""
    import atexit
    import shutil
    import tempfile

    resolver = strategy.cluster_resolver
    task = f"{resolver.task_type}-{resolver.task_id}" if resolver is not None else "worker"
    path = tempfile.mkdtemp(prefix=f"cellgen-{task}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return str(Path(path) / Path(out).name)


def replicas(strategy: tf.distribute.Strategy) -> int:
    return int(strategy.num_replicas_in_sync)


# Multi-worker training -------------------------------------------------------

COLLECTIVE_TIMEOUT_ENV = "CELLGEN_COLLECTIVE_TIMEOUT"
DEFAULT_COLLECTIVE_TIMEOUT = 300.0


def collective_timeout() -> float | None:
    """Seconds a multi-worker collective (a gradient all-reduce) may wait for the other workers
    before it fails: ``CELLGEN_COLLECTIVE_TIMEOUT`` (default 300; 0 means no timeout, ``None``).

    The longest a healthy step waits is for the slowest worker's step plus whatever the workers
    do between steps (sample grids, kept models and checkpoints at an epoch's end), so the
    default leaves room for large models; set it lower to find out sooner that a worker is gone.
    """
    text = os.environ.get(COLLECTIVE_TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_COLLECTIVE_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        raise StrategyError(f"{COLLECTIVE_TIMEOUT_ENV}={text!r}: expected a number of seconds") from None
    if not seconds >= 0 or seconds == float("inf"):
        raise StrategyError(f"{COLLECTIVE_TIMEOUT_ENV}={text!r}: expected a number of seconds >= 0")
    return seconds or None


def check_tf_config() -> dict:
    """The parsed ``TF_CONFIG`` of this worker, checked for what MultiWorkerMirroredStrategy needs."""
    if "TF_CONFIG" not in os.environ:
        raise StrategyError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                            "(cluster and task of this worker)")
    try:
        tf_config = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as error:
        raise StrategyError(f"TF_CONFIG is not valid JSON: {error}") from None
    cluster = tf_config.get("cluster") if isinstance(tf_config, dict) else None
    task = tf_config.get("task") if isinstance(tf_config, dict) else None
    example = ('e.g. {"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
               '"task": {"type": "worker", "index": 0}}')
    if not isinstance(cluster, dict) or not any(cluster.get(job) for job in ("chief", "worker")):
        raise StrategyError(f"TF_CONFIG has no cluster with 'worker' (or 'chief') addresses; {example}")
    if not isinstance(task, dict) or task.get("type") not in cluster or not isinstance(task.get("index"), int):
        raise StrategyError(f"TF_CONFIG: task must name this worker's job and index in the cluster; {example}")
    if not 0 <= task["index"] < len(cluster[task["type"]]):
        raise StrategyError(f"TF_CONFIG: task index {task['index']} is not among the "
                            f"{len(cluster[task['type']])} {task['type']!r} address(es)")
    return tf_config


def worker_count(strategy: tf.distribute.Strategy) -> int:
    """Training processes (chief and workers) of a multi-worker strategy; 1 otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return 1
    jobs = resolver.cluster_spec().as_dict()
    return sum(len(jobs.get(job, ())) for job in ("chief", "worker")) or 1


def _task_names(strategy: tf.distribute.Strategy) -> list[str]:
    """``chief 0``, ``worker 0``, ``worker 1``...: the training tasks in the order of their replicas."""
    jobs = strategy.cluster_resolver.cluster_spec().as_dict()
    return [f"{job} {index}" for job in ("chief", "worker") for index in range(len(jobs.get(job, ())))]


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    return worker_count(strategy) > 1


def worker_name(strategy: tf.distribute.Strategy) -> str:
    """``worker 1`` / ``chief 0`` (``this process`` off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return "this process"
    return f"{resolver.task_type} {resolver.task_id}"


def shard_by_data(dataset):
    """``dataset`` with DATA auto-sharding: under MultiWorkerMirroredStrategy every worker runs the
    whole pipeline (the reader's generator: same files, same shuffle, same augmentation) and keeps its
    replicas' slices of every global batch, so a step trains on the same global batch as one process
    with as many replicas. (The default AUTO policy comes to the same for a generator pipeline, with
    a warning that it found no files to shard.) Other strategies ignore the option."""
    if dataset is None or not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def fit_multi_worker(model, strategy: tf.distribute.Strategy):
    """Lets Keras 3's ``fit``/``evaluate`` run ``model`` under MultiWorkerMirroredStrategy; returns it.

    Keras reduces a step's logs with ``strategy.reduce("MEAN", value, axis=0)`` on a multi-worker
    strategy, which fails for the scalar losses every train step returns ("Invalid reduction
    dimension 0 for input with 0 dimensions"; tensorflow/tensorflow#72388). The model's
    ``train_step``/``test_step`` are wrapped (on this instance only) to return shape-[1] values;
    the reduction then averages them over all replicas into the same scalars as one process with
    as many replicas (the mean over replicas of their logs). A no-op off multi-worker.
    """
    if not is_multi_worker(strategy) or getattr(model, "_cellgen_multi_worker", False):
        return model

    def one_dimensional(step):
        def wrapped(data):
            return tf.nest.map_structure(
                lambda value: tf.reshape(value, [1]) if tf.is_tensor(value) and value.shape.rank == 0 else value,
                step(data))
        return wrapped

    model.train_step = one_dimensional(model.train_step)
    model.test_step = one_dimensional(model.test_step)
    model._cellgen_multi_worker = True
    return model


_DATA_HINT = " (every worker must read the same data with the same options)"
_DISAGREEMENT_HINTS = {
    "resumed_epoch": (" (the run directory must be on a file system every worker reads, e.g. NFS: the "
                      "other workers resume from the chief's checkpoints)"),
    "steps_per_epoch": _DATA_HINT, "training_images": _DATA_HINT, "training_files": _DATA_HINT,
}


def check_workers_agree(strategy: tf.distribute.Strategy, **values: int) -> None:
    """Raises :class:`StrategyError` unless every worker has the same integer ``values``
    (the epoch it resumes after, steps per epoch, a digest of its training files...).

    Each worker must run the same number of steps on the same data, or the collectives
    pair up wrong and the run hangs (until the collective timeout) or trains on garbage.
    All workers must call this at the same point. A no-op off multi-worker.
    """
    if not is_multi_worker(strategy) or not values:
        return
    names = list(values)
    local = tf.constant([[int(values[name]) for name in names]], tf.int64)
    with collective_errors(strategy, "set-up check"):
        gathered = strategy.gather(strategy.run(lambda: tf.identity(local)), axis=0).numpy()
    per_replica = len(gathered) // worker_count(strategy)
    rows = gathered[::max(1, per_replica)]  # one row per worker, in task order
    tasks = _task_names(strategy)
    for column, name in enumerate(names):
        if len(set(rows[:, column].tolist())) > 1:
            found = ", ".join(f"{task}: {value}" for task, value in zip(tasks, rows[:, column].tolist()))
            hint = _DISAGREEMENT_HINTS.get(name, "")
            raise StrategyError(f"multi-worker: the workers disagree on {name.replace('_', ' ')} "
                                f"({found}){hint}")


def files_digest(reader) -> int:
    """A 63-bit digest of the reader's kept files (names and classes, not folders: the data may be
    mounted at another path on another machine); 0 when the reader cannot list them."""
    import hashlib

    try:
        files = reader.kept_files()
    except Exception:  # a source without a file list (TFDS): the image count is compared instead
        return 0
    digest = hashlib.sha256("\n".join(f"{os.path.basename(str(path))}\t{name}" for path, name in files).encode())
    return int.from_bytes(digest.digest()[:8], "big") >> 1


def _first_line(error: BaseException) -> str:
    text = getattr(error, "message", None) or str(error) or type(error).__name__
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


_PEER = re.compile(r"/job:(\w+)(?:/replica:\d+)?/task:(\d+)")


def describe_collective_error(error: BaseException, strategy: tf.distribute.Strategy, what: str = "training") -> str:
    """A one-line message for a failed multi-worker collective, naming the lost worker when TF does."""
    text = getattr(error, "message", None) or str(error)
    here = worker_name(strategy)
    # The coordination service lists the tasks that stopped sending heartbeats after "unhealthy"; a
    # refused connection names its "remote target".
    named = text.split("unhealthy", 1)[1] if "unhealthy" in text else text
    peers = sorted({f"{job} {task}" for job, task in _PEER.findall(named)} - {here})
    timeout = collective_timeout()
    if isinstance(error, tf.errors.DeadlineExceededError):
        cause = (f"a collective waited more than {timeout:g} s ({COLLECTIVE_TIMEOUT_ENV}) for the other workers"
                 if timeout else "a collective timed out")
    elif isinstance(error, (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)):
        cause = (f"lost {', '.join(peers)} (stopped answering)" if peers
                 else "lost the connection to another worker (or to the chief)")
    else:
        cause = _first_line(error)
    return (f"multi-worker {what} stopped on {here}: {cause}; a worker died or hangs: restart every worker "
            "with --resume to continue from the chief's last checkpoint")


@contextlib.contextmanager
def collective_errors(strategy: tf.distribute.Strategy, what: str = "training"):
    """Turns the TensorFlow errors of a failed multi-worker collective into one-line
    :class:`StrategyError`s (off multi-worker, errors pass unchanged)."""
    if not is_multi_worker(strategy):
        yield
        return
    try:
        yield
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.CancelledError, tf.errors.InternalError, tf.errors.FailedPreconditionError) as error:
        raise StrategyError(describe_collective_error(error, strategy, what)) from None
