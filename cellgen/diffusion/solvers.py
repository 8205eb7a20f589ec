"""Reverse diffusion processes: DDIM (any eta), DPM-Solver++(2M), Heun, and DDPM ancestral sampling.

The solvers are written over a *denoiser*, a callable
``denoise(x, signal_rate, noise_rate) -> (pred_noise, pred_image)`` that returns the
network's estimates of the noise ``eps`` and of the clean image ``x0`` in
``x = signal_rate * x0 + noise_rate * eps`` (scalar float32 rates, the same for the
whole batch), so that the sampler is separate from the network: the model builds the
denoiser from its U-Net (whatever it predicts, with or without classifier-free guidance)
and the tests use exact, closed-form denoisers. :func:`noise_denoiser` turns a
noise-prediction network ``network(noisy_images, noise_variances) -> eps`` into one;
:func:`ddim_sample` and :func:`ddpm_sample` keep that older network interface.
Everything here is float32, written with ``tf.while_loop`` and no autograph, so one
traced graph serves every step count.

Notation: ``alpha = signal_rate``, ``sigma = noise_rate`` (``alpha**2 + sigma**2 = 1``),
log-SNR ``lambda = log(alpha / sigma)``. A sequence of ``steps + 1`` levels (see
:func:`continuous_rate_sequence`) goes from the noisiest level 0 to the cleanest; the
network is evaluated at the first ``steps`` levels and every solver returns the
``x0`` prediction of the last evaluated level, i.e. its final step is the first-order
step to the clean image (DDIM's step to ``alpha = 1, sigma = 0``; the keras-io
convention; diffusers' ``lower_order_final`` for DPM-Solver++). Each solver therefore costs
``steps`` network calls, except Heun (``2 * steps - 1``).

**DDIM** (Song et al. 2021, "Denoising Diffusion Implicit Models", arXiv 2010.02502,
eq. 12 and 16)::

    x0_hat   = (x_t - sigma_t * eps_hat) / alpha_t
    s        = eta * (sigma_next / sigma_t) * sqrt(1 - alpha_t**2 / alpha_next**2)
    x_next   = alpha_next * x0_hat + sqrt(sigma_next**2 - s**2) * eps_hat + s * z

eta = 0 is the deterministic DDIM (the first-order solver of the probability-flow ODE),
eta = 1 the DDPM-like stochastic sampler.

**DPM-Solver++(2M)** (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
Diffusion Probabilistic Models", arXiv 2211.01095, Algorithm 2, data-prediction form,
multistep), with ``h_i = lambda_i - lambda_{i-1}`` and ``r_i = h_{i-1} / h_i``::

    D_i      = x0_hat_{i-1}                                             (first step: no history)
    D_i      = (1 + 1 / (2 r_i)) x0_hat_{i-1} - 1 / (2 r_i) x0_hat_{i-2}  (later steps)
    x_i      = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i

**Heun** (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative
Models", arXiv 2206.00364, Algorithm 1 without churn) on the probability-flow ODE in
their variables ``x_hat = x / alpha`` and ``s = sigma / alpha`` (so
``dx_hat / ds = (x_hat - D(x_hat; s)) / s = eps_hat``)::

    d        = eps_hat(x_hat_i; s_i)
    x_pred   = x_hat_i + (s_{i+1} - s_i) d                       (Euler = DDIM)
    d'       = eps_hat(x_pred; s_{i+1})
    x_hat_{i+1} = x_hat_i + (s_{i+1} - s_i) (d + d') / 2          (trapezoidal correction)

**DDPM** ancestral sampling (Ho et al. 2020, "Denoising Diffusion Probabilistic
Models", Algorithm 2, with sigma_t^2 = beta_t)::

    x_{t-1} = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t) + sigma_t * z   (z = 0 at t = 1)

Example:
    >>> schedule = NoiseSchedule("cosine", min_signal_rate=0.02, max_signal_rate=0.95)
    >>> signal, noise = continuous_rate_sequence(schedule, steps=20)
    >>> images = dpmpp_2m_solve(denoise, initial_noise, signal, noise)          # doctest: +SKIP
    >>> images = ddim_sample(network_fn, initial_noise, signal, noise, eta=0.0)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from cellgen.diffusion.config import THRESHOLDS
from cellgen.diffusion.schedules import DiscreteSchedule, NoiseSchedule

NetworkFn = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
# denoise(x, signal_rate, noise_rate) -> (predicted_noises, predicted_images); scalar float32 rates.
Denoiser = Callable[[tf.Tensor, tf.Tensor, tf.Tensor], "tuple[tf.Tensor, tf.Tensor]"]

# Solvers of sample_with; "ddpm" needs a discrete schedule and is separate (ddpm_solve).
SOLVERS = ("ddim", "dpmpp_2m", "heun")


def network_calls(solver: str, steps: int) -> int:
    """Network evaluations of ``solver`` over ``steps`` levels (Heun evaluates twice per interval)."""
    return 2 * steps - 1 if solver == "heun" else steps


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


def _start_step(schedule: DiscreteSchedule, start_step: int | None) -> int:
    """The 0-based step to start from: ``start_step``, or the noisiest (T - 1) by default."""
    last = schedule.timesteps - 1 if start_step is None else int(start_step)
    if not 0 <= last < schedule.timesteps:
        raise ValueError(f"start_step must be in [0, {schedule.timesteps}), got {start_step}")
    return last


def discrete_rate_sequence(schedule: DiscreteSchedule, steps: int, start_step: int | None = None):
    """Rates of ``steps`` evenly strided DDPM steps from ``start_step`` (default T - 1) down to 0,
    followed by the clean level (signal 1, noise 0): DDIM on a discrete schedule (Song et al. 2021 §4.2)."""
    last = _start_step(schedule, start_step)
    if not 1 <= steps <= last + 1:
        raise ValueError(f"steps must be in [1, {last + 1}], got {steps}")
    indices = np.unique(np.round(np.linspace(last, 0, steps)).astype(np.int64))[::-1]
    alpha_bars = np.concatenate([schedule.alpha_bars[indices], [1.0]])
    return (tf.constant(np.sqrt(alpha_bars), tf.float32), tf.constant(np.sqrt(1.0 - alpha_bars), tf.float32))


def noise_denoiser(network: NetworkFn) -> Denoiser:
    """The denoiser of a noise-prediction network ``network(noisy_images, noise_variances) -> eps``.

    ``x0_hat = (x - sigma * eps_hat) / alpha`` (Ho et al. 2020 eq. 4 solved for x0).
    """

    def denoise(x, signal_rate, noise_rate):
        variances = tf.fill([tf.shape(x)[0], 1, 1, 1], noise_rate * noise_rate)
        predicted_noises = tf.cast(network(x, variances), tf.float32)
        predicted_images = (x - noise_rate * predicted_noises) / signal_rate
        return predicted_noises, predicted_images

    return denoise


def thresholded_denoiser(denoise: Denoiser, method: str, low, high, percentile: float = 0.995) -> Denoiser:
    """``denoise`` with its clean-image estimate kept inside the data range ``[low, high]``.

    Classifier-free guidance extrapolates beyond the conditional prediction, and its ``x0_hat``
    leaves the range real images occupy; the solver then integrates towards saturated colours
    (Saharia et al. 2022, "Photorealistic Text-to-Image Diffusion Models with Deep Language
    Understanding" (Imagen), arXiv 2205.11487, section 2.3):

    - ``static``: ``x0_hat = clip(x0_hat, low, high)``.
    - ``dynamic``: per image, ``s`` = the ``percentile`` quantile of ``|x0_hat|`` on the [-1, 1]
      scale, ``s = max(s, 1)``, then ``x0_hat = clip(x0_hat, -s, s) / s``: saturated pixels are
      pulled inwards instead of flattened at the bound.

    The noise estimate is recomputed from the thresholded image,
    ``eps_hat = (x - alpha x0_hat) / sigma``, so that the solver's two estimates stay consistent.
    ``low`` and ``high`` (broadcastable to the images) are the bounds of pixel values -1 and 1 in
    the space the solver works in (the model's normalised space).
    """
    if method not in THRESHOLDS:
        raise ValueError(f"unknown threshold {method!r}; valid thresholds: {', '.join(THRESHOLDS)}")
    if method == "none":
        return denoise
    low = tf.cast(low, tf.float32)
    high = tf.cast(high, tf.float32)

    def threshold(images):
        if method == "static":
            return tf.clip_by_value(images, low, high)
        # dynamic, on the [-1, 1] scale where the bound is 1
        centre, half_width = (high + low) / 2.0, (high - low) / 2.0
        pixels = (images - centre) / half_width
        flat = tf.sort(tf.reshape(tf.abs(pixels), [tf.shape(pixels)[0], -1]), axis=1)
        size = tf.shape(flat)[1]
        index = tf.minimum(tf.cast(tf.math.floor(percentile * tf.cast(size, tf.float32)), tf.int32), size - 1)
        scale = tf.maximum(flat[:, index], 1.0)[:, None, None, None]
        return tf.clip_by_value(pixels, -scale, scale) / scale * half_width + centre

    def denoise_within(x, signal_rate, noise_rate):
        _, predicted_images = denoise(x, signal_rate, noise_rate)
        predicted_images = threshold(predicted_images)
        return (x - signal_rate * predicted_images) / noise_rate, predicted_images

    return denoise_within


def _levels(initial_noise, signal_rates, noise_rates):
    x = tf.cast(initial_noise, tf.float32)
    signal_rates = tf.cast(signal_rates, tf.float32)
    noise_rates = tf.cast(noise_rates, tf.float32)
    return x, signal_rates, noise_rates, tf.shape(signal_rates)[0] - 1


def ddim_solve(denoise: Denoiser, initial_noise, signal_rates, noise_rates, eta: float = 0.0,
               seed=(0, 0)) -> tf.Tensor:
    """DDIM from ``initial_noise`` (the image at level 0) down the given levels (Song et al. 2021).

    Args:
        denoise: ``(x, signal_rate, noise_rate) -> (pred_noise, pred_image)``.
        initial_noise: ``x`` at level 0: pure noise for generation, or a noised image.
        signal_rates, noise_rates: 1-D float32 tensors of ``steps + 1`` levels (see the
            ``*_rate_sequence`` helpers); the denoiser is evaluated at the first ``steps``.
        eta: 0 deterministic DDIM ... 1 stochastic (DDPM-like).
        seed: stateless seed of the per-step noise (only drawn when eta > 0).

    Returns:
        The predicted clean images ``x0_hat`` of the last step (float32).
    """
    x, signal_rates, noise_rates, steps = _levels(initial_noise, signal_rates, noise_rates)
    eta = tf.cast(eta, tf.float32)
    seed = tf.cast(seed, tf.int32)

    def body(step, x, _):
        signal_rate, noise_rate = signal_rates[step], noise_rates[step]
        next_signal_rate, next_noise_rate = signal_rates[step + 1], noise_rates[step + 1]
        # Song et al. eq. 12: x0_hat ("predicted x0") and eps_hat at this level.
        predicted_noises, predicted_images = denoise(x, signal_rate, noise_rate)
        # Song et al. eq. 16: the standard deviation of the step's fresh noise (0 when eta = 0).
        ratio = tf.clip_by_value(signal_rate * signal_rate / (next_signal_rate * next_signal_rate), 0.0, 1.0)
        sigma = eta * tf.math.divide_no_nan(next_noise_rate, noise_rate) * tf.sqrt(1.0 - ratio)
        # Song et al. eq. 12: "direction pointing to x_t" with what is left of the noise variance.
        direction = tf.sqrt(tf.maximum(next_noise_rate * next_noise_rate - sigma * sigma, 0.0))
        x = next_signal_rate * predicted_images + direction * predicted_noises
        # Deterministic DDIM (eta = 0) draws no per-step noise at all.
        x = tf.cond(eta > 0.0,
                    lambda: x + sigma * tf.random.stateless_normal(tf.shape(x), seed=seed + tf.stack([0, step + 1])),
                    lambda: x)
        return step + 1, x, predicted_images

    _, _, predicted_images = tf.while_loop(lambda step, *_: step < steps, body, (tf.constant(0), x, x))
    return predicted_images


def _log_snr(signal_rate, noise_rate):
    """lambda = log(alpha / sigma) (Lu et al. 2022, section 3.1: half the log-SNR)."""
    return tf.math.log(signal_rate) - tf.math.log(tf.maximum(noise_rate, 1e-20))


def dpmpp_2m_solve(denoise: Denoiser, initial_noise, signal_rates, noise_rates) -> tf.Tensor:
    """DPM-Solver++(2M): the second-order multistep solver in data-prediction form (Lu et al. 2022).

    Lu et al. (2022), "DPM-Solver++: Fast Solver for Guided Sampling of Diffusion Probabilistic
    Models", arXiv 2211.01095, Algorithm 2 (the multistep solver; the same update as diffusers'
    ``DPMSolverMultistepScheduler`` with ``algorithm_type="dpmsolver++"``, ``solver_order=2``,
    ``solver_type="midpoint"``). It integrates the probability-flow ODE in log-SNR time
    ``lambda = log(alpha / sigma)``, where its exact solution is
    ``x_t = (sigma_t / sigma_s) x_s + sigma_t int_{lambda_s}^{lambda_t} e^lambda x0(x_lambda) d lambda``
    (the exact solution of their data-prediction ODE), approximating ``x0`` along the path
    linearly from the last two data predictions. Deterministic; one network call per level.
    Arguments as for :func:`ddim_solve` (no ``eta``, no ``seed``); returns the data prediction
    of the last evaluated level (float32).
    """
    x, signal_rates, noise_rates, steps = _levels(initial_noise, signal_rates, noise_rates)

    def body(step, x, previous_images, previous_h):
        signal_rate, noise_rate = signal_rates[step], noise_rates[step]
        # Algorithm 2, line 3/6: the data prediction x_theta(x_{t_{i-1}}, t_{i-1}) ("x0_hat").
        _, predicted_images = denoise(x, signal_rate, noise_rate)
        next_signal_rate, next_noise_rate = signal_rates[step + 1], noise_rates[step + 1]
        # h_i = lambda_{t_i} - lambda_{t_{i-1}} (Algorithm 2, line 5).
        h = _log_snr(next_signal_rate, next_noise_rate) - _log_snr(signal_rate, noise_rate)
        # r_i = h_{i-1} / h_i and D_i = (1 + 1/(2 r_i)) x0_hat_{i-1} - 1/(2 r_i) x0_hat_{i-2} (lines 6-7);
        # the first step has no history and is first order, D_1 = x0_hat_0 (line 3): then DDIM's step.
        half_inverse_r = tf.where(step > 0, 0.5 * tf.math.divide_no_nan(h, previous_h), 0.0)
        data = (1.0 + half_inverse_r) * predicted_images - half_inverse_r * previous_images
        # x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (e^{-h_i} - 1) D_i (line 8);
        # expm1 keeps e^{-h} - 1 accurate for the small h of many steps.
        x_next = (next_noise_rate / noise_rate) * x - next_signal_rate * tf.math.expm1(-h) * data
        return step + 1, x_next, predicted_images, h

    # Levels 0 .. steps-2 update x; the last evaluated level (steps - 1) only gives its data prediction:
    # a first-order final step to the clean image (as diffusers' ``lower_order_final``), since the
    # step to sigma = 0 has h = infinity.
    zero = tf.constant(0.0, tf.float32)
    _, x, previous_images, _ = tf.while_loop(lambda step, *_: step < steps - 1, body,
                                             (tf.constant(0), x, tf.zeros_like(x), zero))
    _, predicted_images = denoise(x, signal_rates[steps - 1], noise_rates[steps - 1])
    return predicted_images


def heun_solve(denoise: Denoiser, initial_noise, signal_rates, noise_rates) -> tf.Tensor:
    """Heun's second-order method on the probability-flow ODE (Karras et al. 2022, Algorithm 1).

    Karras et al. (2022), "Elucidating the Design Space of Diffusion-Based Generative Models",
    arXiv 2206.00364, Algorithm 1 (deterministic, no churn), in their scaled variables
    ``x_hat = x / alpha`` and ``s = sigma / alpha`` (their ODE with scaling ``s(t) = alpha``), where
    the ODE is ``dx_hat/ds = (x_hat - D(x_hat; s)) / s = eps_hat``. Costs ``2 * steps - 1``
    network calls (an Euler step, which is a DDIM step, then a trapezoidal correction).
    Arguments and result as for :func:`dpmpp_2m_solve`.
    """
    x, signal_rates, noise_rates, steps = _levels(initial_noise, signal_rates, noise_rates)
    scaled_sigmas = noise_rates / signal_rates

    def body(step, x_hat):
        signal_rate, noise_rate = signal_rates[step], noise_rates[step]
        next_signal_rate, next_noise_rate = signal_rates[step + 1], noise_rates[step + 1]
        delta = scaled_sigmas[step + 1] - scaled_sigmas[step]
        # Algorithm 1, line 7: d_i = (x_i - D(x_i; t_i)) / t_i, which is the predicted noise eps_hat.
        slope, _ = denoise(signal_rate * x_hat, signal_rate, noise_rate)
        # line 8: Euler step x_{i+1} = x_i + (t_{i+1} - t_i) d_i.
        predicted = x_hat + delta * slope
        # lines 10-11: d'_i at the Euler estimate, then the trapezoidal rule with (d_i + d'_i) / 2.
        next_slope, _ = denoise(next_signal_rate * predicted, next_signal_rate, next_noise_rate)
        return step + 1, x_hat + delta * 0.5 * (slope + next_slope)

    # x_hat = x / alpha at level 0; the last evaluated level gives its data prediction (D(x_hat; s) = x0_hat).
    _, x_hat = tf.while_loop(lambda step, _: step < steps - 1, body, (tf.constant(0), x / signal_rates[0]))
    _, predicted_images = denoise(signal_rates[steps - 1] * x_hat, signal_rates[steps - 1], noise_rates[steps - 1])
    return predicted_images


def sample_with(solver: str, denoise: Denoiser, initial_noise, signal_rates, noise_rates, eta: float = 0.0,
                seed=(0, 0)) -> tf.Tensor:
    """Runs the solver called ``solver`` (one of :data:`SOLVERS`; eta only applies to ``ddim``)."""
    if solver == "ddim":
        return ddim_solve(denoise, initial_noise, signal_rates, noise_rates, eta, seed)
    if solver == "dpmpp_2m":
        return dpmpp_2m_solve(denoise, initial_noise, signal_rates, noise_rates)
    if solver == "heun":
        return heun_solve(denoise, initial_noise, signal_rates, noise_rates)
    raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(SOLVERS)}")


def ddim_sample(network: NetworkFn, initial_noise, signal_rates, noise_rates, eta: float = 0.0,
                seed=(0, 0)) -> tf.Tensor:
    """:func:`ddim_solve` with a noise-prediction network ``(noisy_images, noise_variances) -> eps``."""
    return ddim_solve(noise_denoiser(network), initial_noise, signal_rates, noise_rates, eta, seed)


def ddpm_solve(denoise: Denoiser, initial_noise, schedule: DiscreteSchedule, seed=(0, 0),
               start_step: int | None = None) -> tf.Tensor:
    """Ancestral DDPM sampling over every step from ``start_step`` (default T - 1) down to 0.

    Args:
        denoise: ``(x, signal_rate, noise_rate) -> (pred_noise, pred_image)`` (only the noise is used).
        initial_noise: ``x`` at ``start_step`` (pure noise for generation).
        schedule: the discrete schedule the network was trained with.
        seed: stateless seed of the per-step noise.
        start_step: 0-based step of ``initial_noise``.

    Returns:
        ``x_0`` (float32).
    """
    last = _start_step(schedule, start_step)
    betas = tf.constant(schedule.betas, tf.float32)
    alpha_bars = tf.constant(schedule.alpha_bars, tf.float32)
    x = tf.cast(initial_noise, tf.float32)
    seed = tf.cast(seed, tf.int32)

    def body(step, x):
        beta, alpha_bar = betas[step], alpha_bars[step]
        predicted_noises, _ = denoise(x, tf.sqrt(alpha_bar), tf.sqrt(1.0 - alpha_bar))
        # Ho et al. Algorithm 2, line 4 (mean of p(x_{t-1} | x_t)).
        x = (x - beta / tf.sqrt(1.0 - alpha_bar) * predicted_noises) / tf.sqrt(1.0 - beta)
        # No noise is added on the last step (t = 1 in Ho et al.'s numbering).
        sigma = tf.where(step > 0, tf.sqrt(beta), 0.0)
        x = x + sigma * tf.random.stateless_normal(tf.shape(x), seed=seed + tf.stack([0, step]))
        return step - 1, x

    _, x = tf.while_loop(lambda step, _: step >= 0, body, (tf.constant(last), x))
    return x


def ddpm_sample(network: NetworkFn, initial_noise, schedule: DiscreteSchedule, seed=(0, 0),
                start_step: int | None = None) -> tf.Tensor:
    """:func:`ddpm_solve` with a noise-prediction network ``(noisy_images, noise_variances) -> eps``."""
    return ddpm_solve(noise_denoiser(network), initial_noise, schedule, seed, start_step)
