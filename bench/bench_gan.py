"""Vanilla-GAN training throughput: images/s at 64 and 128 px in fp32 and bf16, and FLOP/s
as a fraction of a matrix-multiply peak measured in the same process.

The networks are the Klang & Carlberg architecture (configs/kc2020_vanilla_gan.toml:
depth 1024 / 64, 5x5 kernels, transposed convolutions) at the benchmark size, or any
preset with ``--config``. A training step is the real ``VanillaGAN.train_step`` (one
discriminator and one generator update) on an in-memory batch, so the numbers exclude
JPEG decoding (the data reader runs in parallel threads during training).

FLOPs per image and step are counted from the layer shapes (2 per multiply-add,
dense and convolution layers only): the discriminator update runs G forward and D
forward + backward on a real and a fake batch, the generator update runs G forward +
backward and D forward + input-gradient, with a backward pass counted as twice a
forward pass: 4 x G_forward + 8 x D_forward. Peaks are the best of several
4096 x 4096 matrix multiplications in float32 and bfloat16.

The fp32 and bf16 models are built side by side from the same weights and run on the
same batches and noise; their d_loss and g_loss over the first steps and the largest
difference go into the JSON. Timed steps alternate between the precisions and the
median step time counts, so that other processes on a shared machine slow both alike;
the speed-up is the median of the paired step-time ratios.

Usage:
    python bench/bench_gan.py                         # 64 and 128 px, fp32 and bf16
    python bench/bench_gan.py --sizes 64 --steps 10
    python bench/bench_gan.py --config nz2023_gan_base --sizes 64
Writes bench/results/gan-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="kc2020_vanilla_gan", help="preset whose architecture is measured")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6,
                        help="timed steps per precision, alternating between the precisions")
    parser.add_argument("--loss-steps", type=int, default=3,
                        help="first steps (untimed: the first traces the graph) whose losses are compared")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/gan-<date>.json)")
    return parser.parse_args(argv)


def matmul_peak(dtype_name: str, size: int = 4096, repeats: int = 5) -> float:
    """Best FLOP/s of a square matrix multiplication in ``dtype_name``."""
    import tensorflow as tf

    dtype = getattr(tf, dtype_name)
    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    multiply = tf.function(lambda x, y: tf.linalg.matmul(x, y))
    multiply(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        multiply(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def config_for(args, size: int):
    from cellgen.config import load_config
    from cellgen.gan.config import VanillaGANConfig

    base = load_config(VanillaGANConfig, args.config)
    # As many discriminator convolutions as the preset has, but at least 4 x 4 at the end.
    d_layers = max(1, min(base.d_layers, (size // 4).bit_length() - 1))
    overrides = {"image_size": size, "d_layers": d_layers, "batch_size": args.batch_size, "seed": 0}
    overrides.update(dict(item.split("=", 1) for item in args.set))
    return load_config(VanillaGANConfig, args.config, overrides)


def build(config, precision: str):
    import keras

    from cellgen.gan.networks import build_gan_networks
    from cellgen.gan.vanilla import VanillaGAN
    from cellgen.precision import set_precision, wrap_optimizer
    from cellgen.runs import set_seed

    set_precision(precision)
    set_seed(config.seed)  # the same initial weights and dropout seeds in every precision
    generator, discriminator = build_gan_networks(config)
    gan = VanillaGAN(generator, discriminator, config.latent_dim, d_steps=config.d_steps, g_steps=config.g_steps,
                     real_label=config.real_label, fake_label=config.fake_label, noise_seed=config.seed)
    gan.compile(g_optimizer=wrap_optimizer(keras.optimizers.Adam(config.g_learning_rate, beta_1=config.g_beta_1)),
                d_optimizer=wrap_optimizer(keras.optimizers.Adam(config.d_learning_rate, beta_1=config.d_beta_1)),
                jit_compile=config.jit_compile)
    return gan


def batches(config, count: int):
    import numpy as np

    rng = np.random.default_rng(1)
    # Smooth random images (not white noise) so that the discriminator sees image-like input.
    coarse = rng.uniform(-1, 1, size=(count, config.batch_size, 8, 8, 3)).astype("float32")
    repeat = config.image_size // 8
    return coarse.repeat(repeat, axis=2).repeat(repeat, axis=3)


def step_logs(gan, images) -> dict:
    gan.reset_metrics()
    logs = gan.train_on_batch(images, return_dict=True)
    return {key: float(value) for key, value in logs.items()}


def timed_step(gan, images) -> float:
    start = time.perf_counter()
    step_logs(gan, images)
    return time.perf_counter() - start


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras
    import numpy as np

    from cellgen.gan.networks import conv_flops
    from cellgen.runs import environment_info

    load_at_start = os.getloadavg()
    if load_at_start[0] > (os.cpu_count() or 1):
        print(f"warning: load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs; other processes share "
              "the machine, so absolute figures (and the measured peak) are low", flush=True)
    print("measuring matrix-multiply peaks ...", flush=True)
    peaks = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    print(f"  peak fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    results, speedups = [], {}
    for size in args.sizes:
        config = config_for(args, size)
        data = batches(config, max(args.loss_steps, 1) + args.steps)
        keras.backend.clear_session()
        # Both precisions live side by side (a model keeps the dtype policy it was built with), so
        # their steps can alternate: a shared machine's load then slows both alike.
        gans = {precision: build(config, precision) for precision in args.precisions}
        keras.mixed_precision.set_global_policy("float32")
        flops_per_image = 4 * conv_flops(gans[args.precisions[0]].generator) + \
            8 * conv_flops(gans[args.precisions[0]].discriminator)
        # Same weights, batches and noise in every precision: compare the first losses. These
        # steps (the first one traces the graph) also warm up.
        losses = {precision: [step_logs(gan, data[index]) for index in range(max(args.loss_steps, 1))]
                  for precision, gan in gans.items()}
        times: dict[str, list[float]] = {precision: [] for precision in args.precisions}
        for index in range(args.steps):
            order = args.precisions if index % 2 == 0 else list(reversed(args.precisions))
            for precision in order:
                times[precision].append(timed_step(gans[precision], data[args.loss_steps + index]))
        for precision in args.precisions:
            seconds = float(np.median(times[precision]))
            images_per_second = config.batch_size / seconds
            achieved = images_per_second * flops_per_image
            print(f"  {size} px {precision}: {images_per_second:.1f} images/s "
                  f"(step times {', '.join(f'{t:.2f}' for t in times[precision])} s)", flush=True)
            results.append({
                "image_size": size, "precision": precision, "batch_size": config.batch_size,
                "images_per_second": images_per_second, "median_seconds_per_step": seconds,
                "step_seconds": times[precision],
                "flops_per_image_step": flops_per_image, "achieved_flops": achieved,
                "fraction_of_matmul_peak": achieved / peaks[precision],
                "first_losses": losses[precision],
            })
        if "fp32" in gans and "bf16" in gans:
            differences = [abs(a[key] - b[key]) for a, b in zip(losses["fp32"], losses["bf16"])
                           for key in ("d_loss", "g_loss")]
            for result in results[-len(args.precisions):]:
                result["max_loss_difference_bf16_vs_fp32"] = max(differences)
            # Paired ratio: each bf16 step against the fp32 step next to it.
            speedups[str(size)] = float(np.median([a / b for a, b in zip(times["fp32"], times["bf16"])]))
        del gans
    keras.mixed_precision.set_global_policy("float32")
    # A second peak measurement: the machine may have been busier at the start.
    later = {"fp32": matmul_peak("float32"), "bf16": matmul_peak("bfloat16")}
    for precision in peaks:
        peaks[precision] = max(peaks[precision], later[precision])
    for result in results:
        result["fraction_of_matmul_peak"] = result["achieved_flops"] / peaks[result["precision"]]

    print(f"\n{'size':>5} {'precision':>9} {'images/s':>9} {'GFLOP/s':>8} {'% peak':>7} {'max |loss diff|':>16}")
    for r in results:
        print(f"{r['image_size']:>5} {r['precision']:>9} {r['images_per_second']:>9.1f} "
              f"{r['achieved_flops'] / 1e9:>8.0f} {100 * r['fraction_of_matmul_peak']:>6.1f}% "
              f"{r.get('max_loss_difference_bf16_vs_fp32', float('nan')):>16.4f}")
    print(f"peaks: fp32 {peaks['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.0f} GFLOP/s")
    for size, speedup in speedups.items():
        print(f"bf16 / fp32 at {size} px (median of paired steps): {speedup:.2f}x")

    config = config_for(args, args.sizes[0])
    report = {
        "benchmark": "vanilla_gan_training",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": environment_info(),
        "load_average_start": load_at_start,
        "load_average_end": os.getloadavg(),
        "preset": args.config,
        "overrides": args.set,
        "architecture": {key: getattr(config, key) for key in ("depth_g", "depth_d", "kernel_size", "upsampling",
                                                                "start_size", "latent_dim", "dropout")},
        "d_layers_by_size": {str(size): config_for(args, size).d_layers for size in args.sizes},
        "timed_steps": args.steps,
        "matmul_peak_flops": peaks,
        "results": results,
        "bf16_speedup": speedups,
    }
    out = Path(args.out) if args.out else RESULTS / f"gan-{_dt.datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=float) + "\n", encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
