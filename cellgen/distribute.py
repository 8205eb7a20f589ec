"""tf.distribute strategies by name, including CPU splitting for tests.

- ``auto``: MirroredStrategy over all GPUs when there is more than one, else the
  default (single-device) strategy.
- ``default``: the default strategy.
- ``mirrored``: MirroredStrategy over the local GPUs (or the CPU).
- ``multiworker``: MultiWorkerMirroredStrategy configured from ``TF_CONFIG``.
- ``cpu:N``: splits the CPU into N logical devices and mirrors over them, so the
  distribution code paths (per-replica batches, cross-replica reductions, loss
  scaling by the global batch) run and are tested on a laptop.

Example:
    >>> strategy = make_strategy("cpu:2")  # doctest: +SKIP
    >>> with strategy.scope():             # doctest: +SKIP
    ...     model = build_model()
"""

from __future__ import annotations

import json
import os

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
        if "TF_CONFIG" not in os.environ:
            raise StrategyError("strategy 'multiworker' needs the TF_CONFIG environment variable "
                                "(cluster and task of this worker)")
        try:
            json.loads(os.environ["TF_CONFIG"])
        except json.JSONDecodeError as error:
            raise StrategyError(f"TF_CONFIG is not valid JSON: {error}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise StrategyError(f"unknown strategy {name!r}; choose auto, default, mirrored, multiworker or cpu:N")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that writes run directories (always true off multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                              and "chief" not in resolver.cluster_spec().as_dict())


def replicas(strategy: tf.distribute.Strategy) -> int:
    return int(strategy.num_replicas_in_sync)
