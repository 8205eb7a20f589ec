import dataclasses
import json
from typing import ClassVar

import keras
import numpy as np
import pytest

from cellgen.config import CommonConfig
from cellgen.runs import (NonFiniteLossError, RunDir, RunError, TrainingState, make_callbacks,
                          raise_if_stopped_on_nan, read_history, resume_training)


@dataclasses.dataclass
class ToyConfig(CommonConfig):
    kind: ClassVar[str] = "toy"


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def test_run_directory_is_self_describing(tmp_path):
    run = RunDir.create(tmp_path / "run", ToyConfig(epochs=3), classes=["a", "b"])
    for name in ("config.toml", "config.json", "classes.json", "environment.json"):
        assert (run.path / name).is_file(), name
    assert json.loads((run.path / "config.json").read_text())["kind"] == "toy"
    environment = json.loads((run.path / "environment.json").read_text())
    assert environment["tensorflow"] and environment["keras"]
    assert run.classes == ["a", "b"]
    assert run.load_config(ToyConfig).epochs == 3


def test_existing_run_is_not_overwritten(tmp_path):
    run = RunDir.create(tmp_path / "run", ToyConfig())
    run.unlock()
    (run.checkpoints / "epoch-0001").mkdir()  # a run with something worth keeping
    with pytest.raises(RunError, match="--resume"):
        RunDir.create(tmp_path / "run", ToyConfig())
    RunDir.create(tmp_path / "run", ToyConfig(), resume=True)
    with pytest.raises(RunError, match="not a cellgen run"):
        RunDir.open(tmp_path)


def test_an_attempt_without_checkpoint_or_model_is_started_over(tmp_path, capsys):
    RunDir.create(tmp_path / "run", ToyConfig(epochs=3)).unlock()
    assert RunDir.create(tmp_path / "run", ToyConfig(epochs=5)).config_dict()["epochs"] == 5
    assert "starting over" in capsys.readouterr().out


