"""Issue 19 items 4-5: K&C's route in the study (Vanilla-GAN base, AC-GAN on its frozen networks,
classifier arms) and the AC-GAN's image size following its backbone run."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from cellgen.config import CONFIG_DIR, ConfigError, RunRequest, load_config
from cellgen.gan.acgan_config import ACGANConfig
from cellgen.study.config import StudyConfig
from cellgen.study.pipeline import STAGES, Study

# The smallest networks the tiny study of tests/test_study.py uses (16 px: 4 -> 8 -> 16), 1 epoch each.
ACGAN_STUDY = [
    "train=sample:train", "val=sample:val", "test=sample:test", "image_size=16", "generator=acgan",
    "generator_preset=gan_fast",
    "generator_overrides=[\"epochs=1\", \"depth_g=16\", \"depth_d=8\", \"d_layers=2\", \"start_size=4\", "
    "\"batch_size=16\", \"sample_count=4\"]",
    "acgan_overrides=[\"epochs=1\", \"head_units=8\", \"samples_per_class=2\"]",
    "target_classes=basophil", "limit_class=basophil=6", "classifier_preset=classifier_fast",
    "classifier_overrides=[\"epochs=1\", \"cnn_width=4\", \"cnn_blocks=2\", \"batch_size=32\"]",
    "arms=baseline,synthetic", "seeds=1", "reference=false", "extractor=none", "expert_kit_size=0",
]


def _config(*extra: str) -> StudyConfig:
    return load_config(StudyConfig, None, ACGAN_STUDY + list(extra))


def _commands(study: Study) -> list[tuple[str, list[str]]]:
    rows = []
    for line in (study.directory / "commands.sh").read_text().splitlines():
        if not line.startswith("#"):
            python, script, *argv = shlex.split(line)
            rows.append((script.removesuffix(".py"), argv))
    return rows


@pytest.fixture(scope="module")
def gan_preset(tmp_path_factory) -> Path:
    """gan_fast with DiffAugment on: the study's base must train with it."""
    text = (CONFIG_DIR / "gan_fast.toml").read_text()
    assert "\naugment = []" in text
    preset = tmp_path_factory.mktemp("presets") / "gan_fast_augmented.toml"
    preset.write_text(text.replace("\naugment = []", '\naugment = ["translation"]'))
    return preset


@pytest.fixture(scope="module")
def study(tmp_path_factory, gan_preset) -> Study:
    study = Study(_config(f"generator_preset={gan_preset}"), tmp_path_factory.mktemp("acgan_study") / "study")
    study.run()
    return study


def test_acgan_study_runs_every_stage_on_the_kept_images(study, tmp_path):
    for stage in STAGES:
        assert study.is_done(stage), stage
    kept_rows = study.kept_csv.read_text().splitlines()[1:]
    assert sum(row.endswith(",basophil") for row in kept_rows) == 6
    # The base: a Vanilla-GAN on the kept images, with the preset's DiffAugment.
    base = json.loads((study.base_run / "config.json").read_text())
    assert json.loads((study.base_run / "classes.json").read_text())  # a run directory
    assert base["data"] == str(study.kept_csv) and base["augment"] == ["translation"]
    assert json.loads((study.base_run / "metrics" / "train.json").read_text())["augment"] == ["translation"]
    # One AC-GAN for every class, on the frozen base, trained on the same kept list (no leak).
    acgan = json.loads((study.acgan_run / "config.json").read_text())
    assert acgan["data"] == str(study.kept_csv) and acgan["backbone"] == str(study.base_run)
    assert acgan["image_size"] == base["image_size"] == 16 and acgan["head_units"] == 8
    acgan_metrics = json.loads((study.acgan_run / "metrics" / "train.json").read_text())
    assert acgan_metrics["class_counts"]["basophil"] == 6 and acgan_metrics["backbone"]["frozen"] is True
    assert sum(acgan_metrics["class_counts"].values()) == len(kept_rows)
    assert study.stage_record("finetune")["outputs"]["acgan"] == str(study.acgan_run)
    assert not (study.directory / "generators" / "basophil").exists()  # no per-class fine-tune
    # The synthetic basophils: 24 - 6, at the generators' size.
    from cellgen.images import read_rgb

    written = sorted(study.synthetic_dir("basophil").glob("*.png"))
    assert len(written) == 18 and read_rgb(written[0]).shape == (16, 16, 3)
    # commands.sh: the base, the AC-GAN on it, generate from the AC-GAN by class, the classifier arms.
    commands = _commands(study)
    assert [script for script, _ in commands] == ["train_vanilla_gan", "train_acgan", "generate",
                                                  "evaluate_classifier"]
    from cellgen.cli.options import request_from_args
    from cellgen.cli.train_acgan import build_parser
    from cellgen.gan.acgan_train import resolve_config

    request = request_from_args(build_parser().parse_args(commands[1][1]))
    assert request.out == str(study.acgan_run)
    assert resolve_config(request).to_dict() == acgan
    generate_argv = commands[2][1]
    assert generate_argv[generate_argv.index("--run") + 1] == str(study.acgan_run)
    assert generate_argv[generate_argv.index("--class") + 1] == "basophil"
    from cellgen.cli.generate import main as generate

    generate_argv[generate_argv.index("--out") + 1] = str(tmp_path / "again")
    assert generate(generate_argv) == 0
    again = sorted((tmp_path / "again").glob("*.png"))
    assert [a.read_bytes() for a in again] == [w.read_bytes() for w in written]
    # The report: the arms' F1, and the generator described as K&C's route.
    classifier = json.loads((study.classifier_dir / "report.json").read_text())
    assert set(classifier["arms"]) == {"baseline", "synthetic"}
    for arm in classifier["arms"].values():
        f1 = arm["runs"][0]["per_class_f1"]["basophil"]
        assert 0.0 <= f1 <= 1.0
    answer = json.loads((study.directory / "report.json").read_text())
    assert "AC-GAN" in answer["question"]
    assert any(line.startswith("synthetic - baseline, F1 of basophil") for line in answer["verdict"])
    text = (study.directory / "report.md").read_text()
    assert "| arm | weighted F1" in text and "AC-GAN on the frozen base" in text


