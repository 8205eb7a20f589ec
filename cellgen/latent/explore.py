"""Latent-space experiments of Klang & Carlberg (2020), sections 4.6 and 5.3.

- :func:`interpolate_latents`: the n-step linear interpolation of equation (40),
  z^_k = z1 + (z2 - z1) k / n for k = 0..n (n + 1 latents, endpoints included);
- :func:`perturb_latents`: equation (42), z~ + eps with eps ~ N(0, sigma^2 I)
  (K&C used sigma^2 = 0.04);
- reconstruction of real images through the encoder, G(E(x)) (equation 41
  approximated by the trained image-to-latent network).

Example:
    >>> z = interpolate_latents(np.zeros(3), np.ones(3), steps=4)
    >>> z[:, 0].tolist()
    [0.0, 0.25, 0.5, 0.75, 1.0]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

DEFAULT_VARIANCE = 0.04  # K&C section 5.3: sigma^2 = 0.04


def interpolate_latents(z1: np.ndarray, z2: np.ndarray, steps: int) -> np.ndarray:
    """Equation (40): ``steps + 1`` latents from ``z1`` to ``z2`` (both included), float32.

    Raises:
        ValueError: ``steps`` < 1 or the latents differ in shape.
    """
    z1, z2 = np.asarray(z1, dtype=np.float32).ravel(), np.asarray(z2, dtype=np.float32).ravel()
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if z1.shape != z2.shape:
        raise ValueError(f"latents differ in size: {z1.shape[0]} and {z2.shape[0]}")
    fractions = (np.arange(steps + 1, dtype=np.float32) / steps)[:, None]
    latents = z1[None] + (z2 - z1)[None] * fractions
    latents[-1] = z2  # exact endpoint despite rounding
    return latents


def perturb_latents(latent: np.ndarray, count: int, variance: float = DEFAULT_VARIANCE, seed: int = 0) -> np.ndarray:
    """Equation (42): ``count`` copies of ``latent`` plus N(0, variance * I) noise, float32.

    Raises:
        ValueError: negative ``count`` or ``variance``.
    """
    if count < 0:
        raise ValueError(f"--count must be >= 0, got {count}")
    if variance < 0:
        raise ValueError(f"--sigma2 must be >= 0, got {variance}")
    latent = np.asarray(latent, dtype=np.float32).ravel()
    noise = np.random.default_rng(seed).standard_normal((count, latent.size)).astype(np.float32)
    return latent[None] + np.float32(np.sqrt(variance)) * noise


def load_image_files(paths: Sequence[str | os.PathLike], image_size: int, crop: int | float | None = None
                     ) -> np.ndarray:
    """Reads image files as float32 [-1, 1] (N, S, S, 3) the way the DataReader prepares training images.

    Raises:
        ImageReadError: a file is missing or not an image (the message names it).
    """
    import cv2

    from cellgen.images import ImageReadError, from_uint8, read_rgb

    images = []
    for path in paths:
        image = read_rgb(path)
        height, width = image.shape[:2]
        if crop:
            side = int(crop) if crop > 1 else max(1, int(round(crop * min(height, width))))
            if side > min(height, width):
                raise ImageReadError(f"{path}: image is {width}x{height} px, smaller than the {side} px crop")
            top, left = (height - side) // 2, (width - side) // 2
            image = image[top:top + side, left:left + side]
            height = width = side
        if (height, width) != (image_size, image_size):
            # As the DataReader: area averaging to shrink, bicubic to enlarge.
            shrinking = image_size <= height and image_size <= width
            image = cv2.resize(image, (image_size, image_size),
                               interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)
        images.append(image)
    return from_uint8(np.stack(images)) if images else np.zeros((0, image_size, image_size, 3), np.float32)


def save_strip(images: np.ndarray, path: str | os.PathLike, columns: int, row_labels: Sequence[str] | None = None,
               title: str | None = None, individual_dir: str | os.PathLike | None = None,
               prefix: str = "image") -> Path:
    """Writes a grid PNG and, with ``individual_dir``, each image as its own PNG."""
    from cellgen.images import to_uint8, write_rgb
    from cellgen.plots import save_image_grid

    if individual_dir is not None:
        folder = Path(individual_dir)
        folder.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(to_uint8(images)):
            write_rgb(folder / f"{prefix}_{index:04d}.png", image)
    scale = max(1, 64 // images.shape[1])
    return save_image_grid(images, path, columns=columns, row_labels=row_labels, title=title, scale=scale)
