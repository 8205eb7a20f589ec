"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs").

KID is the squared maximum mean discrepancy between the two feature sets with
the cubic polynomial kernel ``k(x, y) = (x . y / D + 1)^3`` (D = feature
dimension), estimated without bias (Bińkowski et al. 2018, eq. 2 with the
kernel of section 4). Unlike FID its expectation does not depend on the number
of samples, so it suits the small sets of rare cell classes; it can be slightly
negative when both sets come from one distribution. Following the paper, the
estimate is averaged over random subsets, whose spread gives a standard
deviation.

Example:
    >>> rng = np.random.default_rng(0)
    >>> same = kernel_inception_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)), subset_size=200)
    >>> abs(same["kid"]) < 0.05
    True
"""

from __future__ import annotations

import numpy as np

from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.fid import check_features


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x y^T / D + coef0) ** degree`` for row-vector sets x (N, D) and y (M, D), as float64.

    The dot products run in the inputs' dtype (float32 halves the cost of the dominant
    matrix product); the power and every later sum are float64.
    """
    return (np.asarray(x @ y.T, dtype=np.float64) / x.shape[1] + coef0) ** degree


def mmd2_unbiased(real: np.ndarray, generated: np.ndarray, degree: int = 3) -> float:
    """Unbiased MMD^2 estimate (Gretton et al. 2012, eq. 3) with the polynomial kernel.

    The within-set sums leave out the diagonal ``k(x_i, x_i)``, which is what removes the bias.
    """
    m, n = real.shape[0], generated.shape[0]
    if m < 2 or n < 2:
        raise EvaluationError(f"MMD needs at least 2 samples per set, got {m} and {n}")
    k_xx = polynomial_kernel(real, real, degree)
    k_yy = polynomial_kernel(generated, generated, degree)
    k_xy = polynomial_kernel(real, generated, degree)
    within_real = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_generated = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_real + within_generated - 2.0 * k_xy.mean())


def kernel_inception_distance(real_features: np.ndarray, generated_features: np.ndarray,
                              subset_size: int = 1000, subsets: int = 100, seed: int = 0,
                              degree: int = 3) -> dict[str, float]:
    """KID averaged over random subsets, with its standard deviation over the subsets.

    Args:
        real_features: (N, D) features of real images.
        generated_features: (M, D) features of generated images.
        subset_size: samples drawn (without replacement) from each set per subset;
            capped at the smaller set (Bińkowski et al. use 1000).
        subsets: number of subsets (100 as in Bińkowski et al.).
        seed: seeds the subset draws.
        degree: polynomial kernel degree (3 in the paper).

    Returns:
        ``{"kid": mean, "kid_std": standard deviation over subsets, "subset_size": s, "subsets": k}``.
    """
    real = check_features(real_features, "real features")
    generated = check_features(generated_features, "generated features")
    if real.shape[1] != generated.shape[1]:
        raise EvaluationError(f"feature sets differ in dimension: {real.shape[1]} vs {generated.shape[1]}")
    if subsets < 1 or subset_size < 2:
        raise EvaluationError(f"KID needs subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    size = min(subset_size, real.shape[0], generated.shape[0])
    # float32 products: rounding errors of ~1e-7 per kernel value average out over the subset sums
    real, generated = real.astype(np.float32), generated.astype(np.float32)
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for index in range(subsets):
        real_subset = real[rng.choice(real.shape[0], size=size, replace=False)]
        generated_subset = generated[rng.choice(generated.shape[0], size=size, replace=False)]
        values[index] = mmd2_unbiased(real_subset, generated_subset, degree)
    return {"kid": float(values.mean()), "kid_std": float(values.std(ddof=1)) if subsets > 1 else 0.0,
            "subset_size": int(size), "subsets": int(subsets)}
