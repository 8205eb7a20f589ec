"""One interface to draw images from any trained generator run.

Each generator stage registers a loader in :data:`SAMPLER_LOADERS` under its run
``kind``. A loader takes the run directory and keyword options and returns an
object with this interface (a :class:`Sampler`):

- ``kind``: the run kind;
- ``image_size``: side of the generated images;
- ``classes``: class names it can be conditioned on, or ``None`` (unconditional);
  a model fine-tuned on one class lists that class;
- ``sample(count, seed, class_name=None, batch_size=64) -> np.ndarray``: float32
  images (count, H, W, 3) in [-1, 1], deterministic for a seed; ``class_name`` is one
  of ``classes``.

Class-conditional generators: the AC-GAN, the CVAE and a ``ddim`` run trained with
``conditional = true`` (classifier-free guidance; ``load_sampler(run, guidance=W,
sampler="dpmpp_2m", steps=15)`` chooses the guidance weight and the solver).

``generate.py`` and the classifier and evaluation stages only use this module,
so adding a generator means adding one loader.

Example:
    >>> sampler = load_sampler("runs/ddim-basophil", steps=20)      # doctest: +SKIP
    >>> images = sampler.sample(16, seed=0)                           # doctest: +SKIP
    >>> write_samples(sampler, 100, "synthetic/basophil", seed=1)     # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from cellgen.images import to_uint8, write_rgb
from cellgen.runs import RunDir, RunError

# run kind -> "module:function"; the function is ``load(run: RunDir, **options) -> Sampler``.
SAMPLER_LOADERS: dict[str, str] = {
    "vanilla_gan": "cellgen.gan.sampling:load_sampler",
    "acgan": "cellgen.gan.acgan_sampling:load_acgan_sampler",
    "ddim": "cellgen.diffusion.sampling:load_sampler",
    "cvae": "cellgen.vae.sampling:load_sampler",
}


class Sampler(Protocol):
    kind: str
    image_size: int
    classes: list[str] | None

    def sample(self, count: int, seed: int, class_name: str | None = None,
               batch_size: int = 64) -> np.ndarray:
        ...


def load_sampler(run_path: str | os.PathLike, **options: Any) -> Sampler:
    """Opens a generator run and returns its sampler.

    Args:
        run_path: a run directory written by a generator training script.
        **options: stage options (``epoch`` for a saved epoch, ``steps``/``eta``/``contrast``/
            ``guidance``/``sampler`` for diffusion); a loader raises ``RunError`` naming an option
            it does not take (``None`` values are ignored).

    Raises:
        RunError: not a run directory, or a run kind that cannot generate images.
    """
    run = RunDir.open(run_path)
    kind = run.kind
    if kind not in SAMPLER_LOADERS:
        known = ", ".join(sorted(SAMPLER_LOADERS))
        raise RunError(f"{run.path}: a {kind!r} run cannot generate images (generator kinds: {known})")
    module_name, function_name = SAMPLER_LOADERS[kind].split(":")
    loader = getattr(importlib.import_module(module_name), function_name)
    return loader(run, **options)


def reject_options(kind: str, options: dict[str, Any]) -> None:
    """Raises a one-line error for options a sampler does not use (``None`` values are ignored)."""
    given = sorted(name for name, value in options.items() if value is not None)
    if given:
        raise RunError(f"option(s) {', '.join('--' + name.replace('_', '-') for name in given)} "
                       f"do not apply to {kind} runs")


# Seeds of generated sets: the set ``index`` of a run seed ``seed`` (a class of a balanced set, an
# evaluation repetition) starts at ``seed + SEED_STRIDE * index`` and its batch b uses that + b, so
# sets of fewer than SEED_STRIDE batches never share a batch seed. One rule for generate.py, the
# classifier study and the generator evaluation.
SEED_STRIDE = 100_003


def generated_set_seed(seed: int, index: int) -> int:
    """The first batch seed of generated set ``index`` of run seed ``seed`` (see ``SEED_STRIDE``)."""
    return int(seed) + SEED_STRIDE * int(index)


def write_samples(sampler: Sampler, count: int, out_dir: str | os.PathLike, seed: int = 0,
                  class_name: str | None = None, batch_size: int = 64, prefix: str = "synthetic",
                  progress: bool = True) -> list[Path]:
    """Generates ``count`` images and writes them as PNG files (uint8 RGB) with a progress bar.

    Images are drawn in batches with seeds ``seed, seed + 1, ...`` so that a large
    request does not need all images in memory and remains reproducible.
    """
    from tqdm import tqdm

    if count < 0:
        raise ValueError(f"--n must be >= 0, got {count}")
    if class_name is not None and sampler.classes is not None and class_name not in sampler.classes:
        raise RunError(f"class {class_name!r} is not one of this run's classes: {', '.join(sampler.classes)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    width = max(5, len(str(count)))
    with tqdm(total=count, desc=f"generating {class_name or 'images'}", unit="img", disable=not progress) as bar:
        batch_index = 0
        while len(written) < count:
            size = min(batch_size, count - len(written))
            images = sampler.sample(size, seed=seed + batch_index, class_name=class_name, batch_size=size)
            for image in to_uint8(images):
                path = out_dir / f"{prefix}_{len(written):0{width}d}.png"
                write_rgb(path, image)
                written.append(path)
            bar.update(size)
            batch_index += 1
    return written
