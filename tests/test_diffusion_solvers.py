"""Samplers on toy problems whose exact denoiser is known: DDIM, DPM-Solver++(2M), Heun.

For Gaussian data ``x0 ~ N(mu, tau^2)`` (independent pixels) and ``x = alpha x0 + sigma eps``
the optimal denoiser is ``E[x0 | x] = mu + alpha tau^2 / (alpha^2 tau^2 + sigma^2) (x - alpha mu)``
and the probability-flow ODE has the closed-form solution
``x_hat(s) = mu + sqrt((tau^2 + s^2) / (tau^2 + s0^2)) (x_hat(s0) - mu)`` in Karras et al.'s
``x_hat = x / alpha``, ``s = sigma / alpha``. Every solver ends with the data prediction at
its last evaluated level, so the exact reference is the ODE solution to that level followed
by the exact denoiser.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from cellgen.diffusion.schedules import make_schedule
from cellgen.diffusion.solvers import (SOLVERS, ddim_solve, dpmpp_2m_solve, heun_solve, network_calls,
                                       noise_denoiser, sample_with, thresholded_denoiser)

MU, TAU = 0.3, 0.5
SCHEDULE = make_schedule("sigmoid", start=0.0, end=3.0, tau=0.6, min_signal_rate=0.01, max_signal_rate=0.95)
SOLVE = {"ddim": ddim_solve, "dpmpp_2m": dpmpp_2m_solve, "heun": heun_solve}


def _gaussian_denoiser(x, signal_rate, noise_rate):
    images = MU + signal_rate * TAU ** 2 / (signal_rate ** 2 * TAU ** 2 + noise_rate ** 2) * (x - signal_rate * MU)
    return (x - signal_rate * images) / noise_rate, images


def _gaussian_exact(x_start, rates_start, rates_end):
    """Exact ODE solution from the first to the last evaluated level, then the exact denoiser (float64)."""
    (a0, s0), (a1, s1) = rates_start, rates_end
    scaled0, scaled1 = s0 / a0, s1 / a1
    x_hat = MU + np.sqrt((TAU ** 2 + scaled1 ** 2) / (TAU ** 2 + scaled0 ** 2)) * (x_start / a0 - MU)
    x = a1 * x_hat
    return MU + a1 * TAU ** 2 / (a1 ** 2 * TAU ** 2 + s1 ** 2) * (x - a1 * MU)


def _time_levels(steps, end_time=0.1):
    """The model's sigmoid schedule, uniform in time from 1 to ``end_time`` (the last evaluated
    level is fixed, so the exact answer does not depend on ``steps``), plus the unused final level."""
    times = np.concatenate([np.linspace(1.0, end_time, steps), [0.0]]).astype(np.float32)
    signal, noise = SCHEDULE(times)
    return tf.constant(np.asarray(signal)), tf.constant(np.asarray(noise))


def _log_snr_levels(steps, start=-5.0, end=5.0):
    """Levels uniform in lambda = log(alpha / sigma) (Lu et al.'s recommended spacing)."""
    lambdas = np.concatenate([np.linspace(start, end, steps), [end + 1.0]])
    signal = 1.0 / np.sqrt(1.0 + np.exp(-2.0 * lambdas))
    return tf.constant(signal.astype(np.float32)), tf.constant(np.sqrt(1.0 - signal ** 2).astype(np.float32))


def _gaussian_errors(levels, steps, x_start):
    signal, noise = levels(steps)
    a, s = signal.numpy().astype(np.float64), noise.numpy().astype(np.float64)
    exact = _gaussian_exact(x_start.astype(np.float64), (a[0], s[0]), (a[steps - 1], s[steps - 1]))
    return {name: float(np.abs(solve(_gaussian_denoiser, x_start, signal, noise).numpy() - exact).max())
            for name, solve in SOLVE.items()}


@pytest.mark.parametrize("levels", [_time_levels, _log_snr_levels], ids=["schedule_time", "log_snr"])
def test_dpmpp_2m_is_much_closer_to_the_exact_ode_solution_than_ddim(levels):
    x_start = np.random.default_rng(0).standard_normal((4, 8, 8, 3)).astype(np.float32)
    errors = {steps: _gaussian_errors(levels, steps, x_start) for steps in (10, 20, 40)}
    for steps in (10, 20):
        assert errors[steps]["dpmpp_2m"] < 0.3 * errors[steps]["ddim"], errors[steps]
        assert errors[steps]["heun"] < errors[steps]["ddim"], errors[steps]
    # Convergence orders: DDIM is first order (error halves when the steps double),
    # DPM-Solver++(2M) and Heun second order (error / 4).
    ddim_ratio = errors[40]["ddim"] / errors[20]["ddim"]
    assert 0.4 < ddim_ratio < 0.6, errors
    assert errors[40]["dpmpp_2m"] / errors[20]["dpmpp_2m"] < 0.35, errors
    assert errors[40]["heun"] / errors[20]["heun"] < 0.35, errors
    assert errors[40]["dpmpp_2m"] < 0.01


def test_dpmpp_2m_samples_the_target_distribution_in_few_steps():
    """Starting from the exact marginal at the noisiest level, 15 steps give N(mu, tau^2)."""
    steps = 15
    signal, noise = _log_snr_levels(steps, start=-4.0, end=6.0)
    a0, s0 = float(signal[0]), float(noise[0])
    z = np.random.default_rng(1).standard_normal((20_000,)).astype(np.float32).reshape(-1, 10, 10, 2)
    x_start = (a0 * MU + np.sqrt(a0 ** 2 * TAU ** 2 + s0 ** 2) * z).astype(np.float32)
    std_errors = {}
    for name, solve in SOLVE.items():
        samples = solve(_gaussian_denoiser, x_start, signal, noise).numpy()
        assert abs(samples.mean() - MU) < 0.01, name
        std_errors[name] = abs(samples.std() - TAU)
    assert std_errors["dpmpp_2m"] < 0.01, std_errors
    assert std_errors["dpmpp_2m"] < 0.25 * std_errors["ddim"], std_errors


def test_two_point_mixture_converges_to_a_fine_reference():
    """Data in {-1, +1}: E[x0 | x] = tanh(alpha x / sigma^2); reference: 2,000 DPM-Solver++ steps."""

    def denoiser(x, signal_rate, noise_rate):
        images = tf.tanh(signal_rate * x / (noise_rate * noise_rate))
        return (x - signal_rate * images) / noise_rate, images

    def run(solve, steps):  # in a graph: 2,000 eager loop iterations would take half a minute
        levels = _time_levels(steps)
        return tf.function(lambda x: solve(denoiser, x, *levels), autograph=False)(x_start).numpy()

    x_start = np.random.default_rng(2).standard_normal((2, 8, 8, 3)).astype(np.float32)
    reference = run(dpmpp_2m_solve, 2000)
    errors = {steps: {name: float(np.abs(run(solve, steps) - reference).mean()) for name, solve in SOLVE.items()}
              for steps in (10, 20, 40)}
    for steps in (10, 20, 40):
        assert errors[steps]["dpmpp_2m"] < 0.6 * errors[steps]["ddim"], errors
        assert errors[steps]["heun"] < 0.6 * errors[steps]["ddim"], errors
    for name in SOLVE:
        assert errors[40][name] < errors[20][name] < errors[10][name], errors


@pytest.mark.parametrize("solver", SOLVERS)
def test_an_oracle_denoiser_recovers_the_image_and_calls_are_counted(solver):
    rng = np.random.default_rng(3)
    clean = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    calls = []

    def network(noisy, variances):  # knows x0: the noise consistent with it at this level
        calls.append(1)
        noise_rate = tf.sqrt(variances)
        return (noisy - tf.sqrt(1.0 - variances) * clean) / noise_rate

    signal, noise = _time_levels(7)
    start = rng.standard_normal(clean.shape).astype(np.float32)
    result = sample_with(solver, noise_denoiser(network), start, signal, noise)  # eager: the loop runs in Python
    np.testing.assert_allclose(result.numpy(), clean, atol=1e-4)
    assert len(calls) == network_calls(solver, 7) == (13 if solver == "heun" else 7)


@pytest.mark.parametrize("solver", SOLVERS)
def test_one_step_is_the_first_data_prediction_and_graph_mode_matches_eager(solver):
    signal, noise = _time_levels(1)
    start = np.random.default_rng(4).standard_normal((2, 4, 4, 3)).astype(np.float32)
    _, expected = _gaussian_denoiser(start, signal[0], noise[0])
    np.testing.assert_allclose(sample_with(solver, _gaussian_denoiser, start, signal, noise).numpy(),
                               expected.numpy(), rtol=1e-6)
    signal, noise = _time_levels(6)
    eager = sample_with(solver, _gaussian_denoiser, start, signal, noise).numpy()
    graph = tf.function(lambda x: sample_with(solver, _gaussian_denoiser, x, signal, noise), autograph=False)(start)
    np.testing.assert_allclose(graph.numpy(), eager, rtol=1e-5, atol=1e-6)


def test_unknown_solver_is_rejected():
    with pytest.raises(ValueError, match="valid solvers: ddim, dpmpp_2m, heun"):
        sample_with("euler", _gaussian_denoiser, np.zeros((1, 2, 2, 3), np.float32), *_time_levels(2))


# x0 thresholding (Saharia et al. 2022) ---------------------------------------------


def _constant_denoiser(image):
    """A denoiser whose clean-image estimate is always ``image`` (eps from the model equation)."""
    image = tf.constant(image, tf.float32)

    def denoise(x, signal_rate, noise_rate):
        return (x - signal_rate * image) / noise_rate, image + 0.0 * x

    return denoise


def test_static_threshold_clips_x0_to_the_data_range_and_keeps_eps_consistent():
    image = np.array([3.0, -5.0, 0.25, 1.5], np.float32).reshape(1, 2, 2, 1)
    low, high = -2.0, 1.0
    denoise = thresholded_denoiser(_constant_denoiser(image), "static", low, high)
    x = tf.fill([1, 2, 2, 1], 0.3)
    signal, noise = tf.constant(0.6), tf.constant(0.8)
    eps, x0 = denoise(x, signal, noise)
    np.testing.assert_allclose(x0.numpy().ravel(), [1.0, -2.0, 0.25, 1.0])
    # The model equation x = alpha x0 + sigma eps still holds with the clipped estimate.
    np.testing.assert_allclose((signal * x0 + noise * eps).numpy(), x.numpy(), atol=1e-6)


def test_dynamic_threshold_shrinks_only_images_beyond_the_range():
    inside = np.linspace(-0.9, 0.9, 400, dtype=np.float32).reshape(1, 20, 20, 1)
    beyond = 2.0 * np.linspace(-1.0, 1.0, 400, dtype=np.float32).reshape(1, 20, 20, 1)
    denoise = thresholded_denoiser(_constant_denoiser(np.concatenate([inside, beyond])), "dynamic", -1.0, 1.0,
                                   percentile=0.99)
    _, x0 = denoise(tf.zeros([2, 20, 20, 1]), tf.constant(0.6), tf.constant(0.8))
    x0 = x0.numpy()
    np.testing.assert_allclose(x0[0], inside[0], atol=1e-6)  # s = max(quantile, 1) = 1: unchanged
    assert np.abs(x0[1]).max() <= 1.0 + 1e-6
    # s is the 0.99 quantile of |x0| (about 1.98): the image is clipped to +-s and divided by it.
    scale = np.sort(np.abs(beyond.ravel()))[int(0.99 * beyond.size)]
    assert 1.9 < scale < 2.0
    np.testing.assert_allclose(x0[1], np.clip(beyond[0], -scale, scale) / scale, atol=1e-5)


def test_threshold_none_is_the_denoiser_itself_and_unknown_names_fail():
    denoise = _constant_denoiser(np.zeros((1, 2, 2, 1), np.float32))
    assert thresholded_denoiser(denoise, "none", -1.0, 1.0) is denoise
    with pytest.raises(ValueError, match="valid thresholds: none, static, dynamic"):
        thresholded_denoiser(denoise, "soft", -1.0, 1.0)
