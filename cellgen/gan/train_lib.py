"""Training a Vanilla-GAN run end to end (used by ``train_vanilla_gan.py`` and the tests).

:func:`resolve_config` turns the script's arguments into a config (a preset and
overrides; the saved config on ``--resume``; the base run's architecture when
fine-tuning) and :func:`train` runs it, writing the run directory:

    RUN/config.toml|json, classes.json, environment.json
    RUN/checkpoints/epoch-NNNN/     both networks and both optimizers (``--resume``)
    RUN/models/generator-epoch-NNNN.keras, discriminator-epoch-NNNN.keras   every save_every epochs
    RUN/samples/epoch-NNNN.png      grids from a fixed latent batch (epoch-0000: before training)
    RUN/logs/history.csv, logs/tensorboard/, logs/run.log
    RUN/metrics/loss_curves.png, metrics/train.json (and freezed.json when fine-tuning)

Example:
    >>> config = load_config(VanillaGANConfig, "gan_fast", {"data": "pbc128/train", "out": "runs/g"})  # doctest: +SKIP
    >>> run = train(config)                                                                            # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cellgen.config import ConfigError
from cellgen.finetune import FinetuneRules, resolve_run_config
from cellgen.gan.config import ARCHITECTURE_FIELDS, VanillaGANConfig
from cellgen.runs import RunDir

def _finetune_rules() -> FinetuneRules:
    from cellgen.gan.sampling import load_gan_config, resolve_epoch

    return FinetuneRules(fixed_fields=ARCHITECTURE_FIELDS,
                         resume_fixed=("freeze_d_layers", "freeze_d_side", "freeze_g_batchnorm"),
                         load_base_config=load_gan_config, resolve_epoch=resolve_epoch)


def resolve_config(args: argparse.Namespace) -> VanillaGANConfig:
    """The run's config from parsed ``train_vanilla_gan.py`` arguments.

    New, ``--finetune-from RUN[/EPOCH]`` and ``--resume`` runs as in
    :func:`cellgen.finetune.resolve_run_config` (the architecture comes from the base run
    when fine-tuning; a resumed run also keeps its FreezeD settings).

    Raises:
        ConfigError, RunError: with a message naming the option.
    """
    config = resolve_run_config(VanillaGANConfig, args, _finetune_rules())
    if not config.finetune_from and (config.freeze_d_layers or config.freeze_g_batchnorm):
        raise ConfigError("freeze_d_layers / freeze_g_batchnorm only apply when fine-tuning: pass "
                          "--finetune-from RUN[/EPOCH] (e.g. with --config nz2023_gan_finetune)")
    return config


def train(config: VanillaGANConfig, resume: bool = False, verbose: int = 1) -> RunDir:
    """Trains (or resumes, or fine-tunes) a Vanilla-GAN and writes its run directory.

    Args:
        config: a resolved config (see :func:`resolve_config`).
        resume: continue the run in ``config.out`` from its latest checkpoint.
        verbose: Keras verbosity (1 progress bars, 2 one line per epoch, 0 silent).

    Raises:
        NonFiniteLossError: a loss became NaN/inf; the last good checkpoint is kept.
        DataError, ConfigError, RunError: bad input, with a one-line message.
    """
    from cellgen.cli.common import crop_option, prepare_runtime

    strategy, precision = prepare_runtime(config)

    import keras

    from cellgen.data_reader import DataReader
    from cellgen.gan.freeze import apply_freezed
    from cellgen.gan.networks import build_gan_networks
    from cellgen.gan.sampling import load_gan_models
    from cellgen.gan.vanilla import (GanSnapshots, VanillaGAN, fixed_latents, restore_seed_generator_states,
                                     seed_generator_states)
    from cellgen.plots import plot_history
    from cellgen.precision import wrap_optimizer
    from cellgen.runs import TrainingState, make_callbacks, raise_if_stopped_on_nan, read_history, resume_training

    class_filter = [config.class_name] if config.class_name else None
    # Full batches only: the batch statistics of a 1-image remainder would be meaningless,
    # and a static batch splits evenly over replicas.
    reader = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                        batch_size=config.batch_size, shuffle=True, seed=config.seed, on_error=config.on_error,
                        workers=config.workers, drop_remainder=True, class_filter=class_filter)
    classes = [config.class_name] if config.class_name else reader.classes
    run = RunDir.create(config.out, config, classes, resume=resume)
    run.log(f"vanilla_gan: {reader.num_images} training images ({', '.join(classes)}), precision {precision}, "
            f"{strategy.num_replicas_in_sync} replica(s)")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    freeze_summary = None
    # A resumed fine-tuning run restores its own checkpoint: the base run is only read when starting.
    has_checkpoint = resume and TrainingState(run.checkpoints).latest() is not None
    with strategy.scope():
        generator, discriminator = build_gan_networks(config)
        if config.finetune_from:
            if not has_checkpoint:
                base_generator, base_discriminator, _ = load_gan_models(config.finetune_from,
                                                                        config.finetune_epoch, rebuild=False)
                generator.set_weights(base_generator.get_weights())
                discriminator.set_weights(base_discriminator.get_weights())
                del base_generator, base_discriminator
            # Freezing decides which variables the optimizers own, so it precedes building them.
            freeze_summary = apply_freezed(generator, discriminator, config.freeze_d_layers, config.freeze_d_side,
                                           config.freeze_g_batchnorm)
            freeze_summary.update(base_run=str(Path(config.finetune_from).resolve()),
                                  base_epoch=config.finetune_epoch)
            run.write_metrics("freezed", freeze_summary)
        g_optimizer = wrap_optimizer(keras.optimizers.Adam(config.g_learning_rate, beta_1=config.g_beta_1))
        d_optimizer = wrap_optimizer(keras.optimizers.Adam(config.d_learning_rate, beta_1=config.d_beta_1))
        gan = VanillaGAN(generator, discriminator, config.latent_dim, d_steps=config.d_steps,
                         g_steps=config.g_steps, real_label=config.real_label, fake_label=config.fake_label,
                         noise_seed=config.seed)
        gan.compile(g_optimizer=g_optimizer, d_optimizer=d_optimizer, jit_compile=config.jit_compile)
        # Slots exist before restoring, so the checkpoint's optimizer state has somewhere to go.
        gan.build_optimizers()

    state = TrainingState(run.checkpoints, keep=config.keep_checkpoints, generator=generator,
                          discriminator=discriminator, g_optimizer=g_optimizer, d_optimizer=d_optimizer)
    initial_epoch, previous_seconds, restored = resume_training(
        state, run, resume, config.epochs,
        [(g_optimizer, config.g_learning_rate), (d_optimizer, config.d_learning_rate)])
    if restored is not None:
        restore_seed_generator_states(restored.get("seed_generators", {}), generator, discriminator)

    snapshots = GanSnapshots(run, generator, discriminator, fixed_latents(config.sample_count, config.latent_dim,
                                                                          config.seed + 1),
                             save_every=config.save_every, sample_every=config.sample_every,
                             last_epoch=config.epochs)
    if initial_epoch == 0:
        snapshots.write_grid("epoch-0000")
    fit_started = time.perf_counter()

    def elapsed_seconds() -> float:
        return previous_seconds + time.perf_counter() - fit_started

    callbacks = make_callbacks(run, state, checkpoint_every=config.checkpoint_every, initial_epoch=initial_epoch,
                               extra_state=lambda epoch: {
                                   "train_seconds": elapsed_seconds(),
                                   "seed_generators": seed_generator_states(generator, discriminator)})
    callbacks.append(snapshots)
    if initial_epoch < config.epochs:
        gan.fit(reader.as_tf_dataset(start_epoch=initial_epoch, with_labels=False), steps_per_epoch=len(reader),
                epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, verbose=verbose,
                shuffle=False)  # the reader shuffles (per epoch, seed-deterministic)
    raise_if_stopped_on_nan(callbacks, state)
    session_seconds = time.perf_counter() - fit_started
    epochs_done = max(initial_epoch, config.epochs)

    history_path = run.logs / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    # CSVLogger writes empty val_* columns (there is no validation set): drop them.
    history = {key: values for key, values in history.items() if values and not all(v != v for v in values)}
    if any(key != "epoch" for key in history):
        plot_history(history, run.metrics / "loss_curves.png",
                     title="Vanilla-GAN losses; d_real = mean D(x), d_fake = mean D(G(z))")
    trained_images = (epochs_done - initial_epoch) * len(reader) * config.batch_size
    run.write_metrics("train", {
        "epochs": epochs_done,
        "train_seconds": elapsed_seconds(),
        "images_per_second_this_session": trained_images / session_seconds if trained_images else None,
        "training_images": reader.num_images,
        "steps_per_epoch": len(reader),
        "classes": classes,
        "parameters": {"generator": generator.count_params(), "discriminator": discriminator.count_params()},
        "precision": precision,
        "replicas": strategy.num_replicas_in_sync,
        "optimizer_iterations": {"generator": int(g_optimizer.iterations.numpy()),
                                 "discriminator": int(d_optimizer.iterations.numpy())},
        "saved_epochs": _saved(run),
        "final": {key: values[-1] for key, values in history.items() if key != "epoch" and values},
        "freezed": freeze_summary,
    })
    run.mark_complete(epochs=epochs_done, train_seconds=elapsed_seconds())
    print(f"trained {epochs_done} epochs; run directory: {run.path}")
    return run


def _saved(run: RunDir) -> list[int]:
    from cellgen.gan.sampling import saved_epochs

    return saved_epochs(run)
