"""compare_generators.py and cellgen.study.compare: the Matos comparison end to end on a tiny subset, and its parts."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from cellgen.cli.compare_generators import main, parse_overrides
from cellgen.config import ConfigError
from cellgen.study import compare
from cellgen.study.compare import (MODEL_NAMES, Comparison, ProportionalSampler, epochs_that_fit, markdown_table,
                                   selected_models)

# Tiny networks for every model; the code paths are those of the full presets.
TINY_SETS = [
    "cvae:latent_dim=8", "cvae:encoder_filters=[8,16,32]", "cvae:batch_size=16", "cvae:sample_every=0",
    "dcgan:latent_dim=16", "dcgan:depth_g=32", "dcgan:depth_d=8", "dcgan:batch_size=16",
    "ddpm:widths=[8,16]", "ddpm:batch_size=16", "ddpm:timesteps=20", "ddpm:sample_every=0",
    "ddim:widths=[8,16]", "ddim:recurrence=1", "ddim:batch_size=16", "ddim:sample_every=0",
    "ddim:normalizer_batches=1",
]


def _tiny_extractor(path):
    """A small 'domain classifier' saved as .keras: its 8 penultimate features are the extractor's."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(8, activation="tanh", name="features")(x)
    outputs = keras.layers.Dense(8, activation="softmax")(x)
    keras.Model(inputs, outputs).save(path)
    return path


