"""Classifier networks: presets build and step, preprocessing, batch-norm momentum, freezing, saving."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from cellgen.classify.config import ClassifierConfig
from cellgen.classify.models import (BACKBONES, BackbonePreprocess, backbone_of, build_classifier,
                                     build_classifier_from_config, load_classifier)
from cellgen.classify.train_lib import build_and_compile
from cellgen.config import ConfigError, load_config
from cellgen.data_reader import DataReader
from cellgen.images import from_uint8
from cellgen.sample_data import sample_path

CLASSES = ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"]


@pytest.fixture(scope="module")
def tiny_batch():
    """64 real images (8 per class) at 32 px and their labels."""
    reader = DataReader(sample_path("train"), image_size=32, class_limits={name: 8 for name in CLASSES},
                        shuffle=False)
    return reader.load_all()


def tiny_config(**changes) -> ClassifierConfig:
    values = {"image_size": 32, "cnn_width": 8, "cnn_blocks": 3}
    values.update(changes)
    return load_config(ClassifierConfig, "classifier_fast", values)


@pytest.mark.parametrize("preset, num_classes", [
    ("nz2023_mobilenetv2", 2), ("kc2020_xception", 8), ("classifier_fast", 8)])
def test_every_preset_builds_and_takes_one_step(preset, num_classes):
    # ImageNet weights cannot be downloaded here: same networks, random initialisation
    config = load_config(ClassifierConfig, preset, {"weights": "none"})
    model, optimizer = build_and_compile(config, num_classes)
    # eager: tracing the training graph of a 150-layer backbone costs ~15 s on a 2-core CPU;
    # graph-mode training runs in the other tests
    model.run_eagerly = True
    size = config.image_size
    assert model.input_shape == (None, size, size, 3) and model.output_shape == (None, num_classes)
    if preset == "nz2023_mobilenetv2":
        assert config.alpha == 0.75 and backbone_of(model).get_layer("Conv1").filters == 24  # 32 * 0.75
    images = np.random.default_rng(0).uniform(-1, 1, (2, size, size, 3)).astype("float32")
    labels = np.array([0, 1], dtype="int32")
    before = [weight.copy() for weight in model.get_weights()]
    logs = model.train_on_batch(images, labels, return_dict=True)
    assert np.isfinite(logs["loss"]) and int(optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    probabilities = keras.ops.convert_to_numpy(model(images, training=False))
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("mode, keras_module", [
    ("tf", keras.applications.mobilenet_v2), ("tf", keras.applications.xception),
    ("torch", keras.applications.densenet), ("caffe", keras.applications.resnet50)])
def test_preprocessing_matches_the_backbones_own(mode, keras_module):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 8, 8, 3)).astype("float32")
    expected = keras_module.preprocess_input(pixels.copy())
    ours = BackbonePreprocess(mode)(from_uint8(pixels)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


def test_both_thesis_backbones_take_our_range_unchanged():
    assert BACKBONES["mobilenetv2"].preprocess_mode == "tf" and BACKBONES["xception"].preprocess_mode == "tf"


def test_mixed_precision_keeps_probabilities_float32():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    model = build_classifier_from_config(tiny_config(), 8)
    assert backbone_of(model).layers[1].compute_dtype == "bfloat16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert model.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).dtype == np.float32


def test_bad_model_options_give_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown backbone 'resnet9'; choose one of mobilenetv2, smallcnn, xception"):
        tiny_config(backbone="resnet9")
    with pytest.raises(ConfigError, match="image_size 31 is below the mobilenetv2 minimum of 32 px"):
        build_classifier("mobilenetv2", 8, 31, weights=None)
    with pytest.raises(ConfigError, match="image_size 64 is below the xception minimum of 71 px"):
        build_classifier("xception", 8, 64, weights=None)
    with pytest.raises(ConfigError, match=r"weights: file not found: .*missing\.weights\.h5"):
        build_classifier("mobilenetv2", 8, 32, weights=str(tmp_path / "missing.weights.h5"))
    with pytest.raises(ConfigError, match="alpha 0.6 has no ImageNet weights"):
        build_classifier("mobilenetv2", 8, 96, weights="imagenet", alpha=0.6)
    with pytest.raises(ConfigError, match="smallcnn has no ImageNet weights"):
        build_classifier("smallcnn", 8, 32, weights="imagenet")


def test_imagenet_download_failure_is_one_line(monkeypatch):
    from keras.src.utils import file_utils

    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://storage.googleapis.com/x.h5: None -- [Errno -2] "
                        "Name or service not known")

    monkeypatch.setattr(file_utils, "get_file", offline)
    with pytest.raises(ConfigError, match=r"weights: cannot download the ImageNet weights of xception \(URL"):
        build_classifier("xception", 8, 71, weights="imagenet")


def test_batchnorm_momentum_is_set_in_every_backbone_layer():
    for backbone, size in (("mobilenetv2", 32), ("smallcnn", 32)):
        model = build_classifier(backbone, 3, size, weights=None, alpha=0.35, bn_momentum=0.8, cnn_blocks=2)
        norms = [layer for layer in backbone_of(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and {layer.momentum for layer in norms} == {0.8}


def test_short_fit_gives_inference_mode_accuracy_well_above_chance(tiny_batch):
    # Keras' default momentum 0.99 leaves the moving statistics near their initial values after
    # ~50 steps and the inference-mode model predicts one class (accuracy 1/8); 0.9 tracks the data.
    images, labels = tiny_batch
    keras.utils.set_random_seed(0)
    model, _ = build_and_compile(tiny_config(bn_momentum=0.9), 8)
    initial_loss = model.evaluate(images, labels, verbose=0)[0]
    history = model.fit(images, labels, batch_size=16, epochs=14, verbose=0)
    loss, accuracy = model.evaluate(images, labels, verbose=0)  # inference mode
    assert history.history["loss"][-1] < 0.5 * history.history["loss"][0]
    assert loss < initial_loss
    assert accuracy >= 0.6, f"inference-mode accuracy {accuracy} (chance 0.125)"


def test_frozen_backbone_stays_bit_identical(tiny_batch):
    images, labels = tiny_batch
    model, _ = build_and_compile(tiny_config(freeze_backbone=True), 8)
    backbone = backbone_of(model)
    assert not backbone.trainable_weights
    frozen = [weight.copy() for weight in backbone.get_weights()]  # includes batch-norm moving statistics
    head = model.get_layer("probabilities").get_weights()[0].copy()
    model.fit(images, labels, batch_size=16, epochs=2, verbose=0)
    for before, after in zip(frozen, backbone.get_weights()):
        assert np.array_equal(before, after)
    assert not np.array_equal(head, model.get_layer("probabilities").get_weights()[0])


def test_saved_classifier_reloads_in_safe_mode(tmp_path, tiny_batch):
    images, _ = tiny_batch
    model = build_classifier_from_config(tiny_config(), 8)
    path = tmp_path / "classifier.keras"
    model.save(str(path))
    loaded = load_classifier(path)
    np.testing.assert_allclose(loaded.predict(images[:4], verbose=0), model.predict(images[:4], verbose=0),
                               rtol=1e-6, atol=1e-6)
    assert isinstance(loaded.get_layer("preprocess"), BackbonePreprocess)
    with pytest.raises(ConfigError, match="model file not found"):
        load_classifier(tmp_path / "nope.keras")


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_weights_file_initialises_the_backbone(tmp_path):
    source = build_classifier("mobilenetv2", 4, 32, weights=None, alpha=0.35)
    path = tmp_path / "backbone.weights.h5"
    backbone_of(source).save_weights(str(path))
    loaded = build_classifier("mobilenetv2", 8, 32, weights=str(path), alpha=0.35)
    for expected, actual in zip(backbone_of(source).get_weights(), backbone_of(loaded).get_weights()):
        np.testing.assert_array_equal(expected, actual)
    with pytest.raises(ConfigError, match="does not fit the smallcnn backbone"):
        build_classifier("smallcnn", 8, 32, weights=str(path))
