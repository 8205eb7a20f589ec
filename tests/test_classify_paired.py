"""Paired statistics over seeds (issue 17), dihedral augmentation and class-balanced sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cellgen.classify import metrics
from cellgen.classify.report import build_report, comparison_pairs, paired_markdown
from cellgen.data import Augment, DataError

# Student-t quantiles t_{0.975, df} from a printed table (df 1, 2, 4).
T_TABLE = {1: 12.7062, 2: 4.3027, 4: 2.7764}


def test_t_interval_matches_a_hand_computation():
    # differences 0.02, 0.05, 0.08: mean 0.05, sd 0.03, n 3 -> 0.05 ± 4.3027 * 0.03 / sqrt(3)
    result = metrics.t_interval([0.02, 0.05, 0.08])
    half = T_TABLE[2] * 0.03 / math.sqrt(3)
    assert result["mean"] == pytest.approx(0.05) and result["std"] == pytest.approx(0.03)
    assert result["low"] == pytest.approx(0.05 - half, abs=1e-4) and result["high"] == pytest.approx(0.05 + half, abs=1e-4)
    assert result["n"] == 3 and result["low"] == pytest.approx(-0.02453, abs=1e-4)
    assert not result["clear"]  # the interval [-0.0245, 0.1245] includes 0


def test_t_interval_clear_only_when_it_excludes_zero():
    # five seeds, mean 0.1, sd 0.05: half width 2.7764 * 0.05 / sqrt(5) = 0.0621 -> [0.0379, 0.1621]
    values = [0.1 + 0.05 * z for z in np.array([-1.2649, -0.6325, 0.0, 0.6325, 1.2649])]
    result = metrics.t_interval(values)
    assert result["std"] == pytest.approx(0.05, abs=1e-4)
    assert result["low"] == pytest.approx(0.1 - T_TABLE[4] * 0.05 / math.sqrt(5), abs=1e-4)
    assert result["clear"]
    noisy = metrics.t_interval([0.3, -0.1, 0.1])
    assert not noisy["clear"] and noisy["low"] < 0 < noisy["high"]
    worse = metrics.t_interval([-0.2, -0.21, -0.19])
    assert worse["clear"] and worse["high"] < 0
    # two seeds use t with 1 degree of freedom
    two = metrics.t_interval([0.1, 0.3])
    assert two["high"] - two["mean"] == pytest.approx(T_TABLE[1] * math.sqrt(0.02) / math.sqrt(2), abs=1e-3)
    one = metrics.t_interval([0.4])
    assert one["mean"] == 0.4 and one["low"] is None and not one["clear"]


def _run(seed, weighted, per_class):
    return {"seed": seed, "weighted_f1": weighted, "macro_f1": weighted, "accuracy": weighted,
            "per_class": {name: {"f1": value} for name, value in per_class.items()}}


def test_paired_difference_pairs_by_seed_not_by_position():
    arm = [_run(2, 0.9, {"a": 0.5}), _run(0, 0.7, {"a": 0.3}), _run(1, 0.8, {"a": 0.4})]
    other = [_run(0, 0.6, {"a": 0.1}), _run(1, 0.75, {"a": 0.3}), _run(2, 0.8, {"a": 0.4})]
    result = metrics.paired_difference(arm, other, ["weighted_f1"])
    assert result["seeds"] == [0, 1, 2]
    assert result["differences"] == pytest.approx([0.1, 0.05, 0.1])
    assert result["mean"] == pytest.approx(0.25 / 3)
    per_class = metrics.paired_comparison(arm, other, ["a"])["per_class"]["a"]
    assert per_class["differences"] == pytest.approx([0.2, 0.1, 0.1])
    half = T_TABLE[2] * np.std([0.2, 0.1, 0.1], ddof=1) / math.sqrt(3)
    assert per_class["low"] == pytest.approx(np.mean([0.2, 0.1, 0.1]) - half, abs=1e-4)
    # pairing removes the shared seed effect: the unpaired spread of each arm is larger
    assert np.std([0.7, 0.8, 0.9], ddof=1) > result["std"]


def test_ratio_interval_is_fiellers():
    # constant denominators: the t interval of the numerators divided by the denominator
    gains = [0.1, 0.2, 0.3]
    result = metrics.ratio_interval(gains, [0.5, 0.5, 0.5])
    plain = metrics.t_interval(gains)
    assert result["ratio"] == pytest.approx(0.4)
    assert result["low"] == pytest.approx(plain["low"] / 0.5) and result["high"] == pytest.approx(plain["high"] / 0.5)
    # in general the bounds are where the paired t statistic of a - theta b is exactly the quantile
    a, b = np.array([0.10, 0.16, 0.12, 0.20]), np.array([0.20, 0.26, 0.18, 0.30])
    result = metrics.ratio_interval(a, b)
    assert result["bounded"] and result["low"] < result["ratio"] < result["high"]
    t = metrics.t_quantile(0.95, 3)
    for theta in (result["low"], result["high"]):
        d = a - theta * b
        assert abs(d.mean()) == pytest.approx(t * d.std(ddof=1) / 2.0, rel=1e-6)
    # a denominator not clearly above 0: no bounded interval
    assert not metrics.ratio_interval([0.1, 0.2, 0.1], [0.05, -0.04, 0.02])["bounded"]
    assert metrics.ratio_interval([0.1], [0.2])["low"] is None


def _experiment(values_by_arm, classes=("a", "b")):
    results = {}
    for arm, seeds in values_by_arm.items():
        runs = []
        for seed, (weighted, f1_a) in enumerate(seeds):
            matrix = np.eye(len(classes), dtype=int) * 4
            run = metrics.classification_metrics(matrix, list(classes))
            run.update(seed=seed, weighted_f1=weighted)
            run["per_class"]["a"]["f1"] = f1_a
            runs.append(run)
        results[arm] = runs
    return build_report(results, list(classes), {"mode": "multiclass"})


def test_report_holds_the_paired_comparisons():
    assert comparison_pairs(["baseline", "classical", "synthetic", "classical+synthetic"]) == [
        ("classical", "baseline"), ("synthetic", "baseline"), ("classical+synthetic", "baseline"),
        ("synthetic", "classical"), ("classical+synthetic", "classical")]
    assert comparison_pairs(["classical", "classical+synthetic"]) == [("classical+synthetic", "classical")]
    report = _experiment({"classical": [(0.80, 0.40), (0.82, 0.45), (0.81, 0.50)],
                          "classical+synthetic": [(0.81, 0.60), (0.83, 0.62), (0.82, 0.71)]})
    comparison = report["paired"]["classical+synthetic - classical"]
    assert comparison["arm"] == "classical+synthetic" and comparison["against"] == "classical"
    assert comparison["per_class"]["a"]["differences"] == pytest.approx([0.2, 0.17, 0.21])
    assert comparison["per_class"]["a"]["clear"]
    assert comparison["weighted_f1"]["differences"] == pytest.approx([0.01, 0.01, 0.01])
    table = "\n".join(paired_markdown(report))
    assert "| classical+synthetic - classical |" in table and "**+0.193 [" in table


def test_dihedral_augment_draws_all_eight_symmetries_exactly():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    augment = Augment.dihedral()
    assert augment.horizontal_flip and augment.rotate90 and not augment.vertical_flip
    seen = {}
    for seed in range(200):
        out = augment.apply(image, np.random.default_rng(seed))
        seen[out.tobytes()] = out
    symmetries = {np.rot90(variant, k).tobytes() for variant in (image, image[:, ::-1]) for k in range(4)}
    assert set(seen) == symmetries  # exact pixels, no interpolation, all 8 elements of D4
    # quarter turns after a free rotation keep the shape; a non-square image turns by 0 or 180 degrees
    turned = Augment(rotation_degrees=30, horizontal_flip=True, rotate90=True)
    assert turned.apply(image, np.random.default_rng(1)).shape == image.shape
    wide = np.zeros((2, 4, 3), np.uint8)
    assert all(turned.apply(wide, np.random.default_rng(s)).shape == wide.shape for s in range(20))


def test_resolution_matching_blurs_a_share_of_images_and_leaves_the_other_draws_alone():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)  # fine detail: the round trip must lose it
    round_trip = Augment.resample(image, 32)
    assert round_trip.shape == image.shape and round_trip.dtype == np.uint8
    lost = np.abs(round_trip.astype(int) - image).mean()
    assert lost > 20
    assert np.array_equal(Augment.resample(round_trip[:32, :32], 32), round_trip[:32, :32])  # not larger: unchanged
    # An image already at the generator's detail (a generated image enlarged) changes far less.
    assert np.abs(Augment.resample(round_trip, 32).astype(int) - round_trip).mean() < lost / 5
    plain = Augment.dihedral(zoom=0.1)
    matched = Augment(zoom=0.1, horizontal_flip=True, rotate90=True, resample_size=32, resample_probability=0.5)
    blurred = 0
    for seed in range(40):
        expected = plain.apply(image, np.random.default_rng(seed))
        out = matched.apply(image, np.random.default_rng(seed))
        if not np.array_equal(out, expected):
            blurred += 1  # the same flips, turn and zoom as without matching, of the blurred image
            assert np.abs(out.astype(int) - expected).mean() > 10
    assert 10 <= blurred <= 30
    with pytest.raises(DataError, match="resample_probability"):
        Augment(resample_size=32, resample_probability=1.5)
    with pytest.raises(DataError, match="resample_size"):
        Augment(resample_size=-1)


def test_resolution_matching_applies_to_the_synthetic_arms_only():
    from cellgen.classify.config import ClassifierConfig
    from cellgen.classify.train_lib import classical_augment

    config = ClassifierConfig(data="train", match_synthetic_size=32, match_synthetic_probability=0.25)
    assert classical_augment(config, "baseline") is None
    assert classical_augment(config, "classical").resample_size == 0
    for arm in ("synthetic", "classical+synthetic"):
        augment = classical_augment(config, arm)
        assert (augment.resample_size, augment.resample_probability) == (32, 0.25)
    assert classical_augment(config, "classical+synthetic").rotate90
    assert not classical_augment(config, "synthetic").rotate90
    assert classical_augment(config.replace(match_synthetic_size=0), "synthetic") is None
    from cellgen.config import ConfigError

    with pytest.raises(ConfigError, match="match_synthetic_size: 128 must be below image_size 128"):
        config.replace(match_synthetic_size=128).validate()
