import keras
import numpy as np
import pytest
import tensorflow as tf

from cellgen.distribute import StrategyError, make_strategy
from cellgen.precision import MODES, current_mode, resolve_mode, set_precision, wrap_optimizer


def _train(strategy, steps=4):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    y = (x @ rng.normal(size=(5, 1))).astype("float32")
    with strategy.scope():
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8, activation="tanh"), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.05), "mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    history = model.fit(dataset, epochs=steps, verbose=0, shuffle=False)
    return history.history["loss"], model.get_weights()


def test_two_cpu_replicas_match_single_device():
    strategy = make_strategy("cpu:2")
    assert strategy.num_replicas_in_sync == 2
    single_losses, single_weights = _train(make_strategy("default"))
    mirrored_losses, mirrored_weights = _train(strategy)
    np.testing.assert_allclose(mirrored_losses, single_losses, rtol=1e-4)
    for a, b in zip(single_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_unknown_strategy_and_missing_tf_config(monkeypatch):
    with pytest.raises(StrategyError, match="unknown strategy"):
        make_strategy("tpu-pod")
    with pytest.raises(StrategyError, match="cpu:N"):
        make_strategy("cpu:x")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(StrategyError, match="TF_CONFIG"):
        make_strategy("multiworker")


def test_cpu_split_larger_than_initialised_fails_clearly():
    with pytest.raises(StrategyError, match="logical CPUs"):
        make_strategy("cpu:64")


@pytest.mark.parametrize("mode", ["fp32", "bf16", "fp16"])
def test_precision_modes_set_policy(mode):
    assert set_precision(mode) == mode
    assert keras.mixed_precision.global_policy().name == MODES[mode]
    assert current_mode() == mode
    optimizer = wrap_optimizer(keras.optimizers.Adam())
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) == (mode == "fp16")


def test_auto_precision_resolves_and_bad_name_raises():
    assert resolve_mode("auto") in ("fp32", "bf16", "fp16")
    with pytest.raises(ValueError, match="fp8"):
        resolve_mode("fp8")


def test_bf16_dense_keeps_float32_variables():
    set_precision("bf16")
    layer = keras.layers.Dense(4)
    output = layer(np.ones((2, 3), dtype="float32"))
    assert layer.kernel.dtype == "float32" and output.dtype == "bfloat16"
