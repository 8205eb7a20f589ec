"""Training an AC-GAN run on a Vanilla-GAN backbone: the AC-GAN stage of the shared loop (:mod:`cellgen.training`).

:func:`resolve_config` turns a :class:`~cellgen.config.RunRequest` into a config (a preset and
overrides; the saved config on resume; the image and latent sizes of the backbone run unless
the request sets them) and :func:`train` runs it, writing the run directory::

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/     both AC-GAN networks and optimizers, dropout seeds, ADA's p (resume)
    RUN/models/acgan_generator-epoch-NNNN.keras, acgan_discriminator-epoch-NNNN.keras
    RUN/samples/epoch-NNNN.png      one row per class from fixed latents (epoch-0000: before training)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json

Example:
    >>> config = resolve_config(RunRequest(preset="kc2020_acgan", out="runs/acgan",
    ...                                    overrides={"backbone": "runs/gan", "data": "pbc128/train"}))  # doctest: +SKIP
    >>> run = train(config)                                                                              # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellgen.config import ConfigError, RunRequest, require_fields
from cellgen.finetune import FinetuneRules, is_resume, resolve_run_config
from cellgen.gan.acgan_config import ACGANConfig
from cellgen.gan.train_lib import GANStage
from cellgen.runs import RunDir
from cellgen.training import Built, run_training

# Fields a resumed run keeps from its saved config.
FIXED_ON_RESUME = ("image_size", "latent_dim", "backbone", "backbone_epoch", "freeze_backbone", "head_layers",
                   "head_units", "generator_head_output")
# Fields an AC-GAN takes from its backbone run (unless the request sets them, which must then agree),
# and the options that set them.
BACKBONE_FIELDS = ("image_size", "latent_dim")
BACKBONE_FIELD_OPTIONS = {"image_size": "--size or --set image_size", "latent_dim": "--set latent_dim"}


def check_backbone_compatible(config: ACGANConfig, backbone_config, backbone_path: str) -> None:
    """Raises a one-line ConfigError when the AC-GAN's image or latent size differs from the backbone's."""
    for name in BACKBONE_FIELDS:
        ours, theirs = getattr(config, name), getattr(backbone_config, name)
        if ours != theirs:
            raise ConfigError(f"{name}={ours} differs from the backbone run's {name}={theirs} ({backbone_path}); "
                              f"an AC-GAN keeps its Vanilla-GAN's {name}: leave {name} unset "
                              f"({BACKBONE_FIELD_OPTIONS[name]}) to follow the backbone, or train a new backbone")


def follow_backbone(config: ACGANConfig, backbone_config, explicit=()) -> ACGANConfig:
    """``config`` with the backbone's image and latent sizes, except for the fields in ``explicit``
    (given by the user), which must already agree (ConfigError otherwise)."""
    changes = {name: getattr(backbone_config, name) for name in BACKBONE_FIELDS
               if name not in explicit and getattr(config, name) != getattr(backbone_config, name)}
    if changes:
        print("the AC-GAN follows its backbone run: " + ", ".join(f"{k}={v}" for k, v in changes.items()))
        config = config.replace(**changes)
    check_backbone_compatible(config, backbone_config, config.backbone)
    return config


def load_backbone(config: ACGANConfig):
    """The backbone run, its config (checked against ``config``) and the resolved saved epoch."""
    from cellgen.gan.sampling import load_gan_config, resolve_epoch

    if not config.backbone:
        raise ConfigError("no backbone: pass --backbone VANILLA_GAN_RUN")
    backbone_run = RunDir.open(config.backbone, option="--backbone")
    backbone_config = load_gan_config(backbone_run)
    check_backbone_compatible(config, backbone_config, str(backbone_run.path))
    epoch = resolve_epoch(backbone_run, config.backbone_epoch)
    return backbone_run, backbone_config, epoch


def resolve_config(request: RunRequest) -> ACGANConfig:
    """The run's config for a ``train_acgan.py`` request.

    A new run: defaults, the preset, the overrides, then the backbone run's ``image_size`` and
    ``latent_dim`` unless the request sets them (a different explicit value is an error).
    A resumed run (``request.resume`` with a saved config in ``request.out``): the saved config
    plus the overrides; the architecture and the backbone cannot change.

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    from cellgen.gan.sampling import load_gan_config

    config = resolve_run_config(ACGANConfig, request, FinetuneRules(resume_fixed=FIXED_ON_RESUME))
    require_fields(config, backbone="no backbone: pass --backbone VANILLA_GAN_RUN")
    if not is_resume(request):
        backbone = load_gan_config(RunDir.open(config.backbone, option="--backbone"))
        config = follow_backbone(config, backbone, request.explicit_fields())
    return config