def test_acgan_image_size_follows_the_backbone_unless_set(study, tmp_path, capsys):
    from cellgen.cli.train_acgan import main as acgan_main
    from cellgen.gan.acgan_train import resolve_config

    base, data = str(study.base_run), str(study.kept_csv)
    # kc2020_acgan is K&C's 256 px; on the 16 px base it takes 16 px when the size is not set.
    assert load_config(ACGANConfig, "kc2020_acgan").image_size == 256
    followed = resolve_config(RunRequest("kc2020_acgan", {"backbone": base, "data": data}, out=str(tmp_path / "a")))
    assert (followed.image_size, followed.latent_dim) == (16, 100)
    same = resolve_config(RunRequest("kc2020_acgan", {"backbone": base, "data": data, "image_size": 16},
                                     out=str(tmp_path / "b")))
    assert same.image_size == 16
    with pytest.raises(ConfigError, match=r"^image_size=256 differs from the backbone run's image_size=16 .*--size"):
        resolve_config(RunRequest("kc2020_acgan", {"backbone": base, "data": data, "image_size": 256},
                                  out=str(tmp_path / "c")))
    for option in (["--size", "32"], ["--set", "image_size=32"]):
        code = acgan_main(["--config", "kc2020_acgan", "--backbone", base, "--data", data,
                           "--out", str(tmp_path / "d")] + option)
        error = capsys.readouterr().err.strip()
        assert code == 2 and len(error.splitlines()) == 1
        assert "image_size=32" in error and "image_size=16" in error and base in error
    assert not (tmp_path / "d").exists()
    # The study's AC-GAN run log says where its size came from.
    log = (study.acgan_run / "logs" / "run.log").read_text()
    assert "image_size 16 and latent_dim 100 taken from the backbone" in log


def test_acgan_study_checks_fail_before_training(study, tmp_path, capsys):
    bad = Study(_config("acgan_overrides=[\"no_such_key=1\"]"), tmp_path / "bad")
    with pytest.raises(ConfigError, match="no_such_key"):
        bad.run()
    assert not (tmp_path / "bad" / "generators").exists()
    with pytest.raises(ConfigError, match="no_such_preset"):
        Study(_config("acgan_preset=no_such_preset"), tmp_path / "bad2").run()
    assert not (tmp_path / "bad2" / "generators").exists()
    # A reused base of another size: the AC-GAN would follow it, away from the study's generator size.
    reused = Study(_config(f"base_run={study.base_run}", "image_size=32"), tmp_path / "reused")
    with pytest.raises(ConfigError, match="generator_image_size=16"):
        reused.run()
    # Fine-tuning settings do nothing for an AC-GAN study: said, not silently dropped.
    config = _config("finetune_overrides=[\"epochs=1\"]")
    assert config.ignored_settings() == ["finetune_overrides"]
    assert _config().ignored_settings() == []
    assert load_config(StudyConfig, None, ["acgan_overrides=[\"epochs=1\"]"]).ignored_settings() == ["acgan_overrides"]
    Study(config, tmp_path / "warn").check()
    assert "warning: study: finetune_overrides is set but generator 'acgan' does not use it" in capsys.readouterr().err


def test_demo_preset_is_kc_route_and_resolves_every_stage(tmp_path):
    """configs/study_demo_acgan.toml: every stage's config resolves before anything trains."""
    from cellgen.config import config_from_request

    config = load_config(StudyConfig, "study_demo_acgan")
    assert config.acgan and config.trainer_kind == "vanilla_gan" and not config.per_class_finetune
    assert config.acgan_preset == "acgan_fast" and config.ignored_settings() == []
    study = Study(config, tmp_path / "demo")
    assert "basophil" in study.check() and not (tmp_path / "demo").exists()
    acgan = config_from_request(ACGANConfig, study.acgan_request())
    # acgan_fast's heads, the study's epochs, the kept images and the base run as backbone.
    assert (acgan.head_units, acgan.epochs, acgan.image_size) == (64, 2, 32)
    assert acgan.data == str(study.kept_csv) and acgan.backbone == str(study.base_run)


def test_a_study_started_before_the_acgan_settings_existed_still_resumes(tmp_path):
    """study.json of an older study lacks acgan_preset/acgan_overrides: their defaults, not a change."""
    config = load_config(StudyConfig, None, ["generator=vanilla_gan", "generator_preset=gan_fast"])
    study = Study(config, tmp_path / "old")
    study.directory.mkdir()
    study._save_config()
    saved = json.loads((study.directory / "study.json").read_text())
    del saved["acgan_preset"], saved["acgan_overrides"]
    (study.directory / "study.json").write_text(json.dumps(saved))
    study._save_config()
    with pytest.raises(ConfigError, match=r"different settings \(acgan_preset\)"):
        Study(config.replace(acgan_preset="kc2020_acgan"), study.directory)._save_config()
