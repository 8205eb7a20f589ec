"""Classical augmentation (:class:`Augment`: rotation, zoom, flips, 90-degree turns, resolution
matching) applied per image by the reader."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from cellgen.data.errors import DataError
from cellgen.data.options import _is_real


@dataclass(frozen=True)
class Augment:
    """Classical augmentation (the rotation + zoom baseline of Klang & Carlberg).

    Applied per image after crop and resize, on uint8 pixels, with a random
    generator seeded from (reader seed, epoch, position in the epoch), so an
    epoch is reproducible and oversampled copies of one file differ. Borders
    are filled by reflection (cells lie on a plain background).

    Args:
        rotation_degrees: the angle is drawn uniformly from [-r, r] degrees.
        zoom: scale factor drawn uniformly from [1 - zoom, 1 + zoom] (a float
            in [0, 1)), or from [low, high] given as a pair; > 1 magnifies.
        horizontal_flip: mirror left-right with probability 0.5.
        vertical_flip: mirror top-bottom with probability 0.5.
        rotate90: turn by k x 90 degrees, k uniform in {0, 1, 2, 3}. With ``horizontal_flip``
            every image goes through one of the 8 symmetries of the square (the dihedral
            group D4) with probability 1/8 each: exact pixels, no interpolation (see
            :meth:`dihedral`). A stained cell has no orientation. Non-square images turn by
            0 or 180 degrees only.
        resample_size: with ``resample_probability``, the image is first shrunk to this many
            pixels on its longer side (area averaging) and enlarged back (bicubic, as the reader
            enlarges small images): the detail of a generator that samples at that size. 0: off.
        resample_probability: the chance of that round trip per image.

    Example:
        >>> reader = DataReader("train", image_size=64,
        ...                     augment=Augment(rotation_degrees=180, zoom=0.1,
        ...                                     horizontal_flip=True, vertical_flip=True))
    """

    rotation_degrees: float = 0.0
    zoom: float | tuple[float, float] = 0.0
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rotate90: bool = False
    resample_size: int = 0
    resample_probability: float = 0.0
    zoom_range: tuple[float, float] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not _is_real(self.rotation_degrees) or not 0 <= self.rotation_degrees <= 360:
            raise DataError(f"Augment.rotation_degrees must be in [0, 360], got {self.rotation_degrees!r}")
        if _is_real(self.zoom):
            if not 0 <= self.zoom < 1:
                raise DataError(f"Augment.zoom must be in [0, 1) or a (low, high) pair, got {self.zoom!r}")
            zoom_range = (1.0 - float(self.zoom), 1.0 + float(self.zoom))
        elif (isinstance(self.zoom, (tuple, list)) and len(self.zoom) == 2
              and all(_is_real(value) for value in self.zoom) and 0 < self.zoom[0] <= self.zoom[1]):
            zoom_range = (float(self.zoom[0]), float(self.zoom[1]))
        else:
            raise DataError(f"Augment.zoom must be in [0, 1) or a (low, high) pair with 0 < low <= high, "
                            f"got {self.zoom!r}")
        object.__setattr__(self, "zoom_range", zoom_range)
        if isinstance(self.resample_size, bool) or not isinstance(self.resample_size, (int, np.integer)) \
                or self.resample_size < 0:
            raise DataError(f"Augment.resample_size must be a pixel count >= 0, got {self.resample_size!r}")
        if not _is_real(self.resample_probability) or not 0 <= self.resample_probability <= 1:
            raise DataError(f"Augment.resample_probability must be in [0, 1], got {self.resample_probability!r}")

    @classmethod
    def dihedral(cls, rotation_degrees: float = 0.0, zoom: float | tuple[float, float] = 0.0) -> "Augment":
        """Random flip and 90-degree turn (the 8 symmetries of the square), then rotation and zoom."""
        return cls(rotation_degrees=rotation_degrees, zoom=zoom, horizontal_flip=True, rotate90=True)

    def apply(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Returns an augmented copy of a uint8 (H, W, 3) image.

        Draws 4 numbers from ``rng`` (a fifth, the quarter turns, only with ``rotate90``, and a last
        one only with resampling, so the draws of the other options do not change when they are off).
        """
        flip_h, flip_v, angle_draw, zoom_draw = rng.random(4)
        turns = int(rng.integers(4)) if self.rotate90 else 0
        if self.resample_size and self.resample_probability and rng.random() < self.resample_probability:
            image = self.resample(image, self.resample_size)
        if self.horizontal_flip and flip_h < 0.5:
            image = image[:, ::-1]
        if self.vertical_flip and flip_v < 0.5:
            image = image[::-1]
        if self.rotate90:
            if image.shape[0] != image.shape[1]:
                turns -= turns % 2  # a non-square image keeps its shape: 0 or 180 degrees
            image = np.rot90(image, k=turns)
        angle = (2.0 * angle_draw - 1.0) * self.rotation_degrees
        low, high = self.zoom_range
        scale = low + (high - low) * zoom_draw
        if angle == 0.0 and scale == 1.0:
            return np.ascontiguousarray(image)
        height, width = image.shape[:2]
        matrix = cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle, scale)
        return cv2.warpAffine(np.ascontiguousarray(image), matrix, (width, height),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)

    @staticmethod
    def resample(image: np.ndarray, size: int) -> np.ndarray:
        """``image`` shrunk to ``size`` px on its longer side and enlarged back to its own size: what
        the reader makes of a generated image of that size. Unchanged when it is not larger."""
        height, width = image.shape[:2]
        if max(height, width) <= size:
            return image
        scale = size / max(height, width)
        small = cv2.resize(np.ascontiguousarray(image), (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        return np.clip(cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(image.dtype)
