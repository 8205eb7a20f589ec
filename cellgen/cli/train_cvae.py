"""``train_cvae.py``: train the convolutional (conditional) VAE of Matos (2025), run kind ``cvae``.

Examples:
    python train_cvae.py --config matos2025_cvae28 --data ../shared/data/pbc128/train --out runs/cvae28
    python train_cvae.py --config matos2025_cvae28 --data DIR --out runs/cvae28 --set kl_weight=1 --set latent_dim=32
    python train_cvae.py --out runs/cvae28 --resume --epochs 150      # continue (or extend) a run

The run directory gets the resolved config, classes.json, resumable checkpoints
(encoder, decoder, optimizer), sample grids (one row per class), a reconstruction
grid, logs/history.csv + TensorBoard, a loss-curve PNG and metrics/train.json;
``models/decoder.keras`` is what ``generate.py`` samples from.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

from cellgen.cli.common import guarded

# Fields that fix the shapes of the networks' weights: a resumed run must keep them.
ARCHITECTURE_FIELDS = ("image_size", "latent_dim", "encoder_filters", "kernel_size", "conditional")


def build_parser() -> argparse.ArgumentParser:
    from cellgen.config import add_common_arguments, add_run_arguments

    parser = argparse.ArgumentParser(prog="train_cvae.py", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_common_arguments(parser)
    add_run_arguments(parser)
    return parser


def resolve_config(args: argparse.Namespace):
    """The run's config: the preset and overrides, or on ``--resume`` the saved config plus overrides."""
    from cellgen.config import require_fields, resumable_config
    from cellgen.vae.config import CVAEConfig

    config, _ = resumable_config(CVAEConfig, args, fixed_on_resume=ARCHITECTURE_FIELDS)
    require_fields(config, data="no training data: pass --data DIR (or set data in the config)",
                   out="no run directory: pass --out DIR")
    return config


