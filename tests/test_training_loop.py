"""The shared training loop (cellgen/training.py) and the run bookkeeping it relies on.

A tiny DDIM stands in for every stage: they all go through the same ``run_training``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cellgen.cli.train_ddim import main
from cellgen.runs import RunDir, RunError, TrainingState, read_json

TINY = ["--config", "ddim_fast", "--size", "16", "--batch-size", "16", "--precision", "fp32", "--set", "depth=2",
        "--set", "base_width=8", "--set", "block_depth=1", "--set", "grid_size=4", "--set", "diffusion_steps=2",
        "--set", "normalizer_batches=2", "--set", "save_every=1", "--set", "sample_every=0", "--quiet"]


@pytest.fixture(scope="module")
def data():
    from cellgen.sample_data import sample_path

    return str(sample_path("train"))


def weights(run: Path, epoch: int) -> list[np.ndarray]:
    from cellgen.diffusion.sampling import load_diffusion_model

    model, _ = load_diffusion_model(run, epoch)
    return [np.asarray(value) for value in model.get_weights()]


def history_epochs(run: Path) -> list[int]:
    with open(run / "logs" / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


@pytest.fixture(scope="module")
def straight(tmp_path_factory, data) -> Path:
    out = tmp_path_factory.mktemp("loop") / "straight"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "4"]) == 0
    return out


def test_a_run_stopped_after_epoch_2_and_resumed_ends_like_one_run_straight_through(straight, tmp_path, data):
    out = tmp_path / "resumed"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "2"]) == 0
    assert main(["--out", str(out), "--resume", "--epochs", "4", "--quiet"]) == 0
    for ours, theirs in zip(weights(out, 4), weights(straight, 4)):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert history_epochs(out) == [0, 1, 2, 3]
    assert read_json(out / "config.json")["epochs"] == 4  # the run's length grows with the session


def test_resume_restores_the_previous_checkpoint_when_the_newest_is_damaged(straight, tmp_path, capsys):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(straight, out)
    (out / ".lock").unlink(missing_ok=True)
    newest = TrainingState(out / "checkpoints").latest()
    assert newest.name == "epoch-0004"
    weights_file = newest / "diffusion.weights.h5"
    weights_file.write_bytes(weights_file.read_bytes()[:1000])  # a crash in the middle of a write
    assert main(["--out", str(out), "--resume", "--epochs", "5", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "epoch-0004" in output and "damaged" in output and "after epoch 3 (epoch-0003)" in output
    assert history_epochs(out) == [0, 1, 2, 3, 4]


def test_a_set_given_with_resume_holds_for_that_session_only(tmp_path, data):
    out = tmp_path / "run"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1"]) == 0
    assert main(["--out", str(out), "--resume", "--epochs", "2", "--set", "learning_rate=3e-4", "--quiet"]) == 0
    saved = read_json(out / "config.json")
    assert saved["learning_rate"] == 1e-3 and saved["epochs"] == 2
    sessions = sorted((out / "logs").glob("session-*.json"))
    assert sessions and read_json(sessions[-1])["learning_rate"] == 3e-4
    assert RunDir.open(out).is_complete


def test_keep_set_writes_a_resumed_sessions_settings_into_the_config_and_the_log_says_what_was_set(
        tmp_path, data, capsys):
    out = tmp_path / "run"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1"]) == 0
    assert main(["--out", str(out), "--resume", "--epochs", "2", "--set", "learning_rate=3e-4", "--quiet"]) == 0
    assert "learning_rate=0.0003 hold(s) for this session only" in capsys.readouterr().out
    assert main(["--out", str(out), "--resume", "--epochs", "3", "--set", "learning_rate=2e-4", "--keep-set",
                 "--quiet"]) == 0
    saved = read_json(out / "config.json")
    assert saved["learning_rate"] == 2e-4 and saved["epochs"] == 3
    log = (out / "logs" / "run.log").read_text()
    assert "for this session only: learning_rate=0.0003 (saved: 0.001)" in log
    assert "kept in config.json: learning_rate=0.0002 (saved: 0.001)" in log


def test_a_resumed_session_that_fails_is_not_complete(tmp_path, data):
    out = tmp_path / "run"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1"]) == 0
    assert (out / "COMPLETE.json").is_file()
    assert main(["--out", str(out), "--resume", "--epochs", "3", "--set", "learning_rate=1e30", "--quiet"]) == 3
    assert not (out / "COMPLETE.json").exists()


def test_a_second_process_cannot_train_into_a_locked_run(tmp_path, data):
    out = tmp_path / "run"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1"]) == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom cellgen.runs import RunDir\n"
                               f"RunDir({str(out)!r}).lock()\nprint('locked', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        RunDir._held_locks.pop(str(out.resolve()), None)  # this process released it long ago
        with pytest.raises(RunError, match="in use by process"):
            RunDir.create(out, RunDir.open(out).load_config(__import__("cellgen.diffusion.config", fromlist=["x"])
                                                             .DiffusionConfig), resume=True)
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_an_attempt_that_stopped_before_its_first_checkpoint_is_started_over(tmp_path, data, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"kind": "ddim"}))
    (out / "logs").mkdir()
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1"]) == 0
    assert "starting over" in capsys.readouterr().out
    assert RunDir.open(out).is_complete


def test_resume_of_an_empty_folder_says_it_starts_a_new_run(tmp_path, data, capsys):
    out = tmp_path / "new"
    assert main([*TINY, "--data", data, "--out", str(out), "--epochs", "1", "--resume"]) == 0
    assert "holds no run yet" in capsys.readouterr().out


def test_run_bookkeeping(tmp_path):
    run = RunDir(tmp_path)
    (tmp_path / "models").mkdir()
    for name in ("generator-epoch-0002.keras", "discriminator-epoch-0002.keras", "generator-epoch-0005.keras",
                 "generator-epoch-x.keras"):
        (tmp_path / "models" / name).write_bytes(b"")
    assert run.saved_epochs("generator") == [2, 5]
    assert run.saved_epochs("generator", together_with=("discriminator",)) == [2]
    assert run.resolve_epoch("generator") == 5 and run.resolve_epoch("generator", 2) == 2
    with pytest.raises(RunError, match="saved epochs: 2, 5"):
        run.resolve_epoch("generator", 3)
    with pytest.raises(RunError, match="no saved model"):
        run.resolve_epoch("encoder")


def test_a_corrupt_image_found_during_training_is_a_one_line_error_and_the_rerun_starts_over(tmp_path, data,
                                                                                             capsys):
    import shutil

    images = tmp_path / "train"
    shutil.copytree(data, images)
    victim = sorted((images / "neutrophil").iterdir())[-1]
    victim.write_bytes(victim.read_bytes()[:200])  # a truncated JPEG, found only when decoded
    out = tmp_path / "run"
    # normalizer_batches=1: the statistics pass reads one batch, so the bad file is usually met inside fit
    code = main([*TINY, "--data", str(images), "--out", str(out), "--epochs", "1", "--set", "normalizer_batches=1"])
    error = capsys.readouterr().err
    assert code == 2, error
    assert victim.name in error and "Traceback" not in error and len(error.strip().splitlines()) == 1
    shutil.copy2(Path(data) / "neutrophil" / victim.name, victim)  # the user fixes the file ...
    assert main([*TINY, "--data", str(images), "--out", str(out), "--epochs", "1"]) == 0  # ... and runs again


def test_training_reader_scans_the_data_once_so_each_warning_is_printed_once(tmp_path, capsys):
    from cellgen.images import write_rgb
    from cellgen.training import training_reader

    rng = np.random.default_rng(0)
    for name, count in (("lymphocyte", 60), ("neutrophil", 60), ("basophil", 1)):
        folder = tmp_path / name
        folder.mkdir()
        for index in range(count):
            write_rgb(folder / f"{name}-{index}.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
    notes = []
    reader = training_reader(str(tmp_path), batch_size=4, printer=notes.append, image_size=8)
    assert reader.drop_remainder and len(reader) == 121 // 4
    rare = [line for line in capsys.readouterr().err.splitlines() if "basophil" in line]
    assert len(rare) == 1, rare
    # A set smaller than one batch: one batch of all of it per step, said once.
    # (16 px from 8-px files: the upscaling warning must not come twice either.)
    small = training_reader(str(tmp_path / "basophil"), batch_size=4, printer=notes.append, image_size=16,
                            verify=True)
    assert not small.drop_remainder and len(small) == 1
    upscaled = [line for line in capsys.readouterr().err.splitlines() if "upscaled" in line]
    assert len(upscaled) == 1, upscaled
    assert notes == ["note: 1 training images are fewer than batch_size=4: each step trains on all 1"]
