"""Expert real-vs-synthetic kit: thesis tables, reproducible kits, answer-sheet errors, the CLI."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest

from cellgen.evaluate.errors import EvaluationError
from cellgen.evaluate.expert import format_tables, make_kit, read_answers, read_key, round_half_up, score_answers
from cellgen.images import read_rgb, write_rgb


def answers_for(real_as_real, real_as_synthetic, synthetic_as_real, synthetic_as_synthetic):
    truths = ["real"] * (real_as_real + real_as_synthetic) + ["synthetic"] * (synthetic_as_real + synthetic_as_synthetic)
    answers = (["real"] * real_as_real + ["synthetic"] * real_as_synthetic
               + ["real"] * synthetic_as_real + ["synthetic"] * synthetic_as_synthetic)
    return truths, answers


def rounded(part):
    return tuple(round_half_up(part[key]) for key in ("accuracy", "recall", "specificity"))


def test_nilsson_zettergren_table_9_and_14():
    truths, answers = answers_for(48, 2, 34, 16)  # medical expert, all abnormalities
    result = score_answers(truths, answers)
    assert rounded(result["all"]) == (0.64, 0.96, 0.32)
    assert result["all"]["confusion"] == {"real": {"real": 48, "synthetic": 2},
                                          "synthetic": {"real": 34, "synthetic": 16}}
    assert result["per_class"] == {}
    employee = score_answers(*answers_for(22, 28, 38, 12))  # CellaVision employee, Table 13
    assert rounded(employee["all"]) == (0.34, 0.44, 0.24)


def test_nilsson_zettergren_per_abnormality_tables_10_to_12():
    truths, answers, classes = [], [], []
    for name, counts in (("hypersegmented", (19, 1, 20, 0)), ("dohle", (14, 1, 10, 5)),
                         ("hypergranular", (15, 0, 4, 11))):
        class_truths, class_answers = answers_for(*counts)
        truths += class_truths
        answers += class_answers
        classes += [name] * len(class_truths)
    result = score_answers(truths, answers, classes)
    assert result["per_class"]["hypersegmented"]["accuracy"] == 19 / 40
    assert rounded(result["per_class"]["hypersegmented"]) == (0.48, 0.95, 0.0)
    assert rounded(result["per_class"]["dohle"]) == (0.63, 0.93, 0.33)
    assert rounded(result["per_class"]["hypergranular"]) == (0.87, 1.0, 0.73)
    assert rounded(result["all"]) == (0.64, 0.96, 0.32)  # the three sum to Table 9
    text = format_tables({**result, "name": "Medical expert"})
    assert "Medical expert: hypergranular" in text and "Medical expert: all classes" in text
    markdown = format_tables({**result, "name": "Medical expert"}, markdown=True)
    assert "| Medical expert: hypersegmented | Accuracy | 0.48 |" in markdown
    assert "|  | Specificity | 0.73 |" in markdown  # hypergranular, as printed in Table 14


def test_klang_carlberg_table_2():
    result = score_answers(*answers_for(44, 6, 23, 27))
    assert round_half_up(result["all"]["recall"]) == 0.88
    assert round_half_up(result["all"]["specificity"]) == 0.54


def test_tables_have_the_thesis_layout():
    result = {**score_answers(*answers_for(48, 2, 34, 16)), "name": "Medical expert"}
    lines = format_tables(result).splitlines()
    assert any(line.split() == ["Actual", "Real", "48", "2", "50"] for line in lines)
    assert any(line.split() == ["Synthetic", "34", "16", "50"] for line in lines)
    assert any(line.split() == ["Total", "82", "18", "100"] for line in lines)
    markdown = format_tables(result, markdown=True)
    assert "| Real | 48 | 2 | 50 |" in markdown and "| Total | 82 | 18 | 100 |" in markdown
    assert "| Medical expert: all images | Accuracy | 0.64 |" in markdown


def test_metrics_without_a_denominator_are_none():
    result = score_answers(["real", "real"], ["real", "synthetic"])
    assert result["all"]["specificity"] is None and result["all"]["recall"] == 0.5
    with pytest.raises(EvaluationError, match="real' or 'synthetic"):
        score_answers(["real"], ["maybe"])


# Kits -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_folder(tmp_path_factory, sample_data):
    """Two classes of 'synthetic' 32-px PNGs (noisy, flipped real cells)."""
    folder = tmp_path_factory.mktemp("synthetic")
    rng = np.random.default_rng(0)
    for name in ("basophil", "eosinophil"):
        for index, path in enumerate(sorted((sample_data / name).glob("*.jpg"))[:12]):
            image = read_rgb(path)[::2, ::-2]
            noisy = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
            write_rgb(folder / name / f"synthetic_{index:03d}.png", noisy)
    return folder


def file_hashes(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha1(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_kit_is_reproducible_shuffled_and_keeps_the_key_apart(tmp_path, sample_data, synthetic_folder):
    kit = make_kit(sample_data, synthetic_folder, tmp_path / "kit", n=20, seed=3)
    images = sorted((kit / "expert" / "images").iterdir())
    assert [path.name for path in images] == [f"{index:03d}.png" for index in range(1, 21)]
    assert {read_rgb(path).shape for path in images} == {(32, 32, 3)}  # one size: real cells were resized
    assert not list((kit / "expert").rglob("key*")) and (kit / "key" / "key.csv").is_file()
    key = read_key(kit)
    assert sum(row["truth"] == "real" for row in key) == 10
    for name in ("basophil", "eosinophil"):
        assert sorted(row["truth"] for row in key if row["class"] == name) == ["real"] * 5 + ["synthetic"] * 5
    truths = [row["truth"] for row in key]
    assert truths != sorted(truths) and truths != sorted(truths, reverse=True)
    with open(kit / "expert" / "answers.csv", newline="") as handle:
        sheet = list(csv.reader(handle))
    assert sheet[0] == ["id", "answer"] and [row[0] for row in sheet[1:]] == [row["id"] for row in key]
    assert all(row[1] == "" for row in sheet[1:])
    again = make_kit(sample_data, synthetic_folder, tmp_path / "again", n=20, seed=3)
    assert (again / "key" / "key.csv").read_bytes() == (kit / "key" / "key.csv").read_bytes()
    assert file_hashes(again / "expert" / "images") == file_hashes(kit / "expert" / "images")
    other = make_kit(sample_data, synthetic_folder, tmp_path / "other", n=20, seed=4)
    assert [row["source"] for row in read_key(other)] != [row["source"] for row in key]


def test_an_even_kit_is_exactly_half_real(tmp_path, sample_data, synthetic_folder):
    from cellgen.evaluate.expert import _real_counts, _split_counts

    # 7 images per class: rounding each class gave 4 real + 4 real = 8 of 14
    key = read_key(make_kit(sample_data, synthetic_folder, tmp_path / "kit", n=14, seed=1))
    assert [row["truth"] for row in key].count("real") == 7
    assert {sum(row["truth"] == "real" for row in key if row["class"] == name) for name in ("basophil", "eosinophil")} \
        == {3, 4}
    # the theses' 100 over 8 classes (13 or 12 each): 50 real, every class within one of half
    per_class = _split_counts(100, [f"c{index}" for index in range(8)])
    real = _real_counts(per_class, 0.5)
    assert sum(real.values()) == 50 and all(abs(real[name] - per_class[name] / 2) <= 0.5 for name in per_class)


def test_kit_options_and_errors(tmp_path, sample_data, synthetic_folder):
    kit = make_kit(sample_data, synthetic_folder / "basophil", tmp_path / "flat", n=10, seed=0, real_share=0.3,
                   class_name="basophil", image_size=24)
    key = read_key(kit)
    assert [row["truth"] for row in key].count("real") == 3 and {row["class"] for row in key} == {"basophil"}
    assert read_rgb(kit / "expert" / "images" / "001.png").shape == (24, 24, 3)
    counted = make_kit(sample_data, synthetic_folder, tmp_path / "counts", counts={"basophil": 8, "eosinophil": 4})
    assert [row["class"] for row in read_key(counted)].count("eosinophil") == 4
    with pytest.raises(EvaluationError, match="pass --class"):
        make_kit(sample_data, synthetic_folder / "basophil", tmp_path / "k1", n=10)
    with pytest.raises(EvaluationError, match="has 12 synthetic images, the kit needs 20"):
        make_kit(sample_data, synthetic_folder, tmp_path / "k2", n=80)
    with pytest.raises(EvaluationError, match="exists and is not empty"):
        make_kit(sample_data, synthetic_folder, kit, n=10)
    with pytest.raises(EvaluationError, match="unknown class"):
        make_kit(sample_data, synthetic_folder, tmp_path / "k3", counts={"monocyte": 4})


# Answer sheets -------------------------------------------------------------------------


def write_answers(path: Path, rows, header=("id", "answer")) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_answer_sheet_errors_are_one_line_and_name_the_problem(tmp_path):
    ids = ["001", "002", "003"]
    good = read_answers(write_answers(tmp_path / "good.csv", [("1", "Real"), ("002", " fake "), ("003", "synthetic")]),
                        ids)
    assert good == {"001": "real", "002": "synthetic", "003": "synthetic"}  # leading zeros restored
    cases = {
        "missing.csv": ([("001", "real"), ("002", "real")], "no answer for 1 id\\(s\\): 003"),
        "blank.csv": ([("001", "real"), ("002", ""), ("003", "real")], "no answer for 1 id\\(s\\): 002"),
        "unknown_id.csv": ([("001", "real"), ("002", "real"), ("003", "real"), ("042", "real")], "not in the kit: 042"),
        "label.csv": ([("001", "real"), ("002", "maybe"), ("003", "real")], "line 3: unknown answer 'maybe'"),
        "twice.csv": ([("001", "real"), ("001", "real")], "answered twice"),
    }
    for name, (rows, message) in cases.items():
        with pytest.raises(EvaluationError, match=message) as raised:
            read_answers(write_answers(tmp_path / name, rows), ids)
        assert "\n" not in str(raised.value) and name in str(raised.value)
    with pytest.raises(EvaluationError, match="missing column 'answer'"):
        read_answers(write_answers(tmp_path / "columns.csv", [("001", "real")], header=("id", "label")), ids)
    with pytest.raises(EvaluationError, match="not found"):
        read_answers(tmp_path / "nothing.csv", ids)


def test_cli_make_and_score_reproduce_table_9_layout(tmp_path, sample_data, synthetic_folder, capsys):
    from cellgen.cli.expert_test import main
    from cellgen.runs import read_json

    kit = tmp_path / "kit"
    assert main(["make", "--real", str(sample_data), "--synthetic", str(synthetic_folder), "--n", "20",
                 "--out", str(kit), "--seed", "1"]) == 0
    key = read_key(kit)
    # answer: every real image "real" except one; one synthetic image per class "synthetic"
    rows, first_real, caught = [], True, set()
    for row in key:
        if row["truth"] == "real":
            rows.append((row["id"], "synthetic" if first_real else "real"))
            first_real = False
        else:
            answer = "real" if row["class"] in caught else "synthetic"
            caught.add(row["class"])
            rows.append((row["id"], answer))
    answers = write_answers(tmp_path / "filled.csv", rows)
    capsys.readouterr()
    assert main(["score", str(kit), str(answers), "--name", "Medical expert", "--out", str(tmp_path / "score")]) == 0
    printed = capsys.readouterr().out
    assert any(line.split() == ["Actual", "Real", "9", "1", "10"] for line in printed.splitlines())
    saved = read_json(tmp_path / "score" / "score.json")
    assert saved["all"]["accuracy"] == pytest.approx(11 / 20)
    assert saved["all"]["recall"] == pytest.approx(0.9) and saved["all"]["specificity"] == pytest.approx(0.2)
    assert set(saved["per_class"]) == {"basophil", "eosinophil"}
    assert (tmp_path / "score" / "confusion_all.png").is_file()
    assert (tmp_path / "score" / "confusion_basophil.png").is_file()
    # a malformed sheet: exit 2, one line naming the file
    broken = write_answers(tmp_path / "broken.csv", rows[:-1])
    assert main(["score", str(kit), str(broken)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "broken.csv" in error and len(error.splitlines()) == 1
    assert main(["make", "--real", str(sample_data), "--synthetic", str(tmp_path / "none"), "--out",
                 str(tmp_path / "k")]) == 2
    assert "none" in capsys.readouterr().err


def test_kit_options_round_trip_through_the_script():
    """The study writes ``ExpertKitOptions.to_argv()`` to commands.sh: ``expert_test.py`` parses it back."""
    from cellgen.cli.expert_test import build_parser, kit_options_from_args
    from cellgen.evaluate.tasks import ExpertKitOptions

    options = ExpertKitOptions(real="val", synthetic="synthetic/basophil", out="kit", n=16, seed=3,
                               class_name="basophil", overwrite=True, real_crop=0.9, counts={"basophil": 10})
    assert kit_options_from_args(build_parser().parse_args(options.to_argv())) == options
