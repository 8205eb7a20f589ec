"""Shared pieces of the conditional-DDIM tests (tests/test_diffusion_conditional.py, test_diffusion_attributes.py)."""

from __future__ import annotations

import numpy as np

from cellgen.diffusion.config import DiffusionConfig
from cellgen.diffusion.ddim import DiffusionModel, make_optimizer


def random_images(count, size=16, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


def compiled_model(fields: dict, **changes) -> DiffusionModel:
    """A compiled DiffusionModel of ``fields`` with ``changes`` on top."""
    config = DiffusionConfig(**{**fields, **changes})
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    return model


def make_conditions_matter(model, seed=5):
    """Random FiLM projections and output convolution (both start at zero), copied to the EMA network."""
    rng = np.random.default_rng(seed)
    for layer in model.network.layers:
        if layer.name.endswith("_film_dense") or layer.name == "output_conv":
            layer.kernel.assign(rng.normal(0, 0.3, layer.kernel.shape).astype(np.float32))
    model.update_ema(decay=0.0)
