"""Improved precision and recall, density and coverage: fidelity and diversity separately.

A single FID mixes up two failures: images that do not look real (fidelity)
and a generator that covers only part of the real variety (diversity, e.g. the
mode collapse Klang & Carlberg saw in their AC-GAN, section 5.2 and Figure 16).
These four numbers separate them. Each real sample x_i gets a ball of radius
``NND_k(x_i)``, the distance to its k-th nearest real neighbour; the union of
the balls estimates the support of the real distribution.

- precision (Kynkäänniemi et al. 2019, eq. 2): share of generated samples
  inside the real support (realistic images);
- recall (Kynkäänniemi et al. 2019, eq. 2 with the roles swapped): share of
  real samples inside the support of the generated set (k-NN balls of the
  generated samples): how much of the real variety the generator covers;
- density (Naeem et al. 2020, eq. 3): how many real balls contain a generated
  sample on average, divided by k; about 1 when both sets come from one
  distribution, robust to real outliers, can exceed 1;
- coverage (Naeem et al. 2020, eq. 4): share of real samples whose ball holds
  at least one generated sample; low under mode collapse.

A sample lies in a ball when its distance is at most the radius. Naeem et al.
recommend k = 5 for all four (Kynkäänniemi et al. used k = 3).

Example:
    >>> rng = np.random.default_rng(0)
    >>> real = rng.normal(size=(500, 2))
    >>> collapsed = np.repeat(real[:1], 500, axis=0)   # every sample the same image
    >>> scores = precision_recall_density_coverage(real, collapsed)
    >>> scores["precision"], scores["recall"] < 0.05
    (1.0, True)
"""

from __future__ import annotations

import numpy as np

from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.fid import check_features

# Rows per block of the distance computations (bounds memory to CHUNK x N floats).
CHUNK = 2048


def pairwise_distances(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Euclidean distances between the rows of x (N, D) and y (M, D), as float64 (N, M)."""
    squared = (np.einsum("ij,ij->i", x, x)[:, None] + np.einsum("ij,ij->i", y, y)[None, :] - 2.0 * x @ y.T)
    return np.sqrt(np.clip(squared, 0.0, None))


def kth_neighbour_distances(features: np.ndarray, k: int) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (the row itself is not counted)."""
    count = features.shape[0]
    if not 1 <= k < count:
        raise EvaluationError(f"nearest_k must be in [1, {count - 1}] for {count} samples, got {k}")
    radii = np.empty(count)
    for start in range(0, count, CHUNK):
        block = pairwise_distances(features[start:start + CHUNK], features)
        # index 0 of the partition is the row itself (distance 0), so index k is the k-th other row
        radii[start:start + CHUNK] = np.partition(block, k, axis=1)[:, k]
    return radii


def _ball_counts(queries: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each query: how many balls contain it; for each centre: whether any query is in its ball."""
    counts = np.zeros(queries.shape[0], dtype=np.int64)
    covered = np.zeros(centres.shape[0], dtype=bool)
    for start in range(0, queries.shape[0], CHUNK):
        inside = pairwise_distances(queries[start:start + CHUNK], centres) <= radii[None, :]
        counts[start:start + CHUNK] = inside.sum(axis=1)
        covered |= inside.any(axis=0)
    return counts, covered


def precision_recall_density_coverage(real_features: np.ndarray, generated_features: np.ndarray,
                                      nearest_k: int = 5) -> dict[str, float]:
    """The four manifold metrics between real and generated features (see the module docstring).

    Args:
        real_features: (N, D) real features.
        generated_features: (M, D) generated features.
        nearest_k: k of the k-NN radii (5, as recommended by Naeem et al. 2020).

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` as floats.
    """
    real = check_features(real_features, "real features")
    generated = check_features(generated_features, "generated features")
    if real.shape[1] != generated.shape[1]:
        raise EvaluationError(f"feature sets differ in dimension: {real.shape[1]} vs {generated.shape[1]}")
    real_radii = kth_neighbour_distances(real, nearest_k)
    generated_radii = kth_neighbour_distances(generated, nearest_k)
    balls_per_generated, real_covered = _ball_counts(generated, real, real_radii)
    generated_balls_per_real, _ = _ball_counts(real, generated, generated_radii)
    return {
        "precision": float(np.mean(balls_per_generated > 0)),
        "recall": float(np.mean(generated_balls_per_real > 0)),
        "density": float(balls_per_generated.sum() / (nearest_k * generated.shape[0])),
        "coverage": float(np.mean(real_covered)),
    }
