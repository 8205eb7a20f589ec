"""Noise schedules: signal and noise rates as functions of diffusion time.

A continuous schedule maps diffusion time ``t`` in [0, 1] (0 = clean image,
1 = pure noise) to ``(signal_rate, noise_rate)`` with
``signal_rate**2 + noise_rate**2 = 1``, so that a noisy image is
``signal_rate * image + noise_rate * noise`` (Ho et al. 2020 eq. 4 with
``signal_rate = sqrt(alpha_bar)``). The signal rate is clipped to
``[min_signal_rate, max_signal_rate]`` (N&Z 2023 section 4.3: "the signal rate
corresponds to sqrt(alpha)"; Table 7: 0.01 and 0.95).

Schedules (``gamma(t) = alpha_bar(t)`` is the signal variance before clipping):

- ``sigmoid``: Chen (2023), "On the Importance of Noise Scheduling for Diffusion
  Models", arXiv 2301.10972, Algorithm 1: ``v(x) = sigmoid(x / tau)``,
  ``gamma(t) = (v(end) - v(t * (end - start) + start)) / (v(end) - v(start))``.
- ``cosine_chen``: the same paper's cosine family, ``v(x) = cos(x * pi / 2) ** (2 * tau)``.
- ``cosine``: the keras-io DDIM example: the angle ``arccos(signal_rate)`` grows linearly
  in ``t`` from ``arccos(max_signal_rate)`` to ``arccos(min_signal_rate)`` (no clipping needed).
- ``linear``: the continuous-time limit of DDPM's linearly increasing betas (Ho et al. 2020;
  Song et al. 2021, "Score-Based Generative Modeling through SDEs", VP SDE):
  ``gamma(t) = exp(-T * (beta_start * t + (beta_end - beta_start) * t**2 / 2))``.
- ``quadratic``: betas linear in their square root (Nichol & Dhariwal 2021's "quadratic"),
  ``beta(t) = (sqrt(beta_start) + t * (sqrt(beta_end) - sqrt(beta_start)))**2``, integrated the same way.

:class:`DiscreteSchedule` is the T-step DDPM schedule (linear betas) used by the
discrete (Matos 2025 DDPM) mode.

Example:
    >>> schedule = make_schedule("sigmoid", start=0.0, end=3.0, tau=0.6,
    ...                          min_signal_rate=0.01, max_signal_rate=0.95)
    >>> signal_rates, noise_rates = schedule(np.array([0.0, 0.5, 1.0], np.float32))
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from cellgen.config import ConfigError


def _ops():
    from keras import ops

    return ops


def sigmoid_gamma(t, start: float = -3.0, end: float = 3.0, tau: float = 1.0):
    """Chen (2023) Algorithm 1, sigmoid schedule: signal variance ``gamma(t)`` in [0, 1]."""
    ops = _ops()
    t = ops.convert_to_tensor(t, "float32")
    v_start = 1.0 / (1.0 + math.exp(-start / tau))
    v_end = 1.0 / (1.0 + math.exp(-end / tau))
    value = ops.sigmoid((t * (end - start) + start) / tau)
    return ops.clip((v_end - value) / (v_end - v_start), 0.0, 1.0)


def cosine_chen_gamma(t, start: float = 0.0, end: float = 1.0, tau: float = 1.0):
    """Chen (2023) Algorithm 1, cosine schedule: signal variance ``gamma(t)`` in [0, 1]."""
    ops = _ops()
    t = ops.convert_to_tensor(t, "float32")
    v_start = math.cos(start * math.pi / 2) ** (2 * tau)
    v_end = math.cos(end * math.pi / 2) ** (2 * tau)
    # |cos| keeps the power real for any tau; Chen's range of (t*(end-start)+start) is [0, 1].
    value = ops.power(ops.abs(ops.cos((t * (end - start) + start) * math.pi / 2)), 2 * tau)
    return ops.clip((v_end - value) / (v_end - v_start), 0.0, 1.0)


def linear_gamma(t, beta_start: float = 1e-4, beta_end: float = 0.02, timesteps: int = 1000):
    """Continuous-time DDPM linear betas (VP SDE of Song et al. 2021): ``alpha_bar(t)``."""
    ops = _ops()
    t = ops.convert_to_tensor(t, "float32")
    integral = beta_start * t + 0.5 * (beta_end - beta_start) * t * t
    return ops.exp(-timesteps * integral)


def quadratic_gamma(t, beta_start: float = 1e-4, beta_end: float = 0.02, timesteps: int = 1000):
    """Betas linear in their square root, integrated over continuous time: ``alpha_bar(t)``."""
    ops = _ops()
    t = ops.convert_to_tensor(t, "float32")
    a = math.sqrt(beta_start)
    b = math.sqrt(beta_end) - a
    integral = a * a * t + a * b * t * t + b * b * t * t * t / 3.0
    return ops.exp(-timesteps * integral)


@dataclasses.dataclass(frozen=True)
class NoiseSchedule:
    """A named continuous schedule with its parameters; call it on diffusion times.

    Args:
        name: one of :data:`SCHEDULES`.
        start, end, tau: Chen (2023) parameters of ``sigmoid`` and ``cosine_chen``.
        min_signal_rate, max_signal_rate: clip of the signal rate.
        beta_start, beta_end, timesteps: parameters of ``linear`` and ``quadratic``.

    Example:
        >>> schedule = NoiseSchedule("cosine", min_signal_rate=0.02, max_signal_rate=0.95)
        >>> signal, noise = schedule(np.linspace(0, 1, 5).astype("float32"))
    """

    name: str = "sigmoid"
    start: float = 0.0
    end: float = 3.0
    tau: float = 0.6
    min_signal_rate: float = 0.01
    max_signal_rate: float = 0.95
    beta_start: float = 1e-4
    beta_end: float = 0.02
    timesteps: int = 1000

    def __post_init__(self):
        if self.name not in SCHEDULES:
            raise ConfigError(f"unknown noise schedule {self.name!r}; valid schedules: {', '.join(SCHEDULES)}")
        if self.name in ("sigmoid", "cosine_chen"):
            if self.tau <= 0 or self.start == self.end:
                raise ConfigError(f"{self.name} schedule: need tau > 0 and start != end, got start={self.start}, "
                                  f"end={self.end}, tau={self.tau}")
        if self.name == "cosine_chen" and not 0.0 <= self.start < self.end <= 1.0:
            raise ConfigError(f"cosine_chen schedule: need 0 <= start < end <= 1 (cos(x pi / 2) must decrease), "
                              f"got start={self.start}, end={self.end}")
        if self.name == "sigmoid" and self.start > self.end:
            raise ConfigError(f"sigmoid schedule: need start < end, got start={self.start}, end={self.end}")
        if not 0.0 <= self.min_signal_rate < self.max_signal_rate <= 1.0:
            raise ConfigError("need 0 <= min_signal_rate < max_signal_rate <= 1, got "
                              f"{self.min_signal_rate} and {self.max_signal_rate}")

    def gamma(self, t):
        """Unclipped signal variance ``alpha_bar(t)``."""
        ops = _ops()
        if self.name == "cosine":
            signal, _ = self._kerasio_cosine(t)
            return ops.square(signal)
        if self.name in ("sigmoid", "cosine_chen"):
            return SCHEDULES[self.name](t, self.start, self.end, self.tau)
        return SCHEDULES[self.name](t, self.beta_start, self.beta_end, self.timesteps)

    def _kerasio_cosine(self, t):
        ops = _ops()
        t = ops.convert_to_tensor(t, "float32")
        start_angle = math.acos(self.max_signal_rate)
        end_angle = math.acos(self.min_signal_rate)
        angles = start_angle + t * (end_angle - start_angle)
        return ops.cos(angles), ops.sin(angles)

    def __call__(self, t):
        """Returns ``(signal_rate, noise_rate)`` for diffusion times ``t`` (any shape, float32)."""
        ops = _ops()
        if self.name == "cosine":
            return self._kerasio_cosine(t)
        signal_rate = ops.clip(ops.sqrt(self.gamma(t)), self.min_signal_rate, self.max_signal_rate)
        noise_rate = ops.sqrt(1.0 - ops.square(signal_rate))
        return signal_rate, noise_rate


SCHEDULES: dict[str, Callable | None] = {
    "sigmoid": sigmoid_gamma,
    "cosine": None,  # keras-io's angle form, implemented in NoiseSchedule
    "cosine_chen": cosine_chen_gamma,
    "linear": linear_gamma,
    "quadratic": quadratic_gamma,
}


def make_schedule(name: str, **params) -> NoiseSchedule:
    """The schedule called ``name``; raises ConfigError listing the valid names otherwise."""
    return NoiseSchedule(name=name, **params)


def schedule_from_config(config) -> NoiseSchedule:
    """The continuous schedule of a :class:`~cellgen.diffusion.config.DiffusionConfig`."""
    return NoiseSchedule(
        name=config.schedule, start=config.schedule_start, end=config.schedule_end, tau=config.schedule_tau,
        min_signal_rate=config.min_signal_rate, max_signal_rate=config.max_signal_rate,
        beta_start=config.beta_start, beta_end=config.beta_end, timesteps=config.timesteps)


@dataclasses.dataclass(frozen=True)
class DiscreteSchedule:
    """DDPM's T-step schedule with linear betas (Ho et al. 2020, section 4; Matos 2025: T = 500).

    Step ``i`` (0-based) is DDPM's ``t = i + 1``. ``alpha_bar[i] = prod_{s <= i} (1 - beta[s])``.

    Example:
        >>> schedule = DiscreteSchedule(500, 1e-4, 0.02)
        >>> round(float(schedule.alpha_bars[-1]), 4)
        0.0064
    """

    timesteps: int = 500
    beta_start: float = 1e-4
    beta_end: float = 0.02

    @property
    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.timesteps, dtype=np.float64)

    @property
    def alpha_bars(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    def rates(self, steps) -> tuple:
        """``(signal_rate, noise_rate)`` of integer steps (a tensor of indices in [0, T))."""
        ops = _ops()
        alpha_bars = ops.convert_to_tensor(self.alpha_bars.astype(np.float32))
        gathered = ops.take(alpha_bars, ops.cast(steps, "int32"))
        return ops.sqrt(gathered), ops.sqrt(1.0 - gathered)


def plot_schedules(schedules: Mapping[str, NoiseSchedule], path: str | os.PathLike,
                   title: str = "noise schedules", points: int = 201) -> Path:
    """Plots the signal rate against diffusion time for each schedule (N&Z Figures 12-13).

    Args:
        schedules: legend label -> schedule.
        path: PNG file to write.

    Example:
        >>> plot_schedules({"sigmoid 0,3,0.6": make_schedule("sigmoid"),
        ...                 "cosine": make_schedule("cosine")}, "schedules.png")  # doctest: +SKIP
    """
    from cellgen.plots import plt, save_figure  # Agg backend

    times = np.linspace(0.0, 1.0, points, dtype=np.float32)
    figure, axis = plt.subplots(figsize=(6, 4))
    for label, schedule in schedules.items():
        signal_rates, _ = schedule(times)
        axis.plot(times, np.asarray(signal_rates), label=label)
    axis.set_xlabel("diffusion time t")
    axis.set_ylabel("signal rate sqrt(alpha_bar)")
    axis.set_ylim(-0.02, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    axis.set_title(title)
    return save_figure(figure, path)
