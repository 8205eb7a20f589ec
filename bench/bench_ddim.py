"""DDIM throughput: training and 20-step sampling images/s in fp32 and bf16, FLOP/s against the
same-process convolution peak, and 20-step DDIM against DDPM-500 sampling at 28 px.

The networks are those of the presets (``--preset``, default ``configs/ddim_fast.toml``) at
each ``--sizes`` side; the DDPM comparison uses ``configs/matos2025_ddpm28.toml`` and runs both
samplers with the same network. A training step is the real ``DiffusionModel.train_step``
(inside Keras ``fit``) on an in-memory batch; a sampling run is ``DiffusionModel.generate``.
fp32 and bf16 steps alternate, so a shared machine's load slows both alike; the median step
counts. FLOPs are counted on the traced forward graph (TensorFlow's profiler: convolutions,
matrix products and element-wise arithmetic); a training step is taken as 3 forward passes
(forward + backward), a sampling step as 1. The peak is the best of several large 3x3
convolutions in the same process, measured before and after the models.

Every figure is given twice: per wall-clock second (what a user sees, deflated when other
processes share the CPU), and per CPU second of this process scaled to all cores
(``FLOPs / (process CPU seconds / cores)``), which is what the code achieves when it has the
machine to itself. Both the model and the peak are measured the same two ways.

Usage:
    python bench/bench_ddim.py                         # 32 and 64 px, fp32 and bf16, DDPM at 28 px
    python bench/bench_ddim.py --sizes 64 --steps 10 --preset nz2023_ddim_base
Writes bench/results/ddim-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
CONV_SHAPES = ((32, 32, 128), (16, 64, 128), (64, 16, 256), (32, 32, 64))  # batch, side, channels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ddim_fast")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, default=32, help="training batch")
    parser.add_argument("--sample-batch", type=int, default=64, help="images per sampling run")
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per size and precision")
    parser.add_argument("--ddpm-images", type=int, default=8, help="images of the DDPM-500 / DDIM-20 comparison")
    parser.add_argument("--ddpm-precisions", nargs="+", default=["bf16"])
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def conv_peak(dtype_name: str, repeats: int = 20) -> dict[str, float]:
    """Best FLOP/s of a 3x3 'same' convolution (forward) in ``dtype_name`` over a few shapes,
    per wall-clock second and per CPU second scaled to all cores."""
    import tensorflow as tf

    dtype = tf.as_dtype(dtype_name)
    cores = os.cpu_count() or 1
    best = {"wall": 0.0, "cpu": 0.0}
    convolve = tf.function(lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"))
    for batch, side, channels in CONV_SHAPES:
        x = tf.cast(tf.random.normal((batch, side, side, channels)), dtype)
        w = tf.cast(tf.random.normal((3, 3, channels, channels)), dtype)
        convolve(x, w).numpy()
        flops = 2.0 * batch * side * side * 9 * channels * channels
        for _ in range(repeats):
            wall, cpu = time.perf_counter(), time.process_time()
            convolve(x, w).numpy()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best["wall"] = max(best["wall"], flops / wall)
            if cpu > 0:
                best["cpu"] = max(best["cpu"], flops / (cpu / cores))
    return best


def forward_flops(network, size: int) -> float:
    """FLOPs of one image through ``network`` (TensorFlow profiler on the frozen forward graph)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda images, variances: network([images, variances], training=False))
    concrete = function.get_concrete_function(tf.TensorSpec((1, size, size, 3)), tf.TensorSpec((1, 1, 1, 1)))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    return float(tf.compat.v1.profiler.profile(graph=frozen.graph, options=options).total_float_ops)


def build(config, precision: str):
    import keras

    from cellgen.diffusion.ddim import DiffusionModel, make_optimizer
    from cellgen.precision import set_precision

    set_precision(precision)
    keras.utils.set_random_seed(0)
    model = DiffusionModel(config.replace(precision=precision))
    optimizer = make_optimizer(model.config)
    model.compile(optimizer=optimizer)
    optimizer.build(model.network.trainable_variables)
    keras.mixed_precision.set_global_policy("float32")
    return model


