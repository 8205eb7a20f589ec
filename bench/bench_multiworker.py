"""Multi-worker DDIM training on loopback: two worker processes (MultiWorkerMirroredStrategy over
127.0.0.1) against one process at the same global batch.

Three runs of the same DDIM (``--preset``, default ``ddim_fast`` at 32 px, fp32, seed 3) on the
embedded sample (or ``--data``), one after another:

- ``2 workers``: two processes, one CPU device and one TensorFlow thread per pool each
  (``tests/multiworker_worker.py``; free ports, ``TF_CONFIG`` per process), 2 replicas;
- ``1 process, cpu:2``: one process mirroring over two logical CPUs (2 replicas, two threads
  per pool): the same replicas, so the same losses to float precision;
- ``1 process, 1 replica``: the default strategy, two threads per pool: the same global batch,
  but not the same losses (the noise of the second half of every batch comes from replica 1's
  seeds, and batch normalisation normalises each replica's half on its own).

For each: steps per second of the last epoch (from the ``train_seconds`` of the last two
checkpoints: the epoch's steps and the previous checkpoint's save, no tracing), the whole
session's images per second, the wall and CPU seconds of all its processes (start-up included),
and the first-epoch losses.

Usage:
    python bench/bench_multiworker.py                    # about 2-4 minutes on 2 cores
    python bench/bench_multiworker.py --epochs 4 --set base_width=16
Writes bench/results/multiworker-<date>.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.multiworker_worker import start, start_single  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="ddim_fast")
    parser.add_argument("--data", default=None, help="training data (default: the embedded sample)")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32, help="the global batch of every run")
    parser.add_argument("--epochs", type=int, default=3, help="at least 2 (the last one is timed)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset field")
    parser.add_argument("--timeout", type=float, default=900, help="seconds any run may take")
    parser.add_argument("--out", default=None, help="JSON file (default: bench/results/multiworker-DATE.json)")
    return parser.parse_args(argv)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _measure(run: Path, processes, timeout: float) -> dict:
    started, cpu = time.perf_counter(), _children_cpu()
    with processes:
        codes = processes.wait(timeout)
        if any(codes):
            raise SystemExit(f"a run failed ({codes}):\n" + "\n---\n".join(
                processes.tail(index) for index in range(len(codes))))
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    train = json.loads((run / "metrics" / "train.json").read_text())
    checkpoints = sorted((run / "checkpoints").glob("epoch-*"))
    last, previous = (json.loads((path / "state.json").read_text()) for path in checkpoints[-1:-3:-1])
    with open(run / "logs" / "history.csv", newline="", encoding="utf-8") as handle:
        first = next(csv.DictReader(handle))
    return {
        "processes": len(codes), "replicas": train["replicas"], "steps_per_epoch": train["steps_per_epoch"],
        "last_epoch_seconds": last["train_seconds"] - previous["train_seconds"],
        "last_epoch_steps_per_second": train["steps_per_epoch"] / (last["train_seconds"] - previous["train_seconds"]),
        "session_images_per_second": train["images_per_second_this_session"],
        "wall_seconds": wall, "cpu_seconds_all_processes": cpu,
        "first_epoch": {key: float(value) for key, value in first.items() if key != "epoch" and value not in ("", "NA")},
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.epochs < 2:
        raise SystemExit("--epochs must be at least 2 (the last epoch is timed)")
    if args.data is None:
        from cellgen.sample_data import sample_path

        args.data = str(sample_path("train"))
    load_at_start = os.getloadavg()
    if load_at_start[0] > (os.cpu_count() or 1):
        print(f"warning: load average {load_at_start[0]:.1f} on {os.cpu_count()} CPUs; other processes share "
              "the machine, so the wall-clock figures are low", flush=True)
    common = ["train", "train_ddim", "--config", args.preset, "--data", args.data, "--size", str(args.size),
              "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--precision", "fp32",
              "--seed", "3", "--quiet", "--set", "sample_every=0", "--set", "save_every=0"]
    for item in args.set:
        common += ["--set", item]
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-multiworker-") as tmp:
        root = Path(tmp)
        runs = {
            "2 workers": lambda out: start([[*common, "--out", str(out), "--strategy", "multiworker"]] * 2,
                                           root / "two-workers"),
            "1 process, cpu:2": lambda out: start_single([*common, "--out", str(out), "--strategy", "cpu:2"],
                                                         root / "cpu2", threads=2),
            "1 process, 1 replica": lambda out: start_single([*common, "--out", str(out), "--strategy", "default"],
                                                             root / "one", threads=2),
        }
        for name, launch in runs.items():
            out = root / name.replace(" ", "-").replace(",", "").replace(":", "")
            print(f"{name} ...", flush=True)
            results[name] = _measure(out, launch(out), args.timeout)
            result = results[name]
            print(f"  {result['last_epoch_steps_per_second']:.2f} steps/s (last epoch), "
                  f"{result['session_images_per_second']:.1f} img/s (session), {result['wall_seconds']:.0f} s wall, "
                  f"{result['cpu_seconds_all_processes']:.0f} CPU-s; first epoch "
                  + ", ".join(f"{key} {value:.7f}" for key, value in result["first_epoch"].items()), flush=True)

    two, mirrored, single = results["2 workers"], results["1 process, cpu:2"], results["1 process, 1 replica"]
    same = {key: abs(two["first_epoch"][key] - mirrored["first_epoch"][key]) for key in two["first_epoch"]}
    print("\n| run | replicas | steps/s (last epoch) | img/s (session) | wall s | CPU s | first-epoch losses |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, result in results.items():
        losses = ", ".join(f"{key} {value:.7f}" for key, value in result["first_epoch"].items())
        print(f"| {name} | {result['replicas']} | {result['last_epoch_steps_per_second']:.2f} | "
              f"{result['session_images_per_second']:.1f} | {result['wall_seconds']:.0f} | "
              f"{result['cpu_seconds_all_processes']:.0f} | {losses} |")
    print(f"\n2 workers vs 1 process cpu:2, largest first-epoch loss difference: {max(same.values()):.3g}; "
          f"2 workers / 1 replica steps/s: {two['last_epoch_steps_per_second'] / single['last_epoch_steps_per_second']:.2f}x")

    from cellgen.runs import cpu_model, environment_info, write_json

    summary = {"date": _dt.date.today().isoformat(), "cpu": cpu_model(), "cpus": os.cpu_count(),
               "load_average_at_start": load_at_start, "load_average_at_end": os.getloadavg(),
               "preset": args.preset, "size": args.size, "global_batch": args.batch_size, "epochs": args.epochs,
               "overrides": args.set, "data": args.data, "runs": results,
               "max_first_epoch_difference_2_workers_vs_cpu2": max(same.values()),
               "environment": environment_info()}
    out = Path(args.out) if args.out else RESULTS / f"multiworker-{summary['date']}.json"
    write_json(out, summary)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
