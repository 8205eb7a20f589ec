"""Training a Vanilla-GAN run: the GAN stage of the shared training loop (:mod:`cellgen.training`).

:func:`resolve_config` turns a :class:`~cellgen.config.RunRequest` into a config (a preset and
overrides; the saved config on resume; the base run's architecture when fine-tuning) and
:func:`train` runs it, writing the run directory:

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/     both networks, both optimizers, dropout seeds, ADA's p (``--resume``)
    RUN/models/generator-epoch-NNNN.keras, discriminator-epoch-NNNN.keras   every save_every epochs
    RUN/samples/epoch-NNNN.png      grids from a fixed latent batch (epoch-0000: before training)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json (and freezed.json when fine-tuning)

Example:
    >>> config = load_config(VanillaGANConfig, "gan_fast", {"data": "pbc128/train", "out": "runs/g"})  # doctest: +SKIP
    >>> run = train(config)                                                                            # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cellgen.config import ConfigError, RunRequest
from cellgen.finetune import FinetuneRules, resolve_run_config
from cellgen.gan.config import ARCHITECTURE_FIELDS, VanillaGANConfig
from cellgen.runs import RunDir
from cellgen.training import Built, TrainingStage, reader_options, run_training, training_reader


def _finetune_rules() -> FinetuneRules:
    from cellgen.gan.sampling import load_gan_config, resolve_epoch

    return FinetuneRules(fixed_fields=ARCHITECTURE_FIELDS,
                         resume_fixed=("freeze_d_layers", "freeze_d_side", "freeze_g_batchnorm"),
                         load_base_config=load_gan_config, resolve_epoch=resolve_epoch)


def resolve_config(request: RunRequest) -> VanillaGANConfig:
    """The run's config for a ``train_vanilla_gan.py`` request.

    New, fine-tuning (``request.finetune_from``) and resumed runs as in
    :func:`cellgen.finetune.resolve_run_config` (the architecture comes from the base run
    when fine-tuning; a resumed run also keeps its FreezeD settings).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    config = resolve_run_config(VanillaGANConfig, request, _finetune_rules())
    if not config.finetune_from and (config.freeze_d_layers or config.freeze_g_batchnorm):
        raise ConfigError("freeze_d_layers / freeze_g_batchnorm only apply when fine-tuning: pass "
                          "--finetune-from RUN[/EPOCH] (e.g. with --config nz2023_gan_finetune)")
    return config


class GANStage(TrainingStage):
    """What the Vanilla-GAN and the AC-GAN stages share: the shuffled reader of full batches,
    the two Adam optimizers, the DiffAugment/ADA options and state, and the kept networks.

    Subclasses set :attr:`networks` (model kind -> network kept under ``models/``) and
    :attr:`model` (the training model) in :meth:`build`.
    """

    initial_grid = True
    with_labels = False

    def __init__(self, config):
        super().__init__(config)
        self.networks: dict[str, object] = {}
        self.model = None

    def class_filter(self) -> list[str] | None:
        return None

    def make_readers(self):
        config = self.config
        reader = training_reader(config.data, config.batch_size, class_filter=self.class_filter(),
                                 **reader_options(config))
        return reader, None

    def train_dataset(self, reader, start_epoch: int):
        return reader.as_tf_dataset(start_epoch=start_epoch, with_labels=self.with_labels)

    def make_optimizers(self):
        """The generator's and the discriminator's Adam (wrapped for fp16 loss scaling)."""
        import keras

        from cellgen.precision import wrap_optimizer

        config = self.config
        return (wrap_optimizer(keras.optimizers.Adam(config.g_learning_rate, beta_1=config.g_beta_1)),
                wrap_optimizer(keras.optimizers.Adam(config.d_learning_rate, beta_1=config.d_beta_1)))

    def model_options(self) -> dict:
        """Keyword arguments of the training model: noise seed, DiffAugment policy and ADA."""
        config = self.config
        return {"noise_seed": config.seed, "augment": tuple(config.augment),
                "ada_target": config.ada_target if config.ada else None, "ada_kimg": config.ada_kimg}

    def make_built(self, model, g_optimizer, d_optimizer, parameters: dict) -> Built:
        """The :class:`Built` of a GAN: both networks and optimizers checkpointed."""
        config = self.config
        self.model = model
        kinds = list(self.networks)
        return Built(model, {kinds[0]: self.networks[kinds[0]], kinds[1]: self.networks[kinds[1]],
                             "g_optimizer": g_optimizer, "d_optimizer": d_optimizer},
                     learning_rates=[(g_optimizer, config.g_learning_rate), (d_optimizer, config.d_learning_rate)],
                     parameters=parameters,
                     optimizer_labels={"g_optimizer": "generator", "d_optimizer": "discriminator"})

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        # ADA's probability is no network weight: it comes back from the checkpoint's state.
        self.model.restore_augmentation_state(restored)
        if self.model.ada is not None:
            run.log(f"ada: p = {self.model.ada.value():.4f} at epoch {initial_epoch}")

    def checkpoint_state(self) -> dict:
        return self.model.augmentation_state()

    def save_models(self, run: RunDir, epoch: int) -> None:
        for kind, model in self.networks.items():
            run.save_model(model, kind, epoch)

    def saved_epochs(self, run: RunDir) -> list[int]:
        first, *others = self.networks
        return run.saved_epochs(first, together_with=tuple(others))

    def summary(self, run: RunDir) -> dict:
        config = self.config
        return {"augment": list(config.augment),
                "ada": {"target": config.ada_target, "kimg": config.ada_kimg, "p": self.model.ada.value()}
                if self.model.ada is not None else None}


