"""Fréchet Inception Distance (Heusel et al. 2017) with a careful matrix square root.

FID fits a Gaussian to each feature set and measures the Fréchet (2-Wasserstein)
distance between the two Gaussians (Heusel et al. 2017, eq. 6; N&Z section 3.13)::

    FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2))

The usual implementation takes ``scipy.linalg.sqrtm`` of the non-symmetric
product ``S_1 S_2`` and throws away the imaginary part that rounding leaves.
Here the trace is computed from a symmetric matrix with the same eigenvalues,
``A = S_1^(1/2) S_2 S_1^(1/2)``: ``Tr (S_1 S_2)^(1/2) = sum_i sqrt(lambda_i(A))``.
A negative eigenvalue of ``A`` is exactly where the imaginary part comes from
(its square root is imaginary), so the rule is the same: eigenvalues that are
negative by rounding error (a tiny imaginary part) are set to zero, and a large
negative one raises :class:`MetricError` instead of returning a wrong number.

FID is biased in the number of samples N (Chong & Forsyth 2020): its expected
value falls roughly like ``FID_inf + k / N``, so FIDs are only comparable at the
same N. :func:`fid_infinity` extrapolates to N -> infinity.

Example:
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(5000, 4)), rng.normal(1.0, 1.0, size=(5000, 4))
    >>> round(fid_from_features(a, a), 6)
    0.0
    >>> 3.8 < fid_from_features(a, b) < 4.2   # |mu_1 - mu_2|^2 = 4
    True
"""

from __future__ import annotations

import numpy as np

from cellgen.evaluate.errors import EvaluationError, MetricError

# Relative size (to the largest eigenvalue) of a negative eigenvalue that is put down to rounding.
EIGENVALUE_TOLERANCE = 1e-6
# Largest imaginary part of Tr (S_1 S_2)^(1/2), relative to its real part, that is discarded.
IMAGINARY_TOLERANCE = 1e-3


def check_features(features: np.ndarray, name: str = "features", minimum: int = 2) -> np.ndarray:
    """Validates a (N, D) feature array and returns it as float64.

    Raises:
        EvaluationError: wrong rank, too few rows, or non-finite values.
    """
    array = np.asarray(features)
    if array.ndim != 2:
        raise EvaluationError(f"{name}: expected a (N, D) feature array, got shape {array.shape}")
    if array.shape[0] < minimum:
        raise EvaluationError(f"{name}: needs at least {minimum} samples, got {array.shape[0]}")
    array = array.astype(np.float64, copy=False)
    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.all(np.isfinite(array), axis=1)))
        raise EvaluationError(f"{name}: {bad} feature vector(s) contain NaN or inf "
                              "(broken images or a diverged extractor)")
    return array


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (unbiased, N - 1) of a (N, D) feature array, in float64."""
    features = check_features(features)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _symmetric_sqrt(matrix: np.ndarray, name: str) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2.0)
    scale = max(float(np.max(np.abs(eigenvalues))), np.finfo(np.float64).tiny)
    if eigenvalues.min() < -EIGENVALUE_TOLERANCE * scale:
        raise MetricError(f"{name} is not a covariance matrix: eigenvalue {eigenvalues.min():.3g} "
                          f"is negative (largest {scale:.3g})")
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``Tr (sigma1 sigma2)^(1/2)`` for two covariance matrices (see the module docstring).

    Raises:
        MetricError: an input is not positive semi-definite, or the square root has an
            imaginary part larger than ``IMAGINARY_TOLERANCE`` times its real part.
    """
    sigma1 = np.asarray(sigma1, dtype=np.float64)
    sigma2 = np.asarray(sigma2, dtype=np.float64)
    if sigma1.shape != sigma2.shape or sigma1.ndim != 2 or sigma1.shape[0] != sigma1.shape[1]:
        raise EvaluationError(f"covariances must be square and of one shape, got {sigma1.shape} and {sigma2.shape}")
    if not (np.all(np.isfinite(sigma1)) and np.all(np.isfinite(sigma2))):
        raise MetricError("a covariance matrix contains NaN or inf")
    root1 = _symmetric_sqrt(sigma1, "sigma1")
    middle = root1 @ sigma2 @ root1
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2.0)
    real_part = float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())
    imaginary_part = float(np.sqrt(np.clip(-eigenvalues, 0.0, None)).sum())
    if imaginary_part > IMAGINARY_TOLERANCE * max(real_part, 1.0):
        raise MetricError(f"matrix square root has a large imaginary part ({imaginary_part:.4g} vs real "
                          f"{real_part:.4g}): sigma2 is not positive semi-definite or the statistics are broken")
    return real_part


