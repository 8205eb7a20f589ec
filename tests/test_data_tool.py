"""Tests for the data_reader.py tool (cellgen.cli.data_tool)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cellgen.cli.data_tool import main  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_tree(root: Path, counts: dict[str, int], size: int = 8) -> Path:
    for class_index, (class_name, count) in enumerate(counts.items()):
        for index in range(count):
            path = root / class_name / f"img_{index}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((size, size, 3), 40 * class_index + index, np.uint8))
    return root


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err: str, *needles: str):
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_scan_prints_counts_sizes_and_unreadable(tmp_path, capsys):
    root = make_tree(tmp_path / "data", {"basophil": 2, "neutrophil": 3})
    code, out, _ = run(capsys, "scan", root)
    assert code == 0
    assert re.search(r"^basophil\s+2$", out, re.M) and re.search(r"^neutrophil\s+3$", out, re.M)
    assert re.search(r"^total\s+5$", out, re.M)
    assert "image sizes (width x height): 8x8: 5" in out
    assert "unreadable files: 0" in out


def test_scan_json_report(tmp_path, capsys):
    root = make_tree(tmp_path / "data", {"a": 2, "b": 1}, size=6)
    (root / "b" / "broken.jpg").write_bytes(b"not a jpeg")
    code, out, _ = run(capsys, "scan", root, "--on-error", "skip", "--json", tmp_path / "out" / "scan.json")
    assert code == 0
    report = json.loads((tmp_path / "out" / "scan.json").read_text())
    assert report["class_counts"] == {"a": 2, "b": 1} and report["total"] == 3
    assert report["image_sizes"] == {"6x6": 3}
    assert [Path(item["path"]).name for item in report["unreadable"]] == ["broken.jpg"]


def test_scan_bad_file_raise_and_skip(tmp_path, capsys):
    root = make_tree(tmp_path / "data", {"a": 3})
    bad = root / "a" / "truncated.png"
    ok, encoded = cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))
    bad.write_bytes(encoded.tobytes()[:40])
    empty = root / "a" / "zero.jpg"
    empty.write_bytes(b"")
    code, out, err = run(capsys, "scan", root)
    assert code == 2
    assert_one_line_error(err, str(empty), "empty")
    empty.unlink()
    code, out, err = run(capsys, "scan", root)
    assert code == 2
    assert_one_line_error(err, str(bad), "not a readable image")
    code, out, err = run(capsys, "scan", root, "--on-error", "skip")
    assert code == 0 and "Traceback" not in err
    assert "unreadable files: 1" in out and f"{bad}: not a readable image" in out
    assert re.search(r"^a\s+3$", out, re.M)


def test_scan_crop_checks_image_sizes(tmp_path, capsys):
    root = make_tree(tmp_path / "data", {"a": 2}, size=8)
    code, _, err = run(capsys, "scan", root, "--crop", "12")
    assert code == 2
    assert_one_line_error(err, "img_0.png", "smaller than the 12 px crop")
    code, out, _ = run(capsys, "scan", root, "--crop", "0.5", "--size", "16")
    assert code == 0 and re.search(r"^total\s+2$", out, re.M)


@pytest.mark.parametrize("argv, needles", [
    (["scan", "{root}/nowhere"], ["nowhere", "no such file or folder"]),
    (["scan", "{root}", "--crop", "-1"], ["crop"]),
    (["scan", "{root}", "--crop", "big"], ["crop", "big"]),
    (["scan", "{root}", "--size", "0"], ["image_size"]),
    (["scan", "{root}", "--on-error", "ignore"], ["--on-error", "ignore"]),
    (["scan", "{root}", "--workers", "0"], ["workers"]),
    (["preview", "{root}"], ["--out"]),
    (["preview", "{root}", "--out", "{root}/grid.png", "--per-class", "0"], ["--per-class"]),
    (["frobnicate"], ["frobnicate"]),
    ([], ["scan or preview"]),
])
def test_bad_arguments_give_one_line_errors(tmp_path, capsys, argv, needles):
    root = make_tree(tmp_path / "data", {"a": 1})
    code, _, err = run(capsys, *[arg.format(root=root) for arg in argv])
    assert code == 2
    assert_one_line_error(err, *needles)


def test_preview_draws_one_row_per_class(tmp_path, capsys):
    root = make_tree(tmp_path / "data", {"a": 5, "b": 1, "c": 3}, size=20)
    out = tmp_path / "grids" / "grid.png"
    code, stdout, _ = run(capsys, "preview", root, "--out", out, "--size", "32", "--per-class", "4")
    assert code == 0 and str(out) in stdout
    grid = cv2.imread(str(out))
    gap = 2
    assert grid.shape[0] == 3 * (32 + gap) + gap
    assert grid.shape[1] > 4 * (32 + gap)
    right = grid[:, -(4 * (32 + gap) + gap):]
    # row b has a single image: the rest of its row stays white
    row_b = right[gap + 32 + gap: gap + 2 * 32 + gap]
    assert (row_b[:, 32 + 2 * gap:] == 255).all() and (row_b[:, gap:gap + 32] < 255).all()
    # class names are drawn left of the tiles
    assert (grid[:, : grid.shape[1] - right.shape[1]] < 128).any()


def test_scan_real_tiny_split(capsys):
    tiny = SHARED_DATA / "pbc128-tiny"
    if not tiny.is_dir():
        pytest.skip(f"{tiny} not available")
    code, out, _ = run(capsys, "scan", tiny)
    assert code == 0
    assert len(re.findall(r"^\w+\s+16$", out, re.M)) == 8
    assert "128x128: 128" in out


def readme_train_counts() -> dict[str, int]:
    """The train column of the table in the data README."""
    counts = {}
    for line in (SHARED_DATA / "README.md").read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].isdigit() and cells[0] != "total":
            counts[cells[0]] = int(cells[1])
    return counts


def test_root_script_scan_matches_the_data_readme():
    train = SHARED_DATA / "pbc128" / "train"
    if not train.is_dir():
        pytest.skip(f"{train} not available")
    expected = readme_train_counts()
    assert len(expected) == 8
    result = subprocess.run([sys.executable, str(REPO / "data_reader.py"), "scan", str(train)],
                            capture_output=True, text=True, timeout=300, cwd=str(REPO))
    assert result.returncode == 0, result.stderr
    found = {match[0]: int(match[1]) for match in re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M)}
    assert found == dict(expected, total=sum(expected.values()))
    assert f"128x128: {sum(expected.values())}" in result.stdout
    assert "unreadable files: 0" in result.stdout


def test_root_script_reports_errors_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "data_reader.py"), "scan", str(tmp_path / "absent")],
                            capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {tmp_path / 'absent'}: no such file or folder"