class VanillaGANStage(GANStage):
    """The Vanilla-GAN (and FreezeD fine-tune) stage of the shared loop."""

    name = "vanilla_gan"
    history_title = "Vanilla-GAN losses; d_real = mean D(x), d_fake = mean D(G(z))"

    def class_filter(self) -> list[str] | None:
        return [self.config.class_name] if self.config.class_name else None

    def run_classes(self, reader) -> list[str]:
        return [self.config.class_name] if self.config.class_name else list(reader.classes)

    def build(self, run: RunDir, from_checkpoint: bool) -> Built:
        from cellgen.gan.freeze import apply_freezed
        from cellgen.gan.networks import build_gan_networks
        from cellgen.gan.sampling import load_gan_models
        from cellgen.gan.vanilla import VanillaGAN

        config = self.config
        self.freeze_summary = None
        generator, discriminator = build_gan_networks(config)
        if config.finetune_from:
            # A resumed fine-tuning run restores its own checkpoint: the base run is only read when starting.
            if not from_checkpoint:
                base_generator, base_discriminator, _ = load_gan_models(config.finetune_from,
                                                                        config.finetune_epoch, rebuild=False)
                generator.set_weights(base_generator.get_weights())
                discriminator.set_weights(base_discriminator.get_weights())
                del base_generator, base_discriminator
            # Freezing decides which variables the optimizers own, so it precedes building them.
            self.freeze_summary = apply_freezed(generator, discriminator, config.freeze_d_layers,
                                                config.freeze_d_side, config.freeze_g_batchnorm)
            self.freeze_summary.update(base_run=str(Path(config.finetune_from).resolve()),
                                       base_epoch=config.finetune_epoch)
            run.write_metrics("freezed", self.freeze_summary)
        g_optimizer, d_optimizer = self.make_optimizers()
        gan = VanillaGAN(generator, discriminator, config.latent_dim, d_steps=config.d_steps,
                         g_steps=config.g_steps, real_label=config.real_label, fake_label=config.fake_label,
                         **self.model_options())
        gan.compile(g_optimizer=g_optimizer, d_optimizer=d_optimizer, jit_compile=config.jit_compile)
        # Slots exist before restoring, so the checkpoint's optimizer state has somewhere to go.
        gan.build_optimizers()
        self.generator, self.discriminator = generator, discriminator
        self.networks = {"generator": generator, "discriminator": discriminator}
        return self.make_built(gan, g_optimizer, d_optimizer,
                               {"generator": generator.count_params(), "discriminator": discriminator.count_params()})

    def before_fit(self, run: RunDir, initial_epoch: int, restored) -> None:
        from cellgen.gan.vanilla import fixed_latents

        super().before_fit(run, initial_epoch, restored)
        self.latents = fixed_latents(self.config.sample_count, self.config.latent_dim, self.config.seed + 1)

    def write_grid(self, run: RunDir, name: str, epoch: int) -> None:
        from cellgen.gan.vanilla import generate_images
        from cellgen.plots import save_image_grid

        images = generate_images(self.generator, self.latents)
        columns = max(1, int(np.ceil(np.sqrt(len(images)))))
        save_image_grid(images, run.samples / f"{name}.png", columns=columns, scale=max(1, 128 // images.shape[1]))

    def summary(self, run: RunDir) -> dict:
        return {"freezed": self.freeze_summary, **super().summary(run)}


def train(config: VanillaGANConfig, resume: bool = False, verbose: int = 1, strategy=None) -> RunDir:
    """Trains (or resumes, or fine-tunes with FreezeD) a Vanilla-GAN from a resolved config
    (:func:`resolve_config`) and writes its run directory; arguments and errors as
    :func:`cellgen.training.run_training`."""
    return run_training(VanillaGANStage(config), resume=resume, verbose=verbose, strategy=strategy)
