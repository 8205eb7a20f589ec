"""Training across processes: MultiWorkerMirroredStrategy with two workers on 127.0.0.1.

The worker processes are :mod:`tests.multiworker_worker` (CPU only, one TensorFlow thread per
pool, free ports, ``TF_CONFIG`` per process); the test ends every process. To keep the
module short on a 2-core machine, the clusters and the one-process reference run start together:

- a probe cluster: the kept files of a class filter + scarcity cap agree across workers (with
  different ``PYTHONHASHSEED``), a mismatch is a one-line error, and a collective that a live
  worker never joins fails after ``CELLGEN_COLLECTIVE_TIMEOUT`` seconds;
- a tiny Vanilla-GAN on two workers (1 epoch);
- a tiny DDIM on two workers (2 epochs), whose worker 1 is killed once the chief has written
  the first epoch's checkpoint: the chief must stop with a clear error; both workers then
  resume from the chief's checkpoint and finish;
- the reference: the same DDIM (2 epochs) and GAN in one process with ``--strategy cpu:2``.

The two-worker losses equal those of one process with as many replicas (same global batch,
same seed): each replica gets the same half of every global batch and draws the same noise
(the noise seeds include the replica id). They differ from a one-replica run: the noise of the
second half of a batch is drawn from replica 1's seeds, and batch normalisation normalises each
replica's half with its own statistics.
"""

from __future__ import annotations

import csv
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.multiworker_worker import Processes, start, start_single

# Seconds any process group may take: a hang fails the test instead of blocking it. Generous, as a
# machine shared with other jobs can be several times slower than the ~1 min the module takes alone.
WAIT = 480
KILL_TIMEOUT = 60  # CELLGEN_COLLECTIVE_TIMEOUT of the DDIM cluster (the heartbeats usually notice first)
PROBE_TIMEOUT = 8  # CELLGEN_COLLECTIVE_TIMEOUT of the probe cluster

COMMON = ["--size", "16", "--batch-size", "32", "--precision", "fp32", "--seed", "3", "--quiet"]
# Sample grids and kept models after the last epoch only (save_every=0, sample_every=0): less work per worker.
DDIM = ["--config", "ddim_fast", "--set", "depth=2", "--set", "base_width=8", "--set", "block_depth=1",
        "--set", "grid_size=4", "--set", "diffusion_steps=3", "--set", "normalizer_batches=2",
        "--set", "save_every=0", "--set", "sample_every=0", "--epochs", "2", *COMMON]
GAN = ["--config", "gan_fast", "--set", "depth_g=16", "--set", "depth_d=8", "--set", "sample_count=4",
       "--set", "init_std=0", "--epochs", "1", *COMMON]


def _data() -> str:
    from cellgen.sample_data import sample_path

    return str(sample_path("train"))


def _history(run: Path) -> list[dict[str, float]]:
    with open(run / "logs" / "history.csv", newline="", encoding="utf-8") as handle:
        return [{key: float(value) for key, value in row.items() if value not in ("", "NA")}
                for row in csv.DictReader(handle)]


class Launched:
    """Every process group of the module, started at once (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        data = _data()
        self.ddim_out, self.gan_out = root / "ddim" / "run", root / "gan" / "run"
        self.ref_ddim, self.ref_gan = root / "reference" / "ddim", root / "reference" / "gan"
        self.groups: list[Processes] = []
        try:
            self._start(data)
        except BaseException:
            self.stop()
            raise

    def _start(self, data: str) -> None:
        root = self.root
        self.probe = self._group(start([["probe", data]] * 2, root / "probe", collective_timeout=PROBE_TIMEOUT))
        self.ddim = self._group(start([["train", "train_ddim", *DDIM, "--data", data, "--out", str(self.ddim_out),
                                        "--strategy", "multiworker"]] * 2, root / "ddim",
                                      collective_timeout=KILL_TIMEOUT))
        self.gan = self._group(start([["train", "train_vanilla_gan", *GAN, "--data", data, "--out", str(self.gan_out),
                                       "--strategy", "multiworker"]] * 2, root / "gan"))
        self.reference = self._group(start_single(
            ["train", "train_ddim", *DDIM, "--data", data, "--out", str(self.ref_ddim), "--strategy", "cpu:2", "+++",
             "train_vanilla_gan", *GAN, "--data", data, "--out", str(self.ref_gan), "--strategy", "cpu:2"],
            root / "reference"))
        self.killed_at: float | None = None
        self._watcher = threading.Thread(target=self._kill_worker_after_first_checkpoint, daemon=True)
        self._watcher.start()

    def _group(self, processes: Processes) -> Processes:
        self.groups.append(processes)
        return processes

    def _kill_worker_after_first_checkpoint(self) -> None:
        checkpoint = self.ddim_out / "checkpoints" / "epoch-0001" / "state.json"
        chief, worker = self.ddim.procs
        while chief.poll() is None and worker.poll() is None:  # the test ends them at the latest
            if checkpoint.is_file():
                worker.kill()
                self.killed_at = time.monotonic()
                return
            time.sleep(0.05)

    def reference_done(self) -> None:
        codes = self.reference.wait(WAIT)
        assert codes == [0], self.reference.tail(0)

    def stop(self) -> None:
        for group in self.groups:
            group.stop()


def _error_line(output: str) -> str:
    """The script's one-line ``error: ...`` (TensorFlow's own log lines may surround it)."""
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert errors, output[-3000:]
    return errors[-1]


def _event_pids(run: Path) -> set[str]:
    """The pids of the processes that wrote the run's TensorBoard event files (``...tfevents.TIME.HOST.PID.N.v2``)."""
    names = [path.name for path in run.glob("logs/tensorboard/**/events.out.tfevents.*")]
    assert names, "no TensorBoard events"
    return {re.fullmatch(r"events\.out\.tfevents\.\d+\.(.+)\.(\d+)\.\d+\.v2", name).group(2) for name in names}


