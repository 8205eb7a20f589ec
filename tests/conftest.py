"""Shared test fixtures.

The CPU is split into two logical devices before TensorFlow initialises, so
that ``cpu:2`` strategy tests run in any test order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import cellgen  # noqa: F401  (sets KERAS_BACKEND before keras is imported)
from cellgen.distribute import split_cpu

split_cpu(2)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the repository; skips the test when it is absent."""
    if not (SHARED_DATA / "pbc128").is_dir():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_pbc(shared_data) -> Path:
    """The 128-image PBC subset (16 per class, 128 px)."""
    return shared_data / "pbc128-tiny"


@pytest.fixture(scope="session")
def sample_data() -> Path:
    """The sample shipped inside the package (works on a fresh clone)."""
    from cellgen.sample_data import sample_path

    return sample_path("train")


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts with the float32 policy (a bf16 test must not leak into the next)."""
    import keras

    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def no_imagenet_weights(tmp_path, monkeypatch):
    """A machine without InceptionV3's ImageNet weights in the Keras cache and without internet
    (the download fails with Keras' own offline message)."""
    from cellgen.evaluate import features

    monkeypatch.setattr(features, "_keras_model_dirs", lambda: [tmp_path / "keras" / "models"])

    def offline():
        raise Exception("URL fetch failure on https://storage.googleapis.com/...: None -- "
                        "[Errno -2] Name or service not known")

    monkeypatch.setattr(features, "_download_imagenet_weights", offline)
    return tmp_path / "keras" / "models"
