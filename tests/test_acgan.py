"""AC-GAN on a frozen Vanilla-GAN (K&C 2020): freezing, objective, run directory, resume, generation."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.cli.generate import main as generate_main
from cellgen.cli.train_acgan import main as acgan_main
from cellgen.cli.train_vanilla_gan import main as gan_main
from cellgen.config import ConfigError, load_config
from cellgen.data_reader import DataReader
from cellgen.gan.acgan_config import ACGANConfig
from cellgen.gan.acgan_model import ACGAN, class_accuracy
from cellgen.gan.acgan_networks import build_acgan_networks, freeze_backbone_networks
from cellgen.gan.acgan_sampling import generate_class_images
from cellgen.gan.acgan_train import check_backbone_compatible, follow_backbone
from cellgen.gan.config import VanillaGANConfig
from cellgen.gan.networks import build_gan_networks
from cellgen.gan.sampling import load_gan_models
from cellgen.runs import read_json
from cellgen.sampling import load_sampler

# init_std=0 (Glorot): a one-epoch backbone with DCGAN's N(0, 0.02) weights has features ~100x smaller
# than a trained one, which would make the auxiliary head's progress in a few dozen steps meaningless.
BACKBONE = ["--config", "gan_fast", "--set", "depth_g=32", "--set", "depth_d=8", "--batch-size", "32",
            "--set", "sample_count=4", "--set", "init_std=0", "--epochs", "1", "--quiet"]
FAST = ["--config", "acgan_fast", "--set", "head_units=32", "--set", "samples_per_class=3", "--epochs", "1",
        "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    from cellgen.sample_data import sample_path

    return sample_path("train")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory, data_dir) -> Path:
    """A one-epoch 32 px Vanilla-GAN run written by its script (shared; do not modify)."""
    out = tmp_path_factory.mktemp("acgan") / "gan"
    assert gan_main(BACKBONE + ["--data", str(data_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def acgan_run(backbone, data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("acgan") / "acgan"
    assert acgan_main(FAST + ["--backbone", str(backbone), "--data", str(data_dir), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def real_batch(data_dir):
    reader = DataReader(data_dir, image_size=32, batch_size=32, shuffle=True, seed=1)
    images, labels = next(iter(reader.epoch(0)))
    return images, labels, reader.classes


def weights_of(model: keras.Model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in model.weights]


def make_acgan(backbone, config: ACGANConfig, num_classes: int):
    generator, discriminator, _ = load_gan_models(backbone)
    if config.freeze_backbone:
        freeze_backbone_networks(generator, discriminator)
    acgan_g, acgan_d = build_acgan_networks(generator, discriminator, num_classes, config)
    model = ACGAN(acgan_g, acgan_d, config.latent_dim, num_classes, noise_seed=3)
    model.compile(g_optimizer=keras.optimizers.Adam(config.g_learning_rate, beta_1=0.5),
                  d_optimizer=keras.optimizers.Adam(config.d_learning_rate, beta_1=0.5))
    return model, generator, discriminator


def fit_steps(model, images, labels, steps: int):
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
    return model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)


def test_frozen_backbone_is_bit_identical_heads_change_and_aux_accuracy_rises(backbone, real_batch):
    images, labels, classes = real_batch
    config = ACGANConfig(image_size=32, head_units=64, backbone=str(backbone), d_learning_rate=1e-3)
    model, generator, discriminator = make_acgan(backbone, config, len(classes))
    # Batch-norm moving statistics are non-trainable weights: they must not move either.
    assert any("moving" in v.path for v in generator.weights)
    trunk_layers = [layer for layer in discriminator.layers if layer.name != "d_realness"]
    g_before = weights_of(generator)
    trunk_before = [np.array(w) for layer in trunk_layers for w in layer.get_weights()]
    realness_before = weights_of(discriminator.get_layer("d_realness"))
    heads = [model.generator.get_layer("g_head_0"), model.discriminator.get_layer("d_head_0"),
             model.discriminator.get_layer("aux_logits")]
    heads_before = [weights_of(layer) for layer in heads]

    def accuracy():
        _, probabilities = model.discriminator(images, training=False)
        return float(class_accuracy(labels, probabilities))

    accuracy_before = accuracy()
    history = fit_steps(model, images, labels, steps=60)
    accuracy_after = accuracy()

    assert all(np.isfinite(history.history[name][-1]) for name in ("d_loss", "g_loss"))
    assert accuracy_after >= max(0.4, accuracy_before + 0.25), (accuracy_before, accuracy_after)
    for before, after in zip(g_before, weights_of(generator)):
        assert np.array_equal(before, after)
    trunk_after = [np.array(w) for layer in trunk_layers for w in layer.get_weights()]
    assert len(trunk_after) > 0 and all(np.array_equal(b, a) for b, a in zip(trunk_before, trunk_after))
    realness_after = weights_of(discriminator.get_layer("d_realness"))
    assert not all(np.array_equal(b, a) for b, a in zip(realness_before, realness_after))
    for layer, before in zip(heads, heads_before):
        assert not np.array_equal(before[0], weights_of(layer)[0]), layer.name
    # Only the heads and the realness layer are trained.
    trained = {v.path.split("/")[0] for v in model.discriminator.trainable_variables}
    assert trained == {"d_realness", "d_head_0", "d_head_1", "d_head_2", "aux_logits"}
    assert {v.path.split("/")[0] for v in model.generator.trainable_variables} == {"g_head_0", "g_head_1", "g_head_2"}


def test_class_conditional_generation_shape_range_and_labels_matter(backbone):
    config = ACGANConfig(image_size=32, head_units=16, backbone=str(backbone), generator_head_output="linear")
    model, _, _ = make_acgan(backbone, config, 4)
    latents = np.random.default_rng(0).standard_normal((3, 100)).astype(np.float32)
    first = generate_class_images(model.generator, latents, np.zeros(3, int), 4)
    second = generate_class_images(model.generator, latents, np.full(3, 2), 4)
    assert first.shape == (3, 32, 32, 3) and first.dtype == np.float32
    assert first.min() >= -1 and first.max() <= 1
    assert not np.allclose(first, second)
    with pytest.raises(ValueError, match="class ids"):
        generate_class_images(model.generator, latents, np.full(3, 4), 4)


def test_script_writes_run_directory_and_generate_reads_it(acgan_run, tmp_path, data_dir):
    run = acgan_run
    classes = read_json(run / "classes.json")
    assert classes == DataReader(data_dir, image_size=32).classes and len(classes) == 8
    assert read_json(run / "config.json")["kind"] == "acgan"
    for name in ("samples/epoch-0000.png", "samples/epoch-0001.png", "metrics/loss_curves.png",
                 "models/acgan_generator-epoch-0001.keras", "checkpoints/epoch-0001/state.json", "COMPLETE.json"):
        assert (run / name).is_file(), name
    header = (run / "logs" / "history.csv").read_text().splitlines()[0]
    for metric in ("d_loss", "g_loss", "aux_acc_real", "aux_acc_fake"):
        assert metric in header
    metrics = read_json(run / "metrics" / "train.json")
    assert metrics["backbone"]["frozen"] is True
    assert 0 < metrics["parameters"]["generator_trainable"] < metrics["parameters"]["generator"]

    sampler = load_sampler(run)
    images = sampler.sample(5, seed=2, class_name=classes[1])
    assert images.shape == (5, 32, 32, 3) and -1 <= images.min() and images.max() <= 1
    np.testing.assert_array_equal(images, sampler.sample(5, seed=2, class_name=classes[1]))

    assert generate_main(["--run", str(run), "--class", classes[0], "--n", "3", "--out", str(tmp_path / "one"),
                          "--quiet"]) == 0
    assert len(list((tmp_path / "one").glob("*.png"))) == 3
    assert generate_main(["--run", str(run), "--per-class", "2", "--out", str(tmp_path / "all"), "--quiet"]) == 0
    # The per-class folders are a class-folder dataset (what evaluate_classifier.py --synthetic reads).
    synthetic = DataReader(tmp_path / "all", image_size=32, classes=classes)
    assert synthetic.num_images == 16 and set(synthetic.class_counts().values()) == {2}


def test_saved_generator_reloads_with_same_outputs(acgan_run):
    from cellgen.gan.acgan_sampling import load_acgan_generator

    generator, config, classes, epoch = load_acgan_generator(acgan_run)
    latents = np.random.default_rng(1).standard_normal((2, config.latent_dim)).astype(np.float32)
    again, *_ = load_acgan_generator(acgan_run, epoch)
    np.testing.assert_array_equal(generate_class_images(generator, latents, [0, 1], len(classes)),
                                  generate_class_images(again, latents, [0, 1], len(classes)))
    # The frozen backbone inside keeps its trainable=False flag through save/load.
    assert not generator.get_layer("generator").trainable


def test_resume_continues_from_checkpoint(acgan_run, tmp_path):
    import shutil

    run = tmp_path / "resumed"
    shutil.copytree(acgan_run, run)
    assert acgan_main(["--out", str(run), "--resume", "--epochs", "2", "--quiet"]) == 0
    rows = (run / "logs" / "history.csv").read_text().splitlines()
    assert len(rows) == 3  # header + epoch 1 (first session) + epoch 2 (resumed)
    state = read_json(run / "checkpoints" / "epoch-0002" / "state.json")
    assert state["epoch"] == 2
    assert (run / "samples" / "epoch-0002.png").is_file()
    steps = read_json(run / "metrics" / "train.json")["steps_per_epoch"]
    from numpy import load

    with load(run / "checkpoints" / "epoch-0002" / "d_optimizer.optimizer.npz") as archive:
        iterations = [archive[key] for key in archive.files if archive[key].shape == ()]
    assert 2 * steps in [int(value) for value in iterations]


def test_nan_loss_stops_with_clear_error_and_keeps_last_checkpoint(acgan_run, tmp_path, capsys):
    import shutil

    run = tmp_path / "nan"
    shutil.copytree(acgan_run, run)
    capsys.readouterr()
    code = acgan_main(["--out", str(run), "--resume", "--epochs", "2", "--quiet",
                       "--set", "d_learning_rate=1e30", "--set", "g_learning_rate=1e30"])
    error = capsys.readouterr().err
    assert code == 3 and "training stopped" in error and "epoch-0001" in error
    assert sorted(path.name for path in (run / "checkpoints").iterdir()) == ["epoch-0001"]
    assert not (run / "models" / "acgan_generator-epoch-0002.keras").exists()


def test_incompatible_backbone_is_a_one_line_error(backbone, data_dir, tmp_path, capsys):
    for option in (["--size", "64"], ["--set", "latent_dim=64"]):
        code = acgan_main(FAST + ["--backbone", str(backbone), "--data", str(data_dir),
                                  "--out", str(tmp_path / "bad")] + option)
        error = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in error and "backbone run" in error and str(backbone) in error
    assert acgan_main(FAST + ["--backbone", str(tmp_path / "missing"), "--data", str(data_dir),
                              "--out", str(tmp_path / "bad")]) == 2
    assert "missing" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="image_size"):
        check_backbone_compatible(ACGANConfig(image_size=64), VanillaGANConfig(image_size=32), "run")


@pytest.mark.parametrize("preset,gan_preset,freeze", [("kc2020_acgan", "kc2020_vanilla_gan", True),
                                                       ("acgan_fast", "gan_fast", False)])
def test_presets_build_and_take_one_step(preset, gan_preset, freeze):
    """Each preset builds on its backbone preset and takes one step (batch of 2); acgan_fast is run with
    freeze_backbone=false, K&C's from-scratch comparison, where every backbone layer must change."""
    gan_config = load_config(VanillaGANConfig, gan_preset)
    # The presets leave the image and latent sizes to the backbone run.
    config = follow_backbone(load_config(ACGANConfig, preset, {"backbone": "unused", "freeze_backbone": freeze}),
                             gan_config)
    check_backbone_compatible(config, gan_config, gan_preset)
    generator, discriminator = build_gan_networks(gan_config)
    if config.freeze_backbone:
        freeze_backbone_networks(generator, discriminator)
    acgan_g, acgan_d = build_acgan_networks(generator, discriminator, 8, config)
    model = ACGAN(acgan_g, acgan_d, config.latent_dim, 8)
    model.compile(g_optimizer=keras.optimizers.Adam(config.g_learning_rate),
                  d_optimizer=keras.optimizers.Adam(config.d_learning_rate))
    backbone_before = weights_of(generator) + weights_of(discriminator)
    size = config.image_size
    images = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
    logs = fit_steps(model, images, np.array([0, 5], np.int32), steps=1).history
    assert np.isfinite(logs["d_loss"][-1]) and np.isfinite(logs["g_loss"][-1])
    assert acgan_g.output_shape == (None, size, size, 3)
    assert [tuple(shape) for shape in acgan_d.output_shape] == [(None, 1), (None, 8)]
    kernels = [(b, a) for b, a, v in zip(backbone_before, weights_of(generator) + weights_of(discriminator),
                                         generator.weights + discriminator.weights) if v.path.endswith("kernel")]
    changed = [not np.array_equal(before, after) for before, after in kernels]
    if freeze:
        assert sum(changed) == 1  # only d_realness
    else:
        assert all(changed)


