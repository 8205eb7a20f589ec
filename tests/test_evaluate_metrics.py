"""FID, KID, precision/recall/density/coverage and the memorisation statistics on point clouds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg

from cellgen.evaluate.errors import EvaluationError, MetricError
from cellgen.evaluate.fid import (feature_statistics, fid_from_features, fid_infinity, frechet_distance,
                                  trace_sqrt_product)
from cellgen.evaluate.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel
from cellgen.evaluate.memorization import memorization_statistics, nearest_neighbours
from cellgen.evaluate.prdc import kth_neighbour_distances, precision_recall_density_coverage


def random_covariance(rng, dimension, rank=None):
    factor = rng.normal(size=(dimension, rank or dimension))
    return factor @ factor.T / dimension + (0.0 if rank else 0.1) * np.eye(dimension)


# FID ---------------------------------------------------------------------------


@pytest.mark.parametrize("count,dimension", [(500, 8), (40, 64)])  # covariance route and low-rank route
def test_fid_of_a_feature_set_with_itself_is_zero(count, dimension):
    features = np.random.default_rng(0).normal(size=(count, dimension))
    assert fid_from_features(features, features) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_gaussian_samples_matches_the_closed_form():
    rng = np.random.default_rng(1)
    mean1, mean2 = np.zeros(4), np.array([1.0, -0.5, 0.0, 2.0])
    std1, std2 = np.array([1.0, 2.0, 0.5, 1.0]), np.array([1.5, 1.0, 0.5, 3.0])
    # Diagonal covariances commute: FID = |mu1 - mu2|^2 + sum (s1 - s2)^2.
    closed_form = np.sum((mean1 - mean2) ** 2) + np.sum((std1 - std2) ** 2)
    samples1 = mean1 + std1 * rng.normal(size=(40_000, 4))
    samples2 = mean2 + std2 * rng.normal(size=(40_000, 4))
    assert fid_from_features(samples1, samples2) == pytest.approx(closed_form, rel=0.02)
    # with the exact parameters the distance is exact
    assert frechet_distance(mean1, np.diag(std1 ** 2), mean2, np.diag(std2 ** 2)) == pytest.approx(closed_form,
                                                                                                     rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    rng = np.random.default_rng(2)
    sigma1, sigma2 = random_covariance(rng, 12), random_covariance(rng, 12)
    mean1, mean2 = rng.normal(size=12), rng.normal(size=12)
    reference = (np.sum((mean1 - mean2) ** 2) + np.trace(sigma1) + np.trace(sigma2)
                 - 2 * np.trace(scipy.linalg.sqrtm(sigma1 @ sigma2)).real)
    assert frechet_distance(mean1, sigma1, mean2, sigma2) == pytest.approx(reference, rel=1e-9)


def test_low_rank_route_agrees_with_the_covariance_route():
    rng = np.random.default_rng(3)
    features1 = rng.normal(size=(60, 128))
    features2 = 1.3 * rng.normal(size=(45, 128)) + 0.2
    low_rank = fid_from_features(features1, features2)  # 45 < 128 samples: nuclear-norm route
    full = frechet_distance(*feature_statistics(features1), *feature_statistics(features2))
    assert low_rank == pytest.approx(full, rel=1e-6)
    assert low_rank > 10


def test_tiny_imaginary_part_is_discarded_and_a_large_one_fails():
    rng = np.random.default_rng(4)
    sigma1 = random_covariance(rng, 10)
    # rank-deficient covariance: rounding gives eigenvalues like -1e-16 (a tiny imaginary root)
    singular = random_covariance(rng, 10, rank=3)
    eigenvalues = np.linalg.eigvalsh(singular)
    nudged = singular - 1e-12 * np.eye(10) * np.abs(eigenvalues).max()
    value = trace_sqrt_product(sigma1, nudged)
    assert value == pytest.approx(np.trace(scipy.linalg.sqrtm(sigma1 @ singular)).real, rel=1e-5)
    # an indefinite "covariance" has a large imaginary square root: refuse to return a number
    indefinite = np.diag([1.0, 1.0, -4.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    with pytest.raises(MetricError, match="imaginary"):
        trace_sqrt_product(np.eye(10), indefinite)
    with pytest.raises(MetricError, match="not a covariance"):
        trace_sqrt_product(indefinite, np.eye(10))


def test_non_finite_features_are_rejected_with_a_message():
    features = np.random.default_rng(5).normal(size=(20, 3))
    broken = features.copy()
    broken[4, 1] = np.nan
    with pytest.raises(EvaluationError, match="1 feature vector"):
        fid_from_features(features, broken)
    with pytest.raises(EvaluationError, match="at least 2"):
        fid_from_features(features[:1], features)


def test_fid_infinity_removes_the_one_over_n_bias():
    rng = np.random.default_rng(6)
    # many real samples: the extrapolation removes the bias of the generated set, not of the real one
    real = rng.normal(size=(40_000, 16))
    generated = rng.normal(size=(2000, 16))  # same distribution: the true FID is 0
    result = fid_infinity(real, generated, points=6)
    assert result["values"][0] > result["values"][-1]  # smaller N, larger FID
    assert result["slope"] > 0
    assert abs(result["fid_infinity"]) < 0.3 * result["values"][-1]


# KID ---------------------------------------------------------------------------


def test_unbiased_mmd_matches_a_brute_force_sum():
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(5, 3)), rng.normal(size=(4, 3)) + 0.5

    def kernel(a, b):
        return (a @ b / 3 + 1) ** 3

    within_x = sum(kernel(x[i], x[j]) for i, j in itertools.permutations(range(5), 2)) / 20
    within_y = sum(kernel(y[i], y[j]) for i, j in itertools.permutations(range(4), 2)) / 12
    between = sum(kernel(a, b) for a in x for b in y) / 20
    assert mmd2_unbiased(x, y) == pytest.approx(within_x + within_y - 2 * between, rel=1e-12)
    assert polynomial_kernel(x, y).shape == (5, 4)


def test_kid_is_zero_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(8)
    real = rng.normal(size=(1000, 16))
    same = rng.normal(size=(1000, 16))
    shifted = rng.normal(size=(1000, 16)) + 0.3
    same_kid = kernel_inception_distance(real, same, subset_size=500, subsets=30, seed=0)
    shifted_kid = kernel_inception_distance(real, shifted, subset_size=500, subsets=30, seed=0)
    assert abs(same_kid["kid"]) < 3 * same_kid["kid_std"] + 1e-3
    assert shifted_kid["kid"] > 0.02
    assert shifted_kid["kid"] > 10 * shifted_kid["kid_std"]
    assert shifted_kid["subset_size"] == 500 and shifted_kid["subsets"] == 30
    capped = kernel_inception_distance(real[:50], shifted, subset_size=1000, subsets=3)
    assert capped["subset_size"] == 50


# Precision, recall, density, coverage -------------------------------------------


def test_kth_neighbour_distance_excludes_the_point_itself():
    points = np.array([[0.0], [1.0], [3.0], [7.0]])
    assert kth_neighbour_distances(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert kth_neighbour_distances(points, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(EvaluationError, match="nearest_k"):
        kth_neighbour_distances(points, 4)


def test_prdc_on_a_hand_computed_example():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])  # k=1 radii: 1, 1, 1, 1
    generated = np.array([[0.5], [10.0], [11.0]])  # k=1 radii: 9.5, 1, 1
    scores = precision_recall_density_coverage(real, generated, nearest_k=1)
    assert scores["precision"] == pytest.approx(1 / 3)  # only 0.5 lies in a real ball
    # real points inside a generated ball: the ball of 0.5 (radius 9.5) holds all four
    assert scores["recall"] == 1.0
    assert scores["density"] == pytest.approx(2 / 3)  # 0.5 lies in the balls of 0 and 1
    assert scores["coverage"] == pytest.approx(0.5)  # the balls of 0 and 1 hold a generated point


def test_prdc_for_matching_shifted_and_collapsed_point_clouds():
    rng = np.random.default_rng(9)
    real = rng.normal(size=(1500, 8))
    identical = precision_recall_density_coverage(real, real)
    assert identical["precision"] == identical["recall"] == identical["coverage"] == 1.0
    same = precision_recall_density_coverage(real, rng.normal(size=(1500, 8)))
    assert same["precision"] > 0.75 and same["recall"] > 0.75
    assert 0.8 < same["density"] < 1.2 and same["coverage"] > 0.9
    far = precision_recall_density_coverage(real, rng.normal(size=(1500, 8)) + 50)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    # mode collapse: realistic samples (precision) but one small mode (recall, coverage)
    collapsed = real[:1] + 0.01 * rng.normal(size=(1500, 8))
    scores = precision_recall_density_coverage(real, collapsed)
    assert scores["precision"] == 1.0
    assert scores["recall"] < 0.02 and scores["coverage"] < 0.02


# Memorisation --------------------------------------------------------------------


def test_nearest_neighbours_matches_brute_force_and_can_exclude_self():
    rng = np.random.default_rng(10)
    reference = rng.normal(size=(300, 5))
    queries = rng.normal(size=(40, 5))
    distances = np.linalg.norm(queries[:, None] - reference[None], axis=-1)
    index, distance = nearest_neighbours(queries, reference)
    assert np.array_equal(index, distances.argmin(axis=1))
    assert np.allclose(distance, distances.min(axis=1), atol=1e-4)
    own = np.arange(0, 300, 7)
    index, distance = nearest_neighbours(reference[own], reference, exclude=own)
    assert not np.any(index == own) and np.all(distance > 0)
    self_distances = np.linalg.norm(reference[own][:, None] - reference[None], axis=-1)
    self_distances[np.arange(len(own)), own] = np.inf
    assert np.array_equal(index, self_distances.argmin(axis=1))


def test_memorisation_flags_copies_and_not_fresh_samples():
    rng = np.random.default_rng(11)
    train = rng.normal(size=(1200, 12))
    copies = train[[5, 17, 400]] + 1e-4
    report = memorization_statistics(copies, train, quantile=0.05)
    assert report["share_below"] == 1.0
    assert sorted(pair[1] for pair in report["closest_pairs"]) == [5, 17, 400]
    assert report["median_ratio"] < 0.01
    fresh = memorization_statistics(rng.normal(size=(1000, 12)), train, quantile=0.05)
    assert fresh["share_below"] < 0.12  # about the quantile when nothing is copied
    assert 0.8 < fresh["median_ratio"] < 1.25
    with pytest.raises(EvaluationError, match="quantile"):
        memorization_statistics(copies, train, quantile=1.5)
