"""Tiny fp32 runs of every trainer, shared by the recording tool and ``test_golden_losses.py``.

``python -m tests.golden_runs record`` (run from the repository root) wrote
``tests/fixtures/first_epoch_losses.json`` with the code *before* the shared training
loop (issue 15), and copied the run directories to ``tests/fixtures/old_runs/`` so that
runs written by the old code are still tested for generation. The test re-runs the same
commands with today's code and asserts the same first-epoch losses.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"
LOSSES_FILE = FIXTURES / "first_epoch_losses.json"
OLD_RUNS = FIXTURES / "old_runs"
COMMON = ["--precision", "fp32", "--seed", "3", "--quiet"]


def _sample(split: str) -> str:
    from cellgen.sample_data import sample_path

    return str(sample_path(split))


def commands(root: Path) -> dict[str, tuple[str, list[str], Path]]:
    """name -> (cli module, argv, run directory whose logs/history.csv holds the losses)."""
    train = _sample("train")
    gan = root / "gan"
    return {
        "vanilla_gan": ("train_vanilla_gan", ["--config", "gan_fast", "--data", train, "--out", str(gan),
                                              "--size", "16", "--batch-size", "32", "--epochs", "1",
                                              "--set", "depth_g=16", "--set", "depth_d=8",
                                              "--set", "sample_count=4", "--set", "init_std=0", *COMMON], gan),
        "acgan": ("train_acgan", ["--config", "acgan_fast", "--backbone", str(gan), "--data", train,
                                  "--out", str(root / "acgan"), "--size", "16", "--batch-size", "32",
                                  "--epochs", "1", "--set", "head_units=16", "--set", "samples_per_class=2",
                                  *COMMON], root / "acgan"),
        "latent_encoder": ("train_latent_encoder", ["--generator", str(gan), "--data", train,
                                                    "--out", str(root / "encoder"), "--epochs", "1",
                                                    "--batch-size", "32", "--set", "learning_rate=1e-4",
                                                    "--set", "sample_count=4", *COMMON], root / "encoder"),
        "ddim": ("train_ddim", ["--config", "ddim_fast", "--data", train, "--out", str(root / "ddim"),
                                "--size", "16", "--batch-size", "32", "--epochs", "1", "--set", "depth=2",
                                "--set", "base_width=8", "--set", "block_depth=1", "--set", "grid_size=4",
                                "--set", "diffusion_steps=3", "--set", "normalizer_batches=2",
                                "--set", "save_every=1", *COMMON], root / "ddim"),
        "cvae": ("train_cvae", ["--config", "matos2025_cvae28", "--data", train, "--out", str(root / "cvae"),
                                "--size", "16", "--batch-size", "32", "--epochs", "1", "--set", "latent_dim=8",
                                "--set", "encoder_filters=[8,16]", "--set", "samples_per_class=2",
                                "--set", "save_every=1", *COMMON], root / "cvae"),
        "classifier": ("evaluate_classifier", ["--config", "classifier_fast", "--train", train,
                                               "--val", _sample("val"), "--test", _sample("test"),
                                               "--out", str(root / "classifier"), "--size", "16",
                                               "--batch-size", "32", "--epochs", "1", "--arms", "baseline",
                                               "--seeds", "1", "--set", "cnn_width=4", "--set", "cnn_blocks=2",
                                               *COMMON], root / "classifier"),
    }


def first_epoch_losses(run_dir: Path) -> dict[str, float]:
    """The first row of every history.csv under ``run_dir`` (loss columns only)."""
    result = {}
    for path in sorted(run_dir.rglob("history.csv")):
        with open(path, newline="", encoding="utf-8") as handle:
            row = next(csv.DictReader(handle))
        prefix = str(path.relative_to(run_dir).parent)
        for key, value in row.items():
            if key != "epoch" and value not in ("", "NA", None):
                result[f"{prefix}:{key}"] = float(value)
    return result


def run_all(root: Path, names=None) -> dict[str, dict[str, float]]:
    import importlib

    losses = {}
    for name, (module, argv, run_dir) in commands(root).items():
        if names is not None and name not in names and name != "vanilla_gan":
            continue
        code = importlib.import_module(f"cellgen.cli.{module}").main(argv)
        assert code == 0, f"{name}: exit {code}"
        losses[name] = first_epoch_losses(run_dir)
    return losses


def record(root: Path) -> None:
    losses = run_all(root)
    FIXTURES.mkdir(parents=True, exist_ok=True)
    LOSSES_FILE.write_text(json.dumps(losses, indent=2, sort_keys=True) + "\n")
    if OLD_RUNS.exists():
        shutil.rmtree(OLD_RUNS)
    for name in ("gan", "acgan", "ddim", "cvae", "encoder"):
        # Only what generation reads: the config, classes and saved models.
        source, target = root / name, OLD_RUNS / name
        target.mkdir(parents=True)
        for file in ("config.json", "config.toml", "classes.json", "COMPLETE.json"):
            if (source / file).is_file():
                shutil.copy2(source / file, target / file)
        shutil.copytree(source / "models", target / "models")
    print(json.dumps(losses, indent=2))


if __name__ == "__main__":
    import tempfile

    import cellgen  # noqa: F401
    from cellgen.distribute import split_cpu

    split_cpu(2)  # as in the test session (tests/conftest.py)
    if sys.argv[1:] == ["record"]:
        with tempfile.TemporaryDirectory() as tmp:
            record(Path(tmp))