def _assert_chief_only(run: Path, chief_pid: int, sessions: int = 1) -> None:
    """Files written by the chief process alone: TensorBoard event files carry the writer's pid,
    the lock its holder, ``run.log`` one line per session."""
    assert _event_pids(run) == {str(chief_pid)}
    assert f"process {chief_pid} " in (run / ".lock").read_text()
    log = (run / "logs" / "run.log").read_text().splitlines()
    sessions_logged = [line for line in log if "training images" in line]
    assert len(sessions_logged) == sessions, sessions_logged
    assert "2 replica(s)" in sessions_logged[-1]
    assert not list(run.rglob(".tmp-*")), "a half-written checkpoint was left behind"


def _assert_scratch_removed(processes: Processes, index: int) -> None:
    """A non-chief worker that exited writes nothing outside its private folder, and removes it."""
    assert not list(processes.tmps[index].glob("cellgen-worker-*")), list(processes.tmps[index].iterdir())


def test_tf_config_and_collective_timeout_settings(monkeypatch):
    from cellgen.distribute import COLLECTIVE_TIMEOUT_ENV, StrategyError, collective_timeout, make_strategy

    monkeypatch.delenv(COLLECTIVE_TIMEOUT_ENV, raising=False)
    assert collective_timeout() == 300
    monkeypatch.setenv(COLLECTIVE_TIMEOUT_ENV, "12.5")
    assert collective_timeout() == 12.5
    monkeypatch.setenv(COLLECTIVE_TIMEOUT_ENV, "0")
    assert collective_timeout() is None
    for bad in ("soon", "-1", "nan"):
        monkeypatch.setenv(COLLECTIVE_TIMEOUT_ENV, bad)
        with pytest.raises(StrategyError, match=COLLECTIVE_TIMEOUT_ENV):
            collective_timeout()
    monkeypatch.delenv(COLLECTIVE_TIMEOUT_ENV)
    cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    for tf_config, message in ((["not", "a", "dict"], "cluster"), ({"cluster": {}}, "cluster"),
                               ({"cluster": cluster}, "task"),
                               ({"cluster": cluster, "task": {"type": "worker", "index": 2}}, "index 2")):
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
        with pytest.raises(StrategyError, match=message):
            make_strategy("multiworker")
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(StrategyError, match="JSON"):
        make_strategy("multiworker")


def _check_probe(launched: Launched) -> None:
    """The kept files of a class filter and a scarcity cap agree across workers; a mismatch is a
    one-line error; a collective that a live worker never joins times out."""
    probe = launched.probe
    chief = probe.procs[0]
    chief.wait(timeout=WAIT)
    outputs = [probe.output(0), probe.output(1)]
    for output in outputs:
        assert "strategy reused" in output and "reader agreed" in output, output[-3000:]
        assert "disagreement: multi-worker: the workers disagree on resumed epoch (worker 0: 1, worker 1: 2)" \
            in output, output[-3000:]
    digests = {line for output in outputs for line in output.splitlines() if line.startswith("kept ")}
    assert len(digests) == 1 and "kept 19 files" in digests.pop()  # 12 of 24 basophils + 7 monocytes
    if chief.returncode < 0 and "Collective has timed out during execution" in outputs[0]:
        # Seen once in ~10 runs on a loaded 2-core machine: TensorFlow 2.21 itself crashed (SIGSEGV, in its
        # C++ collective abort) right after the timeout fired, before Python could report it. The property
        # tested here, that the chief stops instead of hanging, held; the one-line message is checked
        # whenever TensorFlow survives its own abort.
        probe.stop()
        return
    assert chief.returncode == 2, outputs[0][-3000:]
    error = _error_line(outputs[0])
    assert error.startswith("error: multi-worker set-up check stopped on worker 0: a collective waited more "
                            f"than {PROBE_TIMEOUT} s (CELLGEN_COLLECTIVE_TIMEOUT)"), error
    assert probe.procs[1].poll() is None and "stalling" in outputs[1]  # alive: the timeout, not a lost peer
    probe.stop()


