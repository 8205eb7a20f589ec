"""Noise schedules and the reverse processes (DDIM, DDPM) with an oracle network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import ConfigError, load_config
from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.ddim import apply_contrast
from cellgen.diffusion.schedules import (SCHEDULES, DiscreteSchedule, NoiseSchedule, make_schedule,
                                         plot_schedules, schedule_from_config)
from cellgen.diffusion.solvers import (continuous_rate_sequence, ddim_sample, ddpm_sample,
                                       discrete_rate_sequence)

TIMES = np.linspace(0.0, 1.0, 101, dtype=np.float32)


def _sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def chen_sigmoid_gamma(t, start, end, tau):
    """Chen (2023), arXiv 2301.10972, Algorithm 1 (sigmoid_schedule), written out independently."""
    v_start = _sigmoid(start / tau)
    v_end = _sigmoid(end / tau)
    output = _sigmoid((t * (end - start) + start) / tau)
    return min(max((v_end - output) / (v_end - v_start), 0.0), 1.0)


SHAPES = {"sigmoid": {"start": 0.0, "end": 3.0, "tau": 0.6}, "cosine_chen": {"start": 0.2, "end": 1.0, "tau": 2.0}}


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedules_are_monotone_bounded_and_variance_preserving(name):
    schedule = make_schedule(name, min_signal_rate=0.02, max_signal_rate=0.9, **SHAPES.get(name, {}))
    signal, noise = (np.asarray(rates) for rates in schedule(TIMES))
    assert np.all(np.diff(signal) <= 1e-7), "signal rate must not increase with t"
    assert np.all(np.diff(noise) >= -1e-7), "noise rate must not decrease with t"
    assert signal.min() >= 0.02 - 1e-6 and signal.max() <= 0.9 + 1e-6
    np.testing.assert_allclose(signal ** 2 + noise ** 2, 1.0, atol=1e-6)
    # The schedule actually spans its range (it is not stuck at a clip value).
    assert signal[0] == pytest.approx(0.9, abs=1e-6)
    assert signal[-1] < 0.3


@pytest.mark.parametrize("start, end, tau", [(0.0, 3.0, 0.6), (-3.0, 3.0, 1.0), (0.0, 3.0, 0.3)])
def test_sigmoid_schedule_equals_chen_formula(start, end, tau):
    schedule = NoiseSchedule("sigmoid", start=start, end=end, tau=tau, min_signal_rate=0.0, max_signal_rate=1.0)
    times = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0], np.float32)
    gamma = np.asarray(schedule.gamma(times))
    expected = np.array([chen_sigmoid_gamma(float(t), start, end, tau) for t in times])
    np.testing.assert_allclose(gamma, expected, atol=1e-6)
    signal, _ = schedule(times)
    np.testing.assert_allclose(np.asarray(signal), np.sqrt(expected), atol=1e-5)


def test_nz2023_schedule_values_and_clipping():
    config = load_config(DiffusionConfig, "nz2023_ddim_base")
    schedule = schedule_from_config(config)
    signal, _ = schedule(np.array([0.0, 0.5, 1.0], np.float32))
    # t = 0.5: gamma = (sigmoid(5) - sigmoid(2.5)) / (sigmoid(5) - sigmoid(0)).
    middle = math.sqrt((_sigmoid(5.0) - _sigmoid(2.5)) / (_sigmoid(5.0) - 0.5))
    np.testing.assert_allclose(np.asarray(signal), [0.95, middle, 0.01], atol=1e-6)


def test_cosine_schedules_closed_forms():
    chen = NoiseSchedule("cosine_chen", start=0.0, end=1.0, tau=1.0, min_signal_rate=0.0, max_signal_rate=1.0)
    np.testing.assert_allclose(np.asarray(chen.gamma(TIMES)), np.cos(TIMES * np.pi / 2) ** 2, atol=1e-6)
    kerasio = NoiseSchedule("cosine", min_signal_rate=0.02, max_signal_rate=0.95)
    signal, _ = kerasio(np.array([0.0, 1.0], np.float32))
    np.testing.assert_allclose(np.asarray(signal), [0.95, 0.02], atol=1e-6)


def test_linear_schedule_is_the_continuous_ddpm_schedule():
    discrete = DiscreteSchedule(500, 1e-4, 0.02)
    continuous = NoiseSchedule("linear", timesteps=500, min_signal_rate=0.0, max_signal_rate=1.0)
    steps = np.array([49, 199, 499])
    gamma = np.asarray(continuous.gamma(((steps + 1) / 500).astype(np.float32)))
    # prod(1 - beta) = exp(-sum(beta) - O(sum(beta^2))): equal to within the beta^2 term.
    np.testing.assert_allclose(gamma, discrete.alpha_bars[steps], rtol=0.05)
    assert discrete.alpha_bars[-1] == pytest.approx(np.prod(1 - np.linspace(1e-4, 0.02, 500)))


def test_unknown_schedule_name_lists_valid_ones():
    with pytest.raises(ConfigError, match="sigmoid") as error:
        make_schedule("exponential")
    assert "exponential" in str(error.value) and "cosine_chen" in str(error.value)
    with pytest.raises(ConfigError, match="schedule"):
        DiffusionConfig().replace(schedule="exponential")
    with pytest.raises(ConfigError, match="cosine_chen"):
        DiffusionConfig().replace(schedule="cosine_chen")  # end = 3 is outside Chen's cosine range


def test_plot_schedules_writes_png(tmp_path):
    path = plot_schedules({"sigmoid 0,3,0.6": make_schedule("sigmoid"),
                           "cosine": make_schedule("cosine", min_signal_rate=0.02)}, tmp_path / "s.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Reverse processes -----------------------------------------------------------


def _oracle(clean):
    """A network that knows x0: returns the noise that makes x consistent with x0 at this level."""
    clean = tf.constant(clean)

    def network(noisy, variances):
        noise_rate = tf.sqrt(variances)
        signal_rate = tf.sqrt(1.0 - variances)
        return (noisy - signal_rate * clean) / noise_rate

    return network


@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("start_time", [1.0, 0.6])
def test_ddim_with_oracle_recovers_x0(eta, start_time):
    rng = np.random.default_rng(0)
    clean = rng.uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    schedule = make_schedule("sigmoid", start=0.0, end=3.0, tau=0.6, min_signal_rate=0.01, max_signal_rate=0.95)
    signal, noise = continuous_rate_sequence(schedule, steps=10, start_time=start_time)
    # x_t = s x0 + n eps at the first level.
    x_t = float(signal[0]) * clean + float(noise[0]) * rng.standard_normal(clean.shape).astype(np.float32)
    result = tf.function(lambda x: ddim_sample(_oracle(clean), x, signal, noise, eta=eta, seed=(3, 4)))(x_t)
    np.testing.assert_allclose(result.numpy(), clean, atol=1e-4)


def test_discrete_ddim_and_ddpm_with_oracle_recover_x0():
    rng = np.random.default_rng(1)
    clean = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    schedule = DiscreteSchedule(50, 1e-4, 0.02)
    start = rng.standard_normal(clean.shape).astype(np.float32)
    ddpm = ddpm_sample(_oracle(clean), start, schedule, seed=(1, 2))
    np.testing.assert_allclose(ddpm.numpy(), clean, atol=1e-3)
    signal, noise = discrete_rate_sequence(schedule, steps=7)
    assert float(signal[-1]) == 1.0 and float(noise[-1]) == 0.0
    ddim = ddim_sample(_oracle(clean), start, signal, noise, eta=0.0)
    np.testing.assert_allclose(ddim.numpy(), clean, atol=1e-3)


def test_ddim_eta_zero_is_deterministic_and_eta_one_depends_on_seed():
    def network(noisy, variances):  # a fixed, non-oracle denoiser
        return 0.5 * noisy

    schedule = make_schedule("cosine", min_signal_rate=0.02, max_signal_rate=0.95)
    signal, noise = continuous_rate_sequence(schedule, steps=5)
    start = np.random.default_rng(2).standard_normal((2, 4, 4, 3)).astype(np.float32)
    first = ddim_sample(network, start, signal, noise, eta=0.0, seed=(0, 0)).numpy()
    second = ddim_sample(network, start, signal, noise, eta=0.0, seed=(9, 9)).numpy()
    np.testing.assert_array_equal(first, second)
    stochastic_a = ddim_sample(network, start, signal, noise, eta=1.0, seed=(0, 0)).numpy()
    stochastic_b = ddim_sample(network, start, signal, noise, eta=1.0, seed=(0, 0)).numpy()
    stochastic_c = ddim_sample(network, start, signal, noise, eta=1.0, seed=(5, 0)).numpy()
    np.testing.assert_array_equal(stochastic_a, stochastic_b)
    assert np.abs(stochastic_a - stochastic_c).max() > 1e-3
    assert np.abs(stochastic_a - first).max() > 1e-3


def test_contrast_matches_thesis_formula():
    pixels = np.array([0.0, 50.0, 127.5, 200.0, 255.0], np.float32)
    images = (pixels / 127.5 - 1.0).reshape(1, 1, 5, 1)
    result = (apply_contrast(images, 20.0).reshape(-1) + 1.0) * 127.5
    expected = np.clip(pixels * (20 / 127 + 1) - 20, 0, 255)
    np.testing.assert_allclose(result, expected, atol=1e-3)
    assert apply_contrast(images, 0.0) is images
