"""Mixed-precision modes: ``fp32``, ``bf16``, ``fp16`` and ``auto``.

``bf16`` is Keras' ``mixed_bfloat16`` policy: variables stay float32, matmuls and
convolutions run in bfloat16. On CPUs with AMX (or AVX512-BF16) oneDNN runs them
several times faster than float32. ``fp16`` is ``mixed_float16`` and needs loss
scaling; :func:`wrap_optimizer` adds it. Whatever the mode, cellgen models keep
losses, softmax/sigmoid outputs and the noise-level embedding in float32 (layers
built with ``dtype="float32"``).

Example:
    >>> policy = set_precision("auto")   # doctest: +SKIP
    >>> optimizer = wrap_optimizer(keras.optimizers.Adam(1e-4))  # doctest: +SKIP
"""

from __future__ import annotations

import keras

MODES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where it is not available)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_has_fast_bf16() -> bool:
    """True on CPUs whose matrix units run bfloat16 natively (AMX or AVX512-BF16)."""
    return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})


def gpus_support_bf16() -> bool | None:
    """True when every GPU is Ampere (compute capability 8.0) or newer; None without GPUs."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability")
        if not capability or tuple(capability) < (8, 0):
            return False
    return True


def resolve_mode(mode: str) -> str:
    """Maps ``auto`` to the concrete mode for this machine; validates the name."""
    if mode == "auto":
        gpu_bf16 = gpus_support_bf16()
        if gpu_bf16 is None:
            return "bf16" if cpu_has_fast_bf16() else "fp32"
        return "bf16" if gpu_bf16 else "fp16"
    if mode not in MODES:
        raise ValueError(f"unknown precision {mode!r}; choose one of fp32, bf16, fp16, auto")
    return mode


def set_precision(mode: str) -> str:
    """Sets the global Keras dtype policy; returns the resolved mode (fp32/bf16/fp16)."""
    resolved = resolve_mode(mode)
    keras.mixed_precision.set_global_policy(MODES[resolved])
    return resolved


def current_mode() -> str:
    name = keras.mixed_precision.global_policy().name
    for mode, policy in MODES.items():
        if policy == name:
            return mode
    return name


def wrap_optimizer(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """Adds dynamic loss scaling under ``fp16`` (bf16 has float32's range and needs none).

    Custom ``train_step`` code must call ``optimizer.scale_loss(loss)`` before taking
    gradients; ``LossScaleOptimizer.apply`` unscales them and skips non-finite steps.
    """
    if current_mode() == "fp16" and not isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer
