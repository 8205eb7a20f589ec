"""Class-conditional DDIM (issue 16): conditioning, label dropout, classifier-free guidance, recipe options,
saving, bf16, cpu:2, the sampler interface and generate.py."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import ConfigError
from cellgen.diffusion.config import ARCHITECTURE_FIELDS, DiffusionConfig
from cellgen.diffusion.ddim import DiffusionModel, make_optimizer
from cellgen.runs import RunError, TrainingState
from tests.diffusion_helpers import compiled_model, make_conditions_matter, random_images

CLASSES = ["basophil", "eosinophil", "neutrophil"]
TINY = dict(image_size=16, depth=2, base_width=8, block_kind="residual", block_depth=1, attention_gates=True,
            batch_size=8, seed=3, condition_dims=16, class_embedding_dims=8)
COND = dict(TINY, conditional=True, class_names=CLASSES)


_images = random_images


def _model(**changes):
    return compiled_model(COND, **changes)


_make_labels_matter = make_conditions_matter


def _max_difference(first, second):
    return max(float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(first, second))


def _real_batch(sample_data, size=16, count=16):
    """A tiny real batch: the first images of each class of the packaged sample, resized."""
    from cellgen.images import from_uint8, read_rgb

    classes = sorted(path.name for path in sample_data.iterdir() if path.is_dir())[:4]
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((sample_data / name).iterdir())[:count // len(classes)]:
            images.append(read_rgb(path))
            labels.append(label)
    images = tf.image.resize(from_uint8(np.stack(images)), (size, size), antialias=True).numpy()
    return images.astype(np.float32), np.array(labels, np.int32), classes


# Network and config --------------------------------------------------------------


def test_unconditional_default_network_has_no_class_input_and_conditional_one_does():
    plain = DiffusionModel(DiffusionConfig(**TINY))
    assert len(plain.network.inputs) == 2 and not plain.is_conditional
    assert not [layer for layer in plain.network.layers if "film" in layer.name or "class" in layer.name]
    # class_names alone (conditional = false) keeps the unconditional network.
    assert len(DiffusionModel(DiffusionConfig(**TINY, class_names=CLASSES)).network.inputs) == 2
    model = DiffusionModel(DiffusionConfig(**COND))
    assert [tuple(shape) for shape in model.network.input_shape] == [(None, 16, 16, 3), (None, 1, 1, 1), (None,)]
    assert model.network.get_layer("class_embedding").input_dim == len(CLASSES) + 1  # + "no class"
    assert model.null_label == 3 and model.sample_classes == CLASSES
    films = [layer.name for layer in model.network.layers if layer.name.endswith("_film")]
    assert len(films) == 3  # down0, bottleneck, up0 (one block per level)


def test_untrained_conditional_network_ignores_the_label():
    """FiLM projections start at zero: the conditional network starts as the unconditional one."""
    model = DiffusionModel(DiffusionConfig(**COND))
    model.network.get_layer("output_conv").kernel.assign(
        np.random.default_rng(1).normal(0, 0.3, model.network.get_layer("output_conv").kernel.shape))
    images, variances = _images(3), np.full((3, 1, 1, 1), 0.5, np.float32)
    first = model.network([images, variances, np.array([0, 1, 2])]).numpy()
    second = model.network([images, variances, np.array([3, 3, 3])]).numpy()
    np.testing.assert_array_equal(first, second)


def test_config_fields_choices_and_architecture_fields():
    config = DiffusionConfig()
    assert (config.conditional, config.class_names, config.label_dropout, config.guidance) == (False, [], 0.15, 2.0)
    assert (config.prediction, config.loss_weighting, config.min_snr_gamma, config.augment, config.sampler) == (
        "noise", "uniform", 5.0, "none", "auto")
    for name in ("conditional", "class_names", "class_embedding_dims", "condition_dims", "prediction"):
        assert name in ARCHITECTURE_FIELDS
    for field, valid in (("prediction", "noise, velocity, image"), ("loss_weighting", "uniform, min_snr"),
                         ("augment", "none, dihedral"), ("sampler", "auto, ddim, dpmpp_2m, heun, ddpm")):
        with pytest.raises(ConfigError, match=f"{field} must be one of {valid}"):
            config.replace(**{field: "bogus"})
    with pytest.raises(ConfigError, match="label_dropout"):
        config.replace(label_dropout=1.0)
    with pytest.raises(ConfigError, match="deterministic"):
        config.replace(sampler="dpmpp_2m", sample_eta=0.5)
    with pytest.raises(ConfigError, match="discrete"):
        config.replace(sampler="ddpm")
    with pytest.raises(ConfigError, match="needs class_names"):
        DiffusionModel(DiffusionConfig(**TINY, conditional=True))


def test_with_data_classes_and_label_map_for_a_one_class_finetune():
    base = DiffusionConfig(**TINY, conditional=True)
    assert base.with_data_classes(CLASSES).class_names == CLASSES
    assert DiffusionConfig(**TINY).with_data_classes(CLASSES).class_names == []  # unconditional: unchanged
    finetune = base.replace(class_names=CLASSES, class_name="neutrophil")
    assert finetune.with_data_classes(["neutrophil"]).class_names == CLASSES  # kept from the base run
    np.testing.assert_array_equal(finetune.label_map(["neutrophil"]), [2])
    with pytest.raises(ConfigError, match="lymphocyte"):
        finetune.with_data_classes(["lymphocyte"])
    with pytest.raises(ConfigError, match="class_name"):
        base.replace(class_names=CLASSES, class_name="lymphocyte")


# Training ------------------------------------------------------------------------


def test_train_step_takes_labels_and_a_conditional_model_without_labels_is_an_error():
    model = _model()
    logs = model.train_step((tf.constant(_images(8)), tf.constant([0, 1, 2, 0, 1, 2, 0, 1])))
    assert np.isfinite(float(logs["noise_loss"])) and "loss" not in logs
    with pytest.raises(ValueError, match="class-conditional .* give \\(images, labels\\) batches"):
        model.train_step(tf.constant(_images(8)))
    with pytest.raises(ValueError, match="class-conditional"):
        model.test_step(tf.constant(_images(8)))
    plain = DiffusionModel(DiffusionConfig(**TINY))
    plain.compile(optimizer=make_optimizer(plain.config))
    # An unconditional model ignores labels: the same step with or without them.
    twin = DiffusionModel(DiffusionConfig(**TINY))
    twin.compile(optimizer=make_optimizer(twin.config))
    twin.set_weights(plain.get_weights())
    plain.train_step(tf.constant(_images(8)))
    twin.train_step((tf.constant(_images(8)), tf.constant(np.arange(8) % 3)))
    assert _max_difference(plain.network.get_weights(), twin.network.get_weights()) == 0.0


def test_conditional_loss_falls_on_a_tiny_real_batch(sample_data):
    images, labels, classes = _real_batch(sample_data)
    config = DiffusionConfig(**{**COND, "class_names": classes, "batch_size": 16, "learning_rate": 2e-3,
                                "ema": 0.0, "augment": "dihedral", "batch_norm_momentum": 0.5})
    model = DiffusionModel(config)
    model.compile(optimizer=make_optimizer(config))
    model.adapt_normalizer([images])
    rng = np.random.default_rng(0)
    noises = rng.standard_normal((4,) + images.shape).astype(np.float32)  # 4 fixed noise draws per image
    times = rng.uniform(0, 1, (4, len(images), 1, 1, 1)).astype(np.float32)

    def fixed_loss():
        normalized = model.normalize(images)
        losses = []
        for noise, time in zip(noises, times):
            signal_rates, noise_rates = model.schedule(time)
            noisy = signal_rates * normalized + noise_rates * noise
            predicted, _ = model.denoise(noisy, signal_rates, noise_rates, labels=tf.constant(labels))
            losses.append(float(tf.reduce_mean(tf.abs(predicted - noise))))
        return float(np.mean(losses))

    before = fixed_loss()
    step = tf.function(model.train_step)
    first = [float(step((tf.constant(images), tf.constant(labels)))["noise_loss"]) for _ in range(3)]
    model.noise_loss_tracker.reset_state()
    for _ in range(57):
        logs = step((tf.constant(images), tf.constant(labels)))
    after = fixed_loss()
    assert after < 0.75 * before, (before, after)
    assert float(logs["noise_loss"]) < np.mean(first)


def test_label_dropout_rate_is_honoured():
    model = _model(label_dropout=0.15)
    labels = tf.constant(np.arange(40_000) % 3, tf.int32)
    dropped = model.drop_labels(labels, tf.constant([4, 2])).numpy()
    is_null = dropped == model.null_label
    assert abs(is_null.mean() - 0.15) < 0.01
    np.testing.assert_array_equal(dropped[~is_null], labels.numpy()[~is_null])  # the rest kept as they were
    np.testing.assert_array_equal(model.drop_labels(labels, tf.constant([4, 2])).numpy(), dropped)  # seeded
    assert not (_model(label_dropout=0.0).drop_labels(labels, tf.constant([4, 2])).numpy() == 3).any()


def test_dihedral_augmentation_draws_all_eight_symmetries_per_image():
    model = _model(augment="dihedral")
    image = _images(1, 8)[0]
    batch = np.repeat(image[None], 400, axis=0)
    augmented = model.augment(tf.constant(batch), tf.constant([1, 2])).numpy()
    symmetries = [np.rot90(flipped, k) for flipped in (image, image[:, ::-1]) for k in range(4)]
    matches = [[index for index, symmetry in enumerate(symmetries) if np.array_equal(out, symmetry)]
               for out in augmented]
    assert all(len(match) == 1 for match in matches)  # each output is exactly one symmetry of its input
    counts = np.bincount([match[0] for match in matches], minlength=8)
    assert counts.min() > 25  # all 8, about 50 each
    np.testing.assert_array_equal(model.augment(tf.constant(batch), tf.constant([1, 2])).numpy(), augmented)


def test_augmentation_is_drawn_from_the_seed_generator_so_a_restored_state_repeats_the_step(tmp_path):
    """The seed generator's state is checkpointed: a resumed run continues the same random stream."""
    model = _model(augment="dihedral")
    batch = (tf.constant(_images(8)), tf.constant(np.arange(8) % 3))
    model.train_step(batch)
    state = TrainingState(tmp_path / "checkpoints", diffusion=model, optimizer=model.optimizer)
    state.save(epoch=1)
    model.train_step(batch)
    expected = model.network.get_weights()

    resumed = _model(augment="dihedral")
    resumed.optimizer.build(resumed.network.trainable_variables)
    TrainingState(tmp_path / "checkpoints", diffusion=resumed, optimizer=resumed.optimizer).restore_latest()
    np.testing.assert_array_equal(resumed.seed_generator.state.numpy(), [3, 1])
    resumed.train_step(batch)
    assert _max_difference(resumed.network.get_weights(), expected) < 1e-6


