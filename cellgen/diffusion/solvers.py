"""Reverse diffusion processes: DDIM (any eta) and DDPM ancestral sampling.

The functions take the noise-prediction network as a callable
``network(noisy_images, noise_variances) -> predicted_noises`` so that they can
be tested with an oracle; :class:`~cellgen.diffusion.ddim.DiffusionModel` wraps
them in ``tf.function``. Everything here is float32.

DDIM (Song et al. 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502,
eq. 12 and 16), with ``signal_rate = sqrt(alpha_bar)`` and
``noise_rate = sqrt(1 - alpha_bar)``::

    x0_hat   = (x_t - noise_rate_t * eps_hat) / signal_rate_t
    sigma    = eta * (noise_rate_next / noise_rate_t) * sqrt(1 - signal_rate_t**2 / signal_rate_next**2)
    x_next   = signal_rate_next * x0_hat + sqrt(noise_rate_next**2 - sigma**2) * eps_hat + sigma * z

eta = 0 is the deterministic DDIM, eta = 1 the DDPM-like stochastic sampler. As in
the keras-io example, the result is the last ``x0_hat``.

DDPM ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic
Models", Algorithm 2, with sigma_t^2 = beta_t)::

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t) + sigma_t * z   (z = 0 at t = 1)

Example:
    >>> schedule = NoiseSchedule("cosine", min_signal_rate=0.02, max_signal_rate=0.95)
    >>> signal, noise = continuous_rate_sequence(schedule, steps=20)
    >>> images = ddim_sample(network_fn, initial_noise, signal, noise, eta=0.0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from cellgen.diffusion.schedules import DiscreteSchedule, NoiseSchedule

NetworkFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]


def continuous_rate_sequence(schedule: NoiseSchedule, steps: int, start_time: float = 1.0):
    """Signal and noise rates at ``steps + 1`` evenly spaced times from ``start_time`` down to 0.

    The network is evaluated at the first ``steps`` levels; the last level is where the
    final DDIM step would go (its value only matters when the result is not ``x0_hat``).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < start_time <= 1.0:
        raise ValueError(f"start_time must be in (0, 1], got {start_time}")
    times = np.linspace(start_time, 0.0, steps + 1, dtype=np.float32)
    signal_rates, noise_rates = schedule(times)
    return tf.convert_to_tensor(signal_rates, tf.float32), tf.convert_to_tensor(noise_rates, tf.float32)


def discrete_rate_sequence(schedule: DiscreteSchedule, steps: int, start_step: int | None = None):
    """Rates of ``steps`` evenly strided DDPM steps from ``start_step`` (default T - 1) down to 0,
    followed by the clean level (signal 1, noise 0): DDIM on a discrete schedule (Song et al. 2021 §4.2)."""
    last = schedule.timesteps - 1 if start_step is None else int(start_step)
    if not 0 <= last < schedule.timesteps:
        raise ValueError(f"start_step must be in [0, {schedule.timesteps}), got {start_step}")
    if not 1 <= steps <= last + 1:
        raise ValueError(f"steps must be in [1, {last + 1}], got {steps}")
    indices = np.unique(np.round(np.linspace(last, 0, steps)).astype(np.int64))[::-1]
    alpha_bars = np.concatenate([schedule.alpha_bars[indices], [1.0]])
    return (tf.constant(np.sqrt(alpha_bars), tf.float32), tf.constant(np.sqrt(1.0 - alpha_bars), tf.float32))


