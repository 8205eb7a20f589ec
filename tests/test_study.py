"""End-to-end augmentation study on the smallest settings (issue: one-command study)."""

import json
import shlex
from pathlib import Path

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
    study = Study(_config(seeds=2), tmp_path / "study")
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
    assert classifier["paired"]["synthetic - baseline"]["weighted_f1"]["seeds"] == [0, 1]
    # The reference: the classical arm on every real image (24 basophils), the same seeds.
    reference = json.loads((study.reference_dir / "report.json").read_text())
    assert list(reference["arms"]) == ["classical"] and reference["seeds"] == [0, 1]
    assert reference["arms"]["classical"]["runs"][0]["train_images"] == 192
    assert classifier["arms"]["baseline"]["runs"][0]["train_images"] == 192 - 18
    answer = json.loads((study.directory / "report.json").read_text())
    assert answer["scarcity"]["class"] == "basophil" and answer["scarcity"]["share_recovered"] is None
    assert "classical arm" in answer["scarcity"]["note"]  # no classical arm on the kept images here
    assert any(line.startswith("synthetic - baseline, F1 of basophil") for line in answer["verdict"])
    text = report.read_text()
    assert "| arm | weighted F1" in text and "## Verdict" in text
    assert text.index("**Question.**") < text.index("## Verdict") < text.index("## Data")
    assert "95 % interval" in text and "(every real image: reference)" in text
    assert "report_assets/real_vs_synthetic_basophil.png" in text
    html = (study.directory / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4
    commands = (study.directory / "commands.sh").read_text()
    scripts = [shlex.split(line)[1] for line in commands.splitlines()]
    assert scripts == ["train_vanilla_gan.py", "train_vanilla_gan.py", "generate.py", "evaluate_classifier.py",
                       "evaluate_generator.py", "expert_test.py", "evaluate_classifier.py", "evaluate_classifier.py"]
    # Precision "preset": no stage is forced, each keeps its preset's precision.
    assert "precision" not in commands
    assert base_config["precision"] == load_config(VanillaGANConfig, "gan_fast").precision
    _check_commands_reproduce_the_stages(study, tmp_path)


def _commands(study):
    """commands.sh as (script module name, argv) pairs."""
    rows = []
    for line in (study.directory / "commands.sh").read_text().splitlines():
        if line.startswith("#"):
            continue  # a step without a script of its own (the filter's scoring)
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

    runs = ((commands[3], study.evaluation_dir / "feature_classifier"), (commands[6], study.classifier_dir),
            (commands[7], study.reference_dir))
    configs = []
    for (script, argv), out in runs:
        config = config_from_arguments(classifier_parser().parse_args(argv))
        assert config.to_dict() == json.loads((out / "config.json").read_text()), script
        configs.append(config)
    assert configs[0].data == configs[1].data == str(study.kept_csv)
    assert configs[1].synthetic == str(study.synthetic_dir()) and configs[1].arms == ["baseline", "synthetic"]
    # the reference alone reads the uncapped training folder
    assert configs[2].data == study.config.train and configs[2].arms == ["classical"] and not configs[2].synthetic


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


# Issue 17: the conditional DDIM, the filter, every class synthesised, the reference and the answer --------

CONDITIONAL_OVERRIDES = [
    "generator=ddim_cond", "generator_preset=ddim_cond32",
    "generator_overrides=[\"epochs=1\", \"depth=2\", \"base_width=8\", \"block_depth=1\", \"condition_dims=16\", "
    "\"class_embedding_dims=8\", \"batch_size=16\", \"grid_size=8\", \"diffusion_steps=2\"]",
    "guidance=1.5", "sample_steps=2", "synthetic_classes=all", "synthetic_count=2",
    "filter_threshold=0.01", "filter_candidates=1.5", "arms=classical,classical+synthetic", "seeds=2",
    "extractor=none", "expert_kit_size=0",
]


def test_conditional_study_with_filter_and_every_class(tmp_path):
    from cellgen.classify import mixing

    config = load_config(StudyConfig, None, TINY_OVERRIDES + CONDITIONAL_OVERRIDES)
    assert config.conditional and config.trainer_kind == "ddim"
    study = Study(config, tmp_path / "study")
    study.run()
    base = json.loads((study.base_run / "config.json").read_text())
    assert base["conditional"] is True and base["data"] == str(study.kept_csv) and len(base["class_names"]) == 8
    assert not (study.directory / "generators" / "basophil").exists()  # no fine-tuning
    assert study.stage_record("finetune")["outputs"]["skipped"]
    # Every class: ceil(2 x 1.5) = 3 candidates, at most 2 kept after the filter.
    classes = list(json.loads((study.directory / "data" / "counts.json").read_text())["original"])
    for name in classes:
        assert len(list(study.candidates_dir(name).glob("*.png"))) == 3
        assert 1 <= len(list(study.synthetic_dir(name).glob("*.png"))) <= 2
    summary = json.loads((study.filter_dir / "summary.json").read_text())
    assert set(summary) == set(classes) and summary["basophil"]["candidates"] == 3
    # No leak: the filter classifier trained, validated and was tested on exactly the kept list.
    kept = sorted(tuple(row.split(",")) for row in study.kept_csv.read_text().splitlines()[1:])
    filter_data = study.filter_dir / "classifier" / "data"
    for name in ("seed-0/train-classical.csv", "val.csv", "test.csv"):
        rows = sorted((path, label) for path, label, origin in mixing.read_rows(filter_data / name))
        assert rows == kept, name
    held_out = {str(path.resolve()) for path in Path(study.config.val).rglob("*.*")}
    held_out |= {str(path.resolve()) for path in Path(study.config.test).rglob("*.*")}
    assert not held_out & {path for path, _ in kept}
    # generate.py lines carry the class and the guidance weight of the conditional run.
    generate_lines = [argv for script, argv in _commands(study) if script == "generate"]
    assert len(generate_lines) == 8
    assert all("--class" in argv and argv[argv.index("--guidance") + 1] == "1.5" for argv in generate_lines)
    classifier = json.loads((study.classifier_dir / "report.json").read_text())
    synthetic_rows = mixing.count_rows(mixing.read_rows(study.classifier_dir / "data" / "seed-0" /
                                                        "train-classical_synthetic.csv"))[mixing.SYNTHETIC]
    assert set(synthetic_rows) == set(classes) and len(set(synthetic_rows.values())) == 1
    assert list(classifier["paired"]) == ["classical+synthetic - classical"]
    answer = json.loads((study.directory / "report.json").read_text())
    scarcity = answer["scarcity"]
    assert set(scarcity) >= {"class", "f1_full", "f1_scarce", "f1_best_synthetic", "best_synthetic_arm",
                             "share_recovered", "share_recovered_interval"}
    assert scarcity["best_synthetic_arm"] == "classical+synthetic" and scarcity["seeds"] == [0, 1]
    reference = json.loads((study.reference_dir / "report.json").read_text())
    full = [run["per_class_f1"]["basophil"] for run in reference["arms"]["classical"]["runs"]]
    assert scarcity["f1_full"] == pytest.approx(sum(full) / 2)
    text = (study.directory / "report.md").read_text()
    assert "**Scarcity.**" in text and "Filter:" in text


def _report(arms: dict[str, dict[int, float]], name="basophil"):
    """A classifier report.json with only what the analysis reads: per-seed F1 of one class."""
    return {"arms": {arm: {"runs": [{"seed": seed, "per_class_f1": {name: value}} for seed, value in seeds.items()]}
                     for arm, seeds in arms.items()}}


def test_scarcity_share_and_its_interval_from_hand_made_numbers():
    from cellgen.classify.metrics import ratio_interval
    from cellgen.study.analysis import scarcity_sentence, scarcity_summary

    arms = _report({"classical": {0: 0.60, 1: 0.64, 2: 0.62},
                    "synthetic": {0: 0.70, 1: 0.69, 2: 0.71},
                    "classical+synthetic": {0: 0.74, 1: 0.76, 2: 0.78}})
    reference = _report({"classical": {0: 0.86, 1: 0.88, 2: 0.84}})
    result = scarcity_summary(arms, reference, "basophil")
    assert result["best_synthetic_arm"] == "classical+synthetic"
    assert result["f1_scarce"] == pytest.approx(0.62) and result["f1_full"] == pytest.approx(0.86)
    assert result["f1_best_synthetic"] == pytest.approx(0.76)
    assert result["share_recovered"] == pytest.approx((0.76 - 0.62) / (0.86 - 0.62))
    expected = ratio_interval([0.14, 0.12, 0.16], [0.26, 0.24, 0.22])
    assert result["share_recovered_interval"] == pytest.approx([expected["low"], expected["high"]])
    assert result["share_recovered_interval"][0] < result["share_recovered"] < result["share_recovered_interval"][1]
    sentence = scarcity_sentence(result, kept=85, original=849)
    assert "58 % of the loss won back" in sentence and "849" in sentence
    # no reference, no classical arm, no loss: the share is not measured and the note says why
    assert scarcity_summary(arms, None, "basophil")["share_recovered"] is None
    assert "classical" in scarcity_summary(_report({"baseline": {0: 0.5}}), reference, "basophil")["note"]
    no_loss = scarcity_summary(arms, _report({"classical": {0: 0.5, 1: 0.5, 2: 0.5}}), "basophil")
    assert no_loss["share_recovered"] is None and "no loss" in no_loss["note"]


def test_verdict_sentences_call_a_difference_clear_only_outside_its_interval():
    from cellgen.study.analysis import difference_sentence, verdict_lines

    base = {"arm_mean": 0.8, "other_mean": 0.7, "mean": 0.1, "n": 3, "level": 0.95}
    assert difference_sentence("x", {**base, "low": 0.02, "high": 0.18}).endswith("a clear gain.")
    assert difference_sentence("x", {**base, "mean": -0.1, "low": -0.18, "high": -0.02}).endswith("clearly worse.")
    assert "no clear difference" in difference_sentence("x", {**base, "low": -0.02, "high": 0.22})
    assert "one seed" in difference_sentence("x", {**base, "n": 1, "low": None, "high": None})
    stats = {**base, "low": 0.02, "high": 0.18}
    report = {"paired": {name: {"weighted_f1": stats, "per_class": {"basophil": stats}}
                         for name in ("classical - baseline", "classical+synthetic - classical")}}
    lines = verdict_lines(report, ["basophil"])
    assert lines[0].startswith("classical+synthetic - classical, F1 of basophil")  # the question first
    assert len(lines) == 4


def test_sweep_runs_one_study_per_cap_and_plots_f1_against_real_images(tmp_path, monkeypatch):
    """Item 7 of issue 17 (off by default): the runs are faked; the caps, the summary and the plot are real."""
    from cellgen.runs import write_json
    from cellgen.study import pipeline

    seen = []
    kept_by_cap = {2: 2, 6: 6, 1.0: 24}

    def fake_run(self, from_stage=None, until=None):
        cap = self.config.limit_class["basophil"]
        seen.append((cap, self.config.sweep_caps, self.config.reference))
        kept = kept_by_cap[cap]
        write_json(self.directory / "data" / "counts.json", {"original": {"basophil": 24}, "kept": {"basophil": kept}})
        f1 = {"classical": 0.3 + kept / 40, "classical+synthetic": 0.5 + kept / 60}
        write_json(self.classifier_dir / "report.json", {"arms": {
            arm: {"runs": [{"seed": seed, "per_class_f1": {"basophil": value + 0.01 * seed}} for seed in range(3)]}
            for arm, value in f1.items()}})
        return self.directory / "report.md"

    monkeypatch.setattr(pipeline.Study, "run", fake_run)
    config = _config(sweep_caps="[2, 6, 1.0]")
    assert StudyConfig().sweep_caps == []  # off by default
    with pytest.raises(ConfigError, match="run_sweep"):
        pipeline.run_study(config, tmp_path / "sweep")
    from cellgen.study.sweep import run_sweep

    path = run_sweep(config, tmp_path / "sweep")
    assert [cap for cap, _, _ in seen] == [2, 6, 1.0] and all(caps == [] and not ref for _, caps, ref in seen)
    assert (tmp_path / "sweep" / "caps" / "cap-6" / "classifier" / "report.json").is_file()
    summary = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [row["kept"] for row in summary["caps"]] == [2, 6, 24]
    assert summary["caps"][0]["arms"]["classical"]["mean"] == pytest.approx(0.3 + 2 / 40 + 0.01)
    share = summary["caps"][1]["scarcity"]["share_recovered"]  # against the cap-1 classical arm
    assert share == pytest.approx(((0.5 + 6 / 60) - (0.3 + 6 / 40)) / ((0.3 + 24 / 40) - (0.3 + 6 / 40)))
    assert (tmp_path / "sweep" / "sweep_f1.png").stat().st_size > 0
    assert path.name == "sweep.md" and "| 6 | 6 |" in path.read_text()
    with pytest.raises(ConfigError, match="sweep_caps"):
        _config(sweep_caps="[0]")


def test_conditional_study_fine_tunes_the_conditional_base_per_class(tmp_path):
    """``finetune_conditional``: the conditional base fine-tuned on the kept basophils, sampled with guidance."""
    overrides = TINY_OVERRIDES + CONDITIONAL_OVERRIDES + [
        "finetune_conditional=true", "synthetic_classes=target", "filter_threshold=0", "arms=classical+synthetic",
        "seeds=1", "reference=false", "finetune_preset=ddim_cond32",
        "finetune_overrides=[\"epochs=2\", \"depth=2\", \"base_width=8\", \"block_depth=1\", \"condition_dims=16\", "
        "\"class_embedding_dims=8\", \"batch_size=16\", \"grid_size=8\", \"diffusion_steps=2\"]"]
    config = load_config(StudyConfig, None, overrides)
    assert config.conditional and config.per_class_finetune and config.ignored_settings() == []
    study = Study(config, tmp_path / "study")
    study.run()
    base = json.loads((study.base_run / "config.json").read_text())
    tuned = json.loads((study.finetune_run("basophil") / "config.json").read_text())
    # The fine-tune starts from the conditional base, stays conditional, and reads only the kept basophils.
    assert tuned["conditional"] is True and tuned["class_name"] == "basophil"
    assert tuned["finetune_from"] == str(study.base_run) and tuned["data"] == base["data"] == str(study.kept_csv)
    assert tuned["class_names"] == base["class_names"] and tuned["epochs"] == 2
    assert study.generator_run_of("basophil") == study.finetune_run("basophil")
    assert study.stage_record("finetune")["outputs"]["runs"] == {"basophil": str(study.finetune_run("basophil"))}
    (line,) = [argv for script, argv in _commands(study) if script == "generate"]
    assert line[line.index("--run") + 1] == str(study.finetune_run("basophil"))
    assert line[line.index("--class") + 1] == "basophil" and line[line.index("--guidance") + 1] == "1.5"
    assert len(list(study.synthetic_dir("basophil").glob("*.png"))) == 2
    assert "fine-tuned on that class" in json.loads((study.directory / "report.json").read_text())["question"]


def test_finetune_conditional_is_ignored_without_a_conditional_generator():
    config = load_config(StudyConfig, None, TINY_OVERRIDES + ["finetune_conditional=true"])
    assert not config.conditional and config.ignored_settings() == ["finetune_conditional"]


def test_finetune_conditional_that_is_not_a_bool_is_a_one_line_error(tmp_path, capsys):
    argv = ["--config", "study_demo", "--out", str(tmp_path / "s"), "--set", "finetune_conditional=maybe"]
    assert run_study_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error == "error: finetune_conditional: expected bool, got 'maybe'"
    assert not (tmp_path / "s").exists()


def test_a_smaller_generator_gets_its_resolution_matched_in_the_synthetic_arms_only(tmp_path, monkeypatch):
    """match_synthetic_resolution: the synthetic arms' classifier request carries the generator's size;
    the reference (and a study whose generator has the classifier's size) does not."""
    from cellgen.study import stages

    requests = []

    def fake_experiment(request, log=None):
        requests.append(request)
        Path(request.out).mkdir(parents=True, exist_ok=True)
        (Path(request.out) / "report.json").write_text("{}")

    monkeypatch.setattr(stages, "run_classifier_experiment", fake_experiment)
    monkeypatch.setattr(Study, "synthetic_counts", lambda self: {"basophil": 18})
    for size, matched in ((8, True), (16, False)):
        config = _config(generator_image_size=size, match_synthetic_resolution="true",
                         arms="classical,classical+synthetic", limit_class="basophil=6")
        requests.clear()
        Study(config, tmp_path / f"study-{size}").stage_classify()
        arms, reference = requests
        assert arms.overrides.get("match_synthetic_size") == (8 if matched else None)
        assert "match_synthetic_size" not in reference.overrides
    off = _config(generator_image_size=8, arms="classical,classical+synthetic")
    requests.clear()
    Study(off, tmp_path / "off").stage_classify()
    assert "match_synthetic_size" not in requests[0].overrides
