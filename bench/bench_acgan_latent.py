"""AC-GAN and image-to-latent encoder training throughput (images/s) in fp32 and bf16.

The networks are those of the presets: the AC-GAN of configs/kc2020_acgan.toml on the
Vanilla-GAN of configs/kc2020_vanilla_gan.toml (frozen backbone, K&C), and the
encoder trained through that frozen generator, at the benchmark size (``--sizes``;
the discriminator keeps at least 4 x 4 features). A step is the real
``ACGAN.train_step`` (one discriminator and one generator update) or
``LatentEncoderTrainer.train_step`` on an in-memory batch (no JPEG decoding).
The median of the timed steps counts (the first, which traces the graph, is not timed).

Usage:
    python bench/bench_acgan_latent.py                      # 64 px, fp32 and bf16
    python bench/bench_acgan_latent.py --sizes 64 128 --steps 8
Writes bench/results/acgan-latent-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and precision")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def gan_config(size: int):
    from cellgen.config import load_config
    from cellgen.gan.config import VanillaGANConfig

    base = load_config(VanillaGANConfig, "kc2020_vanilla_gan")
    d_layers = max(1, min(base.d_layers, (size // 4).bit_length() - 1))
    return load_config(VanillaGANConfig, "kc2020_vanilla_gan", {"image_size": size, "d_layers": d_layers})


def time_steps(model, dataset, steps: int) -> list[float]:
    iterator = iter(dataset)
    model.make_train_function()
    train_function = model.train_function
    train_function(iterator)  # traces the graph
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        logs = train_function(iterator)
        float(next(iter(logs.values())))  # wait for the step
        times.append(time.perf_counter() - start)
    return times


def bench(size: int, precision: str, batch_size: int, steps: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    from cellgen.config import load_config
    from cellgen.gan.acgan_model import ACGAN
    from cellgen.gan.acgan_networks import build_acgan_networks, freeze_backbone_networks
    from cellgen.gan.acgan_config import ACGANConfig
    from cellgen.gan.networks import build_gan_networks
    from cellgen.latent.networks import build_encoder
    from cellgen.latent.model import LatentEncoderTrainer
    from cellgen.precision import set_precision, wrap_optimizer
    from cellgen.runs import set_seed

    set_precision(precision)
    set_seed(0)
    config = gan_config(size)
    acgan_config = load_config(ACGANConfig, "kc2020_acgan", {"image_size": size, "backbone": "bench"})
    rng = np.random.default_rng(0)
    coarse = rng.uniform(-1, 1, (batch_size, 8, 8, 3)).astype("float32")
    images = coarse.repeat(size // 8, axis=1).repeat(size // 8, axis=2)
    labels = rng.integers(0, 8, batch_size).astype("int32")
    result = {"size": size, "precision": precision, "batch_size": batch_size}

    generator, discriminator = build_gan_networks(config)
    freeze_backbone_networks(generator, discriminator)
    acgan_g, acgan_d = build_acgan_networks(generator, discriminator, 8, acgan_config)
    acgan = ACGAN(acgan_g, acgan_d, acgan_config.latent_dim, 8)
    acgan.compile(g_optimizer=wrap_optimizer(keras.optimizers.Adam(2e-4, beta_1=0.5)),
                  d_optimizer=wrap_optimizer(keras.optimizers.Adam(2e-4, beta_1=0.5)))
    times = time_steps(acgan, tf.data.Dataset.from_tensors((images, labels)).repeat(), steps)
    result["acgan_step_seconds"] = statistics.median(times)
    result["acgan_images_per_second"] = batch_size / statistics.median(times)

    encoder = build_encoder(config)
    trainer = LatentEncoderTrainer(encoder, generator)
    trainer.compile(optimizer=wrap_optimizer(keras.optimizers.Adam(1e-5)))
    times = time_steps(trainer, tf.data.Dataset.from_tensors(images).repeat(), steps)
    result["encoder_step_seconds"] = statistics.median(times)
    result["encoder_images_per_second"] = batch_size / statistics.median(times)
    return result


def main(argv=None) -> int:
    from cellgen.runs import environment_info, write_json

    args = parse_args(argv)
    rows = []
    for size in args.sizes:
        for precision in args.precisions:
            row = bench(size, precision, args.batch_size, args.steps)
            rows.append(row)
            print(f"{size:4d} px {precision:5s}  AC-GAN {row['acgan_images_per_second']:8.1f} img/s   "
                  f"encoder {row['encoder_images_per_second']:8.1f} img/s", flush=True)
    today = _dt.date.today().isoformat()
    out = Path(args.out) if args.out else RESULTS / f"acgan-latent-{today}.json"
    info = environment_info()
    info.pop("command", None)
    write_json(out, {"benchmark": "acgan_latent_throughput", "date": today, "machine": info,
                     "settings": vars(args), "results": rows})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
