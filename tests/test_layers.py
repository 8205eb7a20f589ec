"""The shared fused batch norm (cellgen.layers): numerics, config round trip, and old model files."""

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.layers import FusedBatchNormalization, UNetBatchNormalization

OLD_RUNS = Path(__file__).resolve().parent / "fixtures" / "old_runs"


def _images(seed=0, shape=(8, 5, 5, 6)):
    return np.random.default_rng(seed).normal(2.0, 3.0, size=shape).astype(np.float32)


def _unbiased(images):
    count = images.shape[0] * images.shape[1] * images.shape[2]
    return images.var(axis=(0, 1, 2)) * count / (count - 1)


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("moving_update", ["fused", "assign"])
def test_matches_keras_batch_norm_in_training_and_inference(affine, moving_update):
    images = _images()
    fused = FusedBatchNormalization(momentum=0.9, center=affine, scale=affine, moving_update=moving_update)
    reference = keras.layers.BatchNormalization(momentum=0.9, center=affine, scale=affine)
    for layer in (fused, reference):
        layer.build(images.shape)
    if affine:
        gamma, beta = np.linspace(0.5, 1.5, 6, dtype=np.float32), np.linspace(-1, 1, 6, dtype=np.float32)
        for layer in (fused, reference):
            layer.gamma.assign(gamma)
            layer.beta.assign(beta)
    np.testing.assert_allclose(fused(images, training=True).numpy(), reference(images, training=True).numpy(),
                               atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), 0.1 * images.mean(axis=(0, 1, 2)), rtol=1e-5)
    # The moving variance follows the unbiased batch variance (Keras 3's generic layer: the biased one).
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 + 0.1 * _unbiased(images), rtol=1e-5)
    # Inference mode: the moving statistics, as Keras' layer computes with them.
    reference.moving_mean.assign(fused.moving_mean.numpy())
    reference.moving_variance.assign(fused.moving_variance.numpy())
    np.testing.assert_allclose(fused(images, training=False).numpy(), reference(images, training=False).numpy(),
                               atol=1e-5)
    # Keras 3 semantics: a frozen layer normalises with its moving statistics and keeps them.
    fused.trainable = False
    mean = fused.moving_mean.numpy().copy()
    np.testing.assert_allclose(fused(images, training=True).numpy(), reference(images, training=False).numpy(),
                               atol=1e-5)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), mean)


def test_bfloat16_inputs_and_policies():
    images = _images()
    layer = FusedBatchNormalization(momentum=0.9)
    assert layer(tf.cast(images, tf.bfloat16), training=False).dtype == tf.float32  # the layer's policy decides
    mixed = FusedBatchNormalization(momentum=0.9, dtype="mixed_bfloat16")
    outputs = mixed(images, training=True)
    assert outputs.dtype == tf.bfloat16 and mixed.moving_mean.dtype == "float32"
    assert np.all(np.isfinite(tf.cast(outputs, tf.float32).numpy()))


def test_falls_back_to_keras_on_other_inputs():
    layer = FusedBatchNormalization(momentum=0.9)
    features = np.random.default_rng(1).normal(size=(16, 5)).astype(np.float32)
    reference = keras.layers.BatchNormalization(momentum=0.9)
    np.testing.assert_allclose(layer(features, training=True).numpy(), reference(features, training=True).numpy(),
                               atol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6)


