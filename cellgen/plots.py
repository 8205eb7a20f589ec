"""Pictures people look at: image grids, loss curves, confusion matrices, bar charts.

All functions write PNG files with matplotlib's Agg backend (no display needed)
and return the path written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cellgen.images import to_uint8, write_rgb  # noqa: E402


def tile_images(images: np.ndarray, columns: int, padding: int = 2, background: int = 255) -> np.ndarray:
    """Tiles uint8 images (N, H, W, 3) into one array, row-major, with white padding."""
    images = np.asarray(images)
    count, height, width = images.shape[:3]
    rows = max(1, int(np.ceil(count / columns)))
    canvas = np.full((rows * (height + padding) + padding, columns * (width + padding) + padding, 3),
                     background, dtype=np.uint8)
    for index in range(count):
        row, column = divmod(index, columns)
        top = padding + row * (height + padding)
        left = padding + column * (width + padding)
        canvas[top:top + height, left:left + width] = images[index]
    return canvas


def save_image_grid(images: np.ndarray, path: str | os.PathLike, columns: int | None = None,
                    row_labels: Sequence[str] | None = None, title: str | None = None,
                    scale: int = 1) -> Path:
    """Writes a grid of model images (float in [-1, 1], or uint8) as PNG.

    Args:
        images: (N, H, W, 3) images.
        path: PNG file to write.
        columns: images per row (default: about sqrt(N)).
        row_labels: one label per row, drawn at the left (class names of a class grid).
        title: optional title above the grid.
        scale: integer up-scaling of small images (nearest neighbour) for readability.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        images = to_uint8(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
    if columns is None:
        columns = max(1, int(np.ceil(np.sqrt(len(images)))))
    grid = tile_images(images, columns)
    path = Path(path)
    if not row_labels and not title:
        write_rgb(path, grid)
        return path
    height, width = grid.shape[:2]
    label_width = 1.6 if row_labels else 0.0
    dpi = 100
    figure = plt.figure(figsize=(width / dpi + label_width, height / dpi + (0.4 if title else 0.0)), dpi=dpi)
    axis = figure.add_axes([label_width / (width / dpi + label_width), 0, 1 - label_width / (width / dpi + label_width),
                            (height / dpi) / (height / dpi + (0.4 if title else 0.0))])
    axis.imshow(grid)
    axis.set_xticks([])
    if row_labels:
        rows = int(np.ceil(len(images) / columns))
        cell = images.shape[1] + 2
        axis.set_yticks([2 + cell * row + cell / 2 for row in range(rows)])
        axis.set_yticklabels(list(row_labels)[:rows], fontsize=9)
    else:
        axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(False)
    if title:
        figure.suptitle(title, fontsize=10, y=0.995)
    return save_figure(figure, path, dpi=dpi, tight=False)


def save_figure(figure, path: str | os.PathLike, dpi: int = 100, tight: bool = True) -> Path:
    """Writes ``figure`` as PNG (parent folders created), closes it and returns the path.

    ``tight`` runs ``figure.tight_layout()`` first (off for figures whose axes are placed by hand).
    """
    if tight:
        figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi)
    plt.close(figure)
    return path


def _has_finite(values: Sequence) -> bool:
    try:
        return bool(np.isfinite(np.asarray(values, dtype=float)).any())
    except (TypeError, ValueError):
        return False


def plot_history(history: Mapping[str, Sequence[float]], path: str | os.PathLike,
                 keys: Sequence[str] | None = None, title: str = "training curves",
                 x_key: str = "epoch") -> Path:
    """Plots logged metrics (a CSVLogger history) against the epoch, one panel per group.

    Losses go in one panel, everything else in a second, so scales stay readable. A metric
    with no finite value (say ``val_loss`` of a run without validation data, logged as NA)
    is left out rather than listed in the legend with nothing drawn.
    """
    keys = [key for key in (keys or history.keys())
            if key != x_key and len(history.get(key, [])) > 0 and _has_finite(history[key])]
    if not keys:
        raise ValueError("plot_history: nothing to plot")
    x_values = history.get(x_key)
    losses = [key for key in keys if "loss" in key]
    others = [key for key in keys if key not in losses]
    panels = [group for group in (losses, others) if group]
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, group in zip(axes[0], panels):
        for key in group:
            values = np.asarray(history[key], dtype=float)
            xs = np.asarray(x_values, dtype=float) + 1 if x_values is not None else np.arange(1, len(values) + 1)
            axis.plot(xs[:len(values)], values, marker="o" if len(values) < 30 else None, label=key)
        axis.set_xlabel("epoch")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    axes[0][0].set_title(title)
    return save_figure(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | os.PathLike,
                          title: str = "confusion matrix") -> Path:
    """Confusion matrix with the row percentage and the count in each cell (as in the theses).

    Rows are true classes, columns predicted classes.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.9 * len(classes) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            colour = "white" if shares[row, column] > 0.6 else "black"
            axis.text(column, row, f"{100 * shares[row, column]:.1f}%\n{matrix[row, column]}",
                      ha="center", va="center", fontsize=8, color=colour)
    axis.set_xticks(range(len(classes)))
    axis.set_yticks(range(len(classes)))
    axis.set_xticklabels(classes, rotation=45, ha="right")
    axis.set_yticklabels(classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    return save_figure(figure, path)


def plot_grouped_bars(values: Mapping[str, Mapping[str, float]], path: str | os.PathLike,
                      errors: Mapping[str, Mapping[str, float]] | None = None,
                      ylabel: str = "F1", title: str = "") -> Path:
    """Grouped bar chart: ``values[series][group]`` (e.g. arm -> class -> F1)."""
    series = list(values)
    groups = list(dict.fromkeys(group for name in series for group in values[name]))
    width = 0.8 / max(1, len(series))
    figure, axis = plt.subplots(figsize=(max(6, 0.9 * len(groups) * max(1, len(series)) / 2 + 3), 4))
    for index, name in enumerate(series):
        xs = np.arange(len(groups)) + index * width - 0.4 + width / 2
        heights = [values[name].get(group, np.nan) for group in groups]
        yerr = [errors[name].get(group, 0.0) for group in groups] if errors and name in errors else None
        axis.bar(xs, heights, width, yerr=yerr, label=name, capsize=2)
    axis.set_xticks(np.arange(len(groups)))
    axis.set_xticklabels(groups, rotation=30, ha="right")
    axis.set_ylabel(ylabel)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    return save_figure(figure, path)