@pytest.mark.parametrize("prediction", ["noise", "velocity", "image"])
def test_prediction_targets_convert_to_noise_and_image(prediction):
    model = _model(prediction=prediction)
    rng = np.random.default_rng(2)
    clean, noise = _images(4), rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
    signal_rates, noise_rates = model.schedule(rng.uniform(0, 1, (4, 1, 1, 1)).astype(np.float32))
    noisy = signal_rates * clean + noise_rates * noise
    target = model.prediction_target(clean, noise, signal_rates, noise_rates)
    predicted_noise, predicted_image = model.split_prediction(target, noisy, signal_rates, noise_rates)
    np.testing.assert_allclose(predicted_noise.numpy(), noise, atol=2e-4)
    np.testing.assert_allclose(predicted_image.numpy(), clean, atol=2e-4)
    # Any output is split consistently: x_t = alpha x0_hat + sigma eps_hat.
    output = rng.standard_normal((4, 16, 16, 3)).astype(np.float32)
    predicted_noise, predicted_image = model.split_prediction(output, noisy, signal_rates, noise_rates)
    np.testing.assert_allclose((signal_rates * predicted_image + noise_rates * predicted_noise).numpy(), noisy,
                               atol=2e-4)
    logs = model.train_step((tf.constant(clean), tf.constant([0, 1, 2, 0])))
    assert np.isfinite(float(logs["noise_loss"])) and np.isfinite(float(logs["image_loss"]))
    assert ("loss" in logs) == (prediction != "noise")


