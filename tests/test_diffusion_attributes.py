"""A class-conditional DDIM conditioned on WBCAtt attributes too (issue 18, items 2 and 3): the
attribute embeddings, attribute dropout, guidance with any subset of attributes, saving, the sampler,
``generate.py --attr`` and the N&Z route ``train_ddim.py --finetune-from RUN --select ...``."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.config import ConfigError
from cellgen.diffusion.config import ARCHITECTURE_FIELDS, DiffusionConfig
from cellgen.diffusion.ddim import DiffusionModel
from cellgen.diffusion.unet import AttributeEmbedding
from cellgen.runs import RunDir, read_history, read_json
from cellgen.sample_data import sample_path
from tests.diffusion_helpers import compiled_model, make_conditions_matter, random_images

CLASSES = ["basophil", "eosinophil", "neutrophil"]
TINY = dict(image_size=16, depth=2, base_width=8, block_kind="residual", block_depth=1, batch_size=8, seed=3,
            condition_dims=16, class_embedding_dims=8)
COND = dict(TINY, conditional=True, class_names=CLASSES)
VOCABULARY = ["nucleus_shape=segmented-bilobed", "nucleus_shape=segmented-multilobed", "nucleus_shape=unsegmented-band",
              "cytoplasm_vacuole=no", "cytoplasm_vacuole=yes"]
ATTR = dict(COND, attributes=["nucleus_shape", "cytoplasm_vacuole"], attribute_values=VOCABULARY)
NO_VALUE = [3, 2]
TABLE = sample_path("train").parent / "wbcatt.csv"
OLD_RUNS = Path(__file__).resolve().parent / "fixtures" / "old_runs"


_images = random_images


def _model(**changes):
    return compiled_model(ATTR, **changes)


_make_conditions_matter = make_conditions_matter


def _batch(count=8):
    labels = np.arange(count, dtype=np.int32) % 3
    attributes = np.stack([np.arange(count) % 4, np.arange(count) % 3], axis=1).astype(np.int32)
    return tf.constant(_images(count)), tf.constant(labels), tf.constant(attributes)


# Network and config -------------------------------------------------------------------------


def test_the_network_takes_attribute_ids_and_without_attributes_is_the_class_conditional_one():
    model = DiffusionModel(DiffusionConfig(**ATTR))
    assert model.has_attributes and model.attribute_vocabulary == {
        "nucleus_shape": ["segmented-bilobed", "segmented-multilobed", "unsegmented-band"],
        "cytoplasm_vacuole": ["no", "yes"]}
    np.testing.assert_array_equal(model.no_value_ids, NO_VALUE)
    assert [tuple(shape) for shape in model.network.input_shape] == [(None, 16, 16, 3), (None, 1, 1, 1), (None,),
                                                                     (None, 2)]
    embedding = model.network.get_layer("attribute_embedding")
    assert embedding.sizes == [3, 2] and tuple(embedding.table.shape) == (3 + 1 + 2 + 1, 8)
    plain = DiffusionModel(DiffusionConfig(**COND))
    assert not plain.has_attributes and len(plain.network.inputs) == 3
    extra = {layer.name for layer in model.network.layers} - {layer.name for layer in plain.network.layers}
    assert extra == {"attribute_ids", "attribute_embedding", "attribute_embedding_reshape"}
    # The conditioning MLP sees noise (32) + class (8) + two attributes (2 x 8).
    assert model.network.get_layer("condition_dense0").kernel.shape[0] == 32 + 8 + 16
    assert plain.network.get_layer("condition_dense0").kernel.shape[0] == 32 + 8


def test_attribute_embedding_looks_each_attribute_up_in_its_own_rows_and_serializes():
    layer = AttributeEmbedding([3, 2], 4)
    layer.build((None, 2))
    table = np.arange(7 * 4, dtype=np.float32).reshape(7, 4)
    layer.table.assign(table)
    output = layer(np.array([[0, 2], [3, 0]], np.int32)).numpy()
    # Attribute 0 uses rows 0-3 (3 = no value), attribute 1 rows 4-6 (6 = no value).
    np.testing.assert_array_equal(output, [np.concatenate([table[0], table[6]]),
                                           np.concatenate([table[3], table[4]])])
    again = AttributeEmbedding.from_config(layer.get_config())
    assert again.sizes == [3, 2] and again.output_dim == 4
    with pytest.raises(ValueError, match="sizes >= 1"):
        AttributeEmbedding([], 4)


def test_untrained_film_ignores_the_attributes_and_a_trained_one_does_not():
    model = _model()
    images, variances = _images(3), np.full((3, 1, 1, 1), 0.5, np.float32)
    labels = np.array([0, 1, 2], np.int32)
    model.network.get_layer("output_conv").kernel.assign(
        np.random.default_rng(1).normal(0, 0.3, model.network.get_layer("output_conv").kernel.shape))
    first = model.network([images, variances, labels, np.array([[0, 0]] * 3, np.int32)]).numpy()
    second = model.network([images, variances, labels, np.array([NO_VALUE] * 3, np.int32)]).numpy()
    np.testing.assert_array_equal(first, second)
    _make_conditions_matter(model)
    for ids in ([1, 0], [0, 1], NO_VALUE):
        other = model.network([images, variances, labels, np.array([ids] * 3, np.int32)]).numpy()
        assert np.abs(other - model.network([images, variances, labels,
                                             np.array([[0, 0]] * 3, np.int32)]).numpy()).max() > 1e-4, ids


def test_config_checks_of_attributes():
    config = DiffusionConfig(**ATTR)
    for name in ("attributes", "attribute_values"):
        assert name in ARCHITECTURE_FIELDS
    assert DiffusionConfig().attributes == [] and DiffusionConfig().select == []
    with pytest.raises(ConfigError, match="attributes need conditional = true"):
        DiffusionConfig(**TINY).replace(attributes=["nucleus_shape"])
    with pytest.raises(ConfigError, match="attributes must be distinct"):
        config.replace(attributes=["nucleus_shape", "nucleus_shape"])
    with pytest.raises(ConfigError, match="'cell_size' is not one of the attributes"):
        config.replace(attribute_values=VOCABULARY + ["cell_size=big"])
    with pytest.raises(ConfigError, match="no values for attribute\\(s\\) cytoplasm_vacuole"):
        config.replace(attribute_values=VOCABULARY[:3])
    with pytest.raises(ConfigError, match="attribute_values: expected COLUMN=VALUE"):
        config.replace(attribute_values=["nucleus_shape"])
    with pytest.raises(ConfigError, match="select: expected COLUMN=VALUE, got 'neutrophil'"):
        config.replace(select=["neutrophil"])
    with pytest.raises(ConfigError, match="attributes need attribute_values"):
        DiffusionModel(config.replace(attribute_values=[]))
    # A new run takes the table's vocabulary; one that has its own keeps it.
    fresh = config.replace(attribute_values=[])
    table = {"nucleus_shape": ["a", "b"], "cytoplasm_vacuole": ["no", "yes"], "cell_size": ["big"]}
    assert fresh.with_data_attributes(table).attribute_values == ["nucleus_shape=a", "nucleus_shape=b",
                                                                  "cytoplasm_vacuole=no", "cytoplasm_vacuole=yes"]
    assert config.with_data_attributes(table) is config
    # Set from the command line: comma-separated lists.
    assert config.replace(select="class=neutrophil,nucleus_shape=segmented-multilobed").select == [
        "class=neutrophil", "nucleus_shape=segmented-multilobed"]


# Training ---------------------------------------------------------------------------------


def test_each_attribute_is_dropped_independently_and_all_conditions_together_as_often_as_label_dropout():
    model = _model(label_dropout=0.15)
    count = 40_000
    labels = tf.constant(np.arange(count) % 3, tf.int32)
    attributes = tf.constant(np.zeros((count, 2), np.int32))
    dropped_labels, dropped = (value.numpy() for value in model.drop_attributes(labels, attributes,
                                                                                  tf.constant([4, 2])))
    joint = dropped_labels == model.null_label
    assert abs(joint.mean() - 0.15) < 0.01
    assert (dropped[joint] == NO_VALUE).all()  # the joint drop removes every condition
    alone = dropped[~joint] == NO_VALUE  # the rest: each attribute independently
    assert abs(alone[:, 0].mean() - 0.15) < 0.01 and abs(alone[:, 1].mean() - 0.15) < 0.01
    assert abs((alone[:, 0] & alone[:, 1]).mean() - 0.15 ** 2) < 0.005
    np.testing.assert_array_equal(dropped_labels[~joint], labels.numpy()[~joint])
    again = model.drop_attributes(labels, attributes, tf.constant([4, 2]))[1].numpy()
    np.testing.assert_array_equal(again, dropped)  # seeded
    assert not (_model(label_dropout=0.0).drop_attributes(labels, attributes, tf.constant([4, 2]))[1].numpy()
                == NO_VALUE).any()


def test_train_step_needs_attribute_ids_and_trains_the_attribute_embedding():
    model = _model()
    images, labels, attributes = _batch()
    with pytest.raises(ValueError, match="conditioned on attributes .* give \\(images, labels, attribute_ids\\)"):
        model.train_step((images, labels))
    table = model.network.get_layer("attribute_embedding").table
    before = table.numpy().copy()
    # Step 1 moves only the zero-initialised output convolution, step 2 the (zero) FiLM projections,
    # step 3 the embeddings behind them.
    for _ in range(3):
        logs = model.train_step((images, labels, attributes))
    assert np.isfinite(float(logs["noise_loss"]))
    assert np.abs(table.numpy() - before).max() > 0
    logs = model.test_step((images, labels, attributes))
    assert np.isfinite(float(logs["noise_loss"]))


# Guidance and sampling ------------------------------------------------------------------------


def test_guidance_conditions_on_class_and_requested_attributes_against_none():
    model = _model()
    _make_conditions_matter(model)
    images, variances = _images(3), np.full((3, 1, 1, 1), 0.3, np.float32)
    labels = np.array([0, 1, 2], np.int32)
    subset = np.array([[1, 2]] * 3, np.int32)  # nucleus_shape set, cytoplasm_vacuole left open

    def network(class_ids, attribute_ids):
        return model.ema_network([images, variances, class_ids, attribute_ids]).numpy()

    conditional = network(labels, subset)
    unconditional = network(np.full(3, 3, np.int32), np.array([NO_VALUE] * 3, np.int32))
    for weight in (0.0, 1.0, 2.5):
        guided = model.guided_prediction(tf.constant(images), tf.constant(variances), labels, weight,
                                         attributes=subset).numpy()
        np.testing.assert_allclose(guided, unconditional + weight * (conditional - unconditional), atol=1e-4)
    # No attributes requested: the conditional half is the class alone.
    class_only = network(labels, np.array([NO_VALUE] * 3, np.int32))
    guided = model.guided_prediction(tf.constant(images), tf.constant(variances), labels, 2.0).numpy()
    np.testing.assert_allclose(guided, unconditional + 2.0 * (class_only - unconditional), atol=1e-4)


def test_generate_with_attributes():
    model = _model()
    _make_conditions_matter(model)
    request = ["nucleus_shape=segmented-multilobed"]
    images = model.generate(3, steps=3, seed=1, labels="neutrophil", attributes=request, guidance=2.0,
                            sampler="dpmpp_2m")
    assert images.shape == (3, 16, 16, 3) and np.isfinite(images).all()
    np.testing.assert_array_equal(images, model.generate(3, steps=3, seed=1, labels="neutrophil", attributes=request,
                                                         guidance=2.0, sampler="dpmpp_2m"))
    other = model.generate(3, steps=3, seed=1, labels="neutrophil", attributes=["nucleus_shape=unsegmented-band"],
                           guidance=2.0, sampler="dpmpp_2m")
    assert np.abs(other - images).max() > 1e-4
    # The same request as ids (one row for all images).
    np.testing.assert_allclose(model.generate(3, steps=3, seed=1, labels="neutrophil", guidance=2.0,
                                              attributes=np.array([1, 2]), sampler="dpmpp_2m"), images, atol=1e-6)
    # w = 0 is the unconditional model whatever the class and attributes.
    np.testing.assert_allclose(model.generate(2, steps=2, seed=1, labels="neutrophil", attributes=request,
                                              guidance=0.0),
                               model.generate(2, steps=2, seed=1), atol=1e-6)
    np.testing.assert_array_equal(model.attribute_ids(None, 2), [NO_VALUE, NO_VALUE])
    with pytest.raises(ConfigError, match="unknown attribute 'nucleus' .*nucleus_shape, cytoplasm_vacuole"):
        model.generate(1, steps=2, attributes=["nucleus=segmented-multilobed"])
    with pytest.raises(ConfigError, match="nucleus_shape has no value 'multilobed' \\(values: segmented-bilobed"):
        model.generate(1, steps=2, attributes=["nucleus_shape=multilobed"])
    with pytest.raises(ConfigError, match="out of range"):
        model.attribute_ids(np.array([4, 0]), 1)
    plain = DiffusionModel(DiffusionConfig(**COND))
    with pytest.raises(ConfigError, match="attributes need a diffusion model conditioned on attributes"):
        plain.generate(1, steps=2, labels="basophil", attributes=request)


def test_keras_file_round_trip_with_safe_mode_keeps_the_vocabulary(tmp_path):
    model = _model()
    model.train_step(_batch())
    _make_conditions_matter(model)
    export = DiffusionModel(model.config)
    export.set_weights(model.get_weights())
    export.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True, compile=False)
    assert isinstance(loaded, DiffusionModel) and loaded.config == model.config
    assert loaded.attribute_vocabulary == model.attribute_vocabulary
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))
    request = ["cytoplasm_vacuole=yes"]
    np.testing.assert_array_equal(loaded.generate(2, steps=2, seed=5, labels="neutrophil", attributes=request),
                                  model.generate(2, steps=2, seed=5, labels="neutrophil", attributes=request))


# The training script, the sampler and generate.py on the embedded sample -----------------------------

TRAIN_TINY = ["--size", "16", "--batch-size", "32", "--precision", "fp32", "--seed", "3", "--set", "depth=2",
              "--set", "base_width=8", "--set", "block_depth=1", "--set", "grid_size=4",
              "--set", "diffusion_steps=2", "--set", "normalizer_batches=1", "--set", "condition_dims=16",
              "--set", "class_embedding_dims=8", "--quiet"]


@pytest.fixture(scope="module")
def attribute_run(tmp_path_factory) -> Path:
    from cellgen.cli.train_ddim import main

    out = tmp_path_factory.mktemp("ddim-attr") / "run"
    assert main(["--config", "ddim_cond32", "--data", str(sample_path("train")), "--attributes-csv", str(TABLE),
                 "--set", "attributes=nucleus_shape,cytoplasm_vacuole", "--set", f"val_data={sample_path('val')}",
                 "--epochs", "1", "--out", str(out), *TRAIN_TINY]) == 0
    return out


def test_one_epoch_on_the_sample_records_the_vocabulary_and_the_model_round_trips(attribute_run, tmp_path):
    from cellgen.diffusion.sampling import load_diffusion_model

    run = RunDir.open(attribute_run)
    assert run.is_complete
    history = read_history(run.logs / "history.csv")
    assert np.isfinite(history["noise_loss"][0]) and np.isfinite(history["val_noise_loss"][0])
    model, config = load_diffusion_model(attribute_run)
    assert config.attributes == ["nucleus_shape", "cytoplasm_vacuole"]
    table = {"nucleus_shape": ["irregular", "segmented-bilobed", "segmented-multilobed", "unsegmented-band",
                               "unsegmented-indented", "unsegmented-round"], "cytoplasm_vacuole": ["no", "yes"]}
    assert model.attribute_vocabulary == table and config.attribute_vocabulary() == table
    assert read_json(run.metrics / "train.json")["attributes"] == ["nucleus_shape", "cytoplasm_vacuole"]
    assert "conditioned on attributes nucleus_shape, cytoplasm_vacuole" in (run.logs / "run.log").read_text()
    model.save(tmp_path / "again.keras")
    again = keras.saving.load_model(tmp_path / "again.keras", safe_mode=True, compile=False)
    assert all(np.array_equal(a, b) for a, b in zip(again.get_weights(), model.get_weights()))


def test_sampler_draws_the_requested_attributes(attribute_run):
    from cellgen.runs import RunError
    from cellgen.sampling import load_sampler

    request = ["nucleus_shape=segmented-multilobed"]
    sampler = load_sampler(attribute_run, steps=2, guidance=2.0, attributes=request)
    assert sampler.attributes == request and sampler.describe()["attributes"] == request
    images = sampler.sample(2, seed=4, class_name="neutrophil")
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    np.testing.assert_allclose(images, sampler.model.generate(2, steps=2, seed=4, labels="neutrophil",
                                                              attributes=request, guidance=2.0, batch_size=64),
                               atol=1e-6)
    with pytest.raises(ConfigError, match="--attr: cytoplasm_vacuole has no value 'maybe'"):
        load_sampler(attribute_run, attributes=["cytoplasm_vacuole=maybe"])
    with pytest.raises(RunError, match="--attr needs a diffusion run conditioned on attributes"):
        load_sampler(OLD_RUNS / "ddim", attributes=request)


def test_generate_cli_with_attr_and_its_errors(attribute_run, tmp_path, capsys):
    from cellgen.cli.generate import main
    from cellgen.images import read_rgb

    out = tmp_path / "multilobed"
    assert main(["--run", str(attribute_run), "--out", str(out), "--class", "neutrophil",
                 "--attr", "nucleus_shape=segmented-multilobed", "--attr", "cytoplasm_vacuole=no",
                 "--guidance", "2", "--n", "3", "--steps", "2", "--quiet"]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 3 and read_rgb(files[0]).shape == (16, 16, 3)
    for argv, message in (
            (["--attr", "nucleus=segmented-multilobed"], "--attr: unknown attribute 'nucleus' (this model's "
                                                         "attributes: nucleus_shape, cytoplasm_vacuole)"),
            (["--attr", "nucleus_shape=multilobed"], "--attr: nucleus_shape has no value 'multilobed' (values: "
                                                     "irregular, segmented-bilobed"),
            (["--attr", "nucleus_shape"], "--attr: expected COLUMN=VALUE"),
            (["--attr", "cytoplasm_vacuole=no", "--attr", "cytoplasm_vacuole=yes"], "requested twice")):
        capsys.readouterr()
        assert main(["--run", str(attribute_run), "--out", str(tmp_path / "x"), "--n", "1", *argv]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error
    for run, message in ((OLD_RUNS / "ddim", "--attr needs a diffusion run conditioned on attributes"),
                         (OLD_RUNS / "gan", "is a vanilla_gan run")):
        assert main(["--run", str(run), "--out", str(tmp_path / "y"), "--n", "1",
                     "--attr", "nucleus_shape=segmented-multilobed"]) == 2
        error = capsys.readouterr().err.strip().splitlines()
        assert len(error) == 1 and message in error[0], error


def test_finetune_on_a_selection_trains_on_the_selected_images_only(attribute_run, tmp_path, capsys):
    """N&Z's route: a base model fine-tuned on the multilobed neutrophils (4 in the sample)."""
    from cellgen.cli.train_ddim import main

    out = tmp_path / "multilobed"
    assert main(["--finetune-from", str(attribute_run), "--class", "neutrophil",
                 "--select", "nucleus_shape=segmented-multilobed", "--epochs", "1", "--out", str(out),
                 "--set", "run_eagerly=true", "--set", "val_data=", "--quiet"]) == 0
    config = RunDir.open(out).load_config(DiffusionConfig)
    assert config.select == ["nucleus_shape=segmented-multilobed"] and config.class_name == "neutrophil"
    assert config.attributes_csv == str(TABLE)  # the base run's table, as the data is the base run's
    summary = read_json(out / "metrics" / "train.json")
    assert summary["training_images"] == 4 and summary["select"] == "nucleus_shape=segmented-multilobed"
    capsys.readouterr()
    assert main(["--finetune-from", str(attribute_run), "--select", "nucleus_shape=multilobed", "--epochs", "1",
                 "--out", str(tmp_path / "bad"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: --select: nucleus_shape has no value 'multilobed'")
    # A base run without an attribute table: --select needs --attributes-csv.
    assert main(["--finetune-from", str(OLD_RUNS / "ddim"), "--select", "nucleus_shape=segmented-multilobed",
                 "--epochs", "1", "--out", str(tmp_path / "bad2"), "--quiet"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "select needs an attribute table: --attributes-csv CSV" in error[0], error
