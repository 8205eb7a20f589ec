"""Classifier training throughput: images/s of MobileNetV2 (alpha 0.75) and Xception at 128 px,
in fp32 and bf16, plus one run through the real data pipeline.

The models are those of the thesis presets (configs/nz2023_mobilenetv2.toml and
configs/kc2020_xception.toml: backbone, global average pooling, float32 softmax,
Adam, sparse categorical cross-entropy) built by ``train_lib.build_and_compile``,
with random initial weights (ImageNet weights cannot be downloaded here; the
speed is the same). Training runs ``model.fit`` (the path of
``evaluate_classifier.py``) on in-memory batches of image-like random pixels, so
the compute numbers exclude JPEG decoding. XLA stays off, as Keras chooses on
CPU-only machines (on this CPU it makes MobileNetV2 training about 6x slower).

To explain the bf16/fp32 ratios, the JSON also times the two convolutions of a
MobileNetV2 block (3x3 depthwise and 1x1 pointwise, forward + backward, 32 x 64 x
64 x 144) in float32 and bfloat16.

The pipeline run trains MobileNetV2 in fp32 with ``model.fit`` on
``DataReader(pbc128/train).as_tf_dataset()`` (decoding on the reader's worker
threads), as ``evaluate_classifier.py`` does, and reports the decode-only rate of
the reader on its own, to show whether decoding keeps up with training.

Usage:
    python bench/bench_classifier.py                   # both backbones, fp32 and bf16
    python bench/bench_classifier.py --steps 4 --rounds 1 --no-pipeline
Writes bench/results/classifier-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
SHARED_TRAIN = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128" / "train"
PRESETS = {"mobilenetv2": "nz2023_mobilenetv2", "xception": "kc2020_xception"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps (graph tracing) per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating fp32/bf16 rounds; the best round counts (the machine may be shared)")
    parser.add_argument("--data", default=str(SHARED_TRAIN), help="class folder for the pipeline run")
    parser.add_argument("--pipeline-steps", type=int, default=8)
    parser.add_argument("--no-pipeline", action="store_true", help="skip the DataReader run")
    parser.add_argument("--out", default=None, help="JSON file (default bench/results/classifier-<date>.json)")
    return parser.parse_args(argv)


def build(backbone: str, precision: str, args):
    from cellgen.classify.config import ClassifierConfig
    from cellgen.classify.train_lib import build_and_compile
    from cellgen.config import load_config
    from cellgen.precision import set_precision
    from cellgen.runs import set_seed

    set_precision(precision)
    set_seed(0)
    config = load_config(ClassifierConfig, PRESETS[backbone], {"weights": "none", "image_size": args.size,
                                                                "batch_size": args.batch_size, "mode": "multiclass"})
    model, _ = build_and_compile(config, args.classes)
    return config, model


def batches(args, count: int):
    """Smooth random images in [-1, 1] (image-like, not white noise) and labels."""
    import numpy as np

    rng = np.random.default_rng(1)
    coarse = rng.uniform(-1, 1, size=(count, args.batch_size, 8, 8, 3)).astype("float32")
    repeat = args.size // 8
    images = coarse.repeat(repeat, axis=2).repeat(repeat, axis=3)
    labels = rng.integers(0, args.classes, size=(count, args.batch_size)).astype("int32")
    return images, labels


def timed_fit(model, dataset, warmup: int, steps: int, batch_size: int) -> tuple[float, float, float]:
    """``model.fit`` throughput over ``steps`` steps after ``warmup`` untimed ones (graph tracing).

    Returns (images per wall-clock second, images per CPU second of this process, last loss).
    ``model.fit`` is the path evaluate_classifier.py trains with. On a shared machine the CPU-time
    rate is the steadier figure: other processes lower the wall-clock rate, not the work per image.
    """
    import keras

    class StepTimes(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.times: list[tuple[float, float]] = []
            self.loss = float("nan")

        def on_train_batch_end(self, batch, logs=None):
            self.times.append((time.perf_counter(), time.process_time()))
            self.loss = float((logs or {}).get("loss", float("nan")))

    recorder = StepTimes()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, callbacks=[recorder], verbose=0, shuffle=False)
    (wall_start, cpu_start), (wall_end, cpu_end) = recorder.times[warmup - 1], recorder.times[-1]
    images = batch_size * (len(recorder.times) - warmup)
    return images / (wall_end - wall_start), images / (cpu_end - cpu_start), recorder.loss


def convolution_timings(repeats: int = 5) -> dict[str, float]:
    """Seconds of forward + backward of a 3x3 depthwise and a 1x1 convolution, fp32 and bf16."""
    import tensorflow as tf

    timings = {}
    for dtype in (tf.float32, tf.bfloat16):
        images = tf.cast(tf.random.normal((32, 64, 64, 144)), dtype)
        depthwise_kernel = tf.Variable(tf.cast(tf.random.normal((3, 3, 144, 1)), dtype))
        pointwise_kernel = tf.Variable(tf.cast(tf.random.normal((1, 1, 144, 144)), dtype))

        @tf.function
        def depthwise(x):
            with tf.GradientTape() as tape:
                y = tf.nn.depthwise_conv2d(x, depthwise_kernel, [1, 1, 1, 1], "SAME")
                loss = tf.reduce_sum(tf.cast(y, tf.float32))
            return tape.gradient(loss, [depthwise_kernel])

        @tf.function
        def pointwise(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.cast(tf.nn.conv2d(x, pointwise_kernel, 1, "SAME"), tf.float32))
            return tape.gradient(loss, [pointwise_kernel])

        for name, function in (("depthwise_3x3", depthwise), ("pointwise_1x1", pointwise)):
            function(images)[0].numpy()
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                function(images)[0].numpy()
                best = min(best, time.perf_counter() - start)
            timings[f"{name}_{dtype.name}_seconds"] = best
    return timings


def pipeline_run(args) -> dict | None:
    """MobileNetV2 fp32 trained from the DataReader, as evaluate_classifier.py does."""
    from cellgen.data_reader import DataReader

    if not Path(args.data).is_dir():
        print(f"  pipeline run skipped: {args.data} not found")
        return None
    reader = DataReader(args.data, image_size=args.size, batch_size=args.batch_size, shuffle=True, seed=0,
                        drop_remainder=True, workers=2)
    # decode-only rate of the reader
    start = time.perf_counter()
    decoded = 0
    for index, (images, _) in enumerate(reader.epoch(0)):
        decoded += len(images)
        if index + 1 >= args.pipeline_steps:
            break
    decode_rate = decoded / (time.perf_counter() - start)
    print(f"  DataReader decode only: {decode_rate:.1f} images/s", flush=True)
    config, model = build("mobilenetv2", "fp32", args)
    rate, _, _ = timed_fit(model, reader.as_tf_dataset(), max(2, args.warmup), args.pipeline_steps,
                           args.batch_size)
    print(f"  mobilenetv2 fp32 fit from DataReader: {rate:.1f} images/s", flush=True)
    return {"backbone": "mobilenetv2", "alpha": config.alpha, "precision": "fp32", "source": str(args.data),
            "reader_workers": 2, "train_images_per_second": rate, "decode_only_images_per_second": decode_rate}


def main(argv=None) -> int:
    args = parse_args(argv)
    import keras

    from cellgen.runs import environment_info, write_json

    import tensorflow as tf

    images, labels = batches(args, 4)
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).repeat()
    results = []
    best: dict[tuple[str, str], tuple[float, float, float]] = {}
    parameters = {}
    load_before = os.getloadavg()
    for round_index in range(args.rounds):
        for backbone in args.backbones:
            for precision in args.precisions:
                config, model = build(backbone, precision, args)
                parameters[backbone] = model.count_params()
                rate, cpu_rate, loss = timed_fit(model, dataset, max(2, args.warmup), args.steps, args.batch_size)
                key = (backbone, precision)
                previous = best.get(key, (0.0, 0.0, 0.0))
                best[key] = (max(rate, previous[0]), max(cpu_rate, previous[1]), loss)
                print(f"  {backbone} {precision} round {round_index + 1}: {rate:.1f} images/s, "
                      f"{cpu_rate:.1f} images per CPU second (loss {loss:.3f}; load {os.getloadavg()[0]:.1f})",
                      flush=True)
                del model
    for (backbone, precision), (rate, cpu_rate, loss) in best.items():
        results.append({"backbone": backbone, "alpha": 0.75 if backbone == "mobilenetv2" else None,
                        "precision": precision, "image_size": args.size, "batch_size": args.batch_size,
                        "parameters": parameters[backbone], "seconds_per_step": args.batch_size / rate,
                        "images_per_second": rate, "images_per_cpu_second": cpu_rate,
                        "loss_after_timed_steps": loss})
    pipeline = None if args.no_pipeline else pipeline_run(args)
    convolutions = convolution_timings()
    print("  convolution fwd+bwd: " + ", ".join(f"{key} {1000 * value:.1f} ms" for key, value in convolutions.items()))
    keras.mixed_precision.set_global_policy("float32")

    load_after = os.getloadavg()
    print(f"\n{'backbone':>12} {'precision':>9} {'images/s':>9} {'img/CPU-s':>9} {'s/step':>7}")
    for result in results:
        print(f"{result['backbone']:>12} {result['precision']:>9} {result['images_per_second']:>9.1f} "
              f"{result['images_per_cpu_second']:>9.1f} {result['seconds_per_step']:>7.3f}")
    speedups = {}
    for backbone in args.backbones:
        rates = {r["precision"]: r["images_per_cpu_second"] for r in results if r["backbone"] == backbone}
        if "fp32" in rates and "bf16" in rates:
            speedups[backbone] = rates["bf16"] / rates["fp32"]
            print(f"bf16 / fp32 {backbone} (CPU-time rates): {speedups[backbone]:.2f}x")
    print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f} on {os.cpu_count()} CPUs")
    report = {
        "benchmark": "classifier_training",
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "machine": environment_info(),
        "settings": {key: value for key, value in vars(args).items() if key != "out"},
        "note": "in-memory batches (no decoding), random initial weights, best of the rounds; "
                "images_per_cpu_second divides by this process's CPU time (steadier on a shared machine); "
                "the pipeline entry trains from JPEG files through DataReader",
        "results": results,
        "bf16_speedup_cpu_time": speedups,
        "load_average_before_after": [load_before, load_after],
        "pipeline": pipeline,
        "convolutions_32x64x64x144": convolutions,
    }
    out = Path(args.out) if args.out else RESULTS / f"classifier-{_dt.date.today().isoformat()}.json"
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
