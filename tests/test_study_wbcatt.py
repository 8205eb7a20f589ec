"""The attribute study (issue 18): N&Z's abnormality experiment with a WBCAtt attribute, one command."""

import csv
import json
import re
import shlex
from pathlib import Path

import pytest

from cellgen.cli.run_study import main as run_study_main
from cellgen.config import ConfigError, RunRequest, load_config
from cellgen.data import DataReader
from cellgen.study.attribute_study import AttributeStudy
from cellgen.study.config import StudyConfig
from cellgen.study.pipeline import STAGES
from cellgen.study.stages import GenerationRequest, training_argv

TINY = ["image_size=16", "seeds=2", "sample_steps=2", "expert_kit_size=4", "precision=fp32",
        'generator_overrides=["epochs=1", "depth=2", "base_width=8", "block_depth=1", "grid_size=4", '
        '"condition_dims=16", "class_embedding_dims=8", "batch_size=12", "sample_every=1", "save_every=1"]',
        'finetune_overrides=["epochs=1", "batch_size=6", "sample_every=1", "save_every=1"]',
        'attribute_classifier_overrides=["epochs=1", "cnn_width=4", "cnn_blocks=2"]',
        'classifier_overrides=["epochs=1", "cnn_width=4", "cnn_blocks=2"]']


def _config(*extra):
    return load_config(StudyConfig, "study_demo_wbcatt", TINY + list(extra))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = AttributeStudy(_config(), tmp_path_factory.mktemp("wbcatt") / "study")
    study.run()
    return study


def _files(source):
    return {str(Path(path).resolve()) for path, _ in DataReader(str(source), image_size=16, shuffle=False).kept_files()}


def _trained_files(run: Path) -> set[str]:
    """The images a generator run trained on: its data with its attribute table and selection."""
    config = json.loads((run / "config.json").read_text())
    reader = DataReader(config["data"], image_size=16, shuffle=False, attributes=config["attributes_csv"] or None,
                        select=config["select"] or None)
    return {str(Path(path).resolve()) for path, _ in reader.kept_files()}


def test_the_demo_runs_every_stage_and_reports_fidelity_and_both_generators_arms(study):
    for stage in STAGES:
        assert study.is_done(stage), stage
    answer = json.loads((study.directory / "report.json").read_text())
    assert answer["kind"] == "attribute_study_report" and answer["positive_label"] == "bilobed"
    # The sample: 24 training neutrophils, 6 bilobed; validation 1 of 8, test 3 of 8.
    assert answer["counts"]["binary"] == {"train": {"bilobed": 6, "other": 18}, "val": {"bilobed": 1, "other": 7},
                                          "test": {"bilobed": 3, "other": 5}}
    rows = {row["images"]: row for row in answer["fidelity_table"]}
    assert set(rows) == {"real validation", "conditional", "finetuned"}
    assert rows["real validation"]["count"] == 1
    assert rows["conditional"]["count"] == rows["finetuned"]["count"] == 6  # as many as the real positives
    for row in rows.values():
        assert 0.0 <= row["called_requested"] <= 1.0 and row["requested"] == "segmented-bilobed"
    fidelity = answer["fidelity"]["nucleus_shape"]
    for result in fidelity["generators"].values():
        assert sum(result["called"].values()) == pytest.approx(1.0)
    arms = answer["classifier"]["arms"]
    assert set(arms) == {"baseline", "synthetic (conditional)", "synthetic (finetuned)"}
    for arm in arms.values():
        assert arm["seeds"] == [0, 1]
        assert 0.0 <= arm["f1_positive"]["mean"] <= 1.0 and 0.0 <= arm["normal_accuracy"]["mean"] <= 1.0
    paired = answer["paired"]
    assert set(paired) == {"synthetic (conditional) - baseline", "synthetic (finetuned) - baseline",
                           "synthetic (conditional) - synthetic (finetuned)"}
    for name, pair in paired.items():
        mine, other = arms[pair["arm"]], arms[pair["against"]]
        for metric in ("f1_positive", "normal_accuracy"):
            expected = [a - b for a, b in zip(mine[metric]["values"], other[metric]["values"])]
            assert pair[metric]["differences"] == pytest.approx(expected), (name, metric)
            assert pair[metric]["seeds"] == [0, 1] and pair[metric]["low"] is not None
    # The normal class's accuracy is the recall of not_bilobed in each run's test metrics.
    report = json.loads((study.experiment_dir("real") / "report.json").read_text())
    run = json.loads((Path(report["arms"]["baseline"]["runs"][0]["run_dir"]) / "metrics" / "test.json").read_text())
    assert arms["baseline"]["normal_accuracy"]["values"][0] == run["per_class"]["not_bilobed"]["recall"]
    text = (study.directory / "report.md").read_text()
    assert "## Attribute fidelity" in text and "| comparison | F1 bilobed | normal-class accuracy |" in text
    assert "report_assets/real_vs_conditional.png" in text and "report_assets/real_vs_finetuned.png" in text
    for name in ("conditional", "finetuned"):
        assert (study.kit_dir(name) / "expert").is_dir() and (study.kit_dir(name) / "key").is_dir()