@guarded
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = resolve_config(args)

    from cellgen.cli.common import crop_option, prepare_runtime

    strategy, precision = prepare_runtime(config)

    import keras
    import numpy as np

    from cellgen.data_reader import DataReader
    from cellgen.plots import plot_history, save_image_grid
    from cellgen.precision import wrap_optimizer
    from cellgen.runs import (RunDir, TrainingState, make_callbacks, raise_if_stopped_on_nan, read_history,
                              read_json, resume_training)
    from cellgen.vae.cvae import CVAE, SampleGridCallback, SaveDecoderCallback
    from cellgen.vae.sampling import DECODER_FILE, ENCODER_FILE, decoder_file

    saved_classes = None
    classes_file = RunDir(config.out) / "classes.json"
    if args.resume and classes_file.is_file():
        saved_classes = list(read_json(classes_file))
    reader = DataReader(config.data, image_size=config.image_size, crop=crop_option(config.crop),
                        batch_size=config.batch_size, shuffle=True, seed=config.seed, classes=saved_classes,
                        on_error=config.on_error, workers=config.workers)
    val_reader = None
    if config.val_data:
        val_reader = DataReader(config.val_data, image_size=config.image_size, crop=crop_option(config.crop),
                                batch_size=config.batch_size, shuffle=False, seed=config.seed,
                                classes=reader.classes, on_error=config.on_error, workers=config.workers,
                                allow_missing_classes=True)
    run = RunDir.create(config.out, config, reader.classes, resume=args.resume)
    run.log(f"cvae: {reader.num_images} training images, {len(reader.classes)} classes, precision {precision}, "
            f"{strategy.num_replicas_in_sync} replica(s)")
    if reader.skipped:
        reader.write_skip_report(run.logs)

    num_classes = len(reader.classes) if config.conditional else 0
    with strategy.scope():
        model = CVAE.from_sizes(config.image_size, config.latent_dim, config.encoder_filters, num_classes,
                                config.kernel_size, kl_weight=config.kl_weight, seed=config.seed)
        optimizer = wrap_optimizer(keras.optimizers.Adam(config.learning_rate, beta_1=config.adam_beta_1))
        # XLA ("auto" picks it on TensorFlow) made this small model 2-4x slower per step on
        # this CPU (bench/bench_cvae.py) and adds seconds of compilation to every run.
        model.compile(optimizer=optimizer, jit_compile=False)
        # Built before restoring so that the checkpoint's slots have somewhere to go.
        optimizer.build(model.trainable_variables)

    state = TrainingState(run.checkpoints, encoder=model.encoder, decoder=model.decoder, optimizer=optimizer)
    initial_epoch, previous_seconds, restored = resume_training(state, run, args.resume, config.epochs,
                                                                [(optimizer, config.learning_rate)])
    if restored is not None and "noise_seed_state" in restored:
        # The reparameterisation noise continues where it stopped, so a resumed run
        # matches an uninterrupted one.
        seed_state = model.noise_seed.state
        seed_state.assign(np.asarray(restored["noise_seed_state"], dtype=seed_state.dtype))

    fit_started = time.perf_counter()

    def elapsed_seconds() -> float:
        return previous_seconds + time.perf_counter() - fit_started

    grid = SampleGridCallback(run.samples, model, reader.classes if config.conditional else None,
                              columns=config.samples_per_class, every=config.sample_every, seed=config.seed,
                              scale=max(1, 64 // config.image_size))
    callbacks = make_callbacks(run, state, checkpoint_every=config.checkpoint_every, initial_epoch=initial_epoch,
                               extra_state=lambda epoch: {
                                   "train_seconds": elapsed_seconds(),
                                   "noise_seed_state": keras.ops.convert_to_numpy(model.noise_seed.state).tolist()})
    callbacks.append(grid)
    if config.save_every:
        callbacks.append(SaveDecoderCallback(model, config.save_every,
                                             lambda epoch: run.models / decoder_file(epoch)))

    fit_options = {}
    if val_reader is not None:
        fit_options = {"validation_data": val_reader.as_tf_dataset(), "validation_steps": len(val_reader)}
    if initial_epoch < config.epochs:
        model.fit(reader.as_tf_dataset(start_epoch=initial_epoch), steps_per_epoch=len(reader),
                  epochs=config.epochs, initial_epoch=initial_epoch, callbacks=callbacks, shuffle=False,
                  verbose=2 if args.quiet else 1, **fit_options)
    raise_if_stopped_on_nan(callbacks, state)
    train_seconds = elapsed_seconds()
    epochs_done = max(initial_epoch, config.epochs)

    model.decoder.save(run.models / DECODER_FILE)
    model.encoder.save(run.models / ENCODER_FILE)
    grid.write("final")
    images, labels = next(iter((val_reader or reader).epoch(0)))
    count = min(len(images), config.samples_per_class)
    reconstruction = model.reconstruct(images[:count], labels[:count])
    save_image_grid(np.concatenate([images[:count], reconstruction]), run.samples / "reconstructions.png",
                    columns=count, row_labels=["real", "reconstructed"], scale=max(1, 64 // config.image_size))
    history_path = run.logs / "history.csv"
    history = read_history(history_path) if history_path.is_file() else {}
    # CSVLogger adds empty val_* columns when there is no validation data: drop them.
    history = {key: values for key, values in history.items() if values and not np.all(np.isnan(values))}
    if any(key != "epoch" for key in history):
        plot_history(history, run.metrics / "loss_curves.png", title="CVAE losses per image")
    final = {key: values[-1] for key, values in history.items() if key != "epoch"}
    trained_images = (epochs_done - initial_epoch) * reader.num_images
    run.write_metrics("train", {
        "epochs": epochs_done,
        "train_seconds": train_seconds,
        "images_per_second_this_session": trained_images / max(1e-9, train_seconds - previous_seconds)
        if trained_images else None,
        "training_images": reader.num_images,
        "classes": reader.classes,
        "parameters": {"encoder": model.encoder.count_params(), "decoder": model.decoder.count_params()},
        "precision": precision,
        "replicas": strategy.num_replicas_in_sync,
        "final": final,
    })
    run.mark_complete(epochs=epochs_done, train_seconds=train_seconds)
    print(f"trained {epochs_done} epochs ({train_seconds:.1f} s); run directory: {run.path}")
    return 0
