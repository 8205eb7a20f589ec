"""Denoising diffusion (Nilsson & Zettergren 2023): DDIM with a sigmoid schedule, R2U-Net blocks,
attention gates and EMA sampling, per-class fine-tuning, and the discrete DDPM of Matos (2025).

Modules: ``config`` (DiffusionConfig, run kind ``ddim``), ``schedules`` (noise schedules and their
plot), ``blocks`` and ``unet`` (the network), ``solvers`` (DDIM / DDPM reverse processes),
``ddim`` (DiffusionModel), ``train_lib`` (train_ddim.py), ``sampling`` (saved models and the
generate.py sampler).

Example:
    >>> from cellgen.diffusion import DiffusionConfig, DiffusionModel
    >>> model = DiffusionModel(DiffusionConfig(image_size=32, depth=3, base_width=8))
    >>> images = model.generate(4, steps=20, eta=0.0, seed=0)      # doctest: +SKIP
"""

from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.ddim import DiffusionModel, apply_contrast, make_optimizer
from cellgen.diffusion.schedules import DiscreteSchedule, NoiseSchedule, make_schedule, plot_schedules

__all__ = ["DiffusionConfig", "DiffusionModel", "DiscreteSchedule", "NoiseSchedule", "apply_contrast",
           "make_optimizer", "make_schedule", "plot_schedules"]