def test_thesis_preset_follows_a_32px_backbone_and_trains_with_diffaugment(backbone, data_dir, tmp_path):
    """Issue 19 item 5: kc2020_acgan (K&C: 256 px) on a 32 px backbone takes the backbone's size;
    with augment and ada the discriminator's inputs are augmented and p is logged."""
    from cellgen.config import RunRequest
    from cellgen.gan.acgan_train import resolve_config

    request = RunRequest(preset="kc2020_acgan", overrides={"backbone": str(backbone), "data": str(data_dir)},
                         out=str(tmp_path / "resolved"))
    config = resolve_config(request)
    assert (config.image_size, config.latent_dim, config.head_units) == (32, 100, 100)
    with pytest.raises(ConfigError, match=r"image_size=256 differs from the backbone run's image_size=32 .*--size"):
        resolve_config(RunRequest(preset="kc2020_acgan", out=str(tmp_path / "x"),
                                  overrides={"backbone": str(backbone), "data": str(data_dir), "image_size": 256}))

    out = tmp_path / "kc"
    assert acgan_main(["--config", "kc2020_acgan", "--backbone", str(backbone), "--data", str(data_dir),
                       "--out", str(out), "--set", "head_units=16", "--set", "samples_per_class=2",
                       "--set", "augment=color,translation,cutout", "--set", "ada=true", "--set", "ada_kimg=1",
                       "--quiet"]) == 0
    assert read_json(out / "config.json")["image_size"] == 32
    assert "image_size 32 and latent_dim 100 taken from the backbone" in (out / "logs" / "run.log").read_text()
    header = (out / "logs" / "history.csv").read_text().splitlines()[0]
    assert "ada_p" in header and "aux_acc_real" in header
    state = read_json(out / "checkpoints" / "epoch-0001" / "state.json")
    assert 0 <= state["ada_p"] <= 1
    assert load_sampler(out).sample(2, seed=0).shape == (2, 32, 32, 3)