def frechet_distance(mean1: np.ndarray, sigma1: np.ndarray, mean2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mean1, sigma1) and N(mean2, sigma2) (Heusel et al. 2017, eq. 6).

    Args:
        mean1, sigma1: mean (D,) and covariance (D, D) of the first set (e.g. real features).
        mean2, sigma2: the same for the second set.

    Returns:
        The distance (>= 0 up to rounding; tiny negative values are clipped to 0).
    """
    mean1 = np.asarray(mean1, dtype=np.float64)
    mean2 = np.asarray(mean2, dtype=np.float64)
    if mean1.shape != mean2.shape or mean1.ndim != 1 or np.shape(sigma1) != (mean1.size, mean1.size):
        raise EvaluationError(f"statistics do not match: means {mean1.shape} and {mean2.shape}, "
                              f"covariance {np.shape(sigma1)}")
    difference = mean1 - mean2
    value = (difference @ difference + np.trace(sigma1) + np.trace(sigma2)
             - 2.0 * trace_sqrt_product(sigma1, sigma2))
    return float(max(value, 0.0))


def _fid_low_rank(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID through the feature matrices, for fewer samples than dimensions.

    With centred, scaled feature matrices ``X_i`` (``S_i = X_i^T X_i``), the eigenvalues of
    ``S_1 S_2`` are the squared singular values of ``X_1 X_2^T``, so
    ``Tr (S_1 S_2)^(1/2)`` is its nuclear norm: an SVD of an (N1, N2) matrix instead of
    eigendecompositions of (D, D) ones, and singular values are never imaginary.
    """
    mean1, mean2 = features1.mean(axis=0), features2.mean(axis=0)
    scaled1 = (features1 - mean1) / np.sqrt(len(features1) - 1)
    scaled2 = (features2 - mean2) / np.sqrt(len(features2) - 1)
    nuclear_norm = np.linalg.svd(scaled1 @ scaled2.T, compute_uv=False).sum()
    difference = mean1 - mean2
    value = difference @ difference + np.sum(scaled1 ** 2) + np.sum(scaled2 ** 2) - 2.0 * nuclear_norm
    return float(max(value, 0.0))


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two (N, D) feature sets.

    With fewer samples than feature dimensions (e.g. a few hundred images of a rare
    class against 2048 Inception features) the covariances are singular and the
    exact low-rank route (:func:`_fid_low_rank`) is used; otherwise the statistics
    go through :func:`frechet_distance`.

    Example:
        >>> x = np.random.default_rng(1).normal(size=(100, 3))
        >>> fid_from_features(x, x)
        0.0
    """
    features1 = check_features(features1, "first feature set")
    features2 = check_features(features2, "second feature set")
    if features1.shape[1] != features2.shape[1]:
        raise EvaluationError(f"feature sets differ in dimension: {features1.shape[1]} vs {features2.shape[1]}")
    if min(len(features1), len(features2)) < features1.shape[1]:
        return _fid_low_rank(features1, features2)
    mean1, sigma1 = feature_statistics(features1)
    mean2, sigma2 = feature_statistics(features2)
    return frechet_distance(mean1, sigma1, mean2, sigma2)


def fid_infinity(real_features: np.ndarray, generated_features: np.ndarray, points: int = 8,
                 smallest: int | None = None, seed: int = 0) -> dict[str, float]:
    """FID extrapolated to infinitely many generated samples (Chong & Forsyth 2020, "FID_inf").

    FID is computed with the full real set against ``points`` random subsets of the
    generated features of sizes from ``smallest`` to N, and the line
    ``FID_N = FID_inf + slope / N`` is fitted by least squares. Only the generated set's
    bias is removed; the real statistics are the fixed reference (use many real images).

    Returns:
        ``{"fid_infinity": intercept, "slope": slope, "sizes": [...], "values": [...]}``.
    """
    generated_features = check_features(generated_features, "generated features")
    real_features = check_features(real_features, "real features")
    count = generated_features.shape[0]
    smallest = smallest or max(2, count // 5)
    if points < 2 or smallest >= count:
        raise EvaluationError(f"fid_infinity needs >= 2 subset sizes below N={count} (smallest={smallest})")
    mean_real, sigma_real = feature_statistics(real_features)
    rng = np.random.default_rng(seed)
    sizes = np.unique(np.linspace(smallest, count, points).astype(int))
    values = []
    for size in sizes:
        subset = generated_features[rng.choice(count, size=size, replace=False)]
        mean, sigma = feature_statistics(subset)
        values.append(frechet_distance(mean_real, sigma_real, mean, sigma))
    design = np.stack([np.ones(len(sizes)), 1.0 / sizes], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, np.asarray(values), rcond=None)
    return {"fid_infinity": float(intercept), "slope": float(slope), "sizes": sizes.tolist(),
            "values": [float(value) for value in values]}