class TrainTimer:
    """Times training steps of a model through ``fit`` (wall-clock and process CPU seconds per step)."""

    def __init__(self, model, batch_size: int):
        import numpy as np
        import tensorflow as tf

        self.model = model
        size = model.config.image_size
        images = np.random.default_rng(0).uniform(-1, 1, (batch_size, size, size, 3)).astype(np.float32)
        self.dataset = tf.data.Dataset.from_tensors(images).repeat()
        self.batch_size = batch_size
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.model.fit(self.dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace + warm-up

    def step(self, count: int = 2) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        self.model.fit(self.dataset, steps_per_epoch=count, epochs=1, verbose=0)
        self.wall.append((time.perf_counter() - wall) / count)
        self.cpu.append((time.process_time() - cpu) / count)

    def images_per_second(self, clock: str) -> float:
        seconds = statistics.median(self.wall if clock == "wall" else self.cpu)
        if clock == "cpu":
            seconds /= os.cpu_count() or 1
        return self.batch_size / seconds


def time_sampling(model, count: int, steps: int, method: str = "ddim", repeats: int = 2) -> dict[str, float]:
    """Images per second of ``generate`` (best of ``repeats``), per wall-clock and per scaled CPU second."""
    model.generate(count, steps=2 if method == "ddim" else None, method=method, seed=0)  # trace, same shapes
    best = {"wall": 0.0, "cpu": 0.0}
    for repeat in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        model.generate(count, steps=steps, method=method, seed=repeat)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        best["wall"] = max(best["wall"], count / wall)
        best["cpu"] = max(best["cpu"], count / (cpu / (os.cpu_count() or 1)))
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    from cellgen.config import load_config
    from cellgen.diffusion.config import DiffusionConfig
    from cellgen.runs import environment_info, write_json

    load_at_start = os.getloadavg()
    if load_at_start[0] > (os.cpu_count() or 1):
        print(f"warning: load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs; other processes share "
              "the machine, so absolute figures (and the measured peak) are low", flush=True)
    print("measuring convolution peaks ...", flush=True)
    peaks = {"fp32": conv_peak("float32"), "bf16": conv_peak("bfloat16")}
    print(f"  peak fp32 {peaks['fp32']['wall'] / 1e9:.0f} GFLOP/s, bf16 {peaks['bf16']['wall'] / 1e9:.0f} GFLOP/s "
          f"(per CPU second x cores: {peaks['fp32']['cpu'] / 1e9:.0f}, {peaks['bf16']['cpu'] / 1e9:.0f})", flush=True)

    results = []
    for size in args.sizes:
        config = load_config(DiffusionConfig, args.preset, [*args.set, f"image_size={size}"])
        models = {precision: build(config, precision) for precision in args.precisions}
        flops = forward_flops(models[args.precisions[0]].network, size)
        timers = {precision: TrainTimer(model, args.batch_size) for precision, model in models.items()}
        for _ in range(max(1, args.steps // 2)):
            for timer in timers.values():  # alternate: load changes hit every precision alike
                timer.step(2)
        for precision, model in models.items():
            sampling = time_sampling(model, args.sample_batch, 20)
            result = {"preset": args.preset, "size": size, "precision": precision, "batch_size": args.batch_size,
                      "parameters": model.network.count_params(), "forward_flops_per_image": flops,
                      "step_wall_seconds": timers[precision].wall, "step_cpu_seconds": timers[precision].cpu}
            for clock in ("wall", "cpu"):
                train_rate = timers[precision].images_per_second(clock)
                result[f"train_images_per_second_{clock}"] = train_rate
                result[f"train_flops_per_second_{clock}"] = train_rate * 3 * flops
                result[f"sample20_images_per_second_{clock}"] = sampling[clock]
                result[f"sample20_flops_per_second_{clock}"] = sampling[clock] * 20 * flops
            results.append(result)
            print(f"  {size:>3} px {precision}: train {result['train_images_per_second_wall']:7.1f} img/s "
                  f"({result['train_flops_per_second_wall'] / 1e9:5.0f} GFLOP/s wall, "
                  f"{result['train_flops_per_second_cpu'] / 1e9:5.0f} per CPU), "
                  f"20-step sampling {sampling['wall']:7.1f} img/s", flush=True)
        del models, timers

    print("DDPM-500 vs DDIM-20 at 28 px (configs/matos2025_ddpm28.toml, the same network) ...", flush=True)
    ddpm_config = load_config(DiffusionConfig, "matos2025_ddpm28")
    comparison = {}
    for precision in args.ddpm_precisions:
        model = build(ddpm_config, precision)
        ddim_rate = time_sampling(model, args.ddpm_images, 20, "ddim", repeats=3)
        ddpm_rate = time_sampling(model, args.ddpm_images, ddpm_config.timesteps, "ddpm", repeats=1)
        comparison[precision] = {
            **{f"ddim20_images_per_second_{clock}": ddim_rate[clock] for clock in ("wall", "cpu")},
            **{f"ddpm500_images_per_second_{clock}": ddpm_rate[clock] for clock in ("wall", "cpu")},
            "speedup_wall": ddim_rate["wall"] / ddpm_rate["wall"], "speedup_cpu": ddim_rate["cpu"] / ddpm_rate["cpu"]}
        print(f"  {precision}: DDIM-20 {ddim_rate['wall']:.1f} img/s, DDPM-500 {ddpm_rate['wall']:.2f} img/s, "
              f"{comparison[precision]['speedup_wall']:.1f}x (per CPU second {comparison[precision]['speedup_cpu']:.1f}x)",
              flush=True)

    later = {"fp32": conv_peak("float32"), "bf16": conv_peak("bfloat16")}
    for precision in peaks:
        for clock in ("wall", "cpu"):
            peaks[precision][clock] = max(peaks[precision][clock], later[precision][clock])
    for result in results:
        for clock in ("wall", "cpu"):
            achieved = result[f"train_flops_per_second_{clock}"]
            result[f"train_fraction_of_conv_peak_{clock}"] = achieved / peaks[result["precision"]][clock]
            result[f"train_fraction_of_bf16_conv_peak_{clock}"] = achieved / peaks["bf16"][clock]
            result[f"sample20_fraction_of_conv_peak_{clock}"] = (result[f"sample20_flops_per_second_{clock}"]
                                                                 / peaks[result["precision"]][clock])

    speedups = {}
    for size in args.sizes:
        by_precision = {r["precision"]: r for r in results if r["size"] == size}
        if "fp32" in by_precision and "bf16" in by_precision:
            speedups[size] = {clock: by_precision["bf16"][f"train_images_per_second_{clock}"]
                              / by_precision["fp32"][f"train_images_per_second_{clock}"] for clock in ("wall", "cpu")}
    largest = max(args.sizes)
    bf16_largest = next((r for r in results if r["size"] == largest and r["precision"] == "bf16"), None)
    targets = {}
    for clock in ("wall", "cpu"):
        targets[f"bf16_train_speedup_at_{largest}px >= 1.7 ({clock})"] = (
            speedups[largest][clock] if largest in speedups else None)
        targets[f"bf16_train_fraction_of_bf16_conv_peak_at_{largest}px >= 0.40 ({clock})"] = (
            bf16_largest[f"train_fraction_of_bf16_conv_peak_{clock}"] if bf16_largest else None)
        targets[f"ddim20_over_ddpm500_at_28px >= 25 ({clock})"] = (
            max(item[f"speedup_{clock}"] for item in comparison.values()) if comparison else None)
    print(f"\n{'size':>5} {'precision':>9} {'train img/s':>12} {'GFLOP/s':>8} {'% peak':>7} "
          f"{'% peak (CPU s)':>15} {'sample20 img/s':>15}")
    for r in results:
        print(f"{r['size']:>5} {r['precision']:>9} {r['train_images_per_second_wall']:>12.1f} "
              f"{r['train_flops_per_second_wall'] / 1e9:>8.0f} {100 * r['train_fraction_of_conv_peak_wall']:>6.1f}% "
              f"{100 * r['train_fraction_of_conv_peak_cpu']:>14.1f}% {r['sample20_images_per_second_wall']:>15.1f}")
    print(f"peaks (best of start and end, wall): fp32 {peaks['fp32']['wall'] / 1e9:.0f}, "
          f"bf16 {peaks['bf16']['wall'] / 1e9:.0f} GFLOP/s")
    for name, value in targets.items():
        print(f"  {name}: {'n/a' if value is None else f'{value:.2f}'}")

    report = {
        "benchmark": "ddim", "date": _dt.date.today().isoformat(), "machine": environment_info(),
        "load_average_start": load_at_start, "load_average_end": os.getloadavg(),
        "preset": args.preset, "overrides": args.set, "conv_peak_flops": peaks, "results": results,
        "bf16_train_speedup": speedups, "ddpm_comparison": comparison, "targets": targets,
    }
    out = Path(args.out) if args.out else RESULTS / f"ddim-{report['date']}.json"
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
