"""Generator evaluation: extractor speed, metric cost at the thesis sizes, and a check on real data.

Three parts:

1. InceptionV3 feature throughput (images/s) at 299 px in fp32 and bf16 and at a
   reduced input side, on pbc128 images (random weights: ImageNet weights cannot
   be downloaded here; the compute is the same). Also the relative difference of
   bf16 and fp32 features (with random weights, only indicative).
2. Cost of the metrics on 2048-d features at the sizes of Matos (2025, section
   3.4) and N&Z (10,000 images): FID (covariance route and the low-rank route for
   small sets), KID (100 subsets of 1000), precision/recall/density/coverage and
   the memorisation nearest-neighbour search.
3. The metrics on real data, where the right answer is known, with a small domain
   classifier trained here on pbc128/train (64 px, a few epochs): held-out real
   basophils (val) against the training basophils give the floor of every metric
   and a memorisation share near its 5 % quantile; copies of training images must
   give a share of 1; a "collapsed" set (121 images from 5 cells with light noise)
   must lose recall and coverage; blurred images must lose precision.

Usage:
    python bench/bench_evaluate.py                    # all parts (about 5-10 minutes on 2 cores)
    python bench/bench_evaluate.py --skip-real --inception-images 32
Writes bench/results/evaluate-<date>.json and prints the numbers.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import cellgen  # noqa: E402,F401  (sets the Keras backend)

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "pbc128"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DATA), help="pbc128 folder (train/ and val/)")
    parser.add_argument("--inception-images", type=int, default=48)
    parser.add_argument("--small-side", type=int, default=150, help="reduced InceptionV3 input side")
    parser.add_argument("--metric-n", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=2, help="domain classifier epochs")
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--out", default=None)
    return parser.parse_args(argv)


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    value = function(*args, **kwargs)
    return value, time.perf_counter() - start


def inception_speed(data: Path, count: int, small_side: int) -> dict:
    import numpy as np

    from cellgen.data_reader import DataReader
    from cellgen.evaluate.features import InceptionExtractor
    from cellgen.runs import set_seed

    reader = DataReader(data / "val", image_size=128, batch_size=count, shuffle=True, seed=0)
    images = next(iter(reader.epoch(0)))[0]
    results, features = {}, {}
    for label, side, precision in (("299-fp32", 299, "fp32"), ("299-bf16", 299, "bf16"),
                                   (f"{small_side}-fp32", small_side, "fp32")):
        set_seed(0)
        extractor = InceptionExtractor(weights=None, input_size=side, batch_size=16, precision=precision)
        extractor(images[:16])  # trace
        features[label], seconds = timed(extractor, images)
        results[label] = {"images_per_second": round(count / seconds, 2), "side": side, "precision": precision}
        print(f"InceptionV3 {label:>9}: {count / seconds:7.2f} images/s", flush=True)
    reference, other = features["299-fp32"], features["299-bf16"]
    relative = float(np.linalg.norm(reference - other) / np.linalg.norm(reference))
    results["bf16_relative_feature_difference"] = round(relative, 5)
    print(f"bf16 vs fp32 features: relative L2 difference {relative:.4f} (random weights)")
    return results


def metric_costs(count: int) -> dict:
    import numpy as np

    from cellgen.evaluate.fid import fid_from_features
    from cellgen.evaluate.kid import kernel_inception_distance
    from cellgen.evaluate.memorization import memorization_statistics
    from cellgen.evaluate.prdc import precision_recall_density_coverage

    rng = np.random.default_rng(0)
    dimension = 2048
    # correlated features like a network's: a random low-rank mixing plus noise
    mixing = rng.normal(size=(256, dimension)) / 16

    def features(size, shift=0.0):
        return (rng.normal(size=(size, 256)) @ mixing + 0.1 * rng.normal(size=(size, dimension)) + shift
                ).astype(np.float32)

    real, generated = features(count), features(count, 0.01)
    costs = {"n": count, "dimension": dimension}
    _, costs["fid_seconds"] = timed(fid_from_features, real, generated)
    _, costs["fid_n1000_lowrank_seconds"] = timed(fid_from_features, real[:1000], generated[:1000])
    _, costs["kid_100x1000_seconds"] = timed(kernel_inception_distance, real, generated, 1000, 100)
    prdc_n = min(count, 5000)
    _, costs[f"prdc_n{prdc_n}_seconds"] = timed(precision_recall_density_coverage, real[:prdc_n], generated[:prdc_n])
    _, costs["memorization_2000_vs_12000_seconds"] = timed(memorization_statistics, generated[:2000],
                                                           features(12_000))
    for key, value in costs.items():
        if key.endswith("seconds"):
            costs[key] = round(value, 2)
            print(f"{key:<36}{value:8.2f} s", flush=True)
    return costs


def train_domain_classifier(data: Path, epochs: int, folder: Path) -> tuple[Path, dict]:
    import keras

    from cellgen.data_reader import DataReader
    from cellgen.runs import set_seed

    set_seed(0)
    reader = DataReader(data / "train", image_size=64, batch_size=64, shuffle=True, seed=0)
    validation = DataReader(data / "val", image_size=64, batch_size=128, shuffle=False)
    inputs = keras.Input((64, 64, 3))
    x = inputs
    for filters in (32, 64, 128):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = keras.layers.BatchNormalization(momentum=0.9)(x)  # ~190 steps per epoch
        x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(128, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(len(reader.classes), activation="softmax", dtype="float32")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(reader.as_tf_dataset(), steps_per_epoch=len(reader), epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(validation.as_tf_dataset(epochs=1), verbose=0)
    path = folder / "model.keras"
    model.save(path)
    print(f"domain classifier: val accuracy {accuracy:.3f} after {epochs} epochs ({seconds:.0f} s)", flush=True)
    return path, {"val_accuracy": round(float(accuracy), 4), "epochs": epochs, "train_seconds": round(seconds, 1)}


def real_data_checks(data: Path, epochs: int) -> dict:
    import cv2
    import numpy as np

    from cellgen.evaluate.features import ClassifierExtractor
    from cellgen.evaluate.generated import evaluate_generated
    from cellgen.images import read_rgb, write_rgb

    work = Path(tempfile.mkdtemp(prefix="cellgen-bench-eval-"))
    try:
        model_path, classifier = train_domain_classifier(data, epochs, work)
        extractor = ClassifierExtractor(model_path)
        train_basophils = sorted((data / "train" / "basophil").glob("*.jpg"))
        val_basophils = sorted((data / "val" / "basophil").glob("*.jpg"))
        count = len(val_basophils)
        rng = np.random.default_rng(0)
        sets = {"held-out real (val)": data / "val" / "basophil"}
        copies = work / "copies"
        copies.mkdir()
        for path in rng.choice(train_basophils, size=count, replace=False):
            shutil.copy(path, copies / path.name)
        sets["copies of training images"] = copies
        collapsed = work / "collapsed"
        collapsed.mkdir()
        modes = [read_rgb(path) for path in val_basophils[:5]]
        for index in range(count):
            image = modes[index % 5].astype(np.float32) + rng.normal(0, 3, modes[0].shape)
            write_rgb(collapsed / f"c{index:04d}.png", np.clip(image, 0, 255).astype(np.uint8))
        sets["collapsed (5 cells + noise)"] = collapsed
        blurred = work / "blurred"
        blurred.mkdir()
        for path in val_basophils:
            write_rgb(blurred / f"{path.stem}.png", cv2.GaussianBlur(read_rgb(path), (0, 0), 3.0))
        sets["blurred val (sigma 3 px)"] = blurred
        results = {"classifier": classifier, "n": count, "sets": {}}
        header = f"{'generated set':<30}{'FID':>9}{'KID':>9}{'prec':>7}{'rec':>7}{'dens':>7}{'cov':>7}{'mem-feat':>10}{'mem-pix':>9}{'s':>6}"
        print(header)
        for name, folder in sets.items():
            result, seconds = timed(
                evaluate_generated, data / "train", folder, extractor, n=count, seeds=3, class_name="basophil",
                image_size=64, kid_subset_size=100, kid_subsets=50, use_cache=False, progress=False,
                memorization_n=count)
            summary = {key: round(value["mean"], 4) for key, value in result["summary"].items()}
            summary.update({f"{key}_std": round(value["std"], 4) for key, value in result["summary"].items()})
            memorization = result["memorization"]
            summary["memorization_share_features"] = round(memorization["features"]["share_below"], 4)
            summary["memorization_share_pixels"] = round(memorization["pixels"]["share_below"], 4)
            summary["seconds"] = round(seconds, 1)
            results["sets"][name] = summary
            print(f"{name:<30}{summary['fid']:>9.3f}{summary['kid']:>9.4f}{summary['precision']:>7.2f}"
                  f"{summary['recall']:>7.2f}{summary['density']:>7.2f}{summary['coverage']:>7.2f}"
                  f"{summary['memorization_share_features']:>10.3f}{summary['memorization_share_pixels']:>9.3f}"
                  f"{seconds:>6.0f}", flush=True)
        return results
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> int:
    from cellgen.runs import environment_info, write_json

    args = parse_args(argv)
    data = Path(args.data)
    report = {"machine": environment_info(), "date": _dt.date.today().isoformat()}
    report["inception"] = inception_speed(data, args.inception_images, args.small_side)
    report["metric_costs"] = metric_costs(args.metric_n)
    if not args.skip_real:
        report["real_data"] = real_data_checks(data, args.epochs)
    out = Path(args.out) if args.out else RESULTS / f"evaluate-{report['date']}.json"
    write_json(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
