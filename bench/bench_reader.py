"""Throughput of the cellgen data reader: decode + crop + resize + scale, images per second.

Reads N images (default 2000) of a class-folder tree through
``DataReader.epoch`` with 1 and 2 worker threads, after one untimed warm-up
pass over the same files (so the OS file cache is warm and the figures
measure decoding, not the disk). Also times a single-threaded loop over the
same pipeline (no threads, no batching) as a reference, and the
``as_tf_dataset`` bridge unless ``--no-tf``. Prints the figures and writes
them as JSON with the machine's description.

Two rates are reported per setting: wall-clock images/s (best of the
repeats; what training sees, but it drops when other processes share the
cores) and images per CPU-second (``time.process_time`` over all threads,
which shows the pipeline's cost whatever the machine's load).

Example:
    python bench/bench_reader.py --data /work/shared/data/pbc128/train --size 64 \
        --out bench/results/reader.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from cellgen.data_reader import DataReader, _center_crop, _decode_entry, _resize  # noqa: E402
from cellgen.images import from_uint8  # noqa: E402


def machine_info() -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable_cores = len(os.sched_getaffinity(0))
    except AttributeError:
        usable_cores = os.cpu_count()
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "usable_cores": usable_cores,
        "load_average_before": load,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def make_reader(data: Path, count: int, size: int, crop, batch_size: int, workers: int) -> DataReader:
    """A reader over ``count`` images of ``data`` (a seed-fixed subset, same for every run)."""
    probe = DataReader(data, image_size=size, crop=crop, batch_size=batch_size, workers=workers)
    fraction = min(1.0, count / probe.num_images)
    limits = {name: fraction for name in probe.classes} if fraction < 1.0 else None
    return DataReader(data, image_size=size, crop=crop, batch_size=batch_size, workers=workers,
                      class_limits=limits, seed=0, shuffle=True)


def timed(function, *args) -> tuple[int, float, float]:
    """Runs ``function(*args)`` (which returns an image count): (count, wall seconds, CPU seconds)."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    images_read = function(*args)
    return images_read, time.perf_counter() - wall_start, time.process_time() - cpu_start


def read_epoch(reader: DataReader, epoch: int) -> int:
    return sum(len(labels) for _, labels in reader.epoch(epoch))


def single_thread_loop(reader: DataReader) -> int:
    """The same per-image pipeline in a plain loop: no threads, no batch assembly."""
    source, entries = reader._source, reader._kept
    for entry in entries:
        image = _resize(_center_crop(_decode_entry(source, entry), reader.crop, entry), reader.image_size)
        from_uint8(image)
    return len(entries)


def read_tf_dataset(reader: DataReader) -> int:
    return sum(int(labels.shape[0]) for _, labels in reader.as_tf_dataset(epochs=1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="class-folder tree of images")
    parser.add_argument("--size", type=int, default=64, help="output size in pixels (default 64)")
    parser.add_argument("--crop", type=float, default=None,
                        help="center crop: pixels if > 1, else fraction of the shorter side")
    parser.add_argument("--count", "-n", type=int, default=2000, help="images per run (default 2000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per setting; the best is kept")
    parser.add_argument("--no-tf", action="store_true", help="skip the tf.data bridge timing")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file")
    args = parser.parse_args(argv)
    crop = None if args.crop is None else (int(args.crop) if args.crop > 1 else args.crop)

    info = machine_info()
    results = {"machine": info, "settings": {"data": str(args.data), "size": args.size, "crop": crop,
                                             "batch_size": args.batch_size, "repeats": args.repeats},
               "runs": []}

    def record(name: str, workers: int | None, timings: list[tuple[int, float, float]]):
        images_read = timings[0][0]
        best = min(wall for _, wall, _ in timings)
        rates = [count / wall for count, wall, _ in timings]
        cpu_rate = sum(count for count, _, _ in timings) / sum(cpu for _, _, cpu in timings)
        results["runs"].append({"name": name, "workers": workers, "images": images_read,
                                "best_seconds": round(best, 4), "images_per_second": round(images_read / best, 1),
                                "all_images_per_second": [round(rate, 1) for rate in rates],
                                "images_per_cpu_second": round(cpu_rate, 1)})
        label = name if workers is None else f"{name}, workers={workers}"
        print(f"{label:<30} {images_read:>5} images  {images_read / best:>6.0f} images/s  "
              f"{cpu_rate:>6.0f} images/CPU-s  (runs: {', '.join(f'{rate:.0f}' for rate in rates)})", flush=True)

    reader = make_reader(args.data, args.count, args.size, crop, args.batch_size, workers=1)
    print(f"{info['cpu_model']}, {info['cores']} cores, load {info['load_average_before']}")
    print(f"{reader.num_images} images of {args.data} -> {args.size} px, crop {crop}")
    read_epoch(reader, 0)  # warm-up: OS file cache
    record("single-thread loop", None, [timed(single_thread_loop, reader) for _ in range(args.repeats)])
    for workers in (1, 2):
        reader = make_reader(args.data, args.count, args.size, crop, args.batch_size, workers=workers)
        record("DataReader.epoch", workers, [timed(read_epoch, reader, epoch) for epoch in range(args.repeats)])
    if not args.no_tf:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow  # noqa: F401  (import time is not part of the figures)

        for workers in (1, 2):
            reader = make_reader(args.data, args.count, args.size, crop, args.batch_size, workers=workers)
            read_tf_dataset(reader)  # warm-up: graph tracing
            record("as_tf_dataset", workers, [timed(read_tf_dataset, reader) for _ in range(args.repeats)])
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