def test_comparison_on_the_tiny_subset_writes_one_row_per_model(tiny_pbc, tmp_path, capsys):
    extractor = _tiny_extractor(tmp_path / "extractor.keras")
    out = tmp_path / "compare"
    argv = ["--data", str(tiny_pbc), "--out", str(out), "--images-per-class", "4", "--budget-minutes", "0.05",
            "--seeds", "2", "--n", "24", "--sample-pool", "24", "--sampling-images", "24", "--sample-batch-size", "12",
            "--grid-images", "16", "--extractor", str(extractor), "--kid-subset-size", "12",
            "--cache-dir", str(tmp_path / "cache"), "--limit-samples", "ddpm=12", "--quiet"]
    for assignment in TINY_SETS:
        argv += ["--set", assignment]
    assert main(argv) == 0, capsys.readouterr().err
    table = json.loads((out / "table.json").read_text())
    rows = table["rows"]
    assert [row["name"] for row in rows] == list(MODEL_NAMES)
    for row in rows:
        assert row["epochs"] >= 1 and row["train_seconds"] > 0 and row["images_per_second"] > 0
        assert row["over_budget"] == (row["train_seconds"] > 3.0)
        # 32 images, batches of 16: 2 steps per epoch; the DCGAN preset takes 3 generator steps per batch.
        assert row["batch_size"] == 16
        assert row["optimizer_steps"] == row["epochs"] * 2 * (3 if row["name"] == "dcgan" else 1)
        for metric in ("fid", "kid", "precision", "recall"):
            assert len(row["summary"][metric]["values"]) == 2 and np.isfinite(row["summary"][metric]["mean"])
        assert 0 <= row["summary"]["precision"]["mean"] <= 1 and 0 <= row["summary"]["recall"]["mean"] <= 1
        assert (out / "grids" / f"{row['name']}.png").is_file()
        assert (out / "eval" / row["name"] / "metrics.json").is_file()
        assert (out / "runs" / row["name"] / "config.json").is_file()
    assert (out / "grids" / "all_models.png").is_file()
    limited = {row["name"]: (row["limited"], row["sampled_images"], row["n"]) for row in rows}
    assert limited == {"cvae": (False, 24, 24), "dcgan": (False, 24, 24), "ddpm": (True, 12, 12),
                       "ddim": (False, 24, 24)}
    assert "equal wall-clock budget of 0.05 min" in table["settings"]["training"]
    markdown = (out / "table.md").read_text()
    body = [line for line in markdown.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(body) == 1 + len(MODEL_NAMES)  # header + one row per model
    assert "170.05 ± 0.64" in markdown and "122.26 ± 0.76" in markdown
    kinds = {json.loads((out / "runs" / name / "config.json").read_text())["kind"] for name in MODEL_NAMES}
    assert kinds == {"cvae", "vanilla_gan", "ddim"}
    # The subset is linked, 4 images per class.
    assert len(list((out / "data").rglob("*.jpg"))) == 32

    # --resume reuses the finished models instead of training again.
    before = (out / "results" / "cvae.json").read_text()
    assert main(argv + ["--resume", "--models", "cvae"]) == 0
    assert (out / "results" / "cvae.json").read_text() == before
    assert "reusing" in capsys.readouterr().out


def test_equal_epochs_with_fresh_samples_per_seed_and_the_default_domain_extractor(tiny_pbc, tmp_path):
    out = tmp_path / "compare"
    # No --extractor: the default trains a domain classifier on the training images (no download).
    argv = ["--data", str(tiny_pbc), "--out", str(out), "--images-per-class", "3", "--epochs", "2",
            "--models", "cvae", "--seeds", "2", "--n", "12", "--sampling-images", "10", "--sample-batch-size", "8",
            "--kid-subset-size", "6", "--cache-dir", str(tmp_path / "cache"), "--quiet",
            "--set", "extractor:epochs=1", "--set", "extractor:cnn_width=4", "--set", "extractor:cnn_blocks=2",
            "--set", "extractor:batch_size=8"] + [item for assignment in TINY_SETS[:4]
                                                  for item in ("--set", assignment)]
    assert main(argv) == 0
    row = json.loads((out / "table.json").read_text())["rows"][0]
    assert row["epochs"] == 2 and row["sampled_images"] == 10 and not row["over_budget"]
    # 24 images in batches of 16: two steps per epoch (the last batch is partial).
    assert (row["optimizer_steps"], row["batch_size"]) == (4, 16)
    assert "| 2 | 4 x 16 |" in (out / "table.md").read_text()
    evaluation = json.loads((out / "eval" / "cvae" / "metrics.json").read_text())
    assert evaluation["generated"]["source"] == "sampler:cvae"  # new images for every seed
    assert [seed["n_generated"] for seed in evaluation["per_seed"]] == [12, 12]
    assert evaluation["settings"]["extractor"]["name"].startswith("classifier-")
    assert sorted((out / "extractor").rglob("best.keras"))
    table = json.loads((out / "table.json").read_text())
    assert table["settings"]["extractor"].startswith("domain classifier: classifier_fast")
    # commands.sh: the extractor's classifier experiment, then the CVAE's training call.
    lines = (out / "commands.sh").read_text().splitlines()
    assert lines[0].startswith("python evaluate_classifier.py") and lines[1].startswith("python train_cvae.py")
    assert main(argv) == 2  # the comparison exists and --resume was not given


def test_imagenet_weights_offline_fail_before_any_training(tiny_pbc, tmp_path, no_imagenet_weights, capsys):
    """Issue 21: --extractor inception without internet was a traceback after training."""
    out = tmp_path / "out"
    assert main(["--data", str(tiny_pbc), "--out", str(out), "--models", "dcgan", "--extractor", "inception"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "cannot be downloaded" in error
    assert "--inception-weights FILE" in error and "domain" in error
    assert not out.exists()  # nothing was trained
    # The default needs no download.
    assert Comparison(data=str(tiny_pbc), out=str(out)).extractor == "domain"
    assert main(["--data", str(tiny_pbc), "--out", str(out), "--extractor", str(tmp_path / "none.keras")]) == 2
    assert "none.keras" in capsys.readouterr().err


def test_missing_stage_is_a_one_line_error(tiny_pbc, tmp_path, capsys, monkeypatch):
    argv = ["--data", str(tiny_pbc), "--out", str(tmp_path / "out"), "--models", "cvae,ddim"]
    assert main(argv[:-1] + ["cvae", "--preset", "cvae=no_such_preset"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: the cvae stage is not available") and "no_such_preset" in error
    assert len(error.splitlines()) == 1

    real_find_spec = compare.importlib.util.find_spec
    monkeypatch.setattr(compare.importlib.util, "find_spec",
                        lambda name: None if name == "cellgen.diffusion.train_lib" else real_find_spec(name))
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert "ddim stage is not available" in error and "cellgen.diffusion.train_lib" in error
    assert not (tmp_path / "out").exists()  # nothing was trained


@pytest.mark.parametrize("extra, expected", [
    (["--models", "cvae,gan"], "--models"),
    (["--set", "cvae-latent_dim=3"], "--set expects MODEL:KEY=VALUE"),
    (["--preset", "vae=x"], "--preset expects MODEL=PRESET"),
    (["--n", "0"], "--n"),
    (["--sample-pool", "10", "--n", "20"], "--sample-pool"),
    (["--budget-minutes", "0"], "--budget-minutes"),
    (["--limit-samples", "ddpm=4"], "--limit-samples"),
    (["--limit-samples", "unet=40"], "--limit-samples"),
    (["--real", "/nonexistent/real"], "/nonexistent/real"),
])
def test_bad_options_name_the_option(tiny_pbc, tmp_path, capsys, extra, expected):
    assert main(["--data", str(tiny_pbc), "--out", str(tmp_path / "out")] + extra) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and expected in error and len(error.splitlines()) == 1


def test_bad_data_folder(tmp_path, capsys):
    assert main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 2
    assert "--data" in capsys.readouterr().err


def test_epochs_that_fit_counts_set_up_once_it_can_be_estimated():
    # One call of one epoch: its 30 s (set-up included) is the per-epoch estimate.
    more, per_epoch = epochs_that_fit([{"epochs_from": 0, "epochs_to": 1, "seconds": 30.0}], 100.0, margin=1.0)
    assert (more, per_epoch) == (3, 30.0)
    # 1 epoch in 30 s and 3 more in 50 s: 20 s set-up + 10 s per epoch.
    calls = [{"epochs_from": 0, "epochs_to": 1, "seconds": 30.0}, {"epochs_from": 1, "epochs_to": 4, "seconds": 50.0}]
    more, per_epoch = epochs_that_fit(calls, 125.0, margin=1.0)
    assert per_epoch == pytest.approx(10.0) and more == 10
    assert epochs_that_fit(calls, 5.0)[0] == 0
    # A call of several epochs measured one epoch from its checkpoints (8 s): set-up 50 - 3 x 8 = 26 s.
    calls[1]["epoch_seconds"] = 8.0
    more, per_epoch = epochs_that_fit(calls, 110.0, margin=1.0)
    assert per_epoch == 8.0 and more == 10
    assert epochs_that_fit([], 100.0)[0] == 0


def test_model_selection_and_overrides():
    models = selected_models(["ddim", "cvae"], {"ddim": "kerasio_ddim64"})
    assert [spec.name for spec in models] == ["ddim", "cvae"] and models[0].preset == "kerasio_ddim64"
    assert dict(models[0].sampler_options) == {"steps": 20, "eta": 0.0} and models[0].paper_fid is None
    assert [spec.trainer for spec in models] == ["cellgen.diffusion.train_lib", "cellgen.vae.train_lib"]
    ddpm = selected_models(["ddpm"], {"ddpm": "matos2025_ddpm28"})[0]
    assert ddpm.paper_fid == (238.40, 0.62)  # Matos Table 3: the baseline U-Net at T = 500
    assert selected_models(["ddpm"])[0].paper_fid == (122.26, 0.76)  # Table 4: the deeper U-Net
    assert selected_models(["dcgan"], {"dcgan": "gan_fast"})[0].paper_fid is None
    overrides, extractor = parse_overrides(["cvae:latent_dim=4", "dcgan:depth_g=8", "cvae:kl_weight=1",
                                            "extractor:epochs=2"])
    assert overrides == {"cvae": {"latent_dim": "4", "kl_weight": "1"}, "dcgan": {"depth_g": "8"}}
    assert extractor == {"epochs": "2"}
    with pytest.raises(ConfigError, match="twice"):
        selected_models(["cvae", "cvae"])


def test_training_calls_are_typed_requests_written_to_commands_sh(tmp_path):
    """Each training call is a RunRequest; its command line resolves to the same config."""
    from cellgen.cli.options import request_from_args
    from cellgen.cli.train_ddim import build_parser
    from cellgen.diffusion.train_lib import resolve_config

    spec = selected_models(["ddim"])[0]
    request = compare.training_request(spec, tmp_path / "runs" / "ddim", "data/train", 28, 3, "fp32",
                                       {"widths": "[8,16]", "batch_size": "16"}, 4, resume=False)
    parsed = request_from_args(build_parser().parse_args(request.to_argv()))
    assert resolve_config(parsed) == resolve_config(request)
    config = resolve_config(request)
    assert (config.image_size, config.seed, config.epochs, config.widths, config.data) == (28, 3, 4, [8, 16],
                                                                                          "data/train")


class _FakeConditionalSampler:
    kind = "cvae"
    image_size = 4
    classes = ["a", "b", "c"]

    def sample(self, count, seed, class_name=None, batch_size=64):
        value = {"a": -1.0, "b": 0.0, "c": 1.0}[class_name]
        return np.full((count, 4, 4, 3), value, np.float32)


def test_proportional_sampler_follows_the_training_mix():
    sampler = ProportionalSampler(_FakeConditionalSampler(), {"a": 100, "b": 300, "c": 0})
    assert sampler.classes is None and sampler.image_size == 4
    images = sampler.sample(4000, seed=3)
    values = images[:, 0, 0, 0]
    assert images.shape == (4000, 4, 4, 3)
    assert abs(np.mean(values == -1.0) - 0.25) < 0.03 and abs(np.mean(values == 0.0) - 0.75) < 0.03
    assert not np.any(values == 1.0)
    np.testing.assert_array_equal(images, sampler.sample(4000, seed=3))
    assert np.all(sampler.sample(5, seed=0, class_name="c") == 1.0)


def test_markdown_table_has_the_paper_and_extra_columns():
    summary = {name: {"mean": value, "std": value / 10, "values": [value]} for name, value in
               (("fid", 150.0), ("kid", 0.0123), ("precision", 0.7), ("recall", 0.4))}
    rows = [{"label": "CVAE", "preset": "matos2025_cvae28", "paper_fid": [170.05, 0.64], "summary": summary,
             "train_seconds": 90.0, "epochs": 3, "images_per_second": 1234.5, "sampling": "one pass",
             "over_budget": False, "limited": True, "sampled_images": 50, "n": 50}]
    text = markdown_table({"extractor": "classifier x", "training": "3 epochs per model"}, rows)
    header = next(line for line in text.splitlines() if line.startswith("| model"))
    for column in ("Matos FID", "FID", "KID", "precision", "recall", "training time", "sampling (images/s)"):
        assert column in header
    row = next(line for line in text.splitlines() if line.startswith("| CVAE, `matos2025_cvae28`"))
    assert "170.05 ± 0.64" in row and "150.00 ± 15.00" in row and "12.30 ± 1.23" in row and "1.5 min" in row
    assert "- extractor: classifier x" in text and "one pass; 50 images only, n = 50" in row
