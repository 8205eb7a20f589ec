"""Worker processes of the multi-worker tests (``tests/test_multiworker.py``) and benchmark
(``bench/bench_multiworker.py``), and the code that starts and ends them on 127.0.0.1.

As a script (``python tests/multiworker_worker.py MODE ...``, with ``TF_CONFIG`` set)::

    train MODULE ARGS... [+++ MODULE ARGS...]
                 cellgen.cli.MODULE.main(ARGS) (e.g. train_ddim), one run after another in this
                 process; exits with the first failure's status
    probe DATA   joins the cluster; compares the kept files of DATA (a class filter and a scarcity
                 cap) with the other workers, then a value that differs between them (prints the
                 ``disagreement: ...``); then worker 0 waits in a collective that the others never
                 join and exits 2 with ``error: ...`` after CELLGEN_COLLECTIVE_TIMEOUT seconds,
                 while the others sleep (the test ends them)

Every worker runs on the CPU with one TensorFlow thread per pool (two workers share a
2-core machine), keeps its private scratch folder under its own ``TMPDIR`` and writes its
output to a log file; :func:`start` chooses free ports and :class:`Processes` always ends them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (bound to port 0, then released)."""
    import socket

    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_configs(count: int) -> list[str]:
    """The ``TF_CONFIG`` of each of ``count`` workers on loopback (worker 0 is the chief)."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(count)]}
    return [json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}) for index in range(count)]


def worker_env(tmp: Path, tf_config: str | None = None, collective_timeout: float | None = None,
               hash_seed: int = 0, threads: int = 1) -> dict[str, str]:
    """The environment of one worker process: CPU only, ``threads`` TensorFlow threads per pool,
    its own temporary folder (where a non-chief worker's scratch run directory goes)."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = {key: value for key, value in os.environ.items()
           if key not in ("TF_CONFIG", "CELLGEN_DEBUG", "CELLGEN_COLLECTIVE_TIMEOUT")}
    env.update(CUDA_VISIBLE_DEVICES="", TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS=str(threads),
               OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="2", TMPDIR=str(tmp),
               PYTHONHASHSEED=str(hash_seed), PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                                       env.get("PYTHONPATH")])))
    if tf_config is not None:
        env["TF_CONFIG"] = tf_config
    if collective_timeout is not None:
        env["CELLGEN_COLLECTIVE_TIMEOUT"] = str(collective_timeout)
    return env


class Processes:
    """Started worker processes; use as a context manager so they are always ended.

    Attributes:
        procs: the ``subprocess.Popen`` objects, in worker order.
        logs: each process's combined stdout and stderr file.
        tmps: each process's ``TMPDIR``.
    """

    def __init__(self):
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.tmps: list[Path] = []
        self.started = time.monotonic()

    def add(self, args: Sequence[str], env: dict[str, str], log: Path, tmp: Path) -> subprocess.Popen:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w", encoding="utf-8") as handle:
            proc = subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=str(REPO), env=env, stdout=handle,
                                    stderr=subprocess.STDOUT)
        self.procs.append(proc)
        self.logs.append(log)
        self.tmps.append(tmp)
        return proc

    def wait(self, timeout: float) -> list[int]:
        """Every process's exit status; ends them all and raises ``TimeoutError`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        codes = []
        for index, proc in enumerate(self.procs):
            try:
                codes.append(proc.wait(timeout=max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                self.stop()
                raise TimeoutError(f"process {index} still running after {timeout:.0f} s; log:\n"
                                   f"{self.tail(index)}") from None
        return codes

    def stop(self) -> None:
        """Kills every process still running and reaps it."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def tail(self, index: int, lines: int = 25) -> str:
        text = self.logs[index].read_text(encoding="utf-8", errors="replace") if self.logs[index].exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def output(self, index: int) -> str:
        return self.logs[index].read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> "Processes":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start(modes: Sequence[Sequence[str]], root: Path, collective_timeout: float | None = None,
          processes: Processes | None = None, name: str = "worker") -> Processes:
    """Starts one worker of a loopback cluster per entry of ``modes`` (the script's arguments,
    e.g. ``["train", "train_ddim", "--out", ...]``); logs and ``TMPDIR`` go under ``root``."""
    processes = processes if processes is not None else Processes()
    for index, (args, tf_config) in enumerate(zip(modes, tf_configs(len(modes)))):
        tmp = root / f"{name}{index}-tmp"
        processes.add(args, worker_env(tmp, tf_config, collective_timeout, hash_seed=index + 1),
                      root / f"{name}{index}.log", tmp)
    return processes


def start_single(args: Sequence[str], root: Path, processes: Processes | None = None, name: str = "single",
                 threads: int = 1) -> Processes:
    """Starts one process outside any cluster (the reference run, e.g. with ``--strategy cpu:2``)."""
    processes = processes if processes is not None else Processes()
    tmp = root / f"{name}-tmp"
    processes.add(args, worker_env(tmp, None, threads=threads), root / f"{name}.log", tmp)
    return processes


# The worker side ---------------------------------------------------------------


def _train(argv: list[str]) -> int:
    """Runs ``MODULE ARGS... [+++ MODULE ARGS...]`` one after another; the first failure's status."""
    import importlib

    runs, current = [], []
    for item in argv:
        if item == "+++":
            runs.append(current)
            current = []
        else:
            current.append(item)
    runs.append(current)
    for module, *args in runs:
        code = importlib.import_module(f"cellgen.cli.{module}").main(args)
        if code:
            return code
    return 0


def _probe(data: str) -> int:
    from cellgen.cli.common import guarded
    from cellgen.distribute import StrategyError, check_workers_agree, files_digest, make_strategy

    @guarded
    def main(_argv=None) -> int:
        from cellgen.data import DataReader

        # A class filter and a scarcity cap (a fraction and a count): the kept files depend on the seed only.
        # Read before joining, so that no worker keeps the others waiting in the first collective.
        reader = DataReader(data, image_size=16, batch_size=8, seed=3, class_filter=["basophil", "monocyte"],
                            class_limits={"basophil": 0.5, "monocyte": 7}, drop_remainder=True)
        print(f"kept {reader.num_images} files, digest {files_digest(reader)}", flush=True)
        strategy = make_strategy("multiworker")
        if make_strategy("multiworker") is strategy:  # a process joins its cluster once
            print("strategy reused", flush=True)
        index = strategy.cluster_resolver.task_id
        check_workers_agree(strategy, training_files=files_digest(reader), training_images=reader.num_images)
        print("reader agreed", flush=True)
        try:
            check_workers_agree(strategy, resumed_epoch=index + 1)
            print("unexpected: different epochs agreed", flush=True)
        except StrategyError as error:
            print(f"disagreement: {error}", flush=True)
        if index == 0:
            check_workers_agree(strategy, steps_per_epoch=1)  # worker 1 never joins: the collective times out
            print("unexpected: no timeout", flush=True)
            return 0
        print("stalling", flush=True)
        time.sleep(600)
        return 0

    return main([])


def main(argv: list[str]) -> int:
    import cellgen  # noqa: F401  (sets the Keras backend)

    mode, rest = argv[0], argv[1:]
    if mode == "train":
        return _train(rest)
    if mode == "probe":
        return _probe(rest[0])
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