def ddim_sample(network: NetworkFn, initial_noise, signal_rates, noise_rates, eta: float = 0.0,
                seed=(0, 0)) -> tf.Tensor:
    """Runs DDIM from ``initial_noise`` (the image at the first level) down the given levels.

    Written with ``tf.while_loop`` (no autograph), so one traced graph serves every step count.

    Args:
        network: ``(noisy_images, noise_variances) -> predicted_noises``.
        initial_noise: ``x`` at level 0: pure noise for generation, or a noised image.
        signal_rates, noise_rates: 1-D float32 tensors of ``steps + 1`` levels (see the
            ``*_rate_sequence`` helpers); the network is evaluated at the first ``steps``.
        eta: 0 deterministic DDIM ... 1 stochastic (DDPM-like).
        seed: stateless seed of the per-step noise (only drawn when eta > 0).

    Returns:
        The predicted clean images ``x0_hat`` of the last step (float32).
    """
    x = tf.cast(initial_noise, tf.float32)
    signal_rates = tf.cast(signal_rates, tf.float32)
    noise_rates = tf.cast(noise_rates, tf.float32)
    eta = tf.cast(eta, tf.float32)
    seed = tf.cast(seed, tf.int32)
    steps = tf.shape(signal_rates)[0] - 1
    batch = tf.shape(x)[0]

    def body(step, x, _):
        signal_rate, noise_rate = signal_rates[step], noise_rates[step]
        next_signal_rate, next_noise_rate = signal_rates[step + 1], noise_rates[step + 1]
        variances = tf.fill([batch, 1, 1, 1], noise_rate * noise_rate)
        predicted_noises = tf.cast(network(x, variances), tf.float32)
        predicted_images = (x - noise_rate * predicted_noises) / signal_rate
        ratio = tf.clip_by_value(signal_rate * signal_rate / (next_signal_rate * next_signal_rate), 0.0, 1.0)
        sigma = eta * tf.math.divide_no_nan(next_noise_rate, noise_rate) * tf.sqrt(1.0 - ratio)
        direction = tf.sqrt(tf.maximum(next_noise_rate * next_noise_rate - sigma * sigma, 0.0))
        x = next_signal_rate * predicted_images + direction * predicted_noises
        # Deterministic DDIM (eta = 0) draws no per-step noise at all.
        x = tf.cond(eta > 0.0,
                    lambda: x + sigma * tf.random.stateless_normal(tf.shape(x), seed=seed + tf.stack([0, step + 1])),
                    lambda: x)
        return step + 1, x, predicted_images

    _, _, predicted_images = tf.while_loop(lambda step, *_: step < steps, body, (tf.constant(0), x, x))
    return predicted_images


def ddpm_sample(network: NetworkFn, initial_noise, schedule: DiscreteSchedule, seed=(0, 0),
                start_step: int | None = None) -> tf.Tensor:
    """Ancestral DDPM sampling over every step from ``start_step`` (default T - 1) down to 0.

    Args:
        network: ``(noisy_images, noise_variances) -> predicted_noises``.
        initial_noise: ``x`` at ``start_step`` (pure noise for generation).
        schedule: the discrete schedule the network was trained with.
        seed: stateless seed of the per-step noise.
        start_step: 0-based step of ``initial_noise``.

    Returns:
        ``x_0`` (float32).
    """
    last = schedule.timesteps - 1 if start_step is None else int(start_step)
    if not 0 <= last < schedule.timesteps:
        raise ValueError(f"start_step must be in [0, {schedule.timesteps}), got {start_step}")
    betas = tf.constant(schedule.betas, tf.float32)
    alpha_bars = tf.constant(schedule.alpha_bars, tf.float32)
    x = tf.cast(initial_noise, tf.float32)
    seed = tf.cast(seed, tf.int32)
    batch = tf.shape(x)[0]

    def body(step, x):
        beta, alpha_bar = betas[step], alpha_bars[step]
        variances = tf.fill([batch, 1, 1, 1], 1.0 - alpha_bar)
        predicted_noises = tf.cast(network(x, variances), tf.float32)
        x = (x - beta / tf.sqrt(1.0 - alpha_bar) * predicted_noises) / tf.sqrt(1.0 - beta)
        # No noise is added on the last step (t = 1 in Ho et al.'s numbering).
        sigma = tf.where(step > 0, tf.sqrt(beta), 0.0)
        x = x + sigma * tf.random.stateless_normal(tf.shape(x), seed=seed + tf.stack([0, step]))
        return step - 1, x

    _, x = tf.while_loop(lambda step, _: step >= 0, body, (tf.constant(last), x))
    return x
