"""Feature extractors (InceptionV3, domain classifier), the real-feature cache, evaluate_generated
and the evaluate_generator.py script (--generated and --run)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import textwrap
from pathlib import Path
from typing import ClassVar

import keras
import numpy as np
import pytest

from cellgen.config import CommonConfig
from cellgen.data_reader import DataReader
from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.features import (ClassifierExtractor, FeatureCache, InceptionExtractor, features_of_source,
                                       load_extractor, resolve_classifier_path)
from cellgen.evaluate.fid import fid_from_features
from cellgen.evaluate.generated import evaluate_generated
from cellgen.images import read_rgb, write_rgb
from cellgen.runs import read_json, set_seed
from cellgen.sample_data import sample_path

SIZE = 32


@pytest.fixture(scope="module")
def inception():
    """InceptionV3 at the default 299 px with random weights (ImageNet cannot be downloaded here)."""
    set_seed(0)
    return InceptionExtractor(weights=None, batch_size=8)


@pytest.fixture(scope="module")
def domain_model(tmp_path_factory, sample_data):
    """A small 8-class cell classifier trained here; returns (path of the .keras file, loss history)."""
    set_seed(0)
    reader = DataReader(sample_data, image_size=SIZE, batch_size=32, shuffle=True, seed=0)
    images, labels = reader.load_all()
    inputs = keras.Input((SIZE, SIZE, 3))
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", use_bias=False)(x)
        # momentum 0.9: ~6 steps per epoch, the moving statistics must follow the data quickly
        x = keras.layers.BatchNormalization(momentum=0.9)(x)
        x = keras.layers.ReLU()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(len(reader.classes), activation="softmax", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    history = model.fit(images, labels, batch_size=32, epochs=25, verbose=0, shuffle=True)
    folder = tmp_path_factory.mktemp("classifier")
    model.save(folder / "model.keras")
    return folder / "model.keras", history.history["loss"]


@pytest.fixture(scope="module")
def all_sample_images():
    """Every shipped sample image (train, val, test) per class, read at SIZE."""
    by_class = {}
    for split in ("train", "val", "test"):
        reader = DataReader(sample_path(split), image_size=SIZE, batch_size=64, shuffle=False)
        images, labels = reader.load_all()
        for class_id, name in enumerate(reader.classes):
            by_class.setdefault(name, []).append(images[labels == class_id])
    return {name: np.concatenate(parts) for name, parts in by_class.items()}


def copy_class(sample_data: Path, name: str, target: Path, count: int) -> Path:
    target.mkdir(parents=True)
    for path in sorted((sample_data / name).glob("*.jpg"))[:count]:
        shutil.copy2(path, target / path.name)
    return target


# Extractors -----------------------------------------------------------------------------


def test_inception_extractor_shapes_and_resizing(inception):
    assert inception.input_size == (299, 299) and inception.feature_dim == 2048
    assert inception.describe()["name"] == "inception-random-299"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(3, 48, 48, 3), dtype=np.uint8)
    features = inception(pixels)
    assert features.shape == (3, 2048) and features.dtype == np.float32 and np.all(np.isfinite(features))
    as_float = inception(pixels.astype(np.float32) / 127.5 - 1.0)
    np.testing.assert_allclose(features, as_float, rtol=1e-5, atol=1e-6)
    assert inception(np.zeros((0, 48, 48, 3), np.float32)).shape == (0, 2048)
    assert inception.fingerprint() == inception.fingerprint()
    with pytest.raises(EvaluationError, match="at least 75"):
        InceptionExtractor(weights=None, input_size=64)
    with pytest.raises(EvaluationError, match="file not found"):
        InceptionExtractor(weights="/no/such/inception.h5")
    with pytest.raises(EvaluationError, match="expected images"):
        inception(np.zeros((2, 8, 8), np.float32))


def test_inception_real_features_are_cached(inception, sample_data, tmp_path):
    source = copy_class(sample_data, "monocyte", tmp_path / "real" / "monocyte", 6).parent
    cache = FeatureCache(tmp_path / "cache")
    first = features_of_source(source, inception, image_size=SIZE, cache=cache, progress=False)
    assert not first.from_cache and first.features.shape == (6, 2048)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1 and len(list((tmp_path / "cache").glob("*.json"))) == 1
    second = features_of_source(source, inception, image_size=SIZE, cache=cache, progress=False)
    assert second.from_cache and np.array_equal(first.features, second.features)
    assert second.files == first.files and len(second.files) == 6


def test_cache_key_covers_size_files_and_extractor(domain_model, sample_data, tmp_path):
    extractor = ClassifierExtractor(domain_model[0])
    source = copy_class(sample_data, "basophil", tmp_path / "real" / "basophil", 8).parent
    cache = FeatureCache(tmp_path / "cache")

    def read(**options):
        return features_of_source(source, extractor, progress=False, cache=cache, **options)

    assert not read(image_size=SIZE).from_cache
    assert read(image_size=SIZE).from_cache
    assert not read(image_size=24).from_cache  # another image size
    assert not read(image_size=SIZE, crop=0.8).from_cache  # another crop
    changed = sorted((source / "basophil").iterdir())[0]
    os.utime(changed, (1_000_000_000, 1_000_000_000))
    assert not read(image_size=SIZE).from_cache  # a data file changed
    assert read(image_size=SIZE).from_cache
    retrained = keras.saving.load_model(domain_model[0])
    retrained.get_layer("embedding").kernel.assign(retrained.get_layer("embedding").kernel * 0.5)
    assert not features_of_source(source, ClassifierExtractor(retrained), image_size=SIZE, cache=cache,
                                  progress=False).from_cache  # other weights, other key


def test_domain_extractor_gives_penultimate_features_that_separate_cells(domain_model, all_sample_images,
                                                                         tmp_path):
    path, losses = domain_model
    assert losses[-1] < 0.6 * losses[0]  # the classifier learned something
    extractor = load_extractor(str(path))
    assert isinstance(extractor, ClassifierExtractor) and extractor.feature_dim == 16
    assert extractor.input_size == (SIZE, SIZE)
    model = keras.saving.load_model(path)
    embedding = keras.Model(model.inputs, model.get_layer("embedding").output)
    images = all_sample_images["lymphocyte"][:5]
    np.testing.assert_allclose(extractor(images), embedding.predict(images, verbose=0), rtol=1e-5, atol=1e-5)
    larger = np.repeat(np.repeat(images, 2, axis=1), 2, axis=2)  # 64 px: resized to the model's 32
    assert extractor(larger).shape == (5, 16)
    # distances in domain features: two halves of one class are closer than two classes
    lymphocytes = extractor(all_sample_images["lymphocyte"])
    neutrophils = extractor(all_sample_images["neutrophil"])
    within = fid_from_features(lymphocytes[::2], lymphocytes[1::2])
    between = fid_from_features(lymphocytes[::2], neutrophils[::2])
    assert between > 3 * within
    # run directories: model.keras or models/best.keras
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    shutil.copy(path, run / "models" / "best.keras")
    assert resolve_classifier_path(run) == run / "models" / "best.keras"
    assert ClassifierExtractor(run).feature_dim == 16
    with pytest.raises(EvaluationError, match="holds no model.keras or best.keras"):
        resolve_classifier_path(tmp_path)
    (tmp_path / "weights.h5").write_bytes(b"x")
    with pytest.raises(EvaluationError, match="not a .keras model file"):
        load_extractor(str(tmp_path / "weights.h5"))
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(EvaluationError, match="cannot load"):
        load_extractor(str(tmp_path / "broken.keras"))
    inputs = keras.Input((8, 8, 3))
    with pytest.raises(EvaluationError, match="no Dense layer"):
        ClassifierExtractor(keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)))


def test_project_classifier_with_custom_layers_loads_safely(tmp_path):
    from cellgen.classify.models import build_classifier

    model = build_classifier("smallcnn", num_classes=3, image_size=SIZE, weights=None, cnn_width=4, cnn_blocks=2)
    model.save(tmp_path / "model.keras")
    extractor = ClassifierExtractor(tmp_path)  # a folder with model.keras, loaded with safe_mode=True
    assert extractor.feature_dim == 8 and extractor(np.zeros((2, SIZE, SIZE, 3), np.float32)).shape == (2, 8)


# evaluate_generated --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def copied_generated(tmp_path_factory, sample_data):
    """'Generated' images that are exact copies of 16 training basophils (PNG)."""
    folder = tmp_path_factory.mktemp("copies")
    for path in sorted((sample_data / "basophil").glob("*.jpg"))[:16]:
        write_rgb(folder / f"{path.stem}.png", read_rgb(path))
    return folder


def test_evaluate_generated_reports_seeds_and_flags_copies(domain_model, sample_data, copied_generated, tmp_path):
    extractor = ClassifierExtractor(domain_model[0])
    out = tmp_path / "eval"
    result = evaluate_generated(sample_data, copied_generated, extractor, n=12, seeds=3, class_name="basophil",
                                kid_subset_size=10, kid_subsets=5, cache_dir=tmp_path / "cache", progress=False,
                                out_dir=out, memorization_n=16)
    assert result["settings"]["image_size"] == 64  # the generated images' size
    assert [row["seed"] for row in result["per_seed"]] == [0, 1, 2]
    assert all(row["n_real"] == 12 and row["n_generated"] == 12 for row in result["per_seed"])
    fids = result["summary"]["fid"]["values"]
    assert len(set(fids)) == 3  # each seed draws other subsets
    assert result["summary"]["fid"]["std"] == pytest.approx(np.std(fids, ddof=1))
    assert set(result["summary"]) == {"fid", "kid", "precision", "recall", "density", "coverage"}
    memorization = result["memorization"]
    for space in ("features", "pixels"):
        assert memorization[space]["share_below"] == 1.0 and memorization[space]["min_distance"] < 1e-3
    closest = memorization["pixels"]["closest_pairs"][0]
    assert Path(closest[1]).stem == Path(sorted(os.listdir(copied_generated))[closest[0]]).stem
    for name in ("metrics.json", "report.md", "real_vs_generated.png", "memorization_pixels.png",
                 "memorization_features.png"):
        assert (out / name).is_file(), name
    saved = read_json(out / "metrics.json")
    assert saved["summary"]["fid"]["mean"] == pytest.approx(result["summary"]["fid"]["mean"])
    assert "environment" in saved and "| fid |" in (out / "report.md").read_text()
    assert read_rgb(out / "real_vs_generated.png").shape[1] > 2 * 64


def test_evaluate_generated_with_fresh_images_and_small_sets(domain_model, sample_data, tmp_path):
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, size=(10, 40, 40, 3), dtype=np.uint8)  # in-memory "generated" images
    result = evaluate_generated(sample_data, noise, ClassifierExtractor(domain_model[0]), n=30, seeds=2,
                                class_name="eosinophil", kid_subset_size=8, kid_subsets=4, use_cache=False,
                                progress=False, memorization_n=10)
    assert result["settings"]["image_size"] == 40
    assert result["memorization"]["pixels"]["share_below"] == 0.0
    assert any("real set has 24 images: n=10" in note for note in result["notes"])
    assert any("generated set has 10 images: n=10" in note for note in result["notes"])
    assert all(row["n_real"] == row["n_generated"] == 10 for row in result["per_seed"])
    assert result["settings"]["n_used"] == 10
    assert result["summary"]["precision"]["mean"] < 0.5
    with pytest.raises(EvaluationError, match="--n must be at least 6"):
        evaluate_generated(sample_data, noise, ClassifierExtractor(domain_model[0]), n=3, progress=False)
    # a generated folder with a sub-folder per class: only the evaluated class is read
    per_class = evaluate_generated(sample_data, sample_path("val"), ClassifierExtractor(domain_model[0]), n=20,
                                   seeds=1, class_name="basophil", kid_subset_size=8, kid_subsets=2,
                                   use_cache=False, progress=False, memorization=False)
    assert per_class["generated"]["images"] == 8
    assert per_class["per_seed"][0]["n_generated"] == per_class["per_seed"][0]["n_real"] == 8
    two_classes = tmp_path / "two_classes"
    for name in ("eosinophil", "lymphocyte"):
        shutil.copytree(sample_path("val") / name, two_classes / name)
    with pytest.raises(EvaluationError, match="no class folder 'basophil'"):
        evaluate_generated(sample_data, two_classes, ClassifierExtractor(domain_model[0]), n=20,
                           class_name="basophil", use_cache=False, progress=False)


# The script ------------------------------------------------------------------------------------


def test_cli_generated_folder_and_bad_input(domain_model, sample_data, copied_generated, tmp_path, capsys):
    from cellgen.cli.evaluate_generator import main

    out = tmp_path / "out"
    base = ["--real", str(sample_data), "--class", "basophil", "--extractor", str(domain_model[0]),
            "--n", "10", "--seeds", "2", "--kid-subset-size", "8", "--kid-subsets", "3",
            "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    assert main(base + ["--generated", str(copied_generated), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "fid" in printed and "memorisation (pixels): 100.0%" in printed
    assert read_json(out / "metrics.json")["real"]["from_cache"] is False
    assert main(base + ["--generated", str(copied_generated), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(base + ["--generated", str(copied_generated), "--out", str(out), "--overwrite"]) == 0
    assert read_json(out / "metrics.json")["real"]["from_cache"] is True
    capsys.readouterr()
    bad = {
        "missing-folder": (["--generated", str(tmp_path / "missing")], "--generated"),
        "bad-extractor": (["--generated", str(copied_generated), "--extractor", str(tmp_path / "nope.keras")],
                          "nope.keras"),
        "bad-n": (["--generated", str(copied_generated), "--n", "0"], "--n must be >= 1"),
        "run-options": (["--generated", str(copied_generated), "--steps", "5"], "apply to --run only"),
        "class": (["--generated", str(copied_generated), "--class", "macrophage"], "macrophage"),
    }
    for name, (extra, message) in bad.items():
        assert main(base + extra + ["--out", str(tmp_path / name)]) == 2, name
        error = capsys.readouterr().err.strip()
        assert error.startswith("error: ") and message in error and len(error.splitlines()) == 1, (name, error)


@dataclasses.dataclass
class _TestGeneratorConfig(CommonConfig):
    kind: ClassVar[str] = "test_generator"


SAMPLER_MODULE = '''
import numpy as np
from cellgen.data_reader import DataReader

CALLS = []


class NoisyCopySampler:
    """Training images plus seed-dependent noise: deterministic for a seed."""

    kind = "test_generator"
    classes = None

    def __init__(self, run, steps=None):
        config = run.config_dict()
        self.image_size = config["image_size"]
        self.steps = steps
        reader = DataReader(config["data"], image_size=self.image_size, class_filter="basophil", shuffle=False)
        self.images, _ = reader.load_all()

    def sample(self, count, seed, class_name=None, batch_size=64):
        CALLS.append((count, seed, class_name, self.steps))
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(self.images), size=count)
        return np.clip(self.images[picks] + rng.normal(0, 0.1, size=(count,) + self.images.shape[1:]), -1, 1)


def load(run, steps=None, **options):
    return NoisyCopySampler(run, steps=steps)
'''


def test_cli_run_draws_new_images_per_seed_through_the_sampler_registry(domain_model, sample_data, tmp_path,
                                                                         monkeypatch, capsys):
    import importlib

    from cellgen import sampling
    from cellgen.cli.evaluate_generator import main
    from cellgen.runs import RunDir

    (tmp_path / "modules").mkdir()
    (tmp_path / "modules" / "eval_test_sampler.py").write_text(textwrap.dedent(SAMPLER_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path / "modules"))
    monkeypatch.setitem(sampling.SAMPLER_LOADERS, "test_generator", "eval_test_sampler:load")
    run = tmp_path / "run"
    RunDir.create(run, _TestGeneratorConfig(data=str(sample_data), image_size=SIZE, out=str(run)))
    out = tmp_path / "out"
    assert main(["--real", str(sample_data), "--class", "basophil", "--run", str(run), "--steps", "7",
                 "--extractor", str(domain_model[0]), "--n", "12", "--seeds", "2", "--batch-size", "5",
                 "--kid-subset-size", "8", "--kid-subsets", "3", "--no-cache", "--quiet", "--out", str(out)]) == 0
    module = importlib.import_module("eval_test_sampler")
    seeds_seen = sorted({seed for _, seed, _, _ in module.CALLS})
    # seed s, batch b -> s * 100003 + b; 12 images in batches of 5 -> 3 batches per seed
    assert seeds_seen == [0, 1, 2, 100_003, 100_004, 100_005]
    assert sum(count for count, _, _, _ in module.CALLS) == 24 and {steps for *_, steps in module.CALLS} == {7}
    metrics = read_json(out / "metrics.json")
    assert metrics["generated"]["source"] == "sampler:test_generator"
    assert metrics["settings"]["image_size"] == SIZE
    assert all(row["n_generated"] == 12 for row in metrics["per_seed"])
    assert metrics["per_seed"][0]["fid"] != metrics["per_seed"][1]["fid"]
    # the memorisation reference defaults to the run's training data (its basophils here)
    assert metrics["memorization"]["train"] == str(sample_data) and metrics["memorization"]["train_images"] == 24
    assert metrics["memorization"]["pixels"]["median_ratio"] < 1.0  # noisy copies sit close to the training set
    capsys.readouterr()
    assert main(["--real", str(sample_data), "--run", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not a cellgen run directory" in capsys.readouterr().err


def test_imagenet_weights_offline_are_a_one_line_error(sample_data, copied_generated, tmp_path,
                                                       no_imagenet_weights, capsys):
    from cellgen.cli.evaluate_generator import main
    from cellgen.evaluate.features import require_inception_weights

    with pytest.raises(EvaluationError, match="cannot be downloaded") as raised:
        InceptionExtractor(weights="imagenet", input_size=75)
    assert "--inception-weights FILE" in str(raised.value) and "domain" in str(raised.value)
    require_inception_weights(None)  # random weights need nothing
    with pytest.raises(EvaluationError, match="file not found"):
        require_inception_weights(tmp_path / "missing.h5")
    assert main(["--real", str(sample_data), "--generated", str(copied_generated), "--out", str(tmp_path / "o"),
                 "--extractor", "inception", "--n", "10", "--seeds", "1", "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --inception-weights imagenet:") and len(error.splitlines()) == 1
    # a cached copy is used without any download
    cached = no_imagenet_weights / "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"")
    require_inception_weights("imagenet")


def test_evaluation_options_round_trip_through_the_script(tmp_path):
    """The study writes ``GeneratorEvaluation.to_argv()`` to commands.sh: the script parses it back."""
    from cellgen.cli.evaluate_generator import build_parser, options_from_args
    from cellgen.evaluate.tasks import GeneratorEvaluation

    options = GeneratorEvaluation(real="val", out=str(tmp_path / "e"), generated="synthetic/basophil",
                                  extractor="clf.keras", n=40, seeds=2, class_name="basophil", train="kept.csv",
                                  size=32, overwrite=True, progress=False, memorization=False, cache=False,
                                  cache_dir="cache", crop=0.8)
    assert options_from_args(build_parser().parse_args(options.to_argv())) == options
    run = GeneratorEvaluation(real="val", out="e", run="runs/ddim", steps=10, eta=0.0, epoch=3)
    assert options_from_args(build_parser().parse_args(run.to_argv())) == run