def test_commands_list_the_generators_with_attr_and_select(study):
    lines = (study.directory / "commands.sh").read_text().splitlines()
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    scripts = [argv[1] for argv in commands]
    assert scripts == ["train_ddim.py"] * 3 + ["generate.py"] * 2 + ["expert_test.py"] * 2 \
        + ["evaluate_classifier.py"] * 3
    conditional, base, finetune, draw_conditional, draw_finetuned = commands[:5]
    assert "--attributes-csv" in conditional and "attributes=[\"nucleus_shape\"]" in conditional
    assert "conditional=false" in base and "--select" not in base
    assert finetune[finetune.index("--finetune-from") + 1] == str(study.base_run)
    selected = [finetune[index + 1] for index, flag in enumerate(finetune) if flag == "--select"]
    assert selected == ["class=neutrophil", "nucleus_shape=segmented-bilobed"]
    assert draw_conditional[draw_conditional.index("--attr") + 1] == "nucleus_shape=segmented-bilobed"
    assert draw_conditional[draw_conditional.index("--class") + 1] == "neutrophil"
    assert "--attr" not in draw_finetuned
    assert any("train_attribute_classifier(" in line for line in lines if line.startswith("#"))
    assert all("mode=binary" in argv for argv in commands[-3:])


def test_no_generator_or_classifier_fit_reads_a_validation_test_or_non_population_image(study):
    config = study.config
    held_out = _files(config.val) | _files(config.test)
    neutrophils = {str(Path(path).resolve()) for path, name in
                   DataReader(config.train, image_size=16, shuffle=False).kept_files() if name == "neutrophil"}
    positives = {str(Path(path).resolve()) for path, label in
                 DataReader(str(study.binary_csv("train")), image_size=16, shuffle=False).kept_files()
                 if label == "bilobed"}
    assert len(neutrophils) == 24 and len(positives) == 6
    for name in ("conditional", "base"):
        run = study.generator_run(name) if name == "conditional" else study.base_run
        assert _trained_files(run) == neutrophils, name
    assert _trained_files(study.generator_run("finetuned")) == positives
    assert _files(study.population_csv) == neutrophils
    info = json.loads((study.attribute_classifier_dir("nucleus_shape") / "attribute_classifier.json").read_text())
    assert sum(info["training_counts"].values()) == 24
    for experiment in study.experiments():
        for train_list in (study.experiment_dir(experiment) / "data").glob("seed-*/train-*.csv"):
            with open(train_list, newline="", encoding="utf-8") as handle:
                rows = list(csv.DictReader(handle))
            real = {str(Path(row["path"]).resolve()) for row in rows if row["origin"] == "real"}
            assert real == neutrophils and not (real & held_out)
            synthetic = [row for row in rows if row["origin"] != "real"]
            assert (len(synthetic) == 6) == (experiment != "real")
            assert all(row["label"] == "bilobed" and str(study.synthetic_dir(experiment)) in row["path"]
                       for row in synthetic)


def test_a_second_run_skips_every_stage(study, capsys):
    study.run()
    output = capsys.readouterr().out
    assert output.count("done before, skipped") == len(STAGES)


@pytest.mark.parametrize("override, message", [
    ("positive=[\"class=neutrophil\", \"nucleus_shap=segmented-bilobed\"]", "nucleus_shap.*did you mean 'nucleus_shape'"),
    ("positive=[\"class=neutrophil\", \"nucleus_shape=trilobed\"]", "trilobed.*segmented-bilobed"),
    ("population=[\"class=neutrofil\"]", "neutrofil"),
    ("positive=[\"nucleus_shape=segmented-bilobed\", \"nucleus_shape=segmented-multilobed\"]", "one value per attribute"),
    ("positive=[\"class=neutrophil\"]", "name at least one attribute value"),
    ("population=[\"split=train\"]", "chooses the splits itself"),
    ("population=[]", "give the population"),
    ("attributes_csv=", "needs attributes_csv"),
    ("attribute_generators=[\"acgan\"]", "attribute_generators"),
])
def test_bad_selections_are_one_line_errors(override, message, tmp_path, capsys):
    argv = ["--config", "study_demo_wbcatt", "--out", str(tmp_path / "s"), "--set", override]
    assert run_study_main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and len(error.splitlines()) == 1
    assert re.search(message, error), error
    assert not (tmp_path / "s" / "stages").exists()


def test_the_full_preset_resolves_every_stage(shared_data):
    config = load_config(StudyConfig, "study_wbcatt_multilobed", [
        f"train={shared_data / 'pbc128' / 'train'}", f"val={shared_data / 'pbc128' / 'val'}",
        f"test={shared_data / 'pbc128' / 'val'}",
        f"attributes_csv={shared_data / 'wbcatt' / 'pbc128_wbcatt_trainval.csv'}"])
    study = AttributeStudy(config, "unused")
    assert "neutrophil" in study.check()
    assert study.experiments() == ["real", "conditional", "finetuned"]
    assert study.attribute_items == ["nucleus_shape=segmented-multilobed"] and study.positive_label == "multilobed"


def test_training_argv_writes_the_scripts_own_options_and_generation_writes_attr():
    request = RunRequest("ddim_fast", {"epochs": 2, "attributes_csv": "t.csv", "select": ["a=b", "c=d"]}, out="o")
    argv = training_argv("ddim", request)
    assert argv == ["--config", "ddim_fast", "--set", "epochs=2", "--attributes-csv", "t.csv", "--select", "a=b",
                    "--select", "c=d", "--out", "o"]
    assert training_argv("vanilla_gan", request) == request.to_argv()
    generation = GenerationRequest("run", "out", 3, attributes=["nucleus_shape=x", "cytoplasm_vacuole=yes"])
    assert generation.to_argv()[-4:] == ["--attr", "nucleus_shape=x", "--attr", "cytoplasm_vacuole=yes"]
    assert generation.sampler_options() == {"attributes": ["nucleus_shape=x", "cytoplasm_vacuole=yes"]}
    assert "attributes" not in GenerationRequest("run", "out", 3).sampler_options()


def test_settings_an_attribute_study_does_not_read_are_named():
    config = _config("limit_class=neutrophil=5", "target_classes=neutrophil")
    assert config.ignored_settings() == ["target_classes", "limit_class"]
    with pytest.raises(ConfigError, match="sweep_caps"):
        _config("sweep_caps=[0.5]")