class ACGANStage(GANStage):
    """The AC-GAN stage of the shared loop: heads trained around a (frozen) Vanilla-GAN."""

    name = "acgan"
    history_title = "AC-GAN losses and auxiliary accuracy (real / generated)"
    with_labels = True

    def make_readers(self):
        # The backbone and the data are checked before the run directory exists.
        self.backbone_run, self.backbone_config, self.backbone_epoch = load_backbone(self.config)
        reader, val_reader = super().make_readers()
        if len(reader.classes) < 2:
            from cellgen.data import DataError

            raise DataError(f"{self.config.data}: one class only ({', '.join(reader.classes)}); "
                            "an AC-GAN needs images of at least 2 classes")
        return reader, val_reader

    def log_line(self) -> str:
        reader, config = self.reader, self.config
        return (f"backbone {self.backbone_run.path} epoch {self.backbone_epoch} (image_size {config.image_size} "
                f"and latent_dim {config.latent_dim} taken from the backbone), {reader.num_images} images, "
                f"{len(reader.classes)} classes")

    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        from cellgen.gan.acgan_model import ACGAN
        from cellgen.gan.acgan_networks import (ACGAN_DISCRIMINATOR, ACGAN_GENERATOR, build_acgan_networks,
                                                freeze_backbone_networks)
        from cellgen.gan.networks import build_gan_networks
        from cellgen.gan.sampling import load_gan_models

        config, classes = self.config, self.reader.classes
        if config.freeze_backbone:
            generator, discriminator, _ = load_gan_models(self.backbone_run, self.backbone_epoch)
            freeze_backbone_networks(generator, discriminator)
        else:
            generator, discriminator = build_gan_networks(self.backbone_config)
        acgan_generator, acgan_discriminator = build_acgan_networks(generator, discriminator, len(classes), config)
        g_optimizer, d_optimizer = self.make_optimizers()
        acgan = ACGAN(acgan_generator, acgan_discriminator, config.latent_dim, len(classes), **self.model_options())
        acgan.compile(g_optimizer=g_optimizer, d_optimizer=d_optimizer, jit_compile=config.jit_compile)
        acgan.build_optimizers()
        self.generator = acgan_generator
        self.networks = {ACGAN_GENERATOR: acgan_generator, ACGAN_DISCRIMINATOR: acgan_discriminator}

        def trainable(model) -> int:
            return int(sum(np.prod(variable.shape) for variable in model.trainable_weights))

        return self.make_built(acgan, g_optimizer, d_optimizer, {
            "generator": acgan_generator.count_params(), "generator_trainable": trainable(acgan_generator),
            "discriminator": acgan_discriminator.count_params(),
            "discriminator_trainable": trainable(acgan_discriminator)})

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        from cellgen.gan.vanilla import fixed_latents

        super().before_fit(run, initial_epoch, restored)
        self.latents = fixed_latents(self.config.samples_per_class, self.config.latent_dim, self.config.seed + 1)

    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        from cellgen.gan.acgan_sampling import generate_class_images
        from cellgen.plots import save_image_grid

        classes = list(self.reader.classes)
        columns = len(self.latents)
        latents = np.tile(self.latents, (len(classes), 1))
        labels = np.repeat(np.arange(len(classes)), columns)
        images = generate_class_images(self.generator, latents, labels, len(classes))
        save_image_grid(images, run.samples / f"{name}.png", columns=columns, row_labels=classes,
                        title=f"AC-GAN {name}: one row per class", scale=max(1, 64 // images.shape[1]))

    def summary(self, run: RunDir) -> dict:
        config = self.config
        return {"class_counts": self.reader.class_counts(),
                "backbone": {"run": str(Path(config.backbone).resolve()), "epoch": self.backbone_epoch,
                             "frozen": config.freeze_backbone},
                **super().summary(run)}


def train(config: ACGANConfig, resume: bool = False, verbose: int = 1, strategy=None) -> RunDir:
    """Trains (or resumes) an AC-GAN on its Vanilla-GAN backbone from a resolved config
    (:func:`resolve_config`) and writes its run directory; arguments and errors as
    :func:`cellgen.training.run_training`."""
    return run_training(ACGANStage(config), resume=resume, verbose=verbose, strategy=strategy)
