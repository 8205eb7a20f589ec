"""CVAE (Matos 2025 section 4.1) speed on this machine: training images/s in fp32 and bf16,
with and without XLA, decoder sampling images/s, and a short real training run.

The network is configs/matos2025_cvae28.toml (28 px, encoder 32-64-128, latent 64,
batch 128, conditional on the 8 PBC classes). A training step is the real
``CVAE.train_step`` on an in-memory batch (no JPEG decoding). Rounds alternate
between the settings and the best round counts, because the machine may be shared.
The optional real run trains the preset on ``--data`` (default ../shared/data/pbc128/train,
resized to 28 px) through ``train_cvae.py`` for ``--epochs`` epochs and records the
losses and seconds per epoch.

Usage:
    python bench/bench_cvae.py                         # all of it, about 5 minutes here
    python bench/bench_cvae.py --epochs 0 --rounds 1   # step timings only
Writes bench/results/cvae-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128" / "train"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="matos2025_cvae28")
    parser.add_argument("--steps", type=int, default=15, help="timed training steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sample-images", type=int, default=2000, help="images timed for sampling")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="training data of the real run")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of the real run (0: skip it)")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/cvae-<date>.json)")
    return parser.parse_args(argv)


def build(config, precision: str, jit: bool, num_classes: int):
    import keras

    from cellgen.precision import set_precision
    from cellgen.vae.cvae import CVAE

    keras.backend.clear_session()
    set_precision(precision)
    keras.utils.set_random_seed(0)
    model = CVAE.from_sizes(config.image_size, config.latent_dim, config.encoder_filters, num_classes,
                            config.kernel_size, config.kl_weight, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate), jit_compile=jit)
    return model


def time_training(config, settings, steps: int, rounds: int, num_classes: int = 8) -> list[dict]:
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (config.batch_size, config.image_size, config.image_size, 3)).astype(np.float32)
    labels = rng.integers(0, num_classes, config.batch_size).astype(np.int32)
    best: dict[tuple, dict] = {}
    for _ in range(rounds):
        for precision, jit in settings:
            model = build(config, precision, jit, num_classes)
            started = time.perf_counter()
            model.train_on_batch(images, labels)
            first = time.perf_counter() - started
            model.train_on_batch(images, labels)
            started = time.perf_counter()
            for _ in range(steps):
                model.train_on_batch(images, labels)
            seconds = (time.perf_counter() - started) / steps
            entry = {"precision": precision, "xla": jit, "ms_per_step": 1000 * seconds,
                     "images_per_second": config.batch_size / seconds, "first_step_seconds": first}
            key = (precision, jit)
            if key not in best or entry["ms_per_step"] < best[key]["ms_per_step"]:
                best[key] = entry
    return list(best.values())


def time_sampling(config, count: int, num_classes: int = 8) -> dict:
    from cellgen.vae.sampling import CVAESampler

    model = build(config, "fp32", False, num_classes)
    sampler = CVAESampler(model.decoder, [f"class{index}" for index in range(num_classes)], config.image_size)
    sampler.sample(8, seed=1, batch_size=8)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        sampler.sample(count, seed=0, batch_size=250)
        best = min(best, time.perf_counter() - started)
    return {"images": count, "batch_size": 250, "seconds": best, "images_per_second": count / best}


def real_run(config_name: str, data: str, epochs: int) -> dict:
    import keras

    from cellgen.cli.train_cvae import main
    from cellgen.runs import read_history, read_json

    keras.backend.clear_session()
    keras.mixed_precision.set_global_policy("float32")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "run"
        started = time.perf_counter()
        code = main(["--config", config_name, "--data", data, "--out", str(out), "--epochs", str(epochs),
                     "--quiet", "--set", "sample_every=0"])
        wall = time.perf_counter() - started
        if code != 0:
            raise SystemExit(f"train_cvae.py failed with exit status {code}")
        history = read_history(out / "logs" / "history.csv")
        train = read_json(out / "metrics" / "train.json")
        return {"data": data, "epochs": epochs, "training_images": train["training_images"],
                "wall_seconds": wall, "train_seconds": train["train_seconds"],
                "seconds_per_epoch": train["train_seconds"] / epochs,
                "loss": history["loss"], "reconstruction_loss": history["reconstruction_loss"],
                "kl_loss": history["kl_loss"]}


def main(argv=None) -> int:
    from cellgen.config import load_config
    from cellgen.runs import environment_info, write_json
    from cellgen.vae.config import CVAEConfig

    args = parse_args(argv)
    config = load_config(CVAEConfig, args.config)
    settings = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    result = {"benchmark": "cvae", "config": args.config, "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "machine": environment_info(), "batch_size": config.batch_size, "image_size": config.image_size}
    result["training_steps"] = time_training(config, settings, args.steps, args.rounds)
    result["sampling"] = time_sampling(config, args.sample_images)
    if args.epochs > 0:
        if Path(args.data).is_dir():
            result["real_run"] = real_run(args.config, args.data, args.epochs)
        else:
            result["real_run"] = f"skipped: {args.data} not found"
    out = Path(args.out) if args.out else RESULTS / f"cvae-{_dt.date.today().isoformat()}.json"
    write_json(out, result)

    print(f"CVAE {args.config}: {config.image_size} px, batch {config.batch_size}, "
          f"{result['machine']['cpu']} ({result['machine']['cpu_count']} cores)")
    print(f"{'precision':<10}{'XLA':<6}{'ms/step':>10}{'images/s':>10}{'first step s':>14}")
    for entry in result["training_steps"]:
        print(f"{entry['precision']:<10}{str(entry['xla']):<6}{entry['ms_per_step']:>10.1f}"
              f"{entry['images_per_second']:>10.0f}{entry['first_step_seconds']:>14.1f}")
    sampling = result["sampling"]
    print(f"sampling: {sampling['images_per_second']:.0f} images/s ({sampling['images']} images, batches of 250)")
    run = result.get("real_run")
    if isinstance(run, dict):
        print(f"real run: {run['training_images']} images, {run['epochs']} epochs, "
              f"{run['seconds_per_epoch']:.1f} s/epoch; loss per image "
              + " -> ".join(f"{value:.1f}" for value in run["loss"]))
    elif run:
        print(f"real run {run}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