@pytest.mark.parametrize("prediction, expected", [("noise", lambda snr: np.minimum(snr, 5.0) / snr),
                                                  ("velocity", lambda snr: np.minimum(snr, 5.0) / (snr + 1)),
                                                  ("image", lambda snr: np.minimum(snr, 5.0))])
def test_min_snr_weights(prediction, expected):
    model = _model(prediction=prediction, loss_weighting="min_snr")
    signal = np.array([0.2, 0.6, 0.9, 0.95], np.float32).reshape(4, 1, 1, 1)
    noise = np.sqrt(1 - signal ** 2)
    snr = (signal ** 2 / noise ** 2).reshape(-1)
    np.testing.assert_allclose(model.loss_weights(signal, noise).numpy(), expected(snr), rtol=1e-5)
    assert _model().loss_weights(signal, noise) is None


@pytest.mark.parametrize("normalization", ["batch", "group"])
def test_conditioning_works_with_both_normalisations(normalization):
    model = _model(normalization=normalization, group_norm_groups=4)
    before = model.network.get_weights()
    for _ in range(2):  # the first step only moves the zero-initialised output convolution
        logs = model.train_step((tf.constant(_images(8)), tf.constant(np.arange(8) % 3)))
    assert np.isfinite(float(logs["noise_loss"]))
    assert _max_difference(before, model.network.get_weights()) > 0
    film = model.network.get_layer("bottleneck_block0_film_dense")
    assert float(np.abs(film.kernel.numpy()).max()) > 0  # the class path receives gradients


