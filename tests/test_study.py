"""End-to-end augmentation study on the smallest settings (issue: one-command study)."""

import json
import shlex

import pytest

from cellgen.cli.run_study import main as run_study_main
from cellgen.config import ConfigError, load_config
from cellgen.gan.config import VanillaGANConfig
from cellgen.study.config import StudyConfig
from cellgen.study.pipeline import STAGES, Study, StudyError

TINY_OVERRIDES = [
    "train=sample:train", "val=sample:val", "test=sample:test", "image_size=16",
    "generator=vanilla_gan", "generator_preset=gan_fast",
    "generator_overrides=[\"epochs=1\", \"depth_g=16\", \"depth_d=8\", \"d_layers=2\", \"start_size=4\", \"batch_size=16\"]",
    "finetune_preset=gan_fast",
    "finetune_overrides=[\"epochs=1\", \"batch_size=4\", \"freeze_d_layers=1\", \"depth_g=16\", \"depth_d=8\", \"d_layers=2\", \"start_size=4\"]",
    "target_classes=basophil", "limit_class=basophil=6", "classifier_preset=classifier_fast",
    "classifier_overrides=[\"epochs=1\", \"cnn_width=4\", \"cnn_blocks=2\", \"batch_size=32\"]",
    "arms=baseline,synthetic", "seeds=1", "expert_kit_size=6", "evaluation_seeds=1",
]


def _config(**extra):
    overrides = list(TINY_OVERRIDES) + [f"{key}={value}" for key, value in extra.items()]
    return load_config(StudyConfig, None, overrides)


def test_full_study_writes_every_stage_and_the_report(tmp_path):
    study = Study(_config(), tmp_path / "study")
    report = study.run()
    for stage in STAGES:
        assert study.is_done(stage), stage
    # Scarcity: every stage read the kept list, which has exactly 6 basophils.
    rows = (study.kept_csv).read_text().splitlines()[1:]
    assert sum(1 for row in rows if row.endswith(",basophil")) == 6
    counts = json.loads((study.directory / "data" / "counts.json").read_text())
    assert counts["kept"]["basophil"] == 6 and counts["original"]["basophil"] == 24
    # Fill back to the original count: 24 - 6 synthetic basophils.
    assert len(list(study.synthetic_dir("basophil").glob("*.png"))) == 18
    base_config = json.loads((study.base_run / "config.json").read_text())
    finetune_config = json.loads((study.finetune_run("basophil") / "config.json").read_text())
    assert base_config["data"] == finetune_config["data"] == str(study.kept_csv)
    assert (study.evaluation_dir / "basophil" / "metrics.json").is_file()
    assert (study.directory / "expert_kit" / "basophil").is_dir()
    classifier = json.loads((study.classifier_dir / "report.json").read_text())
    assert set(classifier["arms"]) == {"baseline", "synthetic"}
    text = report.read_text()
    assert "| arm | weighted F1" in text and "## Verdict" in text
    assert "report_assets/real_vs_synthetic_basophil.png" in text
    html = (study.directory / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    commands = (study.directory / "commands.sh").read_text()
    scripts = [shlex.split(line)[1] for line in commands.splitlines()]
    assert scripts == ["train_vanilla_gan.py", "train_vanilla_gan.py", "generate.py", "evaluate_classifier.py",
                       "evaluate_generator.py", "expert_test.py", "evaluate_classifier.py"]
    # Precision "preset": no stage is forced, each keeps its preset's precision.
    assert "precision" not in commands
    assert base_config["precision"] == load_config(VanillaGANConfig, "gan_fast").precision
    _check_commands_reproduce_the_stages(study, tmp_path)


def _commands(study):
    """commands.sh as (script module name, argv) pairs."""
    rows = []
    for line in (study.directory / "commands.sh").read_text().splitlines():
        python, script, *argv = shlex.split(line)
        assert python == "python"
        rows.append((script.removesuffix(".py"), argv))
    return rows


def _check_commands_reproduce_the_stages(study, tmp_path):
    """Each line of commands.sh, given to its script, resolves to what the stage ran (or redoes it)."""
    import importlib

    from cellgen.cli.options import request_from_args
    from cellgen.evaluate.tasks import GeneratorEvaluation
    from cellgen.gan.train_lib import resolve_config

    commands = _commands(study)
    # The generator runs: the same config as the run directory saved (base, then the fine-tune).
    from cellgen.cli.train_vanilla_gan import build_parser

    for (script, argv), run in zip(commands[:2], (study.base_run, study.finetune_run("basophil"))):
        request = request_from_args(build_parser().parse_args(argv))
        assert request.out == str(run)
        saved = json.loads((run / "config.json").read_text())
        assert resolve_config(request).to_dict() == saved, script
    assert commands[1][1][commands[1][1].index("--class") + 1] == "basophil"
    # generate.py writes the same images as the stage.
    from cellgen.cli.generate import main as generate

    script, argv = commands[2]
    out = argv.index("--out") + 1
    argv[out] = str(tmp_path / "regenerated")
    assert generate(argv) == 0
    written = sorted(study.synthetic_dir("basophil").glob("*.png"))
    again = sorted((tmp_path / "regenerated").glob("*.png"))
    assert [path.name for path in again] == [path.name for path in written]
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(written, again))
    # The evaluation and the expert kit parse back to the options the stage used.
    from cellgen.cli.evaluate_generator import build_parser as evaluation_parser
    from cellgen.cli.evaluate_generator import options_from_args

    options = options_from_args(evaluation_parser().parse_args(commands[4][1]))
    assert isinstance(options, GeneratorEvaluation) and options.train == str(study.kept_csv)
    assert options.generated == str(study.synthetic_dir("basophil")) and options.class_name == "basophil"
    assert options.to_argv() == commands[4][1]
    expert = importlib.import_module("cellgen.cli.expert_test")
    kit = expert.kit_options_from_args(expert.build_parser().parse_args(commands[5][1]))
    assert kit.out == str(study.directory / "expert_kit" / "basophil") and kit.n == 6
    # The classifier experiments (the feature classifier, then the arms): the config they saved.
    from cellgen.cli.evaluate_classifier import build_parser as classifier_parser
    from cellgen.cli.evaluate_classifier import config_from_arguments

    runs = ((commands[3], study.evaluation_dir / "feature_classifier"), (commands[6], study.classifier_dir))
    for (script, argv), out in runs:
        config = config_from_arguments(classifier_parser().parse_args(argv))
        assert config.to_dict() == json.loads((out / "config.json").read_text()), script
        assert config.data == str(study.kept_csv)
    assert config.synthetic == str(study.synthetic_dir()) and config.arms == ["baseline", "synthetic"]