def test_unet_defaults_and_replica_averaged_statistics():
    unet = UNetBatchNormalization(momentum=0.9)
    unet.build((None, 4, 4, 3))
    assert not unet.center and not unet.scale and unet.moving_update == "assign"
    assert [weight.name for weight in unet.weights] == ["moving_mean", "moving_variance"]
    assert {weight.aggregation for weight in unet.non_trainable_weights} == {"mean"}
    gan = FusedBatchNormalization()
    gan.build((None, 4, 4, 3))
    assert gan.center and gan.scale and gan.moving_update == "fused"
    assert [weight.name for weight in gan.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    assert {weight.aggregation for weight in gan.non_trainable_weights} == {"none"}
    with pytest.raises(ValueError, match="moving_update"):
        FusedBatchNormalization(moving_update="ema")


@pytest.mark.parametrize("cls, options", [
    (FusedBatchNormalization, {"momentum": 0.8, "gamma_initializer": keras.initializers.RandomNormal(1.0, 0.02)}),
    (FusedBatchNormalization, {"center": False, "moving_update": "assign", "average_across_replicas": True}),
    (UNetBatchNormalization, {"momentum": 0.9}),
])
def test_config_round_trip_and_keras_file(tmp_path, cls, options):
    layer = cls(name="norm", **options)
    clone = cls.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layer(inputs))
    model(_images(2, (4, 4, 4, 3)), training=True)  # move the statistics away from their initial values
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    assert type(loaded.get_layer("norm")) is cls
    assert loaded.get_layer("norm").get_config() == layer.get_config()
    images = _images(3, (2, 4, 4, 3))
    np.testing.assert_array_equal(loaded(images, training=False).numpy(), model(images, training=False).numpy())


def test_old_registered_names_still_resolve():
    assert keras.saving.get_registered_object("cellgen>FusedBatchNormalization") is FusedBatchNormalization
    assert keras.saving.get_registered_object("cellgen.diffusion>FusedBatchNormalization") is UNetBatchNormalization
    from cellgen.diffusion import blocks
    from cellgen.gan import networks

    assert networks.FusedBatchNormalization is FusedBatchNormalization
    assert blocks.FusedBatchNormalization is UNetBatchNormalization
    # A config as the U-Net's own layer wrote it before issue 15 (no moving_update / average_across_replicas).
    old = {"module": "cellgen.diffusion.blocks", "class_name": "FusedBatchNormalization",
           "registered_name": "cellgen.diffusion>FusedBatchNormalization",
           "config": {"name": "norm", "trainable": True, "dtype": "float32", "momentum": 0.9, "epsilon": 0.001,
                      "center": False, "scale": False}}
    layer = keras.saving.deserialize_keras_object(old, safe_mode=True)
    assert type(layer) is UNetBatchNormalization
    assert (layer.momentum, layer.center, layer.scale, layer.moving_update, layer.average_across_replicas) == (
        0.9, False, False, "assign", True)


@pytest.mark.parametrize("run, files", [("gan", ["generator-epoch-0001.keras", "discriminator-epoch-0001.keras"]),
                                        ("acgan", ["acgan_generator-epoch-0001.keras"])])
def test_old_gan_files_load_in_safe_mode(run, files):
    for name in files:
        model = keras.saving.load_model(OLD_RUNS / run / "models" / name, safe_mode=True, compile=False)
        norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
        if "generator" in name:
            assert norms and all(type(layer) is FusedBatchNormalization for layer in norms)
            assert any(np.abs(layer.moving_mean.numpy()).max() > 0 for layer in norms)  # trained statistics loaded
        inputs = [np.random.default_rng(0).normal(size=(2, *tensor.shape[1:])).astype(np.float32)
                  for tensor in model.inputs]
        if len(inputs) > 1:  # AC-GAN generator: (latent, class)
            inputs[1] = np.zeros((2, *model.inputs[1].shape[1:]), model.inputs[1].dtype)
        outputs = model(inputs if len(inputs) > 1 else inputs[0], training=False)
        for output in keras.tree.flatten(outputs):
            assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))


def test_old_ddim_file_loads_in_safe_mode_and_generates():
    from cellgen.diffusion.sampling import load_diffusion_model

    model, _ = load_diffusion_model(OLD_RUNS / "ddim")
    norms = [layer for layer in model.ema_network._flatten_layers() if isinstance(layer, FusedBatchNormalization)]
    assert norms and all(type(layer) is UNetBatchNormalization for layer in norms)
    assert any(np.abs(layer.moving_mean.numpy()).max() > 0 for layer in norms)
    images = model.generate(2, steps=2, seed=0)
    assert images.shape[0] == 2 and np.all(np.isfinite(images))
    direct = keras.saving.load_model(OLD_RUNS / "ddim" / "models" / "diffusion-epoch-0001.keras", safe_mode=True,
                                     compile=False)
    np.testing.assert_array_equal(direct.generate(2, steps=2, seed=0), images)