# Guidance and sampling -------------------------------------------------------------


def test_guidance_zero_is_unconditional_one_is_conditional_and_in_between_the_formula():
    model = _model()
    _make_labels_matter(model)
    images, variances = _images(3), np.full((3, 1, 1, 1), 0.3, np.float32)
    labels = np.array([0, 1, 2], np.int32)
    conditional = model.ema_network([images, variances, labels]).numpy()
    unconditional = model.ema_network([images, variances, np.full(3, 3, np.int32)]).numpy()
    assert np.abs(conditional - unconditional).max() > 1e-3  # the labels matter

    def guided(weight):
        return model.guided_prediction(tf.constant(images), tf.constant(variances), labels, weight).numpy()

    np.testing.assert_allclose(guided(0.0), unconditional, atol=1e-5)
    np.testing.assert_allclose(guided(1.0), conditional, atol=1e-5)
    np.testing.assert_allclose(guided(2.5), unconditional + 2.5 * (conditional - unconditional), atol=1e-4)


def test_guidance_uses_one_batched_network_call(monkeypatch):
    model = _model()
    _make_labels_matter(model)
    batches = []
    original = model.ema_network.call

    def counting_call(inputs, *args, **kwargs):
        batches.append(int(inputs[0].shape[0]))
        return original(inputs, *args, **kwargs)

    monkeypatch.setattr(model.ema_network, "call", counting_call)
    model.guided_prediction(tf.constant(_images(3)), tf.constant(np.full((3, 1, 1, 1), 0.3, np.float32)),
                            [0, 1, 2], 2.0)
    assert batches == [6]


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun"])
def test_generate_with_labels_and_guidance_for_every_sampler(sampler):
    model = _model(normalization="group", group_norm_groups=4)
    _make_labels_matter(model)
    labels = ["basophil", "eosinophil", "neutrophil", "basophil"]
    images = model.generate(4, steps=3, seed=1, labels=labels, guidance=3.0, sampler=sampler)
    assert images.shape == (4, 16, 16, 3) and images.dtype == np.float32 and np.isfinite(images).all()
    np.testing.assert_array_equal(images, model.generate(4, steps=3, seed=1, labels=labels, guidance=3.0,
                                                         sampler=sampler))
    # The guided batch is computed per image: the first image does not depend on the others' labels.
    alone = model.generate(4, steps=3, seed=1, labels=["basophil"] * 4, guidance=3.0, sampler=sampler)
    np.testing.assert_allclose(alone[0], images[0], atol=1e-5)
    assert np.abs(alone[1] - images[1]).max() > 1e-4
    # w = 0 is the unconditional ("no class") model whatever the labels.
    np.testing.assert_allclose(model.generate(4, steps=3, seed=1, labels=labels, guidance=0.0, sampler=sampler),
                               model.generate(4, steps=3, seed=1, labels=None, sampler=sampler), atol=1e-6)
    with pytest.raises(ConfigError, match="unknown class 'lymphocyte'"):
        model.generate(1, steps=2, labels="lymphocyte")