def test_study_precision_is_forced_only_when_set(tmp_path):
    assert Study(_config(), tmp_path / "a")._precision_overrides() == {}
    assert Study(_config(precision="bf16"), tmp_path / "b")._precision_overrides() == {"precision": "bf16"}
    request = Study(_config(precision="bf16"), tmp_path / "b").classifier_request(tmp_path / "c")
    assert "--set" in request.to_argv() and "precision=bf16" in request.to_argv()
    with pytest.raises(ConfigError, match="precision"):
        load_config(VanillaGANConfig, "gan_fast", ["precision=preset"])


def test_interrupted_study_resumes_without_redoing_finished_stages(tmp_path, monkeypatch):
    directory = tmp_path / "study"
    config = _config(arms="baseline", expert_kit_size=0, extractor="none")
    original = Study.stage_classify

    def crash(self):
        raise KeyboardInterrupt("killed during stage classify")

    monkeypatch.setattr(Study, "stage_classify", crash)
    with pytest.raises(KeyboardInterrupt):
        Study(config, directory).run()
    finished = {stage: (directory / "stages" / f"{stage}.json").stat().st_mtime_ns
                for stage in STAGES[:STAGES.index("classify")]}
    base_weights = sorted((directory / "generators" / "base").rglob("*.h5"))
    base_times = [path.stat().st_mtime_ns for path in base_weights]
    assert not Study(config, directory).is_done("classify")

    monkeypatch.setattr(Study, "stage_classify", original)
    Study(config, directory).run()
    for stage, mtime in finished.items():
        assert (directory / "stages" / f"{stage}.json").stat().st_mtime_ns == mtime, stage
    assert [path.stat().st_mtime_ns for path in base_weights] == base_times
    assert Study(config, directory).is_done("report")


def test_broken_configs_fail_before_training(tmp_path, capsys):
    with pytest.raises(ConfigError, match="generator"):
        _config(generator="stylegan")
    study = Study(_config(target_classes="megakaryocyte"), tmp_path / "a")
    with pytest.raises(ConfigError, match="megakaryocyte"):
        study.run()
    assert not (tmp_path / "a" / "generators").exists()
    preset = tmp_path / "bad.toml"
    preset.write_text('kind = "study"\ntarget_classes = ["basophil"]\ngenerator = "diffusion-gan"\n')
    assert run_study_main(["--config", str(preset), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "generator" in err and "Traceback" not in err
    study = Study(_config(generator_overrides='["no_such_key=1"]'), tmp_path / "c")
    with pytest.raises(ConfigError, match="no_such_key"):
        study.run()
    assert not (tmp_path / "c" / "generators").exists()


def test_failed_stage_names_itself_and_keeps_earlier_outputs(tmp_path):
    # Valid against the preset (3 discriminator layers), but the base run has 2: fails only when fine-tuning.
    config = _config(finetune_overrides='["epochs=1", "freeze_d_layers=3"]')
    study = Study(config, tmp_path / "study")
    with pytest.raises(StudyError, match="stage 'finetune' failed: .*freeze_d_layers"):
        study.run()
    assert study.is_done("base") and (study.base_run / "config.json").is_file()
    assert not study.is_done("finetune")


def test_report_shows_no_spread_for_a_single_repetition():
    from cellgen.study.report import _mean_std

    assert _mean_std({"mean": 0.25, "std": 0.0, "values": [0.25]}) == "0.250"
    assert _mean_std({"mean": 0.25, "std": 0.05, "values": [0.2, 0.3]}) == "0.250 ± 0.050"
    assert _mean_std({"mean": 0.25, "std": 0.0, "n": 1}) == "0.250"
    assert _mean_std(None) == "-"


def test_inception_extractor_offline_fails_before_training(tmp_path, no_imagenet_weights, capsys):
    """Issue 21: ImageNet weights that cannot be had are a one-line error before any stage runs."""
    argv = ["--config", "study_demo_gan", "--out", str(tmp_path / "s"), "--set", "extractor=inception"]
    assert run_study_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: --inception-weights imagenet") and len(error.splitlines()) == 1
    assert not (tmp_path / "s" / "generators").exists()