def test_checkpoint_round_trip_restores_weights_and_optimizer(tmp_path):
    data_x, data_y = np.random.default_rng(0).normal(size=(32, 3)), np.ones((32, 1))
    model = _model()
    model.fit(data_x, data_y, epochs=2, batch_size=8, verbose=0)
    state = TrainingState(tmp_path / "ckpt", model=model, optimizer=model.optimizer)
    state.save(2, {"note": "x"})
    fresh = _model()
    fresh.optimizer.build(fresh.trainable_variables)
    restored = TrainingState(tmp_path / "ckpt", model=fresh, optimizer=fresh.optimizer).restore_latest()
    assert restored == {"epoch": 2, "optimizer_steps": {"optimizer": 8}, "note": "x"}
    assert int(fresh.optimizer.iterations) == int(model.optimizer.iterations) == 8
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(model.optimizer.variables, fresh.optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_resume_training_restores_epoch_and_time_and_the_config_decides_the_learning_rate(tmp_path, capsys):
    """Keras 3 stores the learning rate among the optimizer's variables, so restoring a
    checkpoint brings back the old rate; a rate changed with ``--set`` on resume must win."""
    data_x, data_y = np.random.default_rng(0).normal(size=(32, 3)), np.ones((32, 1))
    run = RunDir.create(tmp_path / "run", ToyConfig())
    model = _model()  # Adam(1e-2)
    model.fit(data_x, data_y, epochs=1, batch_size=8, verbose=0)
    TrainingState(run.checkpoints, model=model, optimizer=model.optimizer).save(3, {"train_seconds": 12.5})

    fresh = _model()
    fresh.optimizer.build(fresh.trainable_variables)
    state = TrainingState(run.checkpoints, model=fresh, optimizer=fresh.optimizer)
    epoch, seconds, restored = resume_training(state, run, resume=True, epochs=5,
                                               learning_rates=[(fresh.optimizer, 2.5e-4)])
    assert (epoch, seconds) == (3, 12.5) and restored["epoch"] == 3
    assert float(fresh.optimizer.learning_rate) == pytest.approx(2.5e-4)
    assert int(fresh.optimizer.iterations) == 4  # the optimizer state came back too
    assert "resumed from" in (run.logs / "run.log").read_text()

    # Without resume, the checkpoint is ignored; with nothing left to train, the user is told.
    assert resume_training(state, run, resume=False, epochs=5)[:2] == (0, 0.0)
    other = _model()
    other.optimizer.build(other.trainable_variables)
    resume_training(TrainingState(run.checkpoints, model=other, optimizer=other.optimizer), run,
                    resume=True, epochs=3)
    assert float(other.optimizer.learning_rate) == pytest.approx(1e-2)  # no override: the checkpoint's
    assert "already trained for 3 epochs" in capsys.readouterr().out


def test_optimizer_steps_are_recorded_and_read_back_from_older_checkpoints(tmp_path):
    data_x, data_y = np.random.default_rng(0).normal(size=(24, 3)), np.ones((24, 1))
    model = _model()
    model.fit(data_x, data_y, epochs=2, batch_size=8, verbose=0)  # 3 steps per epoch
    state = TrainingState(tmp_path / "ckpt", model=model, optimizer=model.optimizer)
    assert state.optimizer_steps() == {}  # no checkpoint yet
    path = state.save(2)
    assert state.optimizer_steps() == state.optimizer_steps(path) == {"optimizer": 6}
    # A checkpoint from before state.json recorded the steps: read from the optimizer's variables.
    (path / "state.json").write_text(json.dumps({"epoch": 2}))
    assert state.optimizer_steps(path) == {"optimizer": 6}
    assert TrainingState(tmp_path / "ckpt", model=model).optimizer_steps() == {"optimizer": 6}


def test_checkpoint_keeps_only_recent(tmp_path):
    model = _model()
    state = TrainingState(tmp_path, keep=2, model=model)
    for epoch in (1, 2, 3):
        state.save(epoch)
    assert [path.name for path in state.checkpoint_paths()] == ["epoch-0002", "epoch-0003"]


def test_nan_loss_stops_training_and_keeps_last_good_checkpoint(tmp_path):
    run = RunDir.create(tmp_path / "run", ToyConfig())
    model = _model()
    state = TrainingState(run.checkpoints, keep=None, model=model, optimizer=model.optimizer)

    class PoisonAfterFirstEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                self.model.layers[-1].kernel.assign(np.full((4, 1), np.nan, dtype=np.float32))

    callbacks = make_callbacks(run, state, tensorboard=False) + [PoisonAfterFirstEpoch()]
    # The poison runs after the checkpoint of epoch 1, so epoch 2 is the first bad one.
    x, y = np.ones((16, 3)), np.ones((16, 1))
    model.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=callbacks)
    assert [path.name for path in state.checkpoint_paths()] == ["epoch-0001"]
    with pytest.raises(NonFiniteLossError, match="epoch-0001"):
        raise_if_stopped_on_nan(callbacks, state)
    history = read_history(run.logs / "history.csv")
    assert len(history["loss"]) <= 2


def test_history_csv_is_written(tmp_path):
    run = RunDir.create(tmp_path / "run", ToyConfig())
    model = _model()
    model.fit(np.ones((8, 3)), np.ones((8, 1)), epochs=3, verbose=0,
              callbacks=make_callbacks(run, tensorboard=True))
    history = read_history(run.logs / "history.csv")
    assert history["epoch"] == [0, 1, 2] and len(history["loss"]) == 3
    assert any((run.logs / "tensorboard").rglob("events.out.tfevents*"))


@pytest.mark.parametrize("script, option", [("train_acgan", "--backbone"), ("train_latent_encoder", "--generator")])
def test_a_run_option_that_is_not_a_run_is_a_one_line_error_naming_the_option(script, option, tmp_path, capsys):
    import importlib

    from cellgen.sample_data import sample_path

    main = importlib.import_module(f"cellgen.cli.{script}").main
    missing = tmp_path / "no-such-run"
    code = main(["--data", str(sample_path("train")), "--out", str(tmp_path / "out"), option, str(missing)])
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error == [f"error: {option} {missing}: not a cellgen run directory (no config.json)"]