def test_guided_generation_matches_the_solver_over_a_hand_made_guided_denoiser():
    from cellgen.diffusion.solvers import dpmpp_2m_solve, thresholded_denoiser

    model = _model()
    _make_labels_matter(model)
    assert model.config.sample_threshold == "static"  # the default: x0_hat clipped to the data range
    noise = np.random.default_rng(3).standard_normal((2, 16, 16, 3)).astype(np.float32)
    labels = np.array([1, 2], np.int32)

    def denoise(x, signal_rate, noise_rate):
        variances = tf.fill([2, 1, 1, 1], noise_rate * noise_rate)
        conditional = model.ema_network([x, variances, tf.constant(labels)])
        unconditional = model.ema_network([x, variances, tf.fill([2], 3)])
        eps = unconditional + 2.0 * (conditional - unconditional)
        return eps, (x - noise_rate * eps) / signal_rate

    mean = model.image_mean.numpy().reshape(1, 1, 1, 3)
    std = model.image_std.numpy().reshape(1, 1, 1, 3)
    clipped = thresholded_denoiser(denoise, "static", (-1.0 - mean) / std, (1.0 - mean) / std)
    signal_rates, noise_rates = model._rates_for(4)
    expected = model.denormalize(dpmpp_2m_solve(clipped, noise, signal_rates, noise_rates)).numpy()
    result = model.generate_from_noise(noise, steps=4, labels=labels, guidance=2.0, sampler="dpmpp_2m")
    # Float rounding of the batched graph (twice the batch) against two eager calls, amplified by w = 2.
    np.testing.assert_allclose(result, expected, atol=1e-3)
    assert np.abs(result - expected).mean() < 1e-5


def test_class_grid_has_one_row_per_class_with_the_same_noise():
    model = _model()
    _make_labels_matter(model)
    noise = np.random.default_rng(4).standard_normal((2, 16, 16, 3)).astype(np.float32)
    images, rows = model.generate_class_grid(noise, steps=3, guidance=1.0)
    assert rows == CLASSES and images.shape == (6, 16, 16, 3)
    np.testing.assert_allclose(images[2:4], model.generate_from_noise(noise, steps=3, labels="eosinophil",
                                                                      guidance=1.0), atol=1e-6)
    plain = DiffusionModel(DiffusionConfig(**TINY))
    assert plain.generate_class_grid(noise, steps=2)[1] == ["all"]
    with pytest.raises(ConfigError, match="unconditional"):
        plain.generate(1, steps=2, labels="basophil")


# Saving, precision, distribution ----------------------------------------------------------


def test_keras_file_round_trip_with_safe_mode_keeps_both_networks_and_the_classes(tmp_path):
    model = _model()
    model.adapt_normalizer([_images(4)])
    model.train_step((tf.constant(_images(8)), tf.constant(np.arange(8) % 3)))
    _make_labels_matter(model)
    model.network.get_layer("class_embedding").embeddings.assign(
        np.random.default_rng(9).normal(0, 1, (4, 8)).astype(np.float32))  # online and EMA now differ
    export = DiffusionModel(model.config)
    export.set_weights(model.get_weights())
    export.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert isinstance(loaded, DiffusionModel) and loaded.config == model.config
    assert loaded.config.class_names == CLASSES and loaded.is_conditional
    assert _max_difference(loaded.ema_network.get_weights(), model.ema_network.get_weights()) == 0.0
    assert _max_difference(loaded.network.get_weights(), model.network.get_weights()) == 0.0
    assert _max_difference(loaded.network.get_weights(), loaded.ema_network.get_weights()) > 0
    np.testing.assert_array_equal(loaded.generate(2, steps=3, seed=5, labels="neutrophil"),
                                  model.generate(2, steps=3, seed=5, labels="neutrophil"))


def test_bf16_keeps_the_noise_and_class_embeddings_and_the_losses_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = _model(precision="bf16", prediction="velocity", loss_weighting="min_snr")
    network = model.network
    assert network.get_layer("down0_block0").compute_dtype == "bfloat16"
    assert network.get_layer("down0_block0_film").compute_dtype == "bfloat16"
    for name in ("noise_embedding", "class_embedding", "concat_condition", "condition_dense0", "condition_dense1",
                 "down0_block0_film_dense", "output_conv"):
        assert network.get_layer(name).compute_dtype == "float32", name
    logs = model.train_step((tf.constant(_images(8)), tf.constant(np.arange(8) % 3)))
    for name in ("noise_loss", "image_loss", "loss"):
        assert logs[name].dtype == tf.float32 and np.isfinite(float(logs[name])), name
    assert all(weight.dtype == "float32" for weight in network.weights)
    images = model.generate(2, steps=2, labels="basophil", guidance=2.0, sampler="dpmpp_2m")
    assert images.dtype == np.float32 and np.isfinite(images).all()