def _check_gan(launched: Launched) -> None:
    """Both GAN workers exit 0; one run directory, written by the chief; the first-epoch losses of
    one process with two replicas."""
    gan = launched.gan
    assert gan.wait(WAIT) == [0, 0], gan.tail(0) + "\n---\n" + gan.tail(1)
    run = launched.gan_out
    for name in ("config.json", "config.toml", "classes.json", "environment.json", "COMPLETE.json",
                 "logs/history.csv", "metrics/train.json", "metrics/loss_curves.png", "samples/epoch-0000.png",
                 "samples/epoch-0001.png", "checkpoints/epoch-0001/state.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics" / "train.json").read_text())["replicas"] == 2
    _assert_chief_only(run, gan.procs[0].pid)
    _assert_scratch_removed(gan, 1)
    assert sorted(path.name for path in launched.root.joinpath("gan").iterdir() if path.is_dir()) == \
        ["run", "worker0-tmp", "worker1-tmp"]  # one run directory
    launched.reference_done()
    ours, reference = _history(run), _history(launched.ref_gan)
    assert ours[0].keys() == reference[0].keys()
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        np.testing.assert_allclose(ours[0][key], reference[0][key], rtol=1e-5, err_msg=key)


def _check_ddim_kill_and_resume(launched: Launched) -> None:
    """A killed worker stops the chief with a one-line error; both workers resume from the chief's
    checkpoint, exit 0 and reach the losses of an uninterrupted one-process run."""
    ddim = launched.ddim
    chief = ddim.procs[0]
    try:
        chief.wait(timeout=WAIT)
    except Exception:
        pytest.fail(f"the chief did not stop after its worker was killed:\n{ddim.tail(0)}")
    assert launched.killed_at is not None, "worker 1 was never killed:\n" + ddim.tail(0)
    assert ddim.procs[1].wait(timeout=30) == -9
    stopped_after = time.monotonic() - launched.killed_at
    assert stopped_after < KILL_TIMEOUT + 60, stopped_after  # heartbeats: ~10 s; the collective timeout at most
    assert chief.returncode == 2, ddim.tail(0)
    error = _error_line(ddim.output(0))
    assert error.startswith("error: multi-worker training stopped on worker 0: "), error
    assert "worker 1" in error or "waited more than" in error, error
    assert "--resume" in error and "Traceback" not in ddim.output(0)
    run = launched.ddim_out
    assert [path.name for path in (run / "checkpoints").iterdir()] == ["epoch-0001"]
    assert not (run / "COMPLETE.json").exists()

    launched.reference_done()
    reference = _history(launched.ref_ddim)
    first = _history(run)[0]
    for key in ("noise_loss", "image_loss"):
        np.testing.assert_allclose(first[key], reference[0][key], rtol=1e-5, err_msg=key)

    # Resume: worker 1's scratch folder is empty; it must restore the chief's checkpoint.
    resumed = launched._group(start([["train", "train_ddim", "--out", str(run), "--resume", "--strategy",
                                      "multiworker", "--quiet"]] * 2, launched.root / "ddim", name="resume"))
    assert resumed.wait(WAIT) == [0, 0], resumed.tail(0) + "\n---\n" + resumed.tail(1)
    assert "resuming" in resumed.output(1) and "after epoch 1" in resumed.output(1), resumed.tail(1)
    history = _history(run)
    assert [row["epoch"] for row in history] == [0, 1]
    for key in ("noise_loss", "image_loss"):  # the same as an uninterrupted run
        np.testing.assert_allclose(history[1][key], reference[1][key], rtol=1e-5, err_msg=key)
    for name in ("COMPLETE.json", "models/diffusion-epoch-0002.keras",
                 "samples/epoch-0002.png", "checkpoints/epoch-0002/state.json", "metrics/train.json",
                 "metrics/normalizer.json", "metrics/loss_curves.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "metrics" / "train.json").read_text())["epochs"] == 2
    log = (run / "logs" / "run.log").read_text()
    assert f"resumed from {run / 'checkpoints' / 'epoch-0001'}" in log
    assert _event_pids(run) <= {str(ddim.procs[0].pid), str(resumed.procs[0].pid)}  # the chiefs only
    assert f"process {resumed.procs[0].pid} " in (run / ".lock").read_text()
    _assert_scratch_removed(resumed, 1)


def test_two_workers_on_loopback(tmp_path):
    """One test (not a module fixture shared by several): under ``pytest -n 2`` the tests of a module
    may go to different xdist workers, and each would start every process again."""
    launched = Launched(tmp_path)
    try:
        _check_probe(launched)
        _check_gan(launched)
        _check_ddim_kill_and_resume(launched)
    finally:
        launched.stop()
