"""``kill -9`` during training, then ``--resume`` (issue 21): the run continues from the newest intact
checkpoint, finishes, and ends with the weights of a run straight through (Vanilla-GAN and DDIM).

A training subprocess is killed with SIGKILL at three points, made deterministic by the test hook
``CELLGEN_TEST_KILL_AT=WHAT:N`` of :mod:`cellgen.runs` (the process kills itself at its N-th WHAT):

- ``batch``: in the middle of epoch 2, the last (after its first batch);
- ``checkpoint``: halfway through writing the checkpoint of epoch 2 (some files in the
  temporary folder, nothing renamed);
- ``model``: the first model file of epoch 2 written under its temporary name, not yet renamed
  (the checkpoint of epoch 2 is complete by then: the checkpoint callback runs before the
  snapshots, so the resumed session trains nothing and writes the missing models); and the
  same in epoch 1, whose missing models the resumed session writes before it trains epoch 2.

The six killed runs start together in the background while the two straight runs train in this
process; the resumed sessions run in this process too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 2
STEPS_PER_EPOCH = 2  # 32 images, batch 16
COMMON = ["--size", "16", "--batch-size", "16", "--precision", "fp32", "--seed", "3", "--quiet",
          "--epochs", str(EPOCHS)]
MODELS = {
    "train_vanilla_gan": ["--config", "gan_fast", *COMMON, "--set", "depth_g=16", "--set", "depth_d=8",
                          "--set", "sample_count=4", "--set", "save_every=1", "--set", "sample_every=100"],
    "train_ddim": ["--config", "ddim_fast", *COMMON, "--set", "depth=2", "--set", "base_width=8",
                   "--set", "block_depth=1", "--set", "grid_size=4", "--set", "diffusion_steps=2",
                   "--set", "normalizer_batches=2", "--set", "save_every=1", "--set", "sample_every=0"],
}
MODEL_FILES_PER_EPOCH = {"train_vanilla_gan": 2, "train_ddim": 1}  # generator + discriminator; the DDIM
# kill point -> (hook, the checkpoint the resumed session must start from)
KILLS = {
    "mid-epoch": (f"batch:{STEPS_PER_EPOCH + 1}", 1),
    "checkpoint-write": ("checkpoint:2", 1),
    "model-write": (None, 2),  # model:N, N from MODEL_FILES_PER_EPOCH: the first file of epoch 2
    "model-write-epoch-1": ("model:1", 1),  # epoch 1 checkpointed, its first model file half-written
}
LAUNCH = ("import sys\nimport cellgen\nfrom cellgen.distribute import split_cpu\nsplit_cpu(2)\n"
          "from importlib import import_module\n"
          "sys.exit(import_module('cellgen.cli.' + sys.argv[1]).main(sys.argv[2:]))")


def final_weights(script: str, run: Path) -> list[np.ndarray]:
    if script == "train_ddim":
        from cellgen.diffusion.sampling import load_diffusion_model

        model, _ = load_diffusion_model(run, EPOCHS)
        return [np.asarray(value) for value in model.get_weights()]
    from cellgen.gan.sampling import load_gan_models

    generator, discriminator, _ = load_gan_models(run, EPOCHS, rebuild=False)
    return [np.asarray(value) for value in generator.get_weights() + discriminator.get_weights()]


@pytest.fixture(scope="module")
def killed_and_straight(tmp_path_factory):
    """Starts the six killed runs, trains the two straight runs meanwhile, waits for the kills."""
    from cellgen.sample_data import sample_path

    root = tmp_path_factory.mktemp("kill")
    data = root / "data"
    for folder in sorted(Path(sample_path("train")).iterdir()):
        (data / folder.name).mkdir(parents=True)
        for image in sorted(folder.iterdir())[:4]:
            shutil.copy2(image, data / folder.name / image.name)
    env = {key: value for key, value in os.environ.items() if key != "CELLGEN_DEBUG"}
    killed = {}
    for script, argv in MODELS.items():
        for point, (hook, _) in KILLS.items():
            hook = hook or f"model:{MODEL_FILES_PER_EPOCH[script] + 1}"
            out = root / f"{script}-{point}"
            process = subprocess.Popen([sys.executable, "-c", LAUNCH, script, *argv, "--data", str(data),
                                        "--out", str(out)], cwd=ROOT, env={**env, "CELLGEN_TEST_KILL_AT": hook},
                                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            killed[script, point] = (process, out)
    import importlib

    straight = {}
    try:
        for script, argv in MODELS.items():
            straight[script] = root / f"{script}-straight"
            main = importlib.import_module(f"cellgen.cli.{script}").main
            assert main([*argv, "--data", str(data), "--out", str(straight[script])]) == 0
        for key, (process, out) in killed.items():
            output, _ = process.communicate(timeout=300)
            assert process.returncode == -signal.SIGKILL, f"{key}: exit {process.returncode}\n{output[-3000:]}"
    finally:
        for process, _ in killed.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return {key: out for key, (_, out) in killed.items()}, straight


@pytest.mark.parametrize("point", list(KILLS))
@pytest.mark.parametrize("script", list(MODELS))
def test_resume_after_kill_minus_9_ends_like_a_run_straight_through(killed_and_straight, script, point, capsys):
    import importlib

    from cellgen.runs import RunDir, TrainingState

    killed, straight = killed_and_straight
    out = killed[script, point]
    expected_checkpoint = KILLS[point][1]
    assert not RunDir(out).is_complete
    assert (out / ".lock").read_text().startswith("process ")  # left by the dead process: must not block
    if point == "checkpoint-write":
        assert list((out / "checkpoints").glob(".tmp-epoch-0002"))  # the half-written one
    if point == "model-write":
        assert list((out / "models").glob(".tmp-*-epoch-0002.keras"))
    assert TrainingState(out / "checkpoints").latest().name == f"epoch-{expected_checkpoint:04d}"

    main = importlib.import_module(f"cellgen.cli.{script}").main
    assert main(["--out", str(out), "--resume", "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"after epoch {expected_checkpoint} (epoch-{expected_checkpoint:04d})" in said, said
    assert RunDir(out).is_complete
    # Every epoch keeps its models (save_every=1), also one whose files the kill interrupted.
    assert not list((out / "models").glob(".tmp-*"))
    for epoch in range(1, EPOCHS + 1):
        assert len(list((out / "models").glob(f"*-epoch-{epoch:04d}.keras"))) == MODEL_FILES_PER_EPOCH[script]
    for ours, theirs in zip(final_weights(script, out), final_weights(script, straight[script]), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