def test_conditional_step_under_cpu2_keeps_replicas_identical():
    from cellgen.distribute import make_strategy

    strategy = make_strategy("cpu:2")
    config = DiffusionConfig(**COND, strategy="cpu:2", augment="dihedral")
    with strategy.scope():
        model = DiffusionModel(config)
        optimizer = make_optimizer(config)
        model.compile(optimizer=optimizer)
        optimizer.build(model.network.trainable_variables)
    dataset = tf.data.Dataset.from_tensor_slices((_images(8), np.arange(8, dtype=np.int32) % 3)).batch(8)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    logs = strategy.run(model.train_step, args=(batch,))
    assert all(np.isfinite(float(value)) for value in strategy.experimental_local_results(logs["noise_loss"]))
    for weight in model.network.trainable_weights + model.ema_network.weights:
        copies = [np.asarray(value) for value in strategy.experimental_local_results(weight.value)]
        np.testing.assert_array_equal(copies[0], copies[1])


# Sampler interface and generate.py ------------------------------------------------------------


def _saved_run(tmp_path, config, name="run"):
    from cellgen.diffusion.sampling import model_file
    from cellgen.runs import RunDir

    model = DiffusionModel(config)
    if model.is_conditional:
        _make_labels_matter(model)
    run = RunDir.create(tmp_path / name, config, config.class_names or ["all"])
    run.models.mkdir(parents=True, exist_ok=True)
    model.save(run.models / model_file(1))
    return run, model


def test_sampler_interface_of_a_conditional_run_and_of_its_one_class_finetune(tmp_path):
    from cellgen.sampling import load_sampler

    run, model = _saved_run(tmp_path, DiffusionConfig(**COND, guidance=1.5))
    sampler = load_sampler(run.path, steps=3, sampler="dpmpp_2m")
    assert sampler.classes == CLASSES and sampler.guidance == 1.5 and sampler.method == "dpmpp_2m"
    images = sampler.sample(3, seed=2, class_name="eosinophil", batch_size=2)
    assert images.shape == (3, 16, 16, 3) and np.isfinite(images).all()
    np.testing.assert_allclose(images, model.generate(3, steps=3, seed=2, labels="eosinophil", guidance=1.5,
                                                      sampler="dpmpp_2m", batch_size=2), atol=1e-6)
    assert load_sampler(run.path, guidance=4.0).guidance == 4.0
    with pytest.raises(RunError, match="draws basophil, eosinophil, neutrophil"):
        sampler.sample(1, seed=0, class_name="lymphocyte")
    with pytest.raises(ConfigError, match="--sampler must be one of"):
        load_sampler(run.path, sampler="euler")
    with pytest.raises(ConfigError, match="deterministic"):
        load_sampler(run.path, sampler="heun", eta=0.5)

    # Fine-tuned on one class: still samples it by name (and by default).
    finetune, _ = _saved_run(tmp_path, DiffusionConfig(**COND, class_name="neutrophil"), name="finetune")
    sampler = load_sampler(finetune.path, steps=2)
    assert sampler.classes == ["neutrophil"]
    np.testing.assert_array_equal(sampler.sample(2, seed=1, class_name="neutrophil"), sampler.sample(2, seed=1))
    with pytest.raises(RunError, match="draws neutrophil"):
        sampler.sample(1, seed=0, class_name="basophil")


def test_generate_cli_per_class_class_and_unconditional_errors(tmp_path, capsys):
    from cellgen.cli.generate import main

    run, _ = _saved_run(tmp_path, DiffusionConfig(**COND))
    out = tmp_path / "synthetic"
    assert main(["--run", str(run.path), "--out", str(out), "--per-class", "2", "--steps", "2",
                 "--guidance", "3", "--sampler", "dpmpp_2m", "--quiet"]) == 0
    assert sorted(path.name for path in out.iterdir()) == CLASSES
    assert all(len(list((out / name).glob("*.png"))) == 2 for name in CLASSES)
    assert main(["--run", str(run.path), "--out", str(tmp_path / "baso"), "--n", "3", "--class", "basophil",
                 "--steps", "2", "--sampler", "heun", "--quiet"]) == 0
    assert len(list((tmp_path / "baso").glob("*.png"))) == 3

    plain, _ = _saved_run(tmp_path, DiffusionConfig(**TINY), name="plain")
    capsys.readouterr()
    assert main(["--run", str(plain.path), "--out", str(tmp_path / "x"), "--n", "1", "--class", "basophil"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--class needs a conditional model" in error[0]
    assert main(["--run", str(plain.path), "--out", str(tmp_path / "x"), "--n", "1", "--guidance", "2"]) == 2
    assert "--guidance needs a class-conditional" in capsys.readouterr().err
    assert main(["--run", str(plain.path), "--out", str(tmp_path / "y"), "--n", "2", "--steps", "2",
                 "--sampler", "dpmpp_2m", "--quiet"]) == 0  # unconditional runs take the new solvers too
